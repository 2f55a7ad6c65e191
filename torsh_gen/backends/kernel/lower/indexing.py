"""Indexing ops: Gather, GatherElements, GatherND, ScatterND, ScatterElements, OneHot, and
Resize/Upsample (gathers and weighted sums through per-axis index and weight tables, built
at compile time or, when scales, sizes or roi are run-time values, by the kernel itself).

Safety: an index read from run-time data is never trusted. ``safe_index`` counts negative
indices from the end and clamps the result into the axis, so a wrong index reads or writes
a wrong element of the right buffer, never memory outside it (onnxruntime raises instead;
a kernel has no way to report). Constant indices are checked at compile time and out-of-
range ones are a clear error. Resize's run-time values go the same way: whatever the
scales, sizes or roi, the table indices are clamped into the axis (floats before they are
converted, so that NaN and infinities convert too).

Where the copied unit is a contiguous run (a row of an embedding table, a slice after the
indexed axes), the inner loop is a vector copy of the run; otherwise the vector loop walks
the output and the data loads go lane by lane.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field, replace

import numpy as np

from torsh_gen.backends.kernel.builder import BufferRef, KernelBuilder
from torsh_gen.backends.kernel.ir import (
    Cast,
    Const,
    Expr,
    Select,
    Un,
    call,
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
from torsh_gen.backends.kernel.lower.shape import expect_out, input_values, literal, norm_axis
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
            with kb.loop(n_idx, kind=ctx.inner_kind(), width=ctx.vector_width(n_idx)) as j:
                y[dst + j] = x[src + safe_index(kb, ind[j], size)]
        return
    with kb.loop(outer * n_idx, kind=ctx.outer_kind(total)) as t:  # one contiguous run per index
        j = kb.let(t % n_idx, "j") if outer > 1 else t
        row = safe_index(kb, ind[j], size)
        src = kb.let(((t // n_idx) * size + row if outer > 1 else row) * inner, "src")
        dst = kb.let(t * inner, "dst")
        with kb.loop(inner, kind=ctx.inner_kind(), width=ctx.vector_width(inner)) as k:
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
#: Most taps per output element an antialiased axis may take (a 32x linear downscale).
MAX_TAPS = 64
_NP_FLOAT = {"f32": np.float32, "f64": np.float64}


@dataclass
class _Resize:
    """Resize/Upsample attributes as the kernel needs them (``simple``: opset-10 rounding)."""

    mode: str
    ctm: str
    nearest_mode: str
    simple: bool
    cubic_a: float = -0.75
    antialias: bool = False
    exclude: bool = False
    extrapolation: float = 0.0
    axes: list[int] = field(default_factory=list)
    policy: str = "stretch"


@dataclass
class _Taps:
    """One resized axis: tap-major source index and weight tables (``taps`` rows of
    ``out``), the tf_crop_and_resize outside mask, and, where the axis may turn out
    unscaled at run time, the condition under which the reference leaves it as it is."""

    axis: int
    out: int
    taps: int
    index: BufferRef
    weight: BufferRef | None
    outside: BufferRef | None
    identity: Expr | None = None


_CTMS = ("half_pixel", "asymmetric", "align_corners", "pytorch_half_pixel",
         "tf_half_pixel_for_nn", "half_pixel_symmetric", "tf_crop_and_resize")


def _resize_spec(ctx: LowerCtx) -> _Resize:
    a, rank = ctx.attrs, len(ctx.in_shape(0))
    mode = a.get("mode", "nearest")
    mode = "linear" if mode in ("linear", "bilinear") else mode
    if mode not in ("nearest", "linear", "cubic"):
        raise LoweringDeclined(f"Resize mode {mode!r}")
    if ctx.node.op_type == "Upsample" or ctx.opset < 11:
        return _Resize(mode, "asymmetric", "floor", True, axes=list(range(rank)))
    axes = [norm_axis(int(v), rank) for v in (a.axes or range(rank))]
    spec = _Resize(
        mode,
        a.get("coordinate_transformation_mode", "half_pixel"),
        a.get("nearest_mode", "round_prefer_floor"),
        False,
        float(a.get("cubic_coeff_a", -0.75)),
        bool(a.get("antialias", 0)) and mode != "nearest",
        bool(a.get("exclude_outside", 0)),
        float(a.get("extrapolation_value", 0.0)),
        axes,
        a.get("keep_aspect_ratio_policy", "stretch"),
    )
    if spec.ctm not in _CTMS or spec.policy not in ("stretch", "not_larger", "not_smaller"):
        raise LoweringDeclined(f"Resize {spec.ctm!r} / {spec.policy!r}")
    if len(set(axes)) != len(axes):
        raise LoweringDeclined(f"Resize axes {axes} repeat an axis")
    return spec


def _scale_input(ctx: LowerCtx) -> tuple[str, int]:
    """Where the scales come from: ("attr", -1), ("scales", input) or ("sizes", input)."""
    op = ctx.node.op_type
    if op == "Upsample" and ctx.opset < 9:
        return "attr", -1
    if op == "Upsample" or ctx.opset < 11:
        return "scales", 1
    if ctx.has(3) and prod(ctx.in_shape(3)):
        return "sizes", 3
    if ctx.has(2) and prod(ctx.in_shape(2)):
        return "scales", 2
    raise LoweringDeclined("Resize needs scales or sizes")


def _roi_input(ctx: LowerCtx, spec: _Resize) -> bool:
    """Whether a (non-empty) roi input counts: tf_crop_and_resize only."""
    return spec.ctm == "tf_crop_and_resize" and ctx.has(1) and bool(prod(ctx.in_shape(1)))


@lowers("Resize", "Upsample")
def lower_resize(ctx: LowerCtx) -> None:
    """Nearest (any dtype), linear and cubic (float data) resampling of any axes, antialias
    and tf_crop_and_resize included.

    Each resized axis becomes (index, weight) tables of its taps: computed by the op's numpy
    reference when scales, sizes and roi are compile-time values, else by the kernel's first
    loops from the values read at run time (the output shape is static either way). Nearest
    is one gather nest; linear and cubic resample one axis per pass, in the reference's
    order, through workspace buffers."""
    shape, out = ctx.in_shape(0), ctx.out_shape(0)
    if prod(out) == 0:
        return
    if prod(shape) == 0:
        raise LoweringDeclined("Resize of an empty tensor to a non-empty one")
    if len(out) != len(shape):
        raise LoweringDeclined("Resize output and input differ in rank")
    spec = _resize_spec(ctx)
    if spec.mode != "nearest" and ctx.y(0).dtype not in ("f32", "f64"):
        raise LoweringDeclined(f"{spec.mode} Resize of {ctx.y(0).dtype} data is not lowered")
    kind, i = _scale_input(ctx)
    fixed = (kind == "attr" or ctx.const(i) is not None) and (
        not _roi_input(ctx, spec) or ctx.const(1) is not None
    )
    tables = _const_tables(ctx, spec) if fixed else _runtime_tables(ctx, spec)
    resized = {t.axis for t in tables}
    if any(o != n for d, (n, o) in enumerate(zip(shape, out)) if d not in resized):
        raise LoweringDeclined(f"output {out} changes an axis Resize leaves as it is")
    if spec.mode == "nearest" or not tables:
        _resize_nearest(ctx, shape, out, tables, spec.extrapolation)
    else:
        _resize_passes(ctx, shape, tables, spec.extrapolation)


# --------------------------------------------------------------------------- compile-time tables
def _const_params(ctx: LowerCtx, spec: _Resize) -> tuple[list[float], list[tuple[float, float]]]:
    """Per-axis scales and roi spans from compile-time values, as the reference derives
    them; declines when they do not give the static output shape."""
    shape, out = ctx.in_shape(0), ctx.out_shape(0)
    rank, k = len(shape), len(spec.axes)
    kind, i = _scale_input(ctx)
    given = (ctx.attrs.scales or []) if kind == "attr" else ctx.const(i)
    values = [float(v) for v in np.asarray(given).reshape(-1)]
    if len(values) != k:
        raise LoweringDeclined(f"{len(values)} {kind} for {k} axes")
    scales, want = [1.0] * rank, list(shape)
    for ax, v in zip(spec.axes, values):
        if kind == "sizes":
            scales[ax], want[ax] = v / shape[ax], int(v)
        else:
            scales[ax], want[ax] = v, math.floor(shape[ax] * v)
    if kind == "sizes" and spec.policy != "stretch":
        pick = min if spec.policy == "not_larger" else max
        common = pick(scales[ax] for ax in spec.axes)
        for ax in spec.axes:
            scales[ax], want[ax] = common, int(math.floor(common * shape[ax] + 0.5))
    if tuple(want) != tuple(out):
        raise LoweringDeclined(f"{kind} give the output {tuple(want)}, not {out}")
    spans = [(0.0, 1.0)] * rank
    if _roi_input(ctx, spec):
        roi = np.asarray(ctx.const(1), np.float64).reshape(-1)
        if roi.size < 2 * k:
            raise LoweringDeclined(f"roi holds {roi.size} values for {k} axes")
        for j, ax in enumerate(spec.axes):
            spans[ax] = (float(roi[j]), float(roi[j + k]))
    return scales, spans


def resize_tables(
    size: int, out: int, scale: float, spec: _Resize, span: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Source indices (out, taps), weights (None for nearest) and the outside mask (None
    unless tf_crop_and_resize) of one axis, by the op's numpy reference so the kernel
    rounds exactly as it does."""
    from torsh_gen.ops.sampling import _round_nearest, _source_coords, _taps

    outside = None
    if spec.ctm == "align_corners":  # onnxruntime divides by the integer output length
        f = np.float32
        y = np.arange(out, dtype=f)
        coords = (y * f(size - 1) / f(out - 1) if out > 1 else np.zeros_like(y)).astype(np.float64)
    else:
        coords, outside = _source_coords(spec.ctm, out, size, scale, span)
    if spec.mode == "nearest":
        if spec.simple:
            near = np.ceil(coords) if scale < 1 else np.floor(coords)
        else:
            near = _round_nearest(coords, spec.nearest_mode)
        return np.clip(near, 0, size - 1).astype(np.int64).reshape(out, 1), None, outside
    if spec.mode == "linear" and not spec.antialias:
        coords = np.clip(coords, 0, size - 1)
    index, weights = _taps(
        coords, size, spec.mode, scale, spec.cubic_a, spec.antialias, spec.exclude
    )
    return index.astype(np.int64), weights, outside


