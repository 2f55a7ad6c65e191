"""Normalizations: LayerNormalization, RMSNormalization, InstanceNormalization,
GroupNormalization, BatchNormalization (inference and training) and LpNormalization.

The statistics ops are segment reductions (``reduce.segments``): every normalized group
of elements is one segment, its mean and variance two reductions over it (two passes, as
the ONNX function bodies compute them, which keeps the variance accurate when the mean is
large), then one pass writes ``(x - mean) * inv_std * scale + bias``. Per-channel scale
and bias are loaded once per segment, not once per element.
"""

from __future__ import annotations

import numpy as np

from torsh_gen.backends.kernel.builder import BufferRef
from torsh_gen.backends.kernel.ir import Cast, Const, Expr, Select, call, eq
from torsh_gen.backends.kernel.lower import LowerCtx, LoweringDeclined, lowers, prod
from torsh_gen.backends.kernel.lower.reduce import (
    Segment,
    float_dtype,
    norm_axis,
    segments,
    split_at,
)


def _row_param(ctx: LowerCtx, i: int, norm_shape: tuple[int, ...], dtype: str) -> BufferRef:
    """Input ``i`` as a flat vector over the normalized dims (broadcast at compile time
    when it is a constant of another shape)."""
    shape = ctx.in_shape(i)
    if ctx.in_dtypes[i] != dtype:
        raise LoweringDeclined("scale or bias of another element type")
    if [d for d in shape if d != 1] == [d for d in norm_shape if d != 1]:
        return ctx.x(i)
    c = ctx.const(i)
    if c is None:
        raise LoweringDeclined(f"scale or bias of shape {shape} computed at run time")
    return ctx.weight(np.broadcast_to(np.asarray(c), norm_shape), dtype)


def _stats(
    ctx: LowerCtx, seg: Segment, x: BufferRef, dtype: str, eps: float, centred: bool = True
) -> tuple[Expr, Expr]:
    """(mean, 1 / sqrt(var + eps)) of the segment; ``centred=False`` gives RMS statistics
    (mean 0, the mean of squares as variance)."""
    kb = ctx.kb
    inv_n = Const(1.0 / max(seg.n, 1), dtype)
    mean: Expr = Const(0.0, dtype)
    if centred:
        mean = kb.let(seg.reduce(lambda i: x[i], "add", dtype) * inv_n, "mean")

    def square(i: Expr) -> Expr:
        d = kb.let(x[i] - mean if centred else x[i], "d")
        return d * d

    var = kb.let(seg.reduce(square, "add", dtype) * inv_n, "var")
    inv = kb.let(Const(1.0, dtype) / call("sqrt", var + Const(eps, dtype)), "inv")
    return mean, inv


@lowers("LayerNormalization", "RMSNormalization")
def lower_layer_norm(ctx: LowerCtx) -> None:
    """Normalize over axes ``axis``..end; LayerNorm also writes Mean and InvStdDev if asked."""
    dtype = float_dtype(ctx, ctx.node.op_type)
    shape = ctx.in_shape(0)
    if not shape:
        raise LoweringDeclined(f"{ctx.node.op_type} of a scalar")
    axis = norm_axis(int(ctx.attrs.get("axis", -1)), len(shape))
    outer, n, _ = split_at(shape, axis, coerce_2d=True)
    rms = ctx.node.op_type == "RMSNormalization"
    scale = _row_param(ctx, 1, shape[axis:], dtype)
    bias = _row_param(ctx, 2, shape[axis:], dtype) if ctx.has(2) and not rms else None
    eps = float(ctx.attrs.get("epsilon", 1e-5))
    x, y = ctx.x(0), ctx.y(0)
    extra = [(j, ctx.y(j)) for j in (1, 2) if ctx.wants(j) and not rms]

    def body(seg: Segment, o: Expr, j: Expr) -> None:
        mean, inv = _stats(ctx, seg, x, dtype, eps, centred=not rms)
        for k, out in extra:
            v = mean if k == 1 else inv
            out[o] = v if out.dtype == dtype else Cast(v, out.dtype)

        def put(i: Expr, k: Expr) -> None:
            v = ((x[i] - mean) if not rms else x[i]) * inv * scale[k]
            y[i] = v + bias[k] if bias is not None else v

        seg.foreach(put)

    if n == 0:
        return
    segments(ctx, outer, n, 1, body)


