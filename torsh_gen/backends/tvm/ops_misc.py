"""Quantization and other ops → Relax: QuantizeLinear / DequantizeLinear (per tensor, per
axis, blocked), DynamicQuantizeLinear, QLinearMatMul, QLinearConv, Det and the window
functions.

Quantization follows onnx's reference evaluator (the spec's own arithmetic): divide in the
input's float type, round half to even, add the zero point in integers, saturate. The
narrow types (4- and 2-bit integers, float8, float4), held as bytes, are decoded and
encoded by ``narrow``. The
integer products (QLinearMatMul, QLinearConv) accumulate exactly in int32 and rescale in
float64, as the reference does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from torsh_gen.backends.kernel.storage import SMALL_INTS
from torsh_gen.backends.tvm import narrow
from torsh_gen.backends.tvm.convert import Ctx, Decline, converts, numpy_dtype, tvm_dtype
from torsh_gen.ir.graph import Node, Value
from torsh_gen.ir.types import DType

#: Bound on a rounded quotient before it becomes int64 (inf and huge values saturate).
_INT_GUARD = float(2**40)


def _param(
    ctx: Ctx, value: Value, x_dims: list[Any], axis: int, block: int, expr: Any = None
) -> Any:
    """A scale or zero point shaped to broadcast against x: scalar (per tensor), along
    ``axis`` (per axis) or repeated ``block`` times along ``axis`` (blocked). ``expr``:
    the values to shape, when not ``value``'s own (a decoded narrow zero point)."""
    from tvm import relax

    expr = ctx.x(value) if expr is None else expr
    dims = ctx.shape(value)
    if len(dims) == 0:
        return expr
    if block <= 0 and dims == [1]:
        return ctx.emit(relax.op.reshape(expr, []))
    if not 0 <= axis < len(x_dims):
        raise Decline(f"quantization axis {axis} is out of range for rank {len(x_dims)}")
    if block <= 0:
        if len(dims) != 1:
            raise Decline("a per-axis scale or zero point must be 1-D")
        shape = [1] * len(x_dims)
        shape[axis] = dims[0]
        return ctx.emit(relax.op.reshape(expr, shape))
    if len(dims) != len(x_dims):
        raise Decline("a blocked scale or zero point must have the rank of the input")
    expr = ctx.emit(relax.op.repeat(expr, block, axis=axis))
    n = x_dims[axis]
    if not isinstance(n, int):
        raise Decline("blocked quantization needs a static size along its axis")
    if dims[axis] * block != n:
        expr = ctx.emit(relax.op.strided_slice(expr, axes=[axis], begin=[0], end=[n]))
    return expr


def _quant_axis(ctx: Ctx, node: Node, rank: int) -> tuple[int, int]:
    """(axis, block_size) of a Quantize/DequantizeLinear node, axis normalized."""
    axis = int(node.attr("axis", 1)) if ctx.opset >= 13 else 1
    block = int(node.attr("block_size", 0)) if ctx.opset >= 21 else 0
    # the axis only matters (and is only checked) for per-axis and blocked parameters
    return (axis + rank if axis < 0 else axis), block


def _saturate(
    ctx: Ctx, q: Any, zp: Any | None, dtype: str, bounds: tuple[int, int] | None = None
) -> Any:
    """round-half-even(q) + zp, clipped to ``dtype``'s range (or ``bounds``) and cast to
    ``dtype`` (q is float)."""
    from tvm import relax

    lo, hi = bounds or (int(np.iinfo(dtype).min), int(np.iinfo(dtype).max))
    r = ctx.emit(relax.op.round(q))
    if r.ty.dtype in ("float16", "bfloat16"):  # the guard below is beyond their range
        r = ctx.emit(relax.op.astype(r, "float32"))
    r = ctx.emit(relax.op.clip(r, -_INT_GUARD, _INT_GUARD))
    r = ctx.emit(relax.op.astype(r, "int64"))
    if zp is not None:
        r = ctx.emit(relax.op.add(r, relax.op.astype(zp, "int64")))
    r = ctx.emit(relax.op.clip(r, lo, hi))
    return ctx.emit(relax.op.astype(r, dtype))


def _int_dtype(ctx: Ctx, value: Value, what: str) -> str:
    dtype = ctx.dtype(value)
    if dtype not in ("uint8", "int8", "uint16", "int16", "int32", "uint32"):
        raise Decline(f"{what} of type {dtype} is not supported")
    return dtype


