"""The operands of the convolution kernels: geometry, input source, weights and epilogue.

``Geometry`` is a convolution's static shape lifted to three spatial axes. A ``Source``
says where a tap reads: the input in place, or a zero-padded, phase-split copy made at the
start of the kernel (``padded_source``) so tiles read contiguous input without border
checks. ``Weights`` reads constant weights repacked at compile time (one tap's ``rows``
weights side by side) or runtime weights in their own layout. ``Epilogue`` starts the
accumulators at the bias and finishes them: FusedConv's residual and activation, then the
store.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from torsh_gen.backends.kernel.builder import BufferRef, KernelBuilder
from torsh_gen.backends.kernel.ir import Cast, Const, Expr, ExprLike, idx
from torsh_gen.backends.kernel.lower import LowerCtx, LoweringDeclined, prod
from torsh_gen.backends.kernel.lower.scalar_ops import activation
from torsh_gen.backends.kernel.lower.tiling import (
    Triple,
    axis,
    fold,
    lift,
    split_index,
    vector_width,
    when,
)
from torsh_gen.ops.nn import conv_pads, spatial_params
from torsh_gen.ops.registry import Attrs

#: Fewest taps per phase of a kernel row that a rolled tap loop needs (``rolls``). Node 20,
#: 3x3 stride 2 (runs of 2 and 1) from 56: 1.15x onnxruntime-web unrolled, 1.49x rolled.
ROLLED_MIN_TAPS = 3


@dataclass(frozen=True)
class Geometry:
    """A convolution's static shape, lifted to three spatial axes (D, H, W)."""

    batch: int
    cin: int
    cout: int
    group: int
    size: Triple
    kernel: Triple
    strides: Triple
    dilations: Triple
    begin: Triple
    out: Triple

    @property
    def cin_g(self) -> int:
        """Input channels per group."""
        return self.cin // self.group

    @property
    def cout_g(self) -> int:
        """Output channels per group."""
        return self.cout // self.group

    @property
    def taps(self) -> int:
        """Kernel positions per input channel."""
        return prod(self.kernel)

    @property
    def pointwise(self) -> bool:
        """A 1x1 convolution with stride 1 and no padding: a GEMM over positions."""
        return (
            self.taps == 1
            and self.strides == (1, 1, 1)
            and self.begin == (0, 0, 0)
            and self.size == self.out
        )

    @property
    def depthwise(self) -> bool:
        """One input and one output channel per group."""
        return self.cin_g == 1 and self.cout_g == 1


def conv_geometry(xs: tuple[int, ...], ws: tuple[int, ...], attrs: Attrs) -> Geometry:
    """The geometry of a convolution of input shape ``xs`` by weights ``ws`` (ONNX rules)."""
    nsp = len(xs) - 2
    if nsp not in (1, 2, 3) or len(ws) != len(xs):
        raise LoweringDeclined(f"{nsp}-d convolution (1-d to 3-d are lowered)")
    kernel = list(attrs.kernel_shape or ws[2:])
    group = int(attrs.group or 1)
    if kernel != list(ws[2:]) or xs[1] % group or ws[0] % group or ws[1] * group != xs[1]:
        raise LoweringDeclined(
            "weight shape does not match the input channels, group or kernel_shape"
        )
    strides, dilations, pads = spatial_params(attrs, nsp)
    if min(strides + dilations) < 1 or min(pads) < 0:
        raise LoweringDeclined("non-positive strides/dilations or negative pads")
    begin, _end, out = conv_pads(
        xs[2:], kernel, strides, dilations, pads, attrs.auto_pad or "NOTSET"
    )
    return Geometry(
        xs[0],
        xs[1],
        ws[0],
        group,
        lift(xs[2:], 1),
        lift(kernel, 1),
        lift(strides, 1),
        lift(dilations, 1),
        lift(begin, 0),
        lift(out, 1),
    )


def geometry(ctx: LowerCtx, w: int = 1) -> Geometry:
    """The node's geometry (weights at input ``w``), checked against its output shape."""
    geo = conv_geometry(ctx.in_shape(0), ctx.in_shape(w), ctx.attrs)
    ys = ctx.out_shape(0)
    want = (geo.batch, geo.cout) + geo.out[3 - (len(ys) - 2) :]
    if tuple(ys) != want:
        raise LoweringDeclined(f"output shape {ys} does not match the convolution's {want}")
    return geo


