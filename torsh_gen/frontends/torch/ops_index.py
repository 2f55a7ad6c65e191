"""Lowerings of ATen indexing ops: gather, scatter, index, index_select, index_put and the
SymInt arithmetic that shape computations leave in an exported graph.

Advanced indexing (``x[idx]``, ``x[:, i, j]``) follows PyTorch's placement rule: the
broadcast index dims replace a consecutive block of indexed dims in place, otherwise
they go first. It becomes one GatherND over the indexed dims moved to the front.
"""

from __future__ import annotations

import operator

import numpy as np
from torch import fx

from torsh_gen.frontends.torch.context import Lowering, Unsupported
from torsh_gen.frontends.torch.ops_elementwise import operand
from torsh_gen.frontends.torch.table import LOWERINGS, lowers
from torsh_gen.ir.graph import Value
from torsh_gen.ir.types import DType


def _axis(ctx: Lowering, x: fx.Node, dim: int) -> int:
    return int(dim) + ctx.rank(x) if int(dim) < 0 else int(dim)


@lowers("aten.gather.default")
def _gather(ctx: Lowering, node: fx.Node) -> Value:
    x, dim, index = node.args[:3]
    axis = _axis(ctx, x, dim)
    return ctx.emit("GatherElements", [_fit(ctx, x, index, axis), ctx.value(index)], axis=axis)


def _fit(ctx: Lowering, x: fx.Node, index: fx.Node, axis: int) -> Value:
    """``x`` cut to the index's size in every dim but ``axis`` (torch allows a smaller index)."""
    xs, ids = ctx.static_shape(x), ctx.static_shape(index)
    if all(a == b for d, (a, b) in enumerate(zip(xs, ids)) if d != axis and a is not None):
        return ctx.value(x)
    onehot = ctx.const(np.arange(len(xs)) == axis, hint="axis_mask")
    big = ctx.const(np.array([2**62], dtype=np.int64), hint="end")
    ends = ctx.emit("Where", [onehot, big, ctx.emit("Shape", [ctx.value(index)])])
    starts = ctx.const(np.zeros(len(xs), dtype=np.int64), hint="starts")
    return ctx.emit("Slice", [ctx.value(x), starts, ends])


@lowers("aten.index_select.default")
def _index_select(ctx: Lowering, node: fx.Node) -> Value:
    x, dim, index = node.args[:3]
    return ctx.emit("Gather", [ctx.value(x), ctx.value(index)], axis=_axis(ctx, x, dim))


@lowers(
    "aten.scatter.src",
    "aten.scatter.value",
    "aten.scatter_add.default",
    "aten.scatter.reduce",
    "aten.scatter_reduce.two",
)
def _scatter(ctx: Lowering, node: fx.Node) -> Value:
    target = str(node.target)
    x, dim, index, src = node.args[:4]
    reduction = "none"
    if "scatter_add" in target:
        reduction = "add"
    elif target.endswith((".reduce", ".two")):
        reduce = node.args[4] if len(node.args) > 4 else node.kwargs.get("reduce")
        include_self = node.kwargs.get("include_self", True)
        reduction = {
            "sum": "add",
            "add": "add",
            "prod": "mul",
            "multiply": "mul",
            "amax": "max",
            "amin": "min",
        }.get(reduce, "")
        if not reduction or not include_self:
            raise Unsupported(f"scatter_reduce with reduce={reduce!r}, include_self={include_self}")
    updates = ctx.value(src) if isinstance(src, fx.Node) else None
    if updates is None:
        fill = ctx.scalar_like(src, x)
        updates = ctx.emit("Expand", [fill, ctx.emit("Shape", [ctx.value(index)])])
    elif ctx.static_shape(src) != ctx.static_shape(index):
        # torch uses only the leading index-shaped block of src
        ends = ctx.emit("Shape", [ctx.value(index)])
        zeros = ctx.const(np.zeros(ctx.rank(index), dtype=np.int64), hint="starts")
        updates = ctx.emit("Slice", [updates, zeros, ends])
    return ctx.emit(
        "ScatterElements",
        [ctx.value(x), ctx.value(index), updates],
        axis=_axis(ctx, x, dim),
        reduction=reduction,
    )


def _index_block(ctx: Lowering, x: fx.Node, indices: list) -> tuple[list[int], list[Value]]:
    dims = [i for i, t in enumerate(indices) if t is not None]
    if any(ctx.dtype(indices[d]) == DType.BOOL for d in dims):
        raise Unsupported("boolean mask indexing (its result size depends on the data)")
    values = [operand(ctx, indices[d], DType.INT64) for d in dims]
    return dims, values


