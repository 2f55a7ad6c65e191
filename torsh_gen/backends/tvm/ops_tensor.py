"""Tensor-manipulation ops → Relax: shapes, layout, slicing, gathering, padding."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torsh_gen.backends.tvm.convert import Ctx, converts
from torsh_gen.ir.graph import Node


@converts("Reshape")
def reshape(ctx: Ctx, node: Node) -> Sequence[Any]:
    from tvm import relax

    shape = ctx.ints(node.inputs[1], "Reshape's shape")
    dims = ctx.shape(node.inputs[0])
    if not node.attr("allowzero", 0):
        shape = [dims[k] if s == 0 else s for k, s in enumerate(shape)]
    return [ctx.emit(relax.op.reshape(ctx.x(node.inputs[0]), shape))]


@converts("Flatten")
def flatten(ctx: Ctx, node: Node) -> Sequence[Any]:
    from tvm import relax

    rank = ctx.rank(node.inputs[0])
    axis = int(node.attr("axis", 1))
    axis = axis + rank if axis < 0 else axis
    dims = ctx.shape(node.inputs[0])
    head = 1
    for d in dims[:axis]:
        head = head * d
    return [ctx.emit(relax.op.reshape(ctx.x(node.inputs[0]), [head, -1]))]
