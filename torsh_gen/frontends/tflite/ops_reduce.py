"""Reductions, softmax and resizing: ops that name axes, mapped to NCHW when they run there."""

from __future__ import annotations

import numpy as np

from torsh_gen.frontends.tflite.context import NATIVE, NCHW, TO_NCHW, Context, unary_layout
from torsh_gen.frontends.tflite.reader import Model, Operator
from torsh_gen.frontends.tflite.registry import converter

_REDUCE = {
    "MEAN": "ReduceMean",
    "SUM": "ReduceSum",
    "REDUCE_MAX": "ReduceMax",
    "REDUCE_MIN": "ReduceMin",
    "REDUCE_PROD": "ReduceProd",
}


def _check_axes(op: Operator, model: Model) -> str | None:
    if not model.tensors[op.inputs[1]].is_const:
        return f"{op.opcode} over computed axes"
    return None


@converter(*_REDUCE, arity=2, check=_check_axes)
def reduce(ctx: Context, op: Operator) -> None:
    """MEAN, SUM, REDUCE_MAX/MIN/PROD → the ONNX Reduce op with axes as an input."""
    x, out = ctx.input(0), ctx.output()
    axes = sorted({int(a) % x.rank for a in ctx.input(1).data.reshape(-1)})
    keep = bool(getattr(op.options, "keepDims", False))
    layout = unary_layout(ctx, x)
    if layout == NCHW and not keep:
        kept_native = [a for a in range(4) if a not in axes]
        kept_nchw = [a for a in TO_NCHW if a not in axes]
        if kept_native != kept_nchw:
            layout = NATIVE
    ax = axes if layout == NATIVE else [TO_NCHW.index(a) for a in axes]
    y = ctx.node1(
        _REDUCE[op.opcode],
        [ctx.real(x.index, layout), ctx.ints(f"{out.name}/axes", sorted(ax))],
        f"{out.name}/{op.opcode.lower()}",
        keepdims=int(keep),
    )
    ctx.put_real(out.index, y, layout if keep else NATIVE)


@converter("SOFTMAX", "LOG_SOFTMAX")
def softmax(ctx: Context, op: Operator) -> None:
    """SOFTMAX (with ``beta``) → Mul by beta when not 1, Softmax over the last axis."""
    x, out = ctx.input(0), ctx.output()
    layout = unary_layout(ctx, x)
    v = ctx.real(x.index, layout)
    beta = float(getattr(op.options, "beta", 1.0)) if op.opcode == "SOFTMAX" else 1.0
    if beta != 1.0:
        v = ctx.node1(
            "Mul", [v, ctx.const(f"{out.name}/beta", np.float32(beta))], f"{out.name}/scale"
        )
    onnx_op = "Softmax" if op.opcode == "SOFTMAX" else "LogSoftmax"
    axis = -1 if layout == NATIVE else 1
    ctx.put_real(
        out.index, ctx.node1(onnx_op, [v], f"{out.name}/{onnx_op.lower()}", axis=axis), layout
    )


def _check_resize(op: Operator, model: Model) -> str | None:
    if model.tensors[op.inputs[0]].rank != 4:
        return f"{op.opcode} of a tensor that is not rank 4"
    if not model.tensors[op.inputs[1]].is_const:
        return f"{op.opcode} to a computed size"
    return None


@converter("RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR", arity=2, check=_check_resize)
def resize(ctx: Context, op: Operator) -> None:
    """RESIZE_BILINEAR/NEAREST_NEIGHBOR → Resize of the two spatial axes to the given size.

    TensorFlow's coordinate rules map onto ONNX's: align_corners → ``align_corners``;
    half-pixel centers → ``half_pixel`` (for nearest, rounding up at .5 equals TF's
    floor of the unshifted coordinate); neither → ``asymmetric`` with floor.
    """
    x, out = ctx.input(0), ctx.output()
    size = [int(d) for d in ctx.input(1).data.reshape(-1)]
    align = bool(getattr(op.options, "alignCorners", False))
    half = bool(getattr(op.options, "halfPixelCenters", False))
    mode = "align_corners" if align else "half_pixel" if half else "asymmetric"
    layout = unary_layout(ctx, x)
    axes = [1, 2] if layout == NATIVE else [2, 3]
    attrs = {"coordinate_transformation_mode": mode, "axes": axes}
    if op.opcode == "RESIZE_BILINEAR":
        attrs["mode"] = "linear"
    else:
        attrs["mode"] = "nearest"
        attrs["nearest_mode"] = "round_prefer_ceil" if align or half else "floor"
    sizes = ctx.ints(f"{out.name}/sizes", size)
    y = ctx.node1(
        "Resize", [ctx.real(x.index, layout), None, None, sizes], f"{out.name}/resize", **attrs
    )
    ctx.put_real(out.index, y, layout)
