"""Dead-code elimination: drop nodes and initializers nothing reads.

Preconditions: none. A node is dead when none of its outputs is read by a node (in this
graph or a nested one) or is a graph output; its optional unused outputs are unnamed so
that kernels may skip them. Runs to a fixed point, in nested graphs too.
"""

from __future__ import annotations

from torsh_gen.ir.graph import Graph, outer_reads
from torsh_gen.passes.manager import note, register_pass


@register_pass("eliminate_dead_code", ensures=("no_dead_nodes",))
def eliminate_dead_code(graph: Graph) -> bool:
    """Remove unused nodes and initializers (nested graphs included)."""
    if graph.info is not None and graph.info.ir_version < 4:
        # Before IR 4 every initializer is also listed as an input; those are not API inputs.
        reads = {id(v) for _, n in graph.walk() for v in n.inputs if v is not None} | {id(v) for v in graph.outputs}
        graph.inputs = [v for v in graph.inputs if v.const is None or id(v) in reads]
    removed_nodes, removed_inits = _dce(graph, keep=set())
    if removed_nodes or removed_inits:
        note(f"removed {removed_nodes} nodes and {removed_inits} initializers")
    return bool(removed_nodes or removed_inits)


def _dce(graph: Graph, keep: set[int]) -> tuple[int, int]:
    removed_nodes = removed_inits = 0
    while True:
        live = {id(v) for v in graph.outputs} | keep
        for n in graph.nodes:
            live.update(id(v) for v in n.inputs if v is not None)
            for sg in n.subgraphs():
                live.update(id(v) for v in outer_reads(sg))
        kept = [n for n in graph.nodes if any(id(o) in live for o in n.outputs if o.name) or not n.outputs]
        dropped = len(graph.nodes) - len(kept)
        graph.nodes = kept
        removed_nodes += dropped
        if not dropped:
            break
    input_ids = {id(v) for v in graph.inputs}
    inits = [v for v in graph.initializers if id(v) in live or id(v) in input_ids]
    removed_inits += len(graph.initializers) - len(inits)
    graph.initializers = inits
    for n in graph.nodes:
        for sg in n.subgraphs():
            a, b = _dce(sg, keep=set())
            removed_nodes += a
            removed_inits += b
    return removed_nodes, removed_inits
