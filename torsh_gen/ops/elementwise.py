"""Elementwise ops: unary math, binary arithmetic with broadcasting, comparisons, logic.

Most of these are one numpy ufunc each, so they are declared from small tables through
``_unary``/``_binary``, which define and register one OpSpec class per row (the class is
still the single place the op is declared). Ops with attributes or odd semantics (Div on
integers, Mod's fmod, BitShift's direction, Clip's optional bounds) are written out.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from torsh_gen.ops.registry import FLOAT, INT, STRING, OpSpec, RunContext, op


def _same_dtype(fn: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
    """Wrap a math function so its result keeps the first input's dtype (numpy may widen)."""

    def wrapped(x: np.ndarray, *rest: Any) -> np.ndarray:
        return np.asarray(fn(x, *rest)).astype(x.dtype, copy=False)

    return wrapped


def _unary(name: str, fn: Callable[[np.ndarray], np.ndarray], since: int = 1, flops: float = 1.0) -> None:
    cls = type(name, (OpSpec,), {"run": lambda self, ctx, x: fn(x), "flops_per_element": flops})
    op(name, since=since)(cls)


def _erf(x: np.ndarray) -> np.ndarray:
    return np.vectorize(math.erf, otypes=[np.float64])(x.astype(np.float64))


for _name, _fn, _since, _fl in [
    ("Abs", np.abs, 1, 1),
    ("Neg", np.negative, 1, 1),
    ("Exp", _same_dtype(np.exp), 1, 8),
    ("Log", _same_dtype(np.log), 1, 8),
    ("Sqrt", _same_dtype(np.sqrt), 1, 4),
    ("Reciprocal", _same_dtype(np.reciprocal), 1, 1),
    ("Floor", np.floor, 1, 1),
    ("Ceil", np.ceil, 1, 1),
    ("Round", np.round, 11, 1),  # numpy rounds half to even, as ONNX requires
    ("Sign", np.sign, 9, 1),
    ("Sin", _same_dtype(np.sin), 7, 8),
    ("Cos", _same_dtype(np.cos), 7, 8),
    ("Tan", _same_dtype(np.tan), 7, 8),
    ("Asin", _same_dtype(np.arcsin), 7, 8),
    ("Acos", _same_dtype(np.arccos), 7, 8),
    ("Atan", _same_dtype(np.arctan), 7, 8),
    ("Sinh", _same_dtype(np.sinh), 9, 8),
    ("Cosh", _same_dtype(np.cosh), 9, 8),
    ("Asinh", _same_dtype(np.arcsinh), 9, 8),
    ("Acosh", _same_dtype(np.arccosh), 9, 8),
    ("Atanh", _same_dtype(np.arctanh), 9, 8),
    ("Tanh", _same_dtype(np.tanh), 1, 8),
    ("Erf", _same_dtype(_erf), 9, 8),
    ("Sigmoid", _same_dtype(lambda x: 1.0 / (1.0 + np.exp(-x.astype(np.float64)))), 1, 4),
    ("Relu", lambda x: np.maximum(x, np.zeros((), x.dtype)), 1, 1),
    ("IsNaN", np.isnan, 9, 1),
    ("Not", np.logical_not, 1, 1),
    ("BitwiseNot", np.invert, 18, 1),
    ("Softsign", _same_dtype(lambda x: x / (1 + np.abs(x))), 1, 3),
    ("Softplus", _same_dtype(lambda x: np.logaddexp(0, x.astype(np.float64))), 1, 4),
    ("Mish", _same_dtype(lambda x: x * np.tanh(np.logaddexp(0, x.astype(np.float64)))), 18, 12),
]:
    _unary(_name, _fn, _since, _fl)


