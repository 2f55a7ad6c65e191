"""Sampling ops → Relax: GridSample, AffineGrid, RoiAlign, Col2Im, MaxUnpool, DeformConv.

Each is one TE kernel (or a few) that reads its input at data-dependent positions.
Every such position is clamped to a small window around the input, as a float, before
it is converted to an integer, so NaN or huge coordinates can never make a kernel read
outside its input; out-of-range taps then read a clamped index and are masked.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from torsh_gen.backends.tvm.convert import Ctx, Decline, converts, str_attr
from torsh_gen.ir.graph import Node

_FLOATS = ("float16", "bfloat16", "float32", "float64")


# -- small helpers ------------------------------------------------------------------------

def _work_dtype(*dtypes: str) -> str:
    """The float type the arithmetic runs in: float64 when any operand is, else float32
    (half types are widened, as onnxruntime does)."""
    return "float64" if "float64" in dtypes else "float32"


def _to_index(x: Any, lo: int, hi: int) -> Any:
    """A float TIR coordinate as an int64 index, first clamped to [lo, hi] (NaN → lo):
    the clamp comes before the conversion, which is undefined outside int range."""
    from tvm import tirx

    dt = str(x.expr_ty())
    v = tirx.Select(x == x, x, tirx.const(lo, dt))
    v = tirx.max(tirx.min(v, tirx.const(hi, dt)), tirx.const(lo, dt))
    return tirx.Cast("int64", v)


def _inside(i: Any, n: Any) -> Any:
    from tvm import tirx

    return tirx.And(i >= 0, i < n)


def _clip(i: Any, n: Any) -> Any:
    """An int64 index clamped into [0, n - 1]."""
    from tvm import tirx

    return tirx.max(tirx.min(i, tirx.Cast("int64", n) - 1), tirx.const(0, "int64"))


def _cubic_weights(t: Any, a: float = -0.75) -> list[Any]:
    """Keys' cubic weights of the four taps x0-1..x0+2 at fraction ``t`` past x0."""
    from tvm import tirx

    def near(s: Any) -> Any:
        return ((a + 2) * s - (a + 3)) * s * s + 1.0

    def far(s: Any) -> Any:
        return ((a * s - 5 * a) * s + 8 * a) * s - 4 * a

    t = tirx.abs(t)
    return [far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t)]


# -- GridSample ---------------------------------------------------------------------------
def _grid_sample_accepts(node: Node) -> bool:
    mode = str_attr(node, "mode", "linear")
    pad = str_attr(node, "padding_mode", "zeros")
    return mode in ("linear", "bilinear", "nearest", "cubic", "bicubic") and pad in ("zeros", "border", "reflection")


@converts("GridSample", accepts=_grid_sample_accepts)
def grid_sample(ctx: Ctx, node: Node) -> Sequence[Any]:
    """One kernel over (N, C, *grid spatial): the grid's normalized coordinates (last
    component first, as ONNX orders them x, y, z...) are denormalized, snapped to the
    border or reflected as padding_mode says, then the 1, 2^r or 4^r taps around them are
    weighed (separable linear / Keys cubic with a = -0.75), taps outside the input
    contributing zeros (or clamped indices under border/reflection), as onnx's reference."""
    from tvm import te, tirx

    mode = {"bilinear": "linear", "bicubic": "cubic"}.get(str_attr(node, "mode", "linear"), str_attr(node, "mode", "linear"))
    pad = str_attr(node, "padding_mode", "zeros")
    align = bool(node.attr("align_corners", 0))
    xdims = ctx.static_shape(node.inputs[0], "GridSample's input")
    gdims = ctx.static_shape(node.inputs[1], "GridSample's grid")
    dtype, gdtype = ctx.dtype(node.inputs[0]), ctx.dtype(node.inputs[1])
    r = len(xdims) - 2
    if r < 1 or len(gdims) != r + 2 or gdims[-1] != r:
        raise Decline("GridSample's grid does not match its input's rank")
    if gdtype not in _FLOATS or (mode != "nearest" and dtype not in _FLOATS):
        raise Decline(f"GridSample of {dtype} with a {gdtype} grid")
    wd = _work_dtype(dtype, gdtype)
    spatial = xdims[2:]
    out_shape = [xdims[0], xdims[1], *gdims[1:-1]]

    def fn(x: Any, g: Any) -> Any:
        # stage 1: the padded coordinates, so the taps share them instead of repeating them
        def coord(*i: Any) -> Any:
            k = i[-1]
            out = tirx.const(0.0, wd)
            for d in range(r - 1, -1, -1):
                v = tirx.Cast(wd, g[(*i[:-1], r - 1 - d)])
                out = tirx.Select(k == d, _gs_coordinate(v, spatial[d], align, pad, mode == "nearest", wd), out)
            return out

        pos = te.compute([*gdims[:-1], r], coord, name="grid_coords")

        def body(n: Any, c: Any, *o: Any) -> Any:
            coords = [pos[(n, *o, d)] for d in range(r)]
            return _gs_sample(x, n, c, coords, spatial, mode, pad, align, dtype, wd)

        return te.compute(out_shape, body, name="grid_sample")

    return [ctx.emit_te(fn, ctx.x(node.inputs[0]), ctx.x(node.inputs[1]))]


