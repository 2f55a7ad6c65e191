"""Attention ops: scaled dot-product Attention, LinearAttention, FlexAttention, RotaryEmbedding.

Attention works on 4-D ``(batch, heads, seq, head_size)`` tensors internally (3-D inputs are
split into heads with ``q_num_heads``/``kv_num_heads``). Which keys a query may attend is
kept as a boolean "allowed" array (boolean mask, causal frontier, padding, sliding window)
next to an additive float bias (float mask); a query row with no allowed key gives zeros.
Small float types are computed in float32 and cast back to the input type at the end.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from torsh_gen.ir.types import DType, TensorType
from torsh_gen.ops.registry import (
    FLOAT,
    GRAPH,
    INT,
    STRING,
    Cost,
    InferContext,
    OpSpec,
    RunContext,
    op,
)


def _compute_dtype(dt: np.dtype) -> np.dtype:
    return np.dtype(np.float64) if dt == np.float64 else np.dtype(np.float32)


def _split_heads(x: np.ndarray, heads: int) -> np.ndarray:
    """(B, S, H*D) -> (B, H, S, D)."""
    b, s, hd = x.shape
    return x.reshape(b, s, heads, hd // heads).transpose(0, 2, 1, 3)


def _merge_heads(x: np.ndarray) -> np.ndarray:
    """(B, H, S, D) -> (B, S, H*D)."""
    b, h, s, d = x.shape
    return x.transpose(0, 2, 1, 3).reshape(b, s, h * d)


def _repeat_kv(x: np.ndarray, q_heads: int) -> np.ndarray:
    """Share each kv head among ``q_heads / kv_heads`` consecutive query heads (GQA/MQA)."""
    kv_heads = x.shape[1]
    return x if kv_heads == q_heads else np.repeat(x, q_heads // kv_heads, axis=1)


def _softmax_rows(scores: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Softmax over the last axis computed in ``dtype``; all -inf rows give zeros, not NaN."""
    s = scores.astype(dtype)
    if s.size == 0:
        return s
    m = np.max(s, axis=-1, keepdims=True)
    empty = np.isneginf(m.astype(np.float32))
    e = np.exp(s - np.where(empty, np.zeros((), dtype), m).astype(dtype))
    total = np.sum(e, axis=-1, keepdims=True, dtype=dtype)
    p = (e / np.where(empty, np.ones((), dtype), total).astype(dtype)).astype(dtype)
    return np.where(empty, np.zeros((), dtype), p).astype(dtype)


def _pad_last(m: np.ndarray, length: int, fill: Any) -> np.ndarray:
    """Pad or cut the last (key) axis of a mask to ``length``."""
    n = m.shape[-1]
    if n >= length:
        return m[..., :length]
    pad = np.full(m.shape[:-1] + (length - n,), fill, dtype=m.dtype)
    return np.concatenate([m, pad], axis=-1)


def window_allowed(pos: np.ndarray, j: np.ndarray, causal: bool, left: int, right: int) -> np.ndarray:
    """Which key positions ``j`` query positions ``pos`` may attend to (broadcast together):
    not after the query when ``causal``, at most ``left`` before and ``right`` after it
    (a negative bound: none). The one rule for the reference and the TVM converter."""
    ok = np.ones(np.broadcast_shapes(pos.shape, j.shape), dtype=bool)
    if causal:
        ok &= j <= pos
    if left >= 0:
        ok &= j >= pos - left
    if right >= 0:
        ok &= j <= pos + right
    return ok


def _as_4d(m: np.ndarray) -> np.ndarray:
    return m.reshape((1,) * (4 - m.ndim) + m.shape) if m.ndim < 4 else m


