"""Remaining ops → Relax: NonMaxSuppression, DFT/STFT, BitCast, Unique, TfIdfVectorizer,
a few ai.onnx.ml ops and the ai.onnx.preview.training optimizers.

Ops whose result length depends on the data (NonMaxSuppression, Unique) run one sequential
kernel (TIR written with the IR builder, wrapped by ``te.extern``) that fills a buffer of the
largest possible size plus a count; the count becomes a fresh symbolic dim through
``tensor_to_shape`` + ``MatchCast`` (as in ops_tensor), and a copy kernel of that size
takes the head of the buffer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from torsh_gen.backends.tvm.convert import Ctx, Decline, as_str, converts, str_attr
from torsh_gen.backends.tvm.ops_tensor import _c, _dims_expr, _i64, _te
from torsh_gen.ir.graph import Node, Value
from torsh_gen.ir.types import TensorType

I64 = "int64"


def _as_vec(ctx: Ctx, x: Any, dtype: str) -> Any:
    """A 0-d or 1-element Relax tensor as a 1-D tensor of ``dtype`` (length 1)."""
    from tvm import relax

    if len(ctx.shape_of(x)) != 1:
        x = ctx.emit(relax.op.reshape(x, [-1]))
    if str(x.ty.dtype) != dtype:
        x = ctx.emit(relax.op.astype(x, dtype))
    return x


def _extern(
    ctx: Ctx,
    out_shapes: list[list[Any]],
    out_dtypes: list[str],
    ir: Callable[..., Any],
    *args: Any,
    name: str,
) -> Any:
    """Emit a ``te.extern`` kernel whose body ``ir(ins, outs)`` is built with the TIR IR
    builder inside an ``IRBuilder`` context; returns the Relax tuple of its outputs."""
    from tvm import te, tirx
    from tvm.script.ir_builder import IRBuilder

    def fn(*tensors: Any) -> Any:
        def body(ins: Any, outs: Any) -> Any:
            from tvm.script.ir_builder import tirx as T

            with IRBuilder() as ib:
                with T.serial(0, 1):  # a frame for the body's local buffers and statements
                    ir(ins, outs)
            return ib.get()

        in_bufs = [tirx.decl_buffer(t.shape, t.dtype, f"in{k}") for k, t in enumerate(tensors)]
        out_bufs = [
            tirx.decl_buffer(_dims_expr(s), d, f"out{k}")
            for k, (s, d) in enumerate(zip(out_shapes, out_dtypes))
        ]
        return te.extern(
            [_dims_expr(s) for s in out_shapes],
            list(tensors),
            body,
            dtype=out_dtypes,
            in_buffers=in_bufs,
            out_buffers=out_bufs,
            name=name,
        )

    return ctx.emit_te(fn, *args)


def _head(ctx: Ctx, buf: Any, count: Any, tail: list[Any], hint: str) -> Any:
    """``buf[:count]`` along the first axis, where ``count`` is a 1-element int64 tensor
    computed at run time."""
    nz, n = _head_index(ctx, count, ctx.shape_of(buf)[0], hint)
    return _take_head(ctx, buf, nz, n, tail, hint)


def _head_index(ctx: Ctx, count: Any, total: Any, hint: str) -> tuple[Any, Any]:
    """The positions ``0..count-1`` as a [1, n] tensor with a fresh dim ``n``. The length
    enters Relax through ``nonzero`` of ``k < count``, so the copies that use it read a
    tensor carrying the dim: a dim bound by ``tensor_to_shape`` + ``MatchCast`` alone is
    not a data dependency, and TVM's FuseOps then moves the copy's allocation before the
    MatchCast that defines its size."""
    from tvm import relax, tirx

    mask = _te(ctx, [total], lambda ts, k: _i64(k) < ts[0][0], count, name=f"{hint}_mask")
    n = tirx.Var(hint, I64)
    nz = ctx.bb.match_cast(ctx.emit(relax.op.nonzero(mask)), relax.TensorType([1, n], I64))
    return nz, n


def _take_head(ctx: Ctx, buf: Any, nz: Any, n: Any, tail: list[Any], hint: str) -> Any:
    """The first ``n`` rows of ``buf`` (``nz`` from ``_head_index``)."""

    def body(ts: Any, i: Any, *rest: Any) -> Any:
        return ts[0][(ts[1][0, i], *rest)]

    return _te(ctx, [n, *tail], body, buf, nz, name=f"{hint}_head")


# -- NonMaxSuppression ---------------------------------------------------------------------
@converts("NonMaxSuppression")
def non_max_suppression(ctx: Ctx, node: Node) -> Sequence[Any]:
    """ONNX's greedy NMS per (batch, class): candidates (score > score_threshold when it is
    given) are visited by score, highest first and lowest index on ties, and a candidate is
    kept unless its IoU with a box already kept for that class is strictly greater than
    iou_threshold, until max_output_boxes_per_class are kept. TVM's own NMS differs at the
    threshold, hence this kernel."""
    from tvm import relax

    center = int(node.attr("center_point_box", 0))
    if center not in (0, 1):
        raise Decline(f"center_point_box={center}")
    boxes, scores = ctx.x(node.inputs[0]), ctx.x(node.inputs[1])
    bdt = ctx.dtype(node.inputs[0])
    if not bdt.startswith("float") or ctx.dtype(node.inputs[1]) != bdt:
        raise Decline("NonMaxSuppression needs float boxes and scores of one dtype")
    b, n, four = ctx.shape_of(boxes)
    _, c, _ = ctx.shape_of(scores)
    if four != 4:
        raise Decline("boxes' last dim must be 4")

    def operand(k: int, default: Any, dtype: str) -> Any:
        if ctx.has(node, k) and int(np.prod(ctx.shape(node.inputs[k]) or [1])) != 0:
            return _as_vec(ctx, ctx.x(node.inputs[k]), dtype)
        return ctx.constant(np.array([default]), dtype)

    max_out = operand(2, 0, I64)
    iou_thr = operand(3, 0.0, bdt)
    has_score = ctx.has(node, 4)
    score_thr = operand(4, 0.0, bdt)
    total = b * c * n if all(isinstance(d, int) for d in (b, c, n)) else _i64(b) * _i64(c) * _i64(n)
    ir = _nms_ir(center, has_score, bdt)
    res = _extern(
        ctx,
        [[total, 3], [1], [n]],
        [I64, I64, "int32"],
        ir,
        boxes,
        scores,
        max_out,
        iou_thr,
        score_thr,
        name="nms",
    )
    sel = ctx.emit(relax.TupleGetItem(res, 0))
    count = ctx.emit(relax.TupleGetItem(res, 1))
    return [_head(ctx, sel, count, [3], "nms")]


def _nms_ir(center: int, has_score: bool, dtype: str) -> Callable[..., Any]:
    """The sequential NMS body (see ``non_max_suppression``): ``outs`` are the selected
    triples (capacity B*C*N), their count, and a per-class scratch of visited flags."""

    def ir(ins: Any, outs: Any) -> None:
        from tvm import tirx
        from tvm.script.ir_builder import tirx as T

        boxes, scores, max_out, iou_thr, score_thr = (T.buffer_proxy(t) for t in ins)
        sel, count, used = (T.buffer_proxy(t) for t in outs)
        nb, nc, n = ins[1].shape
        best = T.buffer_proxy(T.decl_buffer([1], I64, scope="local"))
        kept = T.buffer_proxy(T.decl_buffer([1], I64, scope="local"))
        start = T.buffer_proxy(T.decl_buffer([1], I64, scope="local"))
        ok = T.buffer_proxy(T.decl_buffer([1], "int32", scope="local"))
        count[0] = _c(0)
        with T.serial(0, nb) as bi:
            with T.serial(0, nc) as ci:
                with T.serial(0, n) as j:
                    used[j] = tirx.const(0, "int32")
                kept[0] = _c(0)
                start[0] = count[0]
                with T.serial(0, n) as _step:
                    best[0] = _c(-1)
                    with T.serial(0, n) as j:
                        s = scores[bi, ci, j]
                        cand = used[j] == 0
                        if has_score:
                            cand = tirx.all(cand, s > score_thr[0])
                        better = tirx.any(best[0] < 0, s > scores[bi, ci, tirx.max(best[0], _c(0))])
                        with T.If(tirx.all(cand, better)):
                            with T.Then():
                                best[0] = _i64(j)
                    with T.If(tirx.all(best[0] >= 0, kept[0] < max_out[0])):
                        with T.Then():
                            used[best[0]] = tirx.const(1, "int32")
                            ok[0] = tirx.const(1, "int32")
                            with T.serial(0, count[0] - start[0]) as k:
                                other = sel[start[0] + k, 2]
                                with T.If(
                                    _suppresses(
                                        boxes, bi, best[0], other, center, iou_thr[0], dtype
                                    )
                                ):
                                    with T.Then():
                                        ok[0] = tirx.const(0, "int32")
                            with T.If(ok[0] == 1):
                                with T.Then():
                                    sel[count[0], 0] = _i64(bi)
                                    sel[count[0], 1] = _i64(ci)
                                    sel[count[0], 2] = best[0]
                                    count[0] = count[0] + 1
                                    kept[0] = kept[0] + 1

    return ir


def _suppresses(boxes: Any, bi: Any, i: Any, j: Any, center: int, thr: Any, dtype: str) -> Any:
    """Whether boxes ``i`` and ``j`` of batch ``bi`` overlap with IoU > ``thr`` (ONNX's rule:
    no overlap, or an empty box, never suppresses)."""
    from tvm import tirx

    def extent(k: int, box: Any) -> tuple[Any, Any]:
        if center == 0:
            a, b = boxes[bi, box, k], boxes[bi, box, k + 2]
            return tirx.min(a, b), tirx.max(a, b)
        half = boxes[bi, box, k + 2] / tirx.const(2, dtype)
        return boxes[bi, box, k] - half, boxes[bi, box, k] + half

    (y1a, y2a), (y1b, y2b) = extent(0, i), extent(0, j)
    (x1a, x2a), (x1b, x2b) = extent(1, i), extent(1, j)
    ix = tirx.min(x2a, x2b) - tirx.max(x1a, x1b)
    iy = tirx.min(y2a, y2b) - tirx.max(y1a, y1b)
    inter = ix * iy
    area_a = (x2a - x1a) * (y2a - y1a)
    area_b = (x2b - x1b) * (y2b - y1b)
    union = area_a + area_b - inter
    zero = tirx.const(0, dtype)
    valid = tirx.all(ix > zero, iy > zero, inter > zero, area_a > zero, area_b > zero, union > zero)
    return tirx.all(valid, inter / tirx.Select(valid, union, tirx.const(1, dtype)) > thr)


# -- BitCast -------------------------------------------------------------------------------
@converts("BitCast")
def bitcast(ctx: Ctx, node: Node) -> Sequence[Any]:
    """Reinterpret each element's bits as ``to`` (same width). bool ↔ 8-bit integers is a
    value cast: TVM's bool is not an 8-bit storage type, and its bytes are 0 or 1 anyway."""
    from tvm import tirx

    src, dst = ctx.dtype(node.inputs[0]), ctx.dtype(node.outputs[0])
    if _bits(src) != _bits(dst):
        raise Decline(f"BitCast between {src} and {dst} (different widths)")
    x = ctx.x(node.inputs[0])
    if src == dst:
        return [x]
    as_value = "bool" in (src, dst)

    def body(ts: Any, *i: Any) -> Any:
        v = ts[0][i]
        if not as_value:
            return tirx.reinterpret(dst, v)
        return v != tirx.const(0, src) if dst == "bool" else tirx.Cast(dst, v)

    return [_te(ctx, ctx.shape_of(x), body, x, name="bitcast")]