def _const_tables(ctx: LowerCtx, spec: _Resize) -> list[_Taps]:
    """Tables of the axes the reference resamples, stored as weights (tap-major)."""
    shape, out = ctx.in_shape(0), ctx.out_shape(0)
    scales, spans = _const_params(ctx, spec)
    dt = ctx.y(0).dtype
    tables = []
    for d, (n, o, s, span) in enumerate(zip(shape, out, scales, spans)):
        if o == n and s == 1.0 and (spec.ctm != "tf_crop_and_resize" or span == (0.0, 1.0)):
            continue
        index, weight, outside = resize_tables(n, o, s, spec, span)
        if index.shape[1] > MAX_TAPS:
            raise LoweringDeclined(f"antialiased Resize by {s} takes over {MAX_TAPS} taps")
        tables.append(
            _Taps(
                d,
                o,
                index.shape[1],
                ctx.weight(index.T.copy(), "i64"),
                None if weight is None else ctx.weight(weight.T.astype(_NP_FLOAT[dt]), dt),
                None if outside is None else ctx.weight(outside.astype(np.bool_), "bool"),
            )
        )
    return tables


# --------------------------------------------------------------------------- run-time tables
def _runtime_tables(ctx: LowerCtx, spec: _Resize) -> list[_Taps]:
    """Tables of the listed axes computed by the kernel from scales, sizes and roi read at
    run time (any of them may also be constant). Axes of length 1 both sides are left out:
    every tap of theirs reads their one element."""
    shape, out = ctx.in_shape(0), ctx.out_shape(0)
    scales, bounds = _runtime_scales(ctx, spec)
    spans = _runtime_spans(ctx, spec)
    tables = []
    for d in sorted(spec.axes):
        if shape[d] == out[d] == 1:
            continue
        tables.append(_runtime_axis(ctx, spec, d, scales[d], spans.get(d), bounds[d]))
    return tables


