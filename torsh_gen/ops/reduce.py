"""Reductions: ReduceSum, ReduceMean, ReduceMax, ReduceMin, ReduceProd, ReduceL1, ReduceL2,
ReduceLogSum, ReduceLogSumExp, ReduceSumSquare.

One base class, ``_Reduce``, resolves the axes and applies ``keepdims``; each op only
says how to reduce over a tuple of axes. In early opsets ``axes`` is an attribute; later
(ReduceSum from 13, the others from 18) it is an optional second input and the attribute
``noop_with_empty_axes`` decides what empty axes mean. ``_axes_as_input`` registers that
later form as a subclass of the op's first class. Reductions over an empty set give the
reduction's identity (0 for sums, 1 for products, -inf for max and log-sums, +inf for min).

Axes computed at run time still leave the output shape static where every choice of
that many axes gives the same one (all of them, none, or dims of equal size):
``axes_choices`` lists the choices, and the type rule uses them where ONNX's cannot tell.
"""

from __future__ import annotations

from itertools import combinations
from typing import Any, ClassVar

import numpy as np

from torsh_gen.ir.types import Dim, TensorType, Type
from torsh_gen.ops.registry import INT, INTS, Cost, InferContext, OpSpec, RunContext, op


def _work_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype to compute in: 16-bit and smaller floats widen to float32."""
    if dtype.kind in "iub":
        return dtype
    if dtype.kind == "f" and dtype.itemsize >= 4:
        return dtype
    return np.dtype(np.float32)


def _float_dtype(dtype: np.dtype) -> np.dtype:
    """A float dtype for reductions that need one (logs, roots): integers go to float64."""
    if dtype.kind in "iub":
        return np.dtype(np.float64)
    return _work_dtype(dtype)


def _lowest(dtype: np.dtype) -> Any:
    """The identity of max: -inf for floats, the smallest integer, False."""
    if dtype.kind == "b":
        return False
    if dtype.kind in "iu":
        return np.iinfo(dtype).min
    return -np.inf


def _highest(dtype: np.dtype) -> Any:
    """The identity of min: +inf for floats, the largest integer, True."""
    if dtype.kind == "b":
        return True
    if dtype.kind in "iu":
        return np.iinfo(dtype).max
    return np.inf


#: More dims than this and run-time axes are not enumerated (2**rank subsets).
MAX_ENUMERATED_RANK = 12


def axes_choices(
    shape: tuple[int, ...], count: int, keepdims: bool, noop: bool = False
) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """``(axes, output shape)`` for every set of ``count`` distinct axes of ``shape``: what an
    axes input of ``count`` values known only at run time may reduce (empty when ``shape``
    has too many dims to enumerate or fewer than ``count``)."""
    rank = len(shape)
    if count == 0:
        axes = () if noop else tuple(range(rank))
        return [(axes, _reduced_shape(shape, axes, keepdims))]
    if rank > MAX_ENUMERATED_RANK:
        return []
    sets = combinations(range(rank), count)
    return [(axes, _reduced_shape(shape, axes, keepdims)) for axes in sets]


def _reduced_shape(
    shape: tuple[int, ...], axes: tuple[int, ...], keepdims: bool
) -> tuple[int, ...]:
    if keepdims:
        return tuple(1 if d in axes else s for d, s in enumerate(shape))
    return tuple(s for d, s in enumerate(shape) if d not in axes)


def _common_shape(shapes: list[tuple[int, ...]]) -> tuple[Dim, ...] | None:
    """The dims all ``shapes`` agree on (None elsewhere); None when their ranks differ."""
    if not shapes or len({len(s) for s in shapes}) != 1:
        return None
    return tuple(s[0] if len(set(s)) == 1 else None for s in zip(*shapes))


class _Reduce(OpSpec):
    """Base of the Reduce* ops, axes as an attribute (opsets before 13/18)."""

    attrs = {"axes": INTS(), "keepdims": INT(1)}
    #: True for the versions that read ``axes`` from their second input.
    axes_input: ClassVar[bool] = False

    def reduce(self, x: np.ndarray, axes: tuple[int, ...], keepdims: bool) -> np.ndarray:
        """Reduce ``x`` over ``axes`` (possibly empty: no reduction)."""
        raise NotImplementedError

    def run(self, ctx: RunContext, x: np.ndarray, axes: np.ndarray | None = None) -> np.ndarray:
        x = np.asarray(x)
        if self.axes_input:
            listed = [] if axes is None else [int(a) for a in np.asarray(axes).reshape(-1)]
            noop = bool(ctx.attrs.noop_with_empty_axes)
        else:
            listed = list(ctx.attrs.axes or [])
            noop = False
        if listed:
            rank = max(x.ndim, 1)
            resolved = tuple(sorted({a % rank for a in listed})) if x.ndim else ()
        else:
            resolved = () if noop else tuple(range(x.ndim))
        y = self.reduce(x, resolved, bool(ctx.attrs.keepdims))
        return np.asarray(y).astype(x.dtype, copy=False)

    def infer(self, ctx: InferContext) -> list[Type | None]:
        """ONNX's rule; where axes come at run time, the dims every possible choice gives."""
        types = super().infer(ctx)
        x, axes = ctx.input_type(0), ctx.input_type(1)
        if not self.axes_input or ctx.input_value(1) is not None:
            return types
        if not isinstance(x, TensorType) or not x.is_static:
            return types
        given = len(ctx.node.inputs) > 1 and ctx.node.inputs[1] is not None
        if not given:
            count = 0
        elif isinstance(axes, TensorType) and axes.is_static and len(axes.shape) == 1:
            count = int(axes.shape[0])
        else:
            return types
        keepdims, noop = bool(ctx.attrs.keepdims), bool(ctx.attrs.noop_with_empty_axes)
        choices = axes_choices(tuple(x.shape), count, keepdims, noop)
        shape = _common_shape([out for _, out in choices])
        if shape is None:
            return types
        t = types[0] if types and isinstance(types[0], TensorType) else None
        return [TensorType(t.dtype if t is not None else x.dtype, shape)]

    def cost(self, ctx: InferContext, output_types: list[Type | None]) -> Cost:
        """About ``flops_per_element`` FLOPs per input element."""
        base = super().cost(ctx, output_types)
        t = ctx.input_type(0)
        n = t.numel() if t is not None and hasattr(t, "numel") else None
        if n:
            base.flops = int(n * self.flops_per_element)
        return base