def _bits(dtype: str) -> int:
    if dtype == "bool":
        return 8
    return int("".join(ch for ch in dtype if ch.isdigit()))


# -- ai.onnx.preview.training optimizers ---------------------------------------------------
def _groups(node: Node, k: int) -> list[list[Any]]:
    """The tensor inputs after R and T split into ``k`` equal groups (X..., G..., ...)."""
    rest = list(node.inputs[2:])
    if len(rest) % k or not rest:
        raise Decline(f"{node.op_type} expects {k} groups of tensor inputs")
    n = len(rest) // k
    return [rest[g * n : (g + 1) * n] for g in range(k)]


def _step(ctx: Ctx, node: Node, dtype: str) -> tuple[Any, Any]:
    """R and T as 0-d tensors: R in ``dtype`` (float64, the reference's precision for the
    scalar factors), T as float64."""
    from tvm import relax

    r = ctx.emit(relax.op.reshape(ctx.x(node.inputs[0]), []))
    t = ctx.emit(relax.op.reshape(ctx.x(node.inputs[1]), []))
    return ctx.emit(relax.op.astype(r, dtype)), ctx.emit(relax.op.astype(t, "float64"))


def _regularized(ctx: Ctx, x: Any, g: Any, coef: float, dtype: str) -> Any:
    from tvm import relax

    if coef == 0.0:
        return g
    return ctx.emit(relax.op.add(relax.op.multiply(ctx.scalar(coef, dtype), x), g))


