"""Tensor creation and conversion ops: Constant, Identity, Cast, CastLike, Shape, Size, BitCast,
ConstantOfShape, Range, EyeLike.

Layout ops (Reshape, Transpose, Concat, Split, Slice, Pad, ...) live in ``tensor_layout``.
Cast covers every ONNX element type numpy can hold through ``ml_dtypes``: the float8
variants with and without saturation, float8e8m0 with its rounding modes, the 4- and
2-bit types, and string <-> number conversions.
"""

from __future__ import annotations

import math
from typing import Any

import ml_dtypes
import numpy as np

from torsh_gen.ir.types import DType
from torsh_gen.ops.registry import (
    FLOAT,
    FLOATS,
    INT,
    INTS,
    STRING,
    STRINGS,
    TENSOR,
    OpSpec,
    RunContext,
    op,
)

#: The float8 types whose Cast obeys the ``saturate`` attribute by clamping to ±max.
_F8_SATURATING = {
    DType.FLOAT8E4M3FN,
    DType.FLOAT8E4M3FNUZ,
    DType.FLOAT8E5M2,
    DType.FLOAT8E5M2FNUZ,
}


# --------------------------------------------------------------------------- Constant
@op("Constant", since=1)
class Constant(OpSpec):
    """A constant tensor from exactly one of value, sparse_value or value_* attributes."""

    attrs = {
        "value": TENSOR(),
        "value_float": FLOAT(),
        "value_floats": FLOATS(),
        "value_int": INT(),
        "value_ints": INTS(),
        "value_string": STRING(),
        "value_strings": STRINGS(),
    }
    flops_per_element = 0

    def run(self, ctx: RunContext) -> np.ndarray:
        a = ctx.attrs
        if a.value is not None:
            return np.asarray(a.value)
        if a.sparse_value is not None:
            return _densify(a.sparse_value)
        if a.value_float is not None:
            return np.array(a.value_float, dtype=np.float32)
        if a.value_floats is not None:
            return np.array(a.value_floats, dtype=np.float32).reshape(-1)
        if a.value_int is not None:
            return np.array(a.value_int, dtype=np.int64)
        if a.value_ints is not None:
            return np.array(a.value_ints, dtype=np.int64).reshape(-1)
        if a.value_string is not None:
            out = np.empty((), dtype=object)
            out[()] = a.value_string
            return out
        if a.value_strings is not None:
            return _object_array(list(a.value_strings), (len(a.value_strings),))
        raise ValueError("Constant has none of value, sparse_value or value_* attributes")


def _densify(sparse: Any) -> np.ndarray:
    """A dense array from a SparseTensorProto (values + flat or per-dim indices)."""
    from torsh_gen.ir.proto import array_from_tensor

    values = array_from_tensor(sparse.values)
    indices = array_from_tensor(sparse.indices).astype(np.int64)
    dense = np.zeros(tuple(int(d) for d in sparse.dims), dtype=values.dtype)
    if indices.ndim == 1:
        dense.reshape(-1)[indices] = values.reshape(-1)
    else:
        dense[tuple(indices.T)] = values.reshape(-1)
    return dense


def _object_array(items: list[Any], shape: tuple[int, ...]) -> np.ndarray:
    """An object (string) array of ``shape`` holding ``items`` in order."""
    out = np.empty(len(items), dtype=object)
    out[:] = items
    return out.reshape(shape)


# --------------------------------------------------------------------------- Identity
@op("Identity", since=1)
class Identity(OpSpec):
    """Pass-through of a tensor, a sequence (list) or an optional (None when empty)."""

    flops_per_element = 0

    def run(self, ctx: RunContext, x: Any) -> Any:
        return x


# --------------------------------------------------------------------------- Cast
def target_dtype(to: int | str) -> DType:
    """The element type named by a Cast ``to`` attribute (an int, or a name before opset 6)."""
    if isinstance(to, str):
        return DType[to.upper()]
    return DType(int(to))