def legacy_broadcast(ctx: RunContext, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Before opset 7, ``broadcast=1`` aligned B with A starting at ``axis`` (default: the tail)."""
    if ctx.opset >= 7 or not ctx.attrs.get("broadcast", 0) or b.ndim == 0:
        return b
    axis = ctx.attrs.get("axis")
    if axis is None:
        return b
    axis = axis % a.ndim if a.ndim else 0
    return b.reshape(b.shape + (1,) * (a.ndim - axis - b.ndim))


def _binary(name: str, fn: Callable[[np.ndarray, np.ndarray], np.ndarray], since: int = 1) -> None:
    cls = type(name, (OpSpec,), {"run": lambda self, ctx, a, b: fn(a, legacy_broadcast(ctx, a, b))})
    op(name, since=since)(cls)


def _keep(fn: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """Binary arithmetic whose result dtype is the inputs' dtype (ONNX has no promotion)."""
    return lambda a, b: np.asarray(fn(a, b)).astype(a.dtype, copy=False)


for _name, _fn, _since in [
    ("Add", _keep(np.add), 7),
    ("Sub", _keep(np.subtract), 7),
    ("Mul", _keep(np.multiply), 7),
    ("And", np.logical_and, 7),
    ("Or", np.logical_or, 7),
    ("Xor", np.logical_xor, 7),
    ("Equal", np.equal, 7),
    ("Less", np.less, 7),
    ("LessOrEqual", np.less_equal, 12),
    ("Greater", np.greater, 7),
    ("GreaterOrEqual", np.greater_equal, 12),
    ("BitwiseAnd", np.bitwise_and, 18),
    ("BitwiseOr", np.bitwise_or, 18),
    ("BitwiseXor", np.bitwise_xor, 18),
]:
    _binary(_name, _fn, _since)


@op("Div", since=7)
class Div(OpSpec):
    """Division; integers truncate toward zero as in C (numpy would floor)."""

    def run(self, ctx: RunContext, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        b = legacy_broadcast(ctx, a, b)
        if a.dtype.kind in "iu":
            q = np.trunc(a.astype(np.float64) / b.astype(np.float64))
            return q.astype(a.dtype)
        return np.asarray(a / b).astype(a.dtype, copy=False)


@op("Pow", since=7)
class Pow(OpSpec):
    """Power; the result has the base's type whatever the exponent's type."""

    flops_per_element = 8

    def run(self, ctx: RunContext, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        b = legacy_broadcast(ctx, a, b)
        if a.dtype.kind in "iu":
            return np.power(a.astype(np.float64), b.astype(np.float64)).astype(a.dtype)
        return np.power(a, b.astype(a.dtype)).astype(a.dtype, copy=False)


@op("Mod", since=10)
class Mod(OpSpec):
    """Remainder: sign of the divisor by default (Python %), of the dividend with fmod=1."""

    attrs = {"fmod": INT(0)}

    def run(self, ctx: RunContext, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        if ctx.attrs.fmod:
            return np.fmod(a, b).astype(a.dtype, copy=False)
        return np.mod(a, b).astype(a.dtype, copy=False)


@op("BitShift", since=11)
class BitShift(OpSpec):
    """Logical shift of unsigned integers left or right."""

    attrs = {"direction": STRING(required=True)}

    def run(self, ctx: RunContext, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        fn = np.left_shift if ctx.attrs.direction == "LEFT" else np.right_shift
        return fn(x, y.astype(x.dtype)).astype(x.dtype)


@op("IsInf", since=10)
class IsInf(OpSpec):
    """Infinity test, optionally restricted to one sign."""

    attrs = {"detect_negative": INT(1), "detect_positive": INT(1)}

    def run(self, ctx: RunContext, x: np.ndarray) -> np.ndarray:
        a = ctx.attrs
        return (np.isposinf(x) & bool(a.detect_positive)) | (np.isneginf(x) & bool(a.detect_negative))


class _Variadic(OpSpec):
    """Ops over any number of broadcast inputs (Max, Min, Sum, Mean)."""

    reduce: Callable[[np.ndarray, np.ndarray], np.ndarray] = staticmethod(np.add)

    def run(self, ctx: RunContext, *xs: np.ndarray) -> np.ndarray:
        result = xs[0]
        for x in xs[1:]:
            result = type(self).reduce(result, x)
        return np.asarray(result).astype(xs[0].dtype, copy=False)


@op("Max", since=8)
class Max(_Variadic):
    reduce = staticmethod(np.maximum)


@op("Min", since=8)
class Min(_Variadic):
    reduce = staticmethod(np.minimum)


@op("Sum", since=8)
class Sum(_Variadic):
    reduce = staticmethod(np.add)


@op("Mean", since=8)
class Mean(_Variadic):
    def run(self, ctx: RunContext, *xs: np.ndarray) -> np.ndarray:
        return (super().run(ctx, *xs) / len(xs)).astype(xs[0].dtype)


@op("Where", since=9)
class Where(OpSpec):
    def run(self, ctx: RunContext, cond: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return np.where(cond, x, y)


@op("Clip", since=6)
class Clip6(OpSpec):
    """Clip with bounds as attributes (opset 6 to 10)."""

    attrs = {"min": FLOAT(-3.4028234663852886e38), "max": FLOAT(3.4028234663852886e38)}

    def run(self, ctx: RunContext, x: np.ndarray) -> np.ndarray:
        return np.clip(x, ctx.attrs.min, ctx.attrs.max).astype(x.dtype)


@op("Clip", since=11)
class Clip(OpSpec):
    """Clip with optional bounds as inputs (opset 11 on)."""

    attrs: dict = {}

    def run(self, ctx: RunContext, x: np.ndarray, lo: Any = None, hi: Any = None) -> np.ndarray:
        y = x
        if lo is not None:
            y = np.maximum(y, lo)
        if hi is not None:
            y = np.minimum(y, hi)
        return np.asarray(y).astype(x.dtype, copy=False)
