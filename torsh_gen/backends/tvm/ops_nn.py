"""Neural-network ops → Relax: convolutions, matrix products, pooling, normalization,
softmax family, einsum and resizing.

Where ONNX and TVM's operators disagree on an edge (ceil-mode pooling windows, the divisor
of an average over padding, transposed-convolution output shapes), the converter works the
exact ONNX shape out at compile time and hands TVM only the part both agree on, fixing the
rest with explicit pads, slices or a constant correction.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from torsh_gen.backends.tvm.convert import Ctx, Decline, converts, numpy_dtype, str_attr
from torsh_gen.ir.graph import Node, Value

_FLOATS = ("float16", "bfloat16", "float32", "float64")


# -- small helpers ----------------------------------------------------------------------

def _float_input(ctx: Ctx, value: Value | None, what: str) -> str:
    """The dtype of ``value``; Decline unless it is a float type (TVM's nn ops and our
    compositions with float constants need one)."""
    dtype = ctx.dtype(value)
    if dtype not in _FLOATS:
        raise Decline(f"{what} of dtype {dtype} is not supported")
    return dtype


def _scalar(value: float, dtype: str) -> Any:
    from tvm import relax

    return relax.const(value, dtype)


def _used(node: Node, index: int) -> bool:
    """Whether optional output ``index`` exists and is read."""
    return index < len(node.outputs) and node.outputs[index] is not None and bool(node.outputs[index].name)


def _channel_shape(rank: int) -> list[int]:
    """Shape that broadcasts a per-channel vector (C,) against an (N, C, ...) tensor."""
    return [-1] + [1] * max(rank - 2, 0)


# -- matrix products --------------------------------------------------------------------
@converts("MatMul")
def matmul(ctx: Ctx, node: Node) -> Sequence[Any]:
    """numpy matmul semantics: relax.op.matmul takes 1-d operands and broadcasts batches.
    Half-precision products accumulate in float32 (as onnxruntime's kernels do), then round
    once."""
    from tvm import relax

    a, b = ctx.x(node.inputs[0]), ctx.x(node.inputs[1])
    dtype = ctx.dtype(node.inputs[0])
    if dtype in ("float16", "bfloat16"):
        y = ctx.emit(relax.op.matmul(relax.op.astype(a, "float32"), relax.op.astype(b, "float32")))
        return [ctx.emit(relax.op.astype(y, dtype))]
    return [ctx.emit(relax.op.matmul(a, b))]


@converts("Gemm")
def gemm(ctx: Ctx, node: Node) -> Sequence[Any]:
    """alpha * A' B' + beta * C. A constant transposed B is transposed here, once, so the
    library does not transpose the weights on every call; C (rank 0 to 2) broadcasts."""
    from tvm import relax

    dtype = ctx.dtype(node.outputs[0])
    alpha, beta = float(node.attr("alpha", 1.0)), float(node.attr("beta", 1.0))
    if dtype not in _FLOATS and (alpha != int(alpha) or beta != int(beta)):
        raise Decline(f"fractional alpha/beta with {dtype} operands")
    if ctx.rank(node.inputs[0]) != 2 or ctx.rank(node.inputs[1]) != 2:
        raise Decline("Gemm needs 2-d A and B")
    a, b = ctx.x(node.inputs[0]), node.inputs[1]
    if node.attr("transA", 0):
        a = ctx.emit(relax.op.permute_dims(a))
    wb = ctx.const(b)
    if node.attr("transB", 0):
        bx = ctx.weight(np.asarray(wb).T) if wb is not None else ctx.emit(relax.op.permute_dims(ctx.x(b)))
    else:
        bx = ctx.x(b)
    y = ctx.emit(relax.op.matmul(a, bx))
    if alpha != 1.0:
        y = ctx.emit(relax.op.multiply(y, _scalar(alpha if dtype in _FLOATS else int(alpha), dtype)))
    if ctx.has(node, 2) and beta != 0.0:
        c = ctx.x(node.inputs[2])
        if beta != 1.0:
            c = ctx.emit(relax.op.multiply(c, _scalar(beta if dtype in _FLOATS else int(beta), dtype)))
        y = ctx.emit(relax.op.add(y, c))
    return [y]


def _zero_point(ctx: Ctx, node: Node, index: int) -> Any | None:
    """Optional zero-point input ``index`` as int32, or None when absent."""
    from tvm import relax

    if not ctx.has(node, index):
        return None
    return ctx.emit(relax.op.astype(ctx.x(node.inputs[index]), "int32"))


@converts("MatMulInteger")
def matmul_integer(ctx: Ctx, node: Node) -> Sequence[Any]:
    """(A - a_zp) @ (B - b_zp) in int32. A's zero point may be per row (M,), B's per
    column (N,): a 1-d a_zp is made a column so it lines up with A's rows."""
    from tvm import relax

    a = ctx.emit(relax.op.astype(ctx.x(node.inputs[0]), "int32"))
    b = ctx.emit(relax.op.astype(ctx.x(node.inputs[1]), "int32"))
    azp, bzp = _zero_point(ctx, node, 2), _zero_point(ctx, node, 3)
    if azp is not None:
        if ctx.rank(node.inputs[2]) == 1 and ctx.rank(node.inputs[0]) >= 2:
            azp = ctx.emit(relax.op.reshape(azp, [-1, 1]))
        a = ctx.emit(relax.op.subtract(a, azp))
    if bzp is not None:
        b = ctx.emit(relax.op.subtract(b, bzp))
    return [ctx.emit(relax.op.matmul(a, b, out_dtype="int32"))]


@converts("Einsum")
def einsum(ctx: Ctx, node: Node) -> Sequence[Any]:
    """relax.op.einsum with the equation stripped of spaces (TVM's parser takes none)."""
    from tvm import relax

    eq = str_attr(node, "equation", "").replace(" ", "")
    if not eq:
        raise Decline("Einsum without an equation")
    dtype = ctx.dtype(node.inputs[0])
    if dtype not in _FLOATS + ("int32", "int64"):
        raise Decline(f"Einsum of {dtype}")
    return [ctx.emit(relax.op.einsum([ctx.x(v) for v in node.inputs], eq))]


# -- convolutions -----------------------------------------------------------------------
def _spatial(ctx: Ctx, node: Node, what: str) -> int:
    spatial = ctx.rank(node.inputs[0]) - 2
    if spatial not in (1, 2, 3):
        raise Decline(f"{spatial}-d {what} is not supported")
    return spatial


def _conv_call(ctx: Ctx, node: Node, x: Any, w: Any, out_dtype: str | None = None) -> Any:
    """The convolution of ``x`` by ``w`` with ``node``'s strides, pads, dilations and group."""
    from tvm import relax

    spatial = _spatial(ctx, node, "convolution")
    kernel = ctx.static_shape(node.inputs[1], "the convolution weight")[2:]
    strides = list(node.attr("strides", [1] * spatial))
    dilations = list(node.attr("dilations", [1] * spatial))
    pads = _conv_pads(ctx, node, kernel, strides, dilations)
    fn = {1: relax.op.nn.conv1d, 2: relax.op.nn.conv2d, 3: relax.op.nn.conv3d}[spatial]
    group = int(node.attr("group", 1))
    return ctx.emit(fn(x, w, strides=strides, padding=pads, dilation=dilations, groups=group, out_dtype=out_dtype))


@converts("Conv")
def conv(ctx: Ctx, node: Node) -> Sequence[Any]:
    _float_input(ctx, node.inputs[0], "Conv")
    from tvm import relax

    y = _conv_call(ctx, node, ctx.x(node.inputs[0]), ctx.x(node.inputs[1]))
    if ctx.has(node, 2):
        spatial = ctx.rank(node.inputs[0]) - 2
        bias = ctx.emit(relax.op.reshape(ctx.x(node.inputs[2]), [-1] + [1] * spatial))
        y = ctx.emit(relax.op.add(y, bias))
    return [y]


@converts("ConvInteger")
def conv_integer(ctx: Ctx, node: Node) -> Sequence[Any]:
    """(x - x_zp) conv (w - w_zp) in int32; padding the shifted input with 0 is padding
    the original with its zero point, as ONNX specifies. w_zp may be per output channel."""
    from tvm import relax

    x = ctx.emit(relax.op.astype(ctx.x(node.inputs[0]), "int32"))
    w = ctx.emit(relax.op.astype(ctx.x(node.inputs[1]), "int32"))
    xzp, wzp = _zero_point(ctx, node, 2), _zero_point(ctx, node, 3)
    if xzp is not None:
        x = ctx.emit(relax.op.subtract(x, xzp))
    if wzp is not None:
        if ctx.rank(node.inputs[3]) == 1:
            wzp = ctx.emit(relax.op.reshape(wzp, [-1] + [1] * (ctx.rank(node.inputs[1]) - 1)))
        w = ctx.emit(relax.op.subtract(w, wzp))
    return [_conv_call(ctx, node, x, w, out_dtype="int32")]


def _conv_pads(ctx: Ctx, node: Node, kernel: list[int], strides: list[int], dilations: list[int]) -> list[int]:
    """ONNX pads (explicit, or from auto_pad SAME_UPPER/SAME_LOWER) as Relax's
    [begin..., end...] list; SAME padding needs a static input size."""
    spatial = len(kernel)
    auto = str_attr(node, "auto_pad", "NOTSET")
    if auto in ("NOTSET", ""):
        return [int(p) for p in node.attr("pads", [0] * (2 * spatial))]
    if auto == "VALID":
        return [0] * (2 * spatial)
    if auto not in ("SAME_UPPER", "SAME_LOWER"):
        raise Decline(f"auto_pad {auto}")
    size = ctx.static_shape(node.inputs[0], "SAME padding's input")[2:]
    begin, end = [], []
    for n, k, s, d in zip(size, kernel, strides, dilations):
        out = -(-n // s)
        total = max(0, (out - 1) * s + (k - 1) * d + 1 - n)
        small, large = total // 2, total - total // 2
        begin.append(small if auto == "SAME_UPPER" else large)
        end.append(large if auto == "SAME_UPPER" else small)
    return begin + end


@converts("ConvTranspose")
def conv_transpose(ctx: Ctx, node: Node) -> Sequence[Any]:
    """Transposed convolution. ONNX's output is the full transposed convolution cropped
    (or zero-extended) to [pad_begin, pad_begin + out): TVM gets the non-negative part of
    that crop as padding, the rest is a slice or a zero pad, so output_padding, output_shape
    and SAME padding all reduce to one computation of the two crop offsets."""
    from tvm import relax

    _float_input(ctx, node.inputs[0], "ConvTranspose")
    spatial = _spatial(ctx, node, "transposed convolution")
    size = ctx.static_shape(node.inputs[0], "ConvTranspose's input")[2:]
    kernel = ctx.static_shape(node.inputs[1], "the transposed convolution weight")[2:]
    strides = list(node.attr("strides", [1] * spatial))
    dilations = list(node.attr("dilations", [1] * spatial))
    out_pad = list(node.attr("output_padding", [0] * spatial))
    group = int(node.attr("group", 1))
    full = [(n - 1) * s + (k - 1) * d + 1 for n, s, k, d in zip(size, strides, kernel, dilations)]
    begin, out = _conv_transpose_crop(node, size, strides, full, out_pad, spatial)
    # TVM crops max(begin, 0) at the start and max(full - begin - out, 0) at the end.
    end = [f - b - o for f, b, o in zip(full, begin, out)]
    tvm_pads = [max(b, 0) for b in begin] + [max(e, 0) for e in end]
    fn = {1: relax.op.nn.conv1d_transpose, 2: relax.op.nn.conv2d_transpose, 3: relax.op.nn.conv3d_transpose}[spatial]
    y = ctx.emit(
        fn(ctx.x(node.inputs[0]), ctx.x(node.inputs[1]), strides=strides, padding=tvm_pads, dilation=dilations, groups=group)
    )
    extra = [max(-b, 0) for b in begin] + [max(-e, 0) for e in end]
    if any(extra):
        width = [0, 0, 0, 0] + [v for k in range(spatial) for v in (extra[k], extra[spatial + k])]
        y = ctx.emit(relax.op.nn.pad(y, width, "constant", 0.0))
    if ctx.has(node, 2):
        bias = ctx.emit(relax.op.reshape(ctx.x(node.inputs[2]), [-1] + [1] * spatial))
        y = ctx.emit(relax.op.add(y, bias))
    return [y]


def _conv_transpose_crop(
    node: Node, size: list[int], strides: list[int], full: list[int], out_pad: list[int], spatial: int
) -> tuple[list[int], list[int]]:
    """(begin offset into the full output, output length) per spatial axis, per the spec:
    explicit pads, or output_shape / SAME auto_pad whose total padding is split begin/end."""
    auto = str_attr(node, "auto_pad", "NOTSET")
    shape = node.attr("output_shape", None)
    if shape is None and auto not in ("SAME_UPPER", "SAME_LOWER"):
        pads = [int(p) for p in node.attr("pads", [0] * (2 * spatial))] if auto in ("NOTSET", "") else [0] * (2 * spatial)
        outs = [f + op - pads[k] - pads[spatial + k] for k, (f, op) in enumerate(zip(full, out_pad))]
        return pads[:spatial], outs
    outs = [int(v) for v in shape][-spatial:] if shape is not None else [n * s for n, s in zip(size, strides)]
    begins = []
    for f, op, o in zip(full, out_pad, outs):
        total = f + op - o
        # floor halves, as the reference does, also for a negative total
        begins.append(total // 2 if auto == "SAME_UPPER" else total - total // 2)
    return begins, outs


# -- pooling ----------------------------------------------------------------------------
def _pool_geometry(ctx: Ctx, node: Node, kernel: list[int]) -> tuple[list[int], list[int], list[int], list[int] | None]:
    """strides, dilations, the [begin..., end...] pads for TVM (no ceil mode) and the exact
    ONNX output size per axis (None when floor mode with explicit pads needs no shape).

    Ceil mode becomes extra end padding: TVM's max pads with the lowest value and its
    average can exclude padding, so windows that hang over the end only see real data."""
    spatial = len(kernel)
    strides = [int(s) for s in node.attr("strides", [1] * spatial)]
    dilations = [int(d) for d in node.attr("dilations", [1] * spatial)]
    pads = _conv_pads(ctx, node, kernel, strides, dilations)
    ceil = bool(node.attr("ceil_mode", 0))
    auto = str_attr(node, "auto_pad", "NOTSET")
    if not ceil and auto in ("NOTSET", "", "VALID"):
        return strides, dilations, pads, None
    size = ctx.static_shape(node.inputs[0], "ceil-mode pooling's input")[2:]
    outs, tvm = [], list(pads)
    for k in range(spatial):
        window = (kernel[k] - 1) * dilations[k] + 1
        span = size[k] + pads[k] + pads[spatial + k] - window
        if auto in ("SAME_UPPER", "SAME_LOWER"):
            o = -(-size[k] // strides[k])
        elif ceil:
            o = -(-span // strides[k]) + 1
            if (o - 1) * strides[k] >= size[k] + pads[k]:  # last window must start inside
                o -= 1
        else:
            o = span // strides[k] + 1
        outs.append(o)
        tvm[spatial + k] = max((o - 1) * strides[k] + window - size[k] - pads[k], 0)
    return strides, dilations, tvm, outs


@converts("MaxPool")
def max_pool(ctx: Ctx, node: Node) -> Sequence[Any]:
    """Y from TVM's max pool; the optional Indices output (flat positions in the input,
    row- or column-major per storage_order, first maximum on ties) in TE."""
    from tvm import relax

    dtype = ctx.dtype(node.inputs[0])
    if dtype not in _FLOATS + ("int8", "uint8"):
        raise Decline(f"MaxPool of {dtype}")
    spatial = _spatial(ctx, node, "pooling")
    kernel = [int(k) for k in node.attr("kernel_shape")]
    strides, dilations, pads, _ = _pool_geometry(ctx, node, kernel)
    fn = {1: relax.op.nn.max_pool1d, 2: relax.op.nn.max_pool2d, 3: relax.op.nn.max_pool3d}[spatial]
    x = ctx.x(node.inputs[0])
    y = ctx.emit(fn(x, kernel, strides, pads, dilations))
    if not _used(node, 1):
        return [y]
    dims = ctx.static_shape(node.inputs[0], "MaxPool's input (for Indices)")
    outs = ctx.shape_of(y)
    geometry = (kernel, strides, dilations, pads[:spatial], dims, outs, int(node.attr("storage_order", 0)))
    return [y, ctx.emit_te(_max_pool_indices_te, x, geometry)]


def _max_pool_indices_te(x: Any, geometry: tuple[Any, ...]) -> Any:
    """argmax over each pooling window as a flat int64 index into ``x``. Ties keep the
    first window position in row-major order, as onnxruntime scans."""
    from tvm import te, tirx

    kernel, strides, dilations, begin, dims, outs, column_major = geometry
    spatial = len(kernel)
    size = dims[2:]
    plane = math.prod(size)
    low = tirx.min_value(x.dtype)

    def combine(a: Any, b: Any) -> Any:
        keep = tirx.any(a[1] > b[1], tirx.all(a[1] == b[1], a[0] < b[0]))
        return tirx.Select(keep, a[0], b[0]), tirx.Select(keep, a[1], b[1])

    def identity(t0: str, t1: str) -> Any:
        return tirx.const(plane, t0), tirx.min_value(t1)

    reducer = te.comm_reducer(combine, identity, name="argmax_window")
    taps = [te.reduce_axis((0, k), name=f"k{i}") for i, k in enumerate(kernel)]

    def best(n: Any, c: Any, *o: Any) -> Any:
        pos = [o[i] * strides[i] - begin[i] + taps[i] * dilations[i] for i in range(spatial)]
        inside = tirx.all(*[tirx.all(p >= 0, p < size[i]) for i, p in enumerate(pos)])
        clamped = [tirx.max(tirx.min(p, size[i] - 1), 0) for i, p in enumerate(pos)]
        flat = tirx.const(0, "int64")
        for i, p in enumerate(clamped):
            flat = flat * size[i] + p.astype("int64")
        val = tirx.Select(inside, x[(n, c, *clamped)], low)
        return reducer((tirx.Select(inside, flat, tirx.const(plane, "int64")), val), axis=taps)

    pos, _ = te.compute(outs, best, name="maxpool_argmax")

    def index(n: Any, c: Any, *o: Any) -> Any:
        p = pos[(n, c, *o)]
        if column_major:  # reverse the spatial digits' significance
            digits, rest = [], p
            for d in reversed(size):
                digits.append(tirx.floormod(rest, d))
                rest = tirx.floordiv(rest, d)
            q = tirx.const(0, "int64")
            for i, d in enumerate(digits):  # digits[0] is the last axis, now most significant
                q = q * size[spatial - 1 - i] + d
            p = q
        return (n.astype("int64") * dims[1] + c.astype("int64")) * plane + p

    return te.compute(outs, index, name="maxpool_indices")


def _sum_pool(ctx: Ctx, node: Node, x: Any, kernel: list[int]) -> tuple[Any, list[int], list[int], list[int]]:
    """Window sums of ``x`` over zero padding (TVM's average including padding, times the
    window size), with the geometry used; the ceil-mode overhang adds zeros."""
    from tvm import relax

    spatial = len(kernel)
    strides, dilations, pads, _ = _pool_geometry(ctx, node, kernel)
    fn = {1: relax.op.nn.avg_pool1d, 2: relax.op.nn.avg_pool2d, 3: relax.op.nn.avg_pool3d}[spatial]
    avg = ctx.emit(fn(x, kernel, strides, pads, dilations, count_include_pad=True))
    return avg, strides, dilations, pads


@converts("AveragePool")
def average_pool(ctx: Ctx, node: Node) -> Sequence[Any]:
    """Without count_include_pad TVM's average over real elements is ONNX's. With it, ONNX
    counts the pads but not the ceil-mode overhang: TVM divides by the whole window, so a
    compile-time constant (window / counted taps) corrects the outputs whose window hangs
    over the end."""
    from tvm import relax

    dtype = _float_input(ctx, node.inputs[0], "AveragePool")
    spatial = _spatial(ctx, node, "pooling")
    kernel = [int(k) for k in node.attr("kernel_shape")]
    x = ctx.x(node.inputs[0])
    if not node.attr("count_include_pad", 0):
        strides, dilations, pads, _ = _pool_geometry(ctx, node, kernel)
        fn = {1: relax.op.nn.avg_pool1d, 2: relax.op.nn.avg_pool2d, 3: relax.op.nn.avg_pool3d}[spatial]
        return [ctx.emit(fn(x, kernel, strides, pads, dilations, count_include_pad=False))]
    avg, strides, dilations, pads = _sum_pool(ctx, node, x, kernel)
    factor = _include_pad_factor(ctx, node, kernel, strides, dilations)
    if factor is not None:
        avg = ctx.emit(relax.op.multiply(avg, ctx.constant(factor, dtype)))
    return [avg]


def _include_pad_factor(
    ctx: Ctx, node: Node, kernel: list[int], strides: list[int], dilations: list[int]
) -> np.ndarray | None:
    """window size / taps inside [-pad_begin, size + pad_end) per output position, or None
    when every window lies inside (no ceil-mode overhang)."""
    spatial = len(kernel)
    _, _, _, outs = _pool_geometry(ctx, node, kernel)
    if outs is None:
        return None
    size = ctx.static_shape(node.inputs[0])[2:]
    pads = _conv_pads(ctx, node, kernel, strides, dilations)
    counts = []
    for k in range(spatial):
        lo, hi = -pads[k], size[k] + pads[spatial + k]
        taps = np.arange(kernel[k]) * dilations[k]
        starts = np.arange(outs[k]) * strides[k] - pads[k]
        pos = starts[:, None] + taps[None, :]
        counts.append(((pos >= lo) & (pos < hi)).sum(axis=1))
    total = counts[0]
    for c in counts[1:]:
        total = np.multiply.outer(total, c)
    if np.all(total == math.prod(kernel)):
        return None
    return math.prod(kernel) / total.astype(np.float64)


@converts("LpPool")
def lp_pool(ctx: Ctx, node: Node) -> Sequence[Any]:
    """(sum over the window of |x|^p)^(1/p), padding counting as zeros."""
    from tvm import relax

    dtype = _float_input(ctx, node.inputs[0], "LpPool")
    _spatial(ctx, node, "pooling")
    kernel = [int(k) for k in node.attr("kernel_shape")]
    p = float(node.attr("p", 2))
    x = ctx.x(node.inputs[0])
    powered = _abs_pow(ctx, x, p, dtype)
    avg, *_ = _sum_pool(ctx, node, powered, kernel)
    total = ctx.emit(relax.op.multiply(avg, _scalar(float(math.prod(kernel)), dtype)))
    return [_root(ctx, total, p, dtype)]


def _abs_pow(ctx: Ctx, x: Any, p: float, dtype: str) -> Any:
    """|x|^p; small integer p as products (exact, and TVM warns about pow with y >= 3)."""
    from tvm import relax

    if p == 2.0:
        return ctx.emit(relax.op.multiply(x, x))
    a = ctx.emit(relax.op.abs(x))
    if p.is_integer() and 1 <= p <= 4:
        y = a
        for _ in range(int(p) - 1):
            y = ctx.emit(relax.op.multiply(y, a))
        return y
    return ctx.emit(relax.op.power(relax.op.abs(x), _scalar(p, dtype)))


def _root(ctx: Ctx, x: Any, p: float, dtype: str) -> Any:
    """x^(1/p), exact for p = 1 and 2."""
    from tvm import relax

    if p == 1.0:
        return x
    if p == 2.0:
        return ctx.emit(relax.op.sqrt(x))
    return ctx.emit(relax.op.power(x, _scalar(1.0 / p, dtype)))


@converts("GlobalMaxPool")
def global_max_pool(ctx: Ctx, node: Node) -> Sequence[Any]:
    from tvm import relax

    rank = ctx.rank(node.inputs[0])
    return [ctx.emit(relax.op.max(ctx.x(node.inputs[0]), axis=list(range(2, rank)), keepdims=True))]


@converts("GlobalLpPool")
def global_lp_pool(ctx: Ctx, node: Node) -> Sequence[Any]:
    from tvm import relax

    dtype = _float_input(ctx, node.inputs[0], "GlobalLpPool")
    rank = ctx.rank(node.inputs[0])
    p = float(node.attr("p", 2))
    powered = _abs_pow(ctx, ctx.x(node.inputs[0]), p, dtype)
    total = ctx.emit(relax.op.sum(powered, axis=list(range(2, rank)), keepdims=True))
    return [_root(ctx, total, p, dtype)]


# -- normalization ----------------------------------------------------------------------
@converts("BatchNormalization")
def batch_norm(ctx: Ctx, node: Node) -> Sequence[Any]:
    """Inference batch norm as x * a + b per channel; with constant statistics a and b
    are folded here (float64), else computed in the graph."""
    from tvm import relax

    if ctx.opset >= 14 and node.attr("training_mode", 0):
        return _batch_norm_training(ctx, node)
    if node.attr("training_mode", 0) or any(_used(node, k) for k in range(1, len(node.outputs))):
        raise Decline("BatchNormalization's running statistics before opset 14")
    if ctx.opset < 9 and node.attr("spatial", 1) != 1:
        raise Decline("BatchNormalization with spatial=0")
    dtype = _float_input(ctx, node.inputs[0], "BatchNormalization")
    eps = float(node.attr("epsilon", 1e-5))
    rank = ctx.rank(node.inputs[0])
    consts = [ctx.const(v) for v in node.inputs[1:5]]
    if all(c is not None for c in consts):
        scale, bias, mean, var = (np.asarray(c, dtype=np.float64) for c in consts)
        a = scale / np.sqrt(var + eps)
        b = bias - mean * a
        shape = [a.shape[0]] + [1] * max(rank - 2, 0)
        wa = ctx.weight(a.reshape(shape).astype(numpy_dtype(dtype)))
        wb = ctx.weight(b.reshape(shape).astype(numpy_dtype(dtype)))
        return [ctx.emit(relax.op.add(relax.op.multiply(ctx.x(node.inputs[0]), wa), wb))]
    scale, bias, mean, var = _channel_operands(ctx, node.inputs[1:5], rank, dtype)
    inv = ctx.emit(relax.op.rsqrt(relax.op.add(var, _scalar(eps, dtype))))
    a = ctx.emit(relax.op.multiply(scale, inv))
    centered = ctx.emit(relax.op.subtract(ctx.x(node.inputs[0]), mean))
    return [ctx.emit(relax.op.add(relax.op.multiply(centered, a), bias))]


def _channel_operands(ctx: Ctx, values: Sequence[Value], rank: int, dtype: str) -> list[Any]:
    """Per-channel (C,) operands shaped to broadcast against (N, C, ...) in X's type (opset
    15 lets scale/bias and mean/var have their own float types)."""
    from tvm import relax

    return [ctx.emit(relax.op.astype(relax.op.reshape(ctx.x(v), _channel_shape(rank)), dtype)) for v in values]


def _batch_norm_training(ctx: Ctx, node: Node) -> Sequence[Any]:
    """Training-mode BatchNormalization (opset 14+): normalized with the batch's own mean
    and population variance per channel; the optional outputs are the running statistics
    ``input * momentum + batch * (1 - momentum)``, as onnx's reference computes them."""
    from tvm import relax

    dtype = _float_input(ctx, node.inputs[0], "BatchNormalization")
    eps = float(node.attr("epsilon", 1e-5))
    momentum = float(node.attr("momentum", 0.9))
    x = ctx.x(node.inputs[0])
    rank = ctx.rank(node.inputs[0])
    axes = [0] + list(range(2, rank))
    mean = ctx.emit(relax.op.mean(x, axis=axes, keepdims=True))
    d = ctx.emit(relax.op.subtract(x, mean))
    var = ctx.emit(relax.op.mean(relax.op.multiply(d, d), axis=axes, keepdims=True))
    scale, bias = _channel_operands(ctx, node.inputs[1:3], rank, dtype)
    inv = ctx.emit(relax.op.rsqrt(relax.op.add(var, _scalar(eps, dtype))))
    y = ctx.emit(relax.op.add(relax.op.multiply(d, relax.op.multiply(scale, inv)), bias))
    outs = [y]
    for k, batch in ((1, mean), (2, var)):
        if not _used(node, k):
            outs.append(None)
            continue
        kind = ctx.dtype(node.inputs[2 + k])
        given = ctx.emit(relax.op.astype(ctx.x(node.inputs[2 + k]), dtype))
        flat = ctx.emit(relax.op.reshape(batch, [-1]))
        run = relax.op.add(
            relax.op.multiply(given, _scalar(momentum, dtype)),
            relax.op.multiply(flat, _scalar(1.0 - momentum, dtype)),
        )
        outs.append(ctx.emit(relax.op.astype(run, kind)))
    return outs


def _standardize(ctx: Ctx, x: Any, axes: list[int], eps: float, dtype: str) -> tuple[Any, Any, Any]:
    """(normalized, mean, 1/std) of ``x`` over ``axes`` (kept), as ONNX's function bodies
    compute them: mean, then the mean of squared deviations."""
    from tvm import relax

    mean = ctx.emit(relax.op.mean(x, axis=axes, keepdims=True))
    d = ctx.emit(relax.op.subtract(x, mean))
    var = ctx.emit(relax.op.mean(relax.op.multiply(d, d), axis=axes, keepdims=True))
    inv = ctx.emit(relax.op.divide(_scalar(1.0, dtype), relax.op.sqrt(relax.op.add(var, _scalar(eps, dtype)))))
    return ctx.emit(relax.op.multiply(d, inv)), mean, inv


def _stash(ctx: Ctx, node: Node, x: Any, dtype: str) -> tuple[Any, str]:
    """``x`` cast to the stash type (default 1: float32, as the function bodies cast even
    double inputs) and that type's name."""
    from tvm import relax

    stash = int(node.attr("stash_type", 1))
    want = {1: "float32", 10: "float16", 11: "float64", 16: "bfloat16"}.get(stash)
    if want is None:
        raise Decline(f"stash_type {stash}")
    if want == dtype:
        return x, dtype
    return ctx.emit(relax.op.astype(x, want)), want


@converts("InstanceNormalization")
def instance_norm(ctx: Ctx, node: Node) -> Sequence[Any]:
    from tvm import relax

    dtype = _float_input(ctx, node.inputs[0], "InstanceNormalization")
    rank = ctx.rank(node.inputs[0])
    if rank < 3:
        raise Decline("InstanceNormalization needs a rank of at least 3")
    eps = float(node.attr("epsilon", 1e-5))
    y, _, _ = _standardize(ctx, ctx.x(node.inputs[0]), list(range(2, rank)), eps, dtype)
    scale = ctx.emit(relax.op.reshape(ctx.x(node.inputs[1]), _channel_shape(rank)))
    bias = ctx.emit(relax.op.reshape(ctx.x(node.inputs[2]), _channel_shape(rank)))
    return [ctx.emit(relax.op.add(relax.op.multiply(y, scale), bias))]


@converts("LayerNormalization")
def layer_norm(ctx: Ctx, node: Node) -> Sequence[Any]:
    """ONNX's function body in one converter: statistics in the stash type over
    [axis, rank), Mean and InvStdDev outputs in that type, scale and B broadcast."""
    from tvm import relax

    dtype = _float_input(ctx, node.inputs[0], "LayerNormalization")
    rank = ctx.rank(node.inputs[0])
    axis = ctx.axis(int(node.attr("axis", -1)), rank)
    eps = float(node.attr("epsilon", 1e-5))
    x, stash = _stash(ctx, node, ctx.x(node.inputs[0]), dtype)
    y, mean, inv = _standardize(ctx, x, list(range(axis, rank)), eps, stash)
    if stash != dtype:
        y = ctx.emit(relax.op.astype(y, dtype))
    y = ctx.emit(relax.op.multiply(y, ctx.x(node.inputs[1])))
    if ctx.has(node, 2):
        y = ctx.emit(relax.op.add(y, ctx.x(node.inputs[2])))
    return [y, mean if _used(node, 1) else None, inv if _used(node, 2) else None]


@converts("GroupNormalization")
def group_norm(ctx: Ctx, node: Node) -> Sequence[Any]:
    """Statistics per (instance, group). Opset 18's scale and bias have one entry per
    group, opset 21's one per channel."""
    from tvm import relax

    dtype = _float_input(ctx, node.inputs[0], "GroupNormalization")
    rank = ctx.rank(node.inputs[0])
    if rank < 3:
        raise Decline("GroupNormalization needs a rank of at least 3")
    groups = int(node.attr("num_groups"))
    eps = float(node.attr("epsilon", 1e-5))
    dims = ctx.shape(node.inputs[0])
    x = ctx.x(node.inputs[0])
    if ctx.opset < 21:
        x_g = ctx.emit(relax.op.reshape(x, [dims[0], groups, -1]))
        y, _, _ = _standardize(ctx, x_g, [2], eps, dtype)
        y = ctx.emit(relax.op.multiply(y, relax.op.reshape(ctx.x(node.inputs[1]), [groups, 1])))
        y = ctx.emit(relax.op.add(y, relax.op.reshape(ctx.x(node.inputs[2]), [groups, 1])))
        return [ctx.emit(relax.op.reshape(y, dims))]
    xs, stash = _stash(ctx, node, x, dtype)
    x_g = ctx.emit(relax.op.reshape(xs, [dims[0], groups, -1]))
    y, _, _ = _standardize(ctx, x_g, [2], eps, stash)
    y = ctx.emit(relax.op.reshape(y, dims))
    if stash != dtype:
        y = ctx.emit(relax.op.astype(y, dtype))
    y = ctx.emit(relax.op.multiply(y, relax.op.reshape(ctx.x(node.inputs[1]), _channel_shape(rank))))
    return [ctx.emit(relax.op.add(y, relax.op.reshape(ctx.x(node.inputs[2]), _channel_shape(rank))))]


@converts("RMSNormalization")
def rms_norm(ctx: Ctx, node: Node) -> Sequence[Any]:
    """X / sqrt(mean(X^2 over [axis, rank)) + epsilon) * scale, the statistic in the stash
    type."""
    from tvm import relax

    dtype = _float_input(ctx, node.inputs[0], "RMSNormalization")
    rank = ctx.rank(node.inputs[0])
    axis = ctx.axis(int(node.attr("axis", -1)), rank)
    eps = float(node.attr("epsilon", 1e-5))
    x, stash = _stash(ctx, node, ctx.x(node.inputs[0]), dtype)
    ms = ctx.emit(relax.op.mean(relax.op.multiply(x, x), axis=list(range(axis, rank)), keepdims=True))
    rms = ctx.emit(relax.op.sqrt(relax.op.add(ms, _scalar(eps, stash))))
    y = ctx.emit(relax.op.divide(x, rms))
    if stash != dtype:
        y = ctx.emit(relax.op.astype(y, dtype))
    return [ctx.emit(relax.op.multiply(y, ctx.x(node.inputs[1])))]


@converts("LpNormalization")
def lp_normalization(ctx: Ctx, node: Node) -> Sequence[Any]:
    from tvm import relax

    dtype = _float_input(ctx, node.inputs[0], "LpNormalization")
    rank = ctx.rank(node.inputs[0])
    axis = ctx.axis(int(node.attr("axis", -1)), rank)
    p = int(node.attr("p", 2))
    if p not in (1, 2):
        raise Decline(f"LpNormalization with p={p}")
    x = ctx.x(node.inputs[0])
    norm = ctx.emit(relax.op.sum(_abs_pow(ctx, x, float(p), dtype), axis=[axis], keepdims=True))
    root = _root(ctx, norm, float(p), dtype)
    # a zero vector stays zero (ONNX's reference), not 0/0 = NaN
    zero = ctx.emit(relax.op.equal(root, ctx.scalar(0, dtype)))
    return [ctx.emit(relax.op.where(zero, ctx.scalar(0, dtype), ctx.emit(relax.op.divide(x, root))))]


@converts("MeanVarianceNormalization")
def mvn(ctx: Ctx, node: Node) -> Sequence[Any]:
    """(X - E[X]) / (sqrt(E[X^2] - E[X]^2) + 1e-9), as ONNX's function body has it."""
    from tvm import relax

    dtype = _float_input(ctx, node.inputs[0], "MeanVarianceNormalization")
    rank = ctx.rank(node.inputs[0])
    axes = [ctx.axis(int(a), rank) for a in node.attr("axes", [0, 2, 3])]
    x = ctx.x(node.inputs[0])
    mean = _mean(ctx, x, axes, dtype)
    sq = _mean(ctx, ctx.emit(relax.op.multiply(x, x)), axes, dtype)
    var = ctx.emit(relax.op.subtract(sq, relax.op.multiply(mean, mean)))
    std = ctx.emit(relax.op.add(relax.op.sqrt(var), _scalar(1e-9, dtype)))
    return [ctx.emit(relax.op.divide(relax.op.subtract(x, mean), std))]


def _mean(ctx: Ctx, x: Any, axes: list[int], dtype: str) -> Any:
    """Mean over ``axes`` (kept) as a sum times 1/count where the count is static: TVM
    0.27 fuses relax.op.mean over non-trailing axes into a kernel that reads its divide
    buffer before defining it (InternalError at build)."""
    from tvm import relax

    dims = ctx.shape_of(x)
    count = 1
    for a in axes:
        count = count * dims[a]
    if not isinstance(count, int):
        return ctx.emit(relax.op.mean(x, axis=axes, keepdims=True))
    total = ctx.emit(relax.op.sum(x, axis=axes, keepdims=True))
    return ctx.emit(relax.op.multiply(total, _scalar(1.0 / count, dtype)))


@converts("LRN")
def lrn(ctx: Ctx, node: Node) -> Sequence[Any]:
    """x / (bias + alpha / size * sum of x^2 over the channel window)^beta. The window sum
    is a (size x 1) average pool, padding counted, over x^2 seen as (N, 1, C, rest)."""
    from tvm import relax

    dtype = _float_input(ctx, node.inputs[0], "LRN")
    size = int(node.attr("size"))
    alpha, beta, bias = float(node.attr("alpha", 1e-4)), float(node.attr("beta", 0.75)), float(node.attr("bias", 1.0))
    dims = ctx.shape(node.inputs[0])
    if len(dims) < 2:
        raise Decline("LRN needs a rank of at least 2")
    x = ctx.x(node.inputs[0])
    sq = ctx.emit(relax.op.multiply(x, x))
    sq = ctx.emit(relax.op.reshape(sq, [dims[0], 1, dims[1], -1]))
    lo, hi = (size - 1) // 2, size - 1 - (size - 1) // 2
    avg = ctx.emit(relax.op.nn.avg_pool2d(sq, [size, 1], [1, 1], [lo, 0, hi, 0], count_include_pad=True))
    avg = ctx.emit(relax.op.reshape(avg, dims))
    base = ctx.emit(relax.op.add(_scalar(bias, dtype), relax.op.multiply(avg, _scalar(alpha, dtype))))
    return [ctx.emit(relax.op.divide(x, relax.op.power(base, _scalar(beta, dtype))))]


# -- softmax family ---------------------------------------------------------------------
def _softmax_axis(ctx: Ctx, node: Node) -> tuple[int, bool]:
    """(axis, coerce): before opset 13 the input is seen as 2-d [prod(d[:axis]),
    prod(d[axis:])] (default axis 1); from 13 the op works along one axis (default -1)."""
    rank = ctx.rank(node.inputs[0])
    if ctx.opset < 13:
        return ctx.axis(int(node.attr("axis", 1)), rank), True
    return ctx.axis(int(node.attr("axis", -1)), rank), False


def _along(ctx: Ctx, node: Node, fn: Any, widen: bool = False) -> Any:
    """``fn(x, axis)`` with ONNX's axis semantics for this opset; with ``widen`` a
    half-precision input is computed in float32 and rounded once at the end."""
    from tvm import relax

    x = ctx.x(node.inputs[0])
    dtype = ctx.dtype(node.inputs[0])
    if widen and dtype in ("float16", "bfloat16"):
        wide = _along_in(ctx, node, ctx.emit(relax.op.astype(x, "float32")), fn)
        return ctx.emit(relax.op.astype(wide, dtype))
    return _along_in(ctx, node, x, fn)


def _along_in(ctx: Ctx, node: Node, x: Any, fn: Any) -> Any:
    from tvm import relax

    axis, coerce = _softmax_axis(ctx, node)
    rank = ctx.rank(node.inputs[0])
    if not coerce or axis == rank - 1:
        return fn(x, axis)
    dims = ctx.shape(node.inputs[0])
    head = 1
    for d in dims[:axis]:
        head = head * d
    flat = ctx.emit(relax.op.reshape(x, [head, -1]))
    return ctx.emit(relax.op.reshape(fn(flat, 1), dims))


@converts("Softmax")
def softmax(ctx: Ctx, node: Node) -> Sequence[Any]:
    from tvm import relax

    _float_input(ctx, node.inputs[0], "Softmax")
    return [_along(ctx, node, lambda x, a: ctx.emit(relax.op.nn.softmax(x, a)), widen=True)]


@converts("LogSoftmax")
def log_softmax(ctx: Ctx, node: Node) -> Sequence[Any]:
    from tvm import relax

    _float_input(ctx, node.inputs[0], "LogSoftmax")
    return [_along(ctx, node, lambda x, a: ctx.emit(relax.op.nn.log_softmax(x, a)), widen=True)]


@converts("Hardmax")
def hardmax(ctx: Ctx, node: Node) -> Sequence[Any]:
    """1 where the first maximum along the axis is, else 0 (TE: argmax then compare)."""
    dtype = _float_input(ctx, node.inputs[0], "Hardmax")

    def hard(x: Any, axis: int) -> Any:
        return ctx.emit_te(_hardmax_te, x, axis, dtype)

    return [_along(ctx, node, hard)]


def _hardmax_te(x: Any, axis: int, dtype: str) -> Any:
    from tvm import te, topi

    idx = topi.argmax(x, axis=axis, keepdims=True)

    def body(*i: Any) -> Any:
        j = list(i)
        j[axis] = 0
        return te.if_then_else(idx(*j).astype("int64") == i[axis].astype("int64"), 1.0, 0.0).astype(dtype)

    return te.compute(x.shape, body, name="hardmax")


# -- resizing ---------------------------------------------------------------------------
@converts("Resize", "Upsample")
def resize(ctx: Ctx, node: Node) -> Sequence[Any]:
    """Resize as one 1-d resampling per resized axis: every output position along an axis
    reads a few input positions (taps) with weights that depend only on the static shapes
    and attributes, so taps and weights are worked out here with the spec's formulas
    (coordinate transformation, nearest rounding, linear/cubic kernels, antialias,
    exclude_outside, crop extrapolation) and the graph only gathers and weighs. Nearest
    needs no arithmetic, so it is exact for every dtype."""

    if _resize_runtime_operands(ctx, node):
        return [_resize_runtime(ctx, node)]
    spec = _resize_spec(ctx, node)
    dims = ctx.static_shape(node.inputs[0], "Resize's input")
    dtype = ctx.dtype(node.inputs[0])
    if spec.mode != "nearest" and dtype not in _FLOATS:
        raise Decline(f"{spec.mode} Resize of {dtype}")
    y = ctx.x(node.inputs[0])
    for axis, (scale, out, roi) in spec.axes.items():
        idx, w, extrap = _resize_taps(spec, dims[axis], scale, out, roi)
        y = _resample(ctx, y, axis, len(dims), idx, w, extrap, spec, dtype)
    return [y]


class _ResizeSpec:
    """Resize's attributes and, per axis that changes, (scale, output size, roi)."""

    def __init__(self, mode: str, ctm: str, nearest: str, cubic_a: float, exclude: bool, extrap: float, antialias: bool):
        self.mode, self.ctm, self.nearest = mode, ctm, nearest
        self.cubic_a, self.exclude, self.extrap, self.antialias = cubic_a, exclude, extrap, antialias
        self.axes: dict[int, tuple[float, int, tuple[float, float] | None]] = {}


def _attribute_spec(node: Node, mode: str) -> _ResizeSpec:
    """The resampling attributes of a Resize (opset 10+) node, ONNX's defaults filled in."""
    return _ResizeSpec(
        mode,
        str_attr(node, "coordinate_transformation_mode", "half_pixel"),
        str_attr(node, "nearest_mode", "round_prefer_floor"),
        float(node.attr("cubic_coeff_a", -0.75)),
        bool(node.attr("exclude_outside", 0)),
        float(node.attr("extrapolation_value", 0.0)),
        bool(node.attr("antialias", 0)),
    )


def _resize_spec(ctx: Ctx, node: Node) -> _ResizeSpec:
    """Attributes and constant scales/sizes/roi, by opset: Upsample and Resize-10 take
    scales only and map coordinates asymmetrically with floor rounding."""
    dims = ctx.static_shape(node.inputs[0], "Resize's input")
    rank = len(dims)
    mode = str_attr(node, "mode", "nearest")
    if mode not in ("nearest", "linear", "cubic", "bilinear"):
        raise Decline(f"Resize mode {mode}")
    mode = "linear" if mode == "bilinear" else mode
    legacy = node.op_type == "Upsample" or ctx.opset < 11
    if legacy:
        spec = _ResizeSpec(mode, "asymmetric", "floor", -0.75, False, 0.0, False)
        if node.op_type == "Upsample" and ctx.opset < 9:
            scales = [float(s) for s in node.attr("scales")]
        else:
            scales = [float(s) for s in np.asarray(ctx.need_const(node.inputs[1], "Resize's scales")).reshape(-1)]
        sizes, axes, roi = None, list(range(rank)), None
    else:
        spec = _attribute_spec(node, mode)
        axes = [ctx.axis(int(a), rank) for a in node.attr("axes", list(range(rank)))]
        scales = _optional_floats(ctx, node, 2, "Resize's scales")
        sizes = _optional_floats(ctx, node, 3, "Resize's sizes")
        roi = _optional_floats(ctx, node, 1, "Resize's roi") if spec.ctm == "tf_crop_and_resize" else None
    if spec.antialias and mode == "nearest":
        raise Decline("antialias with nearest Resize")
    if spec.ctm not in ("half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners", "asymmetric", "tf_crop_and_resize"):
        raise Decline(f"coordinate_transformation_mode {spec.ctm}")
    if roi and len(roi) != 2 * len(axes):
        raise Decline("Resize's roi does not match its axes")
    if roi and sizes is None and any(roi[len(axes) + k] - roi[k] != 1.0 for k in range(len(axes))):
        # the spec scales the roi's extent, onnx's reference the whole input: ambiguous
        raise Decline("tf_crop_and_resize with scales and a partial roi")
    policy = str_attr(node, "keep_aspect_ratio_policy", "stretch")
    outs, facs = _resize_sizes(dims, axes, scales, sizes, policy)
    for k, a in enumerate(axes):
        r = (roi[k], roi[len(axes) + k]) if roi else None
        if facs[k] == 1.0 and outs[k] == dims[a] and (r is None or r == (0.0, 1.0)):
            continue
        spec.axes[a] = (facs[k], outs[k], r)
    return spec


def _optional_floats(ctx: Ctx, node: Node, index: int, what: str) -> list[float] | None:
    if not ctx.has(node, index):
        return None
    arr = np.asarray(ctx.need_const(node.inputs[index], what)).reshape(-1)
    return [float(v) for v in arr] if arr.size else None


def _resize_sizes(
    dims: list[int], axes: list[int], scales: list[float] | None, sizes: list[float] | None, policy: str
) -> tuple[list[int], list[float]]:
    """Output size and scale factor per resized axis (sizes win over scales; the aspect
    ratio policy applies to sizes)."""
    ins = [dims[a] for a in axes]
    if sizes is not None:
        if len(sizes) != len(axes):
            raise Decline("Resize's sizes do not match its axes")
        facs = [s / n for s, n in zip(sizes, ins)]
        if policy in ("not_larger", "not_smaller"):
            f = min(facs) if policy == "not_larger" else max(facs)
            return [int(f * n + 0.5) for n in ins], [f] * len(ins)
        if policy != "stretch":
            raise Decline(f"keep_aspect_ratio_policy {policy}")
        return [int(s) for s in sizes], facs
    if scales is None or len(scales) != len(axes):
        raise Decline("Resize needs constant scales or sizes, one per axis")
    return [int(math.floor(s * n)) for s, n in zip(scales, ins)], scales


def _resize_coords(spec: _ResizeSpec, n: int, scale: float, out: int, roi: tuple[float, float] | None) -> tuple[np.ndarray, np.ndarray]:
    """Input coordinate of each output position, and which positions extrapolate.

    The resized length in align_corners, pytorch_half_pixel and tf_crop_and_resize is
    ``scale * n``, fractional where a scale does not divide the length evenly: so onnx's
    reference reads the spec, and the node tests made with it check it (onnxruntime uses
    the rounded output length instead). The run-time path (``_runtime_coord``) agrees."""
    y = np.arange(out, dtype=np.float64)
    width = scale * n
    one = width == 1.0
    ctm = spec.ctm
    outside = np.zeros(out, dtype=bool)
    if ctm == "align_corners":
        x = np.zeros(out) if one else y * (n - 1) / (width - 1)
    elif ctm == "asymmetric":
        x = y / scale
    elif ctm == "pytorch_half_pixel":
        x = np.full(out, -0.5) if one else (y + 0.5) / scale - 0.5
    elif ctm == "half_pixel":
        x = (y + 0.5) / scale - 0.5
    elif ctm == "half_pixel_symmetric":
        offset = n / 2 * (1 - out / width)
        x = offset + (y + 0.5) / scale - 0.5
    else:  # tf_crop_and_resize
        if roi is None:
            raise Decline("tf_crop_and_resize needs a constant roi")
        lo, hi = roi
        x = np.full(out, (hi - lo) * (n - 1) / 2) if one else y * (hi - lo) * (n - 1) / (width - 1)
        x = x + lo * (n - 1)
        outside = (x < 0) | (x > n - 1)
    return x, outside


def _resize_taps(
    spec: _ResizeSpec, n: int, scale: float, out: int, roi: tuple[float, float] | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(indices (out, taps), weights (out, taps), extrapolated rows (out,)) of one axis."""
    x, outside = _resize_coords(spec, n, scale, out, roi)
    base = np.floor(x)
    ratios = np.where(x == base, 1.0, x - base)
    coeffs = np.stack([_resize_coeffs(spec, float(r), scale) for r in ratios]) if out else np.zeros((0, 2))
    taps = coeffs.shape[1]
    pad = (taps + 1) // 2
    xp = x + pad
    p = np.floor(xp)
    frac = xp - p
    if taps % 2 == 0:
        start = p + np.where(frac == 0, -(taps // 2), -(taps // 2) + 1)
    else:
        start = p + np.where(frac <= 0.5, -((taps - 1) // 2), -((taps - 1) // 2) + 1)
    idx = start[:, None].astype(np.int64) + np.arange(taps)[None, :] - pad
    if spec.exclude:
        coeffs = np.where((idx < 0) | (idx >= n), 0.0, coeffs)
        total = coeffs.sum(axis=1, keepdims=True)
        coeffs = coeffs / np.where(total == 0, 1.0, total)
    idx = np.clip(idx, 0, n - 1)
    if spec.mode == "nearest":  # one tap per row: the chosen neighbour
        rows = np.arange(out)
        pick = np.argmax(coeffs, axis=1)
        return idx[rows, pick][:, None], np.ones((out, 1)), outside
    return idx, coeffs, outside


def _resize_coeffs(spec: _ResizeSpec, ratio: float, scale: float) -> np.ndarray:
    """Kernel weights of the taps around a position ``ratio`` past its left neighbour."""
    if spec.mode == "nearest":
        if float(ratio).is_integer():
            return np.array([0.0, 1.0])
        right = {
            "round_prefer_floor": ratio > 0.5,
            "round_prefer_ceil": ratio >= 0.5,
            "floor": False,
            "ceil": True,
        }.get(spec.nearest)
        if right is None:
            raise Decline(f"nearest_mode {spec.nearest}")
        return np.array([0.0, 1.0]) if right else np.array([1.0, 0.0])
    if spec.mode == "linear":
        if not spec.antialias:
            return np.array([1 - ratio, ratio])
        s = min(scale, 1.0)
        start = int(np.floor(-1 / s) + 1)
        args = (np.arange(start, 2 - start) - ratio) * s
        c = np.clip(1 - np.abs(args), 0, 1)
        return c / c.sum()
    a = spec.cubic_a
    if not spec.antialias:
        return np.array([_cubic(a, ratio + 1), _cubic(a, ratio), _cubic(a, 1 - ratio), _cubic(a, 2 - ratio)])
    s = min(scale, 1.0)
    start = int(np.floor(-2 / s) + 1)
    c = np.array([_cubic(a, s * (i - ratio)) for i in range(start, 2 - start)])
    return c / c.sum()


def _cubic(a: float, x: float) -> float:
    """Keys' cubic convolution kernel with parameter ``a``."""
    x = abs(x)
    if x <= 1:
        return (a + 2) * x**3 - (a + 3) * x**2 + 1
    if x < 2:
        return a * x**3 - 5 * a * x**2 + 8 * a * x - 4 * a
    return 0.0


def _resample(
    ctx: Ctx, y: Any, axis: int, rank: int, idx: np.ndarray, w: np.ndarray, extrap: np.ndarray, spec: _ResizeSpec, dtype: str
) -> Any:
    """sum over taps t of take(y, idx[:, t], axis) * w[:, t], the extrapolated positions
    then set to the extrapolation value. Taps with zero weight everywhere are skipped;
    a tap of weight one everywhere (nearest) is a plain gather."""
    from tvm import relax

    shape = [1] * rank
    shape[axis] = idx.shape[0]
    acc = None
    for t in range(idx.shape[1]):
        if not np.any(w[:, t]):
            continue
        g = ctx.emit(relax.op.take(y, ctx.constant(idx[:, t].astype(np.int64), "int64"), axis=axis))
        if not np.all(w[:, t] == 1):
            g = ctx.emit(relax.op.multiply(g, ctx.weight(w[:, t].reshape(shape).astype(numpy_dtype(dtype)))))
        acc = g if acc is None else ctx.emit(relax.op.add(acc, g))
    if acc is None:
        acc = ctx.emit(relax.op.take(y, ctx.constant(idx[:, 0].astype(np.int64), "int64"), axis=axis))
        acc = ctx.emit(relax.op.multiply(acc, _scalar(0, dtype)))
    if np.any(extrap):
        mask = ctx.constant(extrap.reshape(shape), "bool")
        acc = ctx.emit(relax.op.where(mask, _scalar(_extrapolation(spec, dtype), dtype), acc))
    return acc


# -- resizing with run-time scales/sizes/roi ----------------------------------------------
def _resize_legacy(ctx: Ctx, node: Node) -> bool:
    """Upsample and Resize-10: scales in input 1, asymmetric coordinates, floor rounding."""
    return node.op_type == "Upsample" or ctx.opset < 11


def _resize_runtime_operands(ctx: Ctx, node: Node) -> bool:
    """Whether any operand that decides the output shape or coordinates is computed at
    run time (then the constant tap tables cannot be worked out here)."""
    if node.op_type == "Upsample" and ctx.opset < 9:
        return False
    if _resize_legacy(ctx, node):
        indices = [1]
    else:
        indices = [2, 3]
        if str_attr(node, "coordinate_transformation_mode", "half_pixel") == "tf_crop_and_resize":
            indices.append(1)
    return any(ctx.has(node, i) and ctx.const(node.inputs[i]) is None for i in indices)


def _resize_runtime(ctx: Ctx, node: Node) -> Any:
    """Resize whose scales, sizes or roi come at run time: a small kernel computes the
    output dims (bound to fresh symbolic dims), then one kernel per resized axis works out,
    for every output position, the input coordinate from the run-time scale and weighs
    the taps around it (the same formulas as the constant path, in float64 TIR)."""
    from torsh_gen.backends.tvm.ops_tensor import _fresh_dims

    dims = ctx.static_shape(node.inputs[0], "Resize's input")
    rank, dtype = len(dims), ctx.dtype(node.inputs[0])
    spec, axes = _resize_runtime_spec(ctx, node, rank)
    if spec.mode != "nearest" and dtype not in _FLOATS:
        raise Decline(f"{spec.mode} Resize of {dtype}")
    params, use_sizes = _resize_params(ctx, node, len(axes))
    policy = str_attr(node, "keep_aspect_ratio_policy", "stretch") if use_sizes else "stretch"
    if policy not in ("stretch", "not_larger", "not_smaller"):
        raise Decline(f"keep_aspect_ratio_policy {policy}")
    geo = _RuntimeGeometry(dims, axes, use_sizes, policy)
    out_dims = _fresh_dims(ctx, _resize_out_dims(ctx, geo, params), "rsz")
    taps: list[Any] = []
    if spec.antialias:
        taps = _fresh_dims(ctx, _antialias_tap_counts(ctx, geo, spec, params), "aa")
        # kernels reduce over the fresh tap counts: they must not move above their MatchCast;
        # values taken before the fence belong to the block it closed, so params is read again
        ctx.fence()
        params, _ = _resize_params(ctx, node, len(axes))
    if spec.ctm == "tf_crop_and_resize" and not ctx.has(node, 1):
        raise Decline("tf_crop_and_resize needs a roi")
    roi = _f64_vec(ctx, node.inputs[1], 2 * len(axes), "Resize's roi") if spec.ctm == "tf_crop_and_resize" else None
    y = ctx.x(node.inputs[0])
    shape: list[Any] = list(dims)
    for k, a in enumerate(axes):
        shape[a] = out_dims[a]
        if spec.antialias:
            y = _resample_antialias(ctx, y, list(shape), a, k, geo, spec, params, roi, taps[k], dtype)
        else:
            y = _resample_runtime(ctx, y, list(shape), a, k, geo, spec, params, roi, dtype)
    return y


class _RuntimeGeometry:
    """Static input dims, the resized axes and how the run-time parameters read."""

    def __init__(self, dims: list[int], axes: list[int], use_sizes: bool, policy: str):
        self.dims, self.axes, self.use_sizes, self.policy = dims, axes, use_sizes, policy

    def factor(self, p: Any, k: int) -> Any:
        """The scale factor of resized axis number ``k`` (float64 TIR) from the parameter
        tensor ``p`` (sizes or scales, as float64)."""
        from tvm import tirx

        if not self.use_sizes:
            return p[k]
        ratios = [p[j] / float(self.dims[a]) for j, a in enumerate(self.axes)]
        if self.policy == "stretch":
            return ratios[k]
        f = ratios[0]
        for r in ratios[1:]:
            f = tirx.min(f, r) if self.policy == "not_larger" else tirx.max(f, r)
        return f

    def out_dim(self, p: Any, k: int) -> Any:
        """The output size of resized axis ``k`` (int64 TIR)."""
        from tvm import tirx

        n = float(self.dims[self.axes[k]])
        if self.use_sizes and self.policy == "stretch":
            v = p[k]
        elif self.use_sizes:
            v = tirx.floor(self.factor(p, k) * n + 0.5)
        else:
            v = tirx.floor(p[k] * n)
        # clamped before the conversion: a huge or NaN scale must not make a wild size
        return tirx.Cast("int64", tirx.max(tirx.min(v, 2.0**40), 0.0))


def _resize_runtime_spec(ctx: Ctx, node: Node, rank: int) -> tuple[_ResizeSpec, list[int]]:
    """Attributes of a run-time Resize and its axes."""
    mode = str_attr(node, "mode", "nearest")
    if mode not in ("nearest", "linear", "cubic", "bilinear"):
        raise Decline(f"Resize mode {mode}")
    mode = "linear" if mode == "bilinear" else mode
    if _resize_legacy(ctx, node):
        return _ResizeSpec(mode, "asymmetric", "floor", -0.75, False, 0.0, False), list(range(rank))
    spec = _attribute_spec(node, mode)
    if spec.ctm not in ("half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners", "asymmetric", "tf_crop_and_resize"):
        raise Decline(f"coordinate_transformation_mode {spec.ctm}")
    if spec.nearest not in ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil"):
        raise Decline(f"nearest_mode {spec.nearest}")
    axes = [ctx.axis(int(a), rank) for a in node.attr("axes", list(range(rank)))]
    return spec, axes


def _f64_vec(ctx: Ctx, value: Value, length: int, what: str) -> Any:
    """A 1-D operand of static ``length`` as a float64 Relax tensor."""
    from tvm import relax

    x = ctx.x(value)
    if len(ctx.shape_of(x)) != 1 or ctx.shape_of(x)[0] != length:
        raise Decline(f"{what} must be a 1-D tensor of length {length}")
    return ctx.emit(relax.op.astype(x, "float64")) if ctx.dtype(value) != "float64" else x


def _resize_params(ctx: Ctx, node: Node, n_axes: int) -> tuple[Any, bool]:
    """The sizes (when given and not empty) or else the scales, as float64, and which."""
    if _resize_legacy(ctx, node):
        return _f64_vec(ctx, node.inputs[1], n_axes, "Resize's scales"), False
    if ctx.has(node, 3):
        c = ctx.const(node.inputs[3])
        if c is None or np.asarray(c).size:
            return _f64_vec(ctx, node.inputs[3], n_axes, "Resize's sizes"), True
    if not ctx.has(node, 2):
        raise Decline("Resize needs scales or sizes")
    return _f64_vec(ctx, node.inputs[2], n_axes, "Resize's scales"), False


def _resize_out_dims(ctx: Ctx, geo: _RuntimeGeometry, params: Any) -> Any:
    """The output shape as an int64 tensor (one kernel over the parameter tensor)."""
    from tvm import te, tirx

    rank = len(geo.dims)

    def fn(p: Any) -> Any:
        def body(j: Any) -> Any:
            out = tirx.const(0, "int64")
            for d in range(rank - 1, -1, -1):
                v = geo.out_dim(p, geo.axes.index(d)) if d in geo.axes else tirx.const(geo.dims[d], "int64")
                out = tirx.Select(j == d, v, out)
            return out

        return te.compute((rank,), body, name="resize_dims")

    return ctx.emit_te(fn, params)


def _runtime_coord(spec: _ResizeSpec, y: Any, n: int, out: Any, scale: Any, roi: tuple[Any, Any] | None) -> tuple[Any, Any]:
    """(input coordinate, extrapolated?) of output position ``y`` (TIR, float64). As in
    onnx's reference, the resized length in the formulas is ``scale * n`` (a float, not the
    rounded output size) except for half_pixel_symmetric's adjustment."""
    from tvm import tirx

    f64 = "float64"
    yf = tirx.Cast(f64, y)
    of = scale * float(n)
    one = of == 1.0
    ctm = spec.ctm
    outside = tirx.const(False, "bool")
    if ctm == "align_corners":
        x = tirx.Select(one, tirx.const(0.0, f64), yf * float(n - 1) / (of - 1.0))
    elif ctm == "asymmetric":
        x = yf / scale
    elif ctm == "pytorch_half_pixel":
        x = tirx.Select(one, tirx.const(-0.5, f64), (yf + 0.5) / scale - 0.5)
    elif ctm == "half_pixel":
        x = (yf + 0.5) / scale - 0.5
    elif ctm == "half_pixel_symmetric":
        x = float(n) / 2 * (1.0 - tirx.Cast(f64, out) / of) + (yf + 0.5) / scale - 0.5
    else:
        assert roi is not None
        lo, hi = roi
        span = (hi - lo) * float(n - 1)
        x = lo * float(n - 1) + tirx.Select(one, span / 2, yf * span / (of - 1.0))
        outside = tirx.Or(x < 0.0, x > float(n - 1))
    return x, outside


def _runtime_taps(spec: _ResizeSpec, x: Any, n: int) -> list[tuple[Any, Any]]:
    """(integer index, float64 weight) of each tap read at coordinate ``x``: the rounded
    neighbour for nearest, two for linear, four Keys taps for cubic (exclude_outside
    renormalizes over the taps inside the input)."""
    from tvm import tirx

    f64 = "float64"
    # clamped before the float->int conversion so nothing wild reaches an index
    xc = tirx.max(tirx.min(x, float(n + 2)), -3.0)
    base = tirx.floor(xc)
    r = xc - base
    x0 = tirx.Cast("int64", base)
    if spec.mode == "nearest":
        right = {
            "round_prefer_floor": r > 0.5,
            "round_prefer_ceil": r >= 0.5,
            "floor": tirx.const(False, "bool"),
            "ceil": r > 0.0,
        }[spec.nearest]
        return [(x0 + tirx.Select(right, tirx.const(1, "int64"), tirx.const(0, "int64")), tirx.const(1.0, f64))]
    if spec.mode == "linear":
        return [(x0, 1.0 - r), (x0 + 1, r)]
    a = spec.cubic_a
    taps = [(x0 + j, _keys_tir(a, t)) for j, t in ((-1, r + 1.0), (0, r), (1, 1.0 - r), (2, 2.0 - r))]
    if spec.exclude:
        zero = tirx.const(0.0, f64)
        taps = [(i, tirx.Select(tirx.And(i >= 0, i < n), w, zero)) for i, w in taps]
        total = taps[0][1] + taps[1][1] + taps[2][1] + taps[3][1]
        total = tirx.Select(total == 0.0, tirx.const(1.0, f64), total)
        taps = [(i, w / total) for i, w in taps]
    return taps


def _keys_tir(a: float, t: Any) -> Any:
    """Keys' cubic convolution kernel with parameter ``a`` at ``t`` (float64 TIR): ``_cubic``
    for run-time coordinates."""
    from tvm import tirx

    t = tirx.abs(t)
    near = ((a + 2) * t - (a + 3)) * t * t + 1.0
    far = ((a * t - 5 * a) * t + 8 * a) * t - 4 * a
    return tirx.Select(t <= 1.0, near, tirx.Select(t < 2.0, far, tirx.const(0.0, "float64")))


def _extrapolation(spec: _ResizeSpec, dtype: str) -> float | int:
    """tf_crop_and_resize's fill value in the output's type."""
    return spec.extrap if dtype in _FLOATS else int(spec.extrap)


def _antialias_support(spec: _ResizeSpec) -> float:
    """Half-width of the antialias kernel at scale one: linear's tent 1, Keys' cubic 2."""
    return 1.0 if spec.mode == "linear" else 2.0


def _antialias_scale(geo: _RuntimeGeometry, p: Any, k: int) -> Any:
    """The filter's scale along resized axis ``k``: the factor, at most one (antialias only
    widens the kernel when downsampling)."""
    from tvm import tirx

    return tirx.min(geo.factor(p, k), 1.0)


def _antialias_tap_counts(ctx: Ctx, geo: _RuntimeGeometry, spec: _ResizeSpec, params: Any) -> Any:
    """Taps per output position of each resized axis, ``2 * ceil(support / s)`` as in the
    constant path (``_resize_coeffs``: offsets ``start .. 1 - start``), as an int64 tensor.
    The scale is clamped at ``1 / (2 n)``: any smaller one leaves the axis with no output
    position (floor(s * n + 0.5) is 0), so the clamp changes no result and bounds the loop
    a wild scale would otherwise ask for."""
    from tvm import te, tirx

    support = _antialias_support(spec)

    def fn(p: Any) -> Any:
        def body(j: Any) -> Any:
            out = tirx.const(0, "int64")
            for k in range(len(geo.axes) - 1, -1, -1):
                n = float(geo.dims[geo.axes[k]])
                s = tirx.max(_antialias_scale(geo, p, k), 0.5 / n)
                s = tirx.Select(s == s, s, tirx.const(1.0, "float64"))  # NaN: one-to-one taps
                out = tirx.Select(j == k, tirx.Cast("int64", 2.0 * tirx.ceil(support / s)), out)
            return out

        return te.compute((len(geo.axes),), body, name="antialias_taps")

    return ctx.emit_te(fn, params)


def _resample_antialias(
    ctx: Ctx, y: Any, shape: list[Any], axis: int, k: int, geo: _RuntimeGeometry, spec: _ResizeSpec,
    params: Any, roi: Any | None, taps: Any, dtype: str,
) -> Any:
    """Antialiased resampling of ``y`` along ``axis`` with run-time scale: ``taps`` (a fresh
    symbolic dim) kernel taps per output position, the kernel stretched by ``1 / s``. Tap
    ``t`` of the output at coordinate ``x`` reads index ``floor(x) + off + t`` (clamped to the
    edge, or weighed zero with exclude_outside) with weight ``kernel(s * (1 - T/2 + t - r))``,
    ``r`` the fraction of ``x`` (one when ``x`` is whole, ``off`` then ``-T/2``, else
    ``1 - T/2``), normalized over the taps: the constant path's table, worked out per
    position at run time."""
    from tvm import relax, te, tirx

    n = geo.dims[axis]
    n_axes = len(geo.axes)
    f64 = "float64"

    def kernel(d: Any) -> Any:
        if spec.mode == "linear":
            return tirx.max(1.0 - tirx.abs(d), 0.0)
        return _keys_tir(spec.cubic_a, d)

    def tap(p: Any, taps: Any, pos: Any, t: Any, box: Any) -> tuple[Any, Any]:
        """(clamped index, weight) of tap ``t`` of ``taps`` at output position ``pos``."""
        x, _ = _runtime_coord(spec, pos, n, shape[axis], geo.factor(p, k), box)
        s = _antialias_scale(geo, p, k)
        xc = tirx.max(tirx.min(x, float(n + 2)), -3.0)  # nothing wild reaches an index
        base = tirx.floor(xc)
        whole = xc == base
        r = tirx.Select(whole, tirx.const(1.0, f64), xc - base)
        half = tirx.Cast(f64, taps) / 2.0
        w = kernel(s * (1.0 - half + tirx.Cast(f64, t) - r))
        off = tirx.Select(whole, -(taps // 2), 1 - taps // 2)
        idx = tirx.Cast("int64", base) + off + t
        if spec.exclude:
            w = tirx.Select(tirx.And(idx >= 0, idx < n), w, tirx.const(0.0, f64))
        clamped = tirx.max(tirx.min(idx, tirx.const(n - 1, "int64")), tirx.const(0, "int64"))
        return clamped, w

    def boxes(rest: Any) -> Any:
        return (rest[0][k], rest[0][n_axes + k]) if rest else None

    # ``taps`` reaches the kernel as the length of a small operand: TVM 0.27's FuseTIR
    # fails ("VarRemapGet") on a symbolic dim passed as a scalar argument
    def fn(data: Any, p: Any, marker: Any, *rest: Any) -> Any:
        count = marker.shape[0]

        def total_body(pos: Any) -> Any:
            t = te.reduce_axis((0, count), "t")
            return te.sum(tap(p, count, pos, t, boxes(rest))[1], axis=t)

        total = te.compute((shape[axis],), total_body, name="antialias_total")

        def body(*i: Any) -> Any:
            t = te.reduce_axis((0, count), "t")
            j = list(i)
            idx, w = tap(p, count, i[axis], t, boxes(rest))
            j[axis] = idx
            return te.sum(tirx.Cast(f64, data[tuple(j)]) * w, axis=t)

        acc = te.compute(tuple(shape), body, name="antialias_sum")

        def norm(*i: Any) -> Any:
            d = total[i[axis]]
            v = tirx.Cast(dtype, acc[i] / tirx.Select(d == 0.0, tirx.const(1.0, f64), d))
            if spec.ctm == "tf_crop_and_resize":
                _, outside = _runtime_coord(spec, i[axis], n, shape[axis], geo.factor(p, k), boxes(rest))
                v = tirx.Select(outside, tirx.const(_extrapolation(spec, dtype), dtype), v)
            return v

        return te.compute(tuple(shape), norm, name="resize_antialias")

    extra = [roi] if roi is not None else []
    marker = ctx.emit(relax.op.zeros(relax.ShapeExpr([taps]), "int8"))
    return ctx.emit_te(fn, y, params, marker, *extra)


def _resample_runtime(
    ctx: Ctx, y: Any, shape: list[Any], axis: int, k: int, geo: _RuntimeGeometry, spec: _ResizeSpec,
    params: Any, roi: Any | None, dtype: str,
) -> Any:
    """One kernel resampling ``y`` along ``axis`` (resized axis number ``k``) to ``shape``."""
    from tvm import te, tirx

    n = geo.dims[axis]
    n_axes = len(geo.axes)

    def fn(data: Any, p: Any, *rest: Any) -> Any:
        def body(*i: Any) -> Any:
            box = (rest[0][k], rest[0][n_axes + k]) if rest else None
            x, outside = _runtime_coord(spec, i[axis], n, shape[axis], geo.factor(p, k), box)
            acc = None
            for idx, w in _runtime_taps(spec, x, n):
                j = list(i)
                j[axis] = tirx.max(tirx.min(idx, tirx.const(n - 1, "int64")), tirx.const(0, "int64"))
                v = data[tuple(j)]
                if spec.mode == "nearest":
                    acc = v
                    continue
                term = tirx.Cast("float64", v) * w
                acc = term if acc is None else acc + term
            if spec.mode != "nearest":
                acc = tirx.Cast(dtype, acc)
            if spec.ctm == "tf_crop_and_resize":
                acc = tirx.Select(outside, tirx.const(_extrapolation(spec, dtype), dtype), acc)
            return acc

        return te.compute(tuple(shape), body, name="resize_rt")

    args = [y, params] + ([roi] if roi is not None else [])
    return ctx.emit_te(fn, *args)
