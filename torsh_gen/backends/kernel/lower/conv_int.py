"""Integer convolutions: ConvInteger (int32 sums of zero-point-shifted int8/uint8 products)
and QLinearConv (the same sums requantized to int8/uint8).

Direct loop nests over the output, one int32 accumulator per element, the innermost loop
over output columns vectorized. Quantized CNNs that the passes fuse keep their fast float
paths; these lowerings cover the ops as they stand (1-d to 3-d, groups, strides,
dilations, pads), with padding taps contributing nothing (as if they held the input's
zero point, which is what the spec's padding means).
"""

from __future__ import annotations

from torsh_gen.backends.kernel.ir import (
    Cast,
    Const,
    Expr,
    Select,
    call,
    idx,
    logical_and,
    maximum,
    minimum,
)
from torsh_gen.backends.kernel.lower import LowerCtx, LoweringDeclined, lowers, prod
from torsh_gen.backends.kernel.lower.conv_operands import Geometry, geometry

_LIMITS = {"i8": (-128, 127), "u8": (0, 255)}


def _param(ctx: LowerCtx, i: int, oc: Expr, what: str) -> Expr | None:
    """Input ``i`` (a scalar, or one value per output channel) at channel ``oc``, or None."""
    if not ctx.has(i):
        return None
    n = prod(ctx.in_shape(i))
    if n == 1:
        return ctx.x(i)[idx(0)]
    if ctx.in_shape(i) != (n,):
        raise LoweringDeclined(f"{what} must be a scalar or 1-d per output channel")
    return ctx.x(i)[oc]


