"""Attention (opset 23-25) as one kernel per node.

The kernel runs in two phases over the heads:

1. per ``(batch, kv head)``: the keys (past rows, then new rows) are copied transposed and
   multiplied by ``sqrt(scale)`` into scratch ``K^T[d][j]``, so the score loop reads them
   contiguously along the keys; ``present_key``/``present_value`` are written on the way
   (values go to scratch when past values are given but ``present_value`` is not asked for,
   since the product needs the concatenation).
2. per ``(batch, query head)`` (the parallel loop), per query row: the scores as a vector
   loop over the keys (each lane a key, a serial loop over the head size), then softcap,
   the float mask, and the allowed-key set (boolean mask, causal and sliding-window
   frontiers around the query's absolute position, ``nonpad_kv_seqlen`` padding) as a
   ``Select`` to -inf; the row's softmax with max subtraction (the polynomial ``exp``);
   then ``Y`` as a vector loop over the value dims (a lane per dim, a serial loop over the
   keys). A row with no allowed key gives zeros, as the reference does.

``Q * sqrt(scale)`` and ``K * sqrt(scale)`` follow the spec's function body (the root in the
input's type). 3-D inputs are read in place through strides (no head split copies). Narrow
float inputs (float16, bfloat16) are computed in float32; float64 inputs in float64 with
the float32 ``exp``. ``qk_matmul_output`` (mode 0: Q K^T, 1: after softcap, 2: after the
mask, 3: the probabilities) is written from the same loops.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from torsh_gen.backends.kernel import math as km
from torsh_gen.backends.kernel.builder import BufferRef
from torsh_gen.backends.kernel.interp import numpy_dtype
from torsh_gen.backends.kernel.ir import Cast, Const, Expr, Select, call, eq, idx, logical_and
from torsh_gen.backends.kernel.lower import (
    KERNEL_DTYPES,
    LowerCtx,
    LoweringDeclined,
    broadcast_strides,
    lowers,
)
from torsh_gen.backends.kernel.lower.reduce import Segment, exp
from torsh_gen.backends.kernel.lower.scalar_ops import SCALAR_OPS
from torsh_gen.backends.kernel.storage import is_storage
from torsh_gen.ir.graph import Graph, Node, Value
from torsh_gen.ir.types import DType
from torsh_gen.ops.execute import evaluate_node
from torsh_gen.ops.registry import Attrs, lookup

NEG_INF = -math.inf


@dataclass
class _Layout:
    """Element strides of a (batch, head, seq) view of a 3-D or 4-D operand whose last
    (head-size) dim is contiguous."""

    batch: int
    head: int
    seq: int

    def at(self, b: Expr, h: Expr, s: Expr) -> Expr:
        """Flat index of element 0 of row ``s`` of head ``h`` of batch ``b``."""
        return b * self.batch + h * self.head + s * self.seq


@dataclass
class _Geometry:
    """The static sizes of one Attention node."""

    batch: int
    hq: int
    hkv: int
    sq: int
    sk: int  # new keys
    past: int
    dk: int
    dv: int
    q: _Layout
    k: _Layout
    v: _Layout
    y: _Layout

    @property
    def skv(self) -> int:
        """Keys after the cache concatenation."""
        return self.past + self.sk


def _layout(shape: tuple[int, ...], heads: int, size: int) -> _Layout:
    """Strides of a 4-D ``(B, H, S, D)`` or 3-D ``(B, S, H*D)`` operand."""
    if len(shape) == 4:
        return _Layout(shape[1] * shape[2] * size, shape[2] * size, size)
    return _Layout(shape[1] * heads * size, size, heads * size)


def _geometry(ctx: LowerCtx) -> _Geometry:
    """Sizes and strides from the input shapes; declines shapes the spec does not define."""
    qs, ks, vs = ctx.in_shape(0), ctx.in_shape(1), ctx.in_shape(2)
    if not len(qs) == len(ks) == len(vs) or len(qs) not in (3, 4):
        raise LoweringDeclined("Attention needs Q, K and V all 3-D or all 4-D")
    if len(qs) == 4:
        batch, hq, sq, dk = qs
        hkv, sk, dv = ks[1], ks[2], vs[3]
        ok = ks[0] == vs[0] == batch and ks[3] == dk and vs[1] == hkv and vs[2] == sk
    else:
        hq, hkv = int(ctx.attrs.q_num_heads), int(ctx.attrs.kv_num_heads)
        if hq <= 0 or hkv <= 0 or qs[2] % hq or ks[2] % hkv or vs[2] % hkv:
            raise LoweringDeclined("3-D Attention needs q_num_heads/kv_num_heads dividing the hidden sizes")
        batch, sq, dk = qs[0], qs[1], qs[2] // hq
        sk, dv = ks[1], vs[2] // hkv
        ok = ks[0] == vs[0] == batch and ks[2] // hkv == dk and vs[1] == sk
    if not ok or hkv <= 0 or hq % hkv:
        raise LoweringDeclined(f"Attention shapes Q {qs}, K {ks}, V {vs} do not fit (heads must divide)")
    past = 0
    if ctx.has(4) or ctx.has(5):
        if not (ctx.has(4) and ctx.has(5)):
            raise LoweringDeclined("past_key and past_value must be given together")
        pk, pv = ctx.in_shape(4), ctx.in_shape(5)
        if pk[:2] != (batch, hkv) or pk[3] != dk or pv[:3] != pk[:3] or pv[3] != dv:
            raise LoweringDeclined(f"past_key {pk} / past_value {pv} do not fit the keys")
        past = pk[2]
    return _Geometry(
        batch, hq, hkv, sq, sk, past, dk, dv,
        _layout(qs, hq, dk), _layout(ks, hkv, dk), _layout(vs, hkv, dv), _layout(qs, hq, dv),
    )


def _in_type_round(value: float, storage: str | None) -> float:
    """``value`` rounded to the input's element type (the spec casts sqrt(scale) to T1)."""
    if storage == "f16":
        return float(np.float16(value))
    if storage == "bf16":
        bits = np.float32(value).view(np.uint32)
        rounded = (int(bits) + 0x7FFF + ((int(bits) >> 16) & 1)) & 0xFFFF0000
        return float(np.uint32(rounded).view(np.float32))
    return value


