"""ConvInteger and QLinearConv through the kernel IR (JIT and interpreter) against
onnxruntime: groups, strides, dilations, pads, per-channel weight zero points/scales."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto as TP
from onnx import helper, numpy_helper

from tests.backends.native.helpers import check_native, make_model

RNG = np.random.default_rng(11)

CASES = [
    dict(group=1, strides=[1, 1], pads=[1, 1, 1, 1]),
    dict(group=2, strides=[2, 1], pads=[0, 1, 2, 0], dilations=[1, 2]),
    dict(group=4, strides=[1, 2], pads=[1, 0, 1, 0]),
]


@pytest.mark.parametrize("attrs", CASES)
def test_conv_integer_matches_onnxruntime(attrs) -> None:
    g = attrs["group"]
    x = RNG.integers(0, 255, (2, 4, 7, 9)).astype(np.uint8)
    w = RNG.integers(0, 255, (8, 4 // g, 3, 3)).astype(np.uint8)
    model = make_model(
        [helper.make_node("ConvInteger", ["x", "w", "xz", "wz"], ["y"], **attrs)],
        [helper.make_tensor_value_info("x", TP.UINT8, x.shape)],
        [helper.make_tensor_value_info("y", TP.INT32, None)],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.array(131, np.uint8), "xz"),
         numpy_helper.from_array(np.array(120, np.uint8), "wz")], opset=10)
    from onnx import shape_inference

    model = shape_inference.infer_shapes(model)
    check_native(model, {"x": x}, rtol=0, atol=0, interpret=True)


@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
@pytest.mark.parametrize("attrs", CASES[:2])
def test_qlinear_conv_matches_onnxruntime(dtype, attrs) -> None:
    g = attrs["group"]
    info = np.iinfo(dtype)
    tp = TP.UINT8 if dtype == np.uint8 else TP.INT8
    x = RNG.integers(info.min, info.max, (1, 4, 8, 6)).astype(dtype)
    w = RNG.integers(-60, 60, (6, 4 // g, 3, 3)).astype(np.int8)
    w_scale = RNG.uniform(0.01, 0.05, 6).astype(np.float32)
    bias = RNG.integers(-500, 500, 6).astype(np.int32)
    inits = [numpy_helper.from_array(a, n) for a, n in (
        (np.array(0.02, np.float32), "xs"), (np.array(3 if dtype == np.uint8 else -2, dtype), "xz"), (w, "w"),
        (w_scale, "ws"), (np.zeros(6, np.int8), "wz"), (np.array(0.5, np.float32), "ys"),
        (np.array(7 if dtype == np.uint8 else 1, dtype), "yz"), (bias, "b"))]
    model = make_model(
        [helper.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz", "b"], ["y"], **attrs)],
        [helper.make_tensor_value_info("x", tp, x.shape)], [helper.make_tensor_value_info("y", tp, None)], inits, opset=10)
    from onnx import shape_inference

    model = shape_inference.infer_shapes(model)
    check_native(model, {"x": x}, rtol=0, atol=1, interpret=True)


def test_float_input_is_declined() -> None:
    from torsh_gen.errors import UnsupportedOpError

    model = make_model(
        [helper.make_node("ConvInteger", ["x", "w"], ["y"])],
        [helper.make_tensor_value_info("x", TP.UINT8, (1, 1, 4, 4)), helper.make_tensor_value_info("w", TP.INT32, (1, 1, 3, 3))],
        [helper.make_tensor_value_info("y", TP.INT32, (1, 1, 2, 2))], opset=10)
    from tests.backends.native.helpers import lower_model

    with pytest.raises(UnsupportedOpError, match="integer convolution of u8 by i32"):
        lower_model(model, level="O0")


@pytest.mark.parametrize("xdt", [np.uint8, np.int8])
def test_fused_qconv_of_a_qlinear_conv_model_at_o3(xdt) -> None:
    """At O3 the quantization passes turn QLinearConv into the fused QConv, which lowers."""
    from tests.backends import quant_models as qm
    from tests.backends.native.helpers import lower_model

    model = qm.qlinear_conv(1, 8, 9, 9, 16, 3, stride=2, pad=1, xdt=xdt, seed=4)
    program = lower_model(model)
    assert any(c.op_type == "QConv" for c in program.calls)
    x = qm.int_input(np.random.default_rng(2), (1, 8, 9, 9), xdt)
    check_native(model, {model.graph.input[0].name: x}, rtol=0, atol=1)


def test_fused_qconv_with_relu_and_float_output() -> None:
    """A QDQ convolution followed by Relu with a float output: QConv's dequantizing form."""
    from tests.backends.native.helpers import lower_model

    w = RNG.integers(-100, 100, (6, 4, 3, 3)).astype(np.int8)
    ws = RNG.uniform(0.005, 0.02, 6).astype(np.float32)
    inits = [numpy_helper.from_array(a, n) for a, n in (
        (np.array(0.03, np.float32), "xs"), (np.array(128, np.uint8), "xz"), (w, "wq"), (ws, "ws"),
        (np.zeros(6, np.int8), "wz"), ((RNG.standard_normal(6) * 0.1).astype(np.float32), "b"))]
    model = make_model(
        [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
         helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
         helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["wd"], axis=0),
         helper.make_node("Conv", ["xd", "wd", "b"], ["c"], pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["c"], ["y"])],
        [helper.make_tensor_value_info("x", TP.FLOAT, (1, 4, 7, 7))],
        [helper.make_tensor_value_info("y", TP.FLOAT, (1, 6, 7, 7))], inits, opset=13)
    program = lower_model(model)
    assert any(c.op_type == "QConv" for c in program.calls)
    check_native(model, {"x": RNG.standard_normal((1, 4, 7, 7)).astype(np.float32)}, rtol=1e-4, atol=1e-4, interpret=True)
