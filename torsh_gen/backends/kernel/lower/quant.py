"""QuantizeLinear and DequantizeLinear: one elementwise pass, per-tensor or per-axis
scales and zero points (a 1-D operand read along ``axis``), integer targets only.

Quantize computes ``round_half_even(x / scale) + zero_point`` clamped to the target's
range in float32 (the reference and onnxruntime agree on that order); dequantize
computes ``(x - zero_point) * scale`` with the difference taken exactly (int64 or
float64 for 32-bit inputs) before the multiply. Blocked scales (``block_size``), float8
and 4-bit targets are declined.
"""

from __future__ import annotations

from torsh_gen.backends.kernel.ir import Cast, Const, Expr, call, maximum, minimum
from torsh_gen.backends.kernel.lower import LowerCtx, LoweringDeclined, lowers, row_major_strides
from torsh_gen.backends.kernel.lower.elementwise import elementwise_nest

_LIMITS = {"i8": (-128, 127), "u8": (0, 255), "i16": (-32768, 32767), "u16": (0, 65535),
           "i32": (-(2**31), 2**31 - 1), "u32": (0, 2**32 - 1)}


def _param_strides(ctx: LowerCtx, i: int, shape: tuple[int, ...]) -> list[int]:
    """Strides of a scale or zero point: scalar (all 0) or 1-D along ``axis``."""
    pshape = ctx.in_shape(i)
    if ctx.attrs.get("block_size", 0):
        raise LoweringDeclined("blocked quantization (block_size)")
    if len(pshape) == 0 or (len(pshape) == 1 and pshape[0] == 1):
        return [0] * len(shape)
    if len(pshape) != 1:
        raise LoweringDeclined("scale of rank > 1")
    axis = int(ctx.attrs.get("axis", 1))
    axis = axis + len(shape) if axis < 0 else axis
    if not 0 <= axis < len(shape) or shape[axis] != pshape[0]:
        raise LoweringDeclined("per-axis scale does not match the axis")
    st = [0] * len(shape)
    st[axis] = 1
    return st


def _operands(ctx: LowerCtx) -> tuple[tuple[int, ...], list[list[int]], bool]:
    shape = ctx.in_shape(0)
    strides = [row_major_strides(shape), row_major_strides(shape), _param_strides(ctx, 1, shape)]
    has_zp = ctx.has(2)
    if has_zp:
        strides.append(_param_strides(ctx, 2, shape))
    return shape, strides, has_zp


@lowers("QuantizeLinear")
def lower_quantize(ctx: LowerCtx) -> None:
    """x (float) → integer with saturation."""
    out = ctx.y(0).dtype
    if out not in _LIMITS or ctx.in_dtypes[0] not in ("f32", "f64"):
        raise LoweringDeclined(f"QuantizeLinear to {out}")
    lo, hi = _LIMITS[out]
    shape, strides, has_zp = _operands(ctx)
    kb = ctx.kb

    def body(ix: list[Expr]) -> None:
        x = Cast(ctx.x(0)[ix[1]], "f32") if ctx.in_dtypes[0] != "f32" else ctx.x(0)[ix[1]]
        s = ctx.x(1)[ix[2]]
        s = s if s.dtype == "f32" else Cast(s, "f32")
        q = kb.let(call("roundeven", x / s), "q")
        if has_zp:
            q = kb.let(q + Cast(ctx.x(2)[ix[3]], "f32"), "qz")
        clamped = minimum(maximum(q, Const(float(lo), "f32")), Const(float(hi), "f32"))
        ctx.y(0)[ix[0]] = Cast(clamped, out)

    elementwise_nest(ctx, shape, strides, body)


@lowers("DequantizeLinear")
def lower_dequantize(ctx: LowerCtx) -> None:
    """Integer → float: (x - zero_point) * scale."""
    src, out = ctx.in_dtypes[0], ctx.y(0).dtype
    if src not in _LIMITS or out not in ("f32", "f64"):
        raise LoweringDeclined(f"DequantizeLinear from {src} to {out}")
    wide = "f64" if src in ("i32", "u32") else "f32"
    shape, strides, has_zp = _operands(ctx)
    kb = ctx.kb

    def body(ix: list[Expr]) -> None:
        d = kb.let(Cast(Cast(ctx.x(0)[ix[1]], "i64"), wide), "d")
        if has_zp:
            d = kb.let(Cast(Cast(ctx.x(0)[ix[1]], "i64") - Cast(ctx.x(2)[ix[3]], "i64"), wide), "dz")
        s = ctx.x(1)[ix[2]]
        if out == "f64":
            ctx.y(0)[ix[0]] = Cast(d, "f64") * (s if s.dtype == "f64" else Cast(s, "f64"))
        else:
            ctx.y(0)[ix[0]] = Cast(d, "f32") * (s if s.dtype == "f32" else Cast(s, "f32"))

    elementwise_nest(ctx, shape, strides, body)
