"""The register-blocked micro-kernel behind every matrix product (see ``linalg.py``).

A product is mostly multiply-adds, so what decides its speed is how many of them run per
load. The output is computed in tiles of ``ROWS`` rows by ``nr`` columns (``NR_VECTORS``
vector registers of the target): the ``ROWS * nr`` accumulators are per-lane locals of a
vector loop over the tile's columns, so they stay in registers while a serial loop over K
does, for every k, one contiguous load of B's row slice and one fma per row with A's
element broadcast. A constant B (a weight) is packed at compile time into panels
``[K][nr]`` so the micro-kernel streams it linearly; a B computed at run time is copied
into that layout in workspace first when several row blocks will read it. The last,
partial panel is computed with narrower vectors. The epilogue (alpha, bias, residual,
Gemm's ``beta * C``, activation) is applied to the accumulators before the tile's store.

Loop order: panels of B outside, blocks of rows inside, so a B panel stays in cache while
every row block of A passes over it; K is cut into slices whose panel part fits in half
of L1 (partial sums go through the output, the epilogue runs on the last slice; not for
integer products whose output type is narrower than the accumulator). Batched products
loop over the batch entries, tiles of all entries in one loop.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

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
    itemsize,
    minimum,
)
from torsh_gen.backends.kernel.lower import LowerCtx, prod
from torsh_gen.backends.kernel.lower.scalar_ops import activation

#: Rows of one output tile.
ROWS = 6
#: Vector registers across one output tile: ROWS x NR_VECTORS accumulators plus the B
#: vectors and one broadcast must fit the register file. Targets with 16-lane float32
#: vectors (AVX-512) have 32 registers; the others are planned for 16 (AVX2, SSE, wasm).
NR_VECTORS = {16: 4}
NR_VECTORS_DEFAULT = 2
#: Bytes of L1 a B panel slice may fill (half of the common 32 KiB).
L1_BYTES = 16384


@dataclass
class Addend:
    """A tensor added in the epilogue: strides per output batch dim, along M and N."""

    buf: BufferRef
    batch: list[int]
    sm: int
    sn: int
    scale: float = 1.0


@dataclass
class Product:
    """One (batched) product ``y = act(alpha * a @ b + addends)`` in element strides:
    element (m, k) of A's batch entry is at ``a_off + m * sam + k * sak``, element (k, n)
    of B's at ``b_off + k * sbk + n * sbn`` (``packed``: panel p, row k, column j at
    ``b_off + p * k * nr + k * nr + j``)."""

    dtype: str
    m: int
    n: int
    k: int
    a: BufferRef
    b: BufferRef
    y: BufferRef
    nr: int
    lanes: int
    sam: int
    sak: int = 1
    sbk: int = 1
    sbn: int = 1
    packed: bool = False
    batch: list[int] = field(default_factory=list)
    a_batch: list[int] = field(default_factory=list)
    b_batch: list[int] = field(default_factory=list)
    alpha: float = 1.0
    addends: list[Addend] = field(default_factory=list)
    act: str = ""
    params: list[float] = field(default_factory=list)
    #: Integer products: A's zero point (scalar), B's by column, and the requantization
    #: that replaces the epilogue (acc, m, n) -> value of y's type.
    a_zp: Expr | None = None
    b_zp: Callable[[Expr], Expr] | None = None
    finish: Callable[[KernelBuilder, Expr, Expr, Expr], Expr] | None = None


@dataclass
class _Offsets:
    """Element offsets of the current batch entry in every operand."""

    a: Expr
    b: Expr
    y: Expr
    addends: list[Expr]


def lanes_for(ctx: LowerCtx, dtype: str) -> int:
    """Lanes of one vector register for ``dtype`` (the schedule counts float32 lanes)."""
    return max(1, ctx.sched.lanes * 4 // itemsize(dtype))


def nr_vectors(ctx: LowerCtx) -> int:
    """Vector registers across a tile for this target (see NR_VECTORS)."""
    return NR_VECTORS.get(min(ctx.sched.lanes, 16), NR_VECTORS_DEFAULT)


def pack_weight(ctx: LowerCtx, w: np.ndarray, dtype: str, nr: int) -> BufferRef:
    """``w`` (..., K, N) as panels (batch, ceil(N / nr), K, nr), the tail panel zero-padded."""
    kk, n = w.shape[-2], w.shape[-1]
    panels = -(-n // nr)
    flat = w.reshape(-1, kk, n)
    padded = np.zeros((flat.shape[0], kk, panels * nr), dtype=w.dtype)
    padded[:, :, :n] = flat
    packed = padded.reshape(flat.shape[0], kk, panels, nr).transpose(0, 2, 1, 3)
    return ctx.weight(np.ascontiguousarray(packed), dtype)


# --------------------------------------------------------------------------- emission
def _axpy(base: Expr, *terms: tuple[Expr, int]) -> Expr:
    """``base + sum(v * c)``, leaving out zero terms and unit factors."""
    e = base
    for v, c in terms:
        if c:
            e = e + (v if c == 1 else v * c)
    return e


def _offsets(kb: KernelBuilder, mm: Product, bi: Expr) -> _Offsets:
    """Offsets of batch entry ``bi`` (flat) in every operand, from its coordinates."""
    coords: list[Expr] = []
    for d, size in enumerate(mm.batch):
        inner = prod(mm.batch[d + 1 :])
        c = bi if inner == 1 else bi // inner
        coords.append(c if d == 0 else c % size)

    def at(strides: list[int], hint: str) -> Expr:
        e = _axpy(idx(0), *zip(coords, strides))
        return kb.let(e, hint) if coords and any(strides) else idx(0)

    y = kb.let(bi * (mm.m * mm.n), "yo") if mm.batch else idx(0)
    return _Offsets(
        at(mm.a_batch, "ao"), at(mm.b_batch, "bo"), y, [at(ad.batch, "eo") for ad in mm.addends]
    )


def _mac(a: Expr, b: Expr, acc: Expr) -> Expr:
    """``acc + a * b``: one fused multiply-add for floats."""
    return call("fma", a, b, acc) if is_float(acc.dtype) else acc + a * b


@dataclass
class _KRange:
    """The K slice of one pass over the output: ``[start, stop)``; ``first`` and ``last``
    (scalar conditions, None when the slice is all of K) say whether the accumulators start
    from zero and whether the epilogue runs."""

    start: Expr
    stop: Expr
    first: Expr | None = None
    last: Expr | None = None


def _tile(
    kb: KernelBuilder,
    mm: Product,
    off: _Offsets,
    rows: list[Expr],
    p: Expr,
    n0: Expr,
    seg: tuple[int, int, int],
    kr: _KRange,
) -> None:
    """One micro-kernel: ``len(rows)`` rows by columns ``n0 + [start, stop)`` of panel ``p``."""
    start, stop, width = seg
    a_rows = [kb.let(_axpy(off.a, (m, mm.sam)), "ar") for m in rows]
    y_rows = [kb.let(_axpy(off.y, (m, mm.n), (n0, 1)), "yr") for m in rows]
    if mm.packed:
        b_base = kb.let(_axpy(off.b, (p, mm.k * mm.nr)), "bp")
    else:
        b_base = kb.let(_axpy(off.b, (n0, mm.sbn)), "bp")
    kind = "vector" if width > 1 else "serial"
    with kb.loop(stop, start=start, kind=kind, width=width, hint="j") as j:
        zero = Const(0.0 if is_float(mm.dtype) else 0, mm.dtype)
        if kr.first is None:
            accs = [kb.local(mm.dtype, zero, "acc") for _ in rows]
        else:
            accs = [
                kb.local(mm.dtype, Select(kr.first, zero, mm.y[yr + j]), "acc") for yr in y_rows
            ]
        with kb.loop(kr.stop, start=kr.start, hint="k") as k:
            b_at = _axpy(b_base, (k, mm.sbk), (j, 1 if mm.packed else mm.sbn))
            bv = kb.let(_b_value(mm, b_at, n0 + j), "bv")
            for ar, acc in zip(a_rows, accs):
                kb.assign(acc, _mac(_a_value(mm, _axpy(ar, (k, mm.sak))), bv, acc))
        n = kb.let(n0 + j, "n")
        if kr.last is None:
            for m, yr, acc in zip(rows, y_rows, accs):
                mm.y[yr + j] = _epilogue(kb, mm, off, acc, m, n)
            return
        with kb.if_(kr.last):
            for m, yr, acc in zip(rows, y_rows, accs):
                mm.y[yr + j] = _epilogue(kb, mm, off, acc, m, n)
        with kb.else_():
            for yr, acc in zip(y_rows, accs):
                mm.y[yr + j] = acc


def _a_value(mm: Product, at: Expr) -> Expr:
    """Element ``at`` of A in the accumulator type (zero point subtracted)."""
    v = mm.a[at]
    if mm.a.dtype == mm.dtype:
        return v
    v = Cast(v, mm.dtype)
    return v if mm.a_zp is None else v - mm.a_zp


def _b_value(mm: Product, at: Expr, n: Expr) -> Expr:
    """Element ``at`` of B (column ``n``) in the accumulator type (zero point subtracted)."""
    v = mm.b[at]
    if mm.b.dtype == mm.dtype:
        return v
    v = Cast(v, mm.dtype)
    return v if mm.b_zp is None else v - mm.b_zp(n)


def _epilogue(kb: KernelBuilder, mm: Product, off: _Offsets, acc: Expr, m: Expr, n: Expr) -> Expr:
    """alpha, the addends and the activation applied to one accumulator."""
    if mm.finish is not None:
        return mm.finish(kb, acc, m, n)
    v = acc if mm.alpha == 1.0 else acc * Const(mm.alpha, mm.dtype)
    for ad, base in zip(mm.addends, off.addends):
        t = ad.buf[_axpy(base, (m, ad.sm), (n, ad.sn))]
        t = t if ad.buf.dtype == mm.dtype else Cast(t, mm.dtype)
        v = v + (t if ad.scale == 1.0 else t * Const(ad.scale, mm.dtype))
    return activation(kb, v, mm.act, mm.params)


def _segments(start: int, stop: int, lanes: int) -> list[tuple[int, int, int]]:
    """Cover columns [start, stop) with vector loops of ``lanes``, ``lanes / 2``, ... (>= 4)."""
    segs = []
    w = lanes
    while w >= 4 and start < stop:
        cnt = (stop - start) // w * w
        if cnt:
            segs.append((start, start + cnt, w))
            start += cnt
        w //= 2
    if start < stop:
        segs.append((start, stop, 1))
    return segs


def _row_blocks(
    kb: KernelBuilder,
    mm: Product,
    off: _Offsets,
    p: Expr,
    n0: Expr,
    segs: list[tuple[int, int, int]],
    kind: str,
) -> None:
    """All rows of one panel, K slice by K slice: full blocks of ROWS rows in a loop, then
    the remaining rows."""
    kc = _k_block(mm)
    if kc >= mm.k:
        _rows(kb, mm, off, p, n0, segs, kind, _KRange(idx(0), idx(mm.k)))
        return
    count = -(-mm.k // kc)
    with kb.loop(count, hint="kb") as kk:
        k0 = kb.let(kk * kc, "k0")
        stop = k0 + kc if mm.k % kc == 0 else minimum(k0 + kc, idx(mm.k))
        kr = _KRange(k0, kb.let(stop, "k1"), eq(kk, 0), eq(kk, count - 1))
        _rows(kb, mm, off, p, n0, segs, kind, kr)


def _rows(
    kb: KernelBuilder,
    mm: Product,
    off: _Offsets,
    p: Expr,
    n0: Expr,
    segs: list[tuple[int, int, int]],
    kind: str,
    kr: _KRange,
) -> None:
    """Every row of one panel over one K slice."""
    blocks, rest = divmod(mm.m, ROWS)
    if blocks:
        with kb.loop(blocks, kind=kind, hint="mb") as mb:
            m0 = kb.let(mb * ROWS, "m")
            for seg in segs:
                _tile(kb, mm, off, [m0 + r if r else m0 for r in range(ROWS)], p, n0, seg, kr)
    if rest:
        for seg in segs:
            _tile(kb, mm, off, [idx(blocks * ROWS + r) for r in range(rest)], p, n0, seg, kr)


def _k_block(mm: Product) -> int:
    """K slice length: one B panel slice (``kc * nr`` elements) fits in half of a 32 KiB L1,
    so every row block reuses it from L1; no slicing when one row block does all the work."""
    if mm.m <= ROWS or mm.y.dtype != mm.dtype:  # partial sums live in the output
        return mm.k
    kc = max(16, L1_BYTES // (mm.nr * itemsize(mm.dtype)))
    if mm.k <= kc + kc // 2:
        return mm.k
    count = -(-mm.k // kc)
    return -(-mm.k // count)


def emit_product(ctx: LowerCtx, mm: Product) -> None:
    """Full panels (batch x panel tiles, one loop), then the partial panel per batch entry."""
    kb = ctx.kb
    nb = prod(mm.batch)
    if nb == 0 or mm.m == 0 or mm.n == 0:
        return
    panels, rest = divmod(mm.n, mm.nr)
    par = ctx.outer_kind(nb * mm.m * mm.n * max(mm.k, 1)) == "parallel"
    blocks = mm.m // ROWS
    if panels:
        outer = par and nb * panels >= min(blocks, 8)
        with kb.loop(nb * panels, kind="parallel" if outer else "serial", hint="t") as t:
            bi, p = (t // panels, t % panels) if nb > 1 else (idx(0), t)
            off = _offsets(kb, mm, bi)
            n0 = kb.let(p * mm.nr, "n0")
            _row_blocks(
                kb,
                mm,
                off,
                p,
                n0,
                [(0, mm.nr, mm.nr)],
                "parallel" if par and not outer else "serial",
            )
    if rest:
        outer = par and nb >= min(blocks, 8)
        with kb.loop(nb, kind="parallel" if outer else "serial", hint="bt") as bi:
            off = _offsets(kb, mm, bi)
            n0 = idx(panels * mm.nr)
            segs = _segments(0, rest, mm.lanes)
            _row_blocks(
                kb, mm, off, idx(panels), n0, segs, "parallel" if par and not outer else "serial"
            )


def pack_at_run_time(ctx: LowerCtx, mm: Product, mats: int) -> None:
    """Copy a B computed at run time into panels in a scratch buffer first, when several
    row blocks will read it (a strided B panel misses the cache on every K step)."""
    if mm.packed or mm.n <= 1 or mm.m <= ROWS or mm.k == 0:
        return
    kb = ctx.kb
    k, n, nr = mm.k, mm.n, mm.nr
    panels, rest = divmod(n, nr)
    size = (panels + (1 if rest else 0)) * k * nr
    dst = ctx.scratch(mm.dtype, mats * size)
    with kb.loop(mats * k, kind=ctx.outer_kind(mats * k * n), hint="pr") as r:
        bm, kk = (r // k, r % k) if mats > 1 else (idx(0), r)
        src_row = kb.let(_axpy(bm * (k * n), (kk, mm.sbk)), "sr")
        dst_row = kb.let(_axpy(bm * size, (kk, nr)), "dr")
        if panels:
            with kb.loop(panels, hint="p") as p:
                d = kb.let(dst_row + p * (k * nr), "d")
                s = kb.let(_axpy(src_row, (p, nr * mm.sbn)), "s")
                with kb.loop(nr, kind="vector", width=nr, hint="j") as j:
                    dst[d + j] = _b_value(mm, _axpy(s, (j, mm.sbn)), p * nr + j)
        if rest:
            d = kb.let(dst_row + panels * (k * nr), "d")
            s = kb.let(_axpy(src_row, (idx(panels * nr), mm.sbn)), "s")
            with kb.loop(rest, kind="vector", width=ctx.vector_width(rest), hint="j") as j:
                dst[d + j] = _b_value(mm, _axpy(s, (j, mm.sbn)), idx(panels * nr) + j)
    mm.b, mm.packed, mm.sbk, mm.sbn, mm.b_zp = dst, True, nr, 1, None
    mm.b_batch = [st // (k * n) * size for st in mm.b_batch]