def _channel_params(
    ctx: LowerCtx, names: tuple[int, ...], channels: int, dtype: str
) -> list[BufferRef]:
    """Per-channel 1-D parameters (inputs ``names``), checked."""
    refs = []
    for i in names:
        if prod(ctx.in_shape(i)) != channels or ctx.in_dtypes[i] != dtype:
            raise LoweringDeclined(f"input {i} is not one {dtype} per channel")
        refs.append(ctx.x(i))
    return refs


@lowers("InstanceNormalization")
def lower_instance_norm(ctx: LowerCtx) -> None:
    """Each (sample, channel) normalized over the spatial dims; scale and bias per channel."""
    dtype = float_dtype(ctx, "InstanceNormalization")
    shape = ctx.in_shape(0)
    if len(shape) < 2:
        raise LoweringDeclined("InstanceNormalization needs (N, C, ...)")
    c = shape[1]
    scale, bias = _channel_params(ctx, (1, 2), c, dtype)
    eps = float(ctx.attrs.get("epsilon", 1e-5))
    x, y, kb = ctx.x(0), ctx.y(0), ctx.kb

    def body(seg: Segment, o: Expr, j: Expr) -> None:
        mean, inv = _stats(ctx, seg, x, dtype, eps)
        ch = kb.let(o % c, "ch")
        a = kb.let(inv * scale[ch], "a")
        b = kb.let(bias[ch], "b")

        def put(i: Expr, k: Expr) -> None:
            y[i] = (x[i] - mean) * a + b

        seg.foreach(put)

    segments(ctx, shape[0] * c, prod(shape[2:]), 1, body)


@lowers("GroupNormalization")
def lower_group_norm(ctx: LowerCtx) -> None:
    """Statistics per (sample, group); scale and bias per group (opset 18) or channel (21)."""
    dtype = float_dtype(ctx, "GroupNormalization")
    shape = ctx.in_shape(0)
    groups = int(ctx.attrs.get("num_groups", 0))
    if len(shape) < 2 or groups <= 0 or shape[1] % groups:
        raise LoweringDeclined(
            "GroupNormalization needs (N, C, ...) with C divisible by num_groups"
        )
    c, spatial = shape[1], prod(shape[2:])
    per_group = c // groups
    per_channel = ctx.opset >= 21
    scale, bias = _channel_params(ctx, (1, 2), c if per_channel else groups, dtype)
    eps = float(ctx.attrs.get("epsilon", 1e-5))
    x, y, kb = ctx.x(0), ctx.y(0), ctx.kb

    def body(seg: Segment, o: Expr, j: Expr) -> None:
        mean, inv = _stats(ctx, seg, x, dtype, eps)
        g = kb.let(o % groups, "g")
        with kb.loop(per_group, hint="cc") as cc:
            p = kb.let(g * per_group + cc if per_channel else g, "p")
            a = kb.let(inv * scale[p], "a")
            b = kb.let(bias[p], "b")
            row = kb.let(seg.base + cc * spatial, "row")
            with kb.loop(spatial, kind="vector", width=ctx.vector_width(spatial), hint="s") as s:
                y[row + s] = (x[row + s] - mean) * a + b

    segments(ctx, shape[0] * groups, per_group * spatial, 1, body)


