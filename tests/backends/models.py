"""Small ONNX models built in the tests: an MLP with a symbolic batch, control flow,
a fused elementwise chain, and a model whose names try to inject code."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = [helper.make_opsetid("", 17)]


def _init(name: str, array: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(array, name)


def mlp(seed: int = 0) -> onnx.ModelProto:
    """x[N,16] → MatMul+Add+Relu → Gemm(transB) → Softmax and Sigmoid outputs."""
    rng = np.random.default_rng(seed)
    w1 = rng.standard_normal((16, 32)).astype(np.float32) * 0.3
    b1 = rng.standard_normal(32).astype(np.float32) * 0.1
    w2 = rng.standard_normal((8, 32)).astype(np.float32) * 0.3
    b2 = rng.standard_normal(8).astype(np.float32) * 0.1
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h0"], name="fc1"),
        helper.make_node("Add", ["h0", "b1"], ["h1"], name="bias1"),
        helper.make_node("Relu", ["h1"], ["h2"], name="relu1"),
        helper.make_node("Gemm", ["h2", "w2", "b2"], ["logits"], name="fc2", transB=1),
        helper.make_node("Softmax", ["logits"], ["probs"], name="softmax", axis=-1),
        helper.make_node("Sigmoid", ["logits"], ["gates"], name="sigmoid"),
    ]
    graph = helper.make_graph(
        nodes, "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 8]),
         helper.make_tensor_value_info("gates", TensorProto.FLOAT, ["N", 8])],
        [_init("w1", w1), _init("b1", b1), _init("w2", w2), _init("b2", b2)],
    )
    return helper.make_model(graph, opset_imports=OPSET)


def gelu_chain() -> onnx.ModelProto:
    """x*0.5*(1+erf(x/sqrt2)) + bias[C,1,1], then Tanh: a chain the O3 fusion turns into one kernel."""
    bias = np.linspace(-1, 1, 4, dtype=np.float32).reshape(4, 1, 1)
    nodes = [
        helper.make_node("Div", ["x", "sqrt2"], ["d"]),
        helper.make_node("Erf", ["d"], ["e"]),
        helper.make_node("Add", ["e", "one"], ["e1"]),
        helper.make_node("Mul", ["x", "e1"], ["m"]),
        helper.make_node("Mul", ["m", "half"], ["g"]),
        helper.make_node("Add", ["g", "bias"], ["gb"]),
        helper.make_node("Tanh", ["gb"], ["y"]),
    ]
    inits = [
        _init("sqrt2", np.array(np.sqrt(2), np.float32)),
        _init("one", np.array(1, np.float32)),
        _init("half", np.array(0.5, np.float32)),
        _init("bias", bias),
    ]
    graph = helper.make_graph(
        nodes, "gelu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 5, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 5, 6])],
        inits,
    )
    return helper.make_model(graph, opset_imports=OPSET)


def control_flow() -> onnx.ModelProto:
    """If (branches read an outer value) feeding a Loop with a carried sum and a scan output."""
    then_g = helper.make_graph(
        [helper.make_node("Mul", ["x", "two"], ["t_out"])], "then", [],
        [helper.make_tensor_value_info("t_out", TensorProto.FLOAT, [3])],
        [_init("two", np.array(2, np.float32))],
    )
    else_g = helper.make_graph(
        [helper.make_node("Neg", ["x"], ["e_out"])], "else", [],
        [helper.make_tensor_value_info("e_out", TensorProto.FLOAT, [3])],
    )
    body = helper.make_graph(
        [
            helper.make_node("Add", ["acc_in", "picked"], ["acc_out"]),
            helper.make_node("Cast", ["i"], ["fi"], to=TensorProto.FLOAT),
            helper.make_node("Mul", ["acc_out", "fi"], ["scan_out"]),
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("acc_in", TensorProto.FLOAT, [3]),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("acc_out", TensorProto.FLOAT, [3]),
            helper.make_tensor_value_info("scan_out", TensorProto.FLOAT, [3]),
        ],
    )
    nodes = [
        helper.make_node("If", ["flag"], ["picked"], then_branch=then_g, else_branch=else_g),
        helper.make_node("Loop", ["trips", "", "zeros"], ["total", "history"], body=body),
    ]
    graph = helper.make_graph(
        nodes, "control",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [3]),
            helper.make_tensor_value_info("flag", TensorProto.BOOL, []),
            helper.make_tensor_value_info("trips", TensorProto.INT64, []),
        ],
        [
            helper.make_tensor_value_info("total", TensorProto.FLOAT, [3]),
            helper.make_tensor_value_info("history", TensorProto.FLOAT, [None, 3]),
        ],
        [_init("zeros", np.zeros(3, np.float32))],
    )
    return helper.make_model(graph, opset_imports=OPSET)


#: Names that would run code if pasted into Python source, or break out of strings/comments.
HOSTILE = [
    "__import__('os').system('touch PWNED')",
    'q"uote\'s',
    "new\nline\r\n# comment",
    "back\\slash\\",
    "\"\"\"; __import__('os').system('touch PWNED'); \"\"\"",
    "'''\n__import__('os').system('touch PWNED')\n'''",
    "x) or __import__('os').system('touch PWNED') or (",
]


def hostile_names() -> onnx.ModelProto:
    """A conv + relu + matmul model whose every node, value, weight and doc name is hostile."""
    rng = np.random.default_rng(1)
    h = HOSTILE
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    m = rng.standard_normal((4 * 6 * 6, 5)).astype(np.float32) * 0.1
    nodes = [
        helper.make_node("Conv", [h[0], h[1]], [h[2]], name=h[3], pads=[1, 1, 1, 1], doc_string=h[4]),
        helper.make_node("Relu", [h[2]], [h[4]], name=h[5]),
        helper.make_node("Flatten", [h[4]], [h[6]], name=h[0]),
        helper.make_node("MatMul", [h[6], "m" + h[0]], ["out" + h[5]], name=h[2]),
        helper.make_node("Reshape", [h[4], "shape" + h[1]], ["bad" + h[3]], name="reshape" + h[6]),
    ]
    graph = helper.make_graph(
        nodes, h[4],
        [helper.make_tensor_value_info(h[0], TensorProto.FLOAT, [1, 3, 6, 6])],
        [helper.make_tensor_value_info("out" + h[5], TensorProto.FLOAT, [1, 5]),
         helper.make_tensor_value_info("bad" + h[3], TensorProto.FLOAT, [1, 144])],
        [_init(h[1], w), _init("m" + h[0], m), _init("shape" + h[1], np.array([1, -1], np.int64))],
        doc_string=h[4],
    )
    model = helper.make_model(graph, opset_imports=OPSET, doc_string=h[5], producer_name=h[6])
    onnx.helper.set_model_props(model, {h[0]: h[4]})
    return model