def _gs_bounds(d: int, align: bool) -> tuple[float, float]:
    """The coordinate range that counts as inside: pixel centres or pixel edges."""
    return (0.0, d - 1.0) if align else (-0.5, d - 0.5)


def _reflect(x: Any, lo: float, hi: float, wd: str) -> Any:
    """Reflect ``x`` off the borders [lo, hi] until it lies within them."""
    from tvm import tirx

    rng = hi - lo
    if rng <= 0:
        return tirx.const(lo, wd)
    below = x < lo
    dx = tirx.Select(below, lo - x, x - hi)
    dx = tirx.min(dx, tirx.const(1e30, wd))  # keeps floor() finite for wild inputs
    k = tirx.floor(dx / rng)
    rem = dx - k * rng
    even = tirx.floor(k * 0.5) * 2.0 == k
    near_lo, near_hi = lo + rem, hi - rem
    reflected = tirx.Select(below, tirx.Select(even, near_lo, near_hi), tirx.Select(even, near_hi, near_lo))
    return tirx.Select(tirx.Or(x < lo, x > hi), reflected, x)


def _gs_coordinate(v: Any, d: int, align: bool, pad: str, nearest: bool, wd: str) -> Any:
    """Denormalized (and, for nearest, rounded half-to-even) coordinate after padding."""
    from tvm import tirx

    x = (v + 1.0) / 2.0 * float(d - 1) if align else ((v + 1.0) * float(d) - 1.0) / 2.0
    if nearest:
        x = tirx.nearbyint(x)
    lo, hi = _gs_bounds(d, align)
    if pad == "border":
        x = tirx.Select(tirx.Or(x < lo, x > hi), tirx.max(tirx.min(x, tirx.const(d - 1.0, wd)), tirx.const(0.0, wd)), x)
    elif pad == "reflection":
        x = _reflect(x, lo, hi, wd)
    return x


def _gs_tap_index(i: Any, d: int, align: bool, pad: str, wd: str) -> tuple[Any, Any]:
    """(index to read, whether the tap counts) of integer tap ``i`` along a dim of ``d``."""
    from tvm import tirx

    if pad == "zeros":
        return _clip(i, d), _inside(i, d)
    if pad == "border":
        return _clip(i, d), tirx.const(True, "bool")
    # reflection of an integer tap is periodic: 2(d-1) between centres, 2d between edges
    if d == 1:
        return tirx.const(0, "int64"), tirx.const(True, "bool")
    period = 2 * (d - 1) if align else 2 * d
    m = tirx.floormod(i, tirx.const(period, "int64"))
    j = tirx.Select(m >= d, tirx.const(period - (0 if align else 1), "int64") - m, m)
    return _clip(j, d), tirx.const(True, "bool")


def _gs_sample(
    x: Any, n: Any, c: Any, coords: list[Any], spatial: list[int], mode: str, pad: str, align: bool, dtype: str, wd: str
) -> Any:
    """The interpolated value of ``x[n, c]`` at ``coords`` (one per spatial dim)."""
    from itertools import product

    from tvm import tirx

    per_dim: list[list[tuple[Any, Any, Any]]] = []  # (index, valid, weight) per tap
    for v, d in zip(coords, spatial):
        if mode == "nearest":
            i = _to_index(v, -2, d + 1)  # truncation toward zero, as int() in the spec
            per_dim.append([(*_gs_tap_index(i, d, align, pad, wd), None)])
            continue
        base = tirx.floor(v)
        t = v - base
        x0 = _to_index(base, -4, d + 3)
        if mode == "linear":
            taps = [(x0, 1.0 - t), (x0 + 1, t)]
        else:
            taps = [(x0 + (k - 1), w) for k, w in enumerate(_cubic_weights(t))]
        per_dim.append([(*_gs_tap_index(i, d, align, pad, wd), w) for i, w in taps])
    acc = None
    for combo in product(*per_dim):
        idx = tuple(j for j, _, _ in combo)
        ok = tirx.const(True, "bool")
        for _, valid, _ in combo:
            ok = tirx.And(ok, valid)
        val = x[(n, c, *idx)]
        if mode == "nearest":
            return tirx.Select(ok, val, tirx.const(0, dtype))
        w = combo[0][2]
        for _, _, wk in combo[1:]:
            w = w * wk
        term = tirx.Select(ok, tirx.Cast(wd, val) * w, tirx.const(0.0, wd))
        acc = term if acc is None else acc + term
    return tirx.Cast(dtype, acc)