def _check_dtypes(ctx: LowerCtx) -> str:
    """The compute type (f32 or f64) shared by Q, K, V, the caches and a float mask."""
    dtype = ctx.in_dtypes[0]
    if dtype not in ("f32", "f64"):
        raise LoweringDeclined(f"Attention of {dtype}")
    for i in (1, 2, 4, 5):
        if ctx.has(i) and ctx.in_dtypes[i] != dtype:
            raise LoweringDeclined("Attention with Q, K, V or caches of different element types")
    if ctx.has(3) and ctx.in_dtypes[3] not in ("bool", dtype):
        raise LoweringDeclined(f"attn_mask of {ctx.in_dtypes[3]} with {dtype} inputs")
    if ctx.has(6) and ctx.has(4):
        raise LoweringDeclined("nonpad_kv_seqlen cannot be combined with past_key/past_value")
    return dtype


#: Vector registers a dot-product loop spans at most: each is an independent fma chain,
#: so the chains hide the fma latency (one register alone waits on it every step).
CHAINS = 4


def _chains_width(ctx: LowerCtx, n: int) -> int:
    """Vector width for a loop of ``n`` lanes whose body is a serial fma chain: up to
    ``CHAINS`` registers wide while ``n`` fills them."""
    width = ctx.vector_width(n)
    while width > 1 and width * 2 <= min(n, CHAINS * ctx.sched.lanes):
        width *= 2
    return width


def _output(ctx: LowerCtx, j: int) -> BufferRef | None:
    """Output ``j`` when the node asks for it."""
    if j < len(ctx.outputs) and j < len(ctx.node.outputs) and ctx.node.outputs[j] is not None:
        return ctx.outputs[j]  # None where the program leaves an unnamed output out
    return None


