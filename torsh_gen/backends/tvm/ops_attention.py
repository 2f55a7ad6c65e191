"""Attention ops → Relax: Attention (4-D, without KV cache) and FlexAttention
(ai.onnx.preview).

Attention nodes this converter does not take (3-D inputs, past keys and values, padding
lengths, extra outputs) are expanded into their ONNX function body instead.

FlexAttention is attention whose scores and probabilities pass through optional
subgraphs (``score_mod``, ``prob_mod``). The subgraphs are converted inline, node by node
with the registered converters, their single input bound to the scores (or
probabilities) expression: they are plain elementwise or masking graphs, so no Relax
control flow is needed. Arithmetic follows the reference (``torsh_gen/ops/attention.py``):
float32 (float64 for double), or ``softmax_precision``; all -inf rows give zeros.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torsh_gen.backends.tvm.convert import (
    ACCEPTS,
    CONVERTERS,
    DTYPES,
    Ctx,
    Decline,
    converts,
    tvm_dtype,
)
from torsh_gen.ir.graph import Graph, Node
from torsh_gen.ir.types import DType, TensorType


def _compute_dtype(ctx: Ctx, node: Node, dtype: str) -> str:
    """softmax_precision when given, else float64 for double and float32 otherwise."""
    precision = int(node.attr("softmax_precision", 0) or 0)
    if precision:
        return tvm_dtype(DType(precision))
    return "float64" if dtype == "float64" else "float32"


def _repeat_kv(ctx: Ctx, x: Any, q_heads: int) -> Any:
    """Each kv head shared by q_heads / kv_heads consecutive query heads (GQA/MQA)."""
    from tvm import relax

    kv_heads = ctx.shape_of(x)[1]
    if kv_heads == q_heads:
        return x
    if not isinstance(kv_heads, int) or kv_heads == 0 or q_heads % kv_heads:
        raise Decline(f"{q_heads} query heads cannot share {kv_heads} kv heads")
    return ctx.emit(relax.op.repeat(x, q_heads // kv_heads, axis=1))


def _softmax_rows(ctx: Ctx, s: Any, dtype: str) -> Any:
    """Softmax over the last axis in ``dtype``; a row of all -inf gives zeros, not NaN."""
    from tvm import relax

    peak = ctx.emit(relax.op.max(s, axis=[-1], keepdims=True))
    empty = ctx.emit(relax.op.equal(peak, ctx.scalar(float("-inf"), dtype)))
    zero, one = ctx.scalar(0.0, dtype), ctx.scalar(1.0, dtype)
    e = ctx.emit(relax.op.exp(relax.op.subtract(s, relax.op.where(empty, zero, peak))))
    total = ctx.emit(relax.op.sum(e, axis=[-1], keepdims=True))
    p = ctx.emit(relax.op.divide(e, relax.op.where(empty, one, total)))
    return ctx.emit(relax.op.where(empty, zero, p))


def _apply_subgraph(ctx: Ctx, graph: Graph, operand: Any, what: str) -> Any:
    """``graph``'s single output with its single input bound to ``operand``: its nodes
    converted in order into the current block, after its input is typed as the
    operand and what only depends on the operand's static shape is folded."""
    from torsh_gen.errors import TorshGenError
    from torsh_gen.passes.fold import fold_constants

    inputs = [v for v in graph.inputs if v.const is None]
    if len(inputs) != 1 or len(graph.outputs) != 1:
        raise Decline(f"FlexAttention's {what} must take one tensor and give one")
    dims = ctx.shape_of(operand)
    if not all(isinstance(d, int) for d in dims):
        raise Decline(f"FlexAttention's {what} needs static score shapes")
    dtype = next(d for d, s in DTYPES.items() if s == str(operand.ty.dtype))
    inputs[0].type = TensorType(dtype, tuple(dims))
    try:
        fold_constants(
            graph
        )  # Shape of the static scores and what it feeds become constants
    except TorshGenError as e:
        raise Decline(f"FlexAttention's {what}: {e}") from None
    ctx.env[id(inputs[0])] = operand
    for sub in graph.nodes:
        if any(True for _ in sub.subgraphs()):
            raise Decline(f"FlexAttention's {what} holds control flow")
        fn = CONVERTERS.get(sub.op_type)
        accepts = ACCEPTS.get(sub.op_type)
        if fn is None or (accepts is not None and not accepts(sub)):
            raise Decline(
                f"FlexAttention's {what} uses {sub.op_type}, which the TVM backend cannot build"
            )
        for value, expr in zip(sub.outputs, fn(ctx, sub)):
            if expr is not None:
                ctx.env[id(value)] = expr
    return ctx.x(graph.outputs[0])


