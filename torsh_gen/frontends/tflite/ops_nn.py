"""Convolutions, pooling, fully-connected layers and batched matmul.

Conv-like ops read and write NCHW (the context transposes only at layout changes).
TFLite's filters are OHWI (conv) and 1HW(C·M) (depthwise); they are rearranged to ONNX's
OIHW here, on the stored data when constant (per-channel quantization axes follow), else
by a Transpose that constant folding removes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from torsh_gen.frontends.tflite.context import NCHW, Context
from torsh_gen.frontends.tflite.ops_shape import exact_move
from torsh_gen.frontends.tflite.reader import Model, Operator, Tensor
from torsh_gen.frontends.tflite.registry import (
    activate,
    activation_name,
    check_activation,
    converter,
    spatial_pads,
)
from torsh_gen.ir.graph import Value
from torsh_gen.ir.types import DType


def weight(ctx: Context, t: Tensor, perm: Sequence[int], tag: str) -> Value:
    """Float weights rearranged by ``perm``: on the data when constant, else by a Transpose."""
    perm = list(perm)
    hint = f"{t.name}.{tag}"
    if not t.is_const:
        return ctx.node1("Transpose", [ctx.real(t.index)], hint, perm=perm)
    v = ctx.const(hint, t.data.transpose(perm))
    if t.quantized:
        return ctx.dequantize(v, t.quant, t.dtype, f"{hint}.real", perm.index(t.quant.axis), t.rank)
    if t.dtype != DType.FLOAT:
        return ctx.node1("Cast", [v], f"{hint}.f32", to=int(DType.FLOAT))
    return v


def _bias(ctx: Context) -> Value | None:
    b = ctx.input(2)
    return None if b is None else ctx.real(b.index)


def _check_conv(op: Operator, model: Model) -> str | None:
    x = model.tensors[op.inputs[0]]
    if x.rank != 4:
        return f"{op.opcode} of a rank-{x.rank} input"
    return check_activation(op, model)


def _spatial(op: Operator) -> tuple[tuple[int, int], tuple[int, int]]:
    o = op.options
    strides = (int(getattr(o, "strideH", 1) or 1), int(getattr(o, "strideW", 1) or 1))
    dilations = (
        int(getattr(o, "dilationHFactor", 1) or 1),
        int(getattr(o, "dilationWFactor", 1) or 1),
    )
    return strides, dilations


@converter("CONV_2D", arity=2, check=_check_conv)
def conv_2d(ctx: Context, op: Operator) -> None:
    """CONV_2D → Conv (grouped when the filter has fewer input channels than the image)."""
    x, w, out = ctx.input(0), ctx.input(1), ctx.output()
    strides, dilations = _spatial(op)
    k = (w.shape[1], w.shape[2])
    group = x.shape[3] // w.shape[3] if w.shape[3] else 1
    pads = spatial_pads(ctx, op, (x.signature[1], x.signature[2]), k, strides, dilations)
    inputs = [ctx.real(x.index, NCHW), weight(ctx, w, [0, 3, 1, 2], "oihw"), _bias(ctx)]
    y = ctx.node1(
        "Conv",
        inputs if inputs[2] is not None else inputs[:2],
        f"{out.name}/conv",
        dilations=list(dilations),
        group=group,
        kernel_shape=list(k),
        pads=pads,
        strides=list(strides),
    )
    ctx.put_real(out.index, activate(ctx, y, op, out.name), NCHW)


@converter("DEPTHWISE_CONV_2D", arity=2, check=_check_conv)
def depthwise_conv_2d(ctx: Context, op: Operator) -> None:
    """DEPTHWISE_CONV_2D → Conv with one group per input channel."""
    x, w, out = ctx.input(0), ctx.input(1), ctx.output()
    strides, dilations = _spatial(op)
    k = (w.shape[1], w.shape[2])
    pads = spatial_pads(ctx, op, (x.signature[1], x.signature[2]), k, strides, dilations)
    inputs = [ctx.real(x.index, NCHW), weight(ctx, w, [3, 0, 1, 2], "m1hw"), _bias(ctx)]
    y = ctx.node1(
        "Conv",
        inputs if inputs[2] is not None else inputs[:2],
        f"{out.name}/dwconv",
        dilations=list(dilations),
        group=x.shape[3],
        kernel_shape=list(k),
        pads=pads,
        strides=list(strides),
    )
    ctx.put_real(out.index, activate(ctx, y, op, out.name), NCHW)


def _pool_attrs(ctx: Context, op: Operator, x: Tensor) -> dict:
    o = op.options
    k = (int(o.filterHeight), int(o.filterWidth))
    strides = (int(o.strideH or 1), int(o.strideW or 1))
    pads = spatial_pads(ctx, op, (x.signature[1], x.signature[2]), k, strides, (1, 1))
    return {"kernel_shape": list(k), "strides": list(strides), "pads": pads}


@converter("MAX_POOL_2D", check=_check_conv)
def max_pool_2d(ctx: Context, op: Operator) -> None:
    """MAX_POOL_2D → MaxPool; on the stored integers when the quantization is unchanged."""
    x, out = ctx.input(0), ctx.output()
    attrs = _pool_attrs(ctx, op, x)
    exact = x.quantized and out.quantized and x.dtype == out.dtype and x.quant.same_as(out.quant)
    if exact and activation_name(op) == "NONE":
        ctx.define(
            out.index,
            ctx.node1("MaxPool", [ctx.value(x.index, NCHW)], f"{out.name}.nchw", **attrs),
            NCHW,
        )
        return
    y = ctx.node1("MaxPool", [ctx.real(x.index, NCHW)], f"{out.name}/maxpool", **attrs)
    ctx.put_real(out.index, activate(ctx, y, op, out.name), NCHW)


@converter("AVERAGE_POOL_2D", check=_check_conv)
def average_pool_2d(ctx: Context, op: Operator) -> None:
    """AVERAGE_POOL_2D → AveragePool; SAME padding averages over the valid pixels only.

    TFLite's quantized kernel averages the stored integers (input and output share scale
    and zero point) and rounds half away from zero, where QuantizeLinear would round half
    to even; so quantized pools average the integers and round the same way: exact.
    """
    x, out = ctx.input(0), ctx.output()
    attrs = _pool_attrs(ctx, op, x)
    if x.quantized and activation_name(op) == "NONE" and exact_move(x, out):
        xf = ctx.node1(
            "Cast", [ctx.value(x.index, NCHW)], f"{out.name}/as_float", to=int(DType.FLOAT)
        )
        a = ctx.node1("AveragePool", [xf], f"{out.name}/avgpool", count_include_pad=0, **attrs)
        half = ctx.const(f"{out.name}/half", np.float32(0.5))
        mag = ctx.node1(
            "Floor",
            [
                ctx.node1(
                    "Add", [ctx.node1("Abs", [a], f"{out.name}/abs"), half], f"{out.name}/add_half"
                )
            ],
            f"{out.name}/floor",
        )
        r = ctx.node1("Mul", [ctx.node1("Sign", [a], f"{out.name}/sign"), mag], f"{out.name}/round")
        ctx.define(out.index, ctx.node1("Cast", [r], f"{out.name}.nchw", to=int(out.dtype)), NCHW)
        return
    y = ctx.node1(
        "AveragePool",
        [ctx.real(x.index, NCHW)],
        f"{out.name}/avgpool",
        count_include_pad=0,
        **attrs,
    )
    ctx.put_real(out.index, activate(ctx, y, op, out.name), NCHW)


def _check_fc(op: Operator, model: Model) -> str | None:
    fmt = int(getattr(op.options, "weightsFormat", 0) or 0)
    if fmt != 0:
        return "FULLY_CONNECTED with shuffled weights"
    return check_activation(op, model)


@converter("FULLY_CONNECTED", arity=2, check=_check_fc)
def fully_connected(ctx: Context, op: Operator) -> None:
    """FULLY_CONNECTED → MatMul with the transposed weights (+ Add of the bias)."""
    x, w, out = ctx.input(0), ctx.input(1), ctx.output()
    xv = ctx.real(x.index)
    keep = bool(getattr(op.options, "keepNumDims", False))
    if x.rank != 2 and not keep:
        xv = ctx.node1(
            "Reshape",
            [xv, ctx.ints(f"{out.name}/flat_shape", [-1, w.shape[1]])],
            f"{out.name}/flatten",
        )
    y = ctx.node1("MatMul", [xv, weight(ctx, w, [1, 0], "t")], f"{out.name}/matmul")
    b = _bias(ctx)
    if b is not None:
        y = ctx.node1("Add", [y, b], f"{out.name}/bias")
    ctx.put_real(out.index, activate(ctx, y, op, out.name))


@converter("BATCH_MATMUL", arity=2)
def batch_matmul(ctx: Context, op: Operator) -> None:
    """BATCH_MATMUL → MatMul, transposing the last two axes of an adjoint operand."""
    a, b, out = ctx.input(0), ctx.input(1), ctx.output()
    operands = []
    for t, adj in (
        (a, getattr(op.options, "adjX", False)),
        (b, getattr(op.options, "adjY", False)),
    ):
        v = ctx.real(t.index)
        if adj:
            perm = list(range(t.rank - 2)) + [t.rank - 1, t.rank - 2]
            v = ctx.node1("Transpose", [v], f"{t.name}.adjoint", perm=perm)
        operands.append(v)
    ctx.put_real(out.index, ctx.node1("MatMul", operands, f"{out.name}/matmul"))
