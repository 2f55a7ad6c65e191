"""Convolutions with the vector across output channels (16-lane targets, wasm32).

The row-vectorized tile of ``conv.py`` runs its vectors along the output row, so a row
that is not a multiple of the vector wastes lanes: 56, 28, 14 and 7 wide rows fill 7/8 of
16-lane AVX-512 vectors or less (7 of 16 on the last ResNet stage), and every partial
block of output channels costs a tile of its own. Here the vector runs across ``width``
output channels instead (a multiple of the lanes, so no lane is ever idle when the channel
count is one), and a tile holds ``positions`` consecutive output positions, taken in
row-major order across row ends:

    for each (image, chunk of positions, block of ``width`` output channels):   [threads]
      for each tile of ``positions`` positions q0 .. q0 + positions - 1:
        acc[j] = bias[block]                                   (one vector per position)
        for ic, ky, kx:
          w = weights[block, ic, tap, :]                       (one vector load)
          acc[j] += input[ic, row(q0 + j) + ky, col(q0 + j) + kx] * w   (a broadcast)
        output[block, q0 + j] = epilogue(acc[j])              (stored lane by lane)

Each weight vector feeds ``positions`` fused multiply-adds and each broadcast one, the
same register budget as the row tile; the per-lane stores cost one store per output
element, against ``cin * taps`` multiply-adds that produce it. Constant weights are
packed at compile time as (block, in channel, tap, width). The input is read in place or
from the padded, phase-split copy of ``conv_operands.padded_source``, so strides and pads
need no checks. Only 2-D, ungrouped convolutions with constant float32 weights, a channel
count that is a multiple of the lanes and at least ``MIN_REDUCTION`` multiply-adds per
output take this path; 1x1 convolutions are GEMMs (strided ones over a dense copy of the
positions they visit, see ``conv.subsampled``) except small strided ones, and the rest keep
the row tile.
"""

from __future__ import annotations

from torsh_gen.backends.kernel.builder import BufferRef
from torsh_gen.backends.kernel.ir import Expr, call, eq, idx, minimum
from torsh_gen.backends.kernel.lower import LowerCtx, prod
from torsh_gen.backends.kernel.lower.conv_operands import (
    Epilogue,
    Geometry,
    Source,
    rolled_axis,
    shifted,
    tap_runs,
    weights,
)
from torsh_gen.backends.kernel.lower.tiling import axis, balanced, fold, split_index

#: Input bytes one chunk of positions reads (kept in a core's L2 with the block's weights).
CHUNK_INPUT_BYTES = 256 * 1024
#: Narrowest vectors that take this path unless the target says otherwise: AVX-512's 16
#: float lanes. With AVX2's 8 the row tile wastes fewer lanes and stays ahead (resnet18
#: single-thread: 63.8 ms row tiles, 66.2 ms channel tiles); wasm32 (4 lanes) turns it on
#: in its target data (V8: inception_v1 206.7 -> 191.3 ms, resnet50 541 -> 522 ms).
MIN_LANES = 16
#: Fewest multiply-adds per output (in channels x taps) that pay for the per-lane stores;
#: below it (a 3-channel stem) the row tile's vector stores win.
MIN_REDUCTION = 256


def applies(
    geo: Geometry, lanes: int, dtype: str, constant_weights: bool, enabled: bool | None = None
) -> bool:
    """Whether ``geo`` takes the channel-vector tile on a target of ``lanes`` lanes
    (``enabled``: the target's choice, ``Schedule.channel_tiles``; None: by the lanes)."""
    return (
        (lanes >= MIN_LANES if enabled is None else enabled)
        and lanes >= 4
        and dtype == "f32"
        and constant_weights
        and geo.group == 1
        and not geo.pointwise
        and geo.cin * geo.taps >= MIN_REDUCTION
        and geo.cout % lanes == 0
        and geo.out[0] == 1
        and geo.kernel[0] == 1
    )


def channel_tiles(
    ctx: LowerCtx, geo: Geometry, src: Source, lanes: int, budget: int, rolled: bool = False
) -> None:
    """The convolution of ``geo`` (``applies`` holds) reading ``src``: ``budget`` vector
    registers of accumulators per tile; with ``rolled`` the taps along a kernel row run as
    rolled loops (``conv_operands.tap_runs``)."""
    kb = ctx.kb
    width = 2 * lanes if geo.cout % (2 * lanes) == 0 else lanes
    most = max(1, budget // (width // lanes))
    wts = weights(ctx, geo, width)
    ep = Epilogue(ctx, geo)
    _, oh, ow = geo.out
    npos = oh * ow
    # tiles as even as the budget allows: 49 positions as 10+10+10+10+9, not 4x12 + 1
    positions = -(-npos // -(-npos // most))
    full, tail = divmod(npos, positions)
    row_bytes = geo.cin * src.ys * geo.strides[1] * 4
    per_chunk = max(1, (CHUNK_INPUT_BYTES // max(row_bytes, 1)) * ow // positions)
    per_chunk = balanced(full, per_chunk) if full else per_chunk
    chunks = max(1, -(-full // per_chunk))
    blocks = geo.cout // width
    work = npos * geo.batch * geo.cout * geo.cin * geo.taps
    extents = [geo.batch, chunks, blocks]
    with kb.loop(prod(extents), kind=ctx.outer_kind(work), hint="job") as job:
        n, qc, ob = split_index(kb, job, extents)
        if full:
            t0 = kb.let(qc * per_chunk, "t0")
            with kb.loop(minimum(t0 + per_chunk, idx(full)), start=t0, hint="t") as t:
                at = (n, ob, kb.let(t * positions, "q0"))
                _tile(ctx, geo, src, wts.buf, ep, at, width, positions, rolled)
        if tail:
            with kb.if_(eq(qc, chunks - 1)):
                _tile(ctx, geo, src, wts.buf, ep, (n, ob, idx(full * positions)), width, tail, rolled)


def _tile(
    ctx: LowerCtx,
    geo: Geometry,
    src: Source,
    wbuf: BufferRef,
    ep: Epilogue,
    at: tuple[Expr, Expr, Expr],
    width: int,
    count: int,
    rolled: bool,
) -> None:
    """``count`` positions from ``q0`` x ``width`` output channels of block ``ob``."""
    kb = ctx.kb
    n, ob, q0 = at
    _, _, ow = geo.out
    _, sy, _ = geo.strides
    _, dy, dx = geo.dilations
    _, kh, kw = geo.kernel
    bases = []
    for j in range(count):
        q = fold(q0 + j)
        oy, ox = q // ow, q % ow
        bases.append(kb.let(fold(n * src.image + oy * (sy * src.ys) + ox), "b"))
    with kb.loop(width, kind="vector", width=width, hint="r") as r:
        oc = fold(ob * width) + r
        accs = [kb.local(ctx.out_dtypes[0], ep.init(oc)) for _ in range(count)]
        with axis(kb, geo.cin, "ic") as ic, axis(kb, kh, "ky") as ky:
            row = kb.let(fold(ic * src.cs + ky * (dy * src.ys)), "row")
            for run in tap_runs(kw, dx, src, rolled):
                with rolled_axis(kb, run.count, "kx") as j:
                    off, tap = run.offset(j), ky * kw + run.kx(j)
                    w = kb.let(wbuf[fold(((ob * geo.cin + ic) * geo.taps + tap) * width) + r], "w")
                    for acc, base in zip(accs, bases):
                        kb.assign(acc, call("fma", src.buf[shifted(base + row, off)], w, acc))
        for j, acc in enumerate(accs):
            ep.store(acc, n, oc, fold(q0 + j))