@lowers("Attention")
def lower_attention(ctx: LowerCtx) -> None:
    """softmax(softcap(Q K^T * scale) + mask | allowed) V with GQA, KV cache, debug output."""
    dtype = _check_dtypes(ctx)
    g = _geometry(ctx)
    if _output(ctx, 3) is not None and int(ctx.attrs.qk_matmul_output_mode) not in (0, 1, 2, 3):
        raise LoweringDeclined(f"qk_matmul_output_mode {ctx.attrs.qk_matmul_output_mode}")
    scale = float(ctx.attrs.scale) or (1.0 / math.sqrt(g.dk) if g.dk else 1.0)
    root = _in_type_round(math.sqrt(scale), ctx.x(0).storage)
    a = ctx.attrs
    window = (int(a.left_window_size), int(a.right_window_size)) if ctx.opset >= 25 else (-1, -1)
    spec = _Spec(
        dtype, _softmax_dtype(ctx, dtype), root, mask=_mask(ctx, g), causal=bool(a.is_causal),
        left=window[0], right=window[1], softcap=float(a.softcap),
        mode=int(a.qk_matmul_output_mode), qk=_output(ctx, 3),
    )
    _run(ctx, g, spec)


def _run(ctx: LowerCtx, g: _Geometry, spec: _Spec) -> None:
    """Both phases."""
    kt = ctx.scratch(spec.dtype, g.batch * g.hkv * g.dk * g.skv)
    values = _prepare_keys_values(ctx, g, spec.dtype, kt, spec.root)
    if g.batch * g.hq * g.sq:
        _rows(ctx, g, spec, kt, values)


def _copy_rows(
    ctx: LowerCtx, src: BufferRef, base: Expr, step: int, n: int, width: int,
    put: list[tuple[BufferRef, Expr, int]], scaled: tuple[BufferRef, Expr, int, float] | None,
) -> None:
    """Copy ``n`` rows of ``width`` from ``src`` (row r at ``base + r * step``) to each
    ``(buffer, base, row step)`` of ``put``; ``scaled = (kt, base, skv, root)`` also writes
    the rows times ``root`` as columns of ``kt`` (``kt[base + d * skv + r]``)."""
    kb = ctx.kb
    if n == 0 or width == 0:
        return
    with kb.loop(n, hint="r") as r:
        row = kb.let(base + r * step, "src")
        dst = [(buf, kb.let(at + r * rs, "dst")) for buf, at, rs in put]
        with kb.loop(width, kind="vector", width=ctx.vector_width(width), hint="d") as d:
            v = kb.let(src[row + d], "kv")
            for buf, at in dst:
                buf[at + d] = v
            if scaled is not None:
                kt, at, skv, root = scaled
                kt[at + d * skv + r] = v * Const(root, v.dtype)


