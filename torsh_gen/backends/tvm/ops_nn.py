"""Neural-network ops → Relax: convolutions, matrix products, pooling, normalization."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torsh_gen.backends.tvm.convert import Ctx, Decline, converts
from torsh_gen.ir.graph import Node


@converts("MatMul")
def matmul(ctx: Ctx, node: Node) -> Sequence[Any]:
    from tvm import relax

    return [ctx.emit(relax.op.matmul(ctx.x(node.inputs[0]), ctx.x(node.inputs[1])))]


@converts("Gemm")
def gemm(ctx: Ctx, node: Node) -> Sequence[Any]:
    """alpha * A' B' + beta * C. A constant transposed B is transposed here, once, so the
    library does not transpose the weights on every call."""
    from tvm import relax

    a, b = ctx.x(node.inputs[0]), node.inputs[1]
    if node.attr("transA", 0):
        a = ctx.emit(relax.op.permute_dims(a))
    wb = ctx.const(b)
    if node.attr("transB", 0):
        bx = ctx.weight(wb.T) if wb is not None else ctx.emit(relax.op.permute_dims(ctx.x(b)))
    else:
        bx = ctx.x(b)
    y = ctx.emit(relax.op.matmul(a, bx))
    alpha, beta = float(node.attr("alpha", 1.0)), float(node.attr("beta", 1.0))
    dtype = ctx.dtype(node.outputs[0])
    if alpha != 1.0:
        y = ctx.emit(relax.op.multiply(y, relax.const(alpha, dtype)))
    if ctx.has(node, 2) and beta != 0.0:
        c = ctx.x(node.inputs[2])
        if beta != 1.0:
            c = ctx.emit(relax.op.multiply(c, relax.const(beta, dtype)))
        y = ctx.emit(relax.op.add(y, c))
    return [y]


@converts("Conv")
def conv(ctx: Ctx, node: Node) -> Sequence[Any]:
    from tvm import relax

    x, w = ctx.x(node.inputs[0]), ctx.x(node.inputs[1])
    rank = ctx.rank(node.inputs[0])
    spatial = rank - 2
    if spatial not in (1, 2, 3):
        raise Decline(f"{spatial}-d convolution is not supported")
    kernel = ctx.static_shape(node.inputs[1], "the convolution weight")[2:]
    strides = list(node.attr("strides", [1] * spatial))
    dilations = list(node.attr("dilations", [1] * spatial))
    pads = _conv_pads(ctx, node, kernel, strides, dilations)
    fn = {1: relax.op.nn.conv1d, 2: relax.op.nn.conv2d, 3: relax.op.nn.conv3d}[spatial]
    y = ctx.emit(fn(x, w, strides=strides, padding=pads, dilation=dilations, groups=int(node.attr("group", 1))))
    if ctx.has(node, 2):
        bias = ctx.emit(relax.op.reshape(ctx.x(node.inputs[2]), [-1] + [1] * spatial))
        y = ctx.emit(relax.op.add(y, bias))
    return [y]


def _conv_pads(ctx: Ctx, node: Node, kernel: list[int], strides: list[int], dilations: list[int]) -> list[int]:
    """ONNX pads (explicit, or from auto_pad SAME_UPPER/SAME_LOWER) as Relax's
    [begin..., end...] list; SAME padding needs a static input size."""
    spatial = len(kernel)
    auto = node.attr("auto_pad", "NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    if auto in ("NOTSET", ""):
        return list(node.attr("pads", [0] * (2 * spatial)))
    if auto == "VALID":
        return [0] * (2 * spatial)
    size = ctx.static_shape(node.inputs[0], "SAME padding's input")[2:]
    begin, end = [], []
    for n, k, s, d in zip(size, kernel, strides, dilations):
        out = -(-n // s)
        total = max(0, (out - 1) * s + (k - 1) * d + 1 - n)
        small, large = total // 2, total - total // 2
        begin.append(small if auto == "SAME_UPPER" else large)
        end.append(large if auto == "SAME_UPPER" else small)
    return begin + end


@converts("MaxPool", "AveragePool")
def pool(ctx: Ctx, node: Node) -> Sequence[Any]:
    from tvm import relax

    if len(node.outputs) > 1 and node.outputs[1] is not None and node.op_type == "MaxPool":
        raise Decline("MaxPool's Indices output is not supported")
    spatial = ctx.rank(node.inputs[0]) - 2
    if spatial not in (1, 2, 3):
        raise Decline(f"{spatial}-d pooling is not supported")
    kernel = list(node.attr("kernel_shape"))
    strides = list(node.attr("strides", [1] * spatial))
    dilations = list(node.attr("dilations", [1] * spatial))
    pads = _conv_pads(ctx, node, kernel, strides, dilations)
    ceil = bool(node.attr("ceil_mode", 0))
    x = ctx.x(node.inputs[0])
    if node.op_type == "MaxPool":
        fn = {1: relax.op.nn.max_pool1d, 2: relax.op.nn.max_pool2d, 3: relax.op.nn.max_pool3d}[spatial]
        return [ctx.emit(fn(x, kernel, strides, pads, dilations, ceil_mode=ceil))]
    fn = {1: relax.op.nn.avg_pool1d, 2: relax.op.nn.avg_pool2d, 3: relax.op.nn.avg_pool3d}[spatial]
    include = bool(node.attr("count_include_pad", 0))
    return [ctx.emit(fn(x, kernel, strides, pads, dilations, ceil_mode=ceil, count_include_pad=include))]