def flattened(geo: Geometry) -> Geometry:
    """A pointwise convolution as a 1-d one over all positions (same memory layout)."""
    p = prod(geo.out)
    one = (1, 1, 1)
    return Geometry(
        geo.batch, geo.cin, geo.cout, geo.group, (1, 1, p), one, one, one, (0, 0, 0), (1, 1, p)
    )


def reads_in_place(geo: Geometry) -> bool:
    """No pads, horizontal stride 1 and every tap inside the input: no padded copy needed."""
    fits = all(
        (o - 1) * s + (k - 1) * d < n
        for o, s, k, d, n in zip(geo.out, geo.strides, geo.kernel, geo.dilations, geo.size)
    )
    return fits and geo.begin == (0, 0, 0) and geo.strides[2] == 1


# --------------------------------------------------------------------------- operands
@dataclass(frozen=True)
class Source:
    """Where tap ``(z, y, col)`` of channel ``c`` of image ``n`` is read: the input itself
    or its padded copy (both NCDHW; ``wide_row`` relies on rows following one another).

    ``z`` and ``y`` are padded row coordinates; ``col`` is the tap's column offset
    ``kx * dilation``; the column's phase and slot follow the horizontal ``step``.
    """

    buf: BufferRef
    image: int
    cs: int
    zs: int
    ys: int
    phase: int
    step: int

    def offset(self, col: int) -> int:
        """Where column offset ``col`` lands in a row of this source: its phase's start
        plus its slot."""
        return (col % self.step) * self.phase + col // self.step

    def load(self, n: Expr, c: Expr, z: Expr, y: Expr, col: int, ox: Expr) -> Expr:
        """The input under output position ``ox`` for this tap."""
        return self.load_at(n, c, z, y, self.offset(col), ox)

    def load_at(self, n: Expr, c: Expr, z: Expr, y: Expr, off: ExprLike, ox: Expr) -> Expr:
        """The input ``off`` elements into the row past output position ``ox`` (``off``
        from ``offset``, or moving with a loop over taps of one phase)."""
        base = fold(n * self.image + c * self.cs + z * self.zs + y * self.ys)
        return self.buf[base + shifted(ox, off)]


def shifted(index: Expr, off: ExprLike) -> Expr:
    """``index + off``: a constant ``off`` stays a separate term (0: none), one that moves
    with a loop over taps is folded in."""
    if isinstance(off, int):
        return index + off if off else index
    return fold(index + off)


def raw_source(ctx: LowerCtx, geo: Geometry) -> Source:
    """The input read in place."""
    d, h, w = geo.size
    return Source(ctx.x(0), geo.cin * d * h * w, d * h * w, h * w, w, 0, 1)