def _runtime_scales(ctx: LowerCtx, spec: _Resize) -> tuple[dict[int, Expr], dict[int, float]]:
    """Per listed axis, the f64 scale (a kernel value) and a compile-time lower bound of
    it that data consistent with the static output shape respects (it sizes antialias
    filters; a smaller run-time scale only narrows the filter, never moves a read)."""
    shape, out, kb = ctx.in_shape(0), ctx.out_shape(0), ctx.kb
    kind, i = _scale_input(ctx)
    axes = spec.axes
    if prod(ctx.in_shape(i)) != len(axes):
        raise LoweringDeclined(f"{prod(ctx.in_shape(i))} {kind} for {len(axes)} axes")
    values = input_values(ctx, i, len(axes), "f64")
    if kind == "scales":
        scales = [kb.let(v, "sc") for v in values]
        bounds = [out[ax] / shape[ax] for ax in axes]
    else:
        scales = [kb.let(v / float(shape[ax]), "sc") for v, ax in zip(values, axes)]
        bounds = [out[ax] / shape[ax] for ax in axes]
        if spec.policy != "stretch":
            pick = minimum if spec.policy == "not_larger" else maximum
            common = scales[0]
            for s in scales[1:]:
                common = pick(common, s)
            scales = [kb.let(common, "sc")] * len(axes)
            bounds = [max((out[ax] - 0.5) / shape[ax] for ax in axes)] * len(axes)
    return dict(zip(axes, scales)), {ax: b * (1 - 1e-6) for ax, b in zip(axes, bounds)}


