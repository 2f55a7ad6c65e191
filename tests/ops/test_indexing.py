"""Indexing-family kernels compared with onnxruntime on one-node models.

Each case builds a single-node model, runs it through onnxruntime and through
``torsh_gen.backend``, and requires the same shapes, dtypes and values. Ops newer than
onnxruntime's opset support (TensorScatter, CumProd) are checked against hand results.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest

from tests.ops.onenode import check_one_node, run_one_node

RNG = np.random.default_rng(7)

# Every model in this file goes through ONNX shape inference before it runs.
check = partial(check_one_node, rtol=1e-6, atol=1e-6, infer_shapes=True)
ours = partial(run_one_node, infer_shapes=True)


def _f32(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def _i64(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int64)


# --------------------------------------------------------------------------- gathers
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_gather_negative_indices_and_axes(axis: int) -> None:
    data = _f32(3, 4, 5)
    idx = np.array([[0, -1], [1, -2]], dtype=np.int64)
    check("Gather", [data, idx], axis=axis)


def test_gather_scalar_index_and_int32() -> None:
    check("Gather", [_f32(4, 3), np.array(-2, dtype=np.int32)], axis=0)


def test_gather_elements_negative() -> None:
    data = _f32(3, 4)
    idx = np.array([[0, -1, 2, 1], [-3, 1, 0, 2]], dtype=np.int64)
    check("GatherElements", [data, idx], axis=0)
    check("GatherElements", [data, np.array([[-1], [0], [3]], dtype=np.int64)], axis=-1)


@pytest.mark.parametrize("batch_dims", [0, 1, 2])
def test_gather_nd(batch_dims: int) -> None:
    data = _f32(2, 3, 4, 5)
    m = 2
    shape = (2, 3)[:batch_dims] + (4,) + (m,)
    idx = RNG.integers(-2, 2, size=shape).astype(np.int64)
    check("GatherND", [data, idx], batch_dims=batch_dims)


# --------------------------------------------------------------------------- scatters
@pytest.mark.parametrize("reduction", ["none", "add", "mul", "max", "min"])
def test_scatter_elements_reductions(reduction: str) -> None:
    data = _f32(3, 4)
    idx = np.array([[1, -1, 0, 1], [1, 0, -3, 1]], dtype=np.int64)
    if reduction == "none":
        idx = np.array([[1, -1, 0, 2], [2, 0, 1, 0]], dtype=np.int64)
    check("ScatterElements", [data, idx, _f32(2, 4)], axis=0, reduction=reduction)
    check("ScatterElements", [data, idx.T.copy()[:3], _f32(3, 2)], axis=-1, reduction=reduction)


def test_scatter_deprecated_opset9() -> None:
    data = np.zeros((3, 3), dtype=np.float32)
    idx = np.array([[1, 0, 2], [0, 2, 1]], dtype=np.int64)
    check("Scatter", [data, idx, _f32(2, 3)], opset=10, axis=1)


@pytest.mark.parametrize("reduction", ["none", "add", "mul", "max", "min"])
def test_scatter_nd(reduction: str) -> None:
    data = _f32(4, 3, 2)
    if reduction == "none":
        idx = np.array([[0], [-1]], dtype=np.int64)
        upd = _f32(2, 3, 2)
    else:
        idx = np.array([[0, 1], [0, -2], [3, 2]], dtype=np.int64)  # a duplicate address
        upd = _f32(3, 2)
    check("ScatterND", [data, idx, upd], reduction=reduction)


def test_tensor_scatter_linear_and_circular() -> None:
    past = np.zeros((2, 4, 3), dtype=np.float32)
    upd = np.arange(12, dtype=np.float32).reshape(2, 2, 3) + 1
    wi = _i64(1, 3)
    (lin,) = ours("TensorScatter", [past, upd[:, :1], wi], opset=24)
    np.testing.assert_array_equal(lin[0, 1], upd[0, 0])
    np.testing.assert_array_equal(lin[1, 3], upd[1, 0])
    assert lin.sum() == upd[:, 0].sum()
    inputs = [past, upd, wi]
    (circ,) = ours("TensorScatter", inputs, opset=24, mode="circular", axis=1)
    np.testing.assert_array_equal(circ[1, 3], upd[1, 0])
    np.testing.assert_array_equal(circ[1, 0], upd[1, 1])
    np.testing.assert_array_equal(circ[0, 1:3], upd[0])


# --------------------------------------------------------------------------- selection
@pytest.mark.parametrize("axis", [-1, 0, 1, -2])
def test_one_hot(axis: int) -> None:
    idx = np.array([[0, 3, -1], [5, -4, 2]], dtype=np.int64)  # 5 and -4 are out of range
    check("OneHot", [idx, np.array(4, dtype=np.int64), np.array([0, 7], dtype=np.float32)], axis=axis)


def test_one_hot_float_indices() -> None:
    idx = np.array([1.0, 2.0, -1.0], dtype=np.float32)
    vals = np.array([0.5, 2.0], dtype=np.float32)
    check("OneHot", [idx, np.array([3.0], dtype=np.float32), vals])


@pytest.mark.parametrize("axis", [None, 0, 1, -1])
def test_compress(axis: int | None) -> None:
    x = _f32(3, 2)
    cond = np.array([True, False, True])[: 3 if axis in (None, 0) else 2]
    kw = {} if axis is None else {"axis": axis}
    check("Compress", [x, cond], **kw)


def test_compress_short_condition_and_empty() -> None:
    check("Compress", [_f32(4, 2), np.array([False, True])], axis=0)
    check("Compress", [_f32(4, 2), np.array([False, False, False])], axis=0)


@pytest.mark.parametrize("dtype", [np.float32, np.int32, np.bool_])
def test_nonzero(dtype: type) -> None:
    x = (RNG.integers(0, 3, size=(3, 4, 2)) > 1).astype(dtype)
    check("NonZero", [x])
    check("NonZero", [np.zeros((2, 0), dtype=dtype)])


@pytest.mark.parametrize(("batch_axis", "time_axis"), [(1, 0), (0, 1)])
def test_reverse_sequence(batch_axis: int, time_axis: int) -> None:
    x = _f32(4, 4, 3)
    lens = _i64(4, 1, 2, 3)
    check("ReverseSequence", [x, lens], batch_axis=batch_axis, time_axis=time_axis)


# --------------------------------------------------------------------------- unique
@pytest.mark.parametrize("sorted_", [0, 1])
@pytest.mark.parametrize("axis", [None, 0, 1, -1])
def test_unique(sorted_: int, axis: int | None) -> None:
    x = RNG.integers(0, 2, size=(4, 3, 2)).astype(np.float32)
    x[2] = x[0]
    kw = {} if axis is None else {"axis": axis}
    check("Unique", [x], n_outputs=4, sorted=sorted_, **kw)


def test_unique_single_output_int() -> None:
    x = np.array([3, 1, -2, 3, 1, 7], dtype=np.int64)
    (y,) = check("Unique", [x], n_outputs=1, sorted=0)
    np.testing.assert_array_equal(y, [3, 1, -2, 7])


# --------------------------------------------------------------------------- sorting
@pytest.mark.parametrize("largest", [0, 1])
@pytest.mark.parametrize("axis", [-1, 0])
def test_top_k_ties_by_index(largest: int, axis: int) -> None:
    x = RNG.integers(0, 3, size=(5, 6)).astype(np.float32)
    check("TopK", [x, _i64(3)], n_outputs=2, axis=axis, largest=largest)


def test_top_k_unsigned_and_k_attribute() -> None:
    x = np.array([[3, 0, 2**63, 3, 5]], dtype=np.uint64)  # onnxruntime lacks uint64 TopK
    for largest, k, want in [(1, 3, [2, 4, 0]), (0, 4, [1, 0, 3, 4])]:
        values, indices = ours("TopK", [x, _i64(k)], n_outputs=2, opset=11, largest=largest)
        assert values.dtype == np.uint64 and indices.dtype == np.int64
        np.testing.assert_array_equal(indices, [want])
        np.testing.assert_array_equal(values, x[:, want])
    check("TopK", [_f32(3, 4)], n_outputs=2, opset=9, k=2, axis=0)


@pytest.mark.parametrize("op_type", ["ArgMax", "ArgMin"])
@pytest.mark.parametrize("keepdims", [0, 1])
@pytest.mark.parametrize("last", [0, 1])
def test_arg_max_min(op_type: str, keepdims: int, last: int) -> None:
    x = RNG.integers(0, 3, size=(3, 4, 5)).astype(np.float32)
    for axis in (0, -1, 1):
        check(op_type, [x], axis=axis, keepdims=keepdims, select_last_index=last)


@pytest.mark.parametrize(("opset", "axis"), [(11, 1), (11, 0), (11, -1), (13, 1), (13, -3)])
def test_hardmax(opset: int, axis: int) -> None:
    x = RNG.integers(0, 3, size=(2, 3, 4)).astype(np.float32)  # ties: first max wins
    check("Hardmax", [x], opset=opset, axis=axis)


# --------------------------------------------------------------------------- cumulative
@pytest.mark.parametrize("exclusive", [0, 1])
@pytest.mark.parametrize("reverse", [0, 1])
@pytest.mark.parametrize("dtype", [np.float32, np.int32])
def test_cumsum(exclusive: int, reverse: int, dtype: type) -> None:
    x = RNG.integers(-5, 5, size=(3, 4)).astype(dtype)
    for axis in (np.array(1, np.int64), np.array([-2], np.int32)):
        check("CumSum", [x, axis], exclusive=exclusive, reverse=reverse)


def test_cumprod_against_hand_results() -> None:
    x = np.array([1, 2, 3], dtype=np.int32)
    ax = np.array(0, dtype=np.int64)
    expected = {(0, 0): [1, 2, 6], (1, 0): [1, 1, 2], (0, 1): [6, 6, 3], (1, 1): [6, 3, 1]}
    for (excl, rev), want in expected.items():
        (got,) = ours("CumProd", [x, ax], opset=26, exclusive=excl, reverse=rev)
        assert got.dtype == np.int32
        np.testing.assert_array_equal(got, want)


# --------------------------------------------------------------------------- masks
@pytest.mark.parametrize("upper", [0, 1])
@pytest.mark.parametrize("k", [None, 0, 2, -1, -7, 9])
def test_trilu(upper: int, k: int | None) -> None:
    x = _f32(2, 3, 5)
    check("Trilu", [x, None if k is None else np.array(k, dtype=np.int64)], upper=upper)


def test_trilu_empty_and_int() -> None:
    check("Trilu", [np.zeros((0, 5), dtype=np.int64), np.array(1, dtype=np.int64)], upper=0)
    check("Trilu", [np.arange(12, dtype=np.int32).reshape(4, 3)], upper=1)