@converts("QuantizeLinear")
def quantize_linear(ctx: Ctx, node: Node) -> Sequence[Any]:
    out = ctx.tensor_type(node.outputs[0]).dtype
    if narrow.is_narrow(out):
        return [_quantize_narrow(ctx, node, out)]
    out_dtype = _int_dtype(ctx, node.outputs[0], "QuantizeLinear's output")
    q, x_dims, axis, block = _quotient(ctx, node)
    zp = _param(ctx, node.inputs[2], x_dims, axis, block) if ctx.has(node, 2) else None
    return [_saturate(ctx, q, zp, out_dtype)]


def _quotient(ctx: Ctx, node: Node) -> tuple[Any, list[Any], int, int]:
    """x / scale of a QuantizeLinear node, in the input's float type (or ``precision``),
    with x's dims, the axis and the block size."""
    from tvm import relax

    src = node.inputs[0]
    x = ctx.x(src)
    x_dims = ctx.shape(src)
    axis, block = _quant_axis(ctx, node, len(x_dims))
    ftype = ctx.dtype(src)
    precision = int(node.attr("precision", 0))
    if precision:
        ftype = tvm_dtype(DType(precision))
    scale = _param(ctx, node.inputs[1], x_dims, axis, block)
    if ctx.dtype(src) != ftype:
        x = ctx.emit(relax.op.astype(x, ftype))
    if ctx.dtype(node.inputs[1]) != ftype:
        scale = ctx.emit(relax.op.astype(scale, ftype))
    return ctx.emit(relax.op.divide(x, scale)), x_dims, axis, block


def _quantize_narrow(ctx: Ctx, node: Node, out: DType) -> Any:
    """x / scale into a narrow type, as onnx's reference computes it: 4- and 2-bit integers
    round half to even, add the zero point and clip to their range; float8 rounds to
    nearest even, clamped to ±max when ``saturate`` (its zero point must be 0); float4
    adds its zero point and rounds (it has no infinity: overflow gives ±6)."""
    from tvm import relax

    name = narrow.NARROW[out]
    if name == "f8e8m0":
        raise Decline("QuantizeLinear to FLOAT8E8M0 is not defined")
    q, x_dims, axis, block = _quotient(ctx, node)
    zp = None
    if ctx.has(node, 2):
        zp_value = node.inputs[2]
        if name in narrow.SATURATING:
            _require_zero(ctx, zp_value)
        else:
            zp = _param(ctx, zp_value, x_dims, axis, block, narrow.decoded(ctx, zp_value))
    if narrow.is_integer(out):
        width, signed = SMALL_INTS[name]
        bounds = (-(1 << (width - 1)), (1 << (width - 1)) - 1) if signed else (0, (1 << width) - 1)
        return narrow.encode(ctx, _saturate(ctx, q, zp, "int32", bounds), out)
    if zp is not None:
        q = ctx.emit(relax.op.add(relax.op.astype(q, "float32"), zp))
    return narrow.encode(ctx, q, out, saturate=bool(node.attr("saturate", 1)))


def _require_zero(ctx: Ctx, zp: Value) -> None:
    """Decline a float8 or float4 zero point that is a constant other than 0 (the spec
    requires 0 and the reference ignores it; a run-time one is ignored likewise)."""
    arr = ctx.const(zp)
    if arr is not None and np.any(np.asarray(arr).astype(np.float32) != 0):
        raise Decline("a float8 or float4 zero point must be 0")


@converts("DequantizeLinear")
def dequantize_linear(ctx: Ctx, node: Node) -> Sequence[Any]:
    """(x - zero_point) * scale in float32 (float64 for double scales), as the reference.
    Narrow x is decoded first; float8 and float4 zero points are not subtracted (they
    must be 0), as in the reference."""
    from tvm import relax

    src = node.inputs[0]
    source = ctx.tensor_type(src).dtype
    name = narrow.NARROW.get(source)
    ftype = "float64" if ctx.dtype(node.inputs[1]) == "float64" else "float32"
    if name is not None:
        x = ctx.emit(relax.op.astype(narrow.decoded(ctx, src), ftype))
    else:
        _int_dtype(ctx, src, "DequantizeLinear's input")
        x = ctx.emit(relax.op.astype(ctx.x(src), ftype))
    x_dims = ctx.shape(src)
    axis, block = _quant_axis(ctx, node, len(x_dims))
    out_dtype = ctx.dtype(node.outputs[0])
    if ctx.has(node, 2):
        zp_value = node.inputs[2]
        if name in narrow.SATURATING or name == "f4e2m1":
            _require_zero(ctx, zp_value)
        else:
            decoded = narrow.decoded(ctx, zp_value) if name is not None else None
            zp = _param(ctx, zp_value, x_dims, axis, block, decoded)
            x = ctx.emit(relax.op.subtract(x, relax.op.astype(zp, ftype)))
    scale = _param(ctx, node.inputs[1], x_dims, axis, block)
    y = ctx.emit(relax.op.multiply(x, relax.op.astype(scale, ftype)))
    return [ctx.emit(relax.op.astype(y, out_dtype)) if out_dtype != ftype else y]


