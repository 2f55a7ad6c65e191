"""Reductions, scans, TopK, quantization, Det and windows through the TVM backend,
compared with onnxruntime (onnx's reference evaluator for integer products)."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, numpy_helper

from tests.backends.tvm.helpers import check_tvm, node_model, tvm_session
from tests.oracle import integer_oracle
from torsh_gen.errors import UnsupportedOpError

F, I64 = TensorProto.FLOAT, TensorProto.INT64
RNG = np.random.default_rng(7)


def _x(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def _i64(name: str, values: list[int]) -> TensorProto:
    return numpy_helper.from_array(np.array(values, np.int64), name)


@pytest.mark.parametrize(
    "op",
    ["ReduceL1", "ReduceL2", "ReduceLogSumExp", "ReduceMax", "ReduceMean", "ReduceMin"]
    + ["ReduceProd", "ReduceSum", "ReduceSumSquare"],
)
def test_reductions_with_constant_axes(op: str) -> None:
    axes = _i64("axes", [0, -1])
    model = node_model(op, [("x", F, [3, 4, 5]), ("axes", I64, [2])], [("y", F, None)], [axes], opset=18, keepdims=0)
    check_tvm(model, {"x": _x(3, 4, 5)}, rtol=1e-5, atol=1e-5)


def test_log_sum_and_attribute_axes_before_opset_18() -> None:
    model = node_model("ReduceLogSum", [("x", F, [3, 4])], [("y", F, None)], opset=13, axes=[1])
    check_tvm(model, {"x": np.abs(_x(3, 4)) + 0.1})
    model = node_model("ReduceSum", [("x", F, [3, 4])], [("y", F, None)], opset=11, axes=[-1], keepdims=0)
    check_tvm(model, {"x": _x(3, 4)})


def test_log_sum_exp_does_not_overflow() -> None:
    model = node_model("ReduceLogSumExp", [("x", F, [2, 3])], [("y", F, None)], opset=13, axes=[1])
    x = np.array([[1000.0, 1000.0, 999.0], [-1000.0, -1001.0, -1000.0]], np.float32)
    got = check_tvm(model, {"x": x}, rtol=1e-6)[0]
    assert np.isfinite(got).all()


@pytest.mark.parametrize(("op", "want"), [("ReduceMax", -np.inf), ("ReduceSum", 0.0), ("ReduceProd", 1.0)])
def test_empty_reductions_give_the_identity(op: str, want: float) -> None:
    axes = _i64("axes", [1])
    model = node_model(op, [("x", F, [2, 0, 4]), ("axes", I64, [1])], [("y", F, None)], [axes], opset=18)
    got = tvm_session(model).run({"x": np.zeros((2, 0, 4), np.float32)})["y"]
    assert got.shape == (2, 1, 4) and (got == want).all()


def test_noop_with_empty_axes_keeps_the_elementwise_part() -> None:
    axes = numpy_helper.from_array(np.zeros(0, np.int64), "axes")
    model = node_model(
        "ReduceSumSquare", [("x", F, [3, 4]), ("axes", I64, [0])], [("y", F, None)], [axes], opset=18, noop_with_empty_axes=1
    )
    x = _x(3, 4)
    got = check_tvm(model, {"x": x})[0]
    np.testing.assert_allclose(got, x * x, rtol=1e-6)


@pytest.mark.parametrize("op", ["ReduceMax", "ReduceMin"])
def test_extremes_propagate_nan_as_the_spec_reference(op: str) -> None:
    model = node_model(op, [("x", F, [3, 3])], [("y", F, None)], opset=13, axes=[1], keepdims=0)
    x = np.array([[1, np.nan, 0], [np.nan, 2, 3], [4, 5, 6]], np.float32)
    got = check_tvm(model, {"x": x}, oracle="reference")[0]
    assert np.isnan(got[:2]).all() and not np.isnan(got[2])


def test_max_of_booleans_is_any() -> None:
    axes = _i64("axes", [1])
    model = node_model(
        "ReduceMax", [("x", TensorProto.BOOL, [3, 2]), ("axes", I64, [1])], [("y", TensorProto.BOOL, None)], [axes], opset=20
    )
    x = np.array([[True, False], [False, False], [True, True]])
    got = tvm_session(model).run({"x": x})["y"]
    np.testing.assert_array_equal(got, [[True], [False], [True]])


def test_runtime_axes_are_chosen_among_those_the_shapes_allow() -> None:
    model = node_model("ReduceSum", [("x", F, [3, 2, 2]), ("axes", I64, [1])], [("y", F, [3, 2])], opset=18, keepdims=0)
    session = tvm_session(model)
    x = _x(3, 2, 2)
    for axis in (1, 2, -1):
        got = session.run({"x": x, "axes": np.array([axis], np.int64)})["y"]
        np.testing.assert_allclose(got, x.sum(axis=axis), rtol=1e-6)


def test_runtime_axes_without_a_static_output_shape_are_declined() -> None:
    model = node_model("ReduceSum", [("x", F, [3, 2, 2]), ("axes", I64, [1])], [("y", F, None)], opset=18, keepdims=0)
    with pytest.raises(UnsupportedOpError, match="ReduceSum"):
        tvm_session(model)


@pytest.mark.parametrize("op", ["ArgMax", "ArgMin"])
@pytest.mark.parametrize("last", [0, 1])
def test_arg_extremes_resolve_ties_as_asked(op: str, last: int) -> None:
    model = node_model(op, [("x", F, [3, 4])], [("y", I64, None)], axis=-1, keepdims=0, select_last_index=last)
    x = np.array([[1, 3, 3, 0], [2, 2, 2, 2], [0, -1, 5, -1]], np.float32)
    got = check_tvm(model, {"x": x})[0]
    first = {"ArgMax": [1, 0, 2], "ArgMin": [3, 0, 1]}[op]
    lastw = {"ArgMax": [2, 3, 2], "ArgMin": [3, 3, 3]}[op]
    np.testing.assert_array_equal(got, lastw if last else first)


@pytest.mark.parametrize("op", ["CumSum", "CumProd"])
def test_scans_exclusive_and_reverse(op: str) -> None:
    axis = numpy_helper.from_array(np.array(1, np.int64), "axis")
    model = node_model(op, [("x", F, [2, 5]), ("axis", I64, [])], [("y", F, None)], [axis], opset=26, exclusive=1, reverse=1)
    check_tvm(model, {"x": _x(2, 5)}, oracle="reference" if op == "CumProd" else "ort")


def test_cumsum_with_runtime_axis_selects_the_axis() -> None:
    model = node_model("CumSum", [("x", F, [3, 4]), ("axis", TensorProto.INT32, [])], [("y", F, None)], opset=14)
    session = tvm_session(model)
    x = _x(3, 4)
    for a in (0, 1, -2):
        np.testing.assert_allclose(session.run({"x": x, "axis": np.array(a, np.int32)})["y"], np.cumsum(x, axis=a), rtol=1e-6)


@pytest.mark.parametrize("largest", [0, 1])
def test_top_k_keeps_the_lower_index_first_on_ties(largest: int) -> None:
    k = _i64("k", [3])
    model = node_model(
        "TopK", [("x", F, [2, 6]), ("k", I64, [1])], [("v", F, None), ("i", I64, None)], [k], largest=largest
    )
    x = np.array([[1, 2, 2, 0, 2, 1], [5, 5, 5, 5, 5, 5]], np.float32)
    check_tvm(model, {"x": x})


@pytest.mark.parametrize("largest", [1, 0])
def test_top_k_of_uint64_above_the_int64_range(largest: int) -> None:
    """TVM's sort takes no uint64: sorted as int64 keys with the sign bit flipped, the
    values gathered back. Values past 2**63 sort above the small ones; ties keep the
    lower index first."""
    k = _i64("k", [3])
    model = node_model(
        "TopK", [("x", TensorProto.UINT64, [2, 5]), ("k", I64, [1])],
        [("v", TensorProto.UINT64, None), ("i", I64, None)], [k], largest=largest,
    )
    big = 2**63 + 5
    x = np.array([[3, big, 7, big, 2**64 - 1], [0, 2**63, 2**63 - 1, 1, 0]], np.uint64)
    got = tvm_session(model).run({"x": x})
    order = np.argsort(-x.astype(object) if largest else x.astype(object), axis=1, kind="stable")[:, :3]
    np.testing.assert_array_equal(got["i"], order.astype(np.int64))
    np.testing.assert_array_equal(got["v"], np.take_along_axis(x, order, axis=1))


def test_quantize_per_axis_rounds_half_to_even_and_saturates() -> None:
    scale = numpy_helper.from_array(np.array([0.5, 1.0, 2.0], np.float32), "s")
    zp = numpy_helper.from_array(np.array([0, 10, -3], np.int8), "z")
    model = node_model(
        "QuantizeLinear", [("x", F, [2, 3, 4]), ("s", F, [3]), ("z", TensorProto.INT8, [3])], [("y", TensorProto.INT8, None)],
        [scale, zp], opset=19, axis=1,
    )
    x = np.tile(np.array([0.25, 0.75, 2.5, -2.5], np.float32), (2, 3, 1))
    x[1] *= 400.0  # saturates
    check_tvm(model, {"x": x})


@pytest.mark.parametrize("dtype", [TensorProto.UINT16, TensorProto.INT16])
def test_quantize_dequantize_16_bit_blocked(dtype: int) -> None:
    np_t = np.uint16 if dtype == TensorProto.UINT16 else np.int16
    scale = numpy_helper.from_array(np.array([[0.01, 0.02], [0.05, 0.1]], np.float32), "s")
    zp = numpy_helper.from_array(np.array([[100, 200], [300, 400]], np_t), "z")
    q = node_model(
        "QuantizeLinear", [("x", F, [2, 5]), ("s", F, [2, 2]), ("z", dtype, [2, 2])], [("y", dtype, None)],
        [scale, zp], opset=21, axis=1, block_size=3,
    )
    x = _x(2, 5) * 3
    y = check_tvm(q, {"x": x}, oracle="reference")[0]
    d = node_model(
        "DequantizeLinear", [("y", dtype, [2, 5]), ("s", F, [2, 2]), ("z", dtype, [2, 2])], [("x", F, None)],
        [scale, zp], opset=21, axis=1, block_size=3,
    )
    check_tvm(d, {"y": y}, oracle="reference")


def test_dynamic_quantize_linear() -> None:
    model = node_model(
        "DynamicQuantizeLinear", [("x", F, [3, 4])], [("y", TensorProto.UINT8, None), ("s", F, None), ("z", TensorProto.UINT8, None)],
        opset=11,
    )
    check_tvm(model, {"x": _x(3, 4) + 0.5})


def _q8(name: str, values: np.ndarray | float | int, dtype: type = np.float32) -> TensorProto:
    return numpy_helper.from_array(np.asarray(values, dtype), name)


def test_qlinear_matmul_with_per_column_scales() -> None:
    inits = [
        _q8("sa", 0.02), _q8("za", 128, np.uint8), _q8("sb", [0.01, 0.03, 0.02], np.float32),
        _q8("zb", [0, 3, -2], np.int8), _q8("sy", 0.05), _q8("zy", 120, np.uint8),
    ]
    inputs = [
        ("a", TensorProto.UINT8, [4, 6]), ("sa", F, []), ("za", TensorProto.UINT8, []), ("b", TensorProto.INT8, [6, 3]),
        ("sb", F, [3]), ("zb", TensorProto.INT8, [3]), ("sy", F, []), ("zy", TensorProto.UINT8, []),
    ]
    model = node_model("QLinearMatMul", inputs, [("y", TensorProto.UINT8, None)], inits, opset=21)
    feeds = {"a": RNG.integers(0, 256, (4, 6), dtype=np.uint8), "b": RNG.integers(-128, 128, (6, 3), dtype=np.int8)}
    got = tvm_session(model).run(feeds)["y"]
    np.testing.assert_array_equal(got, integer_oracle(model, feeds)[0])


def test_qlinear_conv_with_per_channel_weights_and_bias() -> None:
    inits = [
        _q8("sx", 0.05), _q8("zx", 100, np.uint8), _q8("sw", [0.01, 0.02], np.float32), _q8("zw", [0, 0], np.int8),
        _q8("sy", 0.1), _q8("zy", 90, np.uint8), _q8("b", [100, -50], np.int32),
    ]
    inputs = [
        ("x", TensorProto.UINT8, [1, 3, 6, 6]), ("sx", F, []), ("zx", TensorProto.UINT8, []), ("w", TensorProto.INT8, [2, 3, 3, 3]),
        ("sw", F, [2]), ("zw", TensorProto.INT8, [2]), ("sy", F, []), ("zy", TensorProto.UINT8, []), ("b", TensorProto.INT32, [2]),
    ]
    model = node_model("QLinearConv", inputs, [("y", TensorProto.UINT8, None)], inits, opset=10, pads=[1, 1, 1, 1], strides=[2, 2])
    feeds = {"x": RNG.integers(0, 256, (1, 3, 6, 6), dtype=np.uint8), "w": RNG.integers(-128, 128, (2, 3, 3, 3), dtype=np.int8)}
    got = tvm_session(model).run(feeds)["y"]
    np.testing.assert_array_equal(got, integer_oracle(model, feeds)[0])


def test_det_pivots_batches_and_singular_matrices() -> None:
    model = node_model("Det", [("x", F, [3, 4, 4])], [("y", F, None)], opset=11)
    x = _x(3, 4, 4)
    x[1, :, 0] = 0.0  # a zero first column: singular, pivoting cannot help
    x[2] = x[2][[3, 1, 0, 2]]
    x[2, 0, 0] = 0.0  # needs a row swap
    got = check_tvm(model, {"x": x}, rtol=1e-4, atol=1e-5)[0]
    assert got[1] == 0.0


@pytest.mark.parametrize(("op", "periodic"), [("HannWindow", 1), ("HammingWindow", 0), ("BlackmanWindow", 1)])
def test_windows_sized_by_their_declared_output(op: str, periodic: int) -> None:
    """A constant size folds away before the backend; a run-time one with a static output
    length reaches the converter."""
    model = node_model(
        op, [("n", I64, [])], [("y", TensorProto.DOUBLE, [10])], opset=17, periodic=periodic,
        output_datatype=TensorProto.DOUBLE,
    )
    check_tvm(model, {"n": np.array(10, np.int64)}, rtol=1e-12, atol=1e-12, oracle="reference")


@pytest.mark.parametrize("op", ["ReduceMax", "ReduceMin"])
@pytest.mark.parametrize("elem", [TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16])
def test_max_min_keep_infinities_and_nans(op: str, elem: int) -> None:
    """A set of only -inf (+inf) gives -inf (+inf), not the largest finite value (the
    Attention body's fully-masked-row test depends on it), a NaN anywhere gives NaN, and
    the 16-bit types build (TVM's isnan rejects bfloat16)."""
    import ml_dtypes

    np_type = {TensorProto.FLOAT: np.float32, TensorProto.FLOAT16: np.float16, TensorProto.BFLOAT16: ml_dtypes.bfloat16}[elem]
    x = _x(3, 4, 5)
    x[0] = -np.inf if op == "ReduceMax" else np.inf
    x[1, 2, 3] = np.nan
    x = x.astype(np_type)
    axes = _i64("axes", [1, 2])
    model = node_model(op, [("x", elem, [3, 4, 5]), ("axes", I64, [2])], [("y", elem, None)], [axes], opset=18, keepdims=0)
    got = tvm_session(model).run({"x": x})["y"].astype(np.float32)
    fn = np.max if op == "ReduceMax" else np.min
    np.testing.assert_array_equal(got, fn(x.astype(np.float32), axis=(1, 2)))
