"""EyeLike, ReverseSequence, Det, TensorScatter and Compress through the JIT and the
interpreter, against onnxruntime; run-time lengths and positions stay inside the buffers."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto

from tests.backends.native.helpers import check_native, interpret_program, lower_model, rand
from tests.backends.native.test_shape import ints
from tests.backends.native.test_spectral import build
from tests.backends.native.test_training_ops import check_reference


def check(model, feeds, interpret: bool = False, tol: float = 0.0):
    """Compare with onnxruntime and check the op's kernel was emitted."""
    program = check_native(model, feeds, rtol=tol, atol=tol, interpret=interpret)
    assert model.graph.node[0].op_type in [c.op_type for c in program.calls]
    return program


# --------------------------------------------------------------------------- EyeLike
@pytest.mark.parametrize("k", [0, 1, 3, -2, 7, -9])
@pytest.mark.parametrize("shape", [(4, 6), (5, 3)])
def test_eye_like(k: int, shape) -> None:
    x = rand(*shape)
    check(build("EyeLike", {"x": x}, opset=17, k=k), {"x": x}, interpret=k == 1)


@pytest.mark.parametrize("dtype", [TensorProto.INT32, TensorProto.DOUBLE, TensorProto.BOOL])
def test_eye_like_dtype(dtype: int) -> None:
    """onnxruntime has no bool EyeLike: onnx's reference checks that one."""
    x = ints(3, 4, dtype=np.int64)
    model = build("EyeLike", {"x": x}, opset=17, dtype=dtype, k=-1)
    if dtype == TensorProto.BOOL:
        check_reference(model, {"x": x}, tol=0, interpret=True)
    else:
        check(model, {"x": x}, interpret=True)


# --------------------------------------------------------------------------- ReverseSequence
@pytest.mark.parametrize("batch_axis, time_axis", [(0, 1), (1, 0)])
def test_reverse_sequence(batch_axis: int, time_axis: int) -> None:
    x = rand(5, 4, 3) if batch_axis == 1 else rand(4, 5, 3)
    lens = np.array([5, 1, 3, 2], np.int64)
    feeds = {"x": x, "lens": lens}
    model = build("ReverseSequence", feeds, opset=17, batch_axis=batch_axis, time_axis=time_axis)
    check(model, feeds, interpret=True)


def test_reverse_sequence_large_rows_int_data() -> None:
    x = ints(6, 8, 40, dtype=np.int32)
    feeds = {"x": x, "lens": np.array([1, 8, 7, 4, 2, 6], np.int64)}
    check(build("ReverseSequence", feeds, opset=17, batch_axis=0, time_axis=1), feeds)


def test_reverse_sequence_lengths_out_of_range_are_clamped() -> None:
    """onnxruntime refuses lengths outside [0, time]; the kernel clamps them."""
    x = rand(3, 4)
    lens = np.array([-2, 9, 2], np.int64)
    model = build("ReverseSequence", {"x": x, "lens": lens}, opset=17, batch_axis=0, time_axis=1)
    (got,) = interpret_program(lower_model(model), {"x": x, "lens": lens})
    expected = x.copy()
    expected[1] = x[1, ::-1]
    expected[2, :2] = x[2, 1::-1]
    np.testing.assert_array_equal(got, expected)


# --------------------------------------------------------------------------- Det
@pytest.mark.parametrize("shape", [(2, 2), (3, 3), (4, 3, 3), (2, 3, 5, 5), (1, 1)])
def test_det(shape) -> None:
    x = rand(*shape)
    check(build("Det", {"x": x}, opset=17), {"x": x}, interpret=len(shape) < 4, tol=1e-5)


def test_det_needs_pivoting_singular_and_double() -> None:
    """A zero first pivot, a permutation, a singular matrix (float64: onnx's reference,
    as onnxruntime has no double Det)."""
    x = np.array(
        [
            [[0, 1, 2], [3, 4, 5], [6, 7, 8]],
            [[0, 2, 0], [1, 0, 0], [0, 0, 3]],
            [[1, 2, 3], [2, 4, 6], [0, 0, 0]],
        ],
        dtype=np.float64,
    )
    check_reference(build("Det", {"x": x}, opset=17), {"x": x}, interpret=True, tol=1e-12)
    y = rand(40, 6, 6)
    check(build("Det", {"x": y}, opset=17), {"x": y}, tol=1e-4)


# --------------------------------------------------------------------------- TensorScatter
def _scatter(past, update, idx, opset: int = 24, **attrs):
    feeds = {"past": past, "update": update}
    inputs = ["past", "update"]
    if idx is not None:
        feeds["idx"] = np.array(idx, np.int64)
        inputs.append("idx")
    return build("TensorScatter", feeds, inputs=inputs, opset=opset, **attrs), feeds


@pytest.mark.parametrize("mode", ["linear", "circular"])
def test_tensor_scatter_4d(mode: str) -> None:
    idx = [1, 2] if mode == "linear" else [3, 2]
    model, feeds = _scatter(rand(2, 3, 5, 4), rand(2, 3, 2, 4, seed=1), idx, mode=mode)
    check(model, feeds, interpret=True)


def test_tensor_scatter_axis_and_default_indices() -> None:
    model, feeds = _scatter(rand(3, 6, 4), rand(3, 2, 4, seed=1), [0, 4, 1], axis=1)
    check(model, feeds, interpret=True)
    model, feeds = _scatter(rand(2, 4, 5, 3), rand(2, 4, 2, 3, seed=2), None, axis=2)
    check(model, feeds)
    model, feeds = _scatter(rand(2, 3, 7), rand(2, 3, 3, seed=3), [4, 0], axis=-1)
    check(model, feeds)


def test_tensor_scatter_rows_past_the_end_are_skipped() -> None:
    past, update = rand(2, 4, 3), rand(2, 2, 3, seed=1)
    model, feeds = _scatter(past, update, [3, -5], axis=1)
    (got,) = interpret_program(lower_model(model), feeds)
    expected = past.copy()
    expected[0, 3] = update[0, 0]
    np.testing.assert_array_equal(got, expected)


# --------------------------------------------------------------------------- Compress
@pytest.mark.parametrize(
    "axis, cond",
    [
        (0, [1, 0, 1]),
        (1, [0, 1, 1, 0]),
        (-1, [1, 0]),
        (None, [0, 1, 0, 0, 1, 1]),
        (2, [1, 1, 0, 1, 0]),
    ],
)
def test_compress_constant_condition(axis: int | None, cond) -> None:
    x = rand(3, 4, 5)
    attrs = {} if axis is None else {"axis": axis}
    kept = np.compress(cond, x, axis=axis).shape
    model = build(
        "Compress", {"x": x}, {"c": np.array(cond, bool)}, out_shape=list(kept), opset=17, **attrs
    )
    check(model, {"x": x}, interpret=axis in (1, None))


def test_compress_runtime_condition_is_a_data_dependent_output() -> None:
    """A run-time condition: the output holds the bound, its actual shape is reported
    (``kernel/lower/datadep.py``; more cases in test_data_dependent.py)."""
    x = rand(3, 2)
    feeds = {"x": x, "c": np.array([1, 0, 1], bool)}
    model = build("Compress", feeds, opset=17, out_shape=[2, 2], axis=0)
    program = check(model, feeds, interpret=True)
    assert program.outputs[0].max_shape == (3, 2) and program.outputs[0].extent is not None
