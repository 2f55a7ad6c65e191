"""Indexing ops: Gather, GatherElements, GatherND, ScatterND, ScatterElements, OneHot, and
Resize/Upsample (a gather whose indices and weights are compile-time tables).

Safety: an index read from run-time data is never trusted. ``safe_index`` counts negative
indices from the end and clamps the result into the axis, so a wrong index reads or writes
a wrong element of the right buffer, never memory outside it (onnxruntime raises instead;
a kernel has no way to report). Constant indices are checked at compile time and out-of-
range ones are a clear error.

Where the copied unit is a contiguous run (a row of an embedding table, a slice after the
indexed axes), the inner loop is a vector copy of the run; otherwise the vector loop walks
the output and the data loads go lane by lane.
"""

from __future__ import annotations

import math
from contextlib import ExitStack
from dataclasses import replace

import numpy as np

from torsh_gen.backends.kernel.builder import BufferRef, KernelBuilder
from torsh_gen.backends.kernel.ir import (
    Cast,
    Const,
    Expr,
    Select,
    eq,
    idx,
    logical_and,
    logical_or,
    maximum,
    minimum,
)
from torsh_gen.backends.kernel.lower import (
    LowerCtx,
    LoweringDeclined,
    Schedule,
    lowers,
    prod,
    row_major_strides,
)
from torsh_gen.backends.kernel.lower.elementwise import elementwise_nest
from torsh_gen.backends.kernel.lower.shape import const_ints, expect_out, literal, norm_axis
from torsh_gen.errors import InputError


# --------------------------------------------------------------------------- helpers
def safe_index(kb: KernelBuilder, value: Expr, size: int) -> Expr:
    """An i64 index into an axis of ``size`` from run-time data: negative counts from the
    end, then clamped into [0, size - 1] so that no value can leave the buffer."""
    i = kb.let(_as(value, "i64"), "ix")
    i = Select(i < 0, i + size, i)
    return minimum(maximum(i, 0), size - 1)


def check_const_indices(ctx: LowerCtx, i: int, sizes: list[int] | int) -> None:
    """A constant index input must be in range (onnxruntime rejects it too): say which."""
    values = ctx.const(i)
    if values is None:
        return
    arr = np.asarray(values).astype(np.int64)
    limit = np.asarray(sizes, dtype=np.int64)
    if arr.size == 0 or limit.size == 0:
        return
    if arr.ndim and np.ndim(sizes):
        arr = arr.reshape(-1, limit.size)
    bad = (arr < -limit) | (arr >= limit)
    if bad.any():
        raise InputError(
            f"{ctx.node.op_type} node {ctx.node.name or '?'!r}: constant index "
            f"{int(arr[bad].reshape(-1)[0])} is out of range for an axis of size(s) {sizes}"
        )


def _as(e: Expr, dtype: str) -> Expr:
    return e if e.dtype == dtype else Cast(e, dtype)


def _nonempty_axis(size: int, what: str) -> None:
    if size <= 0:
        raise LoweringDeclined(f"{what} indexes an empty axis")


def combine(reduction: str, old: Expr, new: Expr) -> Expr:
    """A scatter's write: replace, or combine with the current value."""
    if reduction == "none":
        return new
    if old.dtype == "bool":
        raise LoweringDeclined(f"reduction {reduction!r} on bool data")
    if reduction == "add":
        return old + new
    if reduction == "mul":
        return old * new
    if reduction == "max":
        return maximum(old, new)
    if reduction == "min":
        return minimum(old, new)
    raise LoweringDeclined(f"reduction {reduction!r}")


def copy_all(ctx: LowerCtx, src: BufferRef, dst: BufferRef, n: int) -> None:
    """``dst[:n] = src[:n]`` as one flat copy."""

    def body(ix: list[Expr]) -> None:
        dst[ix[0]] = src[ix[0]]

    elementwise_nest(ctx, (n,), [[1]], body)


def check_shapes(ctx: LowerCtx, ok: bool, what: str) -> None:
    """Shapes a kernel's reads rely on (indices within data, updates as large as indexed):
    a model that breaks them is refused, since the kernel would read past a buffer."""
    if not ok:
        raise InputError(f"{ctx.node.op_type} node {ctx.node.name or '?'!r}: {what}")