def _prepare_keys_values(
    ctx: LowerCtx, g: _Geometry, dtype: str, kt: BufferRef, root: float
) -> tuple[BufferRef, _Layout]:
    """Phase 1: ``K^T * sqrt(scale)`` into ``kt``; the present outputs. Returns where the
    product reads the values: (buffer, layout)."""
    kb = ctx.kb
    pres_k, pres_v = _output(ctx, 1), _output(ctx, 2)
    vsrc: tuple[BufferRef, _Layout] = (ctx.x(2), g.v)
    pres_layout_v = _Layout(g.hkv * g.skv * g.dv, g.skv * g.dv, g.dv)
    if g.past and pres_v is None:
        pres_v = ctx.scratch(dtype, g.batch * g.hkv * g.skv * g.dv)
    if g.past:
        vsrc = (pres_v, pres_layout_v)
    work = g.batch * g.hkv * g.skv * (g.dk + g.dv)
    if g.batch * g.hkv == 0:
        return vsrc
    with kb.loop(g.batch * g.hkv, kind=ctx.outer_kind(work), hint="bh") as bh:
        b = kb.let(bh // g.hkv, "b")
        h = kb.let(bh % g.hkv, "h")
        kcol = kb.let(bh * (g.dk * g.skv), "kt")
        pk = kb.let(bh * (g.skv * g.dk), "pk")
        pv = kb.let(bh * (g.skv * g.dv), "pv")
        kput = [(pres_k, pk, g.dk)] if pres_k is not None else []
        vput = [(pres_v, pv, g.dv)] if pres_v is not None else []
        if g.past:
            _copy_rows(ctx, ctx.x(4), bh * (g.past * g.dk), g.dk, g.past, g.dk, kput, (kt, kcol, g.skv, root))
            _copy_rows(ctx, ctx.x(5), bh * (g.past * g.dv), g.dv, g.past, g.dv, vput, None)
        knew = [(buf, at + g.past * g.dk, rs) for buf, at, rs in kput]
        vnew = [(buf, at + g.past * g.dv, rs) for buf, at, rs in vput]
        ktail = kb.let(kcol + g.past, "ktn")
        _copy_rows(ctx, ctx.x(1), g.k.at(b, h, idx(0)), g.k.seq, g.sk, g.dk, knew, (kt, ktail, g.skv, root))
        if vnew:
            _copy_rows(ctx, ctx.x(2), g.v.at(b, h, idx(0)), g.v.seq, g.sk, g.dv, vnew, None)
    return vsrc


@dataclass
class _Mask:
    """``attn_mask`` read as ``(B, Hq, Sq, length)`` through broadcast strides; keys past
    ``length`` are disallowed (boolean) or get -inf (float), as the spec pads it."""

    buf: BufferRef
    strides: list[int]
    length: int

    @property
    def boolean(self) -> bool:
        """Whether the mask is a set of allowed keys rather than an additive bias."""
        return self.buf.dtype == "bool"


def _mask(ctx: LowerCtx, g: _Geometry) -> _Mask | None:
    """The mask input's view, or None without one."""
    if not ctx.has(3):
        return None
    shape = ctx.in_shape(3)
    if not 1 <= len(shape) <= 4:
        raise LoweringDeclined(f"attn_mask of rank {len(shape)}")
    length = shape[-1]
    target = (g.batch, g.hq, g.sq, length)
    pad = (1,) * (4 - len(shape)) + tuple(shape)
    if any(p not in (1, t) for p, t in zip(pad[:3], target[:3])):
        raise LoweringDeclined(f"attn_mask {shape} does not broadcast to {target}")
    return _Mask(ctx.x(3), broadcast_strides(shape, target), length)


def _softmax_dtype(ctx: LowerCtx, dtype: str) -> str:
    """Where the softmax runs: float64 for float64 inputs or softmax_precision DOUBLE."""
    return "f64" if dtype == "f64" or int(ctx.attrs.softmax_precision) == 11 else "f32"


@dataclass
class _Spec:
    """What phase 2 does to each score: Attention's steps (softcap, mask, frontiers,
    debug output) or FlexAttention's ``score_mod``/``prob_mod`` subgraphs."""

    dtype: str
    sdt: str
    root: float
    mask: _Mask | None = None
    causal: bool = False
    left: int = -1
    right: int = -1
    softcap: float = 0.0
    mode: int = 0
    qk: BufferRef | None = None
    score_mod: _Subgraph | None = None
    prob_mod: _Subgraph | None = None


@dataclass
class _Row:
    """One query row: (batch, query head, row) indices, its mask row, its absolute
    position and valid key count (external cache)."""

    spec: _Spec
    g: _Geometry
    b: Expr
    h: Expr
    i: Expr
    mbase: Expr
    pos: Expr
    nonpad: Expr | None

    def element(self, strides: list[int], j: Expr) -> Expr:
        """Flat index of score (b, h, i, j) of a tensor read with ``strides``."""
        at: Expr = idx(0)
        for v, st in zip((self.b, self.h, self.i, j), strides):
            if st:
                at = at + v * st
        return at

    def _mask_value(self, j: Expr) -> tuple[Expr, Expr | None]:
        """(mask element of key j, ``j < length`` or None when every key has one)."""
        m = self.spec.mask
        assert m is not None
        short = m.length < self.g.skv
        jj = Select(j < m.length, j, idx(m.length - 1)) if short else j
        at = self.mbase + jj * m.strides[3] if m.strides[3] else self.mbase
        return m.buf[at], (j < m.length if short else None)

    def allowed(self, j: Expr) -> Expr | None:
        """The condition that key ``j`` may be attended, or None when all may."""
        sp, conds = self.spec, []
        if sp.mask is not None and sp.mask.boolean:
            v, inside = self._mask_value(j)
            conds.append(v if inside is None else logical_and(inside, v))
        if sp.causal:
            conds.append(j <= self.pos)
        if sp.left >= 0:
            conds.append(j >= self.pos - sp.left)
        if sp.right >= 0:
            conds.append(j <= self.pos + sp.right)
        if self.nonpad is not None:
            conds.append(j < self.nonpad)
        if not conds:
            return None
        out = conds[0]
        for c in conds[1:]:
            out = logical_and(out, c)
        return out

    def bias(self, j: Expr) -> Expr | None:
        """The float mask's value for key ``j`` (-inf past its length), or None."""
        dtype = self.spec.dtype
        if self.spec.mask is None or self.spec.mask.boolean:
            return None
        v, inside = self._mask_value(j)
        v = v if v.dtype == dtype else Cast(v, dtype)
        return v if inside is None else Select(inside, v, Const(NEG_INF, dtype))


def _rows(ctx: LowerCtx, g: _Geometry, spec: _Spec, kt: BufferRef, values: tuple[BufferRef, _Layout]) -> None:
    """Phase 2: per (batch, query head), per query row: scores, softmax, the product."""
    kb = ctx.kb
    probs = ctx.scratch(spec.sdt, g.batch * g.hq * g.skv)
    qrow = ctx.scratch(spec.dtype, g.batch * g.hq * g.dk)
    mask, q = spec.mask, ctx.x(0)
    group = g.hq // g.hkv
    work = g.batch * g.hq * g.sq * max(g.skv, 1) * (g.dk + g.dv + 8)
    with kb.loop(g.batch * g.hq, kind=ctx.outer_kind(work), hint="bh") as bh:
        b = kb.let(bh // g.hq, "b")
        h = kb.let(bh % g.hq, "h")
        hk = kb.let(h // group, "hk") if group > 1 else h
        kcol = kb.let((b * g.hkv + hk) * (g.dk * g.skv), "kc")
        prow = kb.let(bh * g.skv, "pr")
        qs = kb.let(bh * g.dk, "qs")
        offset, nonpad = _offset(ctx, g, b)
        mb = kb.let(b * mask.strides[0] + h * mask.strides[1], "mb") if mask is not None else idx(0)
        with kb.loop(g.sq, hint="i") as i:
            qbase = kb.let(g.q.at(b, h, i), "qb")
            with kb.loop(g.dk, kind="vector", width=ctx.vector_width(g.dk), hint="d") as d:
                qrow[qs + d] = q[qbase + d] * Const(spec.root, spec.dtype)
            mrow = kb.let(mb + i * mask.strides[2], "mr") if mask is not None else mb
            row = _Row(spec, g, b, h, i, mrow, kb.let(offset + i, "pos"), nonpad)
            qkrow = kb.let((bh * g.sq + i) * g.skv, "qo") if spec.qk is not None else idx(0)
            _scores(ctx, g, row, (kt, kcol), (qrow, qs), (probs, prow), qkrow)
            inv = _softmax(ctx, g, row, probs, prow, qkrow)
            _product(ctx, g, spec.dtype, probs, prow, values, (b, hk), inv, g.y.at(b, h, i))


def _offset(ctx: LowerCtx, g: _Geometry, b: Expr) -> tuple[Expr, Expr | None]:
    """(absolute position of query row 0, valid key count or None) of batch ``b``: after
    the past keys, or ``nonpad_kv_seqlen[b] - Sq`` with an external cache."""
    if g.past or not ctx.has(6):
        return idx(g.past), None
    if ctx.in_shape(6) != (g.batch,):
        raise LoweringDeclined(f"nonpad_kv_seqlen of shape {ctx.in_shape(6)} for batch {g.batch}")
    n = ctx.x(6)[b]
    nonpad = ctx.kb.let(n if n.dtype == "i64" else Cast(n, "i64"), "nonpad")
    return ctx.kb.let(nonpad - g.sq, "off"), nonpad


def _softcap(ctx: LowerCtx, s: Expr, spec: _Spec) -> Expr:
    """``cap * tanh(s / cap)`` when the softcap attribute is set (the float32 tanh)."""
    if spec.softcap <= 0:
        return s
    t = km.tanh(ctx.kb, s / Const(spec.softcap, spec.dtype))
    t = t if t.dtype == spec.dtype else Cast(t, spec.dtype)
    return ctx.kb.let(t * Const(spec.softcap, spec.dtype), "cap")


def _attention_steps(ctx: LowerCtx, row: _Row, s: Expr, j: Expr, qkrow: Expr) -> Expr:
    """Softcap, float mask, -inf where disallowed; ``qk_matmul_output`` at the step its
    mode names (0, 1, 2)."""
    kb, spec = ctx.kb, row.spec
    steps = [s, _softcap(ctx, s, spec)]
    bias = row.bias(j)
    s = kb.let(steps[1] + bias, "sb") if bias is not None else steps[1]
    allowed = row.allowed(j)
    s = kb.let(Select(allowed, s, Const(NEG_INF, spec.dtype)), "sm") if allowed is not None else s
    steps.append(s)
    if spec.qk is not None and spec.mode < 3:
        spec.qk[qkrow + j] = steps[spec.mode]
    return s


def _scores(
    ctx: LowerCtx, g: _Geometry, row: _Row, keys: tuple[BufferRef, Expr],
    query: tuple[BufferRef, Expr], out: tuple[BufferRef, Expr], qkrow: Expr,
) -> None:
    """One row of scores into ``out``: Q K^T (a lane per key, a serial loop over the head
    size), then Attention's steps or FlexAttention's ``score_mod``."""
    kb, spec = ctx.kb, row.spec
    (kt, kcol), (qrow, qs), (probs, prow) = keys, query, out
    with kb.loop(g.skv, kind="vector", width=_chains_width(ctx, g.skv), hint="j") as j:
        acc = kb.local(spec.dtype, Const(0.0, spec.dtype), "s")
        with kb.loop(g.dk, hint="d") as d:
            kb.assign(acc, call("fma", qrow[qs + d], kt[kcol + d * g.skv + j], acc))
        s: Expr = kb.let(acc, "qk")
        if spec.score_mod is not None:
            s = s if s.dtype == spec.sdt else kb.let(Cast(s, spec.sdt), "qkc")
            s = spec.score_mod.apply(ctx, s, row, j)
        else:
            s = _attention_steps(ctx, row, s, j, qkrow)
        probs[prow + j] = s if s.dtype == spec.sdt else Cast(s, spec.sdt)


def _softmax(ctx: LowerCtx, g: _Geometry, row: _Row, probs: BufferRef, prow: Expr, qkrow: Expr) -> Expr:
    """exp(s - max) in place over the row; returns the factor the product still needs:
    1 / sum (0 for a row with no allowed key, whose max is -inf: its exps are taken
    against 0 and are all 0), or 1 after ``prob_mod`` ran on the normalized row. Writes
    the probabilities to ``qk_matmul_output`` in mode 3."""
    kb, spec, sdt = ctx.kb, row.spec, row.spec.sdt
    seg = Segment(ctx, prow, g.skv, 1, True)
    top = seg.reduce(lambda k: probs[k], "max", sdt)
    safe = kb.let(Select(eq(top, Const(NEG_INF, sdt)), Const(0.0, sdt), top), "top")

    def put_exp(at: Expr, k: Expr) -> None:
        probs[at] = exp(ctx, probs[at] - safe)

    seg.foreach(put_exp)
    total = seg.reduce(lambda k: probs[k], "add", sdt)
    inv = kb.let(Select(eq(total, Const(0.0, sdt)), Const(0.0, sdt), Const(1.0, sdt) / total), "inv")
    qk = spec.qk if spec.mode == 3 else None
    if spec.prob_mod is not None:
        mod = spec.prob_mod

        def put_mod(at: Expr, k: Expr) -> None:
            p = mod.apply(ctx, kb.let(probs[at] * inv, "p"), row, k)
            probs[at] = p if p.dtype == sdt else Cast(p, sdt)

        seg.foreach(put_mod)
        return Const(1.0, sdt)
    if qk is not None:

        def put_prob(at: Expr, k: Expr) -> None:
            v = probs[at] * inv
            qk[qkrow + k] = v if v.dtype == qk.dtype else Cast(v, qk.dtype)

        seg.foreach(put_prob)
    return inv


def _product(
    ctx: LowerCtx, g: _Geometry, dtype: str, probs: BufferRef, prow: Expr,
    values: tuple[BufferRef, _Layout], head: tuple[Expr, Expr], inv: Expr, ybase: Expr,
) -> None:
    """``Y[row] = (sum_j e_j V[j]) * inv``: a lane per value dim, a serial loop over keys."""
    kb = ctx.kb
    vbuf, layout = values
    vbase = kb.let(layout.at(head[0], head[1], idx(0)), "vb")
    yb = kb.let(ybase, "yb")
    scale = inv if inv.dtype == dtype else kb.let(Cast(inv, dtype), "invc")
    y = ctx.y(0)
    with kb.loop(g.dv, kind="vector", width=_chains_width(ctx, g.dv), hint="e") as e:
        acc = kb.local(dtype, Const(0.0, dtype), "o")
        with kb.loop(g.skv, hint="j") as j:
            p = probs[prow + j]
            p = p if p.dtype == dtype else Cast(p, dtype)
            kb.assign(acc, call("fma", p, vbuf[vbase + j * layout.seq + e], acc))
        y[yb + e] = acc * scale


# --------------------------------------------------------------------------- FlexAttention
class _Subgraph:
    """A ``score_mod``/``prob_mod`` body as per-element code. Its nodes that do not depend
    on the scores (shapes, index ranges, masks built from them) are evaluated at compile
    time with the ops' reference kernels; the rest must be elementwise ops of the scalar
    table over the scores and such constants, which become literals or weights read
    through broadcast strides over ``(B, Hq, Sq, Skv)``."""

    def __init__(self, ctx: LowerCtx, graph: Graph, shape: tuple[int, int, int, int], dtype: str) -> None:
        if len(graph.inputs) != 1 or len(graph.outputs) != 1:
            raise LoweringDeclined("FlexAttention subgraph without one input and one output")
        self.shape = shape
        self.consts: dict[int, np.ndarray] = {}
        self.dynamic = {id(graph.inputs[0])}
        self.input, self.output = graph.inputs[0], graph.outputs[0]
        self.steps: list[tuple[Node, Attrs]] = []
        self.reads: dict[int, Expr | tuple[BufferRef, list[int]]] = {}
        for node in graph.nodes:
            self._analyse(ctx, node, dtype)

    def _const(self, v: Value) -> np.ndarray:
        got = self.consts.get(id(v))
        if got is None and v.const is None:
            raise LoweringDeclined("FlexAttention subgraph reads a value from outside it")
        return got if got is not None else np.asarray(v.const)

    def _analyse(self, ctx: LowerCtx, node: Node, dtype: str) -> None:
        """Fold a node on constants, or record an elementwise step over the scores."""
        spec = lookup(node.op_type, node.domain, ctx.opset)
        attrs = spec.resolve_attrs(node)
        dyn = [v is not None and id(v) in self.dynamic for v in node.inputs]
        if not any(dyn) or node.op_type in ("Shape", "Size"):
            dummy = np.zeros(self.shape, numpy_dtype(dtype))
            args = [None if v is None else dummy if d else self._const(v) for v, d in zip(node.inputs, dyn)]
            outs = evaluate_node(spec, node, attrs, ctx.opset, args)
            if outs is None:
                raise LoweringDeclined(f"FlexAttention subgraph {node.op_type} does not fold")
            self.consts.update((id(v), np.asarray(o)) for v, o in zip(node.outputs, outs))
            return
        if node.op_type not in SCALAR_OPS or len(node.outputs) != 1:
            raise LoweringDeclined(f"FlexAttention subgraph op {node.op_type} is not elementwise")
        for v, d in zip(node.inputs, dyn):
            if v is not None and not d:
                self._read(ctx, v)
        self.dynamic.add(id(node.outputs[0]))
        self.steps.append((node, attrs))

    def _read(self, ctx: LowerCtx, v: Value) -> None:
        """A constant operand: a literal, or a weight broadcast over the scores."""
        c = self._const(v)
        if np.broadcast_shapes(c.shape, self.shape) != self.shape:
            raise LoweringDeclined(f"FlexAttention subgraph constant {c.shape} widens the scores")
        kdt = KERNEL_DTYPES.get(DType.from_numpy(c.dtype))
        if kdt is None:
            raise LoweringDeclined(f"FlexAttention subgraph constant of {c.dtype}")
        if is_storage(kdt):
            c, kdt = c.astype(np.float32), "f32"
        if c.size == 1:
            item = c.reshape(-1)[0].item()
            self.reads[id(v)] = Const(item, kdt)
        else:
            self.reads[id(v)] = (ctx.weight(c, kdt), broadcast_strides(c.shape, self.shape))

    def apply(self, ctx: LowerCtx, x: Expr, row: _Row, j: Expr) -> Expr:
        """The body's output for score (b, h, i, j) of value ``x``."""
        kb = ctx.kb
        env: dict[int, Expr] = {id(self.input): x}

        def value(v: Value) -> Expr:
            if id(v) in env:
                return env[id(v)]
            if id(v) not in self.reads:
                self._read(ctx, v)
            r = self.reads[id(v)]
            if isinstance(r, Expr):
                return r
            env[id(v)] = kb.let(r[0][row.element(r[1], j)], "c")
            return env[id(v)]

        for node, attrs in self.steps:
            args = [value(v) for v in node.inputs if v is not None]
            env[id(node.outputs[0])] = kb.let(SCALAR_OPS[node.op_type](kb, args, attrs), "f")
        return value(self.output)


@lowers("FlexAttention")
def lower_flex_attention(ctx: LowerCtx) -> None:
    """softmax(score_mod(Q K^T * scale)) through prob_mod, times V (4-D, GQA)."""
    dtype = _check_dtypes(ctx)
    if len(ctx.in_shape(0)) != 4:
        raise LoweringDeclined("FlexAttention needs 4-D Q, K and V")
    g = _geometry(ctx)
    sdt = _softmax_dtype(ctx, dtype)
    scale = float(ctx.attrs.scale) or (1.0 / math.sqrt(g.dk) if g.dk else 1.0)
    root = _in_type_round(math.sqrt(scale), ctx.x(0).storage)
    shape = (g.batch, g.hq, g.sq, g.skv)
    mods = [
        _Subgraph(ctx, ctx.attrs.get(k), shape, sdt) if ctx.attrs.get(k) is not None else None
        for k in ("score_mod", "prob_mod")
    ]
    _run(ctx, g, _Spec(dtype, sdt, root, score_mod=mods[0], prob_mod=mods[1]))
