"""Reductions and scans → Relax: Reduce*, ArgMax/ArgMin, CumSum, TopK, Softmax family."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torsh_gen.backends.tvm.convert import Ctx, converts
from torsh_gen.ir.graph import Node


@converts("GlobalAveragePool")
def global_average_pool(ctx: Ctx, node: Node) -> Sequence[Any]:
    from tvm import relax

    rank = ctx.rank(node.inputs[0])
    return [ctx.emit(relax.op.mean(ctx.x(node.inputs[0]), axis=list(range(2, rank)), keepdims=True))]
