"""Lowerings of ATen shape ops: view/reshape, permute, expand, squeeze, slice, select, cat, split.

Sizes may mix Python ints with SymInt nodes (dims that stay symbolic, such as the batch);
``Lowering.ints`` turns such a list into a run-time int64 tensor.
"""

from __future__ import annotations

import numpy as np
from torch import fx

from torsh_gen.frontends.torch.context import Lowering, Unsupported
from torsh_gen.frontends.torch.table import lowers
from torsh_gen.ir.graph import Value

_INT64_MAX = 2**63 - 1


def _dim(d: int, rank: int) -> int:
    return d + rank if d < 0 else d


@lowers(
    "aten.view.default",
    "aten._unsafe_view.default",
    "aten.reshape.default",
    "aten.view_copy.default",
)
def _view(ctx: Lowering, node: fx.Node) -> Value:
    return ctx.emit("Reshape", [ctx.value(node.args[0]), ctx.ints(node.args[1])])


@lowers("aten.permute.default", "aten.permute_copy.default")
def _permute(ctx: Lowering, node: fx.Node) -> Value:
    x, dims = node.args[:2]
    rank = ctx.rank(x)
    return ctx.emit("Transpose", [ctx.value(x)], perm=[_dim(int(d), rank) for d in dims])


@lowers("aten.t.default", "aten.transpose.int")
def _transpose(ctx: Lowering, node: fx.Node) -> Value:
    x = node.args[0]
    rank = ctx.rank(x)
    a, b = (node.args[1], node.args[2]) if len(node.args) > 2 else (0, 1)
    perm = list(range(rank))
    if rank >= 2:
        a, b = _dim(int(a), rank), _dim(int(b), rank)
        perm[a], perm[b] = perm[b], perm[a]
    return ctx.emit("Transpose", [ctx.value(x)], perm=perm)


@lowers("aten.expand.default", "aten.expand_copy.default")
def _expand(ctx: Lowering, node: fx.Node) -> Value:
    x, sizes = node.args[:2]
    sizes = [1 if (isinstance(s, int) and s == -1) else s for s in sizes]
    return ctx.emit("Expand", [ctx.value(x), ctx.ints(sizes)])


@lowers("aten.unsqueeze.default", "aten.unsqueeze_copy.default")
def _unsqueeze(ctx: Lowering, node: fx.Node) -> Value:
    x, d = node.args[:2]
    return ctx.emit("Unsqueeze", [ctx.value(x), ctx.ints([_dim(int(d), ctx.rank(x) + 1)])])


@lowers("aten.squeeze.dims", "aten.squeeze.dim", "aten.squeeze.default", "aten.squeeze_copy.dims")
def _squeeze(ctx: Lowering, node: fx.Node) -> Value:
    x = node.args[0]
    rank = ctx.rank(x)
    shape = ctx.static_shape(x)
    if len(node.args) > 1:
        dims = node.args[1] if isinstance(node.args[1], list | tuple) else [node.args[1]]
    else:
        dims = [i for i, s in enumerate(shape) if s == 1]
    # PyTorch skips dims that are not 1; ONNX would fail on them
    dims = [_dim(int(d), rank) for d in dims]
    dims = [d for d in dims if shape[d] == 1]
    if not dims:
        return ctx.value(x)
    return ctx.emit("Squeeze", [ctx.value(x), ctx.ints(dims)])


@lowers("aten.slice.Tensor", "aten.slice_copy.Tensor")
def _slice(ctx: Lowering, node: fx.Node) -> Value:
    x = node.args[0]
    dim, start, end, step = (list(node.args[1:]) + [0, None, None, 1][len(node.args) - 1 :])[:4]
    start = 0 if start is None else start
    end = _INT64_MAX if end is None else end
    step = 1 if step is None else step
    if (
        isinstance(start, int)
        and isinstance(end, int)
        and start == 0
        and end >= _INT64_MAX
        and step == 1
    ):
        return ctx.value(x)
    axis = _dim(int(dim), ctx.rank(x))
    return ctx.emit(
        "Slice",
        [
            ctx.value(x),
            ctx.ints([start]),
            ctx.ints([min(end, _INT64_MAX) if isinstance(end, int) else end]),
            ctx.ints([axis]),
            ctx.ints([step]),
        ],
    )


@lowers("aten.select.int", "aten.select_copy.int")
def _select(ctx: Lowering, node: fx.Node) -> Value:
    x, dim, index = node.args[:3]
    axis = _dim(int(dim), ctx.rank(x))
    idx = (
        ctx.const(np.array(int(index), dtype=np.int64), hint="index")
        if isinstance(index, int)
        else ctx.emit("Squeeze", [ctx.sym_vector(index), ctx.ints([0])])
    )
    return ctx.emit("Gather", [ctx.value(x), idx], axis=axis)


