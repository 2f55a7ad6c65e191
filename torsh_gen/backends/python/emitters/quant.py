"""Emitters for integer products: ai.torsh QGemm/QConv (from ``fuse_quant``) and the
standard MatMulInteger, through the ``qgemm`` part of the package's ``_conv.py``.

The kernels there multiply uint8 activations by int8 weights into int32 sums (AVX-512
VNNI ``vpdpbusd`` where the CPU has it, a plain int32 loop otherwise) and requantize or
dequantize in the epilogue; weights are packed once per Model. Every emitter declines
(the node then runs its reference kernel) when the weight is not a compile-time constant
or the types are not uint8/int8; QConv also for other than 2-d, group 1 convolutions with
static spatial sizes.
"""

from __future__ import annotations

from torsh_gen.backends.python.context import NodeCtx
from torsh_gen.backends.python.emitters import emits
from torsh_gen.backends.python.emitters.conv_numba import use_conv_runtime
from torsh_gen.ir.types import DType
from torsh_gen.ops.nn import conv_pads, spatial_params

_QTYPES = (DType.UINT8, DType.INT8)


def _args(ctx: NodeCtx) -> list[str] | None:
    """The runtime arguments x, xs, xz, w, ws, wz, bias, ys, yz, relu; None to decline."""
    x, w = ctx.in_tensor(0), ctx.const(3)
    if (
        x is None
        or x.dtype not in _QTYPES
        or w is None
        or w.dtype.kind not in "iu"
        or w.itemsize != 1
    ):
        return None
    if ctx.out_type(0) is None or ctx.attrs.activation not in ("", "Relu"):
        return None
    names = [ctx.x(i) or "None" for i in range(9)]
    return names + [str(ctx.attrs.activation == "Relu")]


@emits("QGemm", domain="ai.torsh")
def qgemm(ctx: NodeCtx) -> bool:
    """X (..., K) times constant W (K, N) on the integer kernel, epilogue included."""
    args = _args(ctx)
    w, t = ctx.const(3), ctx.out_type(0)
    if args is None or w.ndim != 2 or not t.shape:
        return False
    y, x0 = ctx.y(), ctx.x(0)
    dt = ctx.dtype(t.dtype)
    ctx.emit(f"{y} = {ctx.buf() or f'np.empty({x0}.shape[:-1] + ({w.shape[1]},), dtype={dt})'}")
    ctx.emit(f"_cv.qgemm(self, {', '.join(args)}, {y})")
    use_conv_runtime(ctx.module, "qgemm")
    return True


@emits("QConv", domain="ai.torsh")
def qconv(ctx: NodeCtx) -> bool:
    """A 2-d, group-1 quantized convolution: columns, integer GEMM, NCHW output."""
    args = _args(ctx)
    w, t, xt = ctx.const(3), ctx.out_type(0), ctx.in_tensor(0)
    if args is None or w.ndim != 4 or int(ctx.attrs.group or 1) != 1:
        return False
    if xt.shape is None or t.shape is None or len(t.shape) != 4:
        return False
    spatial = list(xt.shape[2:]) + list(t.shape[1:])
    if not all(isinstance(d, int) and d > 0 for d in spatial):
        return False
    kernel = list(w.shape[2:])
    strides, dilations, pads = spatial_params(ctx.attrs, 2)
    begin, _end, out = conv_pads(
        tuple(xt.shape[2:]), kernel, strides, dilations, pads, ctx.attrs.auto_pad
    )
    if list(out) != list(t.shape[2:]):
        return False
    geo = (
        kernel[0],
        kernel[1],
        strides[0],
        strides[1],
        dilations[0],
        dilations[1],
        begin[0],
        begin[1],
    )
    y, x0 = ctx.y(), ctx.x(0)
    dt = ctx.dtype(t.dtype)
    m, oh, ow = t.shape[1:]
    ctx.emit(f"{y} = {ctx.buf() or f'np.empty(({x0}.shape[0], {m}, {oh}, {ow}), dtype={dt})'}")
    ctx.emit(f"_cv.qconv2d(self, {', '.join(args)}, {y}, {ctx.lit(tuple(int(g) for g in geo))})")
    use_conv_runtime(ctx.module, "qgemm")
    return True


