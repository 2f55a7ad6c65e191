"""Reductions, normalizations, activations and losses compared with onnxruntime.

Each case builds a one-node model, runs it through onnxruntime and through
``torsh_gen.backend``, and requires the same shapes, dtypes and values. Ops newer than
onnxruntime supports (SwiGLU) and random ones (training Dropout) are checked by hand.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np
import pytest

from tests.ops.onenode import check_one_node, run_one_node

RNG = np.random.default_rng(11)

check = partial(check_one_node, rtol=1e-5, atol=1e-5, in_float64=True)


def _f32(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def _i64(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int64)


# --------------------------------------------------------------------------- reductions
REDUCES = [
    "ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1",
    "ReduceL2", "ReduceLogSumExp", "ReduceSumSquare",
]  # fmt: skip


@pytest.mark.parametrize("name", REDUCES)
@pytest.mark.parametrize("axes", [None, [1], [-1], [0, -1]])
@pytest.mark.parametrize("keepdims", [0, 1])
def test_reduce_axes_as_input(name: str, axes: list[int] | None, keepdims: int) -> None:
    x = _f32(2, 3, 4)
    check(name, [x, None if axes is None else _i64(*axes)], keepdims=keepdims)


@pytest.mark.parametrize("name", REDUCES + ["ReduceLogSum"])
def test_reduce_axes_as_attribute_old_opset(name: str) -> None:
    x = np.abs(_f32(2, 3, 4)) + 0.5
    check(name, [x], opset=11, axes=[0, -1], keepdims=0)
    check(name, [x], opset=11)


@pytest.mark.parametrize("name", ["ReduceSum", "ReduceL2", "ReduceSumSquare", "ReduceMax"])
def test_reduce_noop_with_empty_axes(name: str) -> None:
    x = _f32(3, 2)
    got = check(name, [x, _i64()], noop_with_empty_axes=1)[0]
    assert got.shape == x.shape


@pytest.mark.parametrize("name", ["ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd"])
def test_reduce_integers_keep_dtype(name: str) -> None:
    x = RNG.integers(-5, 6, (3, 4)).astype(np.int32)
    check(name, [x, _i64(1)])


@pytest.mark.parametrize(
    ("name", "value"),
    [("ReduceSum", 0.0), ("ReduceProd", 1.0), ("ReduceMax", -np.inf), ("ReduceMin", np.inf),
     ("ReduceLogSumExp", -np.inf), ("ReduceSumSquare", 0.0)],
)  # fmt: skip
def test_reduce_empty_set_gives_identity(name: str, value: float) -> None:
    x = np.zeros((2, 0, 4), np.float32)
    (y,) = run_one_node(name, [x, _i64(1)], opset=20)
    assert y.shape == (2, 1, 4) and y.dtype == np.float32
    assert np.all(y == value)


def test_reduce_max_bool_and_empty_bool() -> None:
    x = np.array([[True, False], [False, False]])
    (y,) = run_one_node("ReduceMax", [x, _i64(1)], opset=20)
    np.testing.assert_array_equal(y, [[True], [False]])
    (e,) = run_one_node("ReduceMax", [np.zeros((2, 0), bool), _i64(1)], opset=20)
    assert e.dtype == np.bool_ and e.shape == (2, 1) and not e.any()


# --------------------------------------------------------------------------- softmax
@pytest.mark.parametrize("name", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize(("opset", "axis"), [(11, 1), (11, 0), (11, -1), (13, 1), (13, -2)])
def test_softmax_coerced_and_along_axis(name: str, opset: int, axis: int) -> None:
    check(name, [_f32(2, 3, 4) * 10], opset=opset, axis=axis)


def test_softmax_float16_and_default_axis() -> None:
    check("Softmax", [_f32(3, 5).astype(np.float16)], opset=13, rtol=1e-3, atol=1e-3)
    check("LogSoftmax", [_f32(3, 5)], opset=11)


# --------------------------------------------------------------------------- norms
@pytest.mark.parametrize("axis", [0, 1, -1, -2])
def test_layer_normalization_three_outputs(axis: int) -> None:
    x = _f32(2, 3, 4)
    norm_shape = x.shape[axis % 3 :]
    scale, bias = _f32(*norm_shape), _f32(*norm_shape)
    check("LayerNormalization", [x, scale, bias], n_outputs=3, opset=17, axis=axis)
    check("LayerNormalization", [x, scale], n_outputs=1, opset=17, axis=axis, epsilon=0.1)


@pytest.mark.parametrize("axis", [1, -1])
def test_rms_normalization(axis: int) -> None:
    x = _f32(2, 3, 4)
    check("RMSNormalization", [x, _f32(*x.shape[axis % 3 :])], opset=23, axis=axis)


def test_group_normalization_opset21_per_channel() -> None:
    x = _f32(2, 6, 3, 3)
    check("GroupNormalization", [x, _f32(6), _f32(6)], opset=21, num_groups=3)


def test_group_normalization_opset18_per_group() -> None:
    x = _f32(2, 4, 5)
    scale, bias = _f32(2), _f32(2)
    (y,) = run_one_node(
        "GroupNormalization", [x, scale, bias], opset=18, num_groups=2, epsilon=1e-3
    )
    g = x.reshape(2, 2, -1).astype(np.float64)
    ref = (g - g.mean(2, keepdims=True)) / np.sqrt(g.var(2, keepdims=True) + 1e-3)
    ref = ref * scale[None, :, None] + bias[None, :, None]
    np.testing.assert_allclose(y, ref.reshape(x.shape), rtol=1e-5, atol=1e-5)


def test_instance_and_batch_normalization_inference() -> None:
    x = _f32(2, 3, 4, 5)
    check("InstanceNormalization", [x, _f32(3), _f32(3)], epsilon=1e-3)
    var = np.abs(_f32(3)) + 0.1
    check("BatchNormalization", [x, _f32(3), _f32(3), _f32(3), var], opset=15)


def test_batch_normalization_training_mode() -> None:
    x = _f32(4, 3, 2, 2)
    var = np.abs(_f32(3)) + 0.1
    check(
        "BatchNormalization", [x, _f32(3), _f32(3), _f32(3), var], n_outputs=3, opset=15,
        training_mode=1, momentum=0.8,
    )  # fmt: skip


@pytest.mark.parametrize("p", [1, 2])
def test_lp_normalization_with_zero_rows(p: int) -> None:
    x = _f32(3, 4)
    check("LpNormalization", [x], opset=18, p=p, axis=0)
    x[1] = 0
    (y,) = run_one_node("LpNormalization", [x], opset=22, p=p)
    assert np.all(y[1] == 0) and np.all(np.isfinite(y))


def test_mvn_and_lrn() -> None:
    x = _f32(2, 5, 3, 3)
    check("MeanVarianceNormalization", [x], opset=13)
    check("MeanVarianceNormalization", [x], opset=13, axes=[1, -1])
    check("LRN", [x], opset=13, size=3)
    check("LRN", [x], opset=13, size=5, alpha=0.01, beta=0.5, bias=2.0)
    (y,) = run_one_node("LRN", [x], opset=13, size=2, alpha=0.01, beta=0.5, bias=2.0)
    sq = np.concatenate([x * x, np.zeros_like(x[:, :1])], axis=1)
    window = sq[:, :-1] + sq[:, 1:]  # even size: channels c and c + 1
    np.testing.assert_allclose(y, x / (2.0 + 0.01 / 2 * window) ** 0.5, rtol=1e-5)


def test_dropout_inference_and_training() -> None:
    x = _f32(20, 30)
    y, mask = check("Dropout", [x], n_outputs=2, opset=13)
    assert mask.dtype == np.bool_ and mask.all()
    zero, train = np.array(0.0, np.float32), np.array(True)
    y, mask = run_one_node("Dropout", [x, zero, train], n_outputs=2, opset=13)
    np.testing.assert_array_equal(y, x)
    y, mask = run_one_node("Dropout", [x, np.array(0.25, np.float32), train], n_outputs=2, seed=3)
    assert mask.dtype == np.bool_ and 0.6 < mask.mean() < 0.9
    np.testing.assert_allclose(y, np.where(mask, x / 0.75, 0), rtol=1e-6)


# --------------------------------------------------------------------------- activations
@pytest.mark.parametrize(
    ("name", "opset", "attrs"),
    [
        ("LeakyRelu", 16, {}), ("LeakyRelu", 16, {"alpha": 0.3}), ("Elu", 6, {"alpha": 0.5}),
        ("Selu", 6, {}), ("Celu", 12, {"alpha": 2.0}), ("HardSigmoid", 6, {"beta": 0.4}),
        ("HardSwish", 14, {}), ("ThresholdedRelu", 10, {"alpha": 0.2}), ("Gelu", 20, {}),
        ("Gelu", 20, {"approximate": "tanh"}), ("Shrink", 9, {"lambd": 0.7, "bias": 0.3}),
    ],
)  # fmt: skip
def test_activation(name: str, opset: int, attrs: dict[str, Any]) -> None:
    check(name, [_f32(3, 4, 5) * 3], opset=opset, **attrs)


def test_activation_float16_and_int_shrink() -> None:
    check("Elu", [_f32(4, 5).astype(np.float16)], opset=6, rtol=1e-3, atol=1e-3)
    check("Shrink", [np.arange(-5, 6, dtype=np.int32)], opset=9, lambd=1.5, bias=1.0)


def test_prelu_broadcast_slope() -> None:
    check("PRelu", [_f32(2, 3, 4), _f32(4)], opset=16)
    check("PRelu", [_f32(2, 3, 4), _f32(3, 1)], opset=16)


def test_swish_and_swiglu_by_hand() -> None:
    a, b = _f32(3, 4) * 4, _f32(3, 4)
    (y,) = run_one_node("Swish", [a], opset=24, alpha=0.5)
    np.testing.assert_allclose(y, a / (1 + np.exp(-0.5 * a)), rtol=1e-6)
    (y,) = run_one_node("SwiGLU", [a, b], opset=28, alpha=2.0)
    np.testing.assert_allclose(y, a / (1 + np.exp(-2 * a)) * b, rtol=1e-6, atol=1e-7)


# --------------------------------------------------------------------------- losses
@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("ignore_index", [None, 1, -1])
def test_losses(reduction: str, weighted: bool, ignore_index: int | None) -> None:
    n, c = 3, 4
    scores = _f32(n, c, 2, 2)
    target = RNG.integers(0, c, (n, 2, 2)).astype(np.int64)
    if ignore_index is not None:
        target[0, 0, 0] = ignore_index
    weight = np.abs(_f32(c)) + 0.1 if weighted else None
    attrs: dict[str, Any] = {"reduction": reduction}
    if ignore_index is not None:
        attrs["ignore_index"] = ignore_index
    check("SoftmaxCrossEntropyLoss", [scores, target, weight], n_outputs=2, opset=13, **attrs)
    check("NegativeLogLikelihoodLoss", [scores, target, weight], opset=13, **attrs)


def test_nll_loss_two_dimensional_input() -> None:
    check("NegativeLogLikelihoodLoss", [_f32(5, 3), _i64(0, 2, 1, 1, 0)], opset=13)