def cast_array(x: np.ndarray, to: DType, saturate: int = 1, round_mode: str = "up") -> np.ndarray:
    """``x`` converted to element type ``to`` with ONNX Cast semantics."""
    x = np.asarray(x)
    if to == DType.STRING:
        return _to_strings(x)
    if x.dtype == object:
        x = _from_strings(x, to)
    if to == DType.FLOAT8E8M0:
        return _to_e8m0(x, bool(saturate), round_mode)
    dst = to.numpy
    if x.dtype == dst:
        return x.copy()
    with np.errstate(all="ignore"):
        if to in _F8_SATURATING and saturate and x.dtype != np.bool_:
            wide = x.astype(np.float64)
            fmax = float(ml_dtypes.finfo(dst).max)
            return np.clip(wide, -fmax, fmax).astype(dst)
        try:
            return x.astype(dst)
        except TypeError:  # no direct numpy cast between two ml_dtypes types: go through float
            return x.astype(np.float64).astype(dst)


def _to_strings(x: np.ndarray) -> np.ndarray:
    """Numbers as strings, the way ONNX runtimes print them (8 significant digits for floats)."""
    if x.dtype == object:
        return x.copy()
    flat = x.reshape(-1)
    if x.dtype == np.bool_:
        items = ["1" if v else "0" for v in flat]
    elif x.dtype.kind in "iu" or DType.from_numpy(x.dtype).is_integer:
        items = [str(int(v)) for v in flat]
    else:
        items = [_float_str(float(v)) for v in flat]
    return _object_array(items, x.shape)


def _float_str(v: float) -> str:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "INF" if v > 0 else "-INF"
    return format(v, ".8g")


def _from_strings(x: np.ndarray, to: DType) -> np.ndarray:
    """Parse strings as numbers: integers exactly when the target is an integer type."""
    flat = [s.decode() if isinstance(s, bytes) else str(s) for s in x.reshape(-1)]
    if to.is_integer:
        return np.array([_parse_int(s) for s in flat], dtype=np.int64).reshape(x.shape)
    if to == DType.BOOL:
        return np.array([_parse_bool(s) for s in flat], dtype=np.bool_).reshape(x.shape)
    return np.array([float(s.strip()) for s in flat], dtype=np.float64).reshape(x.shape)


def _parse_int(s: str) -> int:
    try:
        return int(s.strip())
    except ValueError:
        return int(float(s.strip()))


def _parse_bool(s: str) -> bool:
    t = s.strip().lower()
    if t in ("true", "false"):
        return t == "true"
    return float(t) != 0.0


def _to_e8m0(x: np.ndarray, saturate: bool, round_mode: str) -> np.ndarray:
    """Powers of two 2**(e-127), e in 0..254 (255 is NaN), rounded per ``round_mode``."""
    v = np.abs(x.astype(np.float64))
    with np.errstate(all="ignore"):
        mant, exp = np.frexp(v)  # v = mant * 2**exp, mant in [0.5, 1)
    k = (exp - 1).astype(np.int64)  # v in [2**k, 2**(k+1))
    exact = mant == 0.5
    if round_mode == "up":
        k = np.where(exact, k, k + 1)
    elif round_mode == "nearest":
        k = np.where(mant >= 0.75, k + 1, k)
    elif round_mode != "down":
        raise ValueError(f"Cast: unknown round_mode '{round_mode}' (expected up, down or nearest)")
    biased = k + 127
    too_big = (biased > 254) | np.isinf(v)
    too_small = (biased < 0) | (v == 0)
    out = np.clip(biased, 0, 254)
    if not saturate:
        out = np.where(too_big | too_small, 255, out)
    out = np.where(too_big & saturate, 254, out)
    out = np.where(too_small & saturate, 0, out)
    out = np.where(np.isnan(v), 255, out)
    return out.astype(np.uint8).view(ml_dtypes.float8_e8m0fnu)


@op("Cast", since=1)
class Cast(OpSpec):
    """Element type conversion; ``saturate`` (float8) and ``round_mode`` (float8e8m0) apply."""

    attrs = {"to": INT(required=True), "saturate": INT(1), "round_mode": STRING("up")}

    def run(self, ctx: RunContext, x: np.ndarray) -> np.ndarray:
        a = ctx.attrs
        return cast_array(x, target_dtype(a.to), a.saturate, a.round_mode)


@op("CastLike", since=15)
class CastLike(OpSpec):
    """Cast to the element type of a second input."""

    attrs = {"saturate": INT(1), "round_mode": STRING("up")}

    def run(self, ctx: RunContext, x: np.ndarray, like: np.ndarray) -> np.ndarray:
        a = ctx.attrs
        return cast_array(x, DType.from_numpy(np.asarray(like).dtype), a.saturate, a.round_mode)


