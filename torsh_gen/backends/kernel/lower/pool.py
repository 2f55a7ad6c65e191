"""Pooling (NCHW): MaxPool (with its optional Indices), AveragePool, LpPool and the
global pools, as loop nests over planes.

Windowed pools run one job per (image, channel) plane. Each output row's x range splits at
compile time into an interior, where every horizontal tap lies inside the input (a vector
loop with no checks), and two borders (scalar loops that test each tap). A tap row that
falls in the padding is skipped by a test that does not vary across lanes. Windows are
those of the ONNX spec (``conv_pads``: explicit pads, auto_pad, ceil_mode, dilations).
AveragePool's divisor is a product of per-axis tap counts computed at compile time (taps
inside the input, or inside the explicit pads with count_include_pad): a constant where an
axis's count never changes, a small table otherwise.

Global pools reduce each plane with ``width`` independent lanes (a vector loop whose
accumulators live in registers), write the lanes to a small workspace and finish with a
scalar sum of the lanes and the tail.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from torsh_gen.backends.kernel import math as km
from torsh_gen.backends.kernel.builder import KernelBuilder
from torsh_gen.backends.kernel.ir import (
    Cast,
    Const,
    Expr,
    Select,
    call,
    is_float,
    itemsize,
    maximum,
)
from torsh_gen.backends.kernel.lower import LowerCtx, LoweringDeclined, lowers, prod
from torsh_gen.backends.kernel.lower.tiling import (
    Triple,
    axis,
    fold,
    lift,
    row_blocks,
    vector_width,
    when,
)
from torsh_gen.ops.nn import conv_pads, spatial_params

#: Element types MaxPool/GlobalMaxPool are lowered for (AveragePool and LpPool: floats).
MAX_DTYPES = ("f32", "f64", "i8", "u8", "i16", "u16", "i32", "u32", "i64", "u64")
_LOWEST = {"i8": -(2**7), "i16": -(2**15), "i32": -(2**31), "i64": -(2**63)}


@dataclass(frozen=True)
class PoolGeometry:
    """A windowed pool's static shape, lifted to three spatial axes (D, H, W)."""

    planes: int
    size: Triple
    kernel: Triple
    strides: Triple
    dilations: Triple
    begin: Triple
    out: Triple
    rank: int

    def rows_checked(self, a: int) -> bool:
        """Whether some output along axis ``a`` (0: D, 1: H) has a tap outside the input."""
        last = (
            (self.out[a] - 1) * self.strides[a]
            - self.begin[a]
            + (self.kernel[a] - 1) * self.dilations[a]
        )
        return self.begin[a] > 0 or last >= self.size[a]

    def interior(self) -> tuple[int, int]:
        """The output x range whose horizontal taps all lie inside the input."""
        s, b, k, d, w, ow = (
            self.strides[2],
            self.begin[2],
            self.kernel[2],
            self.dilations[2],
            self.size[2],
            self.out[2],
        )
        lo = min(ow, -(-b // s))
        hi = max(lo, min(ow, (w - 1 + b - (k - 1) * d) // s + 1))
        return lo, hi


def pool_geometry(ctx: LowerCtx) -> PoolGeometry:
    """The node's window geometry (ONNX rules, shared with the reference in ops.nn)."""
    xs, ys = ctx.in_shape(0), ctx.out_shape(0)
    nsp = len(xs) - 2
    kernel = list(ctx.attrs.kernel_shape or [])
    if nsp not in (1, 2, 3) or len(kernel) != nsp:
        raise LoweringDeclined(
            f"{nsp}-d pooling with kernel_shape {kernel} (1-d to 3-d are lowered)"
        )
    strides, dilations, pads = spatial_params(ctx.attrs, nsp)
    if min(strides + dilations + kernel) < 1 or min(pads) < 0:
        raise LoweringDeclined("non-positive kernel/strides/dilations or negative pads")
    begin, _end, out = conv_pads(
        xs[2:],
        kernel,
        strides,
        dilations,
        pads,
        ctx.attrs.auto_pad or "NOTSET",
        bool(ctx.attrs.ceil_mode),
    )
    if tuple(out) != tuple(ys[2:]):
        raise LoweringDeclined(f"output shape {ys} does not match the pooling's {out}")
    return PoolGeometry(
        xs[0] * xs[1],
        lift(xs[2:], 1),
        lift(kernel, 1),
        lift(strides, 1),
        lift(dilations, 1),
        lift(begin, 0),
        lift(out, 1),
        nsp,
    )


def dtype_lanes(ctx: LowerCtx, dtype: str) -> int:
    """Elements of ``dtype`` per vector register (``sched.lanes`` counts float32)."""
    return max(1, ctx.sched.lanes * 4 // itemsize(dtype))


def lowest(dtype: str) -> Const:
    """The identity of max for ``dtype``."""
    if is_float(dtype):
        return Const(float("-inf"), dtype)
    return Const(_LOWEST.get(dtype, 0), dtype)


# --------------------------------------------------------------------------- reducers
@dataclass
class Reducer:
    """What a pool does with its window: start value, one tap, and the finished value."""

    init: Expr
    step: Callable[[Expr, Expr], Expr]
    combine: Callable[[Expr, Expr], Expr]
    finish: Callable[[Expr], Expr]


def _lp_power(kb: KernelBuilder, v: Expr, p: int) -> Expr:
    a = kb.let(call("fabs", v), "a")
    if p == 1:
        return a
    if p <= 4:
        r: Expr = a
        for _ in range(p - 1):
            r = r * a
        return r
    return _as(km.pow_(kb, a, Const(float(p), "f32")), v.dtype)


def _lp_root(kb: KernelBuilder, s: Expr, p: int) -> Expr:
    if p == 1:
        return s
    if p == 2:
        return call("sqrt", s)
    return _as(km.pow_(kb, s, Const(1.0 / p, "f32")), s.dtype)


def _as(r: Expr, dtype: str) -> Expr:
    return r if r.dtype == dtype else Cast(r, dtype)


def max_reducer(dtype: str) -> Reducer:
    """The largest value (starting from the lowest of ``dtype``)."""
    return Reducer(lowest(dtype), maximum, maximum, lambda a: a)


def sum_reducer(dtype: str, count: float = 1.0) -> Reducer:
    """The sum, divided by ``count`` at the end (1: left as is)."""
    finish = (lambda a: a) if count == 1.0 else (lambda a: a / Const(count, dtype))
    return Reducer(Const(0.0, dtype), lambda a, v: a + v, lambda a, b: a + b, finish)


def lp_reducer(kb: KernelBuilder, dtype: str, p: int) -> Reducer:
    """Sum of |x|^p, then its p-th root."""
    if p < 1:
        raise LoweringDeclined(f"LpPool with p={p}")
    return Reducer(
        Const(0.0, dtype),
        lambda acc, v: acc + _lp_power(kb, v, p),
        lambda a, b: a + b,
        lambda s: _lp_root(kb, s, p),
    )


# --------------------------------------------------------------------------- windowed pools
@dataclass
class Window:
    """One windowed pool being lowered: geometry, reducer and (MaxPool) the indices."""

    ctx: LowerCtx
    geo: PoolGeometry
    red: Reducer
    divisor: Callable[[Expr, Expr, Expr], Expr] | None = None
    indices: bool = False

    def output(self, plane: Expr, oz: Expr, oy: Expr, ox: Expr, checked: bool) -> None:
        """Reduce the window of output ``(oz, oy, ox)`` and store it (and its index)."""
        kb, g, dt = self.ctx.kb, self.geo, self.ctx.out_dtypes[0]
        d, h, w = g.size
        acc = kb.local(dt, self.red.init)
        arg = kb.local("i64", Const(0, "i64")) if self.indices else None
        iz0 = oz * g.strides[0] - g.begin[0]
        iy0 = oy * g.strides[1] - g.begin[1]
        ix0 = kb.let(fold(ox * g.strides[2] - g.begin[2]), "ix")
        with axis(kb, g.kernel[0], "kz") as kz, axis(kb, g.kernel[1], "ky") as ky:
            iz = kb.let(fold(iz0 + kz * g.dilations[0]), "iz")
            iy = kb.let(fold(iy0 + ky * g.dilations[1]), "iy")
            conds = []
            if g.rows_checked(0):
                conds += [iz >= 0, iz < d]
            if g.rows_checked(1):
                conds += [iy >= 0, iy < h]
            with when(kb, conds):
                row = kb.let(fold(plane * (d * h * w) + iz * (h * w) + iy * w), "row")
                for kx in range(g.kernel[2]):
                    ix = fold(ix0 + kx * g.dilations[2])
                    with when(kb, [ix >= 0, ix < w] if checked else []):
                        self._tap(acc, arg, self.ctx.x(0)[row + ix], iz, iy, ix)
        self._store(plane, oz, oy, ox, acc, arg)

    def _tap(self, acc: Expr, arg: Expr | None, v: Expr, iz: Expr, iy: Expr, ix: Expr) -> None:
        kb = self.ctx.kb
        if arg is None:
            kb.assign(acc, self.red.step(acc, v))
            return
        d, h, w = self.geo.size
        if self.ctx.attrs.storage_order and self.geo.rank >= 2:
            pos = (ix * h + iy) * d + iz if self.geo.rank == 3 else ix * h + iy
        else:
            pos = (iz * h + iy) * w + ix
        val = kb.let(v, "v")
        better = kb.let(val > acc, "gt")
        kb.assign(arg, Select(better, fold(pos), arg))
        kb.assign(acc, Select(better, val, acc))

    def _store(
        self, plane: Expr, oz: Expr, oy: Expr, ox: Expr, acc: Expr, arg: Expr | None
    ) -> None:
        kb, g = self.ctx.kb, self.geo
        od, oh, ow = g.out
        o = kb.let(fold(plane * prod(g.out) + (oz * oh + oy) * ow) + ox, "o")
        v = self.red.finish(acc)
        if self.divisor is not None:
            v = v / self.divisor(oz, oy, ox)
        self.ctx.y(0)[o] = v
        if arg is not None:
            self.ctx.y(1)[o] = arg + plane * prod(g.size)


def average_divisor(ctx: LowerCtx, geo: PoolGeometry) -> Callable[[Expr, Expr, Expr], Expr]:
    """The product of per-axis tap counts (constants where an axis's count is uniform)."""
    dtype = ctx.out_dtypes[0]
    include = bool(ctx.attrs.count_include_pad)
    explicit = _explicit_pads(ctx, geo)
    counts = []
    for a in range(3):
        lo, hi = (-explicit[a], geo.size[a] + explicit[3 + a]) if include else (0, geo.size[a])
        pos = (
            np.arange(geo.out[a])[:, None] * geo.strides[a]
            - geo.begin[a]
            + np.arange(geo.kernel[a])[None, :] * geo.dilations[a]
        )
        counts.append(np.maximum(((pos >= lo) & (pos < hi)).sum(axis=1), 1))
    varying = [a for a in range(3) if len(set(counts[a].tolist())) > 1]
    table = ctx.weight(np.concatenate([counts[a] for a in varying]), dtype) if varying else None
    const = float(prod([int(counts[a][0]) for a in range(3) if a not in varying]))

    def divisor(oz: Expr, oy: Expr, ox: Expr) -> Expr:
        e: Expr = Const(const, dtype)
        off = 0
        for a, o in zip(varying, [(oz, oy, ox)[a] for a in varying]):
            e = e * table[fold(o + off)]  # type: ignore[index]
            off += geo.out[a]
        return e

    return divisor


def _explicit_pads(ctx: LowerCtx, geo: PoolGeometry) -> list[int]:
    """The pads the op asks for, lifted to 3 axes as (begins, ends), without ceil_mode's."""
    n = geo.rank
    xs = ctx.in_shape(0)
    auto = ctx.attrs.auto_pad or "NOTSET"
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        strides, dilations, pads = spatial_params(ctx.attrs, n)
        b, e, _ = conv_pads(xs[2:], list(ctx.attrs.kernel_shape), strides, dilations, pads, auto)
    elif auto == "VALID":
        b, e = [0] * n, [0] * n
    else:
        pads = list(ctx.attrs.pads or [0] * (2 * n))
        b, e = pads[:n], pads[n:]
    return list(lift(b, 0)) + list(lift(e, 0))


def window_pool(win: Window) -> None:
    """Planes over threads; rows serial; each row's interior vectorized, borders checked."""
    ctx, g = win.ctx, win.geo
    kb = ctx.kb
    od, oh, ow = g.out
    lo, hi = g.interior()
    dt = ctx.out_dtypes[0]
    if ctx.sched.gpu:  # one thread per output, every tap checked
        with kb.loop(g.planes, kind="parallel", hint="pl") as plane:
            with kb.loop(od, kind="parallel", hint="oz") as oz, kb.loop(oh, kind="parallel", hint="oy") as oy:
                with kb.loop(ow, kind="parallel", hint="ox") as ox:
                    win.output(plane, oz, oy, ox, True)
        return
    lanes = dtype_lanes(ctx, "i64" if win.indices else dt)
    width = vector_width(hi - lo, lanes)
    with kb.loop(
        g.planes, kind=ctx.outer_kind(g.planes * prod(g.out) * prod(g.kernel)), hint="pl"
    ) as plane:
        with axis(kb, od, "oz") as oz, axis(kb, oh, "oy") as oy:
            if lo > 0:
                with kb.loop(lo, hint="x") as ox:
                    win.output(plane, oz, oy, ox, True)
            row_blocks(kb, hi, width, lambda ox: win.output(plane, oz, oy, ox, False), start=lo)
            if hi < ow:
                with kb.loop(ow, start=hi, hint="x") as ox:
                    win.output(plane, oz, oy, ox, True)


@lowers("MaxPool", "AveragePool", "LpPool")
def lower_pool(ctx: LowerCtx) -> None:
    """Windowed pools with the ONNX window rules (pads, auto_pad, ceil_mode, dilations)."""
    op = ctx.node.op_type
    dt = ctx.out_dtypes[0]
    allowed = MAX_DTYPES if op == "MaxPool" else ("f32", "f64")
    if dt not in allowed or ctx.in_dtypes[0] != dt:
        raise LoweringDeclined(f"{op} of {dt}")
    geo = pool_geometry(ctx)
    if prod(ctx.out_shape(0)) == 0:
        return
    kb = ctx.kb
    if op == "MaxPool":
        win = Window(ctx, geo, max_reducer(dt), indices=ctx.wants(1))
    elif op == "AveragePool":
        win = Window(ctx, geo, sum_reducer(dt), divisor=average_divisor(ctx, geo))
    else:
        win = Window(
            ctx, geo, lp_reducer(kb, dt, int(ctx.attrs.p if ctx.attrs.p is not None else 2))
        )
    window_pool(win)


# --------------------------------------------------------------------------- global pools
def global_width(n: int, lanes: int) -> int:
    """Lanes that reduce a plane of ``n``: a vector add costs its latency (about 4 cycles)
    unless several registers work side by side; the lanes are then combined one by one
    and the tail is scalar. The cheapest width by that count (1: all scalar)."""
    best, best_cost = 1, n
    for w in (4 * lanes, 2 * lanes, lanes, lanes // 2, lanes // 4):
        if w < 4 or w > n:
            continue
        cost = n // w * max(4, -(-w // lanes)) + w + n % w
        if cost < best_cost:
            best, best_cost = w, cost
    return best


@lowers("GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool")
def lower_global_pool(ctx: LowerCtx) -> None:
    """Each plane reduced by ``width`` lanes, the lanes and the tail summed at the end."""
    op = ctx.node.op_type
    dt = ctx.out_dtypes[0]
    allowed = MAX_DTYPES if op == "GlobalMaxPool" else ("f32", "f64")
    if dt not in allowed or ctx.in_dtypes[0] != dt:
        raise LoweringDeclined(f"{op} of {dt}")
    xs = ctx.in_shape(0)
    if len(xs) < 3:
        raise LoweringDeclined("global pooling needs spatial axes")
    planes, n = xs[0] * xs[1], prod(xs[2:])
    if planes == 0:
        return
    if n == 0:
        raise LoweringDeclined("global pooling over an empty plane")
    kb = ctx.kb
    if op == "GlobalMaxPool":
        red = max_reducer(dt)
    elif op == "GlobalAveragePool":
        red = sum_reducer(dt, float(n))
    else:
        red = lp_reducer(kb, dt, int(ctx.attrs.p if ctx.attrs.p is not None else 2))
    lanes = dtype_lanes(ctx, dt)
    width = global_width(n, lanes)
    x, y = ctx.x(0), ctx.y(0)
    lanes_buf = ctx.scratch(dt, planes * width) if width > 1 else None
    with kb.loop(planes, kind=ctx.outer_kind(planes * n), hint="pl") as pl:
        base = kb.let(pl * n, "base")
        if lanes_buf is not None:
            with kb.loop(width, kind="vector", width=width, hint="j") as j:
                part = kb.local(dt, red.init, "part")
                with kb.loop(n // width, hint="k") as k:
                    kb.assign(part, red.step(part, x[base + k * width + j]))
                lanes_buf[pl * width + j] = part
        acc = kb.local(dt, red.init)
        if lanes_buf is not None:
            with kb.loop(width, hint="j") as j:
                kb.assign(acc, red.combine(acc, lanes_buf[pl * width + j]))
        done = n // width * width if width > 1 else 0
        if done < n:
            with kb.loop(n, start=done, hint="t") as t:
                kb.assign(acc, red.step(acc, x[base + t]))
        y[pl] = red.finish(acc)


__all__ = ["PoolGeometry", "lower_global_pool", "lower_pool", "pool_geometry"]
