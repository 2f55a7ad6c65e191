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
