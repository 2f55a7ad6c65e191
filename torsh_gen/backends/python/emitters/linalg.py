"""Emitters for MatMul, Gemm and FusedMatMul: numpy's BLAS matmul into planned buffers.

Transposed operands are views (numpy hands BLAS the transposition flag, no copy); alpha,
beta, bias, residual and activation are applied in place on the product, so a Gemm
writes its output buffer once from BLAS and then updates it.

float32 FusedMatMul epilogues (bias + residual + activation) are one numba pass over the
product (``_nn.py.j2``'s ``epilogue``) instead of one numpy pass each; a product of one
row with a constant matrix of up to 1 MiB is the ``matvec`` kernel with the epilogue in
the same call (OpenBLAS spends ~20 us on 1x784 @ 784x256; the kernel streams the matrix
once, four rows per pass over the output).
"""

from __future__ import annotations

import numpy as np

from torsh_gen.backends.python.context import NodeCtx
from torsh_gen.backends.python.emitters import emits
from torsh_gen.backends.python.emitters.conv_numba import ACT_CODES, act_args, use_conv_runtime
from torsh_gen.backends.python.emitters.elementwise import FLOATS, dtypes
from torsh_gen.backends.python.emitters.fused import emit_activation, nn_block, parallel_worthwhile
from torsh_gen.backends.python.scalar import activation_expr
from torsh_gen.ir.types import DType

_INTS = (DType.INT32, DType.INT64, DType.UINT32, DType.UINT64)


def _out_kw(ctx: NodeCtx) -> str:
    """out= only for outputs of rank >= 1 (numpy returns 0-d products as scalars)."""
    t = ctx.out_type(0)
    return ctx.out_kw() if t is not None and t.shape else ""


def _product(ctx: NodeCtx) -> None:
    """y = A @ B; an N-d A times a 2-D B is one 2-D GEMM over A's rows (numpy's stacked
    matmul with a broadcast operand runs far below BLAS speed)."""
    a, b = ctx.in_tensor(0), ctx.in_tensor(1)
    x0, x1, y = ctx.x(0), ctx.x(1), ctx.y()
    if a.rank is not None and a.rank >= 3 and b.rank == 2 and ctx.out_type(0) is not None:
        buf = ctx.buf()
        k, n = b.shape
        k = k if isinstance(k, int) else f"{x1}.shape[0]"
        n = n if isinstance(n, int) else f"{x1}.shape[1]"
        out = f", out={buf}.reshape(-1, {n})" if buf else ""
        ctx.emit(f"{y} = np.matmul({x0}.reshape(-1, {k}), {x1}{out}).reshape({x0}.shape[:-1] + ({n},))")
        return
    ctx.emit(f"{y} = np.matmul({x0}, {x1}{_out_kw(ctx)})")


@emits("MatMul")
def matmul(ctx: NodeCtx) -> bool:
    """np.matmul on two operands of one float or wide integer type (float32 products with
    a constant matrix: the packed kernel)."""
    ds = dtypes(ctx, 2)
    if not ds or ds[0] != ds[1] or ds[0] not in FLOATS + _INTS:
        return False
    t = ctx.out_type(0)
    if ds[0] == DType.FLOAT and t is not None and t.shape and _packed(ctx, ("", ""), "", [], "v"):
        return True
    if ds[0] == DType.FLOAT and _batched(ctx):
        return True
    _product(ctx)
    return True


@emits("Gemm")
def gemm(ctx: NodeCtx) -> bool:
    """alpha * op(A) @ op(B) + beta * C for float A, B, C of one type."""
    ds = dtypes(ctx)
    if not ds or any(d != ds[0] for d in ds) or ds[0] not in FLOATS:
        return False
    a = ctx.attrs
    d = ctx.dtype(ds[0])
    xa = f"{ctx.x(0)}.T" if a.transA else ctx.x(0)
    xb = f"{ctx.x(1)}.T" if a.transB else ctx.x(1)
    y = ctx.y()
    ctx.emit(f"{y} = np.matmul({xa}, {xb}{ctx.out_kw()})")
    if float(a.alpha) != 1.0:
        ctx.emit(f"np.multiply({y}, {d}({ctx.lit(float(a.alpha))}), out={y})")
    c = ctx.x(2)
    if c is not None and float(a.beta) != 0.0:
        if float(a.beta) == 1.0:
            ctx.emit(f"np.add({y}, {c}, out={y})")
        else:
            ctx.emit(f"np.add({y}, {c} * {d}({ctx.lit(float(a.beta))}), out={y})")
    return True


