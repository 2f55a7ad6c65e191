"""QuantizeLinear and DequantizeLinear: one elementwise pass, per-tensor, per-axis or
blocked scales and zero points, integer targets only.

Quantize computes ``round_half_even(x / scale) + zero_point`` clamped to the target's
range in the scale's type (or ``precision``; the reference and onnxruntime agree on that
order; the add and clamp in float64 for 32-bit targets, whose range float32 does not hold
exactly); dequantize
computes ``(x - zero_point) * scale`` with the difference taken exactly (int64 or float64
for 32-bit inputs) before the multiply. Blocked scales (``block_size``: one scale per
``block_size`` consecutive elements along ``axis``, the last block possibly shorter) run
block by block, each block's scale read once. Float8 and 4-bit types are declined.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torsh_gen.backends.kernel.ir import Cast, Const, Expr, call, maximum, minimum
from torsh_gen.backends.kernel.lower import (
    LowerCtx,
    LoweringDeclined,
    lowers,
    norm_axis,
    prod,
    row_major_strides,
)
from torsh_gen.backends.kernel.lower.elementwise import elementwise_nest
from torsh_gen.backends.kernel.storage import FLOAT8, SMALL_INTS, saturated

_LIMITS = {"i8": (-128, 127), "u8": (0, 255), "i16": (-32768, 32767), "u16": (0, 65535),
           "i32": (-(2**31), 2**31 - 1), "u32": (0, 2**32 - 1)}


@dataclass(frozen=True)
class _Blocks:
    """x viewed as ``(outer, length, inner)`` around the blocked axis; ``blocks`` scales of
    ``size`` elements each along it."""

    outer: int
    length: int
    inner: int
    size: int
    blocks: int


def _blocks(ctx: LowerCtx, shape: tuple[int, ...]) -> _Blocks | None:
    """The block layout when ``block_size`` is set (None otherwise); the scale and zero
    point must have x's shape with ``ceil(length / block_size)`` along the axis."""
    size = int(ctx.attrs.get("block_size", 0) or 0)
    if size <= 0:
        return None
    if not shape:
        raise LoweringDeclined("blocked quantization of a scalar")
    axis = norm_axis(int(ctx.attrs.get("axis", 1)), len(shape))
    length = shape[axis]
    blocks = -(-length // size)
    want = shape[:axis] + (blocks,) + shape[axis + 1 :]
    for i in (1, 2):
        if ctx.has(i) and ctx.in_shape(i) != want:
            raise LoweringDeclined(
                f"blocked scale or zero point of shape {ctx.in_shape(i)}, not {want}"
            )
    return _Blocks(prod(shape[:axis]), length, prod(shape[axis + 1 :]), size, blocks)


def _param_strides(ctx: LowerCtx, i: int, shape: tuple[int, ...]) -> list[int]:
    """Strides of a scale or zero point: scalar (all 0) or 1-D along ``axis``."""
    pshape = ctx.in_shape(i)
    if len(pshape) == 0 or (len(pshape) == 1 and pshape[0] == 1):
        return [0] * len(shape)
    if len(pshape) != 1:
        raise LoweringDeclined("scale of rank > 1 without block_size")
    axis = int(ctx.attrs.get("axis", 1))
    axis = axis + len(shape) if axis < 0 else axis
    if not 0 <= axis < len(shape) or shape[axis] != pshape[0]:
        raise LoweringDeclined("per-axis scale does not match the axis")
    st = [0] * len(shape)
    st[axis] = 1
    return st


def _blocked_nest(ctx: LowerCtx, b: _Blocks, body: Callable[[list[Expr]], None]) -> None:
    """Loops over the blocks (across threads), then along the block and the inner dims
    (the contiguous one a vector loop); ``body`` gets x's flat index (also y's) and the
    block's parameter index, as ``[y, x, scale, zero point]``."""
    kb = ctx.kb
    if b.outer * b.length * b.inner == 0:
        return
    kind = ctx.outer_kind(b.outer * b.length * b.inner)
    with kb.loop(b.outer * b.blocks, kind=kind, hint="ob") as ob:
        o = kb.let(ob // b.blocks, "o") if b.blocks > 1 else ob
        lo = kb.let((ob % b.blocks) * b.size, "lo") if b.blocks > 1 else Const(0, "i64")
        end = Const(b.length, "i64")
        hi = kb.let(minimum(lo + b.size, b.length), "hi") if b.blocks > 1 else end
        if b.inner == 1:
            row = kb.let(o * b.length, "row")
            width = ctx.vector_width(min(b.size, b.length))
            with kb.loop(hi, start=lo, kind="vector", width=width, hint="d") as d:
                body([row + d, row + d, ob, ob])
            return
        with kb.loop(hi, start=lo, hint="d") as d:
            base = kb.let((o * b.length + d) * b.inner, "base")
            pbase = kb.let(ob * b.inner, "pbase")
            with kb.loop(b.inner, kind="vector", width=ctx.vector_width(b.inner), hint="i") as i:
                body([base + i, base + i, pbase + i, pbase + i])


def _for_each(ctx: LowerCtx, body: Callable[[list[Expr]], None]) -> bool:
    """Run ``body`` over every element with the indices ``[y, x, scale, zero point]``;
    returns whether a zero point is given."""
    shape = ctx.in_shape(0)
    has_zp = ctx.has(2)
    blocks = _blocks(ctx, shape)
    if blocks is not None:
        _blocked_nest(ctx, blocks, body)
        return has_zp
    strides = [row_major_strides(shape), row_major_strides(shape), _param_strides(ctx, 1, shape)]
    if has_zp:
        strides.append(_param_strides(ctx, 2, shape))
    elementwise_nest(ctx, shape, strides, body)
    return has_zp


def _precision(ctx: LowerCtx) -> str:
    """The type ``x / scale`` is computed in: the ``precision`` attribute (opset 25),
    else the scale's type."""
    code = int(ctx.attrs.get("precision", 0) or 0)
    prec = {0: ctx.in_dtypes[1], 1: "f32", 11: "f64"}.get(code)
    if prec not in ("f32", "f64"):
        raise LoweringDeclined(f"QuantizeLinear in precision {prec or code}")
    return prec


@lowers("QuantizeLinear")
def lower_quantize(ctx: LowerCtx) -> None:
    """x (float, or int32 from opset 21) → integer with saturation, or → float8."""
    if ctx.y(0).storage in FLOAT8:
        _quantize_float8(ctx)
        return
    out, src = ctx.y(0).dtype, ctx.in_dtypes[0]
    if out not in _LIMITS or src not in ("f32", "f64", "i32"):
        raise LoweringDeclined(f"QuantizeLinear from {src} to {out}")
    lo, hi = _LIMITS[out]
    if ctx.y(0).storage in SMALL_INTS:  # 4- and 2-bit integers held in int32 values
        width, signed = SMALL_INTS[ctx.y(0).storage]
        lo, hi = (-(1 << (width - 1)), (1 << (width - 1)) - 1) if signed else (0, (1 << width) - 1)
    prec = _precision(ctx)
    wide = "f64" if out in ("i32", "u32") or prec == "f64" else "f32"
    kb = ctx.kb
    has_zp = ctx.has(2)

    def body(ix: list[Expr]) -> None:
        x = Cast(ctx.x(0)[ix[1]], prec) if src != prec else ctx.x(0)[ix[1]]
        s = ctx.x(1)[ix[2]]
        s = s if s.dtype == prec else Cast(s, prec)
        q = kb.let(call("roundeven", x / s), "q")
        if wide != "f32":
            q = kb.let(Cast(q, wide), "qw")
        if has_zp:
            q = kb.let(q + Cast(ctx.x(2)[ix[3]], wide), "qz")
        clamped = minimum(maximum(q, Const(float(lo), wide)), Const(float(hi), wide))
        ctx.y(0)[ix[0]] = Cast(clamped, out)

    _for_each(ctx, body)


def _quantize_float8(ctx: LowerCtx) -> None:
    """x / scale + zero_point stored as float8: the store rounds to nearest even; with
    ``saturate`` (the default) values beyond the type's range clamp to ±max, NaN stays."""
    if ctx.in_dtypes[0] not in ("f32", "f64"):
        raise LoweringDeclined(f"QuantizeLinear from {ctx.in_dtypes[0]} to float8")
    saturate = int(ctx.attrs.get("saturate", 1))
    kb = ctx.kb
    has_zp = ctx.has(2)

    def body(ix: list[Expr]) -> None:
        x = ctx.x(0)[ix[1]]
        x = x if x.dtype == "f32" else Cast(x, "f32")
        s = ctx.x(1)[ix[2]]
        q = kb.let(x / (s if s.dtype == "f32" else Cast(s, "f32")), "q")
        if has_zp:
            q = kb.let(q + ctx.x(2)[ix[3]], "qz")
        if saturate:
            q = saturated(q, ctx.y(0).storage)
        ctx.y(0)[ix[0]] = q

    _for_each(ctx, body)


@lowers("DequantizeLinear")
def lower_dequantize(ctx: LowerCtx) -> None:
    """Integer (or float8) → float: (x - zero_point) * scale."""
    if ctx.x(0).storage in FLOAT8:  # loads give float32 values
        _dequantize_float(ctx)
        return
    src, out = ctx.in_dtypes[0], ctx.y(0).dtype
    if src not in _LIMITS or out not in ("f32", "f64"):
        raise LoweringDeclined(f"DequantizeLinear from {src} to {out}")
    wide = "f64" if src in ("i32", "u32") else "f32"
    kb = ctx.kb
    has_zp = ctx.has(2)

    def body(ix: list[Expr]) -> None:
        d = kb.let(Cast(Cast(ctx.x(0)[ix[1]], "i64"), wide), "d")
        if has_zp:
            d = kb.let(Cast(Cast(ctx.x(0)[ix[1]], "i64") - Cast(ctx.x(2)[ix[3]], "i64"), wide), "dz")
        s = ctx.x(1)[ix[2]]
        if out == "f64":
            ctx.y(0)[ix[0]] = Cast(d, "f64") * (s if s.dtype == "f64" else Cast(s, "f64"))
        else:
            ctx.y(0)[ix[0]] = Cast(d, "f32") * (s if s.dtype == "f32" else Cast(s, "f32"))

    _for_each(ctx, body)


def _dequantize_float(ctx: LowerCtx) -> None:
    """float8 → float: (x - zero_point) * scale in float32."""
    if ctx.y(0).dtype != "f32":
        raise LoweringDeclined(f"DequantizeLinear from float8 to {ctx.y(0).dtype}")
    kb = ctx.kb
    has_zp = ctx.has(2)

    def body(ix: list[Expr]) -> None:
        d = kb.let(ctx.x(0)[ix[1]], "d")
        if has_zp:
            d = kb.let(d - ctx.x(2)[ix[3]], "dz")
        s = ctx.x(1)[ix[2]]
        ctx.y(0)[ix[0]] = d * (s if s.dtype == "f32" else Cast(s, "f32"))

    _for_each(ctx, body)