@converts("DynamicQuantizeLinear")
def dynamic_quantize_linear(ctx: Ctx, node: Node) -> Sequence[Any]:
    """uint8 quantization with scale and zero point from the input's range (widened to
    hold 0); a constant input gives scale 1, as onnxruntime and the reference do."""
    from tvm import relax

    if ctx.dtype(node.inputs[0]) != "float32":
        raise Decline("DynamicQuantizeLinear takes float32 only")
    x = ctx.x(node.inputs[0])
    zero = relax.const(0.0, "float32")
    hi = ctx.emit(relax.op.maximum(relax.op.max(x), zero))
    lo = ctx.emit(relax.op.minimum(relax.op.min(x), zero))
    span = ctx.emit(relax.op.where(relax.op.equal(hi, lo), relax.const(1.0, "float32"), relax.op.subtract(hi, lo)))
    scale = ctx.emit(relax.op.divide(span, relax.const(255.0, "float32")))
    zp = ctx.emit(relax.op.clip(relax.op.subtract(zero, relax.op.divide(lo, scale)), 0.0, 255.0))
    zp = ctx.emit(relax.op.round(zp))
    y = ctx.emit(relax.op.add(relax.op.round(relax.op.divide(x, scale)), zp))
    y = ctx.emit(relax.op.astype(relax.op.clip(y, 0.0, 255.0), "uint8"))
    return [y, scale, ctx.emit(relax.op.astype(zp, "uint8"))]


def _centered(ctx: Ctx, x: Value, zp: Value | None, zp_shape: list[int] | None = None) -> Any:
    """x - zero_point in int32 (exact for 8-bit operands)."""
    from tvm import relax

    y = ctx.emit(relax.op.astype(ctx.x(x), "int32"))
    if zp is None:
        return y
    z = ctx.emit(relax.op.astype(ctx.x(zp), "int32"))
    if zp_shape is not None and len(ctx.shape(zp)) == 1 and ctx.shape(zp) != [1]:
        z = ctx.emit(relax.op.reshape(z, zp_shape))
    elif ctx.shape(zp) == [1]:
        z = ctx.emit(relax.op.reshape(z, []))
    return ctx.emit(relax.op.subtract(y, z))


def _requantize(ctx: Ctx, acc: Any, scales: list[Any], y_scale: Any, y_zp: Value | None, out_dtype: str) -> Any:
    """acc * (s_a * s_b / s_y) + y_zp, rounded half to even and saturated: the
    multiplier in float32, the product in float64, as onnx's reference computes it."""
    from tvm import relax

    m = ctx.emit(relax.op.divide(relax.op.multiply(scales[0], scales[1]), y_scale))
    m = ctx.emit(relax.op.astype(m, "float64"))
    q = ctx.emit(relax.op.multiply(relax.op.astype(acc, "float64"), m))
    zp = None
    if y_zp is not None:
        zp = ctx.x(y_zp)
        if ctx.shape(y_zp) == [1]:
            zp = ctx.emit(relax.op.reshape(zp, []))
    return _saturate(ctx, q, zp, out_dtype)


def _scalar_or(ctx: Ctx, value: Value, shape: list[int]) -> Any:
    """A scale as a scalar when it has one element, else reshaped to ``shape``."""
    from tvm import relax

    expr = ctx.x(value)
    dims = ctx.shape(value)
    if dims in ([], [1]):
        return ctx.emit(relax.op.reshape(expr, [])) if dims else expr
    return ctx.emit(relax.op.reshape(expr, shape))


