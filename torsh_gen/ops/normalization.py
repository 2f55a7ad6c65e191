"""Normalizations: Softmax, LogSoftmax, LayerNormalization, RMSNormalization,
GroupNormalization, InstanceNormalization, BatchNormalization, LpNormalization,
MeanVarianceNormalization, LRN and Dropout.

Statistics of 16-bit floats are computed in float32 (or in ``stash_type`` where the op has
one) and the normalized result is cast back before scale and bias apply, as the ONNX
function bodies of these ops do.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from torsh_gen.ir.types import DType
from torsh_gen.ops.registry import FLOAT, INT, INTS, OpSpec, RunContext, op


def _wide(dtype: np.dtype) -> np.dtype:
    """The dtype to compute statistics in: floats narrower than 32 bits widen to float32."""
    if dtype.kind == "f" and dtype.itemsize >= 4:
        return dtype
    return np.dtype(np.float32)


def _stash(stash_type: int, dtype: np.dtype) -> np.dtype:
    """The numpy dtype of an ONNX ``stash_type`` code (0 or unknown: widen ``dtype``)."""
    try:
        return DType(stash_type).numpy
    except ValueError:
        return _wide(dtype)


def _channel_shape(param: np.ndarray, rank: int) -> np.ndarray:
    """A per-channel (C,) parameter shaped to broadcast over an (N, C, ...) tensor."""
    return np.asarray(param).reshape((1, -1) + (1,) * (rank - 2))


def _standardize(x: np.ndarray, axes: tuple[int, ...], eps: float) -> tuple[np.ndarray, ...]:
    """(x - mean) / sqrt(var + eps) over ``axes``, with the mean and 1/std (kept dims)."""
    mean = np.mean(x, axis=axes, keepdims=True)
    centred = x - mean
    var = np.mean(centred * centred, axis=axes, keepdims=True)
    inv_std = (1.0 / np.sqrt(var + np.asarray(eps, x.dtype))).astype(x.dtype)
    return centred * inv_std, mean, inv_std


# --------------------------------------------------------------------------- softmax
def _softmax(x: np.ndarray, axis: int) -> np.ndarray:
    shifted = x - np.max(x, axis=axis, keepdims=True)
    e = np.exp(shifted)
    return e / np.sum(e, axis=axis, keepdims=True)


def _log_softmax(x: np.ndarray, axis: int) -> np.ndarray:
    shifted = x - np.max(x, axis=axis, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))


@op("Softmax", since=1)
class Softmax(OpSpec):
    """Softmax of the input flattened to 2-D at ``axis`` (opsets 1 to 12)."""

    attrs = {"axis": INT(1)}
    flops_per_element = 5
    #: False from opset 13: the op runs along ``axis`` alone.
    coerce_2d: ClassVar[bool] = True

    @staticmethod
    def kernel(x: np.ndarray, axis: int) -> np.ndarray:
        """The function along one axis."""
        return _softmax(x, axis)

    def run(self, ctx: RunContext, x: np.ndarray) -> np.ndarray:
        if x.ndim == 0 or x.size == 0:
            return x.copy()
        xw = x.astype(_wide(x.dtype))
        axis = ctx.attrs.axis % x.ndim
        if self.coerce_2d:
            rows = math.prod(x.shape[:axis])
            y = self.kernel(xw.reshape(rows, -1), 1).reshape(x.shape)
        else:
            y = self.kernel(xw, axis)
        return y.astype(x.dtype)


@op("Softmax", since=13)
class Softmax13(Softmax):
    """Softmax along ``axis`` (default -1)."""

    attrs = {"axis": INT(-1)}
    coerce_2d = False


@op("LogSoftmax", since=1)
class LogSoftmax(Softmax):
    """Log of softmax over the input flattened to 2-D at ``axis`` (opsets 1 to 12)."""

    @staticmethod
    def kernel(x: np.ndarray, axis: int) -> np.ndarray:
        """The function along one axis."""
        return _log_softmax(x, axis)


@op("LogSoftmax", since=13)
class LogSoftmax13(LogSoftmax):
    """Log of softmax along ``axis`` (default -1)."""

    attrs = {"axis": INT(-1)}
    coerce_2d = False


# --------------------------------------------------------------------------- layer-like norms
@op("LayerNormalization", since=17)
class LayerNormalization(OpSpec):
    """Normalizes over axes ``axis``..end; outputs Y, Mean and InvStdDev (in ``stash_type``)."""

    attrs = {"axis": INT(-1), "epsilon": FLOAT(1e-5), "stash_type": INT(1)}
    flops_per_element = 8

    def run(
        self, ctx: RunContext, x: np.ndarray, scale: np.ndarray, bias: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        a = ctx.attrs
        axis = a.axis % x.ndim
        xs = x.astype(_stash(a.stash_type, x.dtype))
        normed, mean, inv_std = _standardize(xs, tuple(range(axis, x.ndim)), a.epsilon)
        y = normed.astype(x.dtype) * scale
        if bias is not None:
            y = y + bias
        return y.astype(x.dtype), mean, inv_std


@op("RMSNormalization", since=23)
class RMSNormalization(OpSpec):
    """x / sqrt(mean(x^2) + epsilon) over axes ``axis``..end, times scale."""

    attrs = {"axis": INT(-1), "epsilon": FLOAT(1e-5), "stash_type": INT(1)}
    flops_per_element = 5

    def run(self, ctx: RunContext, x: np.ndarray, scale: np.ndarray) -> np.ndarray:
        a = ctx.attrs
        axes = tuple(range(a.axis % x.ndim, x.ndim))
        xs = x.astype(_stash(a.stash_type, x.dtype))
        ms = np.mean(xs * xs, axis=axes, keepdims=True)
        normed = xs / np.sqrt(ms + np.asarray(a.epsilon, xs.dtype))
        return (normed.astype(x.dtype) * scale).astype(x.dtype)


@op("GroupNormalization", since=18)
class GroupNormalization(OpSpec):
    """Normalizes each group of channels per sample; scale and bias per group (opset 18)."""

    attrs = {"epsilon": FLOAT(1e-5), "num_groups": INT(required=True), "stash_type": INT(1)}
    flops_per_element = 8

    @staticmethod
    def per_channel(param: np.ndarray, channels: int, groups: int) -> np.ndarray:
        """The (C,) parameter vector: opset 18 repeats each group's value over its channels."""
        return np.repeat(np.asarray(param).reshape(-1), channels // groups)

    def run(
        self, ctx: RunContext, x: np.ndarray, scale: np.ndarray, bias: np.ndarray
    ) -> np.ndarray:
        a = ctx.attrs
        n, c = x.shape[0], x.shape[1]
        g = int(a.num_groups)
        xs = x.astype(_stash(a.stash_type, x.dtype)).reshape(n, g, -1)
        normed, _, _ = _standardize(xs, (2,), a.epsilon)
        normed = normed.reshape(x.shape).astype(x.dtype)
        s = _channel_shape(self.per_channel(scale, c, g), x.ndim)
        b = _channel_shape(self.per_channel(bias, c, g), x.ndim)
        return (normed * s + b).astype(x.dtype)


@op("GroupNormalization", since=21)
class GroupNormalization21(GroupNormalization):
    """Group normalization with scale and bias per channel (opset 21 on)."""

    @staticmethod
    def per_channel(param: np.ndarray, channels: int, groups: int) -> np.ndarray:
        """The (C,) parameter vector, given as such from opset 21."""
        return np.asarray(param).reshape(-1)


@op("InstanceNormalization", since=1)
class InstanceNormalization(OpSpec):
    """Normalizes each (sample, channel) over the spatial axes; scale and bias per channel."""

    attrs = {"epsilon": FLOAT(1e-5)}
    flops_per_element = 8

    def run(
        self, ctx: RunContext, x: np.ndarray, scale: np.ndarray, bias: np.ndarray
    ) -> np.ndarray:
        xs = x.astype(_wide(x.dtype))
        normed, _, _ = _standardize(xs, tuple(range(2, x.ndim)), ctx.attrs.epsilon)
        y = normed * _channel_shape(scale, x.ndim) + _channel_shape(bias, x.ndim)
        return y.astype(x.dtype)


@op("BatchNormalization", since=1)
class BatchNormalization(OpSpec):
    """Batch normalization with given statistics; in training mode (opset 14 on) also the
    batch statistics and updated running mean and variance. Parameters are per channel, or
    per (C, D1, ...) element for the old non-spatial form."""

    attrs = {"epsilon": FLOAT(1e-5), "momentum": FLOAT(0.9), "training_mode": INT(0)}
    flops_per_element = 4

    def run(
        self,
        ctx: RunContext,
        x: np.ndarray,
        scale: np.ndarray,
        bias: np.ndarray,
        mean: np.ndarray,
        var: np.ndarray,
    ) -> Any:
        a = ctx.attrs

        def shaped(p: np.ndarray) -> np.ndarray:
            p = np.asarray(p)
            return p.reshape((1,) + p.shape) if p.ndim > 1 else _channel_shape(p, x.ndim)

        eps = np.asarray(a.epsilon, x.dtype)
        if not (a.training_mode and ctx.n_outputs > 1):
            y = (x - shaped(mean)) / np.sqrt(shaped(var) + eps) * shaped(scale) + shaped(bias)
            return y.astype(x.dtype)
        axes = (0,) + tuple(range(2, x.ndim))
        xw = x.astype(_wide(x.dtype))
        batch_mean = np.mean(xw, axis=axes)
        batch_var = np.var(xw, axis=axes)
        bm, bv = _channel_shape(batch_mean, x.ndim), _channel_shape(batch_var, x.ndim)
        y = (xw - bm) / np.sqrt(bv + eps) * shaped(scale) + shaped(bias)
        m = a.momentum
        running_mean = (mean * m + batch_mean * (1 - m)).astype(mean.dtype)
        running_var = (var * m + batch_var * (1 - m)).astype(var.dtype)
        return y.astype(x.dtype), running_mean, running_var


# --------------------------------------------------------------------------- other norms
@op("LpNormalization", since=1)
class LpNormalization(OpSpec):
    """x divided by its L1 or L2 norm along ``axis``; zero where the norm is zero."""

    attrs = {"axis": INT(-1), "p": INT(2)}
    flops_per_element = 3

    def run(self, ctx: RunContext, x: np.ndarray) -> np.ndarray:
        xw = x.astype(_wide(x.dtype))
        axis = ctx.attrs.axis
        if ctx.attrs.p == 1:
            norm = np.sum(np.abs(xw), axis=axis, keepdims=True)
        else:
            norm = np.sqrt(np.sum(xw * xw, axis=axis, keepdims=True))
        safe = np.where(norm == 0, 1, norm)
        return np.where(norm == 0, 0, xw / safe).astype(x.dtype)


@op("MeanVarianceNormalization", since=9)
class MeanVarianceNormalization(OpSpec):
    """(x - mean) / (std + 1e-9) over ``axes`` (default: all but the channel axis)."""

    attrs = {"axes": INTS([0, 2, 3])}
    flops_per_element = 6

    def run(self, ctx: RunContext, x: np.ndarray) -> np.ndarray:
        xw = x.astype(_wide(x.dtype))
        axes = tuple(sorted({a % x.ndim for a in ctx.attrs.axes}))
        centred = xw - np.mean(xw, axis=axes, keepdims=True)
        std = np.sqrt(np.mean(centred * centred, axis=axes, keepdims=True))
        return (centred / (std + np.asarray(1e-9, xw.dtype))).astype(x.dtype)


@op("LRN", since=1)
class LRN(OpSpec):
    """Local response normalization across a window of ``size`` channels."""

    attrs = {
        "alpha": FLOAT(1e-4),
        "beta": FLOAT(0.75),
        "bias": FLOAT(1.0),
        "size": INT(required=True),
    }
    flops_per_element = 8

    def run(self, ctx: RunContext, x: np.ndarray) -> np.ndarray:
        a = ctx.attrs
        size = int(a.size)
        before, after = (size - 1) // 2, size // 2  # floor and ceil of (size - 1) / 2
        xw = x.astype(_wide(x.dtype))
        sq = xw * xw
        pad = [(0, 0)] * x.ndim
        pad[1] = (before + 1, after)  # one extra leading zero for the cumulative-sum trick
        cum = np.cumsum(np.pad(sq, pad), axis=1)
        c = x.shape[1]
        hi = np.take(cum, np.arange(c) + before + after + 1, axis=1)
        lo = np.take(cum, np.arange(c), axis=1)
        square_sum = hi - lo
        y = xw / (a.bias + a.alpha / size * square_sum) ** a.beta
        return y.astype(x.dtype)


# --------------------------------------------------------------------------- dropout
@op("Dropout", since=1)
class Dropout(OpSpec):
    """Dropout before opset 12: identity at inference, mask of ones (of the input's type)."""

    attrs = {"ratio": FLOAT(0.5)}
    flops_per_element = 0
    deterministic = False
    mask_dtype: ClassVar[Any] = None  # None: the input's dtype

    def run(self, ctx: RunContext, x: np.ndarray, *_: Any) -> tuple[np.ndarray, np.ndarray]:
        return x, np.ones(x.shape, dtype=self.mask_dtype or x.dtype)


@op("Dropout", since=10)
class Dropout10(Dropout):
    """Dropout at inference with a boolean mask (opsets 10 and 11)."""

    mask_dtype = np.bool_


@op("Dropout", since=12)
class Dropout12(Dropout10):
    """Dropout with ratio and training_mode as inputs; random only in training mode. A
    ``seed`` draws from numpy's seeded legacy generator, else from the run's generator."""

    attrs = {"seed": INT()}

    def run(
        self,
        ctx: RunContext,
        x: np.ndarray,
        ratio: np.ndarray | None = None,
        training_mode: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        r = 0.5 if ratio is None else float(np.asarray(ratio))
        if training_mode is None or not bool(np.asarray(training_mode)) or r == 0:
            return super().run(ctx, x)
        seed = ctx.attrs.seed
        if seed is None:
            draws = ctx.rng.random(x.shape)
        else:
            draws = np.random.RandomState(int(seed) % 2**32).random_sample(x.shape)
        mask = draws >= r
        y = x.astype(_wide(x.dtype)) * mask / (1.0 - r) if r < 1 else np.zeros_like(x)
        return np.asarray(y).astype(x.dtype), mask