def _axes_as_input(first: type[_Reduce], since: int) -> None:
    """Register the version of ``first`` that takes axes as an input, from ``since``."""
    doc = f"{first.op_type} with axes as an optional input (opset {since} on)."
    attrs = {"keepdims": INT(1), "noop_with_empty_axes": INT(0)}
    body = {"attrs": attrs, "axes_input": True, "__doc__": doc}
    op(first.op_type, since=since)(type(f"{first.__name__}{since}", (first,), body))


@op("ReduceSum", since=1)
class ReduceSum(_Reduce):
    """Sum; 0 over an empty set."""

    def reduce(self, x: np.ndarray, axes: tuple[int, ...], keepdims: bool) -> np.ndarray:
        return np.sum(x, axis=axes, keepdims=keepdims, dtype=_work_dtype(x.dtype))


@op("ReduceMean", since=1)
class ReduceMean(_Reduce):
    """Mean; NaN over an empty set; integers truncate."""

    def reduce(self, x: np.ndarray, axes: tuple[int, ...], keepdims: bool) -> np.ndarray:
        return np.mean(x, axis=axes, keepdims=keepdims, dtype=_float_dtype(x.dtype))


@op("ReduceMax", since=1)
class ReduceMax(_Reduce):
    """Maximum (False < True for booleans); the dtype's lowest value over an empty set."""

    def reduce(self, x: np.ndarray, axes: tuple[int, ...], keepdims: bool) -> np.ndarray:
        return np.maximum.reduce(x, axis=axes, keepdims=keepdims, initial=_lowest(x.dtype))


@op("ReduceMin", since=1)
class ReduceMin(_Reduce):
    """Minimum; the dtype's highest value over an empty set."""

    def reduce(self, x: np.ndarray, axes: tuple[int, ...], keepdims: bool) -> np.ndarray:
        return np.minimum.reduce(x, axis=axes, keepdims=keepdims, initial=_highest(x.dtype))


@op("ReduceProd", since=1)
class ReduceProd(_Reduce):
    """Product; 1 over an empty set."""

    def reduce(self, x: np.ndarray, axes: tuple[int, ...], keepdims: bool) -> np.ndarray:
        return np.prod(x, axis=axes, keepdims=keepdims, dtype=_work_dtype(x.dtype))


@op("ReduceL1", since=1)
class ReduceL1(_Reduce):
    """Sum of absolute values."""

    flops_per_element = 2

    def reduce(self, x: np.ndarray, axes: tuple[int, ...], keepdims: bool) -> np.ndarray:
        return np.sum(np.abs(x), axis=axes, keepdims=keepdims, dtype=_work_dtype(x.dtype))


@op("ReduceL2", since=1)
class ReduceL2(_Reduce):
    """Square root of the sum of squares."""

    flops_per_element = 2

    def reduce(self, x: np.ndarray, axes: tuple[int, ...], keepdims: bool) -> np.ndarray:
        xf = x.astype(_float_dtype(x.dtype))
        return np.sqrt(np.sum(xf * xf, axis=axes, keepdims=keepdims))


@op("ReduceLogSum", since=1)
class ReduceLogSum(_Reduce):
    """Log of the sum; -inf over an empty set."""

    def reduce(self, x: np.ndarray, axes: tuple[int, ...], keepdims: bool) -> np.ndarray:
        xf = x.astype(_float_dtype(x.dtype))
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.log(np.sum(xf, axis=axes, keepdims=keepdims))


@op("ReduceLogSumExp", since=1)
class ReduceLogSumExp(_Reduce):
    """Log of the sum of exponentials, shifted by the maximum for stability."""

    flops_per_element = 10

    def reduce(self, x: np.ndarray, axes: tuple[int, ...], keepdims: bool) -> np.ndarray:
        xf = x.astype(_float_dtype(x.dtype))
        top = np.maximum.reduce(xf, axis=axes, keepdims=True, initial=-np.inf)
        top = np.where(np.isfinite(top), top, 0).astype(xf.dtype)
        with np.errstate(divide="ignore"):
            y = np.log(np.sum(np.exp(xf - top), axis=axes, keepdims=True)) + top
        return y if keepdims else np.squeeze(y, axis=axes)


@op("ReduceSumSquare", since=1)
class ReduceSumSquare(_Reduce):
    """Sum of squares."""

    flops_per_element = 2

    def reduce(self, x: np.ndarray, axes: tuple[int, ...], keepdims: bool) -> np.ndarray:
        xw = x.astype(_work_dtype(x.dtype))
        return np.sum(xw * xw, axis=axes, keepdims=keepdims)


_axes_as_input(ReduceSum, 13)
for _cls in (
    ReduceMean,
    ReduceMax,
    ReduceMin,
    ReduceProd,
    ReduceL1,
    ReduceL2,
    ReduceLogSum,
    ReduceLogSumExp,
    ReduceSumSquare,
):
    _axes_as_input(_cls, 18)