@converts("QLinearMatMul")
def qlinear_matmul(ctx: Ctx, node: Node) -> Sequence[Any]:
    """Integer matmul of the centered operands in int32, then requantized. Per-row scales
    of a ([M]) and per-column scales of b ([N]) broadcast as the spec allows."""
    from tvm import relax

    a, b = node.inputs[0], node.inputs[3]
    out_dtype = _int_dtype(ctx, node.outputs[0], "QLinearMatMul's output")
    if len(ctx.shape(a)) < 2 or len(ctx.shape(b)) < 2:
        raise Decline("QLinearMatMul of 1-D operands is not supported")
    ca = _centered(ctx, a, node.inputs[2], [-1, 1])
    cb = _centered(ctx, b, node.inputs[5], [-1])
    acc = ctx.emit(relax.op.matmul(ca, cb, out_dtype="int32"))
    sa = _scalar_or(ctx, node.inputs[1], [-1, 1])
    sb = _scalar_or(ctx, node.inputs[4], [-1])
    sy = _scalar_or(ctx, node.inputs[6], [-1])
    return [_requantize(ctx, acc, [sa, sb], sy, node.inputs[7], out_dtype)]


@converts("QLinearConv")
def qlinear_conv(ctx: Ctx, node: Node) -> Sequence[Any]:
    """Convolution of the centered operands in int32 (padding with 0 after centering pads
    with the input's zero point, as the spec asks), plus the int32 bias, requantized with
    per-tensor or per-output-channel weight scales."""
    from tvm import relax

    from torsh_gen.backends.tvm.ops_nn import _conv_pads

    x, w = node.inputs[0], node.inputs[3]
    out_dtype = _int_dtype(ctx, node.outputs[0], "QLinearConv's output")
    spatial = ctx.rank(x) - 2
    if spatial not in (1, 2, 3):
        raise Decline(f"{spatial}-d convolution is not supported")
    ones = [1] * spatial
    kernel = ctx.static_shape(w, "the convolution weight")[2:]
    strides = list(node.attr("strides", ones))
    dilations = list(node.attr("dilations", ones))
    pads = _conv_pads(ctx, node, kernel, strides, dilations)
    cx = _centered(ctx, x, node.inputs[2])
    cw = _centered(ctx, w, node.inputs[5], [-1] + [1] * (spatial + 1))
    fn = {1: relax.op.nn.conv1d, 2: relax.op.nn.conv2d, 3: relax.op.nn.conv3d}[spatial]
    group = int(node.attr("group", 1))
    acc = ctx.emit(fn(cx, cw, strides=strides, padding=pads, dilation=dilations, groups=group, out_dtype="int32"))
    if ctx.has(node, 8):
        bias = ctx.emit(relax.op.astype(ctx.x(node.inputs[8]), "int32"))
        bias = ctx.emit(relax.op.reshape(bias, [-1] + ones))
        acc = ctx.emit(relax.op.add(acc, bias))
    channel = [-1] + ones
    sx = _scalar_or(ctx, node.inputs[1], channel)
    sw = _scalar_or(ctx, node.inputs[4], channel)
    sy = _scalar_or(ctx, node.inputs[6], channel)
    return [_requantize(ctx, acc, [sx, sw], sy, node.inputs[7], out_dtype)]


# -- windows --------------------------------------------------------------------------------


def _window_values(op: str, size: int, periodic: bool) -> np.ndarray:
    """The window in float64, by the spec's formulas (N = size, or size - 1 when
    symmetric)."""
    n = np.arange(size, dtype=np.float64)
    denom = size if periodic else size - 1
    angle = 2.0 * np.pi * n / denom
    if op == "HannWindow":
        return 0.5 - 0.5 * np.cos(angle)
    if op == "HammingWindow":
        alpha = 25.0 / 46.0
        return alpha - (1.0 - alpha) * np.cos(angle)
    return 0.42 - 0.5 * np.cos(angle) + 0.08 * np.cos(2.0 * angle)


