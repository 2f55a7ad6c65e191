"""Shape arithmetic as Python ints: ``Shape → Gather → Unsqueeze → Concat → Reshape`` chains.

Exporters spell "flatten all but the batch dim" as a small graph over ``Shape``. When the
batch is symbolic, constant folding cannot remove it; here such values are tracked as lists
of dim expressions (``x.shape[0]``, ``16``) in ``Ctx.dims`` and emit no code of their own,
so the consumer reads ``x.reshape(x.shape[0], 16)``. A shape that ends up used as data is
turned into a tensor once (``Ctx.var``).
"""

from __future__ import annotations

import numpy as np

from torsh_gen.ir.graph import Node
from torsh_gen.scaffold.train.lower import SHAPE_LOWERINGS, Ctx, NotLowerable, lowers


def shape_lowers(*op_types: str):
    """Register the shape-arithmetic form of ops (used when an input is in ``Ctx.dims``)."""

    def deco(fn):
        for op in op_types:
            SHAPE_LOWERINGS[op] = fn
        return fn

    return deco


def _set(ctx: Ctx, node: Node, elems: list[str], scalar: bool = False) -> bool:
    ctx.dims[id(node.outputs[0])] = (elems, scalar)
    return True


@lowers("Shape")
def shape(ctx: Ctx, node: Node) -> None:
    """Shape(x)[start:end] as dim expressions: static dims as ints, the others ``x.shape[i]``."""
    dims = ctx.shape(node.inputs[0])
    if dims is None:
        raise NotLowerable("needs an input of known rank")
    rank = len(dims)
    start, end = int(node.attr("start", 0)), node.attr("end")
    end = rank if end is None else int(end)
    start, end = (start + rank if start < 0 else start), (end + rank if end < 0 else end)
    x = ctx.var(node.inputs[0])
    elems = [str(d) if isinstance(d, int) else f"{x}.shape[{i}]" for i, d in enumerate(dims)]
    _set(ctx, node, elems[max(start, 0) : min(end, rank)])


@shape_lowers("Gather")
def gather_dims(ctx: Ctx, node: Node) -> bool:
    """Picking dims of a shape by constant indices."""
    elems = ctx.dim_list(node.inputs[0])
    idx = ctx.const(node.inputs[1])
    if elems is None or idx is None or int(node.attr("axis", 0)) != 0:
        return False
    picked = [elems[int(i)] for i in np.asarray(idx).reshape(-1)]
    return _set(ctx, node, picked, scalar=np.asarray(idx).ndim == 0)


@shape_lowers("Unsqueeze")
def unsqueeze_dim(ctx: Ctx, node: Node) -> bool:
    """A single dim made a 1-element shape."""
    scalar = ctx.dim_scalar(node.inputs[0])
    return scalar is not None and _set(ctx, node, [scalar])


@shape_lowers("Squeeze")
def squeeze_dim(ctx: Ctx, node: Node) -> bool:
    """A 1-element shape made a single dim."""
    elems = ctx.dim_list(node.inputs[0])
    return elems is not None and len(elems) == 1 and _set(ctx, node, elems, scalar=True)


@shape_lowers("Concat")
def concat_dims(ctx: Ctx, node: Node) -> bool:
    """Shapes and constant int vectors joined into one shape."""
    parts = [ctx.dim_list(v) for v in node.inputs]
    if any(p is None for p in parts):
        return False
    return _set(ctx, node, [e for p in parts for e in p])


@shape_lowers("Slice")
def slice_dims(ctx: Ctx, node: Node) -> bool:
    """A constant slice of a shape (positive steps)."""
    elems = ctx.dim_list(node.inputs[0])
    args = [ctx.const(v) if v is not None else None for v in node.inputs[1:5]]
    if elems is None or args[0] is None or args[1] is None:
        return False
    start, end = int(np.asarray(args[0]).reshape(-1)[0]), int(np.asarray(args[1]).reshape(-1)[0])
    step = 1 if len(args) < 4 or args[3] is None else int(np.asarray(args[3]).reshape(-1)[0])
    if step <= 0:
        return False
    return _set(ctx, node, elems[start:end:step])


@shape_lowers("Cast", "Identity")
def cast_dims(ctx: Ctx, node: Node) -> bool:
    """Integer casts of shapes change nothing."""
    if id(node.inputs[0]) not in ctx.dims:
        return False
    to = node.attr("to")
    if node.op_type == "Cast" and int(to) not in (6, 7):  # int32, int64
        return False
    ctx.dims[id(node.outputs[0])] = ctx.dims[id(node.inputs[0])]
    return True


_ARITH = {"Add": "+", "Sub": "-", "Mul": "*", "Div": "//"}


@shape_lowers(*_ARITH)
def arith_dims(ctx: Ctx, node: Node) -> bool:
    """Arithmetic on single dims, or elementwise on shapes of equal length (or with one dim)."""
    op = _ARITH[node.op_type]
    a, b = node.inputs
    sa, sb = ctx.dim_scalar(a), ctx.dim_scalar(b)
    if sa is not None and sb is not None:
        return _set(ctx, node, [f"({sa} {op} {sb})"], scalar=True)
    la, lb = ctx.dim_list(a) or ([sa] if sa else None), ctx.dim_list(b) or ([sb] if sb else None)
    if la is None or lb is None or (len(la) != len(lb) and 1 not in (len(la), len(lb))):
        return False
    n = max(len(la), len(lb))
    la, lb = (la * n if len(la) == 1 else la), (lb * n if len(lb) == 1 else lb)
    return _set(ctx, node, [f"({x} {op} {y})" for x, y in zip(la, lb)])