def padded_source(ctx: LowerCtx, geo: Geometry) -> Source:
    """Copy the input into a zero-padded, phase-split workspace and describe it.

    Only what the taps read is written: the phases some ``kx`` lands on, and with a kernel
    of height (depth) 1 only the rows a stride visits (a 1x1 stride-2 convolution copies a
    quarter of its input)."""
    kb = ctx.kb
    dp, hp, wp = [
        (o - 1) * s + (k - 1) * d + 1
        for o, s, k, d in zip(geo.out, geo.strides, geo.kernel, geo.dilations)
    ]
    step = geo.strides[2]
    slots = -(-wp // step)
    row = step * slots
    plane = dp * hp * row
    buf = ctx.scratch(ctx.out_dtypes[0], geo.batch * geo.cin * plane)
    src = Source(buf, geo.cin * plane, plane, hp * row, row, slots, step)
    phases = sorted({kx * geo.dilations[2] % step for kx in range(geo.kernel[2])})
    # rows visited: every row, or with a kernel of extent 1 only each stride's first
    zstep, ystep = [s if k == 1 else 1 for s, k in zip(geo.strides[:2], geo.kernel[:2])]
    planes = geo.batch * geo.cin
    with kb.loop(planes, kind=ctx.outer_kind(planes * plane), hint="ch") as ch:
        n, c = split_index(kb, ch, [geo.batch, geo.cin])
        with axis(kb, -(-dp // zstep), "z") as iz, axis(kb, -(-hp // ystep), "y") as iy:
            z, y = fold(iz * zstep), fold(iy * ystep)
            dst = kb.let(fold(n * src.image + c * src.cs + z * src.zs + y * src.ys), "dst")
            _copy_row(ctx, geo, src, (ch, z, y), dst, phases)
    return src


def _copy_row(
    ctx: LowerCtx,
    geo: Geometry,
    src: Source,
    at: tuple[Expr, Expr, Expr],
    dst: Expr,
    phases: list[int],
) -> None:
    """Padded row ``(z, y)`` of plane ``ch``: its phases from the input, or zeros."""
    kb, x = ctx.kb, ctx.x(0)
    ch, z, y = at
    d, h, w = geo.size
    bz, by, bx = geo.begin
    step, slots = src.step, src.phase
    dp, hp = src.cs // src.zs, src.zs // src.ys
    lanes = ctx.sched.lanes
    zero = Const(0.0, ctx.out_dtypes[0])
    conds = []
    if bz > 0 or dp > bz + d:
        conds += [z >= bz, z < bz + d]
    if by > 0 or hp > by + h:
        conds += [y >= by, y < by + h]
    with when(kb, conds):
        base = kb.let(fold(ch * (d * h * w) + (z - bz) * (h * w) + (y - by) * w), "src")
        for ph in phases:
            lo = min(slots, max(0, -(-(bx - ph) // step)))
            hi = max(lo, min(slots, -(-(w + bx - ph) // step)))
            out = fold(dst + ph * slots)
            _fill(kb, src.buf, out, 0, lo, zero, lanes)
            width = vector_width(hi - lo, lanes)
            with kb.loop(hi, start=lo, kind="vector", width=width, hint="j") as j:
                src.buf[out + j] = x[fold(base + (ph - bx)) + (j * step if step > 1 else j)]
            _fill(kb, src.buf, out, hi, slots, zero, lanes)
    if conds:
        with kb.else_():
            for ph in phases:
                _fill(kb, src.buf, fold(dst + ph * slots), 0, slots, zero, lanes)


def _fill(
    kb: KernelBuilder, buf: BufferRef, base: Expr, lo: int, hi: int, value: Expr, lanes: int
) -> None:
    if hi > lo:
        with kb.loop(
            hi, start=lo, kind="vector", width=vector_width(hi - lo, lanes), hint="j"
        ) as j:
            buf[base + j] = value


@dataclass(frozen=True)
class Weights:
    """How the tile reads weight ``(group, block, in channel, tap, row)``: from the packed
    copy (rows side by side) when the weights are constant, else from the input as is."""

    buf: BufferRef
    packed: bool
    geo: Geometry
    rows: int

    def at(self, gi: Expr, ob: Expr, ic: Expr, tap: ExprLike, r: int) -> Expr:
        """The weight of output channel ``ob * rows + r`` of group ``gi``."""
        g = self.geo
        if self.packed:
            blocks = -(-g.cout_g // self.rows)
            return self.buf[
                fold((((gi * blocks + ob) * g.cin_g + ic) * g.taps + tap) * self.rows + r)
            ]
        oc = gi * g.cout_g + ob * self.rows + r
        return self.buf[fold((oc * g.cin_g + ic) * g.taps + tap)]


def weights(ctx: LowerCtx, geo: Geometry, rows: int) -> Weights:
    """Pack constant weights as (group, block, in channel, tap, row); else read input 1."""
    w = ctx.const(1)
    if w is None or rows == 1:
        return Weights(ctx.x(1), False, geo, rows)
    blocks = -(-geo.cout_g // rows)
    wr = np.asarray(w).reshape(geo.group, geo.cout_g, geo.cin_g, geo.taps)
    wr = np.pad(wr, ((0, 0), (0, blocks * rows - geo.cout_g), (0, 0), (0, 0)))
    packed = wr.reshape(geo.group, blocks, rows, geo.cin_g, geo.taps).transpose(0, 1, 3, 4, 2)
    return Weights(ctx.weight(packed, ctx.out_dtypes[0]), True, geo, rows)


@dataclass
class Epilogue:
    """Bias (the accumulators' start), residual, activation and the store."""

    ctx: LowerCtx
    geo: Geometry
    #: when positions run over whole source rows of this length (``wide_row``), 0 otherwise
    row: int = 0

    def init(self, oc: Expr) -> Expr:
        """The accumulator's first value: the bias of output channel ``oc``, or 0."""
        if self.ctx.has(2):
            return self.ctx.x(2)[oc]
        return Const(0.0, self.ctx.out_dtypes[0])

    def store(self, acc: Expr, n: Expr, oc: Expr, pos: Expr) -> None:
        """Finish the value of output ``(n, oc, pos)`` and write it."""
        ctx, kb = self.ctx, self.ctx.kb
        if self.row:  # position q of the wide rows is output (q // row, q % row)
            oy = Cast(Cast(pos, "i32") // self.row, "i64")  # 32-bit division: cheaper vectors
            pos = pos - oy * (self.row - self.geo.out[2])
        i = kb.let(fold((n * self.geo.cout + oc) * prod(self.geo.out)) + pos, "o")
        v = acc
        if ctx.node.op_type == "FusedConv":
            if ctx.has(3):
                v = v + ctx.x(3)[i]
            v = activation(
                kb, v, ctx.attrs.activation or "", list(ctx.attrs.activation_params or [])
            )
        ctx.y(0)[i] = v


@dataclass(frozen=True)
class TapRun:
    """Taps ``first, first + every, ...`` (``count`` of them) of one kernel row, whose
    columns all land in one phase of the source, ``advance`` elements apart."""

    first: int
    every: int
    count: int
    start: int
    advance: int

    def kx(self, j: Expr) -> ExprLike:
        """The ``j``-th tap's kernel column."""
        return fold(self.first + j * self.every) if self.count > 1 else self.first

    def offset(self, j: Expr) -> ExprLike:
        """Where the ``j``-th tap reads in a source row (``Source.offset``)."""
        return fold(self.start + j * self.advance) if self.count > 1 else self.start


def tap_runs(kw: int, dx: int, src: Source, rolled: bool) -> list[TapRun]:
    """A kernel row's taps: one run per tap (unrolled), or with ``rolled`` one run per
    phase of the source, whose taps the tile loops over.

    With horizontal stride ``s`` the source row is split into phases, and tap ``kx`` reads
    column ``kx * dx`` in phase ``kx * dx % s``. Taps ``every = s / gcd(dx, s)`` apart share
    a phase, and there their reads move by ``dx * every / s`` elements per tap, so a loop
    over them has affine addresses (a loop over every ``kx`` would need a division)."""
    if not rolled:
        return [TapRun(kx, 1, 1, src.offset(kx * dx), 0) for kx in range(kw)]
    every = src.step // math.gcd(dx, src.step)
    return [
        TapRun(k0, every, -(-(kw - k0) // every), src.offset(k0 * dx), dx * every // src.step)
        for k0 in range(min(every, kw))
    ]


@contextlib.contextmanager
def rolled_axis(kb: KernelBuilder, n: int, hint: str) -> Iterator[Expr]:
    """A loop over ``n`` that LLVM must not unroll, or the constant 0 when ``n`` is 1."""
    if n == 1:
        yield idx(0)
        return
    with kb.loop(n, kind="rolled", hint=hint) as v:
        yield v


def rolls(geo: Geometry, padded: bool) -> bool:
    """Whether the taps of a kernel row are worth a rolled loop: every phase's run has at
    least ``ROLLED_MIN_TAPS`` of them (3x3 stride 1, 5x5, 7x7 stride 2; a 3x3 stride-2
    kernel's runs of 2 and 1 stay unrolled)."""
    step = geo.strides[2] if padded else 1
    every = step // math.gcd(geo.dilations[2], step)
    return geo.kernel[2] // every >= ROLLED_MIN_TAPS
