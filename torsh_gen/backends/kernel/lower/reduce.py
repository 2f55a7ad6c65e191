"""Reductions (Reduce*), ArgMax/ArgMin, Softmax/LogSoftmax, Hardmax, CumSum and CumProd.

Most of these ops work along one run of dimensions: viewed as ``(outer, n, inner)``, each
of the ``outer * inner`` segments holds ``n`` elements ``inner`` apart. ``segments`` opens
the loops over them and hands a ``Segment`` to the op's body, which then reduces over it
(``Segment.reduce``) or writes along it (``Segment.foreach``):

- ``inner > 1`` (column mode): the vector loop runs over ``inner``, the contiguous dim, so
  every lane owns one segment; reductions are per-lane locals declared inside that loop
  and serial loops along ``n``.
- ``inner == 1`` (row mode): a segment is a contiguous row. Writes along it are a vector
  loop. Reductions keep ``ways`` independent scalar accumulators over consecutive elements
  (the serial loop is unrolled by hand), which breaks the add latency chain and lets
  LLVM's SLP vectorizer turn them into one vector register; a scalar tail and a tree
  combine follow.

Softmax subtracts the row maximum before ``exp`` (numerically stable) and makes its passes
over the output (max, exp, sum, scale) so every ``exp`` is computed in a vector loop.
Reductions over several separate runs of axes (``axes=(0, 2)`` of a 3-D tensor) take a
plain nest: one accumulator per output element.

Axes known only at run time (an axes input, CumSum's axis) are narrowed by the static
shapes to the sets that fit; when several do, the kernel holds one body per set and picks
one by the axes' values (``axes_mask``, ``select_at_run_time``). Boolean ReduceMax and
ReduceMin are any and all.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from torsh_gen.backends.kernel import math as km
from torsh_gen.backends.kernel.interp import numpy_dtype
from torsh_gen.backends.kernel.ir import (
    Bin,
    Cast,
    Const,
    Expr,
    Select,
    call,
    eq,
    idx,
    is_float,
    logical_and,
    minimum,
)
from torsh_gen.backends.kernel.lower import LowerCtx, LoweringDeclined, lowers, norm_axis, prod
from torsh_gen.ir.graph import Node
from torsh_gen.ops.reduce import MAX_ENUMERATED_RANK, axes_choices
from torsh_gen.ops.registry import Attrs, lookup

T = TypeVar("T")
#: Inner extents above this are split into blocks so the outer loop has parallel work.
INNER_BLOCK = 1024


# --------------------------------------------------------------------------- segments
def identity(op: str, dtype: str) -> Const:
    """The neutral element of ``op`` (add, mul, max, min; or, and of booleans) in ``dtype``."""
    if op in ("or", "and"):
        return Const(op == "and", "bool")
    if op == "add":
        return Const(0.0 if is_float(dtype) else 0, dtype)
    if op == "mul":
        return Const(1.0 if is_float(dtype) else 1, dtype)
    if is_float(dtype):
        return Const(-math.inf if op == "max" else math.inf, dtype)
    info = np.iinfo(numpy_dtype(dtype))
    return Const(int(info.min if op == "max" else info.max), dtype)


@dataclass
class Segment:
    """``n`` elements at ``base + k * step``; ``row`` when they are contiguous and no
    vector loop is open (see the module doc)."""

    ctx: LowerCtx
    base: Expr
    n: int
    step: int
    row: bool

    def at(self, k: Expr) -> Expr:
        """Flat index of element ``k``."""
        return self.base + (k if self.step == 1 else k * self.step)

    def reduce(self, value: Callable[[Expr], Expr], op: str, dtype: str, ways: int = 0) -> Expr:
        """``op`` over ``value(index)`` of every element (``ways`` accumulators in row mode;
        0 picks the target's lane count)."""
        kb = self.ctx.kb
        init = identity(op, dtype)
        u = (ways or _ways(self.n, self.ctx.sched.lanes)) if self.row else 1
        while u > 1 and self.n < 2 * u:
            u //= 2
        if u <= 1:
            acc = kb.local(dtype, init, "r")
            with kb.loop(self.n, hint="k") as k:
                kb.assign(acc, Bin(op, value(self.at(k)), acc))
            return kb.let(acc, "red")
        accs = [kb.local(dtype, init, "r") for _ in range(u)]
        chunks = self.n // u
        with kb.loop(chunks, hint="c") as c:
            first = kb.let(self.base + c * u, "ci")
            for t, acc in enumerate(accs):
                kb.assign(acc, Bin(op, value(first + t if t else first), acc))
        if self.n % u:
            with kb.loop(self.n, start=chunks * u, hint="k") as k:
                kb.assign(accs[0], Bin(op, value(self.at(k)), accs[0]))
        total: Expr = accs[0]
        for acc in accs[1:]:  # in lane order: SLP sees one vector's horizontal reduction
            total = Bin(op, total, acc)
        return kb.let(total, "red")

    def foreach(self, body: Callable[[Expr, Expr], None]) -> None:
        """``body(index, k)`` for every element: a vector loop in row mode."""
        kb = self.ctx.kb
        if self.row:
            with kb.loop(self.n, kind="vector", width=self.ctx.vector_width(self.n), hint="k") as k:
                body(self.base + k, k)
        else:
            with kb.loop(self.n, hint="k") as k:
                body(self.at(k), k)

    def argbest(self, value: Callable[[Expr], Expr], dtype: str, larger: bool, last: bool) -> Expr:
        """Index (i64) of the first (or ``last``) largest / smallest element."""
        kb = self.ctx.kb
        best = kb.local(dtype, value(self.base), "best")
        where = kb.local("i64", idx(0), "bi")
        with kb.loop(self.n, start=1, hint="k") as k:
            v = kb.let(value(self.at(k)), "v")
            op = ("ge" if last else "gt") if larger else ("le" if last else "lt")
            better = kb.let(Bin(op, v, best), "better")
            kb.assign(where, Select(better, k, where))
            kb.assign(best, Select(better, v, best))
        return kb.let(where, "arg")


def _ways(n: int, lanes: int) -> int:
    """Accumulators for a row of ``n``: the loop costs about n / ways steps and the final
    combine (in order, so one lane after another) about ``ways``; sqrt(n) balances them,
    capped at two vector registers."""
    u = 2
    while u * 2 <= min(math.isqrt(n), 2 * lanes):
        u *= 2
    return u


def segments(
    ctx: LowerCtx,
    outer: int,
    n: int,
    inner: int,
    body: Callable[[Segment, Expr, Expr], None],
    vectors: int = 1,
) -> None:
    """Loops over the ``outer * inner`` segments of ``n`` elements; ``body(seg, o, j)``
    gets the segment, its outer index and its flat index among all segments. In column
    mode each vector step covers ``vectors`` registers (independent chains for cheap
    bodies; the remainder takes one register at a time)."""
    kb = ctx.kb
    if outer * inner == 0:
        return
    kind = ctx.outer_kind(outer * max(n, 1) * inner)
    if inner == 1:
        with kb.loop(outer, kind=kind, hint="o") as o:
            body(Segment(ctx, kb.let(o * n, "sb"), n, 1, True), o, o)
        return
    block = inner if inner <= INNER_BLOCK else INNER_BLOCK
    nblk = -(-inner // block)
    with kb.loop(outer * nblk, kind=kind, hint="ob") as ob:
        o = ob // nblk if nblk > 1 else ob
        lo = kb.let((ob % nblk) * block, "lo") if nblk > 1 else idx(0)
        hi = kb.let(minimum(lo + block, idx(inner)), "hi") if nblk > 1 else idx(inner)
        row = kb.let(o * (n * inner), "sb")
        wide = ctx.sched.lanes * vectors
        start = lo
        if vectors > 1 and block >= wide:
            mid = (
                kb.let(lo + (hi - lo) // wide * wide, "mid")
                if nblk > 1
                else idx(inner // wide * wide)
            )
            with kb.loop(mid, start=lo, kind="vector", width=wide, hint="i") as i:
                body(Segment(ctx, row + i, n, inner, False), o, o * inner + i)
            start = mid
        width = ctx.vector_width(inner)
        with kb.loop(hi, start=start, kind="vector", width=width, hint="i") as i:
            body(Segment(ctx, row + i, n, inner, False), o, o * inner + i)


def split_at(shape: tuple[int, ...], axis: int, coerce_2d: bool = False) -> tuple[int, int, int]:
    """``(outer, n, inner)`` of ``shape`` along ``axis`` (all trailing dims when ``coerce_2d``)."""
    if coerce_2d:
        return prod(shape[:axis]), prod(shape[axis:]), 1
    return prod(shape[:axis]), shape[axis], prod(shape[axis + 1 :])


def float_dtype(ctx: LowerCtx, what: str) -> str:
    """The input's element type, which must be a float (declines otherwise)."""
    dtype = ctx.in_dtypes[0]
    if dtype is None or not is_float(dtype):
        raise LoweringDeclined(f"{what} of {dtype}")
    return dtype


def exp(ctx: LowerCtx, x: Expr) -> Expr:
    """``e**x`` in ``x``'s float type (the polynomial runs in float32)."""
    r = km.exp(ctx.kb, x)
    return r if x.dtype == "f32" else Cast(r, x.dtype)


def log(ctx: LowerCtx, x: Expr) -> Expr:
    """Natural log in ``x``'s float type."""
    r = km.log(ctx.kb, x)
    return r if x.dtype == "f32" else Cast(r, x.dtype)


# --------------------------------------------------------------------------- Reduce*
#: op → (combine, element map, finalize).
_REDUCE = {
    "ReduceSum": ("add", None, None),
    "ReduceMean": ("add", None, "mean"),
    "ReduceMax": ("max", None, None),
    "ReduceMin": ("min", None, None),
    "ReduceProd": ("mul", None, None),
    "ReduceL1": ("add", "abs", None),
    "ReduceL2": ("add", "square", "sqrt"),
    "ReduceLogSum": ("add", None, "log"),
    "ReduceSumSquare": ("add", "square", None),
    "ReduceLogSumExp": ("add", "exp", "log"),
}
#: Booleans: max is any, min is all.
_BOOL_COMBINE = {"max": "or", "min": "and"}
#: Run-time axes: at most this many sets of axes fit the shapes (one kernel body each).
MAX_AXES_VARIANTS = 16


def _reduced_axes(ctx: LowerCtx, rank: int) -> list[list[int]]:
    """The reduced axes, from the attribute or the second input, per opset: one list when
    they are known at compile time, else every list the static shapes allow."""
    spec = lookup(ctx.node.op_type, ctx.node.domain, ctx.opset)
    if getattr(spec, "axes_input", False):
        if ctx.has(1):
            axes = ctx.const(1)
            if axes is None:
                return _axes_from_shapes(ctx, rank)
            listed = [int(a) for a in np.asarray(axes).reshape(-1)]
        else:
            listed = []
        if not listed:
            return [[] if ctx.attrs.get("noop_with_empty_axes", 0) else list(range(rank))]
    else:
        listed = list(ctx.attrs.get("axes", []) or [])
        if not listed:
            return [list(range(rank))]
    return [sorted({norm_axis(a, rank) for a in listed})]


def _axes_from_shapes(ctx: LowerCtx, rank: int) -> list[list[int]]:
    """Axes given at run time: every set of as many axes as the input holds that turns the
    static input shape into the output's, size-1 dims left out (reducing them changes no
    value). More than one set: the kernel picks its body by the axes' values."""
    shape, out = ctx.in_shape(0), ctx.out_shape(0)
    if rank > MAX_ENUMERATED_RANK:
        raise LoweringDeclined(f"axes computed at run time over {rank} dims")
    keep = bool(ctx.attrs.get("keepdims", 1))
    noop = bool(ctx.attrs.get("noop_with_empty_axes", 0))
    found: list[list[int]] = []
    for axes, reduced_shape in axes_choices(shape, prod(ctx.in_shape(1)), keep, noop):
        live = [d for d in axes if shape[d] != 1]
        if reduced_shape == out and live not in found:
            found.append(live)
    if not found:
        raise LoweringDeclined("axes computed at run time do not match the shapes")
    if len(found) > MAX_AXES_VARIANTS:
        raise LoweringDeclined(f"axes computed at run time fit {len(found)} choices of the shapes")
    return found


def axes_mask(ctx: LowerCtx, i: int, rank: int, relevant: list[int]) -> Expr:
    """Bit ``d`` set for every axis ``d`` in ``relevant`` that input ``i`` (axes read at run
    time, negative ones counted from the end) names; axes out of range set no bit."""
    kb, axes = ctx.kb, ctx.x(i)
    mask: Expr = Const(0, "i64")
    for k in range(prod(ctx.in_shape(i))):
        a = kb.let(Cast(axes[k], "i64") if axes.dtype != "i64" else axes[k], "ax")
        a = kb.let(Select(a < 0, a + rank, a), "ax")
        inside = logical_and(a >= 0, a < rank)
        bit = Bin("shl", Const(1, "i64"), Select(inside, a, Const(0, "i64")))
        mask = Bin("or", mask, Select(inside, bit, Const(0, "i64")))
    keep = sum(1 << d for d in relevant)
    return kb.let(Bin("and", mask, Const(keep, "i64")), "mask")


def select_at_run_time(
    ctx: LowerCtx, key: Expr, choices: list[tuple[int, T]], emit: Callable[[T], None]
) -> None:
    """``emit(choice)`` under the first ``(value, choice)`` whose value equals ``key``; the
    last choice also takes any other key (bad axes compute wrong values, never read
    outside a buffer)."""
    value, choice = choices[0]
    if len(choices) == 1:
        emit(choice)
        return
    with ctx.kb.if_(eq(key, Const(value, key.dtype))):
        emit(choice)
    with ctx.kb.else_():
        select_at_run_time(ctx, key, choices[1:], emit)


def _runs(shape: tuple[int, ...], reduced: list[int]) -> list[tuple[int, bool]]:
    """Adjacent dims merged while they are all reduced or all kept; size-1 dims dropped."""
    runs: list[tuple[int, bool]] = []
    for d, size in enumerate(shape):
        if size == 1:
            continue
        red = d in reduced
        if runs and runs[-1][1] == red:
            runs[-1] = (runs[-1][0] * size, red)
        else:
            runs.append((size, red))
    return runs


def _combine(ctx: LowerCtx, dtype: str) -> str:
    """How elements combine: the op's, or any/all for boolean Max/Min."""
    combine = _REDUCE[ctx.node.op_type][0]
    return _BOOL_COMBINE[combine] if dtype == "bool" else combine


def _reduce_value(ctx: LowerCtx, space, x, dtype: str, count: int) -> Expr:
    """The reduction of one output element over ``space`` (a Segment or a ``_Nest``)."""
    _, fmap, fin = _REDUCE[ctx.node.op_type]
    combine = _combine(ctx, dtype)
    kb = ctx.kb
    if fmap == "exp":
        top = space.reduce(lambda i: x[i], "max", dtype)
        top = kb.let(Select(eq(top - top, Const(0.0, dtype)), top, Const(0.0, dtype)), "top")
        s = space.reduce(lambda i: exp(ctx, x[i] - top), "add", dtype, 4)
        return log(ctx, s) + top

    def value(i: Expr) -> Expr:
        v = x[i]
        if fmap == "abs":
            return call("fabs", v) if is_float(dtype) else Select(v < Const(0, dtype), -v, v)
        if fmap == "square":
            v = kb.let(v, "v")
            return v * v
        return v

    acc = space.reduce(value, combine, dtype)
    if fin == "mean":
        return acc / Const(float(count) if is_float(dtype) else count, dtype)
    if fin == "sqrt":
        return call("sqrt", acc)
    if fin == "log":
        return log(ctx, acc)
    return acc


@dataclass
class _Nest:
    """Several separate runs of reduced dims: nested serial loops, one accumulator."""

    ctx: LowerCtx
    base: Expr
    loops: list[tuple[int, int]]  # (size, stride)

    def reduce(self, value: Callable[[Expr], Expr], op: str, dtype: str, ways: int = 0) -> Expr:
        """``op`` over ``value(index)`` of every element of the nest."""
        kb = self.ctx.kb
        acc = kb.local(dtype, identity(op, dtype), "r")

        def nest(level: int, at: Expr) -> None:
            if level == len(self.loops):
                kb.assign(acc, Bin(op, value(at), acc))
                return
            size, stride = self.loops[level]
            with kb.loop(size, hint="r") as r:
                nest(level + 1, at + r * stride)

        nest(0, self.base)
        return kb.let(acc, "red")


@lowers(*_REDUCE)
def lower_reduce(ctx: LowerCtx) -> None:
    """Reduce* over any axes (known at compile time, or read at run time among those the
    shapes allow), keepdims and empty-axes rules per opset."""
    shape = ctx.in_shape(0)
    dtype = ctx.in_dtypes[0]
    combine, fmap, fin = _REDUCE[ctx.node.op_type]
    if dtype == "bool" and combine not in _BOOL_COMBINE:
        raise LoweringDeclined(f"{ctx.node.op_type} of bool")
    if not is_float(dtype) and (fmap == "exp" or fin in ("sqrt", "log")):
        raise LoweringDeclined(f"{ctx.node.op_type} of {dtype}")
    variants = _reduced_axes(ctx, len(shape))
    if prod(ctx.out_shape(0)) == 0:
        return
    if len(variants) == 1:
        _reduce_over(ctx, variants[0], dtype)
        return
    relevant = sorted({d for v in variants for d in v})
    mask = axes_mask(ctx, 1, len(shape), relevant)
    choices = [(sum(1 << d for d in v), v) for v in variants]
    select_at_run_time(ctx, mask, choices, lambda v: _reduce_over(ctx, v, dtype))


def _reduce_over(ctx: LowerCtx, reduced: list[int], dtype: str) -> None:
    """The reduction over the axes ``reduced``: segments when they form one run, else a
    nest per output element."""
    shape = ctx.in_shape(0)
    count = prod([shape[d] for d in reduced])
    x, y = ctx.x(0), ctx.y(0)
    total = prod(ctx.out_shape(0))
    if count == 0:
        _fill_empty(ctx, dtype, total)
        return
    runs = _runs(shape, reduced)
    red = [r for r in runs if r[1]]
    if len(red) > 1:
        _general_reduce(ctx, runs, dtype, count, total)
        return
    k = next((i for i, r in enumerate(runs) if r[1]), len(runs))
    outer, n = prod([s for s, _ in runs[:k]]), (runs[k][0] if red else 1)
    inner = prod([s for s, _ in runs[k + 1 :]]) if red else 1
    if not red:
        outer, inner = 1, outer

    def body(seg: Segment, o: Expr, j: Expr) -> None:
        y[j] = _reduce_value(ctx, seg, x, dtype, count)

    fmap = _REDUCE[ctx.node.op_type][1]
    segments(ctx, outer, n, inner, body, vectors=1 if fmap == "exp" else 4)


def _general_reduce(
    ctx: LowerCtx, runs: list[tuple[int, bool]], dtype: str, count: int, total: int
) -> None:
    """One output element per iteration, its coordinates decoded from the flat index."""
    kb = ctx.kb
    strides = [prod([s for s, _ in runs[i + 1 :]]) for i in range(len(runs))]
    kept = [(s, st) for (s, r), st in zip(runs, strides) if not r]
    red = [(s, st) for (s, r), st in zip(runs, strides) if r]
    with kb.loop(total, kind=ctx.outer_kind(total * count), hint="o") as o:
        base: Expr = idx(0)
        for d, (size, st) in enumerate(kept):
            inner = prod([s for s, _ in kept[d + 1 :]])
            c = o // inner if inner > 1 else o
            base = base + (c % size if d else c) * st
        nest = _Nest(ctx, kb.let(base, "base"), red)
        ctx.y(0)[o] = _reduce_value(ctx, nest, ctx.x(0), dtype, count)


def _fill_empty(ctx: LowerCtx, dtype: str, total: int) -> None:
    """Reductions over an empty set: the identity, finalized (Mean gives NaN)."""
    _, fmap, fin = _REDUCE[ctx.node.op_type]
    if fmap == "exp" or fin == "log":
        value: Expr = Const(-math.inf, dtype)
    elif fin == "mean":
        if not is_float(dtype):
            raise LoweringDeclined("integer mean over an empty set")
        value = Const(math.nan, dtype)
    else:
        value = identity(_combine(ctx, dtype), dtype)
    with ctx.kb.loop(total, kind="vector", width=ctx.vector_width(total)) as i:
        ctx.y(0)[i] = value


# --------------------------------------------------------------------------- arg / softmax
@lowers("ArgMax", "ArgMin")
def lower_arg(ctx: LowerCtx) -> None:
    """Index of the first (or last) extreme along ``axis``, as int64."""
    shape = ctx.in_shape(0)
    if not shape:
        raise LoweringDeclined("ArgMax of a scalar")
    axis = norm_axis(int(ctx.attrs.get("axis", 0)), len(shape))
    if shape[axis] == 0:
        raise LoweringDeclined("ArgMax along an empty axis")
    dtype = ctx.in_dtypes[0]
    x, y = ctx.x(0), ctx.y(0)
    larger = ctx.node.op_type == "ArgMax"
    last = bool(ctx.attrs.get("select_last_index", 0))

    def body(seg: Segment, o: Expr, j: Expr) -> None:
        y[j] = Cast(seg.argbest(lambda i: x[i], dtype, larger, last), y.dtype)

    segments(ctx, *split_at(shape, axis), body)


def _softmax_split(ctx: LowerCtx) -> tuple[int, int, int]:
    """(outer, n, inner) per opset: 2-D coercion before 13, one axis from 13."""
    return softmax_split(ctx.in_shape(0), ctx.node, ctx.opset, ctx.attrs)


def softmax_split(shape: tuple[int, ...], node: Node, opset: int, attrs: Attrs) -> tuple[int, int, int]:
    """``(outer, n, inner)`` of a Softmax-like node's input: 2-D coercion before opset 13
    (as the op's spec says), one axis from 13."""
    spec = lookup(node.op_type, node.domain, opset)
    coerce = bool(getattr(spec, "coerce_2d", opset < 13))
    if node.op_type == "Hardmax":
        coerce = opset < 13
    if not shape:
        return 1, 1, 1
    axis = norm_axis(int(attrs.get("axis", 1 if coerce else -1)), len(shape))
    return split_at(shape, axis, coerce)


@lowers("Softmax", "LogSoftmax")
def lower_softmax(ctx: LowerCtx) -> None:
    """exp(x - max) / sum, or x - max - log(sum exp(x - max)), along the axis."""
    dtype = float_dtype(ctx, ctx.node.op_type)
    x, y = ctx.x(0), ctx.y(0)
    kb = ctx.kb
    log_form = ctx.node.op_type == "LogSoftmax"

    def body(seg: Segment, o: Expr, j: Expr) -> None:
        top = seg.reduce(lambda i: x[i], "max", dtype)

        def put_exp(i: Expr, k: Expr) -> None:
            y[i] = exp(ctx, x[i] - top)

        seg.foreach(put_exp)
        total = seg.reduce(lambda i: y[i], "add", dtype)
        if log_form:
            shift = kb.let(top + log(ctx, total), "shift")

            def put_log(i: Expr, k: Expr) -> None:
                y[i] = x[i] - shift

            seg.foreach(put_log)
            return
        inv = kb.let(Const(1.0, dtype) / total, "inv")

        def scale(i: Expr, k: Expr) -> None:
            y[i] = y[i] * inv

        seg.foreach(scale)

    outer, n, inner = _softmax_split(ctx)
    if n == 0:
        return
    segments(ctx, outer, n, inner, body)


@lowers("Hardmax")
def lower_hardmax(ctx: LowerCtx) -> None:
    """One-hot of the first maximum along the axis (2-D coercion before opset 13)."""
    dtype = ctx.in_dtypes[0]
    x, y = ctx.x(0), ctx.y(0)
    one, zero = (
        Const(1.0 if is_float(dtype) else 1, dtype),
        Const(0.0 if is_float(dtype) else 0, dtype),
    )

    def body(seg: Segment, o: Expr, j: Expr) -> None:
        best = seg.argbest(lambda i: x[i], dtype, True, False)

        def put(i: Expr, k: Expr) -> None:
            y[i] = Select(eq(k, best), one, zero)

        seg.foreach(put)

    outer, n, inner = _softmax_split(ctx)
    if n == 0:
        return
    segments(ctx, outer, n, inner, body)


@lowers("CumSum", "CumProd")
def lower_cumulative(ctx: LowerCtx) -> None:
    """Running sum or product along an axis; ``exclusive`` and ``reverse``. An axis
    computed at run time picks one body per axis of the input by its value."""
    shape = ctx.in_shape(0)
    if not shape:
        raise LoweringDeclined(f"{ctx.node.op_type} of a scalar")
    axis_value = ctx.const(1)
    if axis_value is not None:
        axis = norm_axis(int(np.asarray(axis_value).reshape(-1)[0]), len(shape))
        _cumulate(ctx, axis)
        return
    if len(shape) == 1:
        _cumulate(ctx, 0)
        return
    raw = ctx.x(1)[0]
    a = ctx.kb.let(Cast(raw, "i64") if raw.dtype != "i64" else raw, "ax")
    a = ctx.kb.let(Select(a < 0, a + len(shape), a), "ax")
    axes = [(d, d) for d in range(len(shape))]
    select_at_run_time(ctx, a, axes, lambda d: _cumulate(ctx, d))


def _cumulate(ctx: LowerCtx, axis: int) -> None:
    """The running sum or product along ``axis``, one segment at a time."""
    shape = ctx.in_shape(0)
    op = "add" if ctx.node.op_type == "CumSum" else "mul"
    dtype = ctx.in_dtypes[0]
    exclusive, reverse = bool(ctx.attrs.get("exclusive", 0)), bool(ctx.attrs.get("reverse", 0))
    x, y = ctx.x(0), ctx.y(0)
    kb = ctx.kb

    def body(seg: Segment, o: Expr, j: Expr) -> None:
        acc = kb.local(dtype, identity(op, dtype), "acc")
        with kb.loop(seg.n, hint="k") as k:
            i = kb.let(seg.at(idx(seg.n - 1) - k if reverse else k), "at")
            v = kb.let(x[i], "v")
            if exclusive:
                y[i] = acc
            kb.assign(acc, Bin(op, acc, v))
            if not exclusive:
                y[i] = acc

    outer, n, inner = split_at(shape, axis)
    segments(ctx, outer, n, inner, body)