@lowers("BatchNormalization")
def lower_batch_norm(ctx: LowerCtx) -> None:
    """Inference form: ``(x - mean) / sqrt(var + eps) * scale + bias`` per channel; in
    training mode (opset 14 on, with the running statistics asked for) the batch's own."""
    stats = ctx.wants(1) or ctx.wants(2)
    training = bool(ctx.attrs.get("training_mode", 0)) and stats
    if stats and (not training or ctx.opset < 14):
        raise LoweringDeclined("BatchNormalization with statistics outputs before opset 14")
    if not ctx.attrs.get("spatial", 1):
        raise LoweringDeclined("BatchNormalization with spatial=0")
    dtype = float_dtype(ctx, "BatchNormalization")
    shape = ctx.in_shape(0)
    if len(shape) < 2:
        raise LoweringDeclined("BatchNormalization needs (N, C, ...)")
    n, c, spatial = shape[0], shape[1], prod(shape[2:])
    if training:
        _batch_norm_training(ctx, dtype, n, c, spatial)
        return
    scale, bias, mean, var = _channel_params(ctx, (1, 2, 3, 4), c, dtype)
    eps = Const(float(ctx.attrs.get("epsilon", 1e-5)), dtype)
    x, y, kb = ctx.x(0), ctx.y(0), ctx.kb

    def coeffs(ch: Expr) -> tuple[Expr, Expr]:
        a = kb.let(scale[ch] / call("sqrt", var[ch] + eps), "a")
        return a, kb.let(bias[ch] - mean[ch] * a, "b")

    if n * c == 0 or spatial == 0:
        return
    kind = ctx.outer_kind(n * c * spatial)
    if spatial >= ctx.sched.lanes or c == 1:
        with kb.loop(n * c, kind=kind, hint="nc") as row:
            a, b = coeffs(row % c if n > 1 else row)
            base = kb.let(row * spatial, "base")
            with kb.loop(spatial, kind="vector", width=ctx.vector_width(spatial), hint="s") as s:
                y[base + s] = call("fma", x[base + s], a, b)
        return
    with kb.loop(n, kind=kind, hint="n") as bn:
        with kb.loop(c, kind="vector", width=ctx.vector_width(c), hint="c") as ch:
            a, b = coeffs(ch)
            with kb.loop(spatial, hint="s") as s:
                at = kb.let((bn * c + ch) * spatial + s if spatial > 1 else bn * c + ch, "at")
                y[at] = call("fma", x[at], a, b)


def _batch_norm_training(ctx: LowerCtx, dtype: str, n: int, c: int, spatial: int) -> None:
    """Per channel: the batch mean and (population) variance over N and the spatial dims,
    two passes as the reference computes them; Y normalized with them; the running
    statistics ``stat * momentum + batch_stat * (1 - momentum)``."""
    scale, bias, mean, var = _channel_params(ctx, (1, 2, 3, 4), c, dtype)
    eps = Const(float(ctx.attrs.get("epsilon", 1e-5)), dtype)
    m = float(ctx.attrs.get("momentum", 0.9))
    x, y, kb = ctx.x(0), ctx.y(0), ctx.kb
    count = n * spatial
    if count == 0:
        raise LoweringDeclined("BatchNormalization training over an empty batch")
    inv_count = Const(1.0 / count, dtype)

    def channel_sum(ch: Expr, value) -> Expr:  # noqa: ANN001 (a callable of the index)
        total = kb.local(dtype, Const(0.0, dtype), "cs")
        with kb.loop(n, hint="b") as b:
            seg = Segment(ctx, kb.let((b * c + ch) * spatial, "row"), spatial, 1, True)
            kb.assign(total, total + seg.reduce(value, "add", dtype))
        return kb.let(total, "sum")

    with kb.loop(c, kind=ctx.outer_kind(n * c * spatial), hint="c") as ch:
        bm = kb.let(channel_sum(ch, lambda i: x[i]) * inv_count, "bm")

        def square(i: Expr) -> Expr:
            d = kb.let(x[i] - bm, "d")
            return d * d

        bv = kb.let(channel_sum(ch, square) * inv_count, "bv")
        a = kb.let(scale[ch] / call("sqrt", bv + eps), "a")
        shift = kb.let(bias[ch] - bm * a, "b")
        with kb.loop(n, hint="b") as b:
            row = kb.let((b * c + ch) * spatial, "row")
            with kb.loop(spatial, kind="vector", width=ctx.vector_width(spatial), hint="s") as s:
                y[row + s] = call("fma", x[row + s], a, shift)
        for j, stat, batch in ((1, mean, bm), (2, var, bv)):
            if ctx.wants(j):
                ctx.y(j)[ch] = stat[ch] * Const(m, dtype) + batch * Const(1.0 - m, dtype)


