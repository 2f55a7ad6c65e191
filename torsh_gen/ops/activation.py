"""Activations with attributes: LeakyRelu, Elu, Selu, Celu, HardSigmoid, HardSwish,
ThresholdedRelu, Gelu, PRelu, Shrink, Swish, SwiGLU.

The attribute-free activations (Relu, Sigmoid, Tanh, Softplus, ...) are in elementwise.py.
Every kernel computes 16-bit floats in float32 and returns the input's dtype. Later opset
versions of these ops only widened their type lists, so each has one spec.
"""

from __future__ import annotations

import math

import numpy as np

from torsh_gen.ops.registry import FLOAT, STRING, OpSpec, RunContext, op


def _wide(x: np.ndarray) -> np.ndarray:
    """``x`` as a float array of at least 32 bits (16-bit floats and integers widen)."""
    if x.dtype.kind == "f" and x.dtype.itemsize >= 4:
        return x
    return x.astype(np.float32)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    """A logistic sigmoid that does not overflow for large negative inputs."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype)


@op("LeakyRelu", since=1)
class LeakyRelu(OpSpec):
    """x for x >= 0, alpha * x below (alpha 0.01)."""

    attrs = {"alpha": FLOAT(0.01)}

    def run(self, ctx: RunContext, x: np.ndarray) -> np.ndarray:
        xw = _wide(x)
        return np.where(xw >= 0, xw, xw * ctx.attrs.alpha).astype(x.dtype)


@op("Elu", since=1)
class Elu(OpSpec):
    """x for x >= 0, alpha * (exp(x) - 1) below (alpha 1)."""

    attrs = {"alpha": FLOAT(1.0)}
    flops_per_element = 8

    def run(self, ctx: RunContext, x: np.ndarray) -> np.ndarray:
        xw = _wide(x)
        neg = ctx.attrs.alpha * np.expm1(np.minimum(xw, 0))
        return np.where(xw >= 0, xw, neg).astype(x.dtype)


@op("Selu", since=1)
class Selu(OpSpec):
    """gamma * (x for x > 0, alpha * (exp(x) - 1) below), with the self-normalizing constants."""

    attrs = {"alpha": FLOAT(1.67326319217681884765625), "gamma": FLOAT(1.05070102214813232421875)}
    flops_per_element = 8

    def run(self, ctx: RunContext, x: np.ndarray) -> np.ndarray:
        a = ctx.attrs
        xw = _wide(x)
        y = np.where(xw > 0, xw, a.alpha * np.expm1(np.minimum(xw, 0))) * a.gamma
        return y.astype(x.dtype)


@op("Celu", since=12)
class Celu(OpSpec):
    """max(0, x) + min(0, alpha * (exp(x / alpha) - 1))."""

    attrs = {"alpha": FLOAT(1.0)}
    flops_per_element = 8

    def run(self, ctx: RunContext, x: np.ndarray) -> np.ndarray:
        alpha = ctx.attrs.alpha
        xw = _wide(x)
        y = np.maximum(xw, 0) + np.minimum(0, alpha * np.expm1(np.minimum(xw, 0) / alpha))
        return y.astype(x.dtype)


@op("HardSigmoid", since=1)
class HardSigmoid(OpSpec):
    """max(0, min(1, alpha * x + beta)) with alpha 0.2, beta 0.5."""

    attrs = {"alpha": FLOAT(0.2), "beta": FLOAT(0.5)}
    flops_per_element = 3

    def run(self, ctx: RunContext, x: np.ndarray) -> np.ndarray:
        xw = _wide(x)
        return np.clip(xw * ctx.attrs.alpha + ctx.attrs.beta, 0, 1).astype(x.dtype)


@op("HardSwish", since=14)
class HardSwish(OpSpec):
    """x * max(0, min(1, x / 6 + 1 / 2))."""

    flops_per_element = 4

    def run(self, ctx: RunContext, x: np.ndarray) -> np.ndarray:
        xw = _wide(x)
        return (xw * np.clip(xw / 6 + 0.5, 0, 1)).astype(x.dtype)


@op("ThresholdedRelu", since=10)
class ThresholdedRelu(OpSpec):
    """x where x > alpha (alpha 1), else 0."""

    attrs = {"alpha": FLOAT(1.0)}

    def run(self, ctx: RunContext, x: np.ndarray) -> np.ndarray:
        return np.where(x > ctx.attrs.alpha, x, np.zeros((), x.dtype)).astype(x.dtype)


@op("Gelu", since=20)
class Gelu(OpSpec):
    """0.5 x (1 + erf(x / sqrt 2)), or its tanh approximation with approximate="tanh"."""

    attrs = {"approximate": STRING("none")}
    flops_per_element = 12

    def run(self, ctx: RunContext, x: np.ndarray) -> np.ndarray:
        xd = x.astype(np.float64)
        if ctx.attrs.approximate == "tanh":
            inner = math.sqrt(2 / math.pi) * (xd + 0.044715 * xd**3)
            y = 0.5 * xd * (1 + np.tanh(inner))
        else:
            erf = np.vectorize(math.erf, otypes=[np.float64])
            y = 0.5 * xd * (1 + erf(xd / math.sqrt(2))) if xd.size else xd
        return y.astype(x.dtype)


@op("PRelu", since=7)
class PRelu(OpSpec):
    """x for x >= 0, slope * x below; slope broadcasts to x (unidirectionally)."""

    def run(self, ctx: RunContext, x: np.ndarray, slope: np.ndarray) -> np.ndarray:
        return np.where(x >= 0, x, x * slope).astype(x.dtype)


@op("PRelu", since=1)
class PRelu1(PRelu):
    """Before opset 7 a 1-D slope of size C applied per channel (axis 1), not to the last axis."""

    def run(self, ctx: RunContext, x: np.ndarray, slope: np.ndarray) -> np.ndarray:
        if slope.ndim == 1 and x.ndim >= 2 and slope.shape[0] == x.shape[1] and slope.shape[0] != 1:
            slope = slope.reshape((-1,) + (1,) * (x.ndim - 2))
        return super().run(ctx, x, slope)


@op("Shrink", since=9)
class Shrink(OpSpec):
    """x + bias below -lambd, x - bias above lambd, 0 in between (lambd 0.5, bias 0)."""

    attrs = {"bias": FLOAT(0.0), "lambd": FLOAT(0.5)}
    flops_per_element = 2

    def run(self, ctx: RunContext, x: np.ndarray) -> np.ndarray:
        a = ctx.attrs
        xw = x.astype(np.float64)
        y = np.where(xw < -a.lambd, xw + a.bias, np.where(xw > a.lambd, xw - a.bias, 0))
        return y.astype(x.dtype)


@op("Swish", since=24)
class Swish(OpSpec):
    """x * sigmoid(alpha * x)."""

    attrs = {"alpha": FLOAT(1.0)}
    flops_per_element = 5

    def run(self, ctx: RunContext, x: np.ndarray) -> np.ndarray:
        xw = _wide(x)
        return (xw * _sigmoid(xw * np.asarray(ctx.attrs.alpha, xw.dtype))).astype(x.dtype)


@op("SwiGLU", since=28)
class SwiGLU(OpSpec):
    """Swish_alpha(A) * B for a gate A and a value B of the same shape."""

    attrs = {"alpha": FLOAT(1.0)}
    flops_per_element = 6

    def run(self, ctx: RunContext, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        aw = _wide(a)
        gate = aw * _sigmoid(aw * np.asarray(ctx.attrs.alpha, aw.dtype))
        return (gate * _wide(b)).astype(a.dtype)
