"""Small, safe graph edits that passes share: replacing uses, unique names, removal.

Every pass rewrites through these helpers so that graph outputs keep their names,
subgraph (outer-scope) reads are updated too, and new names never collide.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable

import numpy as np

from torsh_gen.ir.graph import Graph, Node, Value
from torsh_gen.ir.types import TensorType, Type, tensor_type_of


class NameGen:
    """Fresh value/node names that collide with nothing in a graph (subgraphs included)."""

    def __init__(self, graph: Graph) -> None:
        self.used: set[str] = set()
        for g in _graphs(graph):
            self.used.update(v.name for v in g.values() if v.name)
            self.used.update(n.name for n in g.nodes if n.name)
        self.counter = itertools.count()

    def fresh(self, hint: str) -> str:
        """``hint`` made unique (``hint``, ``hint_1``, ...), restricted to a safe charset."""
        base = re.sub(r"[^A-Za-z0-9_.:/\-]", "_", hint)[:80] or "v"
        name = base
        while name in self.used:
            name = f"{base}_{next(self.counter)}"
        self.used.add(name)
        return name


def _graphs(graph: Graph) -> Iterable[Graph]:
    yield graph
    for n in graph.nodes:
        for sg in n.subgraphs():
            yield from _graphs(sg)


def replace_uses(graph: Graph, old: Value, new: Value) -> None:
    """Make every reader of ``old`` (nodes, nested graphs, graph outputs) read ``new``."""
    for g in _graphs(graph):
        for n in g.nodes:
            n.inputs = [new if v is old else v for v in n.inputs]
        g.outputs = [new if v is old else v for v in g.outputs]


def is_graph_output(graph: Graph, v: Value) -> bool:
    """True when ``v`` is an output of ``graph`` itself."""
    return any(o is v for o in graph.outputs)


def bypass(graph: Graph, node: Node, keep: Value) -> bool:
    """Remove single-output ``node`` by routing its readers to ``keep``.

    When the node's output is a graph output, the output's name must survive: ``keep`` is
    renamed to it if ``keep`` is an ordinary intermediate value; otherwise nothing changes
    and False is returned.
    """
    out = node.outputs[0]
    if is_graph_output(graph, out):
        if keep.const is not None or any(keep is v for v in graph.inputs) or is_graph_output(graph, keep):
            return False
        keep.name = out.name
        keep.type = _with_known_dims(keep.type, out.type)
    replace_uses(graph, out, keep)
    graph.nodes = [n for n in graph.nodes if n is not node]
    return True


def _with_known_dims(kept: Type | None, declared: Type | None) -> Type | None:
    """``kept`` with the dims it lacks taken from ``declared`` (a graph output's declared
    type, e.g. of an identity Cast being removed, must not be lost: the native targets
    need static shapes)."""
    if kept is None:
        return declared
    if not (isinstance(kept, TensorType) and isinstance(declared, TensorType)) or declared.shape is None:
        return kept
    if kept.dtype != declared.dtype:
        return kept
    if kept.shape is None:
        return TensorType(kept.dtype, declared.shape)
    if len(kept.shape) != len(declared.shape):
        return kept
    dims = tuple(d if isinstance(d, int) and not isinstance(k, int) else k for k, d in zip(kept.shape, declared.shape))
    return TensorType(kept.dtype, dims)


def add_constant(graph: Graph, names: NameGen, hint: str, array: np.ndarray) -> Value:
    """A new initializer holding ``array``."""
    v = Value(names.fresh(hint), tensor_type_of(array), const=np.asarray(array))
    graph.initializers.append(v)
    return v


def use_counts(graph: Graph) -> dict[int, int]:
    """id(Value) → number of reads (node inputs, nested-graph reads, graph outputs)."""
    counts: dict[int, int] = {}
    for g in _graphs(graph):
        for n in g.nodes:
            for v in n.inputs:
                if v is not None:
                    counts[id(v)] = counts.get(id(v), 0) + 1
        for v in g.outputs:
            counts[id(v)] = counts.get(id(v), 0) + 1
    return counts


def producers(graph: Graph) -> dict[int, Node]:
    """id(Value) → the node of ``graph`` that produces it."""
    return {id(o): n for n in graph.nodes for o in n.outputs}
