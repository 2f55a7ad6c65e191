"""Spatial sampling ops: GridSample, AffineGrid, Col2Im, RoiAlign, MaxUnpool, DeformConv.

Each reads its data at addresses computed from run-time values (grid coordinates, region
boxes, batch indices, unpooling indices, block shapes, offsets). The rule of
``indexing.safe_index`` holds throughout: a coordinate is clamped into the image *in the
float domain* before it becomes an integer (``max``/``min`` are compare-and-select, so a
NaN clamps to the low end and no float → int conversion ever sees a value out of range),
and integer indices read from data are wrapped and clamped. A bad value reads a wrong
element, never outside a buffer. Taps outside the image (zero padding, RoiAlign's empty
samples) load a clamped in-bounds element and discard it with ``Select``.

Arithmetic follows onnxruntime's kernels (which the op's numpy reference matches): the
data's float type, the same order of operations, nearest rounding half to even, cubic
weights of Keys with a = -0.75, reflection by whole periods. Loops are plain nests:
vector loops walk the contiguous output axis where there is one, data loads go lane by
lane.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from torsh_gen.backends.kernel.builder import BufferRef, KernelBuilder
from torsh_gen.backends.kernel.ir import (
    Cast,
    Const,
    Expr,
    Select,
    call,
    eq,
    idx,
    is_float,
    logical_and,
    logical_or,
    maximum,
    minimum,
)
from torsh_gen.backends.kernel.lower import (
    LowerCtx,
    LoweringDeclined,
    lowers,
    prod,
    row_major_strides,
)
from torsh_gen.backends.kernel.lower.indexing import check_shapes, safe_index
from torsh_gen.backends.kernel.lower.shape import expect_out
from torsh_gen.ops.nn import conv_pads, spatial_params

#: Keys' cubic convolution coefficient of GridSample (fixed by the spec).
CUBIC_A = -0.75
#: Largest adaptive RoiAlign sampling grid per bin axis (keeps the float → int exact).
ROI_GRID_CAP = float(1 << 24)


# --------------------------------------------------------------------------- helpers
def _f(value: float, dtype: str) -> Const:
    return Const(float(value), dtype)


def _as(e: Expr, dtype: str) -> Expr:
    return e if e.dtype == dtype else Cast(e, dtype)


def clamp_f(x: Expr, lo: float, hi: float) -> Expr:
    """``x`` clamped into [lo, hi] in its float type; NaN gives ``lo``."""
    return minimum(maximum(x, _f(lo, x.dtype)), _f(hi, x.dtype))


def float_index(x: Expr, size: int) -> Expr:
    """An i64 index in [0, size - 1] from a float position (truncated after clamping)."""
    return Cast(clamp_f(x, 0.0, size - 1.0), "i64")


def float_dtype(ctx: LowerCtx, i: int, what: str) -> str:
    """The element type of input ``i``; declines unless it is f32 or f64."""
    dt = ctx.in_dtypes[i]
    if dt not in ("f32", "f64"):
        raise LoweringDeclined(f"{what} is lowered for float data, not {dt}")
    return dt


def unflatten(kb: KernelBuilder, flat: Expr, dims: list[Expr]) -> list[Expr]:
    """Row-major coordinates of ``flat`` over ``dims`` (expressions, each at least 1)."""
    out: list[Expr] = []
    rest = flat
    for d in reversed(dims[1:]):
        out.append(kb.let(rest % d, "u"))
        rest = kb.let(rest // d, "r")
    out.append(rest)
    return out[::-1]


def all_of(conds: list[Expr]) -> Expr | None:
    """The conjunction of ``conds`` (None when there are none)."""
    out: Expr | None = None
    for c in conds:
        out = c if out is None else logical_and(out, c)
    return out


# --------------------------------------------------------------------------- GridSample
@dataclass
class Tap:
    """One interpolation tap along an axis: an in-bounds index, its weight (None: 1) and
    whether it lies inside the image (None: always, the padding mode moved it there)."""

    index: Expr
    weight: Expr | None
    inside: Expr | None


def reflect(kb: KernelBuilder, x: Expr, lo: float, hi: float) -> Expr:
    """``x`` reflected off [lo, hi] by whole periods until inside (onnxruntime's
    ``GsReflect``, with the period count as a float so huge values stay defined)."""
    dt = x.dtype
    span = hi - lo
    if span <= 0:
        return _f(lo, dt)
    below = kb.let(x < lo, "bl")
    dist = kb.let(Select(below, _f(lo, dt) - x, x - hi), "dx")
    periods = kb.let(call("floor", dist / _f(span, dt)), "np")
    rest = kb.let(dist - periods * span, "rm")
    even = eq(periods - call("floor", periods * 0.5) * 2.0, _f(0.0, dt))
    low_side = Select(even, rest + lo, _f(hi, dt) - rest)
    high_side = Select(even, _f(hi, dt) - rest, rest + lo)
    return kb.let(Select(below, low_side, Select(x > hi, high_side, x)), "rf")


def _cubic_weights(kb: KernelBuilder, t: Expr) -> list[Expr]:
    """The four Keys weights (a = -0.75) of taps -1, 0, 1, 2 at fraction ``t``."""
    a = CUBIC_A
    one = _f(1.0, t.dtype)

    def far(s: Expr) -> Expr:
        return ((s * a - 5 * a) * s + 8 * a) * s - 4 * a

    def near(s: Expr) -> Expr:
        return ((s * (a + 2) - (a + 3)) * s) * s + 1.0

    u = kb.let(one - t, "u")
    return [kb.let(w, "cw") for w in (far(t + 1.0), near(t), near(u), far(u + 1.0))]


def grid_axis_taps(
    kb: KernelBuilder, g: Expr, size: int, mode: str, padding: str, align: bool
) -> list[Tap]:
    """Taps along one image axis of length ``size`` for the normalized coordinate ``g``."""
    lo, hi = (0.0, size - 1.0) if align else (-0.5, size - 0.5)
    if align:
        x = kb.let((g + 1.0) / 2.0 * float(size - 1), "gx")
    else:
        x = kb.let(((g + 1.0) * float(size) - 1.0) / 2.0, "gx")
    if mode == "nearest":
        x = kb.let(call("roundeven", x), "gx")
    if mode != "cubic":  # cubic pads each tap, not the coordinate (as onnxruntime does)
        if padding == "border":
            outside = logical_or(x < lo, x > hi)
            x = kb.let(Select(outside, clamp_f(x, 0.0, size - 1.0), x), "gx")
        elif padding == "reflection":
            x = reflect(kb, x, lo, hi)
    return axis_taps(kb, x, size, mode, padding, (lo, hi))


def axis_taps(
    kb: KernelBuilder, x: Expr, size: int, mode: str, padding: str, bounds: tuple[float, float]
) -> list[Tap]:
    """Nearest, linear or cubic taps at the pixel coordinate ``x``, each padded on its own
    (``bounds``: the interval reflection mirrors at)."""
    if mode == "nearest":
        base, offsets, weights = x, [0], [None]
    else:
        base = kb.let(call("floor", x), "gb")
        t = kb.let(x - base, "gt")
        if mode == "linear":
            offsets, weights = [0, 1], [kb.let(_f(1.0, x.dtype) - t, "lw"), t]
        else:
            offsets, weights = [-1, 0, 1, 2], _cubic_weights(kb, t)
    taps = []
    for o, w in zip(offsets, weights):
        pos = kb.let(base + float(o), "gp") if o else base
        inside = None
        if padding == "reflection":
            pos = reflect(kb, pos, *bounds)
        elif padding == "zeros":
            inside = kb.let(logical_and(pos >= 0.0, pos <= size - 1.0), "in")
        taps.append(Tap(kb.let(float_index(pos, size), "gi"), w, inside))
    return taps


def interpolate(
    x: BufferRef, base: Expr, taps: list[list[Tap]], strides: list[int], inside: Expr | None = None
) -> Expr:
    """Sum over the taps of every axis of weight products times data (axis 0 outermost, as
    onnxruntime nests its interpolation); a tap outside the image contributes zero."""
    if not taps:
        v = x[base]
        return v if inside is None else Select(inside, v, Const(0.0, x.dtype))
    total: Expr | None = None
    for tap in taps[0]:
        ok = all_of([c for c in (inside, tap.inside) if c is not None])
        inner = interpolate(x, base + tap.index * strides[0], taps[1:], strides[1:], ok)
        term = inner if tap.weight is None else tap.weight * inner
        total = term if total is None else total + term
    assert total is not None
    return total


_GRID_MODES = {"bilinear": "linear", "linear": "linear", "nearest": "nearest",
               "bicubic": "cubic", "cubic": "cubic"}


@lowers("GridSample")
def lower_grid_sample(ctx: LowerCtx) -> None:
    """y[n, c, p] = interpolation of x[n, c] at grid[n, p] (N-D; every mode and padding).

    One job per output row: the vector loop walks the row, computes each position's taps
    once and then fills every channel."""
    xs, gs = ctx.in_shape(0), ctx.in_shape(1)
    dt = float_dtype(ctx, 0, "GridSample")
    a = ctx.attrs
    mode = _GRID_MODES.get(a.get("mode", "linear"))
    padding = a.get("padding_mode", "zeros")
    if mode is None or padding not in ("zeros", "border", "reflection"):
        raise LoweringDeclined(f"GridSample mode {a.mode!r} padding {padding!r}")
    r = len(xs) - 2
    if r < 1 or len(gs) != r + 2 or gs[-1] != r or gs[0] != xs[0]:
        raise LoweringDeclined(f"grid {gs} does not match the image {xs}")
    nb, c, dims = xs[0], xs[1], list(xs[2:])
    out_sp = list(gs[1:-1])
    expect_out(ctx, (nb, c, *out_sp))
    if prod(ctx.out_shape(0)) == 0:
        return
    if prod(dims) == 0:
        raise LoweringDeclined("GridSample of an empty image")
    align = bool(a.get("align_corners", 0))
    kb, x, grid, y = ctx.kb, ctx.x(0), ctx.x(1), ctx.y(0)
    npos, row = prod(out_sp), out_sp[-1]
    rows = nb * (npos // row)
    plane = prod(dims)
    with kb.loop(rows, kind=ctx.outer_kind(nb * c * npos * 4**r if mode == "cubic" else nb * c * npos)) as t:
        n = kb.let(t // (npos // row), "n") if nb > 1 else idx(0)
        first = kb.let(t * row - n * npos, "p0")  # position of the row's first element
        with kb.loop(row, kind="vector", width=ctx.vector_width(row)) as w:
            p = kb.let(first + w, "p")
            at = kb.let((n * npos + p) * r, "g")
            taps = [
                grid_axis_taps(kb, kb.let(_as(grid[at + (r - 1 - i)], dt), "gn"), d, mode, padding, align)
                for i, d in enumerate(dims)
            ]
            with kb.loop(c, hint="c") as ch:
                nc = kb.let(n * c + ch, "nc")
                y[nc * npos + p] = interpolate(x, nc * plane, taps, row_major_strides(tuple(dims)))


# --------------------------------------------------------------------------- AffineGrid
def affine_axis(d: int, align: bool) -> np.ndarray:
    """Normalized coordinates of the d positions of one axis (the op's reference)."""
    if align:
        return np.linspace(-1.0, 1.0, d) if d > 1 else np.zeros(d)
    return (2 * np.arange(d) + 1) / d - 1


@lowers("AffineGrid")
def lower_affine_grid(ctx: LowerCtx) -> None:
    """grid[n, pos, j] = theta[n, j, :r] · (x, y, z of pos) + theta[n, j, r].

    The output size is static (the output shape), so per-axis coordinates are tables."""
    ts = ctx.in_shape(0)
    dt = float_dtype(ctx, 0, "AffineGrid")
    out = ctx.out_shape(0)
    r = len(out) - 2
    if r < 1 or ts != (out[0], r, r + 1) or out[-1] != r:
        raise LoweringDeclined(f"theta {ts} does not match the grid {out}")
    dims = list(out[1:-1])
    if prod(out) == 0:
        return
    align = bool(ctx.attrs.get("align_corners", 0))
    # tables in x, y, z order: the last spatial axis first
    tables = [ctx.weight(affine_axis(d, align), dt) for d in reversed(dims)]
    kb, theta, y = ctx.kb, ctx.x(0), ctx.y(0)
    npos, row = prod(dims), dims[-1]
    outer = out[0] * (npos // row)
    with kb.loop(outer, kind=ctx.outer_kind(prod(out) * (r + 1))) as t:
        n = kb.let(t // (npos // row), "n") if out[0] > 1 else idx(0)
        lead = unflatten(kb, t - n * (npos // row), [idx(d) for d in dims[:-1]]) if r > 1 else []
        rest = [kb.let(tables[r - 1 - k][lead[k]], "co") for k in range(r - 1)]  # axes 0..r-2
        th = [kb.let(theta[n * (r * (r + 1)) + j], "th") for j in range(r * (r + 1))]
        with kb.loop(row, kind="vector", width=ctx.vector_width(row)) as w:
            coords = [tables[0][w]] + rest[::-1]  # x (last axis), then y, z
            dst = kb.let((t * row + w) * r, "dst")
            for j in range(r):
                v: Expr = th[j * (r + 1) + r]
                for k in range(r):
                    v = th[j * (r + 1) + k] * coords[k] + v
                y[dst + j] = v


# --------------------------------------------------------------------------- Col2Im
def _block_dims(ctx: LowerCtx, img: list[int], k_total: int, length: int) -> list[Expr]:
    """The block shape: literals when constant (declines unless they hold the columns' rows
    and positions), else read at run time and clamped to [1, K]."""
    n = len(img)
    v = ctx.const(2)
    if v is None:
        bs = ctx.x(2)
        top = idx(max(k_total, 1))
        return [ctx.kb.let(minimum(maximum(_as(bs[i], "i64"), idx(1)), top), "bk") for i in range(n)]
    block = [int(b) for b in np.asarray(v).reshape(-1)]
    strides, dilations, pads = spatial_params(ctx.attrs, n)
    if len(block) != n or prod(block) != k_total:
        raise LoweringDeclined(f"block_shape {block} does not hold {k_total} rows per channel")
    if prod(conv_pads(img, block, strides, dilations, pads)[2]) != length:
        raise LoweringDeclined(f"block_shape {block} does not give {length} positions")
    return [idx(b) for b in block]


@lowers("Col2Im")
def lower_col2im(ctx: LowerCtx) -> None:
    """Scatter-add every column element to its image position, one job per (n, c) plane.

    The image shape is the output's; the block shape may be read at run time (the
    conformance models pass it as an input): every position is checked against the image,
    so a block shape that disagrees with the columns writes nothing out of place."""
    xs, out = ctx.in_shape(0), ctx.out_shape(0)
    if len(xs) != 3 or len(out) < 3 or out[0] != xs[0] or out[1] == 0:
        raise LoweringDeclined(f"columns {xs} do not match the image {out}")
    if ctx.in_dtypes[0] == "bool":
        raise LoweringDeclined("Col2Im of bool data")
    img = list(out[2:])
    n = len(img)
    nb, c, length = out[0], out[1], xs[2]
    check_shapes(ctx, xs[1] % c == 0, f"{xs[1]} column rows are not a multiple of C={c}")
    k_total = xs[1] // c
    if prod(out) == 0:
        return
    block = _block_dims(ctx, img, k_total, length)
    strides, dilations, pads = spatial_params(ctx.attrs, n)
    kb, x, y = ctx.kb, ctx.x(0), ctx.y(0)
    counts: list[Expr] = []
    for i in range(n):
        span = img[i] + pads[i] + pads[i + n] - 1
        cnt = (span - (block[i] - 1) * dilations[i]) // strides[i] + 1
        counts.append(kb.let(minimum(maximum(cnt, idx(1)), idx(max(length, 1))), "nl"))
    size = prod(img)
    zero = Const(0.0, y.dtype) if is_float(y.dtype) else Const(0, y.dtype)
    with kb.loop(nb * c, kind=ctx.outer_kind(prod(xs) + prod(out)), hint="nc") as nc:
        base = kb.let(nc * size, "pl")
        with kb.loop(size, kind="vector", width=ctx.vector_width(size)) as q:
            y[base + q] = zero
        with kb.loop(k_total, hint="k") as k:
            kc = unflatten(kb, k, block)
            src = kb.let((nc * k_total + k) * length, "src")
            with kb.loop(length, hint="l") as col:
                lc = unflatten(kb, col, counts)
                pos = [
                    kb.let(lc[i] * strides[i] - pads[i] + kc[i] * dilations[i], "ps")
                    for i in range(n)
                ]
                ok = all_of([logical_and(pos[i] >= 0, pos[i] < img[i]) for i in range(n)])
                flat: Expr = pos[0]
                for i in range(1, n):
                    flat = flat * img[i] + pos[i]
                with kb.if_(ok):  # type: ignore[arg-type]
                    at = kb.let(base + flat, "at")
                    y[at] = y[at] + x[src + col]


# --------------------------------------------------------------------------- MaxUnpool
@lowers("MaxUnpool")
def lower_max_unpool(ctx: LowerCtx) -> None:
    """Zero the output, then write each value at the flat position its index names.

    Indices address the default unpooled layout (N, C, (in - 1) * stride + kernel - pads);
    a given output_shape pads that layout at the end of each axis (the op's reference and
    the ONNX test data). Serial, so repeated indices keep the last value."""
    xs, out = ctx.in_shape(0), ctx.out_shape(0)
    kernel = list(ctx.attrs.kernel_shape or [])
    n = len(kernel)
    if len(xs) != n + 2 or len(out) != n + 2 or tuple(out[:2]) != tuple(xs[:2]):
        raise LoweringDeclined(f"input {xs} and output {out} do not match kernel_shape {kernel}")
    check_shapes(ctx, prod(ctx.in_shape(1)) == prod(xs), "indices and values differ in size")
    strides, _, pads = spatial_params(ctx.attrs, n)
    sp = [(xs[2 + i] - 1) * strides[i] + kernel[i] - pads[i] - pads[i + n] for i in range(n)]
    kb, x, ind, y = ctx.kb, ctx.x(0), ctx.x(1), ctx.y(0)
    total = prod(out)
    if total == 0:
        return
    zero = Const(0.0, y.dtype) if is_float(y.dtype) else Const(0, y.dtype)
    with kb.loop(total, kind="vector", width=ctx.vector_width(total)) as q:
        y[q] = zero
    inferred = prod(xs[:2]) * prod(sp)
    if prod(xs) == 0 or inferred <= 0:
        return
    same = list(out[2:]) == sp
    with kb.loop(prod(xs), hint="e") as e:
        f = kb.let(safe_index(kb, ind[e], inferred), "f")
        if same:
            y[f] = x[e]
        else:  # the default layout's coordinates, kept where the output has them
            coords = unflatten(kb, f, [idx(prod(xs[:2]))] + [idx(s) for s in sp])
            inside = all_of([coords[1 + i] < out[2 + i] for i in range(n)])
            flat: Expr = coords[0]
            for i in range(n):
                flat = flat * out[2 + i] + coords[1 + i]
            with kb.if_(inside):  # type: ignore[arg-type]
                y[flat] = x[e]


# --------------------------------------------------------------------------- RoiAlign
@dataclass
class RoiSample:
    """One axis of a RoiAlign sample: low/high indices and their weights."""

    low: Expr
    high: Expr
    w_low: Expr
    w_high: Expr


def roi_axis(kb: KernelBuilder, pos: Expr, size: int) -> RoiSample:
    """Bilinear taps at ``pos`` along an axis of ``size`` (onnxruntime's pre-calculation:
    outside [-1, size] the sample is empty, below 0 it sits at 0, at the last pixel both
    taps coincide)."""
    dt = pos.dtype
    valid = kb.let(logical_and(pos >= -1.0, pos <= float(size)), "ok")
    q = kb.let(clamp_f(pos, 0.0, size - 1.0), "q")
    low = kb.let(Cast(q, "i64"), "lo")
    frac = kb.let(q - Cast(low, dt), "fr")
    zero = _f(0.0, dt)
    return RoiSample(
        low,
        minimum(low + 1, idx(size - 1)),
        kb.let(Select(valid, _f(1.0, dt) - frac, zero), "wl"),
        kb.let(Select(valid, frac, zero), "wh"),
    )


@lowers("RoiAlign")
def lower_roi_align(ctx: LowerCtx) -> None:
    """Average or max of bilinear samples per output bin, one job per region.

    The output doubles as the per-channel accumulator: each bin's channels are reset, then
    every sample (positions computed once) updates them. Adaptive sampling grids
    (sampling_ratio 0) are loop bounds computed from the region's size."""
    xs, rs = ctx.in_shape(0), ctx.in_shape(1)
    dt = float_dtype(ctx, 0, "RoiAlign")
    a = ctx.attrs
    if len(xs) != 4 or len(rs) != 2 or rs[1] != 4:
        raise LoweringDeclined(f"RoiAlign needs X (N, C, H, W) and rois (R, 4), got {xs}, {rs}")
    mode = a.get("mode", "avg")
    ctm = a.get("coordinate_transformation_mode", "output_half_pixel")
    if mode not in ("avg", "max") or ctm not in ("half_pixel", "output_half_pixel"):
        raise LoweringDeclined(f"RoiAlign mode {mode!r} coordinates {ctm!r}")
    ph, pw = int(a.get("output_height", 1)), int(a.get("output_width", 1))
    nr, (nb, c, h, w) = rs[0], xs
    expect_out(ctx, (nr, c, ph, pw))
    check_shapes(ctx, prod(ctx.in_shape(2)) == nr, "batch_indices must have one entry per region")
    if nr * c * ph * pw == 0:
        return
    if nb * h * w == 0:
        raise LoweringDeclined("RoiAlign over an empty image")
    kb, x, rois, bi, y = ctx.kb, ctx.x(0), ctx.x(1), ctx.x(2), ctx.y(0)
    half = ctm == "half_pixel"
    ratio = int(a.get("sampling_ratio", 0))
    scale = float(a.get("spatial_scale", 1.0))
    bins = ph * pw
    with kb.loop(nr, kind=ctx.outer_kind(nr * c * bins * 16)) as r:
        b = kb.let(safe_index(kb, bi[r], nb), "b")
        box = [_as(rois[r * 4 + k], dt) * scale - (0.5 if half else 0.0) for k in range(4)]
        x0, y0, x1, y1 = (kb.let(v, "bx") for v in box)
        rw, rh = x1 - x0, y1 - y0
        if not half:
            rw, rh = maximum(rw, 1.0), maximum(rh, 1.0)
        rw, rh = kb.let(rw, "rw"), kb.let(rh, "rh")
        bh, bw = kb.let(rh / float(ph), "bh"), kb.let(rw / float(pw), "bw")
        gh = _roi_grid(kb, rh, ph, ratio)
        gw = _roi_grid(kb, rw, pw, ratio)
        count = kb.let(Cast(maximum(gh * gw, idx(1)), dt), "cnt")
        planes = kb.let(b * (c * h * w), "pl")
        with kb.loop(bins, hint="bin") as q:
            iph, ipw = kb.let(q // pw, "ph"), kb.let(q % pw, "pw")
            dst = kb.let(r * (c * bins) + q, "dst")
            with kb.loop(c, hint="c") as ch:
                y[dst + ch * bins] = _f(0.0, dt)
            with kb.loop(gh, hint="iy") as iy:
                sy = _roi_pos(kb, y0, iph, bh, iy, gh, h)
                with kb.loop(gw, hint="ix") as ix:
                    sx = _roi_pos(kb, x0, ipw, bw, ix, gw, w)
                    first = logical_and(eq(iy, 0), eq(ix, 0)) if mode == "max" else None
                    _roi_accumulate(kb, x, y, planes, dst, (sy, sx), (c, h * w, bins, w), first)
            if mode == "avg":
                with kb.loop(c, hint="c") as ch:
                    at = kb.let(dst + ch * bins, "at")
                    y[at] = y[at] / count


def _roi_grid(kb: KernelBuilder, extent: Expr, bins: int, ratio: int) -> Expr:
    """Samples per bin along one axis: the ratio, or ceil(extent / bins) (capped, >= 0)."""
    if ratio > 0:
        return idx(ratio)
    return kb.let(Cast(clamp_f(call("ceil", extent / float(bins)), 0.0, ROI_GRID_CAP), "i64"), "gr")


def _roi_pos(
    kb: KernelBuilder, start: Expr, bin_: Expr, size: Expr, k: Expr, grid: Expr, extent: int
) -> RoiSample:
    """Sample ``k`` of bin ``bin_``: start + bin * size + (k + 0.5) * size / grid."""
    dt = start.dtype
    pos = start + Cast(bin_, dt) * size + (Cast(k, dt) + 0.5) * size / Cast(grid, dt)
    return roi_axis(kb, kb.let(pos, "sp"), extent)


def _roi_accumulate(
    kb: KernelBuilder,
    x: BufferRef,
    y: BufferRef,
    planes: Expr,
    dst: Expr,
    sample: tuple[RoiSample, RoiSample],
    geo: tuple[int, int, int, int],
    first: Expr | None,
) -> None:
    """Add (avg) or max (``first``: the bin's first sample replaces) one sample into every
    channel of a bin."""
    sy, sx = sample
    c, plane, bins, w = geo
    corners = [
        (kb.let(sy.low * w + sx.low, "a"), kb.let(sy.w_low * sx.w_low, "wa")),
        (kb.let(sy.low * w + sx.high, "a"), kb.let(sy.w_low * sx.w_high, "wa")),
        (kb.let(sy.high * w + sx.low, "a"), kb.let(sy.w_high * sx.w_low, "wa")),
        (kb.let(sy.high * w + sx.high, "a"), kb.let(sy.w_high * sx.w_high, "wa")),
    ]
    with kb.loop(c, hint="c") as ch:
        src = kb.let(planes + ch * plane, "src")
        at = kb.let(dst + ch * bins, "at")
        vals = [wt * x[src + off] for off, wt in corners]
        if first is None:
            y[at] = y[at] + (((vals[0] + vals[1]) + vals[2]) + vals[3])
        else:
            best: Expr = vals[0]
            for v in vals[1:]:
                best = kb.let(best, "m")
                best = Select(best < v, v, best)  # std::max(best, v)
            best = kb.let(best, "m")
            old = y[at]
            y[at] = Select(first, best, Select(old < best, best, old))


# --------------------------------------------------------------------------- DeformConv
@dataclass(frozen=True)
class DeformGeometry:
    """DeformConv's static shape: images, channels, groups, kernel and output positions."""

    nb: int
    c: int
    m: int
    group: int
    og: int
    dims: tuple[int, ...]
    kernel: tuple[int, ...]
    out: tuple[int, ...]
    strides: tuple[int, ...]
    dilations: tuple[int, ...]
    pads: tuple[int, ...]


def _deform_geometry(ctx: LowerCtx) -> DeformGeometry:
    """Shapes and attributes of a DeformConv node; declines where they do not fit."""
    xs, ws = ctx.in_shape(0), ctx.in_shape(1)
    r = len(xs) - 2
    a = ctx.attrs
    kernel = list(a.kernel_shape or ws[2:])
    strides, dilations, pads = spatial_params(a, r)
    group, og = int(a.get("group", 1)), int(a.get("offset_group", 1))
    nb, c, m = xs[0], xs[1], ws[0]
    ok = (
        r >= 1 and group > 0 and og > 0 and c % group == 0 and c % og == 0 and m % group == 0
        and len(ws) == r + 2 and ws[1] == c // group and list(ws[2:]) == kernel
    )
    if not ok:
        raise LoweringDeclined(f"DeformConv weights {ws} do not fit input {xs} (groups {group}/{og})")
    out = conv_pads(xs[2:], kernel, strides, dilations, pads)[2]
    k = prod(kernel)
    check_shapes(ctx, ctx.in_shape(2) == (nb, og * k * r, *out), f"offset {ctx.in_shape(2)} does not fit")
    if ctx.has(3):
        check_shapes(ctx, prod(ctx.in_shape(3)) == m, "bias needs one value per output channel")
    if ctx.has(4):
        check_shapes(ctx, ctx.in_shape(4) == (nb, og * k, *out), f"mask {ctx.in_shape(4)} does not fit")
    expect_out(ctx, (nb, m, *out))
    return DeformGeometry(nb, c, m, group, og, tuple(xs[2:]), tuple(kernel), tuple(out),
                          tuple(strides), tuple(dilations), tuple(pads[:r]))


def _deform_columns(ctx: LowerCtx, geo: DeformGeometry, n: Expr, cols: BufferRef) -> None:
    """cols[c, k, p] = mask * bilinear sample of x[n, c] at tap k of position p moved by its
    offset (zero outside the image); positions and weights are shared by the channels of
    an offset group."""
    kb, x, off = ctx.kb, ctx.x(0), ctx.x(2)
    mask = ctx.x(4) if ctx.has(4) else None
    dt = x.dtype
    r, k, npos = len(geo.dims), prod(geo.kernel), prod(geo.out)
    cg = geo.c // geo.og
    plane = prod(geo.dims)
    with kb.loop(geo.og * k, kind=ctx.outer_kind(geo.c * k * npos * 2**r), hint="gk") as gk:
        g, kk = kb.let(gk // k, "g"), kb.let(gk % k, "kk")
        kc = unflatten(kb, kk, [idx(d) for d in geo.kernel])
        row = kb.let(n * geo.og * k + gk, "row")  # (n, g, kk) row of the mask; offsets * r
        with kb.loop(npos, kind="vector", width=ctx.vector_width(npos)) as p:
            oc = unflatten(kb, p, [idx(d) for d in geo.out])
            taps = []
            for i in range(r):
                start = oc[i] * geo.strides[i] - geo.pads[i] + kc[i] * geo.dilations[i]
                pos = kb.let(Cast(start, dt) + _as(off[(row * r + i) * npos + p], dt), "pos")
                taps.append(axis_taps(kb, pos, geo.dims[i], "linear", "zeros", (0.0, 0.0)))
            scale = kb.let(_as(mask[row * npos + p], dt), "mk") if mask is not None else None
            strides = row_major_strides(geo.dims)
            with kb.loop(cg, hint="c") as cl:
                ch = kb.let(g * cg + cl, "ch")
                v = interpolate(x, (n * geo.c + ch) * plane, taps, strides)
                cols[(ch * k + kk) * npos + p] = v * scale if scale is not None else v


@lowers("DeformConv")
def lower_deform_conv(ctx: LowerCtx) -> None:
    """Per image: sampled columns into scratch (im2col with learned offsets), then the
    grouped product with the weights plus bias, vectorized over output positions."""
    float_dtype(ctx, 0, "DeformConv")
    geo = _deform_geometry(ctx)
    kb, w, y = ctx.kb, ctx.x(1), ctx.y(0)
    dt = y.dtype
    bias = ctx.x(3) if ctx.has(3) else None
    k, npos = prod(geo.kernel), prod(geo.out)
    cg, mg = geo.c // geo.group, geo.m // geo.group
    if prod(ctx.out_shape(0)) == 0:
        return
    if prod(geo.dims) == 0 or geo.c * k == 0:
        raise LoweringDeclined("DeformConv over an empty image or kernel")
    cols = ctx.scratch(dt, geo.c * k * npos)
    with kb.loop(geo.nb, hint="n") as n:
        _deform_columns(ctx, geo, n, cols)
        with kb.loop(geo.m, kind=ctx.outer_kind(geo.m * npos * cg * k), hint="m") as mo:
            first = kb.let((mo // mg) * (cg * k), "j0")  # the group's first column row
            with kb.loop(npos, kind="vector", width=ctx.vector_width(npos)) as p:
                acc = kb.local(dt, _as(bias[mo], dt) if bias is not None else _f(0.0, dt))
                with kb.loop(cg * k, hint="j") as j:
                    kb.assign(acc, acc + _as(w[mo * (cg * k) + j], dt) * cols[(first + j) * npos + p])
                y[(n * geo.m + mo) * npos + p] = acc


__all__ = ["axis_taps", "clamp_f", "float_index", "grid_axis_taps", "interpolate", "reflect", "unflatten"]
