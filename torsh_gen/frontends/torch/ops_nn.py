"""Lowerings of ATen neural-network ops: matmul family, convolutions, norms, pooling, resize.

Convolutions keep PyTorch's NCHW layout and weight layout, which are ONNX's as well;
eval-mode batch norm becomes BatchNormalization (the optimizer folds it into the conv).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from torch import fx

from torsh_gen.frontends.torch.context import Lowering, Unsupported
from torsh_gen.frontends.torch.table import lowers
from torsh_gen.ir.graph import Value


def _arg(node: fx.Node, i: int, name: str, default: Any) -> Any:
    if len(node.args) > i:
        return node.args[i]
    return node.kwargs.get(name, default)


def _ntuple(v: Any, n: int) -> list[int]:
    if isinstance(v, list | tuple):
        v = list(v)
        return [int(x) for x in (v * n if len(v) == 1 else v)]
    return [int(v)] * n


# ---------------------------------------------------------------------- matmul family
@lowers("aten.mm.default", "aten.bmm.default", "aten.matmul.default")
def _matmul(ctx: Lowering, node: fx.Node) -> Value:
    return ctx.emit("MatMul", [ctx.value(node.args[0]), ctx.value(node.args[1])])


@lowers("aten.addmm.default")
def _addmm(ctx: Lowering, node: fx.Node) -> Value:
    bias, a, b = node.args[:3]
    beta = node.kwargs.get("beta", 1)
    alpha = node.kwargs.get("alpha", 1)
    return ctx.emit(
        "Gemm", [ctx.value(a), ctx.value(b), ctx.value(bias)], alpha=float(alpha), beta=float(beta)
    )


@lowers("aten.linear.default")
def _linear(ctx: Lowering, node: fx.Node) -> Value:
    x, w = node.args[:2]
    bias = _arg(node, 2, "bias", None)
    wt = ctx.emit("Transpose", [ctx.value(w)], perm=[1, 0])
    y = ctx.emit("MatMul", [ctx.value(x), wt])
    return y if bias is None else ctx.emit("Add", [y, ctx.value(bias)])


@lowers("aten.baddbmm.default")
def _baddbmm(ctx: Lowering, node: fx.Node) -> Value:
    bias, a, b = node.args[:3]
    beta, alpha = node.kwargs.get("beta", 1), node.kwargs.get("alpha", 1)
    y = ctx.emit("MatMul", [ctx.value(a), ctx.value(b)])
    if alpha != 1:
        y = ctx.emit("Mul", [y, ctx.scalar_like(alpha, a)])
    if beta == 0:
        return y
    c = ctx.value(bias)
    if beta != 1:
        c = ctx.emit("Mul", [c, ctx.scalar_like(beta, bias)])
    return ctx.emit("Add", [y, c])


# ---------------------------------------------------------------------- convolution
@lowers("aten.convolution.default", "aten._convolution.default")
def _convolution(ctx: Lowering, node: fx.Node) -> Value:
    x, w, bias, stride, padding, dilation, transposed, output_padding, groups = node.args[:9]
    n = ctx.rank(x) - 2
    pads = _ntuple(padding, n)
    inputs = [ctx.value(x), ctx.value(w)] + ([ctx.value(bias)] if bias is not None else [])
    kernel = ctx.static_shape(w)[2:]
    common = {
        "strides": _ntuple(stride, n),
        "dilations": _ntuple(dilation, n),
        "pads": pads + pads,
        "group": int(groups),
        "kernel_shape": kernel,
    }
    if transposed:
        out_pad = _ntuple(output_padding, n)
        return ctx.emit(
            "ConvTranspose", inputs, output_padding=out_pad if any(out_pad) else None, **common
        )
    return ctx.emit("Conv", inputs, **common)


# ---------------------------------------------------------------------- normalization
def _channel_param(ctx: Lowering, v: Any, x: fx.Node, channels: int, fill: float) -> Value:
    if v is not None:
        return ctx.value(v)
    return ctx.const(
        np.full((channels,), fill, dtype=ctx.dtype(x).numpy), hint="ones" if fill else "zeros"
    )


@lowers(
    "aten._native_batch_norm_legit_no_training.default",
    "aten.native_batch_norm.default",
    "aten._native_batch_norm_legit.default",
)
def _batch_norm(ctx: Lowering, node: fx.Node) -> list[Value]:
    target = str(node.target)
    x, w, b, mean, var = node.args[:5]
    if "no_training" in target:
        eps = node.args[6]
    else:
        if node.args[5]:
            raise Unsupported("batch norm in training mode; call model.eval() before exporting")
        eps = node.args[7]
    channels = ctx.static_shape(x)[1]
    if mean is None or var is None:
        raise Unsupported("batch norm without running statistics (track_running_stats=False)")
    y = ctx.emit(
        "BatchNormalization",
        [
            ctx.value(x),
            _channel_param(ctx, w, x, channels, 1.0),
            _channel_param(ctx, b, x, channels, 0.0),
            ctx.value(mean),
            ctx.value(var),
        ],
        epsilon=float(eps),
    )
    return [y, None, None]


@lowers("aten._native_batch_norm_legit_functional.default", "aten._batch_norm_with_update.default")
def _batch_norm_training(ctx: Lowering, node: fx.Node) -> None:
    raise Unsupported("batch norm in training mode; call model.eval() before exporting")


@lowers("aten.native_layer_norm.default")
def _layer_norm(ctx: Lowering, node: fx.Node) -> list[Value]:
    x, shape, w, b, eps = node.args[:5]
    dt = ctx.dtype(x).numpy
    scale = ctx.value(w) if w is not None else ctx.const(np.ones(shape, dtype=dt), hint="ones")
    bias = ctx.value(b) if b is not None else ctx.const(np.zeros(shape, dtype=dt), hint="zeros")
    y = ctx.emit(
        "LayerNormalization", [ctx.value(x), scale, bias], axis=-len(shape), epsilon=float(eps)
    )
    return [y, None, None]


@lowers("aten.native_group_norm.default")
def _group_norm(ctx: Lowering, node: fx.Node) -> list[Value]:
    x, w, b, _n, channels, _hw, groups, eps = node.args[:8]
    y = ctx.emit(
        "GroupNormalization",
        [
            ctx.value(x),
            _channel_param(ctx, w, x, int(channels), 1.0),
            _channel_param(ctx, b, x, int(channels), 0.0),
        ],
        num_groups=int(groups),
        epsilon=float(eps),
    )
    return [y, None, None]


# ---------------------------------------------------------------------- pooling
def _pool_args(node: fx.Node, n: int, has_dilation: bool) -> dict[str, Any]:
    kernel = _ntuple(node.args[1], n)
    stride = _arg(node, 2, "stride", [])
    stride = _ntuple(stride, n) if stride not in ([], None, ()) else kernel
    pads = _ntuple(_arg(node, 3, "padding", 0), n)
    out = {"kernel_shape": kernel, "strides": stride, "pads": pads + pads}
    if has_dilation:
        out["dilations"] = _ntuple(_arg(node, 4, "dilation", 1), n)
        out["ceil_mode"] = int(bool(_arg(node, 5, "ceil_mode", False)))
    else:
        out["ceil_mode"] = int(bool(_arg(node, 4, "ceil_mode", False)))
    return out


@lowers(
    "aten.max_pool2d_with_indices.default",
    "aten.max_pool3d_with_indices.default",
    "aten.max_pool1d_with_indices.default",
    "aten.max_pool2d.default",
    "aten.max_pool1d.default",
)
def _max_pool(ctx: Lowering, node: fx.Node) -> Any:
    x = node.args[0]
    y = ctx.emit("MaxPool", [ctx.value(x)], **_pool_args(node, ctx.rank(x) - 2, True))
    return [y, _no_indices(ctx, node)] if "with_indices" in str(node.target) else y


def _no_indices(ctx: Lowering, node: fx.Node) -> None:
    for user in node.users:
        if user.args[1:2] == (1,):
            raise Unsupported("max pooling indices (return_indices=True)")


@lowers("aten.avg_pool2d.default", "aten.avg_pool1d.default", "aten.avg_pool3d.default")
def _avg_pool(ctx: Lowering, node: fx.Node) -> Value:
    x = node.args[0]
    n = ctx.rank(x) - 2
    attrs = _pool_args(node, n, False)
    attrs["count_include_pad"] = int(bool(_arg(node, 5, "count_include_pad", True)))
    if _arg(node, 6, "divisor_override", None) is not None:
        raise Unsupported("avg_pool with divisor_override")
    return ctx.emit("AveragePool", [ctx.value(x)], **attrs)


@lowers(
    "aten._adaptive_avg_pool2d.default",
    "aten.adaptive_avg_pool2d.default",
    "aten._adaptive_avg_pool1d.default",
    "aten.adaptive_avg_pool1d.default",
    "aten._adaptive_avg_pool3d.default",
    "aten.adaptive_max_pool2d.default",
)
def _adaptive_pool(ctx: Lowering, node: fx.Node) -> Any:
    x, out_size = node.args[:2]
    is_max = "max" in str(node.target)
    n = ctx.rank(x) - 2
    out_size = _ntuple(out_size, n)
    spatial = ctx.static_shape(x)[2:]
    if all(o == 1 for o in out_size):
        y = ctx.emit("GlobalMaxPool" if is_max else "GlobalAveragePool", [ctx.value(x)])
    elif all(s is not None and s % o == 0 for s, o in zip(spatial, out_size)):
        kernel = [s // o for s, o in zip(spatial, out_size)]
        y = ctx.emit(
            "MaxPool" if is_max else "AveragePool",
            [ctx.value(x)],
            kernel_shape=kernel,
            strides=kernel,
        )
    else:
        raise Unsupported(
            f"adaptive pooling from {spatial} to {out_size} (sizes must divide evenly)"
        )
    if is_max:
        _no_indices(ctx, node)
        return [y, None]
    return y


# ---------------------------------------------------------------------- resize
@lowers(
    "aten.upsample_nearest2d.vec",
    "aten.upsample_nearest1d.vec",
    "aten.upsample_nearest3d.vec",
    "aten.upsample_bilinear2d.vec",
    "aten.upsample_linear1d.vec",
    "aten.upsample_nearest2d.default",
    "aten.upsample_bilinear2d.default",
    "aten._upsample_nearest_exact2d.vec",
)
def _upsample(ctx: Lowering, node: fx.Node) -> Value:
    target = str(node.target)
    x = node.args[0]
    n = ctx.rank(x) - 2
    linear = "linear" in target
    align = bool(node.args[2]) if linear and len(node.args) > 2 else False
    if target.endswith(".vec"):
        out_size = node.args[1]
        scales = node.args[3] if linear else (node.args[2] if len(node.args) > 2 else None)
    else:
        out_size = node.args[1]
        scales = [s for s in node.args[3 if linear else 2 :] if s is not None] or None
    attrs: dict[str, Any] = {}
    if linear:
        attrs["mode"] = "linear"
        attrs["coordinate_transformation_mode"] = "align_corners" if align else "pytorch_half_pixel"
    else:
        attrs["mode"] = "nearest"
        exact = "exact" in target
        attrs["coordinate_transformation_mode"] = "half_pixel" if exact else "asymmetric"
        attrs["nearest_mode"] = "round_prefer_ceil" if exact else "floor"
    if scales and not align:
        sc = ctx.const(np.array([1.0, 1.0, *_ntuple_f(scales, n)], dtype=np.float32), hint="scales")
        return ctx.emit("Resize", [ctx.value(x), None, sc], **attrs)
    if out_size is None:
        out_size = [d for d in ctx.static_shape(node)[2:]]
        if any(d is None for d in out_size):
            raise Unsupported("align_corners resize to a symbolic size")
    shape = ctx.emit("Shape", [ctx.value(x)], start=0, end=2)
    sizes = ctx.emit("Concat", [shape, ctx.ints(list(out_size))], axis=0)
    return ctx.emit("Resize", [ctx.value(x), None, None, sizes], **attrs)


def _ntuple_f(v: Any, n: int) -> list[float]:
    v = list(v) if isinstance(v, list | tuple) else [v]
    return [float(s) for s in (v * n if len(v) == 1 else v)]


# ---------------------------------------------------------------------- embedding
@lowers("aten.embedding.default")
def _embedding(ctx: Lowering, node: fx.Node) -> Value:
    weight, indices = node.args[:2]
    return ctx.emit("Gather", [ctx.value(weight), ctx.value(indices)], axis=0)