def _sums(ctx: LowerCtx, geo: Geometry, x: int, w: int, xzp: int, wzp: int, emit) -> None:
    """Loops over the output; ``emit(oc, flat_out_index, acc_i32)`` writes each element."""
    kb = ctx.kb
    X, W = ctx.x(x), ctx.x(w)
    if ctx.in_dtypes[x] not in ("i8", "u8") or ctx.in_dtypes[w] not in ("i8", "u8"):
        raise LoweringDeclined(f"integer convolution of {ctx.in_dtypes[x]} by {ctx.in_dtypes[w]}")
    if ctx.has(xzp) and prod(ctx.in_shape(xzp)) != 1:
        raise LoweringDeclined("the input zero point must be a scalar")
    D, H, Wd = geo.size
    OD, OH, OW = geo.out
    KD, KH, KW = geo.kernel
    SD, SH, SW = geo.strides
    DD, DH, DW = geo.dilations
    BD, BH, BW = geo.begin
    cin_g, cout_g = geo.cin_g, geo.cout_g
    plane_in = D * H * Wd
    plane_out = OD * OH * OW
    xz = ctx.x(xzp)[idx(0)] if ctx.has(xzp) else None
    work = geo.batch * geo.cout * plane_out * cin_g * geo.taps
    with kb.loop(geo.batch * geo.cout, kind=ctx.outer_kind(work), hint="noc") as noc:
        oc = kb.let(noc % geo.cout, "oc")
        n = kb.let(noc // geo.cout, "n")
        g = kb.let(oc // cout_g, "g")
        wz = _param(ctx, wzp, oc, "the weight zero point")
        x_base = kb.let((n * geo.cin + g * cin_g) * plane_in, "xb")
        w_base = kb.let(oc * (cin_g * geo.taps), "wb")
        y_base = kb.let(noc * plane_out, "yb")
        with kb.loop(OD, hint="od") as od, kb.loop(OH, hint="oh") as oh:
            with kb.loop(OW, kind="vector", width=ctx.vector_width(OW), hint="ow") as ow:
                acc = kb.local("i32", 0)
                with kb.loop(cin_g, hint="ic") as ic:
                    for kd in range(KD):
                        for kh in range(KH):
                            for kw in range(KW):
                                zd = od * SD + (kd * DD - BD)
                                zh = oh * SH + (kh * DH - BH)
                                zw = ow * SW + (kw * DW - BW)
                                conds = [zd >= 0, zd < D, zh >= 0, zh < H, zw >= 0, zw < Wd]
                                inside = conds[0]
                                for c in conds[1:]:
                                    inside = logical_and(inside, c)
                                inside = kb.let(inside, "in")
                                at = x_base + ic * plane_in + (zd * H + zh) * Wd + zw
                                xv = Cast(X[Select(inside, at, idx(0))], "i32")
                                if xz is not None:
                                    xv = xv - Cast(xz, "i32")
                                wv = Cast(W[w_base + ic * geo.taps + (kd * KH + kh) * KW + kw], "i32")
                                if wz is not None:
                                    wv = wv - Cast(wz, "i32")
                                kb.assign(acc, acc + Select(inside, xv * wv, Const(0, "i32")))
                emit(oc, y_base + (od * OH + oh) * OW + ow, acc)


@lowers("ConvInteger")
def lower_conv_integer(ctx: LowerCtx) -> None:
    """int32 sums of (x - x_zero_point) * (w - w_zero_point)."""
    geo = geometry(ctx, 1)

    def emit(oc: Expr, at: Expr, acc: Expr) -> None:
        ctx.y(0)[at] = acc

    _sums(ctx, geo, 0, 1, 2, 3, emit)


@lowers("QLinearConv")
def lower_qlinear_conv(ctx: LowerCtx) -> None:
    """The integer sums plus the int32 bias, scaled by x_scale * w_scale / y_scale, rounded
    to nearest even, shifted by y_zero_point and saturated to the output type."""
    _requantized(ctx, bias=8, ys=6, yz=7, relu=False)


@lowers("QConv")
def lower_qconv(ctx: LowerCtx) -> None:
    """The fused form the quantization passes make of QLinearConv and QDQ convolutions
    (``ops/fused_quant.py``): inputs (x, x_scale, x_zp, w, w_scale, w_zp, bias, y_scale,
    y_zp), an optional Relu, and a float32 output when there is no y_scale."""
    relu = str(ctx.attrs.get("activation", "") or "")
    if relu not in ("", "Relu"):
        raise LoweringDeclined(f"QConv activation {relu}")
    if ctx.has(7):
        _requantized(ctx, bias=6, ys=7, yz=8, relu=bool(relu))
    else:
        _dequantized(ctx, relu=bool(relu))


def _requantized(ctx: LowerCtx, bias: int, ys: int, yz: int, relu: bool) -> None:
    out = ctx.y(0).dtype
    if out not in _LIMITS:
        raise LoweringDeclined(f"quantized convolution to {out}")
    lo, hi = _LIMITS[out]
    geo = geometry(ctx, 3)
    kb = ctx.kb

    def emit(oc: Expr, at: Expr, acc: Expr) -> None:
        total = acc
        b = _param(ctx, bias, oc, "the bias")
        if b is not None:
            total = total + Cast(b, "i32")
        xs = Cast(ctx.x(1)[idx(0)], "f32")
        ws = Cast(_param(ctx, 4, oc, "the weight scale"), "f32")
        q = call("roundeven", Cast(total, "f32") * (xs * ws / Cast(ctx.x(ys)[idx(0)], "f32")))
        zero = Cast(ctx.x(yz)[idx(0)], "f32") if ctx.has(yz) else Const(0.0, "f32")
        q = kb.let(q + zero, "q")
        floor = maximum(zero, float(lo)) if relu else Const(float(lo), "f32")
        ctx.y(0)[at] = Cast(minimum(maximum(q, floor), float(hi)), out)

    _sums(ctx, geo, 0, 3, 2, 5, emit)


def _dequantized(ctx: LowerCtx, relu: bool) -> None:
    """float32(acc) * (x_scale * w_scale) + bias (float), then Relu."""
    if ctx.y(0).dtype != "f32":
        raise LoweringDeclined(f"dequantizing convolution to {ctx.y(0).dtype}")
    geo = geometry(ctx, 3)

    def emit(oc: Expr, at: Expr, acc: Expr) -> None:
        xs = Cast(ctx.x(1)[idx(0)], "f32")
        ws = Cast(_param(ctx, 4, oc, "the weight scale"), "f32")
        v = Cast(acc, "f32") * (xs * ws)
        b = _param(ctx, 6, oc, "the bias")
        if b is not None:
            v = v + Cast(b, "f32")
        ctx.y(0)[at] = maximum(v, 0.0) if relu else v

    _sums(ctx, geo, 0, 3, 2, 5, emit)
