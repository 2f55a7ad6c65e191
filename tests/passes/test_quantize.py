"""Quantization rewrites: weight quantizers, every mode/format run in onnxruntime vs float32.

Tolerances: int8 with per-channel weights and calibrated activations loses about one
quantization step per operand, i.e. a relative error of order 1/127 per layer; two
layers stay well inside 3% of the output's norm (we assert 3%), and cosine similarity
above 0.999. Int4 blocks have 15 levels, so the bound is 15%. Our reference executor
implements the same integer arithmetic as onnxruntime, so its outputs agree with
onnxruntime's to float rounding plus at most one output quantization step.
"""

from __future__ import annotations

import copy

import ml_dtypes
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.oracle import ORT_INTEGER_EXACT, reference_outputs
from torsh_gen.errors import InputError
from torsh_gen.frontends.onnx import load_onnx, to_onnx
from torsh_gen.ops.execute import run_graph
from torsh_gen.ops.inference import infer_types
from torsh_gen.passes.quantize import (
    QuantFormat,
    QuantMode,
    QuantOptions,
    TensorRange,
    activation_params,
    check_selection,
    quantize_graph,
    quantize_weight_int4,
    quantize_weight_int8,
    split_gemm,
)

RNG = np.random.default_rng(0)


def _model() -> onnx.ModelProto:
    """Conv → Relu → Flatten → Gemm(transB) → Relu → MatMul: every quantizable op once."""
    w_conv = RNG.standard_normal((4, 2, 3, 3)).astype(np.float32) * 0.3
    b_conv = RNG.standard_normal(4).astype(np.float32) * 0.1
    w_fc = RNG.standard_normal((16, 4 * 4 * 4)).astype(np.float32) * 0.2
    b_fc = RNG.standard_normal(16).astype(np.float32) * 0.1
    w_mm = RNG.standard_normal((16, 5)).astype(np.float32) * 0.3
    nodes = [
        helper.make_node("Conv", ["x", "wc", "bc"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu1"),
        helper.make_node("Flatten", ["r"], ["f"], name="flat"),
        helper.make_node("Gemm", ["f", "wf", "bf"], ["g"], name="fc", transB=1),
        helper.make_node("Relu", ["g"], ["a"], name="relu2"),
        helper.make_node("MatMul", ["a", "wm"], ["y"], name="mm"),
    ]
    inits = [
        numpy_helper.from_array(a, n)
        for a, n in ((w_conv, "wc"), (b_conv, "bc"), (w_fc, "wf"), (b_fc, "bf"), (w_mm, "wm"))
    ]
    g = helper.make_graph(
        nodes,
        "q",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])],
        inits,
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)])
    m.ir_version = 10
    return m


@pytest.fixture(scope="module")
def model():
    return _model()


@pytest.fixture(scope="module")
def feeds():
    return {"x": RNG.standard_normal((64, 2, 4, 4)).astype(np.float32)}


def _ort(proto: onnx.ModelProto, feeds, exact_int4: bool = False) -> np.ndarray:
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if exact_int4:  # onnxruntime quantizes activations in its fused int4 MatMul by default
        opts.add_session_config_entry("session.qdq_matmulnbits_accuracy_level", "0")
    return ort.InferenceSession(
        proto.SerializeToString(), opts, providers=["CPUExecutionProvider"]
    ).run(None, feeds)[0]


def _ranges(graph, feeds) -> dict[str, TensorRange]:
    """Exact min/max of every float tensor (what min-max calibration would find)."""
    g = copy.deepcopy(graph)
    names = [o.name for n in g.nodes for o in n.outputs] + [v.name for v in g.inputs]
    proto = to_onnx(g, value_info=False)
    for n in names:
        if n not in [o.name for o in proto.graph.output]:
            proto.graph.output.append(helper.make_tensor_value_info(n, TensorProto.FLOAT, None))
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    outs = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))
    return {k: TensorRange(float(v.min()), float(v.max())) for k, v in outs.items()}


def _quantized(model, feeds, **kw):
    g = load_onnx(model)
    infer_types(g)
    opts = QuantOptions(**kw)
    if opts.mode == QuantMode.STATIC and opts.format == QuantFormat.QOPERATOR:
        split_gemm(g)
    result = quantize_graph(g, opts, _ranges(g, feeds) if opts.mode == QuantMode.STATIC else {})
    return g, result


def _run_quantized(proto: onnx.ModelProto, feeds) -> np.ndarray:
    """The quantized model's output: onnxruntime's, or the reference evaluator's where
    onnxruntime's integer products are inexact (tests/oracle.py)."""
    return _ort(proto, feeds) if ORT_INTEGER_EXACT else reference_outputs(proto, feeds)[0]


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


