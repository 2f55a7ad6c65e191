"""fuse_quant: which quantized patterns become ai.torsh QGemm/QConv, and that the fused graph
computes what onnxruntime computes for the original (the integer reference is the oracle)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.backends import quant_models as qm
from tests.oracle import integer_oracle
from torsh_gen.frontends.onnx import load_onnx
from torsh_gen.ops.execute import run_graph
from torsh_gen.passes import pipeline, run_passes
from torsh_gen.passes.fuse_quant import fuse_quant


def _ort(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    """onnxruntime's outputs, or the reference evaluator's where onnxruntime's integer
    products are inexact (tests/oracle.py)."""
    return integer_oracle(model, feeds)


def _fused(model: onnx.ModelProto, level: str = "O3"):
    graph = load_onnx(model)
    run_passes(graph, pipeline(level))
    return graph


def _ops(graph) -> list[str]:
    return [n.op_type for n in graph.nodes]


def _run(graph, feeds: dict) -> list[np.ndarray]:
    out = run_graph(graph, feeds)
    return list(out.values()) if isinstance(out, dict) else list(out)


@pytest.mark.parametrize("gemm", [False, True])
@pytest.mark.parametrize("xdt", [np.uint8, np.int8])
def test_qdq_product_becomes_qgemm_and_matches_onnxruntime(gemm: bool, xdt: type) -> None:
    model = qm.qdq_matmul(5, 37, 70, xdt=xdt, gemm=gemm, relu=True, seed=1)
    graph = _fused(model)
    assert _ops(graph) == ["QuantizeLinear", "QGemm"]
    fused = graph.nodes[1]
    assert fused.domain == "ai.torsh" and fused.attr("activation") == "Relu"
    x = np.random.default_rng(2).standard_normal((5, 37)).astype(np.float32)
    got, want = _run(graph, {"x": x})[0], _ort(model, {"x": x})[0]
    assert got.dtype == want.dtype == np.dtype(xdt)
    # onnxruntime runs this QDQ group as its integer QLinear kernel: the same integers
    np.testing.assert_array_equal(got, want)


def test_float_bias_becomes_int32_and_float_output_stays_float() -> None:
    model = qm.qdq_matmul(3, 16, 8, bias=True, quantized_output=False, seed=3)
    graph = _fused(model)
    assert _ops(graph) == ["QuantizeLinear", "QGemm"]
    assert len(graph.nodes[1].inputs) == 7  # no y_scale/y_zp: float output, float bias
    x = np.random.default_rng(4).standard_normal((3, 16)).astype(np.float32)
    got, want = _run(graph, {"x": x})[0], _ort(model, {"x": x})[0]
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_qoperator_ops_become_fused_ops() -> None:
    mm = _fused(qm.qlinear_matmul(4, 9, 33, seed=5))
    conv = _fused(qm.qlinear_conv(1, 3, 7, 6, 5, 3, pad=1, seed=6))
    assert _ops(mm) == ["QGemm"] and _ops(conv) == ["QConv"]
    x = qm.int_input(np.random.default_rng(7), (1, 3, 7, 6), np.uint8)
    np.testing.assert_array_equal(
        _run(conv, {"x": x})[0], _ort(qm.qlinear_conv(1, 3, 7, 6, 5, 3, pad=1, seed=6), {"x": x})[0]
    )


def test_moves_between_dq_and_q_run_on_integers() -> None:
    scale = numpy_helper.from_array(np.float32(0.1), "s")
    zp = numpy_helper.from_array(np.uint8(7), "z")
    nodes = [
        helper.make_node("DequantizeLinear", ["x", "s", "z"], ["d"]),
        helper.make_node("Transpose", ["d"], ["t"], perm=[0, 2, 3, 1]),
        helper.make_node("QuantizeLinear", ["t", "s", "z"], ["tq"]),
        helper.make_node("DequantizeLinear", ["tq", "s", "z"], ["d2"]),
        helper.make_node("MaxPool", ["d2"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("QuantizeLinear", ["p", "s", "z"], ["y"]),
    ]
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.UINT8, [1, 2, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.UINT8, [1, 4, 2, 1])],
        [scale, zp],
    )
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)])
    graph = _fused(model)
    # the Transpose runs on the integers; MaxPool stays float32 (the backend's fast pool)
    assert _ops(graph) == ["Transpose", "DequantizeLinear", "MaxPool", "QuantizeLinear"]
    assert graph.nodes[0].inputs[0].name == "x"
    x = qm.int_input(np.random.default_rng(8), (1, 2, 4, 4), np.uint8)
    np.testing.assert_array_equal(_run(graph, {"x": x})[0], _ort(model, {"x": x})[0])


def test_patterns_that_must_not_fuse() -> None:
    # the product's float value is also a graph output: no Q fusion; it dequantizes instead
    model = qm.qdq_matmul(2, 8, 4, bias=False, seed=9)
    model.graph.output.append(helper.make_tensor_value_info("prod", TensorProto.FLOAT, [2, 4]))
    graph = load_onnx(model)
    assert fuse_quant(graph)
    assert [n.op_type for n in graph.nodes if n.domain == "ai.torsh"] == ["QGemm"]
    assert "QuantizeLinear" in _ops(graph)[1:]  # the output Q stays a separate node
    # block-wise (int4-style) weight quantization is not per tensor or per channel
    w = numpy_helper.from_array(np.ones((8, 4), np.int8), "w")
    ws = numpy_helper.from_array(np.full((2, 4), 0.1, np.float32), "ws")
    nodes = [
        helper.make_node("DequantizeLinear", ["xq", "xs"], ["xd"]),
        helper.make_node("DequantizeLinear", ["w", "ws"], ["wd"], axis=0, block_size=4),
        helper.make_node("MatMul", ["xd", "wd"], ["y"]),
    ]
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("xq", TensorProto.UINT8, [2, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])],
        [w, ws, numpy_helper.from_array(np.float32(0.1), "xs")],
    )
    blocked = load_onnx(helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)]))
    assert not fuse_quant(blocked)
    # a float model is left alone
    assert not fuse_quant(load_onnx(_float_matmul()))


def _float_matmul() -> onnx.ModelProto:
    w = numpy_helper.from_array(np.ones((8, 4), np.float32), "w")
    g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])],
        [w],
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)])


def test_fuse_quant_runs_before_constant_folding_in_o3() -> None:
    o3 = pipeline("O3")
    assert o3.index("fuse_quant") < o3.index("fold_constants")


@pytest.mark.parametrize("zero_point", [True, False])
def test_int4_weights_become_q4matmul(zero_point: bool) -> None:
    model = qm.int4_matmul(3, 40, 33, zero_point=zero_point, seed=4)
    graph = _fused(model)
    assert _ops(graph) == ["Q4MatMul"] and graph.nodes[0].attr("block_size") == 16
    x = np.random.default_rng(1).standard_normal((3, 40)).astype(np.float32)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # plain DQ + MatMul
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(
        _run(graph, {"x": x})[0], sess.run(None, {"x": x})[0], rtol=1e-5, atol=1e-5
    )