class _Masks:
    """The allowed-key set and additive bias of one Attention call, broadcast to 4-D."""

    def __init__(self, sq: int, skv: int) -> None:
        self.allowed = np.ones((1, 1, sq, skv), dtype=bool)
        self.bias: np.ndarray | None = None
        self.sq, self.skv = sq, skv

    def add_mask(self, mask: np.ndarray, cdt: np.dtype) -> None:
        m = _as_4d(mask)
        if m.dtype == np.bool_:
            self.allowed = self.allowed & _pad_last(m, self.skv, False)
        else:
            self.bias = _pad_last(m.astype(cdt), self.skv, -np.inf)

    def add_frontier(self, offset: np.ndarray, causal: bool, left: int, right: int) -> None:
        """Causal and sliding-window bounds around absolute query position offset + i."""
        pos = offset.reshape(-1, 1, 1, 1) + np.arange(self.sq).reshape(1, 1, -1, 1)
        j = np.arange(self.skv).reshape(1, 1, 1, -1)
        self.allowed = self.allowed & window_allowed(pos, j, causal, left, right)

    def add_padding(self, nonpad: np.ndarray) -> None:
        j = np.arange(self.skv).reshape(1, 1, 1, -1)
        self.allowed = self.allowed & (j < nonpad.reshape(-1, 1, 1, 1))


@op("Attention", since=23)
class Attention(OpSpec):
    """softmax(softcap(Q K^T * scale) + bias) V with GQA, masks, KV cache and debug output."""

    attrs = {
        "is_causal": INT(0),
        "kv_num_heads": INT(0),
        "q_num_heads": INT(0),
        "qk_matmul_output_mode": INT(0),
        "scale": FLOAT(0.0),
        "softcap": FLOAT(0.0),
        "softmax_precision": INT(0),
    }

    def run(
        self,
        ctx: RunContext,
        q: np.ndarray,
        k: np.ndarray,
        v: np.ndarray,
        attn_mask: np.ndarray | None = None,
        past_key: np.ndarray | None = None,
        past_value: np.ndarray | None = None,
        nonpad_kv_seqlen: np.ndarray | None = None,
    ) -> Any:
        a = ctx.attrs
        t1, t2 = q.dtype, v.dtype
        is3d = q.ndim == 3
        if is3d:
            q = _split_heads(q, a.q_num_heads)
            k = _split_heads(k, a.kv_num_heads)
            v = _split_heads(v, a.kv_num_heads)
        if past_key is not None:
            k = np.concatenate([past_key, k], axis=2)
        if past_value is not None:
            v = np.concatenate([past_value, v], axis=2)
        present_k, present_v = k, v
        cdt = np.dtype(np.float16) if t1 == np.float16 else _compute_dtype(t1)
        hq, sq, d = q.shape[1:]
        skv = k.shape[2]
        scale = a.scale if a.scale else 1.0 / math.sqrt(d)
        root = np.asarray(math.sqrt(scale), dtype=t1)

        def rnd(x: np.ndarray) -> np.ndarray:  # round to T1 between steps, as the spec's graph
            return x.astype(t1).astype(cdt)

        kk = _repeat_kv(rnd(k * root), hq)
        qk = rnd(np.matmul(rnd(q * root), np.swapaxes(kk, -1, -2)))
        outs = [qk]
        if a.softcap > 0:
            qk = a.softcap * np.tanh(qk / a.softcap)
        outs.append(qk)
        scores = self._bias(a, qk, attn_mask, past_key, nonpad_kv_seqlen, sq, skv, cdt)
        outs.append(scores)
        sm_dt = DType(a.softmax_precision).numpy if a.softmax_precision else t1
        probs = _softmax_rows(scores, sm_dt).astype(cdt)
        outs.append(probs)
        y = np.matmul(probs, _repeat_kv(v.astype(cdt), hq))
        if is3d:
            y = _merge_heads(y)
        results = [y.astype(t1), present_k.astype(t1), present_v.astype(t2)]
        mode = a.qk_matmul_output_mode
        results.append(outs[mode if 0 <= mode < 4 else 0].astype(t1))
        return tuple(results[: max(ctx.n_outputs, 1)]) if ctx.n_outputs > 1 else results[0]

    def _bias(
        self,
        a: Any,
        qk: np.ndarray,
        mask: np.ndarray | None,
        past_key: np.ndarray | None,
        nonpad: np.ndarray | None,
        sq: int,
        skv: int,
        cdt: np.dtype,
    ) -> np.ndarray:
        """The scores with the float mask added and the disallowed keys at -inf."""
        masks = _Masks(sq, skv)
        if mask is not None:
            masks.add_mask(mask, cdt)
        if past_key is not None:
            offset = np.array([past_key.shape[2]])
        elif nonpad is not None:
            offset = nonpad.astype(np.int64) - sq
        else:
            offset = np.array([0])
        left, right = a.get("left_window_size", -1), a.get("right_window_size", -1)
        if a.is_causal or left >= 0 or right >= 0:
            masks.add_frontier(offset, bool(a.is_causal), left, right)
        if nonpad is not None:
            masks.add_padding(nonpad.astype(np.int64))
        scores = qk if masks.bias is None else qk + masks.bias
        return np.where(masks.allowed, scores, -np.inf).astype(cdt)

    def cost(self, ctx: InferContext, output_types: list[Any]) -> Cost:
        qt, kt, vt = (ctx.input_type(i) for i in range(3))
        base = super().cost(ctx, output_types)
        shapes = [t.shape if isinstance(t, TensorType) else None for t in (qt, kt, vt)]
        if any(s is None or not all(isinstance(d, int) for d in s) for s in shapes):
            return base
        qs, ks, vs = shapes  # type: ignore[misc]
        pk = ctx.input_type(4)
        past = (
            pk.shape[2]
            if isinstance(pk, TensorType) and pk.shape and isinstance(pk.shape[2], int)
            else 0
        )
        if len(qs) == 3:
            hq, hkv = ctx.attrs.q_num_heads, ctx.attrs.kv_num_heads
            b, sq, dq = qs[0], qs[1], qs[2] // hq
            skv, dv = ks[1] + past, vs[2] // hkv
        else:
            b, hq, sq, dq = qs
            skv, dv = ks[2] + past, vs[3]
        macs = b * hq * sq * skv * (dq + dv)
        softmax = b * hq * sq * skv * 5
        return Cost(macs, 2 * macs + softmax, base.bytes_read, base.bytes_written)