CASES = [
    dict(mode=QuantMode.STATIC, format=QuantFormat.QDQ, per_channel=True),
    dict(mode=QuantMode.STATIC, format=QuantFormat.QDQ, per_channel=False),
    dict(mode=QuantMode.STATIC, format=QuantFormat.QDQ, per_channel=True, symmetric=True),
    dict(mode=QuantMode.STATIC, format=QuantFormat.QOPERATOR, per_channel=True),
    dict(mode=QuantMode.STATIC, format=QuantFormat.QOPERATOR, per_channel=False, symmetric=True),
    dict(mode=QuantMode.DYNAMIC, format=QuantFormat.QDQ, per_channel=True),
    dict(mode=QuantMode.DYNAMIC, format=QuantFormat.QOPERATOR, per_channel=False),
    dict(mode=QuantMode.DYNAMIC, format=QuantFormat.QOPERATOR, per_channel=True),
]


@pytest.mark.parametrize(
    "kw",
    CASES,
    ids=lambda kw: "-".join(str(v.value if hasattr(v, "value") else v) for v in kw.values()),
)
def test_int8_runs_in_onnxruntime_close_to_float(model, feeds, kw):
    ref = _ort(model, feeds)
    g, result = _quantized(model, feeds, **kw)
    assert result.quantized == ["conv", "fc", "mm"]
    proto = to_onnx(g, value_info=False)
    onnx.checker.check_model(proto)
    ops = {n.op_type for n in proto.graph.node}
    if kw["format"] == QuantFormat.QOPERATOR:
        assert ops & {"QLinearConv", "ConvInteger"} and ops & {"QLinearMatMul", "MatMulInteger"}
        assert not ops & {"Conv", "Gemm"}
    else:
        assert "DequantizeLinear" in ops and {"Conv", "Gemm", "MatMul"} <= ops
        # the dequantized weights keep the float weights' names
        dq_out = {n.output[0] for n in proto.graph.node if n.op_type == "DequantizeLinear"}
        assert {"wc", "wf", "wm"} <= dq_out
    out = _run_quantized(proto, feeds)
    assert _rel(out, ref) < 0.03
    # our reference executor runs the same integer arithmetic
    ours = run_graph(g, feeds)[0]
    assert np.abs(ours - out).max() <= 0.02 * np.abs(ref).max()


def test_static_qdq_folds_relu_into_the_quantization(model, feeds):
    g, _ = _quantized(model, feeds, mode=QuantMode.STATIC, per_channel=True)
    ops = [n.op_type for n in g.nodes]
    assert "Relu" not in ops  # uint8 saturation at the zero point is the Relu
    g, _ = _quantized(model, feeds, mode=QuantMode.STATIC, per_channel=True, symmetric=True)
    assert [n.op_type for n in g.nodes].count("Relu") == 2  # int8 around zero cannot fold it


def test_int4_blocks_run_in_onnxruntime(model, feeds):
    ref = _ort(model, feeds)
    g, result = _quantized(model, feeds, mode=QuantMode.WEIGHT_INT4, block_size=16)
    assert result.quantized == ["fc", "mm"] and "Conv" in result.skipped["conv"]
    proto = to_onnx(g, value_info=False)
    dq = [n for n in proto.graph.node if n.op_type == "DequantizeLinear"]
    assert {a.name: a.i for a in dq[0].attribute}["block_size"] == 16
    assert any(t.data_type == TensorProto.INT4 for t in proto.graph.initializer)
    out = _ort(proto, feeds, exact_int4=True)
    assert _rel(out, ref) < 0.15
    np.testing.assert_allclose(run_graph(g, feeds)[0], out, rtol=1e-4, atol=1e-4)


def test_per_channel_scales_have_one_entry_per_output_channel():
    w = RNG.standard_normal((8, 3, 3, 3)).astype(np.float32)
    w[2] *= 100.0
    q = quantize_weight_int8(w, axis=0)
    assert q.scale.shape == (8,) and q.data.dtype == np.int8
    np.testing.assert_allclose(q.scale, np.abs(w).reshape(8, -1).max(1) / 127, rtol=1e-6)
    assert np.abs(q.dequantize() - w).max(axis=(1, 2, 3)).tolist() <= (q.scale / 2 + 1e-6).tolist()
    t = quantize_weight_int8(w, axis=None)
    assert t.scale.shape == ()
    # one huge channel ruins a shared scale: per-channel is much closer on the others
    assert np.abs(t.dequantize() - w)[0].max() > 10 * np.abs(q.dequantize() - w)[0].max()