@lowers("aten.cat.default", "aten.concat.default")
def _cat(ctx: Lowering, node: fx.Node) -> Value:
    tensors = node.args[0]
    dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
    rank = max(ctx.rank(t) for t in tensors)
    # legacy: 1-D empty tensors are skipped by torch.cat
    kept = [
        t for t in tensors if not (ctx.rank(t) == 1 and ctx.static_shape(t)[0] == 0 and rank > 1)
    ]
    out = ctx.dtype(node)
    values = [ctx.value(t) if ctx.dtype(t) == out else ctx.cast(ctx.value(t), out) for t in kept]
    if len(values) == 1:
        return ctx.emit("Identity", values)
    return ctx.emit("Concat", values, axis=_dim(int(dim), rank))


@lowers("aten.stack.default")
def _stack(ctx: Lowering, node: fx.Node) -> Value:
    tensors = node.args[0]
    dim = _dim(int(node.args[1] if len(node.args) > 1 else 0), ctx.rank(tensors[0]) + 1)
    axes = ctx.ints([dim])
    return ctx.emit(
        "Concat", [ctx.emit("Unsqueeze", [ctx.value(t), axes]) for t in tensors], axis=dim
    )


@lowers(
    "aten.split_with_sizes.default",
    "aten.split_with_sizes_copy.default",
    "aten.split.Tensor",
    "aten.split_copy.Tensor",
)
def _split(ctx: Lowering, node: fx.Node) -> list[Value]:
    x, sizes = node.args[:2]
    dim = _dim(int(node.args[2] if len(node.args) > 2 else node.kwargs.get("dim", 0)), ctx.rank(x))
    if isinstance(sizes, int):
        total = ctx.static_shape(x)[dim]
        if total is None:
            raise Unsupported("split of a symbolic dim into fixed-size chunks")
        sizes = [min(sizes, total - i) for i in range(0, total, sizes)] or [0]
    if any(isinstance(s, fx.Node) for s in sizes):
        raise Unsupported("split with symbolic sizes")
    outs = ctx.emit("Split", [ctx.value(x), ctx.ints(sizes)], n_outputs=len(sizes), axis=dim)
    return outs if isinstance(outs, list) else [outs]


@lowers("aten.unbind.int", "aten.unbind_copy.int")
def _unbind(ctx: Lowering, node: fx.Node) -> list[Value]:
    x = node.args[0]
    dim = _dim(int(node.args[1] if len(node.args) > 1 else 0), ctx.rank(x))
    n = ctx.static_shape(x)[dim]
    if n is None:
        raise Unsupported("unbind along a symbolic dim")
    parts = ctx.emit("Split", [ctx.value(x), ctx.ints([1] * n)], n_outputs=n, axis=dim)
    parts = parts if isinstance(parts, list) else [parts]
    axes = ctx.ints([dim])
    return [ctx.emit("Squeeze", [p, axes]) for p in parts]


@lowers("aten.flip.default")
def _flip(ctx: Lowering, node: fx.Node) -> Value:
    x, dims = node.args[:2]
    rank = ctx.rank(x)
    axes = [_dim(int(d), rank) for d in dims]
    n = len(axes)
    return ctx.emit(
        "Slice",
        [
            ctx.value(x),
            ctx.ints([-1] * n),
            ctx.ints([-_INT64_MAX] * n),
            ctx.ints(axes),
            ctx.ints([-1] * n),
        ],
    )


@lowers("aten.repeat.default")
def _repeat(ctx: Lowering, node: fx.Node) -> Value:
    x, repeats = node.args[:2]
    v = ctx.value(x)
    extra = len(repeats) - ctx.rank(x)
    if extra > 0:
        v = ctx.emit("Reshape", [v, ctx.ints([1] * extra + list(_shape_items(ctx, x)))])
    return ctx.emit("Tile", [v, ctx.ints(repeats)])


def _shape_items(ctx: Lowering, x: fx.Node) -> list[int]:
    shape = ctx.static_shape(x)
    if any(s is None for s in shape):
        raise Unsupported("repeat adding dims to a tensor with symbolic dims")
    return [int(s) for s in shape]  # type: ignore[arg-type]


@lowers("aten.constant_pad_nd.default")
def _pad(ctx: Lowering, node: fx.Node) -> Value:
    x, pad = node.args[:2]
    value = node.args[2] if len(node.args) > 2 else 0
    rank = ctx.rank(x)
    begins, ends = [0] * rank, [0] * rank
    for i in range(len(pad) // 2):
        begins[rank - 1 - i] = pad[2 * i]
        ends[rank - 1 - i] = pad[2 * i + 1]
    return ctx.emit(
        "Pad", [ctx.value(x), ctx.ints(begins + ends), ctx.scalar_like(value, x)], mode="constant"
    )