@op("Attention", since=24)
class Attention24(Attention):
    """Adds the ``nonpad_kv_seqlen`` input (external KV cache); the kernel already reads it."""


@op("Attention", since=25)
class Attention25(Attention24):
    """Adds sliding-window bounds around each query's absolute position."""

    attrs = {**Attention24.attrs, "left_window_size": INT(-1), "right_window_size": INT(-1)}


@op("RotaryEmbedding", since=23)
class RotaryEmbedding(OpSpec):
    """Rotate (half-split or interleaved) pairs of the first rotary_embedding_dim features."""

    attrs = {"interleaved": INT(0), "num_heads": INT(0), "rotary_embedding_dim": INT(0)}
    flops_per_element = 3

    def run(
        self,
        ctx: RunContext,
        x: np.ndarray,
        cos: np.ndarray,
        sin: np.ndarray,
        position_ids: np.ndarray | None = None,
    ) -> np.ndarray:
        a = ctx.attrs
        dt = x.dtype
        if x.ndim == 4:  # (B, H, S, D) -> (B, S, H, D)
            xs = x.transpose(0, 2, 1, 3)
        else:
            b, s, hidden = x.shape
            xs = x.reshape(b, s, a.num_heads, hidden // a.num_heads)
        xs = xs.astype(_compute_dtype(dt))
        rdim = a.rotary_embedding_dim or xs.shape[-1]
        if position_ids is not None:
            cos, sin = cos[position_ids], sin[position_ids]
        c = cos.astype(xs.dtype)[:, :, None, :]
        s_ = sin.astype(xs.dtype)[:, :, None, :]
        rot = xs[..., :rdim]
        if a.interleaved:
            x1, x2 = rot[..., 0::2], rot[..., 1::2]
        else:
            x1, x2 = rot[..., : rdim // 2], rot[..., rdim // 2 :]
        real = c * x1 - s_ * x2
        imag = s_ * x1 + c * x2
        if a.interleaved:
            rotated = np.stack([real, imag], axis=-1).reshape(rot.shape)
        else:
            rotated = np.concatenate([real, imag], axis=-1)
        y = np.concatenate([rotated, xs[..., rdim:]], axis=-1)
        y = y.transpose(0, 2, 1, 3) if x.ndim == 4 else y.reshape(x.shape)
        return y.astype(dt)


def _per_head(g: np.ndarray | None, b: int, t: int, heads: int) -> np.ndarray | None:
    """A (B, T, H*D) / (B, T, H) / (B, T, 1) gate as (B, T, H, D or 1)."""
    if g is None:
        return None
    last = g.shape[-1]
    if last == 1:
        return np.broadcast_to(g.reshape(b, t, 1, 1), (b, t, heads, 1))
    return g.reshape(b, t, heads, last // heads) if last != heads else g.reshape(b, t, heads, 1)


@op("LinearAttention", since=27)
class LinearAttention(OpSpec):
    """Recurrent linear attention (linear, gated, delta, gated_delta rules) with a carried state."""

    attrs = {
        "chunk_size": INT(64),
        "kv_num_heads": INT(required=True),
        "q_num_heads": INT(required=True),
        "scale": FLOAT(0.0),
        "update_rule": STRING("gated_delta"),
    }

    def run(
        self,
        ctx: RunContext,
        query: np.ndarray,
        key: np.ndarray,
        value: np.ndarray,
        past_state: np.ndarray | None = None,
        decay: np.ndarray | None = None,
        beta: np.ndarray | None = None,
    ) -> Any:
        a = ctx.attrs
        dt = query.dtype
        cdt = _compute_dtype(dt)
        b, t, _ = query.shape
        hq, hkv = a.q_num_heads, a.kv_num_heads
        q = query.astype(cdt).reshape(b, t, hq, -1)
        k = key.astype(cdt).reshape(b, t, hkv, -1)
        v = value.astype(cdt).reshape(b, t, hkv, -1)
        dk, dv = k.shape[-1], v.shape[-1]
        scale = a.scale if a.scale else 1.0 / math.sqrt(q.shape[-1])
        state = np.zeros((b, hkv, dk, dv), cdt) if past_state is None else past_state.astype(cdt)
        g = _per_head(None if decay is None else decay.astype(cdt), b, t, hkv)
        bt = _per_head(None if beta is None else beta.astype(cdt), b, t, hkv)
        rule = a.update_rule
        group = hq // hkv
        out = np.empty((b, t, hq, dv), cdt)
        for i in range(t):
            kt, vt = k[:, i], v[:, i]  # (B, Hkv, dk), (B, Hkv, dv)
            if rule in ("gated", "gated_delta"):
                state = np.exp(g[:, i])[..., None] * state  # type: ignore[index]
            if rule in ("delta", "gated_delta"):
                pred = np.einsum("bhk,bhkv->bhv", kt, state)
                upd = bt[:, i] * (vt - pred)  # type: ignore[index]
            else:
                upd = vt
            state = state + kt[..., :, None] * upd[..., None, :]
            full = np.repeat(state, group, axis=1) if group > 1 else state
            out[:, i] = scale * np.einsum("bhk,bhkv->bhv", q[:, i], full)
        y = out.reshape(b, t, hq * dv).astype(dt)
        st_dt = past_state.dtype if past_state is not None else dt
        return (y, state.astype(st_dt)) if ctx.n_outputs > 1 else y


@op("FlexAttention", since=1, domain="ai.onnx.preview")
class FlexAttention(OpSpec):
    """Attention whose scores and probabilities pass through optional subgraphs."""

    attrs = {
        "scale": FLOAT(0.0),
        "softmax_precision": INT(0),
        "score_mod": GRAPH(required=False),
        "prob_mod": GRAPH(required=False),
    }

    def run(self, ctx: RunContext, q: np.ndarray, k: np.ndarray, v: np.ndarray) -> np.ndarray:
        a = ctx.attrs
        dt = q.dtype
        sdt = DType(a.softmax_precision).numpy if a.softmax_precision else _compute_dtype(dt)
        hq, d = q.shape[1], q.shape[-1]
        scale = a.scale if a.scale else 1.0 / math.sqrt(d)
        kk = _repeat_kv(k.astype(sdt), hq)
        scores = np.matmul(q.astype(sdt), np.swapaxes(kk, -1, -2)) * np.asarray(scale, sdt)
        if a.score_mod is not None:
            scores = np.asarray(ctx.run_graph(a.score_mod, [scores.astype(sdt)])[0])
        probs = _softmax_rows(scores, sdt).astype(sdt)
        if a.prob_mod is not None:
            probs = np.asarray(ctx.run_graph(a.prob_mod, [probs])[0])
        y = np.matmul(probs.astype(sdt), _repeat_kv(v.astype(sdt), hq))
        return y.astype(dt)
