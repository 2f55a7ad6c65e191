"""Matrix products: MatMul, Gemm, FusedMatMul, MatMulInteger and QLinearMatMul.

Each op is turned into one ``microkernel.Product`` (element strides of A, B and the
output, the batch and its broadcasting, what runs in the epilogue) and emitted by the
register-blocked micro-kernel. What is decided here, per op:

- MatMul: numpy semantics: a 1-D A is one row, a 1-D B one column (their dims dropped
  from the output), batch dims broadcast. A batch that only A has, over a 2-D B, is
  folded into M (one tall product: fewer partial tiles, one packed B).
- Gemm: ``transA``/``transB`` are strides; ``alpha`` scales the accumulator; ``beta * C``
  is an epilogue addend with C broadcast to (M, N).
- FusedMatMul (``fuse_epilogues``): bias (input 2) and residual (input 3) are addends,
  ``activation``/``activation_params`` the activation, all applied in registers.
- MatMulInteger / QLinearMatMul: uint8/int8 operands widened to int32 with their zero
  points subtracted (a constant B is packed already widened and shifted); QLinearMatMul
  requantizes in the epilogue with a float32 multiplier, as onnxruntime does.

A constant B is packed at compile time; a B computed at run time is packed into
workspace when that pays (``microkernel.pack_at_run_time``).
"""

from __future__ import annotations

import numpy as np

from torsh_gen.backends.kernel.builder import BufferRef, KernelBuilder
from torsh_gen.backends.kernel.ir import Cast, Const, Expr, call, is_float, maximum, minimum
from torsh_gen.backends.kernel.lower import (
    LowerCtx,
    LoweringDeclined,
    broadcast_strides,
    lowers,
    prod,
)
from torsh_gen.backends.kernel.lower.microkernel import (
    Addend,
    Product,
    emit_product,
    lanes_for,
    nr_vectors,
    pack_at_run_time,
    pack_weight,
)

#: Element types of the float and plain integer products (accumulation in the same type).
DTYPES = ("f32", "f64", "i32", "i64", "u32", "u64")


def _dtype(ctx: LowerCtx) -> str:
    """The element type of a float or plain integer product (all operands alike)."""
    dtype = ctx.y(0).dtype
    if dtype not in DTYPES:
        raise LoweringDeclined(f"matrix product of {dtype}")
    if ctx.in_dtypes[0] != dtype or ctx.in_dtypes[1] != dtype:
        raise LoweringDeclined("matrix product with mixed element types")
    return dtype


def _addend(
    ctx: LowerCtx, i: int, out: tuple[int, ...], dropped: tuple[int, ...], scale: float = 1.0
) -> Addend:
    """Input ``i`` broadcast to the output; ``dropped`` re-inserts the dims 1-D operands lose."""
    st = broadcast_strides(ctx.in_shape(i), out)
    for d in dropped:
        st.insert(d, 0)
    if ctx.in_dtypes[i] != ctx.y(0).dtype:
        raise LoweringDeclined("epilogue operand of another element type")
    return Addend(ctx.x(i), st[:-2], st[-2], st[-1], scale)


def _product(ctx: LowerCtx, ia: int, ib: int, acc: str) -> tuple[Product, tuple, tuple, bool]:
    """The product of inputs ``ia`` and ``ib`` with numpy matmul semantics (1-D operands,
    batch broadcasting), accumulating in ``acc``; also B's shape as 2-D or more, the output
    dims a 1-D operand removed, and whether A has every batch entry of its own."""
    ash, bsh = ctx.in_shape(ia), ctx.in_shape(ib)
    if not ash or not bsh:
        raise LoweringDeclined("matrix product of a scalar")
    a2 = (1,) + ash if len(ash) == 1 else ash
    b2 = bsh + (1,) if len(bsh) == 1 else bsh
    m, k, n = a2[-2], a2[-1], b2[-1]
    if b2[-2] != k:
        raise LoweringDeclined(f"matrix product of shapes {ash} and {bsh}")
    batch = tuple(np.broadcast_shapes(a2[:-2], b2[:-2]))
    lanes = lanes_for(ctx, acc)
    mm = Product(
        acc, m, n, k, ctx.x(ia), ctx.x(ib), ctx.y(0), nr_vectors(ctx) * lanes, lanes,
        sam=k, sbk=n, batch=list(batch),
        a_batch=[s * m * k for s in broadcast_strides(a2[:-2], batch)],
        b_batch=[s * k * n for s in broadcast_strides(b2[:-2], batch)],
    )  # fmt: skip
    rank = len(batch) + 2
    gone = ((rank - 2, len(ash) == 1), (rank - 1, len(bsh) == 1))
    return mm, b2, tuple(d for d, g in gone if g), a2[:-2] == batch


