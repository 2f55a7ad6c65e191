"""Before/after cases for the fp16/bf16 conversion pass, checked numerically.

fp16 graphs run in onnxruntime against the float32 original; bf16 graphs in the reference
interpreter (onnxruntime's CPU provider has no bf16 arithmetic kernels).
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.passes.irtext import build, node, ops, run_ort, run_ref
from torsh_gen.ir.types import DType, TensorType
from torsh_gen.ir.verify import verify
from torsh_gen.passes import run_passes
from torsh_gen.passes.precision import SENSITIVE_OPS, convert_float_precision, remove_cast_pairs


def rand(*shape, seed=0, scale=1.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


def cnn_head():
    """Conv -> Relu -> MaxPool -> Flatten -> Gemm -> Softmax on [N, 2, 6, 6] images."""
    return build(
        [
            node("Conv", "x w b", "c", name="conv", pads=[1, 1, 1, 1]),
            node("Relu", "c", "r", name="relu"),
            node("MaxPool", "r", "p", name="pool", kernel_shape=[2, 2], strides=[2, 2]),
            node("Flatten", "p", "f", name="flat"),
            node("Gemm", "f fw fb", "g", name="fc", transB=1),
            node("Softmax", "g", "y", name="softmax", axis=1),
        ],
        ["x: float[N,2,6,6]"],
        ["y: float[N,5]"],
        {"w": rand(4, 2, 3, 3, seed=1, scale=0.3), "b": rand(4, seed=2, scale=0.1),
         "fw": rand(5, 36, seed=3, scale=0.2), "fb": rand(5, seed=4, scale=0.1)},
    )


def max_rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def dtype_of(graph, name):
    v = graph.value_map()[name]
    return v.type.dtype if isinstance(v.type, TensorType) else None


def test_cnn_head_in_fp16_keeps_softmax_in_float32_with_casts_at_the_boundaries():
    g = cnn_head()
    x = {"x": rand(3, 2, 6, 6, seed=7)}
    ref = run_ort(g, x)[0]
    changes = convert_float_precision(g, DType.FLOAT16)
    verify(g)
    assert changes.converted == ["conv", "relu", "pool", "flat", "fc"]
    assert list(changes.kept) == ["softmax"] and "sensitive op Softmax" in changes.kept["softmax"]
    # one Cast in (the float32 input), one out of the fp16 region (into Softmax); nothing else
    assert ops(g) == ["Cast", "Conv", "Relu", "MaxPool", "Flatten", "Gemm", "Cast", "Softmax"]
    assert [v.const.dtype for v in g.initializers] == [np.float16] * 4
    assert changes.weights_converted == 4
    assert g.inputs[0].type.dtype == DType.FLOAT and g.outputs[0].type.dtype == DType.FLOAT
    assert g.outputs[0].name == "y"
    out = run_ort(g, x)[0]
    assert out.dtype == np.float32 and max_rel(out, ref) < 2e-3


def test_bf16_conversion_runs_in_the_reference_interpreter_close_to_float32():
    g = cnn_head()
    x = {"x": rand(2, 2, 6, 6, seed=8)}
    ref = run_ref(g, x)[0]
    convert_float_precision(g, DType.BFLOAT16)
    verify(g)
    assert dtype_of(g, "g") == DType.BFLOAT16 and dtype_of(g, "y") == DType.FLOAT
    assert all(v.const.dtype.name == "bfloat16" for v in g.initializers)
    out = run_ref(g, x)[0]
    assert out.dtype == np.float32 and 0 < max_rel(out, ref) < 2e-2


@pytest.mark.parametrize(
    "op, inputs, attrs, inits",
    [
        ("LayerNormalization", "r s", {"axis": -1}, {"s": np.ones(8, np.float32)}),
        ("ReduceMean", "r", {"axes": [1]}, {}),
        ("Exp", "r", {}, {}),
        ("Log", "r", {}, {}),
        ("Pow", "r e", {}, {"e": np.array(2.0, np.float32)}),
        ("Softmax", "r", {}, {}),
    ],
)
def test_sensitive_ops_stay_float32_between_fp16_neighbours(op, inputs, attrs, inits):
    g = build(
        [node("Relu", "x", "r", name="a"), node(op, inputs, "s_out", name="sens", **attrs),
         node("Abs", "s_out", "y", name="b")],
        ["x: float[4,8]"],
        ["y: float"],
        inits,
    )
    x = {"x": np.abs(rand(4, 8, seed=3)) + 0.5}
    ref = run_ort(g, x)[0]
    changes = convert_float_precision(g, DType.FLOAT16)
    assert op in SENSITIVE_OPS and list(changes.kept) == ["sens"]
    assert changes.converted == ["a", "b"]
    assert dtype_of(g, "s_out") == DType.FLOAT
    assert ops(g).count("Cast") == 4  # x->fp16, r->fp32, s_out->fp16, b's result->fp32 output
    assert all(v.const.dtype == np.float32 for v in g.initializers)  # sensitive op's weights stay
    assert max_rel(run_ort(g, x)[0], ref) < 2e-3


def test_data_movement_between_float32_nodes_gets_no_cast_pair():
    g = build(
        [node("Softmax", "x", "s1", name="s1"), node("Reshape", "s1 shape", "r", name="reshape"),
         node("Softmax", "r", "y", name="s2")],
        ["x: float[2,6]"],
        ["y: float[3,4]"],
        {"shape": np.array([3, 4], np.int64)},
    )
    changes = convert_float_precision(g, DType.FLOAT16)
    assert ops(g) == ["Softmax", "Reshape", "Softmax"]
    assert changes.casts == 0 and not changes.converted
    assert dtype_of(g, "r") == DType.FLOAT


def test_a_value_read_by_fp16_and_float32_nodes_gets_one_cast_and_float32_reads_the_original():
    g = build(
        [node("Relu", "x", "a", name="relu1"), node("Relu", "x", "b", name="relu2"),
         node("Softmax", "x", "s", name="sm"), node("Add", "a b", "c", name="add"),
         node("Add", "c s", "y", name="add2")],
        ["x: float[2,6]"],
        ["y: float[2,6]"],
    )
    x = {"x": rand(2, 6)}
    ref = run_ort(g, x)[0]
    changes = convert_float_precision(g, DType.FLOAT16)
    casts = [n for n in g.nodes if n.op_type == "Cast"]
    assert changes.casts == 3 and len(casts) == 3  # x -> fp16 once, s -> fp16, y -> float32 output
    sm = next(n for n in g.nodes if n.name == "sm")
    assert sm.inputs[0] is g.inputs[0]  # Softmax reads float32 x itself, not Cast(Cast(x))
    assert max_rel(run_ort(g, x)[0], ref) < 2e-3


def test_remove_cast_pairs_bypasses_float_round_trips_only():
    g = build(
        [node("Cast", "x", "h", to=10), node("Cast", "h", "f", to=1), node("Relu", "f", "r"),
         node("Cast", "r", "i", to=7), node("Cast", "i", "y", to=1)],
        ["x: float[5]"],
        ["y: float[5]"],
    )
    assert remove_cast_pairs(g) == 1  # fp32->fp16->fp32 goes; fp32->int64->fp32 truncates: stays
    assert ops(g) == ["Relu", "Cast", "Cast"]
    x = {"x": np.array([1.0001, -2.5, 3.7, 70000.0, 0.1], np.float32)}
    np.testing.assert_array_equal(run_ref(g, x)[0], np.trunc(np.maximum(x["x"], 0)))


def test_exact_round_trip_fp16_to_float32_and_back_is_removed():
    g = build(
        [node("Relu", "x", "r"), node("Cast", "r", "f", to=1), node("Cast", "f", "h", to=10),
         node("Abs", "h", "y")],
        ["x: float16[4]"],
        ["y: float16[4]"],
    )
    assert remove_cast_pairs(g) == 1 and ops(g) == ["Relu", "Abs"]


def test_keep_fp32_nodes_stay_float32_with_their_weights():
    g = cnn_head()
    changes = convert_float_precision(g, DType.FLOAT16, keep_fp32={"conv"})
    assert changes.kept["conv"].startswith("kept float32 on request")
    conv = next(n for n in g.nodes if n.name == "conv")
    assert conv.inputs[1].const.dtype == np.float32 and conv.inputs[0] is g.inputs[0]
    assert "relu" in changes.converted


def test_without_keep_io_types_the_graph_edges_take_the_low_type():
    g = build([node("Relu", "x", "y", name="relu")], ["x: float[3]"], ["y: float[3]"])
    convert_float_precision(g, DType.FLOAT16, keep_io_types=False)
    assert ops(g) == ["Relu"]
    assert g.inputs[0].type.dtype == DType.FLOAT16 and g.outputs[0].type.dtype == DType.FLOAT16
    out = run_ort(g, {"x": np.array([-1, 0.5, 2], np.float16)})[0]
    assert out.dtype == np.float16 and out.tolist() == [0, 0.5, 2]


def test_large_accumulations_and_out_of_range_weights_stay_float32():
    g = build(
        [node("MatMul", "x w", "m", name="mm"), node("Mul", "m big", "y", name="scale")],
        ["x: float[2,64]"],
        ["y: float[2,4]"],
        {"w": rand(64, 4), "big": np.full(4, 1e6, np.float32)},
    )
    changes = convert_float_precision(g, DType.FLOAT16, max_accumulation=32)
    assert changes.kept["mm"].startswith("large accumulation: 64 terms")
    assert "exceeds the float16 range" in changes.kept["scale"]
    assert not changes.converted and changes.casts == 0
    g2 = build([node("Mul", "x big", "y", name="scale")], ["x: float[4]"], ["y: float[4]"],
               {"big": np.full(4, 1e6, np.float32)})
    assert convert_float_precision(g2, DType.BFLOAT16).converted == ["scale"]  # bf16 has the range


def test_unnamed_nodes_get_names_and_registered_passes_report():
    g = build([node("Relu", "x", "r"), node("Softmax", "r", "y")], ["x: float[2,3]"], ["y: float[2,3]"])
    reports = run_passes(g, ["convert_fp16", "convert_bf16"])
    assert reports[0].changed and not reports[1].changed  # nothing float32 left to lower after fp16
    assert all(n.name for n in g.nodes)
    assert any("kept float32" in n for n in reports[0].notes)
    assert any(n.startswith("float32 softmax") for n in reports[0].notes)