def _stacked(ctx: Lowering, values: list[Value]) -> Value:
    """Broadcast the index tensors to one shape and stack them on a new last axis."""
    if len(values) == 1:
        return ctx.emit("Unsqueeze", [values[0], ctx.ints([-1])])
    shapes = [ctx.emit("Shape", [v]) for v in values]
    ones = [ctx.emit("ConstantOfShape", [s], value=np.array([1], dtype=np.int64)) for s in shapes]
    total = ones[0]
    for o in ones[1:]:
        total = ctx.emit("Mul", [total, o])
    target = ctx.emit("Shape", [total])
    cols = [
        ctx.emit("Unsqueeze", [ctx.emit("Expand", [v, target]), ctx.ints([-1])]) for v in values
    ]
    return ctx.emit("Concat", cols, axis=-1)


@lowers("aten.index.Tensor")
def _index(ctx: Lowering, node: fx.Node) -> Value:
    x, indices = node.args[:2]
    indices = list(indices)
    dims, values = _index_block(ctx, x, indices)
    rank = ctx.rank(x)
    if len(dims) == 1:
        return ctx.emit("Gather", [ctx.value(x), values[0]], axis=dims[0])
    rest = [d for d in range(rank) if d not in dims]
    data = ctx.value(x)
    if dims != list(range(len(dims))):
        data = ctx.emit("Transpose", [data], perm=dims + rest)
    out = ctx.emit("GatherND", [data, _stacked(ctx, values)])
    consecutive = dims == list(range(dims[0], dims[0] + len(dims)))
    before = [d for d in rest if d < dims[0]]
    if not consecutive or not before:
        return out
    nb = ctx.rank(node) - len(rest)  # rank of the broadcast index
    perm = (
        list(range(nb, nb + len(before)))
        + list(range(nb))
        + list(range(nb + len(before), ctx.rank(node)))
    )
    return ctx.emit("Transpose", [out], perm=perm)


@lowers("aten.index_put.default", "aten._unsafe_index_put.default")
def _index_put(ctx: Lowering, node: fx.Node) -> Value:
    x, indices, values = node.args[:3]
    accumulate = bool(node.args[3] if len(node.args) > 3 else node.kwargs.get("accumulate", False))
    dims, idx = _index_block(ctx, x, list(indices))
    if dims != list(range(len(dims))):
        raise Unsupported("index_put on dims other than the leading ones")
    stacked = _stacked(ctx, idx)
    # updates take the shape index_shape + remaining dims of x
    upd_shape = ctx.emit(
        "Concat",
        [
            ctx.emit("Shape", [stacked], start=0, end=-1),
            ctx.emit("Shape", [ctx.value(x)], start=len(dims)),
        ],
        axis=0,
    )
    upd = ctx.emit("Expand", [operand(ctx, values, ctx.dtype(x)), upd_shape])
    return ctx.emit(
        "ScatterND", [ctx.value(x), stacked, upd], reduction="add" if accumulate else "none"
    )


# ---------------------------------------------------------------------- SymInt arithmetic
@lowers("aten.sym_size.int")
def _sym_size(ctx: Lowering, node: fx.Node) -> Value:
    x, dim = node.args[:2]
    d = _axis(ctx, x, dim)
    return ctx.emit("Shape", [ctx.value(x)], start=d, end=d + 1)


@lowers("aten.sym_numel.default")
def _sym_numel(ctx: Lowering, node: fx.Node) -> Value:
    return ctx.emit("Reshape", [ctx.emit("Size", [ctx.value(node.args[0])]), ctx.ints([1])])


_SYM_OPS = {operator.add: "Add", operator.sub: "Sub", operator.mul: "Mul", operator.floordiv: "Div"}


def _sym_binary(ctx: Lowering, node: fx.Node) -> Value:
    a, b = node.args[:2]
    va = ctx.sym_vector(a) if isinstance(a, fx.Node) else ctx.ints([a])
    vb = ctx.sym_vector(b) if isinstance(b, fx.Node) else ctx.ints([b])
    if node.target is operator.floordiv:
        q = ctx.emit("Div", [ctx.cast(va, DType.DOUBLE), ctx.cast(vb, DType.DOUBLE)])
        return ctx.cast(ctx.emit("Floor", [q]), DType.INT64)
    return ctx.emit(_SYM_OPS[node.target], [va, vb])


for _fn in _SYM_OPS:
    LOWERINGS[_fn.__name__] = _sym_binary


@lowers("aten._local_scalar_dense.default", "aten.item.default")
def _item(ctx: Lowering, node: fx.Node) -> Value:
    x = node.args[0]
    v = ctx.value(x)
    if ctx.dtype(x) != DType.INT64:
        raise Unsupported("reading a non-integer tensor element as a Python number (.item())")
    return ctx.emit("Reshape", [v, ctx.ints([1])])
