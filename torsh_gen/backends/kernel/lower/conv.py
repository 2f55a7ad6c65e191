"""Conv and FusedConv (NCHW, float): tiled direct convolutions, no im2col.

Every convolution is a direct loop nest. A tile holds ``rows`` output channels x ``pair``
output rows x ``width`` contiguous output positions in per-lane accumulators (the vector
loop runs over the output x axis, the contiguous one). The reduction over input channels
and kernel taps is a serial loop inside the tile: each vector load of input feeds ``rows``
fused multiply-adds, each broadcast weight feeds every row and register of the tile.
FusedConv's bias (the accumulators' start), residual ``Z`` and activation are applied to
the accumulators before the single store (the epilogue).

The schedule (``schedule``) depends only on the static shapes and the target's lanes:

- **pointwise** (1x1 kernel, stride 1, no pads): a GEMM of the weights (out x in channels)
  with the input read in place as (in channels x positions), spatial axes flattened into
  one long row.
- **direct** (any kernel, strides, dilations, groups): the input is first copied into a
  zero-padded workspace whose rows are split into ``stride`` phases (column ``c`` of a
  padded row goes to phase ``c % s``, slot ``c // s``), so every tap reads contiguous
  input even with horizontal stride 2, and tiles need no border checks. Unpadded stride-1
  convolutions read the input in place. Stride-1 convolutions with rows narrower than the
  tile run over whole source rows as one long row (``wide_row``).
- **subsampled pointwise** (1x1 kernel with a stride, no pads, ungrouped 2-D): the
  positions the stride visits are copied side by side into scratch (a quarter of the input
  at stride 2) and the pointwise GEMM runs over them (``subsampled``); ResNet's shortcuts.
- **depthwise** (one input and one output channel per group): one channel per job, its
  taps' weights held in registers for the whole plane.
- **channel tiles** (16-lane targets, ungrouped 2-D convolutions with enough multiply-adds
  per output and a channel count that is a multiple of the lanes): the vector runs across
  output channels instead of along the row (``conv_channels``), so rows of 56, 28, 14 or 7
  waste no lanes.

Rows are covered by blocks of exactly ``width`` lanes and one narrower block moved back to
end at the row's end (it recomputes a few outputs instead of running a scalar remainder);
that is safe because a convolution's output never shares memory with its inputs (the
memory plan gives Conv/FusedConv outputs fresh arenas). Output positions are cut into
chunks whose input fits a core's L2, all of about one size (``tiling.balanced``: threads
take contiguous runs of jobs, so a short last chunk would idle a core); jobs (image, group,
chunk, channel block) run over the target's threads with the channel block fastest, so
consecutive jobs share the chunk.
Constant weights are repacked at compile time so that one tap's ``rows`` weights sit side
by side.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

from torsh_gen.backends.kernel.builder import KernelBuilder
from torsh_gen.backends.kernel.ir import (
    Const,
    Expr,
    ExprLike,
    call,
    eq,
    idx,
    minimum,
)
from torsh_gen.backends.kernel.lower import LowerCtx, LoweringDeclined, conv_channels, lowers, prod
from torsh_gen.backends.kernel.lower.conv_operands import (
    Epilogue,
    Geometry,
    Source,
    Weights,
    conv_geometry,
    flattened,
    geometry,
    padded_source,
    raw_source,
    reads_in_place,
    rolled_axis,
    rolls,
    tap_runs,
    weights,
)
from torsh_gen.backends.kernel.lower.tiling import (
    axis,
    balanced,
    fold,
    narrow_width,
    row_blocks,
    split_index,
    vector_width,
)

#: Vector registers' worth of accumulators a tile may hold: 12 fits 16-register files
#: (AVX2, SSE, wasm); 512-bit registers (AVX-512, 32 of them) take 24.
ACC_REGISTERS = 12
ACC_REGISTERS_WIDE = 24
#: Vector registers a tile spans along one long row (pointwise GEMMs, wide rows, 1-d).
LONG_ROW_REGISTERS = 4
#: Vector registers a row tile spans along an output row (target data may say fewer).
ROW_REGISTERS = 2
#: Output rows per tile (each weight broadcast then feeds that many rows).
ROW_PAIR = 2
#: Bytes of input one chunk of output positions reads (kept in a core's L2 cache).
L2_BUDGET = 256 * 1024
#: Strided 1x1 convolutions are GEMMs over a dense copy of the positions they visit
#: (``subsampled``), except small ones that channel tiles do better: under four vectors of
#: output positions and fewer input channels than this (AVX-512, single thread: 256 -> 512
#: channels at 7x7 0.27 ms in channel tiles, 0.29 as a GEMM; 1024 -> 2048 at 7x7 5.1 against
#: 4.2 ms).
SUBSAMPLE_MIN_CIN = 1024
#: Targets that turn channel tiles on in their data (wasm32) use them only where the row
#: tile would leave at least this share of its lanes idle. Node 20 beside onnxruntime-web,
#: 3x3 layers, row / channel tiles: rows of 56 0.99 / 1.12, 28 1.03 / 1.15, 27 1.05 / 1.12,
#: 55 1.14 / 1.17 (no lane idle in rows: row tiles win); 14 1.16 / 1.07 (1/8 idle).
CHANNEL_TILES_MIN_WASTE = 0.1
#: Most taps whose depthwise weights are kept in registers for a whole plane.
DEPTHWISE_HELD_TAPS = 32


# --------------------------------------------------------------------------- kernels
@dataclass(frozen=True)
class Chunks:
    """How the output positions split so one chunk's input stays in a core's L2 while every
    block of output channels passes over it.

    Row mode: ``count`` chunks of ``rows`` output rows. Span mode (one long row of
    positions): chunk ``c`` covers positions ``c * stride`` on, ``span`` of them (``last``
    for the final chunk). With wide rows a chunk is whole output rows and ends at its last
    row's last output, so the positions past a row's end land in the same chunk.
    """

    count: int
    rows: int = 0
    stride: int = 0
    span: int = 0
    last: int = 0


def chunks(geo: Geometry, row: int, width: int, itemsize: int, pair: int, lanes: int) -> Chunks:
    """Chunks of about ``L2_BUDGET`` bytes of input each (whole ``pair``s of rows), as even
    as ``balanced`` makes them: spans of positions in whole vectors of ``lanes``. A span that is not whole tiles ends in a narrower block (``row_blocks``):
    squeezenet's 512 -> 1000 classifier at 13x13 split its 169 positions 128 / 41 in whole
    64-lane tiles (1.43x on two cores) and splits them 96 / 73 in vectors."""
    od, oh, ow = geo.out
    if od * oh == 1:
        per_col = geo.cin_g * geo.strides[2] * itemsize
        cols = max(1, L2_BUDGET // (per_col * max(width, 1))) * max(width, 1)
        if cols >= ow:
            return Chunks(1, stride=ow, span=ow, last=ow)
        cols = balanced(ow, cols, min(width, lanes))
        count = -(-ow // cols)
        return Chunks(count, stride=cols, span=cols, last=ow - (count - 1) * cols)
    per_row = geo.cin_g * geo.strides[1] * row * itemsize
    rows = max(pair, L2_BUDGET // per_row // pair * pair)
    rows = balanced(od * oh, rows, pair)
    return Chunks(-(-(od * oh) // rows), min(rows, od * oh))


def wide_chunks(geo: Geometry, row: int, itemsize: int) -> Chunks:
    """Span-mode chunks of whole output rows over the wide positions ``oy * row + ox``."""
    _, oh, ow = geo.out
    k = balanced(oh, max(1, min(oh, L2_BUDGET // (geo.cin_g * row * itemsize))))
    count = -(-oh // k)
    return Chunks(
        count, stride=k * row, span=(k - 1) * row + ow, last=(oh - (count - 1) * k - 1) * row + ow
    )


@dataclass(frozen=True)
class Layout:
    """A convolution's schedule, decided from its geometry and the target's lanes alone:
    the geometry the tiles run over (pointwise: flattened; wide rows: one long row), the
    tile (``width`` lanes x ``rows`` channels x ``pair`` output rows), the chunks, and
    whether the taps along a kernel row run as a loop LLVM keeps rolled (``rolled``)."""

    geo: Geometry
    padded: bool
    width: int
    rows: int = 1
    pair: int = 1
    chunks: Chunks = Chunks(1)
    wide: int = 0
    rolled: bool = False


@dataclass(frozen=True)
class Plan:
    """A layout and the operands its tiles read and write."""

    lay: Layout
    src: Source
    wts: Weights
    ep: Epilogue

    @property
    def geo(self) -> Geometry:
        """The geometry the tiles run over."""
        return self.lay.geo


def tiled(ctx: LowerCtx, plan: Plan) -> None:
    """Jobs of (image, group, position chunk, block of output channels) over threads; the
    channel block varies fastest so a thread's consecutive jobs share the chunk's input."""
    kb, geo = ctx.kb, plan.geo
    rows = plan.wts.rows
    full, tail = divmod(geo.cout_g, rows)
    blocks = full + (tail > 0)
    work = prod(geo.out) * geo.batch * geo.cout * geo.cin_g * geo.taps
    extents = [geo.batch, geo.group, plan.lay.chunks.count, blocks]
    with kb.loop(prod(extents), kind=ctx.outer_kind(work), hint="job") as job:
        n, gi, rc, ob = split_index(kb, job, extents)
        if tail and full:
            with kb.if_(eq(ob, full)):
                tile(ctx, plan, (n, gi, rc, ob), tail)
            with kb.else_():
                tile(ctx, plan, (n, gi, rc, ob), rows)
        else:
            tile(ctx, plan, (n, gi, rc, ob), tail or rows)


def chunk_positions(
    kb: KernelBuilder, plan: Plan, rc: Expr, body: Callable[[Expr, list[Expr], Expr], None]
) -> None:
    """``body(oz, oys, ox)`` over the output positions of chunk ``rc``, ``plan.pair`` rows
    at a time where the rows allow (``oys`` lists the rows of one tile)."""
    od, oh, ow = plan.geo.out
    ch, width = plan.lay.chunks, plan.lay.width
    if ch.span:
        x0 = kb.let(rc * ch.stride, "x0") if ch.count > 1 else idx(0)

        def span(n: int) -> None:
            row_blocks(kb, n, width, lambda x: body(idx(0), [idx(0)], fold(x0 + x)))

        if ch.count > 1 and ch.last != ch.span:
            with kb.if_(eq(rc, ch.count - 1)):
                span(ch.last)
            with kb.else_():
                span(ch.span)
        else:
            span(ch.span)
        return
    pair = plan.lay.pair

    def rows(oz: Expr, first: Expr, count: int) -> None:
        oys = [first] + [kb.let(first + i, "oy") for i in range(1, count)]
        row_blocks(kb, ow, width, lambda ox: body(oz, oys, ox))

    if ch.count == 1:
        with axis(kb, od, "oz") as oz:
            if oh // pair > 0:
                with axis(kb, oh // pair, "oy") as oy:
                    rows(oz, kb.let(fold(oy * pair), "oy") if pair > 1 else oy, pair)
            if oh % pair:
                rows(oz, idx(oh - oh % pair), oh % pair)
        return
    if pair > 1:  # od == 1: chunks of an even number of rows, the last one maybe odd
        r0 = kb.let(rc * ch.rows, "r0")
        with kb.loop((minimum(r0 + ch.rows, oh) - r0) // pair, hint="oy") as oy:
            rows(idx(0), kb.let(r0 + oy * pair, "oy"), pair)
        if oh % pair:
            with kb.if_(eq(rc, ch.count - 1)):
                rows(idx(0), idx(oh - oh % pair), oh % pair)
        return
    r0 = kb.let(rc * ch.rows, "r0")
    with kb.loop(minimum(r0 + ch.rows, od * oh), start=r0, hint="r") as r:
        oz = kb.let(r // oh, "oz") if od > 1 else idx(0)
        rows(oz, kb.let(r % oh, "oy") if od > 1 else r, 1)


def tile(ctx: LowerCtx, plan: Plan, job: tuple[Expr, Expr, Expr, Expr], count: int) -> None:
    """``count`` output channels of one job over the positions of its chunk: each tile holds
    ``count`` x rows x ``width`` accumulators; each weight broadcast feeds every row."""
    kb = ctx.kb
    geo, src, wts, ep = plan.geo, plan.src, plan.wts, plan.ep
    n, gi, rc, ob = job
    od, oh, ow = geo.out
    sz, sy, _ = geo.strides
    dz, dy, dx = geo.dilations
    kd, kh, kw = geo.kernel
    oc0 = kb.let(fold(gi * geo.cout_g + ob * wts.rows), "oc")
    c0 = kb.let(fold(gi * geo.cin_g), "c") if geo.group > 1 else idx(0)

    def body(oz: Expr, oys: list[Expr], ox: Expr) -> None:
        accs = [[kb.local(ctx.out_dtypes[0], ep.init(oc0 + r)) for _ in oys] for r in range(count)]
        with axis(kb, geo.cin_g, "ic") as ic, axis(kb, kd, "kz") as kz, axis(kb, kh, "ky") as ky:
            z = oz * sz + kz * dz
            for run in tap_runs(kw, dx, src, plan.lay.rolled):
                with rolled_axis(kb, run.count, "kx") as j:
                    vs = [
                        kb.let(src.load_at(n, fold(c0 + ic), z, oy * sy + ky * dy, run.offset(j), ox), "v")
                        for oy in oys
                    ]
                    tap = _tap(geo, kz, ky, run.kx(j))
                    for r in range(count):
                        w = (
                            kb.let(wts.at(gi, ob, ic, tap, r), "w")
                            if len(oys) > 1
                            else wts.at(gi, ob, ic, tap, r)
                        )
                        for acc, v in zip(accs[r], vs):
                            kb.assign(acc, call("fma", w, v, acc))
        for i, oy in enumerate(oys):
            pos = kb.let(fold((oz * oh + oy) * ow + ox), "p")
            for r in range(count):
                ep.store(accs[r][i], n, oc0 + r, pos)

    chunk_positions(kb, plan, rc, body)


def _tap(geo: Geometry, kz: Expr, ky: Expr, kx: ExprLike) -> ExprLike:
    """The flat tap index (a Python int when the taps are constants)."""
    _, kh, kw = geo.kernel
    if isinstance(kz, Const) and isinstance(ky, Const) and isinstance(kx, int):
        return (int(kz.value) * kh + int(ky.value)) * kw + kx
    return (kz * kh + ky) * kw + kx


def depthwise(ctx: LowerCtx, geo: Geometry, src: Source, ep: Epilogue, width: int) -> None:
    """One channel per job; with few taps, their weights stay in registers for the plane."""
    kb = ctx.kb
    od, oh, ow = geo.out
    sz, sy, _ = geo.strides
    dz, dy, dx = geo.dilations
    kd, kh, kw = geo.kernel
    w = ctx.x(1)
    work = prod(geo.out) * geo.batch * geo.cout * geo.taps
    with kb.loop(geo.batch * geo.cin, kind=ctx.outer_kind(work), hint="job") as job:
        n, c = split_index(kb, job, [geo.batch, geo.cin])
        held = geo.taps <= DEPTHWISE_HELD_TAPS
        taps = [kb.let(w[fold(c * geo.taps + t)], "w") for t in range(geo.taps)] if held else []

        def body(oz: Expr, oy: Expr, ox: Expr) -> None:
            acc = kb.local(ctx.out_dtypes[0], ep.init(c))
            if held:
                for t, (kz, ky, kx) in enumerate(
                    itertools.product(range(kd), range(kh), range(kw))
                ):
                    v = src.load(n, c, oz * sz + kz * dz, oy * sy + ky * dy, kx * dx, ox)
                    kb.assign(acc, call("fma", taps[t], v, acc))
            else:
                with axis(kb, kd, "kz") as kz, axis(kb, kh, "ky") as ky:
                    for kx in range(kw):
                        v = src.load(n, c, oz * sz + kz * dz, oy * sy + ky * dy, kx * dx, ox)
                        wt = w[fold(c * geo.taps + _tap(geo, kz, ky, kx))]
                        kb.assign(acc, call("fma", wt, v, acc))
            ep.store(acc, n, c, kb.let(fold((oz * oh + oy) * ow + ox), "p"))

        with axis(kb, od, "oz") as oz, axis(kb, oh, "oy") as oy:
            row_blocks(kb, ow, width, lambda ox: body(oz, oy, ox))


def default_accumulators(lanes: int, itemsize: int) -> int:
    """Accumulator registers a tile may hold when the target does not say: 24 with 512-bit
    registers (32 of them), else 12."""
    return ACC_REGISTERS_WIDE if lanes * itemsize >= 64 else ACC_REGISTERS


def rows_per_tile(
    geo: Geometry, width: int, lanes: int, pair: int, itemsize: int, accumulators: int = 0
) -> int:
    """Output channels per tile: as many as the accumulator registers allow (``accumulators``
    from the target's data, else by vector width)."""
    regs = max(1, -(-width // lanes)) * pair
    budget = accumulators or default_accumulators(lanes, itemsize)
    return max(1, min(geo.cout_g, budget // regs))


def row_cost(n: int, width: int, lanes: int) -> int:
    """Vector instructions per tap and channel that ``row_blocks`` spends on a row of ``n``."""
    if width <= 1:
        return n
    full, rest = divmod(n, width)
    regs = -(-width // lanes)
    return full * regs + (-(-narrow_width(width, rest) // lanes) if rest else 0)


def row_waste(geo: Geometry, lay: Layout, lanes: int) -> float:
    """The share of the lanes the row tiles of ``lay`` compute for nothing (rows that are
    not a multiple of the vector: 14 outputs in two 8-lane blocks waste 1/8)."""
    computed = row_cost(lay.geo.out[2], lay.width, lanes) * min(lanes, lay.width) * lay.geo.out[0] * lay.geo.out[1]
    return 1.0 - prod(geo.out) / max(computed, 1)


def wide_row(geo: Geometry, row: int, width: int, lanes: int, regs: int = ROW_REGISTERS) -> int:
    """The source row length when a stride-1 convolution should run over whole source rows.

    Output rows narrower than the vector tile waste lanes (a 14-wide row fills 14 of 16).
    With stride 1, output ``(oy, ox)`` and source position ``oy * row + ox`` move together,
    so the tile can run over ``q = oy * row + ox`` as one long row: the ``row - OW``
    positions past each row's end are computed and then overwritten, because the epilogue
    stores lane by lane in order and the column they land on belongs to a later ``q``.
    That needs the overhang to fit in one output row, and enough taps per output to pay for
    the lane-by-lane stores.
    """
    od, oh, ow = geo.out
    if od != 1 or oh == 1 or geo.strides != (1, 1, 1) or geo.depthwise or row - ow > ow:
        return 0
    if geo.cin_g * geo.taps < 4 * lanes:
        return 0
    n = (oh - 1) * row + ow
    wide = row_cost(n, vector_width(n, lanes, regs), lanes)
    return row if wide * 10 < oh * row_cost(ow, width, lanes) * 9 else 0


def source_row(geo: Geometry, padded: bool) -> int:
    """Elements per row of what the tiles read: the input, or its padded phase-split copy."""
    if not padded:
        return geo.size[2]
    wp = (geo.out[2] - 1) * geo.strides[2] + (geo.kernel[2] - 1) * geo.dilations[2] + 1
    return -(-wp // geo.strides[2]) * geo.strides[2]


def schedule(
    geo: Geometry,
    lanes: int,
    itemsize: int,
    accumulators: int = 0,
    rolled_accumulators: int = 0,
    row_vectors: int = 0,
    long_row_registers: int = 0,
) -> Layout:
    """The layout of a convolution for vectors of ``lanes`` elements of ``itemsize`` bytes
    (``accumulators``: the target's tile register budget, 0 for the default). With
    ``rolled_accumulators`` (a target's data), kernels wider than one tap loop over the taps
    of a kernel row (``tap_runs``) with that many accumulators. ``row_vectors`` and
    ``long_row_registers`` (target data, 0: the defaults) set the tile's span along a row
    and along one long row of positions."""
    if geo.pointwise:
        geo = flattened(geo)
    padded = not reads_in_place(geo)
    regs = row_vectors or ROW_REGISTERS
    width = vector_width(geo.out[2], lanes, regs)
    if geo.depthwise:
        return Layout(geo, padded, width)
    row = wide_row(geo, source_row(geo, padded), width, lanes, regs)
    parts = wide_chunks(geo, row, itemsize) if row else None
    if row:
        n = (geo.out[1] - 1) * row + geo.out[2]
        geo = Geometry(
            geo.batch,
            geo.cin,
            geo.cout,
            geo.group,
            geo.size,
            geo.kernel,
            (1, 1, 1),
            geo.dilations,
            geo.begin,
            (1, 1, n),
        )
    long_row = (long_row_registers or LONG_ROW_REGISTERS) * lanes
    if geo.out[0] * geo.out[1] == 1 and not row:  # one long row: wider tiles, fewer channels
        width = long_row if geo.out[2] >= long_row else vector_width(geo.out[2], lanes, regs)
    elif row:
        width = vector_width(geo.out[2], lanes, regs)
    pair = ROW_PAIR if geo.out[1] > 1 else 1
    if parts is None:
        parts = chunks(geo, source_row(geo, padded), width, itemsize, pair, lanes)
        if parts.count > 1 and geo.out[0] > 1:  # pairs of rows never straddle a depth slice
            pair = 1
            parts = chunks(geo, source_row(geo, padded), width, itemsize, pair, lanes)
    rolled = bool(rolled_accumulators) and rolls(geo, padded)
    budget = rolled_accumulators if rolled else accumulators
    return Layout(
        geo, padded, width, rows_per_tile(geo, width, lanes, pair, itemsize, budget), pair, parts,
        row, rolled,
    )


def subsampled(geo: Geometry) -> bool:
    """A 1x1, unpadded, ungrouped 2-D convolution with a stride: a GEMM over the positions
    its stride visits once those are copied side by side (``subsampled_source``)."""
    od, oh, ow = geo.out
    return (
        geo.taps == 1 and geo.group == 1 and geo.begin == (0, 0, 0) and geo.strides != (1, 1, 1)
        and od == 1 and geo.size[0] == 1
        and (oh - 1) * geo.strides[1] < geo.size[1] and (ow - 1) * geo.strides[2] < geo.size[2]
    )


def subsampled_source(ctx: LowerCtx, geo: Geometry) -> Source:
    """Copy the input positions a strided 1x1 convolution reads into a dense
    (image, channel, oy, ox) scratch: a quarter of the input at stride 2."""
    kb = ctx.kb
    _, oh, ow = geo.out
    _, sy, sx = geo.strides
    _, h, w = geo.size
    p = oh * ow
    buf = ctx.scratch(ctx.out_dtypes[0], geo.batch * geo.cin * p)
    x = ctx.x(0)
    rows = geo.batch * geo.cin * oh
    with kb.loop(rows, kind=ctx.outer_kind(rows * ow), hint="r") as r:
        src = kb.let(fold((r // oh) * (h * w) + (r % oh) * (sy * w)), "s")
        dst = kb.let(r * ow, "d")
        with kb.loop(ow, kind="vector", width=vector_width(ow, ctx.sched.lanes), hint="j") as j:
            buf[dst + j] = x[src + (j * sx if sx > 1 else j)]
    return Source(buf, geo.cin * p, p, p, p, 0, 1)


@lowers("Conv", "FusedConv")
def lower_conv(ctx: LowerCtx) -> None:
    """Conv/FusedConv as a pointwise GEMM, a depthwise kernel or a tiled direct convolution."""
    dtype = ctx.out_dtypes[0]
    if dtype not in ("f32", "f64") or any(d not in (None, dtype) for d in ctx.in_dtypes):
        raise LoweringDeclined(f"convolution of {dtype} (float32 and float64 are lowered)")
    geo = geometry(ctx)
    if prod(ctx.out_shape(0)) == 0:
        return
    lanes = ctx.sched.lanes if dtype == "f32" else max(1, ctx.sched.lanes // 2)
    itemsize = 4 if dtype == "f32" else 8
    pointwise_budget = ctx.sched.pointwise_accumulators or ctx.sched.accumulators
    budget = pointwise_budget if geo.pointwise else ctx.sched.accumulators
    spans = {"row_vectors": ctx.sched.row_vectors, "long_row_registers": ctx.sched.long_row_registers}
    lay = schedule(geo, lanes, itemsize, budget, ctx.sched.rolled_tap_accumulators, **spans)  # the row tiles' layout
    channels = conv_channels.applies(geo, lanes, dtype, ctx.const(1) is not None, ctx.sched.channel_tiles)
    if channels and ctx.sched.channel_tiles:  # a target's choice: where row tiles waste lanes
        channels = row_waste(geo, lay, lanes) >= CHANNEL_TILES_MIN_WASTE
    if subsampled(geo) and not (channels and prod(geo.out) < 4 * lanes and geo.cin < SUBSAMPLE_MIN_CIN):
        src = subsampled_source(ctx, geo)
        lay = schedule(flattened(geo), lanes, itemsize, pointwise_budget, **spans)
        tiled(ctx, Plan(lay, src, weights(ctx, lay.geo, lay.rows), Epilogue(ctx, lay.geo)))
        return
    if channels:  # the row tiles' layout decided padding and rolled taps for ``geo`` too
        src = padded_source(ctx, geo) if lay.padded else raw_source(ctx, geo)
        acc = ctx.sched.rolled_tap_accumulators if lay.rolled else budget or default_accumulators(lanes, 4)
        conv_channels.channel_tiles(ctx, geo, src, lanes, acc, lay.rolled)
        return
    base = flattened(geo) if geo.pointwise else geo
    src = padded_source(ctx, base) if lay.padded else raw_source(ctx, base)
    ep = Epilogue(ctx, base, lay.wide)
    if geo.depthwise:
        depthwise(ctx, lay.geo, src, ep, lay.width)
        return
    tiled(ctx, Plan(lay, src, weights(ctx, lay.geo, lay.rows), ep))


__all__ = ["Geometry", "Layout", "conv_geometry", "geometry", "lower_conv", "schedule"]