# -- AffineGrid ---------------------------------------------------------------------------
@converts("AffineGrid")
def affine_grid(ctx: Ctx, node: Node) -> Sequence[Any]:
    """grid[n, *p, c] = theta[n, c, :r] · base(p) + theta[n, c, r], base being the
    normalized pixel-centre (or corner) coordinates in x, y, z order; a run-time size
    becomes fresh symbolic dims. Computed in float64 and rounded once, as the reference."""
    from tvm import te, tirx

    from torsh_gen.backends.tvm.ops_tensor import _fresh_dims

    tdims = ctx.static_shape(node.inputs[0], "AffineGrid's theta")
    dtype = ctx.dtype(node.inputs[0])
    if dtype not in _FLOATS or len(tdims) != 3 or tdims[2] != tdims[1] + 1 or tdims[1] not in (2, 3):
        raise Decline("AffineGrid needs a float theta of shape (N, 2, 3) or (N, 3, 4)")
    r = tdims[1]
    align = bool(node.attr("align_corners", 0))
    size = ctx.const(node.inputs[1])
    if size is not None:
        spatial: list[Any] = [int(s) for s in np.asarray(size).reshape(-1)[2:]]
    else:
        vec = ctx.x(node.inputs[1])
        if ctx.shape_of(vec) != [r + 2]:
            raise Decline("AffineGrid's size must have length rank + 2")
        if ctx.dtype(node.inputs[1]) != "int64":
            from tvm import relax

            vec = ctx.emit(relax.op.astype(vec, "int64"))
        dims = ctx.emit_te(lambda s: te.compute((r,), lambda j: s[j + 2], name="grid_dims"), vec)
        spatial = _fresh_dims(ctx, dims, "ag")
    if len(spatial) != r:
        raise Decline("AffineGrid's size does not match theta")
    out_shape = [tdims[0], *spatial, r]

    def base(k: Any, s: Any) -> Any:
        kf = tirx.Cast("float64", k)
        sf = tirx.Cast("float64", s)
        if align:
            return tirx.Select(s > 1, -1.0 + 2.0 * kf / tirx.max(sf - 1.0, 1.0), tirx.const(-1.0, "float64"))
        return (2.0 * kf + 1.0) / sf - 1.0

    def fn(theta: Any) -> Any:
        def body(n: Any, *rest: Any) -> Any:
            p, c = rest[:-1], rest[-1]
            acc = tirx.Cast("float64", theta[n, c, r])
            for j in range(r):
                d = r - 1 - j  # component j (x, y, z) runs along spatial dim r-1-j
                acc = acc + tirx.Cast("float64", theta[n, c, j]) * base(p[d], spatial[d])
            return tirx.Cast(dtype, acc)

        return te.compute(out_shape, body, name="affine_grid")

    return [ctx.emit_te(fn, ctx.x(node.inputs[0]))]


