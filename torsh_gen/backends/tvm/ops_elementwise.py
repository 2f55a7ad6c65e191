"""Elementwise ops → Relax: arithmetic, comparisons, logic, casts and activations."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torsh_gen.backends.tvm.convert import Ctx, converts
from torsh_gen.ir.graph import Node

_BINARY = {
    "Add": "add",
    "Sub": "subtract",
    "Mul": "multiply",
    "Div": "divide",
    "Pow": "power",
}


@converts(*_BINARY)
def binary(ctx: Ctx, node: Node) -> Sequence[Any]:
    from tvm import relax

    fn = getattr(relax.op, _BINARY[node.op_type])
    return [ctx.emit(fn(ctx.x(node.inputs[0]), ctx.x(node.inputs[1])))]


@converts("Relu")
def relu(ctx: Ctx, node: Node) -> Sequence[Any]:
    from tvm import relax

    return [ctx.emit(relax.op.nn.relu(ctx.x(node.inputs[0])))]