@emits("FusedMatMul", domain="ai.torsh")
def fused_matmul(ctx: NodeCtx) -> bool:
    """act(A @ B + bias + Z): the product, then in-place epilogue updates."""
    ds = dtypes(ctx)
    if not ds or any(d != ds[0] for d in ds) or ds[0] not in FLOATS:
        return False
    t = ctx.out_type(0)
    if t is None or not t.shape:
        return False
    y = ctx.y()
    act = ctx.attrs.activation or ""
    params = [float(p) for p in (ctx.attrs.activation_params or [])]
    expr = activation_expr(act, params, "v", "np.float32") if act else "v"
    if ds[0] == DType.FLOAT and expr is not None:
        epi = _epilogue_args(ctx)
        if epi is not None and _matvec(ctx, epi, expr):
            return True
        packed_epi = _epilogue_args(ctx, symbolic=True)
        if packed_epi is not None and _packed(ctx, packed_epi, act, params, expr):
            return True
        if epi is not None and (epi[0] or epi[1] or act):
            _product(ctx)
            n = t.shape[-1]
            kernel = nn_block(ctx, "epilogue", "epilogue", bool(epi[0]), bool(epi[1]), expr, parallel_worthwhile(t))
            args = [f"{y}.reshape(-1, {n})", epi[0], epi[1] and f"{epi[1]}.reshape(-1, {n})"]
            args = [a for a in args if a]
            ctx.emit(f"{kernel}({', '.join(args)})")
            return True
    _product(ctx)
    for i in (2, 3):
        if ctx.x(i) is not None:
            ctx.emit(f"np.add({y}, {ctx.x(i)}, out={y})")
    return emit_activation(ctx, y, act, params, ds[0])


def _epilogue_args(ctx: NodeCtx, symbolic: bool = False) -> tuple[str, str] | None:
    """Expressions of the bias (N contiguous values) and the residual (contiguous, the
    output's static shape; with ``symbolic`` the output's shape, symbols included) for the
    epilogue kernels ("" when absent), or None when their shapes do not fit them."""
    t = ctx.out_type(0)
    n = t.shape[-1]
    if not isinstance(n, int) or n == 0:
        return None
    bias = res = ""
    if ctx.x(2) is not None:
        b = ctx.in_tensor(2)
        if b is None or b.shape is None or tuple(b.shape[-1:]) != (n,):
            return None
        if any(d != 1 for d in b.shape[:-1]):
            return None
        bias = _contiguous(ctx, 2) + (".reshape(-1)" if len(b.shape) != 1 else "")
    if ctx.x(3) is not None:
        z = ctx.in_tensor(3)
        if z is None or z.shape is None or tuple(z.shape) != tuple(t.shape):
            return None
        if not symbolic and not (z.is_static and t.is_static):
            return None
        res = _contiguous(ctx, 3)
    return bias, res


def _contiguous(ctx: NodeCtx, i: int) -> str:
    """Input ``i`` as a C-contiguous array (weights already are)."""
    return ctx.x(i) if ctx.const(i) is not None else f"np.ascontiguousarray({ctx.x(i)})"


_MATVEC_BYTES = 1 << 20  # beyond this, OpenBLAS's two threads stream the matrix faster
#: From this size, a matrix whose columns split into panels of 64 is packed as panels that
#: the threads share (``matvec_panels``): each core's share stays in its L2 between calls.
_PANEL_MATVEC_BYTES = 1 << 18