@converts("Adagrad")
def adagrad(ctx: Ctx, node: Node) -> Sequence[Any]:
    """X_new = X - R / (1 + T * decay) * G' / (sqrt(H + G'²) + eps), G' = G + norm * X."""
    from tvm import relax

    xs, gs, hs = _groups(node, 3)
    decay, eps = float(node.attr("decay_factor", 0.0)), float(node.attr("epsilon", 0.0))
    norm = float(node.attr("norm_coefficient", 0.0))
    r, t = _step(ctx, node, "float64")
    rate = ctx.emit(
        relax.op.divide(
            r,
            relax.op.add(
                ctx.scalar(1.0, "float64"),
                relax.op.multiply(t, ctx.scalar(decay, "float64")),
            ),
        )
    )
    new_x, new_h = [], []
    for xv, gv, hv in zip(xs, gs, hs):
        dt = ctx.dtype(xv)
        x, g, h = ctx.x(xv), ctx.x(gv), ctx.x(hv)
        rr = ctx.emit(relax.op.astype(rate, dt))
        greg = _regularized(ctx, x, g, norm, dt)
        h2 = ctx.emit(relax.op.add(h, relax.op.multiply(greg, greg)))
        den = relax.op.add(relax.op.sqrt(h2), ctx.scalar(eps, dt))
        new_x.append(
            ctx.emit(relax.op.subtract(x, relax.op.divide(relax.op.multiply(rr, greg), den)))
        )
        new_h.append(h2)
    return new_x + new_h


@converts("Momentum")
def momentum(ctx: Ctx, node: Node) -> Sequence[Any]:
    """V_new = alpha V + beta' G' (beta' = 1 at T = 0); standard: X - R V_new; nesterov:
    X - R (G' + alpha V_new)."""
    from tvm import relax

    xs, gs, vs = _groups(node, 3)
    alpha, beta = float(node.attr("alpha")), float(node.attr("beta"))
    norm = float(node.attr("norm_coefficient", 0.0))
    mode = str_attr(node, "mode", "standard")
    if mode not in ("standard", "nesterov"):
        raise Decline(f"Momentum mode {mode}")
    r, t = _step(ctx, node, "float64")
    beta_t = ctx.emit(
        relax.op.where(
            relax.op.greater(t, ctx.scalar(0.0, "float64")),
            ctx.scalar(beta, "float64"),
            ctx.scalar(1.0, "float64"),
        )
    )
    new_x, new_v = [], []
    for xv, gv, vv in zip(xs, gs, vs):
        dt = ctx.dtype(xv)
        x, g, v = ctx.x(xv), ctx.x(gv), ctx.x(vv)
        rr, bb = ctx.emit(relax.op.astype(r, dt)), ctx.emit(relax.op.astype(beta_t, dt))
        greg = _regularized(ctx, x, g, norm, dt)
        a = ctx.scalar(alpha, dt)
        v2 = ctx.emit(relax.op.add(relax.op.multiply(a, v), relax.op.multiply(bb, greg)))
        step = v2 if mode == "standard" else relax.op.add(greg, relax.op.multiply(a, v2))
        new_x.append(ctx.emit(relax.op.subtract(x, relax.op.multiply(rr, step))))
        new_v.append(v2)
    return new_x + new_v


@converts("Adam")
def adam(ctx: Ctx, node: Node) -> Sequence[Any]:
    """ONNX's Adam: moments V, H updated with G' = G + norm X; the rate corrected by
    sqrt(1 - beta^T) / (1 - alpha^T) when T > 0; X scaled by 1 - norm_post at the end."""
    from tvm import relax

    xs, gs, vs, hs = _groups(node, 4)
    alpha, beta = float(node.attr("alpha", 0.9)), float(node.attr("beta", 0.999))
    eps, norm = float(node.attr("epsilon", 1e-6)), float(node.attr("norm_coefficient", 0.0))
    post = float(node.attr("norm_coefficient_post", 0.0))
    r, t = _step(ctx, node, "float64")
    one = ctx.scalar(1.0, "float64")
    corr = relax.op.divide(
        relax.op.sqrt(relax.op.subtract(one, relax.op.power(ctx.scalar(beta, "float64"), t))),
        relax.op.subtract(one, relax.op.power(ctx.scalar(alpha, "float64"), t)),
    )
    rate = ctx.emit(
        relax.op.where(
            relax.op.greater(t, ctx.scalar(0.0, "float64")), relax.op.multiply(r, corr), r
        )
    )
    new_x, new_v, new_h = [], [], []
    for xv, gv, vv, hv in zip(xs, gs, vs, hs):
        dt = ctx.dtype(xv)
        x, g, v, h = ctx.x(xv), ctx.x(gv), ctx.x(vv), ctx.x(hv)
        greg = _regularized(ctx, x, g, norm, dt)

        def mix(old: Any, new: Any, w: float, dt: str = dt) -> Any:
            keep = relax.op.multiply(ctx.scalar(w, dt), old)
            return ctx.emit(relax.op.add(keep, relax.op.multiply(ctx.scalar(1.0 - w, dt), new)))

        v2 = mix(v, greg, alpha)
        h2 = mix(h, ctx.emit(relax.op.multiply(greg, greg)), beta)
        den = relax.op.add(relax.op.sqrt(h2), ctx.scalar(eps, dt))
        x2 = relax.op.subtract(
            x, relax.op.multiply(relax.op.astype(rate, dt), relax.op.divide(v2, den))
        )
        new_x.append(ctx.emit(relax.op.multiply(ctx.scalar(1.0 - post, dt), x2)))
        new_v.append(v2)
        new_h.append(h2)
    return new_x + new_v + new_h