# --------------------------------------------------------------------------- BitCast
@op("BitCast", since=26)
class BitCast(OpSpec):
    """Reinterpret the bits as another type of the same width (4- and 2-bit types included)."""

    attrs = {"to": INT(required=True)}
    flops_per_element = 0

    def run(self, ctx: RunContext, x: np.ndarray) -> np.ndarray:
        src = DType.from_numpy(x.dtype)
        dst = DType(int(ctx.attrs.to))
        if src.itemsize_bits != dst.itemsize_bits:
            raise ValueError(f"BitCast: {src.name} and {dst.name} differ in bit width")
        bits = src.itemsize_bits
        if bits < 8:  # sub-byte types are held one per byte in the low bits
            raw = np.ascontiguousarray(x).view(np.uint8) & np.uint8((1 << bits) - 1)
            return raw.view(dst.numpy)
        return np.ascontiguousarray(x).view(dst.numpy).reshape(x.shape)


# --------------------------------------------------------------------------- Shape, Size
@op("Shape", since=1)
class Shape(OpSpec):
    """The input's shape as int64; ``start``/``end`` (opset 15) slice it, clamped to the rank."""

    attrs = {"start": INT(0), "end": INT()}
    flops_per_element = 0

    def run(self, ctx: RunContext, x: np.ndarray) -> np.ndarray:
        shape = np.asarray(x).shape
        rank = len(shape)
        start = _clamp_axis(ctx.attrs.start or 0, rank)
        end = rank if ctx.attrs.end is None else _clamp_axis(ctx.attrs.end, rank)
        return np.array(shape[start:end], dtype=np.int64).reshape(-1)


def _clamp_axis(i: int, rank: int) -> int:
    if i < 0:
        i += rank
    return min(max(i, 0), rank)


@op("Size", since=1)
class Size(OpSpec):
    """Number of elements as an int64 scalar."""

    flops_per_element = 0

    def run(self, ctx: RunContext, x: np.ndarray) -> np.ndarray:
        return np.array(np.asarray(x).size, dtype=np.int64)


# --------------------------------------------------------------------------- generators
@op("ConstantOfShape", since=9)
class ConstantOfShape(OpSpec):
    """A tensor of the given shape filled with the one-element ``value`` (float32 0 default)."""

    attrs = {"value": TENSOR()}
    flops_per_element = 0

    def run(self, ctx: RunContext, shape: np.ndarray) -> np.ndarray:
        value = ctx.attrs.value
        if value is None:
            value = np.zeros(1, dtype=np.float32)
        value = np.asarray(value).reshape(-1)
        dims = tuple(int(d) for d in np.asarray(shape).reshape(-1))
        out = np.empty(dims, dtype=value.dtype)
        out[...] = value[0]
        return out


@op("Range", since=11)
class Range(OpSpec):
    """start + i * delta for i < max(ceil((limit - start) / delta), 0), in the inputs' type.

    The inputs are scalars, but one-element 1-D tensors (as some exporters write) work too.
    """

    def run(
        self, ctx: RunContext, start: np.ndarray, limit: np.ndarray, delta: np.ndarray
    ) -> np.ndarray:
        dtype = np.asarray(start).dtype
        start, limit, delta = (np.asarray(v).reshape(-1)[0] for v in (start, limit, delta))
        if dtype.kind in "iu":
            s, lim, d = int(start), int(limit), int(delta)
            n = max(-((s - lim) // d), 0)  # ceil((lim - s) / d) in exact integers
            return (s + np.arange(n, dtype=np.int64) * d).astype(dtype)
        s, lim, d = (float(np.float64(v)) for v in (start, limit, delta))
        n = max(int(math.ceil((lim - s) / d)), 0)
        return (s + np.arange(n, dtype=np.float64) * d).astype(dtype)


@op("EyeLike", since=9)
class EyeLike(OpSpec):
    """A 2-D matrix shaped like the input with ones on diagonal ``k``; ``dtype`` overrides."""

    attrs = {"dtype": INT(), "k": INT(0)}
    flops_per_element = 0

    def run(self, ctx: RunContext, x: np.ndarray) -> np.ndarray:
        dt = x.dtype if ctx.attrs.dtype is None else DType(int(ctx.attrs.dtype)).numpy
        rows, cols = x.shape
        return np.eye(rows, cols, k=int(ctx.attrs.k), dtype=np.float64).astype(dt)