@converts("HannWindow", "HammingWindow", "BlackmanWindow")
def window(ctx: Ctx, node: Node) -> Sequence[Any]:
    """A window is a constant once its size is known: from the constant size input, or
    from the output's static length (which only one size produces)."""
    if ctx.const(node.inputs[0]) is not None:
        size = ctx.ints(node.inputs[0], "the window size")[0]
    else:
        t = node.outputs[0].type
        dims = getattr(t, "shape", None)
        if not dims or not isinstance(dims[0], int):
            raise Decline("the window size must be a constant (it is computed at run time)")
        size = dims[0]
        message = f"{node.op_type}: the size is {{}} at run time, but the model's declared output shape says {size}"
        ctx.check_one_int(node.inputs[0], size, message)
    periodic = bool(node.attr("periodic", 1))
    if size < 0 or (size == 1 and not periodic):
        raise Decline(f"a {'symmetric ' if not periodic else ''}window of size {size} is not defined")
    values = _window_values(node.op_type, size, periodic)
    dtype = ctx.dtype(node.outputs[0])
    return [ctx.weight(values.astype(numpy_dtype(dtype)))]


# -- Det ------------------------------------------------------------------------------------


#: Largest matrix Det unrolls its elimination for.
_DET_MAX_N = 8


@converts("Det")
def det(ctx: Ctx, node: Node) -> Sequence[Any]:
    """Gaussian elimination with partial pivoting, unrolled over the static size n (small
    matrices only, batched): the determinant is the product of the pivots, negated per
    row swap. A zero pivot makes the product 0 (it is divided by 1 instead, no NaN)."""
    from tvm import relax

    src = node.inputs[0]
    dims = ctx.shape(src)
    if len(dims) < 2 or not isinstance(dims[-1], int) or dims[-1] != dims[-2]:
        raise Decline("Det needs square matrices of a static size")
    n = dims[-1]
    if n > _DET_MAX_N:
        raise Decline(f"Det of {n}x{n} matrices is not supported (at most {_DET_MAX_N})")
    dtype = ctx.dtype(src)
    ftype = "float32" if dtype in ("float16", "bfloat16") else dtype
    a = ctx.x(src)
    if ftype != dtype:
        a = ctx.emit(relax.op.astype(a, ftype))
    batch = dims[:-2]
    if n == 0:
        return [ctx.emit(relax.op.broadcast_to(relax.const(1, dtype), batch))]
    rows = [ctx.emit(relax.op.take(a, relax.const(i, "int64"), axis=len(batch), mode="clip")) for i in range(n)]
    result = None
    for k in range(n):
        rows, pivot = _det_step(ctx, rows, k, len(batch))
        result = pivot if result is None else ctx.emit(relax.op.multiply(result, pivot))
    if ftype != dtype:
        result = ctx.emit(relax.op.astype(result, dtype))
    return [result]


def _det_step(ctx: Ctx, rows: list[Any], k: int, axis: int) -> tuple[list[Any], Any]:
    """One elimination step on ``rows`` (each [batch..., n]): swap the largest |row[k]|
    (first one on ties) into row k, eliminate column k below it. Returns the new rows
    and the signed pivot (negative when rows were swapped)."""
    from tvm import relax

    n = len(rows)
    ftype = rows[0].ty.dtype

    def col(r: Any) -> Any:
        return ctx.emit(relax.op.take(r, relax.const(k, "int64"), axis=axis, mode="clip"))

    best = ctx.emit(relax.op.abs(col(rows[k])))
    p = None  # per batch element: the chosen row, as masks "chosen == j"
    chosen: list[Any] = []
    for j in range(k + 1, n):
        cand = ctx.emit(relax.op.abs(col(rows[j])))
        take = ctx.emit(relax.op.greater(cand, best))
        best = ctx.emit(relax.op.where(take, cand, best))
        # a later, larger row replaces every earlier choice
        chosen = [ctx.emit(relax.op.logical_and(c, relax.op.logical_not(take))) for c in chosen]
        chosen.append(take)
        p = take if p is None else ctx.emit(relax.op.logical_or(p, take))
    new = list(rows)
    piv = rows[k]
    for j, mask in zip(range(k + 1, n), chosen):
        m = ctx.emit(relax.op.expand_dims(mask, -1))
        piv = ctx.emit(relax.op.where(m, rows[j], piv))
        new[j] = ctx.emit(relax.op.where(m, rows[k], rows[j]))
    new[k] = piv
    d = col(piv)
    signed = d if p is None else ctx.emit(relax.op.where(p, relax.op.negative(d), d))
    safe = ctx.emit(relax.op.where(relax.op.equal(d, relax.const(0, ftype)), relax.const(1, ftype), d))
    for j in range(k + 1, n):
        f = ctx.emit(relax.op.expand_dims(relax.op.divide(col(new[j]), safe), -1))
        new[j] = ctx.emit(relax.op.subtract(new[j], relax.op.multiply(f, piv)))
    return new, signed
