"""Build examples/tiny_cnn.onnx: a small seeded CNN used by `make demo` and the tests.

Input ``image`` [batch, 1, 28, 28]; Conv 3x3 (8) → BatchNorm → Relu → MaxPool → Conv 3x3 (16)
→ Relu → GlobalAveragePool → Flatten → Gemm (10) → Softmax. Weights are He-scaled random
numbers from a fixed seed, so the file is byte-identical every time it is built.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def build() -> onnx.ModelProto:
    rng = np.random.default_rng(1234)

    def he(shape: tuple[int, ...], fan_in: int) -> np.ndarray:
        return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)

    inits = [
        numpy_helper.from_array(he((8, 1, 3, 3), 9), "conv1.weight"),
        numpy_helper.from_array(np.zeros(8, np.float32) + 0.01, "conv1.bias"),
        numpy_helper.from_array(rng.uniform(0.5, 1.5, 8).astype(np.float32), "bn1.scale"),
        numpy_helper.from_array(rng.uniform(-0.1, 0.1, 8).astype(np.float32), "bn1.bias"),
        numpy_helper.from_array(rng.uniform(-0.1, 0.1, 8).astype(np.float32), "bn1.mean"),
        numpy_helper.from_array(rng.uniform(0.5, 1.5, 8).astype(np.float32), "bn1.var"),
        numpy_helper.from_array(he((16, 8, 3, 3), 72), "conv2.weight"),
        numpy_helper.from_array(rng.uniform(-0.1, 0.1, 16).astype(np.float32), "conv2.bias"),
        numpy_helper.from_array(he((10, 16), 16), "fc.weight"),
        numpy_helper.from_array(rng.uniform(-0.1, 0.1, 10).astype(np.float32), "fc.bias"),
    ]
    nodes = [
        helper.make_node("Conv", ["image", "conv1.weight", "conv1.bias"], ["c1"], name="/conv1/Conv", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c1", "bn1.scale", "bn1.bias", "bn1.mean", "bn1.var"], ["b1"], name="/bn1/BatchNormalization"),
        helper.make_node("Relu", ["b1"], ["r1"], name="/relu1/Relu"),
        helper.make_node("MaxPool", ["r1"], ["p1"], name="/pool1/MaxPool", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "conv2.weight", "conv2.bias"], ["c2"], name="/conv2/Conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"], name="/relu2/Relu"),
        helper.make_node("GlobalAveragePool", ["r2"], ["g"], name="/pool2/GlobalAveragePool"),
        helper.make_node("Flatten", ["g"], ["f"], name="/flatten/Flatten"),
        helper.make_node("Gemm", ["f", "fc.weight", "fc.bias"], ["logits"], name="/fc/Gemm", transB=1),
        helper.make_node("Softmax", ["logits"], ["probs"], name="/softmax/Softmax", axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_cnn",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 1, 28, 28])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="torsh-gen examples")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).with_name("tiny_cnn.onnx"))
    onnx.save_model(build(), out)
    print(f"wrote {out}")