def test_int4_block_scales_and_storage():
    w = RNG.standard_normal((70, 6)).astype(np.float32)  # 70 rows: the last block is short
    q = quantize_weight_int4(w, axis=0, block_size=32)
    assert q.data.dtype == ml_dtypes.int4 and q.data.shape == (70, 6)
    assert q.scale.shape == (3, 6)
    np.testing.assert_allclose(q.scale[2], np.abs(w[64:]).max(0) / 7, rtol=1e-3)  # float16 scales
    assert np.array_equal(q.scale, q.scale.astype(np.float16).astype(np.float32))
    assert np.abs(q.dequantize() - w).max() <= q.scale.max() / 2 + 1e-6
    assert numpy_helper.from_array(q.data).raw_data.__len__() == 70 * 6 // 2  # two per byte


def test_activation_params_cover_the_range_and_zero():
    p = activation_params(TensorRange(-1.0, 3.0), symmetric=False)
    assert p.zero_point.dtype == np.uint8 and int(p.zero_point) == 64
    np.testing.assert_allclose(p.scale, 4.0 / 255)
    p = activation_params(TensorRange(0.5, 2.0), symmetric=True)  # the range is widened to 0
    assert p.zero_point.dtype == np.int8 and int(p.zero_point) == 0
    np.testing.assert_allclose(p.scale, 2.0 / 127)


def test_include_exclude_and_unknown_names(model, feeds):
    g, result = _quantized(model, feeds, mode=QuantMode.DYNAMIC, include=("Conv", "mm"))
    assert result.quantized == ["conv", "mm"] and result.skipped == {"fc": "not in --include"}
    g, result = _quantized(model, feeds, mode=QuantMode.DYNAMIC, exclude=("Gemm",))
    assert result.skipped == {"fc": "in --exclude"}
    graph = load_onnx(model)
    with pytest.raises(InputError, match="'Softmax': neither an op type nor a node"):
        check_selection(graph, ("Softmax",), "--include")
    with pytest.raises(InputError, match="node is a Relu"):
        check_selection(graph, ("relu1",), "--exclude")
    with pytest.raises(InputError, match="op type that cannot be quantized"):
        check_selection(graph, ("Relu",), "--exclude")


def test_opset_too_old_is_refused(model):
    g = load_onnx(model)
    g.info.opset_imports[""] = 11
    with pytest.raises(InputError, match="opset 13"):
        quantize_graph(g, QuantOptions(mode=QuantMode.DYNAMIC))


def test_data_movement_runs_on_the_quantized_tensor(model, feeds):
    g, _ = _quantized(model, feeds, mode=QuantMode.STATIC, per_channel=True)
    flat = next(n for n in g.nodes if n.op_type == "Flatten")
    assert flat.inputs[0].producer.op_type == "QuantizeLinear"  # uint8 in, uint8 out
    assert [n.op_type for n in g.nodes if any(o is flat.outputs[0] for o in n.inputs)] == [
        "DequantizeLinear"
    ]
    assert _rel(_run_quantized(to_onnx(g, value_info=False), feeds), _ort(model, feeds)) < 0.03


def test_int4_embedding_table():
    table = RNG.standard_normal((100, 64)).astype(np.float32)
    w = RNG.standard_normal((64, 8)).astype(np.float32)
    nodes = [
        helper.make_node("Gather", ["emb", "ids"], ["e"], name="embed"),
        helper.make_node("MatMul", ["e", "w"], ["y"], name="proj"),
    ]
    g = helper.make_graph(
        nodes,
        "e",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [3, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 5, 8])],
        [numpy_helper.from_array(table, "emb"), numpy_helper.from_array(w, "w")],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)])
    feeds = {"ids": RNG.integers(0, 100, (3, 5)).astype(np.int64)}
    graph = load_onnx(m)
    infer_types(graph)
    result = quantize_graph(graph, QuantOptions(mode=QuantMode.WEIGHT_INT4))
    assert result.quantized == ["embed", "proj"]
    proto = to_onnx(graph, value_info=False)
    assert len(proto.SerializeToString()) < 0.16 * len(m.SerializeToString())
    out = _ort(proto, feeds, exact_int4=True)
    assert _rel(out, _ort(m, feeds)) < 0.15
    np.testing.assert_allclose(run_graph(graph, feeds)[0], out, rtol=1e-4, atol=1e-4)
    # int8: an int8 table, only the gathered rows are dequantized
    graph = load_onnx(m)
    infer_types(graph)
    assert quantize_graph(
        graph, QuantOptions(mode=QuantMode.DYNAMIC, format=QuantFormat.QOPERATOR)
    ).quantized == ["embed", "proj"]
    gather = next(n for n in graph.nodes if n.op_type == "Gather")
    assert gather.inputs[0].const.dtype == np.int8
    assert [n.op_type for n in graph.nodes if any(i is gather.outputs[0] for i in n.inputs)] == [
        "DequantizeLinear"
    ]
    out = _ort(to_onnx(graph, value_info=False), feeds)
    assert _rel(out, _ort(m, feeds)) < 0.03
    np.testing.assert_allclose(run_graph(graph, feeds)[0], out, rtol=1e-4, atol=1e-4)