def _matvec(ctx: NodeCtx, epi: tuple[str, str], expr: str) -> bool:
    """One row times a constant matrix, epilogue included, in one kernel call."""
    a, t, w = ctx.in_tensor(0), ctx.out_type(0), ctx.const(1)
    if w is None or w.ndim != 2 or w.nbytes > _MATVEC_BYTES or not t.is_static or not a.is_static:
        return False
    if not a.shape or any(d != 1 for d in a.shape[:-1]) or any(d != 1 for d in t.shape[:-1]):
        return False
    bias, res = epi
    y = ctx.y()
    ctx.emit(f"{y} = {ctx.buf() or f'np.empty({ctx.lit(tuple(t.shape))}, dtype=np.float32)'}")
    rows = len(a.shape) == 2 and len(t.shape) == 2  # (1, K) @ (K, N): the kernel takes rows
    k_n, n = w.shape
    if w.nbytes >= _PANEL_MATVEC_BYTES and n % 64 == 0 and w.dtype == np.float32:
        kernel = nn_block(ctx, "matvec_panels", "matvec", bool(bias), bool(res), expr, rows)
        panels = np.ascontiguousarray(w.reshape(k_n, n // 64, 64).transpose(1, 0, 2))
        matrix = ctx.weight(panels, "matvec_panels")
    else:
        kernel = nn_block(ctx, "matvec", "matvec", bool(bias), bool(res), expr, rows)
        matrix = ctx.x(1)
    flat = "" if rows else ".reshape(-1)"
    z = res and f"{res}{flat}"
    args = [f"{ctx.x(0)}{flat}", matrix, bias, z, f"{y}{flat}"]
    args = [x for x in args if x]
    ctx.emit(f"{kernel}({', '.join(args)})")
    ctx.silent = True
    return True


def _packed(ctx: NodeCtx, epi: tuple[str, str], act: str, params: list[float], expr: str) -> bool:
    """A float32 product with a constant 2-d matrix through the packed-GEMM kernel of
    ``_conv.py`` (both cores, bias, residual and Relu/Clip/LeakyRelu in the register tile;
    other activations, as ``expr`` of ``v``, in one numba pass after it)."""
    a, t, w = ctx.in_tensor(0), ctx.out_type(0), ctx.const(1)
    if w is None or w.ndim != 2 or a is None or a.rank is None or a.rank < 2 or t is None or not t.shape:
        return False
    if a.shape[-1] != w.shape[0] or t.shape[-1] != w.shape[1] or len(t.shape) != a.rank:
        return False
    bias, res = epi
    code, lo, hi = act_args(act, params)
    y, x0 = ctx.y(), ctx.x(0)
    ctx.emit(f"{y} = {ctx.buf() or f'np.empty({x0}.shape[:-1] + ({w.shape[1]},), dtype=np.float32)'}")
    ctx.emit(f"_cv.matmul(self, {x0}, {ctx.x(1)}, {bias or 'None'}, {res or 'None'}, {y}, "
             f"{code}, {ctx.lit(float(lo))}, {ctx.lit(float(hi))})")
    if act not in ACT_CODES:
        kernel = nn_block(ctx, "epilogue", "epilogue", False, False, expr, parallel_worthwhile(t))
        ctx.emit(f"{kernel}({y}.reshape(-1, {w.shape[1]}))")
    use_conv_runtime(ctx.module, "matmul")
    return True


def _batched(ctx: NodeCtx) -> bool:
    """A float32 product of two run-time operands with the same leading dims (attention
    scores and weighted values) through the packed kernel, in numba's thread pool."""
    a, b, t = ctx.in_tensor(0), ctx.in_tensor(1), ctx.out_type(0)
    if a is None or b is None or t is None or a.shape is None or b.shape is None or t.shape is None:
        return False
    if ctx.const(1) is not None or a.rank < 2 or b.rank != a.rank or len(t.shape) != a.rank:
        return False
    if tuple(a.shape[:-2]) != tuple(b.shape[:-2]):
        return False
    y, x0, x1 = ctx.y(), ctx.x(0), ctx.x(1)
    ctx.emit(f"{y} = {ctx.buf() or f'np.empty({x0}.shape[:-1] + {x1}.shape[-1:], dtype=np.float32)'}")
    ctx.emit(f"_cv.batched_matmul({x0}, {x1}, {y})")
    use_conv_runtime(ctx.module, "batched")
    return True
