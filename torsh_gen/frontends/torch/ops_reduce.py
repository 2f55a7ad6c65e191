"""Lowerings of ATen reductions, scans and the ops that create tensors (arange, full, ...).

Reductions take their axes as an input (opset 18 form). Boolean any/all reduce an int32
view of the mask, since ReduceMax/ReduceMin do not take bool in every runtime.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from torch import fx

from torsh_gen.frontends.torch.context import Lowering, Unsupported
from torsh_gen.frontends.torch.ops_elementwise import operand
from torsh_gen.frontends.torch.table import lowers
from torsh_gen.ir.graph import Value
from torsh_gen.ir.types import DType

_REDUCE = {
    "sum": "ReduceSum",
    "mean": "ReduceMean",
    "amax": "ReduceMax",
    "amin": "ReduceMin",
    "prod": "ReduceProd",
}


def _axes(ctx: Lowering, x: fx.Node, dims: Any) -> list[int]:
    rank = ctx.rank(x)
    if dims is None or dims == []:
        return list(range(rank))
    dims = dims if isinstance(dims, list | tuple) else [dims]
    return [int(d) + rank if int(d) < 0 else int(d) for d in dims]


@lowers(
    "aten.sum.dim_IntList",
    "aten.sum.default",
    "aten.mean.dim",
    "aten.mean.default",
    "aten.amax.default",
    "aten.amin.default",
    "aten.prod.dim_int",
    "aten.prod.default",
    "aten.max.default",
    "aten.min.default",
)
def _reduce(ctx: Lowering, node: fx.Node) -> Value:
    target = str(node.target)
    kind = target.split(".")[1]
    x = node.args[0]
    if kind in ("max", "min"):
        kind = "a" + kind
    full = target.endswith(".default") and kind not in ("amax", "amin")
    dims = None if full else (node.args[1] if len(node.args) > 1 else node.kwargs.get("dim"))
    keep = bool(
        False
        if full
        else (node.args[2] if len(node.args) > 2 else node.kwargs.get("keepdim", False))
    )
    out = ctx.dtype(node)
    v = operand(ctx, x, out)
    axes = _axes(ctx, x, dims)
    if not axes:
        return v
    return ctx.emit(_REDUCE[kind], [v, ctx.ints(axes)], keepdims=int(keep))


@lowers("aten.max.dim", "aten.min.dim")
def _max_dim(ctx: Lowering, node: fx.Node) -> list[Value]:
    x, dim = node.args[:2]
    keep = bool(node.args[2] if len(node.args) > 2 else False)
    is_max = ".max." in str(node.target)
    axis = _axes(ctx, x, dim)
    values = ctx.emit(
        "ReduceMax" if is_max else "ReduceMin", [ctx.value(x), ctx.ints(axis)], keepdims=int(keep)
    )
    index = ctx.emit(
        "ArgMax" if is_max else "ArgMin", [ctx.value(x)], axis=axis[0], keepdims=int(keep)
    )
    return [values, index]


@lowers("aten.argmax.default", "aten.argmin.default")
def _argmax(ctx: Lowering, node: fx.Node) -> Value:
    x = node.args[0]
    dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
    keep = bool(node.args[2] if len(node.args) > 2 else node.kwargs.get("keepdim", False))
    op_type = "ArgMax" if "argmax" in str(node.target) else "ArgMin"
    v = ctx.value(x)
    if dim is None:
        v = ctx.emit("Reshape", [v, ctx.ints([-1])])
        return ctx.emit(op_type, [v], axis=0, keepdims=0)
    return ctx.emit(op_type, [v], axis=_axes(ctx, x, dim)[0], keepdims=int(keep))


@lowers(
    "aten.any.dim",
    "aten.any.dims",
    "aten.any.default",
    "aten.all.dim",
    "aten.all.dims",
    "aten.all.default",
)
def _any_all(ctx: Lowering, node: fx.Node) -> Value:
    target = str(node.target)
    x = node.args[0]
    full = target.endswith(".default")
    dims = None if full else node.args[1]
    keep = bool(False if full else (node.args[2] if len(node.args) > 2 else False))
    as_int = operand(ctx, x, DType.INT32)
    op_type = "ReduceMax" if ".any." in target else "ReduceMin"
    red = ctx.emit(op_type, [as_int, ctx.ints(_axes(ctx, x, dims))], keepdims=int(keep))
    return ctx.cast(red, DType.BOOL)


@lowers("aten.var.correction", "aten.var.dim", "aten.std.correction", "aten.std.dim")
def _var(ctx: Lowering, node: fx.Node) -> Value:
    target = str(node.target)
    x = node.args[0]
    dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
    if target.endswith(".dim"):
        unbiased = node.args[2] if len(node.args) > 2 else node.kwargs.get("unbiased", True)
        correction = 1 if unbiased else 0
        keep = bool(node.args[3] if len(node.args) > 3 else node.kwargs.get("keepdim", False))
    else:
        correction = node.kwargs.get("correction", 1)
        correction = 1 if correction is None else correction
        keep = bool(node.kwargs.get("keepdim", False))
    axes = _axes(ctx, x, dims)
    shape = ctx.static_shape(x)
    if any(shape[a] is None for a in axes):
        raise Unsupported("var/std over a symbolic dim")
    count = int(np.prod([shape[a] for a in axes]))
    v = ctx.value(x)
    dt = ctx.dtype(x).numpy
    mean = ctx.emit("ReduceMean", [v, ctx.ints(axes)], keepdims=1)
    diff = ctx.emit("Sub", [v, mean])
    sq = ctx.emit("ReduceSum", [ctx.emit("Mul", [diff, diff]), ctx.ints(axes)], keepdims=int(keep))
    var = ctx.emit("Div", [sq, ctx.const(np.array(max(count - correction, 0), dtype=dt))])
    return ctx.emit("Sqrt", [var]) if ".std." in target else var


@lowers("aten.cumsum.default")
def _cumsum(ctx: Lowering, node: fx.Node) -> Value:
    x, dim = node.args[:2]
    out = ctx.dtype(node)
    axis = ctx.const(np.array(_axes(ctx, x, dim)[0], dtype=np.int64), hint="axis")
    return ctx.emit("CumSum", [operand(ctx, x, out), axis])


# ---------------------------------------------------------------------- creation
def _scalar_input(ctx: Lowering, v: Any, dtype: DType) -> Value:
    if isinstance(v, fx.Node):
        s = (
            ctx.emit("Squeeze", [ctx.sym_vector(v), ctx.ints([0])])
            if ctx.is_symbolic(v)
            else ctx.value(v)
        )
        return s if dtype == DType.INT64 else ctx.cast(s, dtype)
    return ctx.const(np.array(v, dtype=dtype.numpy), hint="scalar")


@lowers("aten.arange.start_step", "aten.arange.default", "aten.arange.start")
def _arange(ctx: Lowering, node: fx.Node) -> Value:
    target = str(node.target)
    args = list(node.args)
    if target.endswith(".default"):
        start, end, step = 0, args[0], 1
    elif target.endswith(".start"):
        start, end, step = args[0], args[1], 1
    else:
        start, end, step = (args + [1])[:3]
    out = ctx.dtype(node)
    if not any(isinstance(v, fx.Node) for v in (start, end, step)):
        return ctx.const(np.arange(start, end, step).astype(out.numpy), hint="arange")
    return ctx.emit(
        "Range",
        [
            _scalar_input(ctx, start, out),
            _scalar_input(ctx, end, out),
            _scalar_input(ctx, step, out),
        ],
    )


def _filled(ctx: Lowering, sizes: list[Any], value: Any, dtype: DType) -> Value:
    if not any(isinstance(s, fx.Node) for s in sizes):
        return ctx.const(np.full([int(s) for s in sizes], value, dtype=dtype.numpy), hint="full")
    return ctx.emit(
        "ConstantOfShape", [ctx.ints(sizes)], value=np.array([value], dtype=dtype.numpy)
    )


@lowers("aten.full.default", "aten.zeros.default", "aten.ones.default", "aten.empty.memory_format")
def _full(ctx: Lowering, node: fx.Node) -> Value:
    target = str(node.target)
    sizes = list(node.args[0])
    value = node.args[1] if "full" in target else (1 if "ones" in target else 0)
    if isinstance(value, fx.Node):
        raise Unsupported("full with a value computed at run time")
    return _filled(ctx, sizes, value, ctx.dtype(node))


@lowers(
    "aten.full_like.default",
    "aten.zeros_like.default",
    "aten.ones_like.default",
    "aten.empty_like.default",
)
def _full_like(ctx: Lowering, node: fx.Node) -> Value:
    target = str(node.target)
    x = node.args[0]
    value = node.args[1] if "full_like" in target else (1 if "ones" in target else 0)
    out = ctx.dtype(node)
    shape = ctx.static_shape(x)
    if all(s is not None for s in shape):
        return ctx.const(np.full(shape, value, dtype=out.numpy), hint="full")
    dims = ctx.emit("Shape", [ctx.value(x)])
    return ctx.emit("ConstantOfShape", [dims], value=np.array([value], dtype=out.numpy))


@lowers("aten.scalar_tensor.default")
def _scalar_tensor(ctx: Lowering, node: fx.Node) -> Value:
    value = node.args[0]
    if isinstance(value, fx.Node):
        return _scalar_input(ctx, value, ctx.dtype(node))
    return ctx.const(np.array(value, dtype=ctx.dtype(node).numpy), hint="scalar")