def _pack_const(ctx: LowerCtx, mm: Product, w: np.ndarray, b2: tuple) -> None:
    """Use the constant ``w`` (B's values in the accumulator type) packed in panels."""
    k, n = mm.k, mm.n
    mm.b, mm.packed, mm.sbk = pack_weight(ctx, w.reshape(b2), mm.dtype, mm.nr), True, mm.nr
    mm.b_batch = [s // (k * n) * (-(-n // mm.nr) * k * mm.nr) for s in mm.b_batch]
    mm.b_zp = None


def _matmul(ctx: LowerCtx) -> Product:
    """MatMul / FusedMatMul (bias, residual and activation in the epilogue)."""
    mm, b2, dropped, a_full = _product(ctx, 0, 1, _dtype(ctx))
    w = ctx.const(1)
    if w is not None and mm.n > 1:
        _pack_const(ctx, mm, np.asarray(w), b2)
    if ctx.node.op_type == "FusedMatMul":
        out = ctx.out_shape(0)
        mm.addends = [_addend(ctx, i, out, dropped) for i in (2, 3) if ctx.has(i)]
        mm.act = str(ctx.attrs.get("activation", "") or "")
        mm.params = [float(p) for p in (ctx.attrs.get("activation_params", None) or [])]
    _fold_batch(mm, a_full)
    return mm


def _fold_batch(mm: Product, a_full: bool) -> None:
    """Fold the batch into M when B is shared by all entries and A's matrices are stacked."""
    if not mm.batch or any(mm.b_batch) or not a_full:
        return
    shape = mm.batch + [mm.m]
    for ad in mm.addends:
        st = ad.batch + [ad.sm]
        if any(st[d] != st[d + 1] * shape[d + 1] for d in range(len(st) - 1)):
            return
    mm.m = prod(shape)
    mm.batch, mm.a_batch, mm.b_batch = [], [], []
    for ad in mm.addends:
        ad.batch = []


def _gemm(ctx: LowerCtx) -> Product:
    """Gemm: ``alpha * op(A) @ op(B) + beta * C`` with C broadcast to (M, N)."""
    dtype = _dtype(ctx)
    at = ctx.attrs
    ash, bsh = ctx.in_shape(0), ctx.in_shape(1)
    if len(ash) != 2 or len(bsh) != 2:
        raise LoweringDeclined("Gemm needs 2-D A and B")
    ta, tb = bool(at.get("transA", 0)), bool(at.get("transB", 0))
    alpha, beta = float(at.get("alpha", 1.0)), float(at.get("beta", 1.0))
    if not is_float(dtype) and (alpha != 1.0 or beta not in (0.0, 1.0)):
        raise LoweringDeclined("integer Gemm with alpha or beta other than 1")
    k, m = ash if ta else ash[::-1]
    n = bsh[0] if tb else bsh[1]
    lanes = lanes_for(ctx, dtype)
    mm = Product(
        dtype, m, n, k, ctx.x(0), ctx.x(1), ctx.y(0), nr_vectors(ctx) * lanes, lanes,
        sam=1 if ta else k, sak=m if ta else 1, sbk=1 if tb else n, sbn=k if tb else 1,
        alpha=alpha,
    )  # fmt: skip
    w = ctx.const(1)
    if w is not None:
        w = np.asarray(w).T if tb else np.asarray(w)
        mm.b, mm.packed, mm.sbk, mm.sbn = pack_weight(ctx, w, dtype, mm.nr), True, mm.nr, 1
    if ctx.has(2) and beta != 0.0:
        mm.addends.append(_addend(ctx, 2, (m, n), (), beta))
    return mm


# --------------------------------------------------------------------------- integer products
def _zero_point(
    ctx: LowerCtx, i: int, per: int
) -> tuple[np.ndarray | None, Expr | None, BufferRef | None]:
    """Zero point input ``i`` as (constant int32 array, scalar expression, per-element
    buffer); one element, or ``per`` elements (B's columns) when ``per`` > 1."""
    if not ctx.has(i):
        return np.zeros((), np.int32), None, None
    size = prod(ctx.in_shape(i))
    if size not in (1, per):
        raise LoweringDeclined(f"zero point of {size} elements (per tensor or per column only)")
    c = ctx.const(i)
    if c is not None:
        c = np.asarray(c).astype(np.int32).reshape(-1 if size > 1 else ())
        return c, (Const(int(c), "i32") if size == 1 else None), None
    if size == 1:
        return None, ctx.kb.let(Cast(ctx.x(i)[0], "i32"), "zp"), None
    return None, None, ctx.x(i)


def _integer(ctx: LowerCtx, ia: int, ib: int, iza: int, izb: int) -> Product:
    """(A - a_zp) @ (B - b_zp) in int32 for uint8/int8 A and B."""
    for i in (ia, ib):
        if ctx.in_dtypes[i] not in ("u8", "i8"):
            raise LoweringDeclined(f"integer product of {ctx.in_dtypes[i]}")
    mm, b2, _, a_full = _product(ctx, ia, ib, "i32")
    _, za, za_buf = _zero_point(ctx, iza, 1)
    zb_const, zb, zb_buf = _zero_point(ctx, izb, mm.n)
    mm.a_zp = za
    if zb is not None:
        mm.b_zp = lambda n: zb
    elif zb_buf is not None:
        mm.b_zp = lambda n: Cast(zb_buf[n], "i32")
    elif ctx.has(izb):
        vec = ctx.weight(zb_const, "i32")
        mm.b_zp = lambda n: vec[n]
    w = ctx.const(ib)
    if w is not None and zb_const is not None:
        _pack_const(ctx, mm, np.asarray(w).astype(np.int32).reshape(b2) - zb_const, b2)
    _fold_batch(mm, a_full)
    return mm


def _requantize(ctx: LowerCtx, mm: Product) -> None:
    """QLinearMatMul's epilogue: ``saturate(rint(float32(acc) * m) + y_zp)`` with the
    float32 multiplier ``m = a_scale * b_scale / y_scale`` (per column with b's scale)."""
    if not ctx.has(7):
        raise LoweringDeclined("QLinearMatMul without y_zero_point")
    sizes = [prod(ctx.in_shape(i)) for i in (1, 4, 6, 7)]
    if sizes[0] != 1 or sizes[2] != 1 or sizes[3] != 1 or sizes[1] not in (1, mm.n):
        raise LoweringDeclined("QLinearMatMul scales must be per tensor (B's: or per column)")
    consts = [ctx.const(i) for i in (1, 4, 6)]
    if any(c is None for c in consts) or ctx.const(7) is None:
        _requantize_at_run_time(ctx, mm)
        return
    sa, sb, sy = (np.asarray(c, np.float32).reshape(-1) for c in consts)
    mult = (sa * sb / sy).astype(np.float32)
    yzp = float(np.asarray(ctx.const(7)).reshape(-1)[0])
    ydt = ctx.y(0).dtype
    lo, hi = (0.0, 255.0) if ydt == "u8" else (-128.0, 127.0)
    scale = ctx.weight(mult, "f32") if mult.size > 1 else None

    def finish(kb: KernelBuilder, acc: Expr, m: Expr, n: Expr) -> Expr:
        s = scale[n] if scale is not None else Const(float(mult[0]), "f32")
        q = call("roundeven", Cast(acc, "f32") * s) + Const(yzp, "f32")
        return Cast(minimum(maximum(q, Const(lo, "f32")), Const(hi, "f32")), ydt)

    mm.finish = finish


def _scalar_f32(ctx: LowerCtx, i: int) -> Expr:
    """Element 0 of input ``i`` (a constant when it is one) as float32."""
    c = ctx.const(i)
    if c is not None:
        return Const(float(np.asarray(c, np.float32).reshape(-1)[0]), "f32")
    v = ctx.x(i)[0]
    return ctx.kb.let(v if v.dtype == "f32" else Cast(v, "f32"), "sc")


def _requantize_at_run_time(ctx: LowerCtx, mm: Product) -> None:
    """The same epilogue with scales or y's zero point read at run time: the multiplier
    is computed once before the product (per column into scratch for B's per-column
    scales), in the order ``(a_scale * b_scale) / y_scale`` of the constant path."""
    kb = ctx.kb
    sa, sy, yzp = _scalar_f32(ctx, 1), _scalar_f32(ctx, 6), _scalar_f32(ctx, 7)
    ydt = ctx.y(0).dtype
    lo, hi = (0.0, 255.0) if ydt == "u8" else (-128.0, 127.0)
    per_column = prod(ctx.in_shape(4)) > 1
    scale: BufferRef | None = None
    mult: Expr | None = None
    if per_column:
        sb = ctx.x(4)
        scale = ctx.scratch("f32", mm.n)
        with kb.loop(mm.n, hint="j") as j:
            v = sb[j] if sb.dtype == "f32" else Cast(sb[j], "f32")
            scale[j] = (sa * v) / sy
    else:
        mult = kb.let((sa * _scalar_f32(ctx, 4)) / sy, "mult")

    def finish(kb: KernelBuilder, acc: Expr, m: Expr, n: Expr) -> Expr:
        s = scale[n] if scale is not None else mult
        q = call("roundeven", Cast(acc, "f32") * s) + yzp
        return Cast(minimum(maximum(q, Const(lo, "f32")), Const(hi, "f32")), ydt)

    mm.finish = finish


@lowers("MatMul", "Gemm", "FusedMatMul", "MatMulInteger", "QLinearMatMul")
def lower_matmul(ctx: LowerCtx) -> None:
    """Every matrix product through the tiled micro-kernel."""
    op = ctx.node.op_type
    ib = 3 if op == "QLinearMatMul" else 1
    if op == "Gemm":
        mm = _gemm(ctx)
    elif op == "MatMulInteger":
        mm = _integer(ctx, 0, 1, 2, 3)
    elif op == "QLinearMatMul":
        mm = _integer(ctx, 0, 3, 2, 5)
        _requantize(ctx, mm)
    else:
        mm = _matmul(ctx)
    pack_at_run_time(ctx, mm, prod(ctx.in_shape(ib)[:-2]))
    emit_product(ctx, mm)