def _runtime_spans(ctx: LowerCtx, spec: _Resize) -> dict[int, tuple[Expr, Expr]]:
    """tf_crop_and_resize's (start, end) per listed axis as f32 kernel values."""
    if spec.ctm != "tf_crop_and_resize":
        return {}
    k = len(spec.axes)
    if not _roi_input(ctx, spec):
        return {ax: (Const(0.0, "f32"), Const(1.0, "f32")) for ax in spec.axes}
    roi = [ctx.kb.let(v, "roi") for v in input_values(ctx, 1, 2 * k, "f32")]
    return {ax: (roi[j], roi[j + k]) for j, ax in enumerate(spec.axes)}


def _tap_start(spec: _Resize, bound: float) -> int:
    """The first tap offset (``_taps``'s ``start``) for scales down to ``bound``."""
    support = 1.0 if spec.mode == "linear" else 2.0
    s = min(bound, 1.0) if spec.antialias else 1.0
    return int(math.floor(-support / s)) + 1 if s > 0 else -MAX_TAPS


def _runtime_axis(
    ctx: LowerCtx,
    spec: _Resize,
    d: int,
    scale: Expr,
    span: tuple[Expr, Expr] | None,
    bound: float,
) -> _Taps:
    """One serial loop over the axis's output positions writes its tables to workspace."""
    n, o = ctx.in_shape(0)[d], ctx.out_shape(0)[d]
    kb = ctx.kb
    start = _tap_start(spec, bound)
    taps = 1 if spec.mode == "nearest" else 2 - 2 * start
    if taps > MAX_TAPS:
        raise LoweringDeclined(f"antialiased Resize down to {bound:.4g} takes over {MAX_TAPS} taps")
    index = ctx.scratch("i64", taps * o)
    weight = None if spec.mode == "nearest" else ctx.scratch(ctx.y(0).dtype, taps * o)
    outside = ctx.scratch("bool", o) if span is not None else None
    identity = None
    if o == n:
        same = eq(scale, 1.0)
        if span is not None:
            same = logical_and(same, logical_and(eq(span[0], 0.0), eq(span[1], 1.0)))
        identity = kb.let(same, "same")
    sc = kb.let(Cast(scale, "f32"), "s32")
    with kb.loop(o, hint="o") as j:
        x = kb.let(_source_coord(spec.ctm, Cast(j, "f32"), n, o, sc, span), "x")
        if outside is not None:
            away = logical_or(x < 0.0, x > float(n - 1))
            outside[j] = away if identity is None else logical_and(away, Un("not", identity))
        if weight is None:
            near = _nearest(spec, Cast(x, "f64"), scale, n)
            index[j] = near if identity is None else Select(identity, j, near)
        else:
            _write_taps(ctx, spec, (index, weight), j, (Cast(x, "f64"), scale, start), (n, o))
    return _Taps(d, o, taps, index, weight, outside, identity)


def _source_coord(
    ctm: str, y: Expr, n: int, o: int, sc: Expr, span: tuple[Expr, Expr] | None
) -> Expr:
    """Input coordinate of output coordinate ``y`` in float32, operation for operation as
    the reference's ``_source_coords`` (so that nearest ties round alike)."""
    if ctm == "asymmetric":
        return y / sc
    if ctm == "tf_half_pixel_for_nn":
        return (y + 0.5) / sc
    if ctm == "pytorch_half_pixel" and o <= 1:
        return Const(0.0, "f32")
    if ctm in ("half_pixel", "pytorch_half_pixel"):
        return (y + 0.5) / sc - 0.5
    if ctm == "half_pixel_symmetric":
        offset = Const(n / 2, "f32") * (1.0 - Const(float(o), "f32") / (sc * float(n)))
        return offset + (y + 0.5) / sc - 0.5
    width = sc * float(n)
    last = Const(float(n - 1), "f32")
    if ctm == "align_corners":
        return Select(eq(width, 1.0), Const(0.0, "f32"), y * last / (width - 1.0))
    a, b = span  # type: ignore[misc]
    whole = (b - a) * last / 2.0 + a * last
    return Select(eq(width, 1.0), whole, y * (b - a) * last / (width - 1.0) + a * last)


