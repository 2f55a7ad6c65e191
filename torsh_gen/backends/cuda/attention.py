"""Attention for short sequences on the GPU: one warp per query row, one launch.

The CPU lowering of ``Attention`` gives a GPU a thread per (batch, head) pair, so a
(1, 8, 128, 64) attention ran on 32 threads. Here each query row is a warp (the ``warp``
loop of the kernel IR), for keys up to ``MAX_KEYS``:

1. lane ``l`` scores keys ``l, l + 32, ...`` (one register each: a key's dot product with
   the query over the head size, both scaled by sqrt(scale) as the spec says);
2. butterfly exchanges (``ShflXor``) give every lane the row's maximum and the sum of the
   exponentials;
3. lane ``l`` owns output columns ``l, l + 32, ...``: for every key, the key's probability
   is broadcast from the lane that holds it (``ShflIdx``) and multiplied into the value
   row (neighbouring lanes read neighbouring columns: coalesced).

Covered: 4-d float32 Q, K and V with as many key/value heads as query heads, ``scale``,
``is_causal`` (with as many queries as keys). Masks, KV caches, GQA, softcap and the
debug outputs take the generic lowering.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torsh_gen.backends.kernel import math as km
from torsh_gen.backends.kernel.builder import BufferRef, KernelBuilder
from torsh_gen.backends.kernel.ir import (
    WARP,
    Const,
    Select,
    ShflIdx,
    ShflXor,
    as_expr,
    logical_and,
    maximum,
    minimum,
)

#: Keys a warp holds (one score register per 32 keys and lane).
MAX_KEYS = 1024


@dataclass(frozen=True)
class AttentionShape:
    """(batch, heads, queries, keys, head size of Q/K, head size of V), contiguous 4-d."""

    batch: int
    heads: int
    sq: int
    sk: int
    dk: int
    dv: int


def fits(g: AttentionShape) -> bool:
    """Whether the warp schedule covers these sizes."""
    return 0 < g.sk <= MAX_KEYS and g.dk > 0 and g.dv > 0 and g.sq > 0


def warp_attention(kb: KernelBuilder, g: AttentionShape, q: BufferRef, k: BufferRef, v: BufferRef, y: BufferRef, scale: float, causal: bool) -> None:
    """``y = softmax(Q K^T * scale [causal]) V``, one warp per query row."""
    root = Const(math.sqrt(scale), "f32")
    n_tiles = -(-g.sk // WARP)
    with kb.loop(g.batch * g.heads * g.sq, kind="parallel", hint="row") as row, kb.loop(WARP, kind="warp", hint="lane") as lane:
        pair = kb.let(row // g.sq, "bh")
        i = kb.let(row % g.sq, "qi")
        kbase, vbase = kb.let(pair * (g.sk * g.dk), "kb"), kb.let(pair * (g.sk * g.dv), "vb")
        scores, valid = [], []
        for t in range(n_tiles):
            j = kb.let(lane + t * WARP, "j")
            jc = minimum(j, g.sk - 1)
            acc = kb.local("f32", as_expr(0.0, "f32"), "dot")
            with kb.loop(g.dk, hint="d") as d:
                kb.assign(acc, acc + (q[row * g.dk + d] * root) * (k[kbase + jc * g.dk + d] * root))
            ok = j < g.sk
            if causal:
                ok = logical_and(ok, j <= i)
            valid.append(kb.let(ok, "ok"))
            scores.append(kb.let(Select(valid[-1], acc, Const(float("-inf"), "f32")), "s"))
        top = kb.local("f32", scores[0], "top")
        for s in scores[1:]:
            kb.assign(top, maximum(top, s))
        for mask in (16, 8, 4, 2, 1):
            kb.assign(top, maximum(top, ShflXor(top, mask)))
        probs = [kb.let(Select(ok, km.exp(kb, s - top), Const(0.0, "f32")), "p") for s, ok in zip(scores, valid)]
        total = kb.local("f32", probs[0], "sum")
        for p in probs[1:]:
            kb.assign(total, total + p)
        for mask in (16, 8, 4, 2, 1):
            kb.assign(total, total + ShflXor(total, mask))
        cols = [kb.let(minimum(lane + u * WARP, g.dv - 1), "c") for u in range(-(-g.dv // WARP))]
        outs = [kb.local("f32", as_expr(0.0, "f32"), "o") for _ in cols]
        for t, p in enumerate(probs):
            with kb.loop(min(WARP, g.sk - t * WARP), hint="src") as src:
                pj = kb.let(ShflIdx(p, src), "pj")
                vrow = kb.let(vbase + (src + t * WARP) * g.dv, "vr")
                for o, c in zip(outs, cols):
                    kb.assign(o, o + pj * v[vrow + c])
        inv = kb.let(Const(1.0, "f32") / total, "inv")
        for o, c in zip(outs, cols):
            y[row * g.dv + c] = o * inv