# -- DFT / STFT ----------------------------------------------------------------------------
def _dft_matrix(
    n_in: int, c_in: int, length: int, inverse: bool, onesided: bool
) -> tuple[np.ndarray, int, int]:
    """The real matrix that maps ``n_in`` samples of ``c_in`` interleaved components
    (row n*c_in + comp) to the transform's bins (column k*c_out + comp), for a transform of
    ``length``: forward DFT (all or one-sided bins), inverse DFT, or, inverse and
    one-sided, numpy's irfft (a Hermitian spectrum to ``length`` real samples). Returns
    the matrix (float64), the bin count and c_out."""
    if inverse and onesided:
        n_used = min(n_in, length // 2 + 1)
        k = np.arange(length)
        n = np.arange(n_used)
        theta = 2 * np.pi * np.outer(n, k) / length
        weight = np.full(n_used, 2.0)
        weight[0] = 1.0
        if length % 2 == 0 and n_used > length // 2:
            weight[length // 2] = 1.0
        cos, sin = np.cos(theta), np.sin(theta)
        sin[0, :] = 0.0
        if length % 2 == 0 and n_used > length // 2:
            sin[length // 2, :] = 0.0
        w = np.zeros((n_in, c_in, length, 1))
        w[:n_used, 0, :, 0] = weight[:, None] * cos / length
        if c_in == 2:
            w[:n_used, 1, :, 0] = -weight[:, None] * sin / length
        return w.reshape(n_in * c_in, length), length, 1
    bins = length // 2 + 1 if onesided and not inverse else length
    n_used = min(n_in, length)
    theta = 2 * np.pi * np.outer(np.arange(n_used), np.arange(bins)) / length
    cos, sin = np.cos(theta), np.sin(theta)
    sign, scale = (1.0, 1.0 / length) if inverse else (-1.0, 1.0)
    w = np.zeros((n_in, c_in, bins, 2))
    # (xr + j xi)(cos + j sign sin) = xr cos - sign xi sin + j (sign xr sin + xi cos)
    w[:n_used, 0, :, 0] = cos * scale
    w[:n_used, 0, :, 1] = sign * sin * scale
    if c_in == 2:
        w[:n_used, 1, :, 0] = -sign * sin * scale
        w[:n_used, 1, :, 1] = cos * scale
    return w.reshape(n_in * c_in, bins * 2), bins, 2


def _apply_dft(ctx: Ctx, x: Any, w: np.ndarray, bins: int, c_out: int, dtype: str) -> Any:
    """``x`` of shape [..., n, c] times the DFT matrix ``w``: [..., bins, c_out]."""
    from tvm import relax

    dims = ctx.shape_of(x)
    flat = ctx.emit(relax.op.reshape(x, [*dims[:-2], dims[-2] * dims[-1]]))
    # float64 accumulation: the oracle's FFT is exact enough that bins which cancel to ~0
    # differ from a float32 sum by more than the conformance atol
    flat = ctx.emit(relax.op.astype(flat, "float64"))
    y = ctx.emit(relax.op.astype(relax.op.matmul(flat, ctx.weight(w)), dtype))
    return ctx.emit(relax.op.reshape(y, [*dims[:-2], bins, c_out]))


@converts("DFT")
def dft(ctx: Ctx, node: Node) -> Sequence[Any]:
    """DFT along a static axis as one matmul with a compile-time twiddle matrix (real or
    interleaved complex input; onesided, inverse, irfft, dft_length)."""
    dtype = ctx.dtype(node.inputs[0])
    if not dtype.startswith("float") or dtype == "float16":
        raise Decline(f"DFT of {dtype}")
    x = ctx.x(node.inputs[0])
    dims = ctx.shape_of(x)
    rank = len(dims)
    inverse, onesided = bool(node.attr("inverse", 0)), bool(node.attr("onesided", 0))
    if dims[-1] not in (1, 2):
        raise Decline("DFT needs a last dim of 1 or 2")
    given = ctx.has(node, 1) and ctx.shape(node.inputs[1]) != [0]
    length = ctx.ints(node.inputs[1], "DFT's dft_length")[0] if given else None
    if ctx.opset < 20:
        return [
            _dft_along(
                ctx, x, ctx.axis(int(node.attr("axis", 1)), rank), length, inverse, onesided, dtype
            )
        ]
    if not ctx.has(node, 2):
        return [_dft_along(ctx, x, rank - 2, length, inverse, onesided, dtype)]
    axis_c = ctx.const(node.inputs[2])
    if axis_c is not None:
        axis = ctx.axis(int(np.asarray(axis_c).reshape(-1)[0]), rank)
        return [_dft_along(ctx, x, axis, length, inverse, onesided, dtype)]
    return [_dft_runtime_axis(ctx, node, x, length, inverse, onesided, dtype)]


def _dft_runtime_axis(
    ctx: Ctx, node: Node, x: Any, length: int | None, inverse: bool, onesided: bool, dtype: str
) -> Any:
    """A run-time axis: the transform along every axis it may name, picked by ``where``.
    Only where all of them have one output shape (else the shape would depend on data)."""
    from tvm import relax

    rank = len(ctx.shape_of(x))
    declared = node.outputs[0].type.shape if isinstance(node.outputs[0].type, TensorType) else None
    if declared is not None and not all(isinstance(d, int) for d in declared):
        declared = None
    outs: list[Any] = []
    for a in range(rank - 1):
        n = ctx.shape_of(x)[a]
        fits = isinstance(n, int) and (length is not None or not (inverse and onesided) or n > 1)
        # an axis whose output contradicts the declared output shape cannot be the one given
        out = _dft_along(ctx, x, a, length, inverse, onesided, dtype) if fits else None
        if out is not None and declared is not None and ctx.shape_of(out) != list(declared):
            out = None
        outs.append(out)
    shapes = {tuple(ctx.shape_of(o)) for o in outs if o is not None}
    if len(shapes) != 1:
        raise Decline("DFT's run-time axis decides the output shape")
    axis = _int_scalar(ctx, node.inputs[2])
    axis = ctx.emit(
        relax.op.where(
            relax.op.less(axis, ctx.constant(np.array(0), I64)),
            relax.op.add(axis, ctx.constant(np.array(rank), I64)),
            axis,
        )
    )
    live = [(a, o) for a, o in enumerate(outs) if o is not None]
    allowed = [a for a, _ in live]
    ctx.check(
        _is_one_of(ctx, axis, allowed),
        f"DFT: the axis given at run time ({{}}) is not one the declared output shape allows {allowed}",
        [axis],
    )
    result = live[-1][1]
    for a, out in live[:-1]:
        pick = relax.op.equal(axis, ctx.constant(np.array(a), I64))
        result = ctx.emit(relax.op.where(pick, out, result))
    return result


def _dft_along(
    ctx: Ctx, x: Any, axis: int, length: int | None, inverse: bool, onesided: bool, dtype: str
) -> Any:
    """The DFT of ``x`` along the static ``axis``: moved next to the complex dim, one
    matmul, moved back."""
    from tvm import relax

    dims = ctx.shape_of(x)
    rank = len(dims)
    if axis == rank - 1:
        raise Decline("DFT along the complex dim")
    n, c = dims[axis], dims[-1]
    if not isinstance(n, int):
        raise Decline("DFT needs a static axis length")
    if length is None:
        length = 2 * (n - 1) if inverse and onesided else n
    if length < 1:
        raise Decline(f"dft_length {length}")
    perm = [d for d in range(rank - 1) if d != axis] + [axis, rank - 1]
    moved = x if perm == list(range(rank)) else ctx.emit(relax.op.permute_dims(x, perm))
    w, bins, c_out = _dft_matrix(n, c, length, inverse, onesided)
    y = _apply_dft(ctx, moved, w, bins, c_out, dtype)
    if perm == list(range(rank)):
        return y
    back = [perm.index(d) for d in range(rank)]
    return ctx.emit(relax.op.permute_dims(y, back))


@converts("STFT")
def stft(ctx: Ctx, node: Node) -> Sequence[Any]:
    """Frames of ``frame_length`` every ``frame_step`` samples, times the window, then the
    DFT matmul: [batch, frames, bins, 2]. A run-time frame_step or frame_length is taken
    where the declared output shape fixes the frame count and bins: the frames are then
    gathered at run-time offsets, and the frame lengths the bins allow are each
    transformed and picked by ``where``."""
    from tvm import relax

    dtype = ctx.dtype(node.inputs[0])
    if not dtype.startswith("float") or dtype == "float16":
        raise Decline(f"STFT of {dtype}")
    x = ctx.x(node.inputs[0])
    _, length, c = ctx.shape_of(x)
    if not isinstance(length, int) or c not in (1, 2):
        raise Decline("STFT needs a static signal length and a last dim of 1 or 2")
    onesided = bool(node.attr("onesided", 1))
    step_c = ctx.const(node.inputs[1])
    step = int(np.asarray(step_c).reshape(-1)[0]) if step_c is not None else None
    has_window = ctx.has(node, 2)
    if ctx.has(node, 3) and ctx.const(node.inputs[3]) is not None:
        frames_len = [ctx.ints(node.inputs[3], "STFT's frame_length")[0]]
    elif has_window:
        frames_len = [ctx.static_shape(node.inputs[2], "STFT's window")[0]]
    elif ctx.has(node, 3):
        frames_len = []  # run time: from the declared bins below
    else:
        frames_len = [length]
    declared = node.outputs[0].type.shape if isinstance(node.outputs[0].type, TensorType) else None
    static_out = (
        declared is not None and all(isinstance(d, int) for d in declared) and len(declared) == 4
    )
    if (step is None or not frames_len) and not static_out:
        raise Decline("STFT's run-time frame_step/frame_length need a static declared output shape")
    if not frames_len:
        bins = declared[2]
        frames_len = [2 * (bins - 1), 2 * bins - 1] if onesided else [bins]
    outs = []
    for frame in frames_len:
        if frame < 1 or frame > length:
            continue
        if step is not None:
            if step < 1:
                raise Decline(f"STFT frame_step {step}")
            frames = 1 + (length - frame) // step
        else:
            frames = declared[1]
        seg = _stft_frames(ctx, x, node, step, frames, frame)
        if has_window:
            win = ctx.emit(relax.op.reshape(ctx.x(node.inputs[2]), [frame, 1]))
            seg = ctx.emit(relax.op.multiply(seg, win))
        w, bins, c_out = _dft_matrix(frame, c, frame, False, onesided)
        out = _apply_dft(ctx, seg, w, bins, c_out, dtype)
        # only a run-time operand consults the declared shape (ONNX's own shape inference
        # of STFT ignores onesided's default of 1, so a declared shape may be wrong)
        runtime = step is None or len(frames_len) > 1
        if runtime and ctx.shape_of(out) != list(declared):
            continue
        outs.append((frame, out))
    if not outs:
        raise Decline("no STFT frame length fits the declared output shape")
    # a run-time frame_length (the only case with several candidates) picks among them
    lengths = [f for f, _ in outs]
    runtime_len = ctx.has(node, 3) and ctx.const(node.inputs[3]) is None and not has_window
    fl = _int_scalar(ctx, node.inputs[3]) if runtime_len else None
    if fl is not None:
        ctx.check(
            _is_one_of(ctx, fl, lengths),
            f"STFT: the frame_length given at run time ({{}}) does not fit the declared output shape (frame lengths {lengths})",
            [fl],
        )
    if step is None:
        _check_stft_step(ctx, node, ctx.scalar(lengths[0], I64) if fl is None else fl, length, declared)
    result = outs[-1][1]
    for frame, out in outs[:-1]:
        result = ctx.emit(
            relax.op.where(relax.op.equal(fl, ctx.constant(np.array(frame), I64)), out, result)
        )
    return [result]


def _is_one_of(ctx: Ctx, value: Any, allowed: list[int]) -> Any:
    """Whether the int64 scalar ``value`` equals one of ``allowed`` (a boolean scalar)."""
    from tvm import relax

    hits = ctx.emit(relax.op.equal(value, ctx.constant(np.array(allowed, np.int64), I64)))
    count = ctx.emit(relax.op.sum(ctx.emit(relax.op.astype(hits, I64))))
    return ctx.emit(relax.op.greater(count, ctx.scalar(0, I64)))


def _int_scalar(ctx: Ctx, value: Value) -> Any:
    """A one-element run-time integer operand as a 0-d int64 tensor."""
    from tvm import relax

    return ctx.emit(relax.op.astype(relax.op.reshape(ctx.x(value), []), I64))


def _check_stft_step(ctx: Ctx, node: Node, fl: Any, length: int, declared: Any) -> None:
    """Stop at run time unless the run-time frame_step gives the declared frame count
    with frame length ``fl`` (the frames were laid out from the declaration)."""
    from tvm import relax

    st = _int_scalar(ctx, node.inputs[1])
    one = ctx.scalar(1, I64)
    safe = ctx.emit(relax.op.maximum(st, one))
    frames = ctx.emit(
        relax.op.add(relax.op.floor_divide(relax.op.subtract(ctx.scalar(length, I64), fl), safe), one)
    )
    ok = ctx.emit(
        relax.op.logical_and(
            relax.op.greater_equal(st, one),
            relax.op.equal(frames, ctx.scalar(int(declared[1]), I64)),
        )
    )
    ctx.check(
        ok,
        f"STFT: the frame_step given at run time ({{}}) does not give the declared {int(declared[1])} frames",
        [st],
    )


def _stft_frames(ctx: Ctx, x: Any, node: Node, step: int | None, frames: int, frame: int) -> Any:
    """[batch, frames, frame, c]: frame f starts at f * step (a constant gather, or a TE
    gather reading a run-time step)."""
    from tvm import relax, tirx

    batch, length, c = ctx.shape_of(x)
    if step is not None:
        idx = (np.arange(frames)[:, None] * step + np.arange(frame)[None, :]).reshape(-1)
        seg = ctx.emit(relax.op.take(x, ctx.constant(idx.astype(np.int64)), axis=1))
        return ctx.emit(relax.op.reshape(seg, [batch, frames, frame, c]))
    st = _as_vec(ctx, ctx.x(node.inputs[1]), I64)

    def body(ts: Any, b: Any, f: Any, n: Any, k: Any) -> Any:
        pos = tirx.min(_i64(f) * ts[1][0] + _i64(n), _c(length - 1))
        return ts[0][b, pos, k]

    return _te(ctx, [batch, frames, frame, c], body, x, st, name="stft_frames")


# -- Unique --------------------------------------------------------------------------------
@converts("Unique")
def unique(ctx: Ctx, node: Node) -> Sequence[Any]:
    """Unique slices along ``axis`` (or elements of the flattened input): one sequential
    kernel over the [A, S] view (the axis moved first) finds each slice's first equal
    slice, ranks the distinct ones (lexicographically when ``sorted``, else by first
    occurrence, as numpy does) and scatters values, first indices, inverse indices and
    counts; the distinct count becomes a fresh dim."""
    from tvm import relax

    x = ctx.x(node.inputs[0])
    dims = ctx.shape_of(x)
    axis = node.attr("axis")
    if axis is None:
        x = ctx.emit(relax.op.reshape(x, [-1]))
        dims, axis = ctx.shape_of(x), 0
    else:
        axis = ctx.axis(int(axis), len(dims))
    if not all(isinstance(d, int) for d in dims):
        raise Decline("Unique needs a static input shape")
    perm = [axis] + [d for d in range(len(dims)) if d != axis]
    moved = x if perm == list(range(len(dims))) else ctx.emit(relax.op.permute_dims(x, perm))
    rest = [dims[d] for d in perm[1:]]
    a, s = dims[axis], int(np.prod(rest)) if rest else 1
    flat = ctx.emit(relax.op.reshape(moved, [a, s]))
    dtype = ctx.dtype(node.inputs[0])
    ir = _unique_ir(bool(node.attr("sorted", 1)))
    res = _extern(
        ctx,
        [[a, s], [a], [a], [a], [1], [a], [a]],
        [dtype, I64, I64, I64, I64, I64, I64],
        ir,
        flat,
        name="unique",
    )
    vals, first, inv, counts, count = (ctx.emit(relax.TupleGetItem(res, k)) for k in range(5))
    nz, n = _head_index(ctx, count, a, "uniq")
    y = _take_head(ctx, vals, nz, n, [s], "unique_y")
    y = ctx.emit(relax.op.reshape(y, [n, *rest]))
    if perm != list(range(len(dims))):
        y = ctx.emit(relax.op.permute_dims(y, [perm.index(d) for d in range(len(dims))]))
    return [
        y,
        _take_head(ctx, first, nz, n, [], "unique_idx"),
        inv,
        _take_head(ctx, counts, nz, n, [], "unique_cnt"),
    ]


def _unique_ir(is_sorted: bool) -> Callable[..., Any]:
    """The sequential Unique body: ``outs`` = values [A, S], first indices [A], inverse
    [A], counts [A], distinct count [1], and scratch first-equal [A] and rank [A]."""

    def ir(ins: Any, outs: Any) -> None:
        from tvm import tirx
        from tvm.script.ir_builder import tirx as T

        data = T.buffer_proxy(ins[0])
        a, s = ins[0].shape
        vals, first_idx, inv, counts, count, first, rank = (T.buffer_proxy(t) for t in outs)
        flag = T.buffer_proxy(T.decl_buffer([1], "int32", scope="local"))
        one, zero = tirx.const(1, "int32"), tirx.const(0, "int32")

        def rows_equal(i: Any, j: Any) -> None:  # flag[0] = row i == row j
            flag[0] = one
            with T.serial(0, s) as k:
                with T.If(data[i, k] != data[j, k]):
                    with T.Then():
                        flag[0] = zero

        def row_less(i: Any, j: Any) -> None:  # flag[0] = 1 if row i < row j, 2 if >
            flag[0] = zero
            with T.serial(0, s) as k:
                with T.If(flag[0] == 0):
                    with T.Then():
                        with T.If(data[i, k] < data[j, k]):
                            with T.Then():
                                flag[0] = one
                        with T.If(data[i, k] > data[j, k]):
                            with T.Then():
                                flag[0] = tirx.const(2, "int32")

        count[0] = _c(0)
        with T.serial(0, a) as i:
            first[i] = _i64(i)
            counts[i] = _c(0)
            with T.serial(0, i) as jr:
                j = i - 1 - jr  # scan down so the smallest equal index is written last
                rows_equal(i, j)
                with T.If(flag[0] == 1):
                    with T.Then():
                        first[i] = _i64(j)
            with T.If(first[i] == _i64(i)):
                with T.Then():
                    count[0] = count[0] + 1
        with T.serial(0, a) as i:
            with T.If(first[i] == _i64(i)):
                with T.Then():
                    rank[i] = _c(0)
                    with T.serial(0, a) as j:
                        with T.If(first[j] == _i64(j)):
                            with T.Then():
                                if is_sorted:
                                    row_less(j, i)
                                    with T.If(flag[0] == 1):
                                        with T.Then():
                                            rank[i] = rank[i] + 1
                                else:
                                    with T.If(j < i):
                                        with T.Then():
                                            rank[i] = rank[i] + 1
                    with T.serial(0, s) as k:
                        vals[rank[i], k] = data[i, k]
                    first_idx[rank[i]] = _i64(i)
        with T.serial(0, a) as i:
            r = rank[first[i]]
            inv[i] = r
            counts[r] = counts[r] + 1

    return ir


# -- TfIdfVectorizer -----------------------------------------------------------------------
def _tfidf_pool(node: Node) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The pool's n-grams counted by this node: their tokens (padded) [E, maxn], lengths
    [E] and output columns [E] (n-grams outside [min_gram_length, max_gram_length] are
    dropped; ngram_indexes numbers the n-grams of every size in pool order)."""
    pool = [int(v) for v in node.attr("pool_int64s") or []]
    starts = [int(v) for v in node.attr("ngram_counts")]
    indexes = [int(v) for v in node.attr("ngram_indexes")]
    lo, hi = int(node.attr("min_gram_length")), int(node.attr("max_gram_length"))
    grams, lens, cols = [], [], []
    gram_id = 0
    for size, start in enumerate(starts, 1):
        end = starts[size] if size < len(starts) else len(pool)
        for g in range((end - start) // size):
            if lo <= size <= hi:
                grams.append(pool[start + g * size : start + (g + 1) * size])
                lens.append(size)
                cols.append(indexes[gram_id])
            gram_id += 1
    if len({tuple(g) for g in grams}) != len(grams):
        raise Decline("TfIdfVectorizer with a repeated n-gram in its pool")
    width = max(lens, default=1)
    table = np.zeros((max(len(grams), 1), width), np.int64)
    for k, g in enumerate(grams):
        table[k, : len(g)] = g
    return table, np.array(lens or [0], np.int64), np.array(cols or [0], np.int64)


@converts(
    "TfIdfVectorizer",
    accepts=lambda node: bool(node.attr("pool_int64s")) and not node.attr("pool_strings"),
)
def tfidf_vectorizer(ctx: Ctx, node: Node) -> Sequence[Any]:
    """Counts of each pool n-gram (every skip distance up to max_skip_count + 1;
    unigrams once) as one TE reduction over skip and start, mapped to the output columns
    by a constant matmul, then weighted by mode (TF, IDF, TFIDF) as the reference does."""
    from tvm import relax, te, tirx

    mode = as_str(node.attr("mode"))
    if mode not in ("TF", "IDF", "TFIDF"):
        raise Decline(f"TfIdfVectorizer mode {mode}")
    x = ctx.x(node.inputs[0])
    if not ctx.dtype(node.inputs[0]).startswith("int"):
        raise Decline("TfIdfVectorizer needs integer tokens")
    dims = ctx.shape_of(x)
    one_d = len(dims) == 1
    if one_d:
        x = ctx.emit(relax.op.reshape(x, [1, dims[0]]))
    batch, c = ctx.shape_of(x)
    if not isinstance(c, int):
        raise Decline("TfIdfVectorizer needs a static sequence length")
    table, lens, cols = _tfidf_pool(node)
    indexes = [int(v) for v in node.attr("ngram_indexes")]
    out_size = max(indexes) + 1
    skips = int(node.attr("max_skip_count", 0)) + 1
    width = table.shape[1]

    def fn(xs: Any, pool: Any, glen: Any) -> Any:
        rd = te.reduce_axis((0, skips), "d")
        rt = te.reduce_axis((0, c), "t")

        def count(b: Any, e: Any) -> Any:
            dist = _i64(rd) + 1
            ok = tirx.all(
                glen[e] > 0, tirx.any(glen[e] > 1, rd == 0), _i64(rt) + dist * (glen[e] - 1) < c
            )
            for k in range(width):
                pos = tirx.min(_i64(rt) + dist * k, _c(c - 1))
                ok = tirx.all(ok, tirx.any(glen[e] <= k, tirx.Cast(I64, xs[b, pos]) == pool[e, k]))
            return te.sum(
                tirx.Select(ok, tirx.const(1.0, "float32"), tirx.const(0.0, "float32")),
                axis=[rd, rt],
            )

        return te.compute((batch, table.shape[0]), count, name="tfidf_count")

    counts = ctx.emit_te(fn, x, ctx.weight(table), ctx.weight(lens))
    onehot = np.zeros((table.shape[0], out_size), np.float32)
    for e, col in enumerate(cols):
        if lens[e] > 0:
            onehot[e, col] = 1.0
    y = ctx.emit(relax.op.matmul(counts, ctx.weight(onehot)))
    weights = node.attr("weights")
    w = ctx.weight(np.asarray(weights, np.float32)) if weights else None
    if mode == "IDF":
        y = ctx.emit(
            relax.op.astype(relax.op.greater(y, ctx.constant(np.array(0.0), "float32")), "float32")
        )
    if mode != "TF" and w is not None:
        y = ctx.emit(relax.op.multiply(y, w))
    if one_d:
        y = ctx.emit(relax.op.reshape(y, [out_size]))
    return [y]


# -- ai.onnx.ml ----------------------------------------------------------------------------
@converts("ArrayFeatureExtractor")
def array_feature_extractor(ctx: Ctx, node: Node) -> Sequence[Any]:
    """``data[..., indices.ravel()]`` (negative indices wrap, as numpy's do); 1-D data
    gives one row, as onnxruntime and the reference do."""
    from tvm import relax, tirx

    x = ctx.x(node.inputs[0])
    dims = ctx.shape_of(x)
    if len(dims) == 1:
        x = ctx.emit(relax.op.reshape(x, [1, dims[0]]))
        dims = [1, dims[0]]
    idx = ctx.x(node.inputs[1])
    if len(ctx.shape_of(idx)) != 1:
        idx = ctx.emit(relax.op.reshape(idx, [-1]))
    (k,) = ctx.shape_of(idx)
    last = dims[-1]

    def body(ts: Any, *i: Any) -> Any:
        j = _i64(ts[1][i[-1]])
        j = tirx.Select(j < 0, j + _i64(last), j)
        return ts[0][(*i[:-1], tirx.max(tirx.min(j, _i64(last) - 1), _c(0)))]

    return [_te(ctx, [*dims[:-1], k], body, x, idx, name="array_feature_extractor")]


def _tree_attr(node: Node, name: str) -> np.ndarray | None:
    """A list or tensor attribute as a numpy array (None when absent)."""
    value = node.attr(name)
    if value is None:
        return None
    if hasattr(value, "dims") and hasattr(value, "data_type"):  # a TensorProto
        from onnx import numpy_helper

        return numpy_helper.to_array(value)
    return np.asarray(value)


def _accepts_tree(node: Node) -> bool:
    return int(node.attr("post_transform", 0)) == 0 and int(node.attr("aggregate_function", 1)) in (
        0,
        1,
        2,
        3,
    )


@converts("TreeEnsemble", accepts=_accepts_tree)
def tree_ensemble(ctx: Ctx, node: Node) -> Sequence[Any]:
    """ai.onnx.ml TreeEnsemble (no post transform): each tree becomes one nested Select
    per target over its compile-time structure; trees are combined in order (sum, average
    as a sum of weight / trees, min, max) as the reference does."""
    from tvm import te, tirx

    x = ctx.x(node.inputs[0])
    dtype = ctx.dtype(node.inputs[0])
    if not dtype.startswith("float") or len(ctx.shape_of(x)) != 2:
        raise Decline("TreeEnsemble needs a 2-D float input")
    a = {
        k: _tree_attr(node, k)
        for k in (
            "nodes_splits",
            "nodes_featureids",
            "nodes_modes",
            "nodes_truenodeids",
            "nodes_falsenodeids",
            "nodes_trueleafs",
            "nodes_falseleafs",
            "leaf_targetids",
            "leaf_weights",
            "tree_roots",
            "nodes_missing_value_tracks_true",
            "membership_values",
        )
    }
    if len(a["nodes_modes"]) > 4096:
        raise Decline("TreeEnsemble with more than 4096 nodes")
    members = iter(
        [float(v) for v in a["membership_values"]] if a["membership_values"] is not None else []
    )
    sets: dict[int, list[float]] = {}

    def read_sets(k: int, leaf: bool) -> None:
        """The reference reads each member set as it builds the trees (node, then its
        true branch, then its false branch): the same order here."""
        if leaf:
            return
        if int(a["nodes_modes"][k]) == 6 and k not in sets:
            sets[k] = []
            for v in members:
                if np.isnan(v):
                    break
                sets[k].append(v)
        read_sets(int(a["nodes_truenodeids"][k]), bool(a["nodes_trueleafs"][k]))
        read_sets(int(a["nodes_falsenodeids"][k]), bool(a["nodes_falseleafs"][k]))

    n_targets = int(node.attr("n_targets"))
    agg = int(node.attr("aggregate_function", 1))
    roots = [int(r) for r in a["tree_roots"]]
    for r in roots:
        read_sets(r, _root_is_leaf(a, r))
    batch = ctx.shape_of(x)[0]
    info = np.finfo(_numpy_float(dtype))
    none = {0: 0.0, 1: 0.0, 2: float(info.max), 3: float(info.min)}[agg]

    def fn(xs: Any) -> Any:
        def cond(b: Any, k: int) -> Any:
            v = xs[b, int(a["nodes_featureids"][k])]
            mode = int(a["nodes_modes"][k])
            s = tirx.const(float(a["nodes_splits"][k]), dtype)
            if mode == 6:
                out = tirx.const(False, "bool")
                for m in sets[k]:
                    out = tirx.any(out, v == tirx.const(m, dtype))
            else:
                out = [v <= s, v < s, v >= s, v > s, v == s, v != s][mode]
            tracks = a["nodes_missing_value_tracks_true"]
            if tracks is not None and int(tracks[k]):
                out = tirx.any(out, tirx.isnan(v))
            return out

        def walk(b: Any, t: Any, k: int, leaf: bool) -> Any:
            if leaf:
                w = tirx.const(float(a["leaf_weights"][k]), dtype)
                if agg == 0:
                    w = w / tirx.const(len(roots), dtype)
                hit = t == int(a["leaf_targetids"][k])
                return tirx.Select(hit, w, tirx.const(none, dtype))
            yes = walk(b, t, int(a["nodes_truenodeids"][k]), bool(a["nodes_trueleafs"][k]))
            no = walk(b, t, int(a["nodes_falsenodeids"][k]), bool(a["nodes_falseleafs"][k]))
            return tirx.Select(cond(b, k), yes, no)

        def body(b: Any, t: Any) -> Any:
            out = tirx.const(none, dtype)
            for r in roots:
                v = walk(b, t, r, _root_is_leaf(a, r))
                out = (
                    out + v
                    if agg in (0, 1)
                    else (tirx.min(out, v) if agg == 2 else tirx.max(out, v))
                )
            return out

        return te.compute((batch, n_targets), body, name="tree_ensemble")

    return [ctx.emit_te(fn, x)]


def _numpy_float(dtype: str) -> Any:
    return np.float16 if dtype == "float16" else np.dtype(dtype)


def _root_is_leaf(a: dict[str, Any], r: int) -> bool:
    """A degenerate tree: its root is a leaf (both branches the same leaf)."""
    return bool(
        a["nodes_trueleafs"][r]
        and a["nodes_falseleafs"][r]
        and a["nodes_truenodeids"][r] == a["nodes_falsenodeids"][r]
    )


# -- MelWeightMatrix -----------------------------------------------------------------------
@converts("MelWeightMatrix")
def mel_weight_matrix(ctx: Ctx, node: Node) -> Sequence[Any]:
    """The triangular mel filterbank [dft_length // 2 + 1, num_mel_bins] as one TE kernel
    over the five scalar operands (constants or run-time values), in float64 as the
    reference: filter i rises from edge i to edge i + 1 and falls to edge i + 2, the
    edges being the mel-spaced frequencies' FFT bins; the falling side wins where both
    write (the reference writes it last)."""
    from tvm import relax, te, tirx

    dims = _mel_shape(ctx, node)
    _check_mel_shape(ctx, node, dims)
    out_dtype = ctx.dtype(node.outputs[0])
    ops = [
        ctx.emit(relax.op.astype(relax.op.reshape(ctx.x(node.inputs[k]), [1]), "float64"))
        for k in range(5)
    ]

    def fn(n_mel: Any, n_dft: Any, rate: Any, lo_hz: Any, hi_hz: Any) -> Any:
        def mel(hz: Any) -> Any:
            return 2595.0 * tirx.log10(1.0 + hz / 700.0)

        def edge(k: Any) -> Any:
            lo, hi = mel(lo_hz[0]), mel(hi_hz[0])
            step = (hi - lo) / (n_mel[0] + 2.0)
            hz = 700.0 * (
                tirx.power(
                    tirx.const(10.0, "float64"), (tirx.Cast("float64", k) * step + lo) / 2595.0
                )
                - 1.0
            )
            return tirx.floor((tirx.floor(n_dft[0]) + 1.0) * hz / tirx.floor(rate[0]))

        def body(j: Any, i: Any) -> Any:
            left, center, right = edge(i), edge(i + 1), edge(i + 2)
            jf = tirx.Cast("float64", j)
            zero = tirx.const(0.0, "float64")
            one = tirx.const(1.0, "float64")
            rising = tirx.Select(
                center == left,
                tirx.Select(jf == center, one, zero),
                tirx.Select(
                    tirx.all(jf >= left, jf <= center),
                    (jf - left) / tirx.Select(center == left, one, center - left),
                    zero,
                ),
            )
            falling = (right - jf) / tirx.Select(right == center, one, right - center)
            v = tirx.Select(tirx.all(jf >= center, jf < right), falling, rising)
            return tirx.Cast(out_dtype, v)

        return te.compute(dims, body, name="mel_weight_matrix")

    return [ctx.emit_te(fn, *ops)]


def _mel_shape(ctx: Ctx, node: Node) -> list[int]:
    """[dft_length // 2 + 1, num_mel_bins] from constant operands, else the output's
    static declared shape."""
    n_mel, n_dft = ctx.const(node.inputs[0]), ctx.const(node.inputs[1])
    if n_mel is not None and n_dft is not None:
        return [
            int(np.asarray(n_dft).reshape(-1)[0]) // 2 + 1,
            int(np.asarray(n_mel).reshape(-1)[0]),
        ]
    declared = getattr(node.outputs[0].type, "shape", None)
    if declared is None or len(declared) != 2 or not all(isinstance(d, int) for d in declared):
        raise Decline(
            "MelWeightMatrix's num_mel_bins and dft_length must be constants unless the output shape is static"
        )
    return list(declared)


def _check_mel_shape(ctx: Ctx, node: Node, dims: list[int]) -> None:
    """Where the shape came from the declaration (a run-time num_mel_bins or dft_length),
    stop at run time unless the operands give that shape."""
    from tvm import relax

    if ctx.const(node.inputs[0]) is not None and ctx.const(node.inputs[1]) is not None:
        return
    n_mel, n_dft = _int_scalar(ctx, node.inputs[0]), _int_scalar(ctx, node.inputs[1])
    bins = ctx.emit(relax.op.add(relax.op.floor_divide(n_dft, ctx.scalar(2, I64)), ctx.scalar(1, I64)))
    ok = ctx.emit(
        relax.op.logical_and(
            relax.op.equal(bins, ctx.scalar(dims[0], I64)),
            relax.op.equal(n_mel, ctx.scalar(dims[1], I64)),
        )
    )
    ctx.check(
        ok,
        f"MelWeightMatrix: num_mel_bins ({{}}) and dft_length ({{}}) given at run time do not give the declared shape {dims}",
        [n_mel, n_dft],
    )