def _nearest(spec: _Resize, x: Expr, scale: Expr, n: int) -> Expr:
    """The nearest source index of f64 coordinate ``x``, clamped into the axis before the
    conversion (so that no value, NaN included, gives an index outside it)."""
    if spec.simple:
        r = Select(scale < 1.0, call("ceil", x), call("floor", x))
    elif spec.nearest_mode == "round_prefer_ceil":
        r = call("floor", x + 0.5)
    elif spec.nearest_mode in ("floor", "ceil"):
        r = call(spec.nearest_mode, x)
    else:
        r = call("ceil", x - 0.5)
    return Cast(minimum(maximum(r, 0.0), float(n - 1)), "i64")


def _write_taps(
    ctx: LowerCtx,
    spec: _Resize,
    tables: tuple[BufferRef, BufferRef],
    j: Expr,
    at: tuple[Expr, Expr, int],
    dims: tuple[int, int],
) -> None:
    """Indices and normalized weights of output position ``j``'s taps, in float64 like the
    reference's ``_taps``. Coordinates far outside the axis are pulled in first: their taps
    all clip to the same edge element either way, and the conversion stays defined."""
    kb = ctx.kb
    (index, weight), (x, scale, start), (n, o) = tables, at, dims
    taps = 2 - 2 * start
    if spec.mode == "linear" and not spec.antialias:
        x = minimum(maximum(x, 0.0), float(n - 1))
    else:
        x = minimum(maximum(x, float(start - 2)), float(n + 1 - start))
    x = kb.let(x, "xc")
    base = kb.let(call("ceil", x) - 1.0, "base")
    frac = kb.let(x - base, "fr")
    first = kb.let(Cast(base, "i64"), "bi")
    s = kb.let(minimum(scale, 1.0), "aa") if spec.antialias else None
    ws = []
    for k in range(taps):
        t = Const(float(start + k), "f64") - frac
        w = _tap_weight(spec, t * s if s is not None else t)
        at_k = kb.let(first + (start + k), "at")
        if spec.exclude:
            w = Select(logical_or(at_k < 0, at_k >= n), Const(0.0, "f64"), w)
        ws.append(kb.let(w, "w"))
        index[j + k * o] = minimum(maximum(at_k, 0), n - 1)
    total = ws[0]
    for w in ws[1:]:
        total = total + w
    total = kb.let(total, "tot")
    total = kb.let(Select(eq(total, 0.0), Const(1.0, "f64"), total), "tot")
    for k, w in enumerate(ws):
        weight[j + k * o] = _as(w / total, weight.dtype)


def _tap_weight(spec: _Resize, t: Expr) -> Expr:
    """Linear (triangle) or Keys cubic weight at distance ``t``, as ``_cubic_weight``."""
    at = call("fabs", t)
    if spec.mode == "linear":
        return minimum(maximum(1.0 - at, 0.0), 1.0)
    a = spec.cubic_a
    near = ((a + 2) * at - (a + 3)) * at * at + 1.0
    far = ((a * at - 5 * a) * at + 8 * a) * at - 4 * a
    return Select(at <= 1.0, near, Select(at < 2.0, far, Const(0.0, "f64")))