@emits("MatMulInteger")
def matmul_integer(ctx: NodeCtx) -> bool:
    """(A - a_zp) @ (B - b_zp) into int32 for a constant 2-d B and a scalar a_zp."""
    a, b, t = ctx.in_tensor(0), ctx.const(1), ctx.out_type(0)
    if a is None or a.dtype not in _QTYPES or b is None or b.ndim != 2 or b.itemsize != 1:
        return False
    if t is None or not t.shape or a.rank is None or a.rank < 1:
        return False
    azp, bzp = ctx.in_tensor(2), ctx.const(3) if ctx.x(3) is not None else None
    if azp is not None and azp.shape not in ((), (1,)):
        return False
    if ctx.x(3) is not None and (bzp is None or bzp.size not in (1, b.shape[1])):
        return False
    y, x0 = ctx.y(), ctx.x(0)
    alloc = ctx.buf() or f"np.empty({x0}.shape[:-1] + ({b.shape[1]},), dtype=np.int32)"
    ctx.emit(f"{y} = {alloc}")
    ctx.emit(
        f"_cv.matmul_integer(self, {x0}, {ctx.x(2) or 'None'}, {ctx.x(1)}, {ctx.x(3) or 'None'}, {y})"
    )
    use_conv_runtime(ctx.module, "qgemm")
    return True


def _per_tensor(ctx: NodeCtx) -> bool:
    """True when scale (float32) and zero point (if any) are one value each, no blocks."""
    s, z = ctx.in_tensor(1), ctx.in_tensor(2) if ctx.x(2) is not None else None
    if s is None or s.dtype != DType.FLOAT or s.shape not in ((), (1,)):
        return False
    if z is not None and (z.dtype not in _QTYPES or z.shape not in ((), (1,))):
        return False
    return not int(ctx.attrs.get("block_size", 0) or 0)


@emits("QuantizeLinear")
def quantize_linear(ctx: NodeCtx) -> bool:
    """float32 → uint8/int8 per tensor: one parallel numba pass (rint half to even)."""
    x, t = ctx.in_tensor(0), ctx.out_type(0)
    if (
        x is None
        or x.dtype != DType.FLOAT
        or t is None
        or t.dtype not in _QTYPES
        or not _per_tensor(ctx)
    ):
        return False
    if t.shape == () or int(ctx.attrs.get("output_dtype", 0) or 0) not in (0, int(t.dtype)):
        return False
    y, x0 = ctx.y(), ctx.x(0)
    ctx.emit(f"{y} = {ctx.buf() or f'np.empty({x0}.shape, dtype={ctx.dtype(t.dtype)})'}")
    ctx.emit(f"_cv.quantize({x0}, {ctx.x(1)}, {ctx.x(2) or 'None'}, {y})")
    use_conv_runtime(ctx.module, "qgemm")
    return True


@emits("DequantizeLinear")
def dequantize_linear(ctx: NodeCtx) -> bool:
    """uint8/int8 → float32 per tensor: one parallel numba pass."""
    x, t = ctx.in_tensor(0), ctx.out_type(0)
    if (
        x is None
        or x.dtype not in _QTYPES
        or t is None
        or t.dtype != DType.FLOAT
        or not _per_tensor(ctx)
    ):
        return False
    if t.shape == ():
        return False
    y, x0 = ctx.y(), ctx.x(0)
    ctx.emit(f"{y} = {ctx.buf() or f'np.empty({x0}.shape, dtype=np.float32)'}")
    ctx.emit(f"_cv.dequantize({x0}, {ctx.x(1)}, {ctx.x(2) or 'None'}, {y})")
    use_conv_runtime(ctx.module, "qgemm")
    return True


@emits("Q4MatMul", domain="ai.torsh")
def q4_matmul(ctx: NodeCtx) -> bool:
    """float32 A times block-quantized 4-bit weights dequantized in the kernel."""
    a, w, s, t = ctx.in_tensor(0), ctx.const(1), ctx.const(2), ctx.out_type(0)
    if a is None or a.dtype != DType.FLOAT or w is None or w.ndim != 2 or w.dtype.itemsize != 1:
        return False
    if s is None or s.dtype.kind != "f" or t is None or not t.shape:
        return False
    y, x0 = ctx.y(), ctx.x(0)
    ctx.emit(
        f"{y} = {ctx.buf() or f'np.empty({x0}.shape[:-1] + ({w.shape[1]},), dtype=np.float32)'}"
    )
    bs = int(ctx.attrs.block_size)
    ctx.emit(f"_cv.q4_matmul(self, {x0}, {ctx.x(1)}, {ctx.x(2)}, {ctx.x(3) or 'None'}, {bs}, {y})")
    use_conv_runtime(ctx.module, "q4", "matmul")  # many rows: the float32 packed GEMM
    return True