def _within(ishape: tuple[int, ...], dshape: tuple[int, ...], axis: int) -> bool:
    """Indices no larger than the data on every axis but ``axis`` (same rank)."""
    return len(ishape) == len(dshape) and all(
        i <= d for k, (i, d) in enumerate(zip(ishape, dshape)) if k != axis
    )


# --------------------------------------------------------------------------- gathers
@lowers("Gather")
def lower_gather(ctx: LowerCtx) -> None:
    """Slices along ``axis`` at run-time or constant (possibly negative) indices."""
    shape = ctx.in_shape(0)
    axis = norm_axis(int(ctx.attrs.axis or 0), len(shape))
    size = shape[axis]
    outer, inner = prod(shape[:axis]), prod(shape[axis + 1 :])
    n_idx = prod(ctx.in_shape(1))
    total = outer * n_idx * inner
    if prod(ctx.out_shape(0)) != total:  # sizes, not shapes: weights may be stored 1-d
        raise LoweringDeclined(f"output {ctx.out_shape(0)} does not hold the gathered slices")
    if total == 0:
        return
    _nonempty_axis(size, "Gather")
    check_const_indices(ctx, 1, size)
    kb, x, ind, y = ctx.kb, ctx.x(0), ctx.x(1), ctx.y(0)
    if inner == 1:  # along the last axis: vector over the indices, data loads lane by lane
        with kb.loop(outer, kind=ctx.outer_kind(total)) as a:
            src, dst = kb.let(a * size, "src"), kb.let(a * n_idx, "dst")
            with kb.loop(n_idx, kind="vector", width=ctx.vector_width(n_idx)) as j:
                y[dst + j] = x[src + safe_index(kb, ind[j], size)]
        return
    with kb.loop(outer * n_idx, kind=ctx.outer_kind(total)) as t:  # one contiguous run per index
        j = kb.let(t % n_idx, "j") if outer > 1 else t
        row = safe_index(kb, ind[j], size)
        src = kb.let(((t // n_idx) * size + row if outer > 1 else row) * inner, "src")
        dst = kb.let(t * inner, "dst")
        with kb.loop(inner, kind="vector", width=ctx.vector_width(inner)) as k:
            y[dst + k] = x[src + k]


@lowers("GatherElements")
def lower_gather_elements(ctx: LowerCtx) -> None:
    """``out[p] = data[p with p[axis] = indices[p]]`` over the indices' shape."""
    dshape, ishape = ctx.in_shape(0), ctx.in_shape(1)
    axis = norm_axis(int(ctx.attrs.axis or 0), len(dshape))
    check_shapes(ctx, _within(ishape, dshape, axis), f"indices {ishape} exceed data {dshape}")
    expect_out(ctx, ishape)
    if prod(ishape) == 0:
        return
    _nonempty_axis(dshape[axis], "GatherElements")
    check_const_indices(ctx, 1, dshape[axis])
    dst_st = row_major_strides(ishape)
    src_st = row_major_strides(dshape)
    step = src_st[axis]
    src_st[axis] = 0
    kb, x, ind, y = ctx.kb, ctx.x(0), ctx.x(1), ctx.y(0)

    def body(ix: list[Expr]) -> None:
        y[ix[0]] = x[ix[1] + safe_index(kb, ind[ix[0]], dshape[axis]) * step]

    elementwise_nest(ctx, ishape, [dst_st, src_st], body)


def _nd_offset(
    ctx: LowerCtx, ind: BufferRef, row: Expr, m: int, dshape: tuple[int, ...], first: int
) -> Expr:
    """Data offset addressed by ``m`` indices starting at ``ind[row]`` for dims ``first..``."""
    st = row_major_strides(dshape)
    off: Expr = idx(0)
    for k in range(m):
        d = first + k
        _nonempty_axis(dshape[d], ctx.node.op_type)
        off = off + safe_index(ctx.kb, ind[row + k], dshape[d]) * st[d]
    return off


@lowers("GatherND")
def lower_gather_nd(ctx: LowerCtx) -> None:
    """Slices addressed by the indices' last dimension, after ``batch_dims`` shared dims."""
    dshape, ishape = ctx.in_shape(0), ctx.in_shape(1)
    b = int(ctx.attrs.get("batch_dims", 0))
    m = ishape[-1] if ishape else 0
    if not ishape or b + m > len(dshape) or tuple(ishape[:b]) != tuple(dshape[:b]):
        raise LoweringDeclined("indices do not fit the data shape")
    check_const_indices(ctx, 1, list(dshape[b : b + m]))
    expect_out(ctx, tuple(ishape[:-1]) + tuple(dshape[b + m :]))
    nb, nj, run = prod(dshape[:b]), prod(ishape[b:-1]), prod(dshape[b + m :])
    if nb * nj * run == 0:
        return
    batch = prod(dshape[b:])
    kb, x, ind, y = ctx.kb, ctx.x(0), ctx.x(1), ctx.y(0)
    with kb.loop(nb * nj, kind=ctx.outer_kind(nb * nj * run)) as t:
        base = (t // nj) * batch if nb > 1 else idx(0)
        src = kb.let(base + _nd_offset(ctx, ind, t * m, m, dshape, b), "src")
        dst = kb.let(t * run, "dst")
        with kb.loop(run, kind="vector", width=ctx.vector_width(run)) as k:
            y[dst + k] = x[src + k]


# --------------------------------------------------------------------------- scatters
@lowers("ScatterND")
def lower_scatter_nd(ctx: LowerCtx) -> None:
    """Copy the data, then write each update slice in index order (later ones win)."""
    dshape, ishape = ctx.in_shape(0), ctx.in_shape(1)
    m = ishape[-1] if ishape else 0
    if not ishape or m > len(dshape):
        raise LoweringDeclined("indices do not fit the data shape")
    want = tuple(ishape[:-1]) + tuple(dshape[m:])
    check_shapes(
        ctx, prod(ctx.in_shape(2)) == prod(want), f"updates {ctx.in_shape(2)} should be {want}"
    )
    check_const_indices(ctx, 1, list(dshape[:m]))
    expect_out(ctx, dshape)
    reduction = ctx.attrs.get("reduction", "none")
    kb, x, ind, upd, y = ctx.kb, ctx.x(0), ctx.x(1), ctx.x(2), ctx.y(0)
    if prod(dshape):
        copy_all(ctx, x, y, prod(dshape))
    nj, run = prod(ishape[:-1]), prod(dshape[m:])
    if nj * run == 0:
        return
    with kb.loop(nj) as t:  # serial: duplicates apply in order
        dst = kb.let(_nd_offset(ctx, ind, t * m, m, dshape, 0), "dst")
        src = kb.let(t * run, "src")
        with kb.loop(run, kind="vector", width=ctx.vector_width(run)) as k:
            y[dst + k] = combine(reduction, y[dst + k], _as(upd[src + k], y.dtype))


@lowers("ScatterElements", "Scatter")
def lower_scatter_elements(ctx: LowerCtx) -> None:
    """Copy the data, then one serial pass over the indices (duplicates apply in order)."""
    dshape, ishape = ctx.in_shape(0), ctx.in_shape(1)
    axis = norm_axis(int(ctx.attrs.axis or 0), len(dshape))
    check_shapes(ctx, _within(ishape, dshape, axis), f"indices {ishape} exceed data {dshape}")
    check_shapes(ctx, prod(ctx.in_shape(2)) == prod(ishape), "updates and indices differ in size")
    check_const_indices(ctx, 1, dshape[axis])
    expect_out(ctx, dshape)
    reduction = ctx.attrs.get("reduction", "none")
    kb, x, ind, upd, y = ctx.kb, ctx.x(0), ctx.x(1), ctx.x(2), ctx.y(0)
    if prod(dshape):
        copy_all(ctx, x, y, prod(dshape))
    if prod(ishape) == 0:
        return
    _nonempty_axis(dshape[axis], "ScatterElements")
    dst_st = row_major_strides(dshape)
    step = dst_st[axis]
    dst_st[axis] = 0
    serial = replace(ctx, sched=Schedule(lanes=1, threads=False))

    def body(ix: list[Expr]) -> None:
        at = kb.let(ix[1] + safe_index(kb, ind[ix[0]], dshape[axis]) * step, "at")
        y[at] = combine(reduction, y[at], _as(upd[ix[0]], y.dtype))

    elementwise_nest(serial, ishape, [row_major_strides(ishape), dst_st], body)


# --------------------------------------------------------------------------- one-hot
@lowers("OneHot")
def lower_one_hot(ctx: LowerCtx) -> None:
    """``on`` where the (wrapped) index equals the position along ``axis``, else ``off``."""
    ishape = ctx.in_shape(0)
    out = ctx.out_shape(0)
    axis = norm_axis(int(ctx.attrs.get("axis", -1)), len(ishape) + 1)
    depth = out[axis]
    expect_out(ctx, ishape[:axis] + (depth,) + ishape[axis:])
    outer, inner = prod(ishape[:axis]), prod(ishape[axis:])
    if outer * depth * inner == 0:
        return
    check_shapes(ctx, prod(ctx.in_shape(2)) == 2, "values must hold [off, on]")
    kb, ind, y = ctx.kb, ctx.x(0), ctx.y(0)
    off = kb.let(_value_at(ctx, 0, y.dtype), "off")
    on = kb.let(_value_at(ctx, 1, y.dtype), "on")
    with kb.loop(outer * depth, kind=ctx.outer_kind(outer * depth * inner)) as t:
        d = kb.let(t % depth, "d")
        src = kb.let((t // depth) * inner, "src")
        dst = kb.let(t * inner, "dst")
        with kb.loop(inner, kind="vector", width=ctx.vector_width(inner)) as k:
            v = kb.let(_as(ind[src + k], "i64"), "v")
            w = Select(v < 0, v + depth, v)
            y[dst + k] = Select(eq(w, d), on, off)


def _value_at(ctx: LowerCtx, k: int, dtype: str) -> Expr:
    """Element ``k`` of OneHot's ``values`` input (constant or read at run time)."""
    v = ctx.const(2)
    if v is not None:
        return literal(np.asarray(v).reshape(-1)[k], dtype)
    return _as(ctx.x(2)[k], dtype)


# --------------------------------------------------------------------------- resize
def _resize_params(ctx: LowerCtx) -> tuple[str, str, str, list[float], bool]:
    """(mode, coordinate mode, nearest mode, per-axis scales, opset-10 nearest rounding)."""
    op, a, rank = ctx.node.op_type, ctx.attrs, len(ctx.in_shape(0))
    shape, out = ctx.in_shape(0), ctx.out_shape(0)
    mode = a.get("mode", "nearest")
    mode = "linear" if mode in ("linear", "bilinear") else mode
    if op == "Upsample" or ctx.opset < 11:
        given = a.scales if op == "Upsample" and ctx.opset < 9 else _const_floats(ctx, 1, "scales")
        return mode, "asymmetric", "floor", [float(s) for s in given or []], True
    if a.get("antialias", 0) or a.get("keep_aspect_ratio_policy", "stretch") != "stretch":
        raise LoweringDeclined("antialias and keep_aspect_ratio_policy are not lowered")
    ctm = a.get("coordinate_transformation_mode", "half_pixel")
    if ctm == "tf_crop_and_resize":
        raise LoweringDeclined("coordinate_transformation_mode tf_crop_and_resize")
    axes = [norm_axis(int(v), rank) for v in (a.axes or range(rank))]
    scales = [1.0] * rank
    sizes = const_ints(ctx, 3, "Resize sizes") if ctx.has(3) else None
    if sizes:
        for ax, w in zip(axes, sizes):
            scales[ax] = w / shape[ax]
    else:
        for ax, s in zip(axes, _const_floats(ctx, 2, "Resize scales")):
            scales[ax] = s
    if not sizes and any(int(math.floor(d * s)) != o for d, s, o in zip(shape, scales, out)):
        raise LoweringDeclined("scales do not give the output shape")
    return mode, ctm, a.get("nearest_mode", "round_prefer_floor"), scales, False


def _const_floats(ctx: LowerCtx, i: int, what: str) -> list[float]:
    v = ctx.const(i) if ctx.has(i) else None
    if v is None:
        raise LoweringDeclined(f"{what} must be a compile-time constant")
    return [float(s) for s in np.asarray(v).reshape(-1)]


def resize_tables(
    size: int,
    out: int,
    scale: float,
    mode: str,
    ctm: str,
    nearest_mode: str,
    simple: bool,
    exclude: bool,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Source indices (out, taps) and weights (linear only) of one axis, computed by the op's
    numpy reference so the kernel rounds exactly as it (and onnxruntime) does."""
    from torsh_gen.ops.sampling import _round_nearest, _source_coords, _taps

    if ctm == "align_corners":  # onnxruntime divides by the integer output length
        f = np.float32
        y = np.arange(out, dtype=f)
        coords = (y * f(size - 1) / f(out - 1) if out > 1 else np.zeros_like(y)).astype(np.float64)
    else:
        coords, _ = _source_coords(ctm, out, size, scale, (0.0, 1.0))
    if mode == "nearest":
        if simple:
            near = np.ceil(coords) if scale < 1 else np.floor(coords)
        else:
            near = _round_nearest(coords, nearest_mode)
        return np.clip(near, 0, size - 1).astype(np.int64).reshape(out, 1), None
    index, weights = _taps(
        np.clip(coords, 0, size - 1), size, "linear", scale, -0.75, False, exclude
    )
    return index.astype(np.int64), weights.astype(np.float32)


@lowers("Resize", "Upsample")
def lower_resize(ctx: LowerCtx) -> None:
    """Nearest (any rank, any dtype) and linear (float, the last two axes) resampling."""
    shape, out = ctx.in_shape(0), ctx.out_shape(0)
    if prod(shape) == 0 or prod(out) == 0:
        raise LoweringDeclined("Resize of an empty tensor")
    mode, ctm, nearest_mode, scales, simple = _resize_params(ctx)
    if mode not in ("nearest", "linear"):
        raise LoweringDeclined(f"Resize mode {mode!r}")
    if len(scales) != len(shape) or len(out) != len(shape):
        raise LoweringDeclined("one scale per axis is needed")
    exclude = bool(ctx.attrs.get("exclude_outside", 0))
    tables = {
        d: resize_tables(shape[d], out[d], scales[d], mode, ctm, nearest_mode, simple, exclude)
        for d in range(len(shape))
        if not (out[d] == shape[d] and scales[d] == 1.0)
    }
    if mode == "nearest":
        _resize_nearest(ctx, shape, out, {d: t[0][:, 0] for d, t in tables.items()})
        return
    if ctx.y(0).dtype not in ("f32", "f64") or any(d < len(shape) - 2 for d in tables):
        raise LoweringDeclined("linear Resize is lowered for float data over the last two axes")
    _resize_linear(ctx, shape, out, tables)


def _resize_nearest(
    ctx: LowerCtx, shape: tuple[int, ...], out: tuple[int, ...], tables: dict[int, np.ndarray]
) -> None:
    """A gather nest: resized dims read their source offset from a table, others walk."""
    st = row_major_strides(shape)
    levels: list[tuple[int, int, np.ndarray | None]] = []  # (size, in stride, offsets table)
    for d in range(len(shape)):
        if out[d] == 1 and d not in tables:
            continue
        if d not in tables and levels and levels[-1][2] is None:
            levels[-1] = (levels[-1][0] * out[d], st[d], None)
            continue
        levels.append((out[d], st[d], tables[d] * st[d] if d in tables else None))
    levels = levels or [(1, 1, None)]
    ost = row_major_strides(tuple(n for n, _, _ in levels))
    kb, x, y = ctx.kb, ctx.x(0), ctx.y(0)
    refs = {k: ctx.weight(t, "i64") for k, (_, _, t) in enumerate(levels) if t is not None}
    src: Expr = idx(0)
    dst: Expr = idx(0)
    with ExitStack() as nest:
        for k, (n, stride, _) in enumerate(levels):
            last = k == len(levels) - 1
            kind = "vector" if last else (ctx.outer_kind(prod(out)) if k == 0 else "serial")
            o = nest.enter_context(kb.loop(n, kind=kind, width=ctx.vector_width(n) if last else 1))
            here = refs[k][o] if k in refs else o * stride
            if last:
                y[dst + o] = x[src + here]
            else:
                src, dst = kb.let(src + here, "src"), kb.let(dst + o * ost[k], "dst")


def _resize_linear(
    ctx: LowerCtx, shape: tuple[int, ...], out: tuple[int, ...], tables: dict
) -> None:
    """Bilinear (or linear along one of the last two axes) from 2-tap tables per axis."""
    rank = len(shape)
    h, w = (shape[-2] if rank > 1 else 1), shape[-1]
    oh, ow = (out[-2] if rank > 1 else 1), out[-1]
    planes = prod(shape[:-2])
    kb, x, y = ctx.kb, ctx.x(0), ctx.y(0)
    dt = y.dtype
    ty = tables.get(rank - 2)
    tx = tables.get(rank - 1)
    if ty is not None:
        iy, wy = ctx.weight(ty[0].reshape(-1) * w, "i64"), ctx.weight(ty[1].reshape(-1), dt)
    if tx is not None:
        ix = [ctx.weight(np.ascontiguousarray(tx[0][:, k]), "i64") for k in (0, 1)]
        wx = [ctx.weight(np.ascontiguousarray(tx[1][:, k]), dt) for k in (0, 1)]
    with kb.loop(planes * oh, kind=ctx.outer_kind(planes * oh * ow)) as t:
        oy = kb.let(t % oh, "oy") if planes > 1 else t
        plane = kb.let((t // oh) * (h * w), "pl") if planes > 1 else idx(0)
        if ty is not None:
            rows = [kb.let(plane + iy[oy * 2 + k], "r") for k in (0, 1)]
            ay = [kb.let(wy[oy * 2 + k], "a") for k in (0, 1)]
        else:
            rows, ay = [kb.let(plane + oy * w, "r")], []
        dst = kb.let(t * ow, "dst")
        with kb.loop(ow, kind="vector", width=ctx.vector_width(ow)) as ox:
            if tx is not None:
                cols = [kb.let(ix[k][ox], "c") for k in (0, 1)]
                bx = [kb.let(wx[k][ox], "b") for k in (0, 1)]

                def row(r: Expr) -> Expr:
                    return bx[0] * x[r + cols[0]] + bx[1] * x[r + cols[1]]
            else:

                def row(r: Expr) -> Expr:
                    return x[r + ox]

            v = ay[0] * row(rows[0]) + ay[1] * row(rows[1]) if ay else row(rows[0])
            y[dst + ox] = v


# --------------------------------------------------------------------------- TopK
@lowers("TopK")
def lower_topk(ctx: LowerCtx) -> None:
    """Per row, an insertion into the k sorted output slots (k is static: the output shape).

    Equal values keep their input order, so ties resolve to the lower index as the spec
    asks; the rows are independent and split across threads when there are many."""
    shape = ctx.in_shape(0)
    axis = norm_axis(int(ctx.attrs.get("axis", -1)), len(shape))
    n, k = shape[axis], ctx.out_shape(0)[axis]
    if k > n:
        raise LoweringDeclined(f"k={k} exceeds the axis size {n}")
    for j in (0, 1):
        expect_out(ctx, shape[:axis] + (k,) + shape[axis + 1 :], j)
    inner, rows = prod(shape[axis + 1 :]), prod(shape[:axis]) * prod(shape[axis + 1 :])
    if rows * k == 0:
        return
    largest = bool(ctx.attrs.get("largest", 1))
    kb, x, vals, inds = ctx.kb, ctx.x(0), ctx.y(0), ctx.y(1)
    with kb.loop(rows, kind=ctx.outer_kind(rows * n)) as t:
        lane = kb.let(t % inner, "b") if inner > 1 else idx(0)
        src = kb.let((t // inner) * (n * inner) + lane if inner > 1 else t * n, "src")
        dst = kb.let((t // inner) * (k * inner) + lane if inner > 1 else t * k, "dst")
        kept = kb.local("i64", idx(0), "kept")
        with kb.loop(n) as i:
            v = kb.let(x[src + i * inner], "v")
            last = kb.let(dst + (k - 1) * inner, "last")
            with kb.if_(logical_or(kept < k, _better(v, vals[last], largest))):
                slot = kb.local("i64", minimum(kept, k - 1), "slot")
                moving = kb.local("bool", True, "mv")
                with kb.loop(minimum(kept, k - 1)):
                    prev = kb.let(dst + (slot - 1) * inner, "p")
                    with kb.if_(logical_and(moving, _better(v, vals[prev], largest))):
                        vals[prev + inner] = vals[prev]
                        inds[prev + inner] = inds[prev]
                        kb.assign(slot, slot - 1)
                    with kb.else_():
                        kb.assign(moving, Const(False, "bool"))
                vals[dst + slot * inner] = v
                inds[dst + slot * inner] = _as(i, inds.dtype)
                kb.assign(kept, minimum(kept + 1, k))


def _better(a: Expr, b: Expr, largest: bool) -> Expr:
    return a > b if largest else a < b


__all__ = ["check_const_indices", "combine", "resize_tables", "safe_index"]