# --------------------------------------------------------------------------- applying tables
def _resize_nearest(
    ctx: LowerCtx,
    shape: tuple[int, ...],
    out: tuple[int, ...],
    tables: list[_Taps],
    extrapolation: float,
) -> None:
    """A gather nest: resized dims read their source index from a table, others walk;
    an output position outside a tf_crop_and_resize roi takes the extrapolation value."""
    st = row_major_strides(shape)
    by_axis = {t.axis: t for t in tables}
    levels: list[tuple[int, int, _Taps | None]] = []  # (size, in stride, table)
    for d in range(len(shape)):
        if out[d] == 1 and d not in by_axis:
            continue
        if d not in by_axis and levels and levels[-1][2] is None:
            levels[-1] = (levels[-1][0] * out[d], st[d], None)
            continue
        levels.append((out[d], st[d], by_axis.get(d)))
    levels = levels or [(1, 1, None)]
    ost = row_major_strides(tuple(n for n, _, _ in levels))
    kb, x, y = ctx.kb, ctx.x(0), ctx.y(0)
    fill = literal(extrapolation, y.dtype)
    src: Expr = idx(0)
    dst: Expr = idx(0)
    away: Expr | None = None
    with ExitStack() as nest:
        for k, (n, stride, tab) in enumerate(levels):
            last = k == len(levels) - 1
            kind = "vector" if last else (ctx.outer_kind(prod(out)) if k == 0 else "serial")
            o = nest.enter_context(kb.loop(n, kind=kind, width=ctx.vector_width(n) if last else 1))
            at = tab.index[o] if tab is not None else o
            here = at * stride if stride != 1 else at
            if tab is not None and tab.outside is not None:
                away = tab.outside[o] if away is None else logical_or(away, tab.outside[o])
            if last:
                v = x[src + here]
                y[dst + o] = v if away is None else Select(away, fill, _as(v, y.dtype))
            else:
                src, dst = kb.let(src + here, "src"), kb.let(dst + o * ost[k], "dst")
                away = None if away is None else kb.let(away, "away")


def _resize_passes(
    ctx: LowerCtx, shape: tuple[int, ...], tables: list[_Taps], extrapolation: float
) -> None:
    """Linear/cubic: one pass per resized axis in increasing order (as the reference),
    through workspace buffers; an axis that may be unscaled at run time is copied then."""
    kb, dt = ctx.kb, ctx.y(0).dtype
    src, cur = ctx.x(0), list(shape)
    for k, tab in enumerate(tables):
        nxt = cur.copy()
        nxt[tab.axis] = tab.out
        dst = ctx.y(0) if k == len(tables) - 1 else ctx.scratch(dt, prod(nxt))
        if tab.identity is None:
            _resize_pass(ctx, src, dst, tuple(cur), tab, extrapolation)
        else:
            with kb.if_(tab.identity):
                copy_all(ctx, src, dst, prod(cur))
            with kb.else_():
                _resize_pass(ctx, src, dst, tuple(cur), tab, extrapolation)
        src, cur = dst, nxt


def _resize_pass(
    ctx: LowerCtx,
    src: BufferRef,
    dst: BufferRef,
    shape: tuple[int, ...],
    tab: _Taps,
    extrapolation: float,
) -> None:
    """``dst`` = ``src`` resampled along ``tab.axis``: a weighted sum of the taps. Along the
    last axis the vector walks output positions (tables load as vectors, data lane by
    lane); elsewhere it walks the contiguous rows after the axis."""
    d, o, taps = tab.axis, tab.out, tab.taps
    n, inner, outer = shape[d], prod(shape[d + 1 :]), prod(shape[:d])
    kb, dt = ctx.kb, dst.dtype
    weight = tab.weight
    assert weight is not None
    kind = ctx.outer_kind(outer * o * inner * taps)
    fill = literal(extrapolation, dt)

    def finish(at: Expr, j: Expr, v: Expr) -> None:
        dst[at] = v if tab.outside is None else Select(tab.outside[j], fill, v)

    if inner == 1:
        with kb.loop(outer, kind=kind) as a:
            sb, db = kb.let(a * n, "sb"), kb.let(a * o, "db")
            with kb.loop(o, kind="vector", width=ctx.vector_width(o)) as j:
                finish(db + j, j, _tap_sum(kb, taps, dt, lambda k: weight[j + k * o]
                                           * _as(src[sb + tab.index[j + k * o]], dt)))
        return
    with kb.loop(outer * o, kind=kind) as t:
        j = kb.let(t % o, "j")
        sb = kb.let((t // o) * (n * inner), "sb")
        db = kb.let(t * inner, "db")
        with kb.loop(inner, kind="vector", width=ctx.vector_width(inner)) as c:
            finish(db + c, j, _tap_sum(kb, taps, dt, lambda k: weight[j + k * o]
                                       * _as(src[sb + tab.index[j + k * o] * inner + c], dt)))


def _tap_sum(
    kb: KernelBuilder, taps: int, dt: str, term: Callable[[Expr | int], Expr]
) -> Expr:
    """``term(0) + term(1) + ...`` in tap order: unrolled for a few taps, else a rolled loop
    into an accumulator."""
    if taps <= 8:
        total = term(0)
        for k in range(1, taps):
            total = total + term(k)
        return total
    acc = kb.local(dt, Const(0.0, dt), "acc")
    with kb.loop(taps, kind="rolled") as k:
        kb.assign(acc, acc + term(k))
    return acc


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