# -- Col2Im -------------------------------------------------------------------------------
@converts("Col2Im")
def col2im(ctx: Ctx, node: Node) -> Sequence[Any]:
    """Folds the columns back as a gather: image pixel i receives, per kernel tap k, the
    column at block position (i + pad - k * dilation) / stride where that is a whole
    number inside the block grid (a sum over the taps, in the input's type, as the
    reference's scatter-add)."""
    from tvm import te, tirx

    from torsh_gen.ops.nn import conv_pads, spatial_params

    if ctx.const(node.inputs[1]) is None or ctx.const(node.inputs[2]) is None:
        return [_col2im_runtime(ctx, node)]
    img = ctx.ints(node.inputs[1], "Col2Im's image_shape")
    block = ctx.ints(node.inputs[2], "Col2Im's block_shape")
    r = len(img)
    strides, dilations, pads = spatial_params(_Attrs(node), r)
    begin, _, out = conv_pads(img, block, strides, dilations, pads)
    nb, rows, length = ctx.static_shape(node.inputs[0], "Col2Im's input")
    k_total = int(np.prod(block))
    if len(block) != r or k_total == 0 or rows % k_total or int(np.prod(out)) != length:
        raise Decline("Col2Im's input does not fit its image and block shapes")
    c = rows // k_total
    dtype = ctx.dtype(node.inputs[0])

    def fn(x: Any) -> Any:
        taps = [te.reduce_axis((0, b), f"k{d}") for d, b in enumerate(block)]

        def body(n: Any, ch: Any, *pix: Any) -> Any:
            ok = tirx.const(True, "bool")
            kflat, lflat = tirx.const(0, "int64"), tirx.const(0, "int64")
            for d in range(r):
                t = (
                    tirx.Cast("int64", pix[d])
                    + begin[d]
                    - tirx.Cast("int64", taps[d]) * dilations[d]
                )
                q = tirx.floordiv(t, strides[d])
                ok = tirx.all(ok, t >= 0, tirx.floormod(t, strides[d]) == 0, q < out[d])
                kflat = kflat * block[d] + tirx.Cast("int64", taps[d])
                lflat = lflat * out[d] + _clip(q, out[d])
            v = x[n, tirx.Cast("int64", ch) * k_total + kflat, lflat]
            return te.sum(tirx.Select(ok, v, tirx.const(0, dtype)), axis=taps)

        return te.compute([nb, c, *img], body, name="col2im")

    return [ctx.emit_te(fn, ctx.x(node.inputs[0]))]