@converts("FlexAttention")
def flex_attention(ctx: Ctx, node: Node) -> Sequence[Any]:
    """softmax(score_mod(Q K^T * scale)) then prob_mod, times V, in the compute type;
    K and V shared across query heads (GQA) when they have fewer heads; scale 0 means
    1 / sqrt(head size)."""
    from tvm import relax

    q, k, v = (ctx.x(node.inputs[i]) for i in range(3))
    dtype = ctx.dtype(node.inputs[0])
    if dtype not in ("float16", "bfloat16", "float32", "float64"):
        raise Decline(f"FlexAttention of {dtype}")
    qd = ctx.shape_of(q)
    if len(qd) != 4 or len(ctx.shape_of(k)) != 4 or len(ctx.shape_of(v)) != 4:
        raise Decline(
            "FlexAttention needs 4-D Q, K and V (batch, heads, sequence, size)"
        )
    if not isinstance(qd[1], int) or not isinstance(qd[3], int):
        raise Decline("FlexAttention needs static head counts and sizes")
    sdt = _compute_dtype(ctx, node, dtype)
    scale = float(node.attr("scale", 0.0) or 0.0) or 1.0 / float(qd[3]) ** 0.5

    def cast(x: Any) -> Any:
        return x if str(x.ty.dtype) == sdt else ctx.emit(relax.op.astype(x, sdt))

    kk = _repeat_kv(ctx, cast(k), qd[1])
    vv = _repeat_kv(ctx, cast(v), qd[1])
    scores = ctx.emit(relax.op.matmul(cast(q), relax.op.permute_dims(kk, [0, 1, 3, 2])))
    scores = ctx.emit(relax.op.multiply(scores, ctx.scalar(scale, sdt)))
    score_mod = node.attr("score_mod")
    if score_mod is not None:
        scores = cast(_apply_subgraph(ctx, score_mod, scores, "score_mod"))
    probs = _softmax_rows(ctx, scores, sdt)
    prob_mod = node.attr("prob_mod")
    if prob_mod is not None:
        probs = cast(_apply_subgraph(ctx, prob_mod, probs, "prob_mod"))
    y = ctx.emit(relax.op.matmul(probs, vv))
    return [y if sdt == dtype else ctx.emit(relax.op.astype(y, dtype))]


# -- Attention --------------------------------------------------------------------------------
def _attention_accepts(node: Node) -> bool:
    """4-D Q/K/V not of float16, at most a float attention mask besides, and only the
    first output read. The function body takes the rest: it matches onnxruntime on
    float16 (its rounding between steps) and on NaN behind boolean masks."""
    t = node.inputs[0].type if node.inputs and node.inputs[0] is not None else None
    four_d = isinstance(t, TensorType) and t.shape is not None and len(t.shape) == 4
    half = isinstance(t, TensorType) and t.dtype == DType.FLOAT16
    mask = node.inputs[3] if len(node.inputs) > 3 else None
    bool_mask = (
        mask is not None
        and isinstance(mask.type, TensorType)
        and mask.type.dtype == DType.BOOL
    )
    extra_in = any(v is not None for v in node.inputs[4:])
    extra_out = any(v is not None and v.name for v in node.outputs[1:])
    return four_d and not half and not bool_mask and not extra_in and not extra_out