@lowers("LpNormalization")
def lower_lp_norm(ctx: LowerCtx) -> None:
    """x divided by its L1 or L2 norm along ``axis``; 0 where the norm is 0."""
    dtype = float_dtype(ctx, "LpNormalization")
    shape = ctx.in_shape(0)
    p = int(ctx.attrs.get("p", 2))
    if p not in (1, 2) or not shape:
        raise LoweringDeclined(f"LpNormalization with p={p}")
    axis = norm_axis(int(ctx.attrs.get("axis", -1)), len(shape))
    x, y, kb = ctx.x(0), ctx.y(0), ctx.kb
    zero = Const(0.0, dtype)

    def body(seg: Segment, o: Expr, j: Expr) -> None:
        if p == 1:
            norm = seg.reduce(lambda i: call("fabs", x[i]), "add", dtype)
        else:

            def square(i: Expr) -> Expr:
                v = kb.let(x[i], "v")
                return v * v

            norm = kb.let(call("sqrt", seg.reduce(square, "add", dtype)), "norm")
        is_zero = kb.let(eq(norm, zero), "nz")
        safe = kb.let(Select(is_zero, Const(1.0, dtype), norm), "safe")

        def put(i: Expr, k: Expr) -> None:
            y[i] = Select(is_zero, zero, x[i] / safe)

        seg.foreach(put)

    segments(ctx, *split_at(shape, axis), body)


@lowers("LRN")
def lower_lrn(ctx: LowerCtx) -> None:
    """Local response normalization across channels: for each (n, c) the squares of
    channels c - floor((size-1)/2) .. c + ceil((size-1)/2) are summed per position (a
    vector loop over the contiguous spatial axis), then ``x / (bias + alpha/size * sum)**beta``
    through the polynomial exp/log (``beta`` is never an integer power in practice)."""
    from torsh_gen.backends.kernel import math as km
    from torsh_gen.backends.kernel.ir import maximum, minimum

    shape = ctx.in_shape(0)
    if len(shape) < 2 or ctx.in_dtypes[0] != "f32":
        raise LoweringDeclined("LRN needs float32 input of rank >= 2")
    kb, x, y = ctx.kb, ctx.x(0), ctx.y(0)
    size = int(ctx.attrs.size)
    before, after = (size - 1) // 2, size // 2
    n, c, hw = shape[0], shape[1], prod(shape[2:])
    scale, bias, beta = float(ctx.attrs.alpha) / size, float(ctx.attrs.bias), float(ctx.attrs.beta)
    with kb.loop(n * c, kind=ctx.outer_kind(n * c * hw * size), hint="nc") as nc:
        ch = kb.let(nc % c, "ch")
        img = kb.let(nc - ch, "img")
        lo = kb.let(maximum(ch - before, 0), "lo")
        hi = kb.let(minimum(ch + after + 1, c), "hi")
        with kb.loop(hw, kind="vector", width=ctx.vector_width(hw), hint="p") as p:
            acc = kb.local("f32", 0.0, "sq")
            with kb.loop(hi, start=lo, hint="k") as k:
                v = kb.let(x[(img + k) * hw + p], "v")
                kb.assign(acc, call("fma", v, v, acc))
            base = kb.let(call("fma", acc, Const(scale, "f32"), Const(bias, "f32")), "b")
            denom = km.exp(kb, km.log(kb, base) * beta)
            y[nc * hw + p] = x[nc * hw + p] / denom