def _col2im_runtime(ctx: Ctx, node: Node) -> Any:
    """Col2Im with a run-time image_shape or block_shape: the output's declared static
    shape gives the image, and one sequential kernel scatter-adds every column entry,
    its block and position grids read from the operands at run time."""
    from tvm import relax

    from torsh_gen.backends.tvm.ops_extra import _extern
    from torsh_gen.ops.nn import spatial_params

    declared = getattr(node.outputs[0].type, "shape", None)
    if declared is None or not all(isinstance(d, int) for d in declared) or len(declared) < 3:
        raise Decline(
            "Col2Im's image_shape and block_shape must be constants unless the output shape is static"
        )
    r = len(declared) - 2
    nb, rows, length = ctx.static_shape(node.inputs[0], "Col2Im's input")
    if declared[0] != nb or declared[1] == 0 or rows % declared[1]:
        raise Decline("Col2Im's input does not fit its declared output")
    strides, dilations, pads = spatial_params(_Attrs(node), r)
    image = [int(d) for d in declared[2:]]
    message = f"Col2Im: image_shape is {{}} at run time, but the model's declared output shape says {image}"
    ctx.check_ints(node.inputs[1], image, message)
    shapes = [
        ctx.emit(relax.op.astype(relax.op.reshape(ctx.x(node.inputs[k]), [r]), "int64"))
        for k in (1, 2)
    ]
    geo = (r, rows // declared[1], list(declared), strides, dilations, pads)
    return _extern(
        ctx,
        [list(declared)],
        [ctx.dtype(node.inputs[0])],
        _col2im_ir(geo),
        ctx.x(node.inputs[0]),
        *shapes,
        name="col2im",
    )


def _col2im_ir(geo: tuple[Any, ...]) -> Any:
    """The run-time Col2Im body: zero the image, then add column entry (n, c*K + k, l)
    at pixel l * stride - pad + k * dilation (per dim; k and l unflattened with the
    run-time block and position grids) where it lies inside the image."""
    r, k_total, out_shape, strides, dilations, pads = geo

    def ir(ins: Any, outs: Any) -> None:
        from tvm import tirx
        from tvm.script.ir_builder import tirx as T

        x, _img, blk = (T.buffer_proxy(t) for t in ins)
        nb, c, spatial = out_shape[0], out_shape[1], out_shape[2:]
        length = int(ins[0].shape[2])
        npix = int(np.prod(spatial))
        flat_y = T.buffer_proxy(
            T.decl_buffer([nb * c * npix], str(ins[0].dtype), data=outs[0].data)
        )
        with T.serial(0, nb * c * npix) as i:
            flat_y[i] = tirx.const(0, str(ins[0].dtype))
        i64 = "int64"
        # positions per dim: (img + pads - (block - 1) * dilation - 1) / stride + 1
        grid = []
        for d in range(r):
            span = (
                tirx.const(spatial[d] + pads[d] + pads[d + r] - 1, i64)
                - (blk[d] - 1) * dilations[d]
            )
            grid.append(tirx.max(tirx.floordiv(span, strides[d]) + 1, tirx.const(0, i64)))
        with T.serial(0, nb) as n:
            with T.serial(0, c) as ch:
                with T.serial(0, k_total) as kk:
                    with T.serial(0, length) as ll:
                        ok = tirx.const(True, "bool")
                        pix = tirx.const(0, i64)
                        krem, lrem = tirx.Cast(i64, kk), tirx.Cast(i64, ll)
                        coords = []
                        for d in range(r - 1, -1, -1):
                            kd = tirx.floormod(krem, tirx.max(blk[d], tirx.const(1, i64)))
                            ld = tirx.floormod(lrem, tirx.max(grid[d], tirx.const(1, i64)))
                            krem = tirx.floordiv(krem, tirx.max(blk[d], tirx.const(1, i64)))
                            lrem = tirx.floordiv(lrem, tirx.max(grid[d], tirx.const(1, i64)))
                            coords.insert(0, ld * strides[d] - pads[d] + kd * dilations[d])
                        for d in range(r):
                            ok = tirx.all(ok, coords[d] >= 0, coords[d] < spatial[d])
                            pix = pix * spatial[d] + tirx.max(
                                tirx.min(coords[d], spatial[d] - 1), tirx.const(0, i64)
                            )
                        at = (tirx.Cast(i64, n) * c + tirx.Cast(i64, ch)) * npix + pix
                        with T.If(ok):
                            with T.Then():
                                flat_y[at] = flat_y[at] + x[n, ch * k_total + kk, ll]

    return ir


class _Attrs:
    """A node's attributes read as ``attrs.name`` (None when absent), the form the
    reference kernels' shared parsing (``spatial_params``) reads."""

    def __init__(self, node: Node) -> None:
        self._node = node

    def __getattr__(self, name: str) -> Any:
        return self._node.attr(name)


# -- MaxUnpool ------------------------------------------------------------------------------
@converts("MaxUnpool")
def max_unpool(ctx: Ctx, node: Node) -> Sequence[Any]:
    """Scatters x to the flat positions of the default output layout (zeros elsewhere),
    then, for a given output_shape, keeps that layout's coordinates where the requested
    shape has them, as the reference does. Indices are clamped into the output first."""
    from tvm import relax, te, tirx

    from torsh_gen.ops.nn import spatial_params

    kernel = [int(k) for k in node.attr("kernel_shape")]
    r = len(kernel)
    strides, _, pads = spatial_params(_Attrs(node), r)
    xdims = ctx.static_shape(node.inputs[0], "MaxUnpool's input")
    if len(xdims) != r + 2:
        raise Decline("MaxUnpool's kernel does not match its input's rank")
    sp = [(xdims[2 + i] - 1) * strides[i] + kernel[i] - pads[i] - pads[i + r] for i in range(r)]
    total = xdims[0] * xdims[1] * int(np.prod(sp))
    dtype = ctx.dtype(node.inputs[0])
    x = ctx.emit(relax.op.reshape(ctx.x(node.inputs[0]), [-1]))
    idx = ctx.emit(relax.op.astype(relax.op.reshape(ctx.x(node.inputs[1]), [-1]), "int64"))
    idx = ctx.emit(relax.op.clip(idx, 0, max(total - 1, 0)))
    flat = ctx.emit(relax.op.scatter_elements(relax.op.zeros([total], dtype), idx, x, axis=0))
    y = ctx.emit(relax.op.reshape(flat, [*xdims[:2], *sp]))
    if not ctx.has(node, 2):
        return [y]
    target = _unpool_target(ctx, node, r)
    if target == sp:
        return [y]

    def fn(ys: Any) -> Any:
        def body(n: Any, c: Any, *p: Any) -> Any:
            ok = tirx.all(*[p[i] < sp[i] for i in range(r)]) if r else tirx.const(True, "bool")
            src = [_clip(tirx.Cast("int64", p[i]), sp[i]) for i in range(r)]
            return tirx.Select(ok, ys[(n, c, *src)], tirx.const(0, dtype))

        return te.compute([*xdims[:2], *target], body, name="max_unpool")

    return [ctx.emit_te(fn, y)]


def _unpool_target(ctx: Ctx, node: Node, r: int) -> list[int]:
    """The requested spatial output size: the constant output_shape, else the output's
    static declared shape."""
    given = ctx.const(node.inputs[2])
    if given is not None:
        return [int(v) for v in np.asarray(given).reshape(-1)][-r:]
    declared = getattr(node.outputs[0].type, "shape", None)
    if declared is None or not all(isinstance(d, int) for d in declared):
        raise Decline("MaxUnpool's output_shape must be a constant (it is computed at run time)")
    want = [int(d) for d in declared]
    message = f"MaxUnpool: output_shape is {{}} at run time, but the model's declared output shape says {want}"
    ctx.check_ints(node.inputs[2], want, message)
    return want[2:]


# -- DeformConv -----------------------------------------------------------------------------
@converts("DeformConv")
def deform_conv(ctx: Ctx, node: Node) -> Sequence[Any]:
    """Two kernels, as the reference: the columns (each tap of each output position
    sampled bilinearly at its learned offset, zero outside the image, times the mask),
    then the grouped product with the weights plus bias, in float32 (float64 for double)."""
    from tvm import te, tirx

    from torsh_gen.ops.nn import conv_pads, spatial_params

    xs = ctx.static_shape(node.inputs[0], "DeformConv's input")
    ws = ctx.static_shape(node.inputs[1], "DeformConv's weight")
    r = len(xs) - 2
    kernel = [int(k) for k in node.attr("kernel_shape") or ws[2:]]
    strides, dilations, pads = spatial_params(_Attrs(node), r)
    group, og = int(node.attr("group", 1)), int(node.attr("offset_group", 1))
    nb, c, m = xs[0], xs[1], ws[0]
    fits = r >= 1 and group > 0 and og > 0 and c % group == 0 and c % og == 0 and m % group == 0
    if not fits or len(ws) != r + 2 or ws[1] != c // group or list(ws[2:]) != kernel:
        raise Decline(f"DeformConv weights {ws} do not fit input {xs} (groups {group}/{og})")
    out = conv_pads(xs[2:], kernel, strides, dilations, pads)[2]
    k_total = int(np.prod(kernel))
    if ctx.static_shape(node.inputs[2], "DeformConv's offset") != [nb, og * k_total * r, *out]:
        raise Decline("DeformConv's offset does not fit its input and kernel")
    has_mask = ctx.has(node, 4)
    if has_mask and ctx.static_shape(node.inputs[4], "DeformConv's mask") != [
        nb,
        og * k_total,
        *out,
    ]:
        raise Decline("DeformConv's mask does not fit its input and kernel")
    dtype = ctx.dtype(node.inputs[0])
    if dtype not in _FLOATS:
        raise Decline(f"DeformConv of {dtype}")
    wd = _work_dtype(dtype)
    cg, cog, mg = c // group, c // og, m // group

    def columns(x: Any, off: Any, *rest: Any) -> Any:
        def body(n: Any, ch: Any, kk: Any, *o: Any) -> Any:
            row = tirx.floordiv(ch, cog) * k_total + kk  # the (offset group, tap) row
            kc, rem = [], kk
            for d in range(r - 1, -1, -1):
                kc.insert(0, tirx.floormod(rem, kernel[d]))
                rem = tirx.floordiv(rem, kernel[d])
            per_dim = []
            for d in range(r):
                start = o[d] * strides[d] - pads[d] + kc[d] * dilations[d]
                pos = tirx.Cast(wd, start) + tirx.Cast(wd, off[(n, row * r + d, *o)])
                base = tirx.floor(pos)
                t = pos - base
                i0 = _to_index(base, -2, xs[2 + d] + 1)
                per_dim.append([(i0, 1.0 - t), (i0 + 1, t)])
            acc = tirx.const(0.0, wd)
            for combo in _product(per_dim):
                ok = tirx.all(*[_inside(i, xs[2 + d]) for d, (i, _) in enumerate(combo)])
                w = combo[0][1]
                for _, wk in combo[1:]:
                    w = w * wk
                v = tirx.Cast(
                    wd, x[(n, ch, *[_clip(i, xs[2 + d]) for d, (i, _) in enumerate(combo)])]
                )
                acc = acc + tirx.Select(ok, v * w, tirx.const(0.0, wd))
            if rest:
                acc = acc * tirx.Cast(wd, rest[0][(n, row, *o)])
            return acc

        return te.compute([nb, c, k_total, *out], body, name="deform_columns")

    args = [ctx.x(node.inputs[0]), ctx.x(node.inputs[2])] + (
        [ctx.x(node.inputs[4])] if has_mask else []
    )
    cols = ctx.emit_te(columns, *args)

    def product(cs: Any, w: Any, *bias: Any) -> Any:
        rc = te.reduce_axis((0, cg), "rc")
        rk = te.reduce_axis((0, k_total), "rk")

        def body(n: Any, mo: Any, *o: Any) -> Any:
            ch = tirx.floordiv(mo, mg) * cg + rc
            kc, rem = [], rk
            for d in range(r - 1, -1, -1):
                kc.insert(0, tirx.floormod(rem, kernel[d]))
                rem = tirx.floordiv(rem, kernel[d])
            return te.sum(tirx.Cast(wd, w[(mo, rc, *kc)]) * cs[(n, ch, rk, *o)], axis=[rc, rk])

        acc = te.compute([nb, m, *out], body, name="deform_conv")
        if not bias:
            return te.compute(acc.shape, lambda *i: tirx.Cast(dtype, acc[i]), name="deform_out")
        return te.compute(
            acc.shape,
            lambda *i: tirx.Cast(dtype, acc[i] + tirx.Cast(wd, bias[0][i[1]])),
            name="deform_out",
        )

    wargs = [cols, ctx.x(node.inputs[1])] + ([ctx.x(node.inputs[3])] if ctx.has(node, 3) else [])
    return [ctx.emit_te(product, *wargs)]


def _product(per_dim: list[list[Any]]) -> list[tuple[Any, ...]]:
    from itertools import product

    return list(product(*per_dim))


# -- RoiAlign -------------------------------------------------------------------------------
def _roi_align_accepts(node: Node) -> bool:
    mode = str_attr(node, "mode", "avg")
    return mode in ("avg", "max")


@converts("RoiAlign", accepts=_roi_align_accepts)
def roi_align(ctx: Ctx, node: Node) -> Sequence[Any]:
    """One sequential kernel per region, bin and channel, as the reference: geometry in the
    rois' float type, bilinear taps by onnxruntime's rules (empty outside [-1, size], at the
    last pixel both taps coincide), the average (or max of the weighted corners) over the
    sampling grid, whose size (sampling_ratio 0: ceil(bin extent)) is a loop bound."""
    from tvm import relax

    from torsh_gen.backends.tvm.ops_extra import _extern

    xs = ctx.static_shape(node.inputs[0], "RoiAlign's input")
    rs = ctx.static_shape(node.inputs[1], "RoiAlign's rois")
    if len(xs) != 4 or len(rs) != 2 or rs[1] != 4:
        raise Decline(f"RoiAlign needs X (N, C, H, W) and rois (R, 4), got {xs}, {rs}")
    if int(np.prod(ctx.static_shape(node.inputs[2], "RoiAlign's batch_indices"))) != rs[0]:
        raise Decline("RoiAlign's batch_indices need one entry per region")
    dtype, rdt = ctx.dtype(node.inputs[0]), ctx.dtype(node.inputs[1])
    if dtype not in _FLOATS or rdt not in _FLOATS:
        raise Decline(f"RoiAlign of {dtype} with {rdt} rois")
    default = "half_pixel" if ctx.opset >= 16 else "output_half_pixel"
    ctm = str_attr(node, "coordinate_transformation_mode", default)
    if ctm not in ("half_pixel", "output_half_pixel"):
        raise Decline(f"RoiAlign coordinate_transformation_mode {ctm}")
    ph, pw = int(node.attr("output_height", 1)), int(node.attr("output_width", 1))
    if xs[0] * xs[2] * xs[3] == 0:
        raise Decline("RoiAlign over an empty image")
    geo = _RoiGeometry(
        ph,
        pw,
        int(node.attr("sampling_ratio", 0)),
        float(node.attr("spatial_scale", 1.0)),
        ctm == "half_pixel",
        str_attr(node, "mode", "avg") == "max",
        "float32" if rdt in ("float16", "bfloat16") else rdt,
    )
    batch = ctx.emit(relax.op.astype(relax.op.reshape(ctx.x(node.inputs[2]), [-1]), "int64"))
    res = _extern(
        ctx,
        [[rs[0], xs[1], ph, pw]],
        [dtype],
        _roi_align_ir(geo),
        ctx.x(node.inputs[0]),
        ctx.x(node.inputs[1]),
        batch,
        name="roi_align",
    )
    return [res]


class _RoiGeometry:
    """RoiAlign's attributes as the kernel reads them."""

    def __init__(
        self, ph: int, pw: int, ratio: int, scale: float, half: bool, is_max: bool, gdt: str
    ) -> None:
        self.ph, self.pw, self.ratio, self.scale = ph, pw, ratio, scale
        self.half, self.is_max, self.gdt = half, is_max, gdt


def _roi_align_ir(geo: _RoiGeometry) -> Any:
    """The RoiAlign body for ``_extern``: ins x, rois, batch; outs y."""

    def ir(ins: Any, outs: Any) -> None:
        from tvm import tirx
        from tvm.script.ir_builder import tirx as T

        x, rois, batch = (T.buffer_proxy(t) for t in ins)
        y = T.buffer_proxy(outs[0])
        nb, c, h, w = (int(d) for d in ins[0].shape)
        nr = int(ins[1].shape[0])
        g, f64 = geo.gdt, "float64"
        acc = T.buffer_proxy(T.decl_buffer([1], f64, scope="local"))
        box = T.buffer_proxy(T.decl_buffer([4], g, scope="local"))
        grid = T.buffer_proxy(T.decl_buffer([2], "int64", scope="local"))
        with T.serial(0, nr) as r:
            b = tirx.max(tirx.min(batch[r], tirx.const(nb - 1, "int64")), tirx.const(0, "int64"))
            off = tirx.const(0.5 if geo.half else 0.0, g)
            for k in range(4):
                box[k] = tirx.Cast(g, rois[r, k]) * tirx.const(geo.scale, g) - off
            extent = [box[3] - box[1], box[2] - box[0]]  # (height, width)
            if not geo.half:
                extent = [tirx.max(e, tirx.const(1.0, g)) for e in extent]
            for a, (e, bins) in enumerate(zip(extent, (geo.ph, geo.pw))):
                if geo.ratio > 0:
                    grid[a] = tirx.const(geo.ratio, "int64")
                else:
                    v = tirx.ceil(e / tirx.const(float(bins), g))
                    grid[a] = tirx.Cast(
                        "int64",
                        tirx.max(tirx.min(v, tirx.const(float(1 << 24), g)), tirx.const(0.0, g)),
                    )
            with T.serial(0, geo.ph) as iph:
                with T.serial(0, geo.pw) as ipw:
                    with T.serial(0, c) as ch:
                        acc[0] = tirx.const(0.0, f64)
                        with T.serial(0, grid[0]) as iy:
                            with T.serial(0, grid[1]) as ix:
                                sy = _roi_tap(box[1], extent[0], geo.ph, iph, iy, grid[0], h, g)
                                sx = _roi_tap(box[0], extent[1], geo.pw, ipw, ix, grid[1], w, g)
                                vals = [
                                    tirx.Cast(f64, x[b, ch, yi, xi]) * wy * wx
                                    for yi, wy in sy
                                    for xi, wx in sx
                                ]
                                if geo.is_max:
                                    best = tirx.max(
                                        tirx.max(vals[0], vals[1]), tirx.max(vals[2], vals[3])
                                    )
                                    first = tirx.all(iy == 0, ix == 0)
                                    acc[0] = tirx.Select(first, best, tirx.max(acc[0], best))
                                else:
                                    acc[0] = acc[0] + (((vals[0] + vals[1]) + vals[2]) + vals[3])
                        count = tirx.Cast(f64, tirx.max(grid[0] * grid[1], tirx.const(1, "int64")))
                        out = acc[0] if geo.is_max else acc[0] / count
                        y[r, ch, iph, ipw] = tirx.Cast(str(ins[0].dtype), out)

    return ir


def _roi_tap(
    start: Any, extent: Any, bins: int, b: Any, k: Any, grid: Any, size: int, g: str
) -> list[tuple[Any, Any]]:
    """The (index, weight) pair of the low and high taps of sample ``k`` in bin ``b``:
    start + b * bin + (k + 0.5) * bin / grid, in the rois' type, then float64."""
    from tvm import tirx

    bin_size = extent / tirx.const(float(bins), g)
    gf = tirx.Cast(g, tirx.max(grid, tirx.const(1, "int64")))
    pos = (
        start + tirx.Cast(g, b) * bin_size + (tirx.Cast(g, k) + tirx.const(0.5, g)) * bin_size / gf
    )
    p = tirx.Cast("float64", pos)
    valid = tirx.all(p >= -1.0, p <= float(size))
    q = tirx.max(tirx.min(p, tirx.const(float(size), "float64")), tirx.const(0.0, "float64"))
    low = tirx.Cast("int64", q)
    edge = low >= size - 1
    low = tirx.Select(edge, tirx.const(size - 1, "int64"), low)
    high = tirx.Select(edge, tirx.const(size - 1, "int64"), low + 1)
    q = tirx.Select(edge, tirx.Cast("float64", low), q)
    frac = q - tirx.Cast("float64", low)
    zero = tirx.const(0.0, "float64")
    return [(low, tirx.Select(valid, 1.0 - frac, zero)), (high, tirx.Select(valid, frac, zero))]