@converts("Attention", accepts=_attention_accepts)
def attention(ctx: Ctx, node: Node) -> Sequence[Any]:
    """The reference's arithmetic: Q and K each scaled by sqrt(scale) in their own type,
    Q K^T in the compute type (float16 stays float16) and rounded to the input type,
    softcap, the float mask added and masked keys (boolean mask, is_causal, sliding
    window) set to -inf, softmax in softmax_precision (else the input type), times V."""
    from tvm import relax

    q, k, v = (ctx.x(node.inputs[i]) for i in range(3))
    t1 = ctx.dtype(node.inputs[0])
    if t1 not in ("float16", "bfloat16", "float32", "float64"):
        raise Decline(f"Attention of {t1}")
    qd, kd = ctx.shape_of(q), ctx.shape_of(k)
    if (
        len(kd) != 4
        or len(ctx.shape_of(v)) != 4
        or not isinstance(qd[1], int)
        or not isinstance(qd[3], int)
    ):
        raise Decline(
            "Attention needs 4-D Q, K and V with static head counts and sizes"
        )
    cdt = (
        "float16" if t1 == "float16" else ("float64" if t1 == "float64" else "float32")
    )
    scale = float(node.attr("scale", 0.0) or 0.0) or 1.0 / float(qd[3]) ** 0.5
    root = ctx.scalar(scale**0.5, t1)

    def to(x: Any, dtype: str) -> Any:
        return x if str(x.ty.dtype) == dtype else ctx.emit(relax.op.astype(x, dtype))

    def rnd(
        x: Any,
    ) -> Any:  # round to the input type between steps, as the spec's graph
        return x if t1 == cdt else to(to(x, t1), cdt)

    qs = to(ctx.emit(relax.op.multiply(q, root)), cdt)
    ks = _repeat_kv(ctx, to(ctx.emit(relax.op.multiply(k, root)), cdt), qd[1])
    qk = rnd(ctx.emit(relax.op.matmul(qs, relax.op.permute_dims(ks, [0, 1, 3, 2]))))
    cap = float(node.attr("softcap", 0.0) or 0.0)
    if cap > 0:
        capped = relax.op.tanh(relax.op.divide(qk, ctx.scalar(cap, cdt)))
        qk = ctx.emit(relax.op.multiply(ctx.scalar(cap, cdt), capped))
    scores = _attention_masks(ctx, node, qk, cdt)
    precision = int(node.attr("softmax_precision", 0) or 0)
    sm = tvm_dtype(DType(precision)) if precision else t1
    probs = to(_softmax_rows(ctx, to(scores, sm), sm), cdt)
    y = ctx.emit(relax.op.matmul(probs, _repeat_kv(ctx, to(v, cdt), qd[1])))
    return [to(y, t1)]


def _attention_masks(ctx: Ctx, node: Node, qk: Any, cdt: str) -> Any:
    """``qk`` plus the float mask, with disallowed keys (boolean mask, causal and window
    bounds at offset 0) at -inf; a mask's key axis is padded (-inf / False) or cut to
    the keys' length."""
    import numpy as np
    from tvm import relax

    sq, skv = ctx.shape_of(qk)[2:]
    scores = qk
    allowed = None
    if ctx.has(node, 3):
        mask = ctx.x(node.inputs[3])
        mdims = ctx.shape_of(mask)
        n = mdims[-1]
        if not isinstance(n, int) or not isinstance(skv, int):
            raise Decline("Attention's mask needs static key lengths")
        is_bool = str(mask.ty.dtype) == "bool"
        if n > skv:
            mask = ctx.emit(
                relax.op.strided_slice(
                    mask, axes=[len(mdims) - 1], begin=[0], end=[skv]
                )
            )
        elif n < skv:
            mdt = str(mask.ty.dtype)
            fill = relax.op.broadcast_to(
                ctx.scalar(False if is_bool else float("-inf"), mdt),
                [*mdims[:-1], skv - n],
            )
            mask = ctx.emit(relax.op.concat([mask, fill], axis=-1))
        if is_bool:
            allowed = mask
        else:
            scores = ctx.emit(relax.op.add(scores, relax.op.astype(mask, cdt)))
    causal = bool(node.attr("is_causal", 0))
    left, right = int(node.attr("left_window_size", -1)), int(
        node.attr("right_window_size", -1)
    )
    if causal or left >= 0 or right >= 0:
        if not isinstance(sq, int) or not isinstance(skv, int):
            raise Decline(
                "a causal or windowed Attention needs static sequence lengths"
            )
        from torsh_gen.ops.attention import window_allowed

        ok = window_allowed(np.arange(sq).reshape(-1, 1), np.arange(skv).reshape(1, -1), causal, left, right)
        frontier = ctx.weight(ok)
        allowed = (
            frontier
            if allowed is None
            else ctx.emit(relax.op.logical_and(allowed, frontier))
        )
    if allowed is None:
        return scores
    return ctx.emit(relax.op.where(allowed, scores, ctx.scalar(float("-inf"), cdt)))
