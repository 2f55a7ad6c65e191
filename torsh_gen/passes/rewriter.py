"""Shared state for passes that rewrite a graph node by node (simplify, fold_batchnorm).

A ``Rewriter`` answers the questions every local rewrite asks — is this value a
compile-time constant (initializers are; graph inputs whose initializer is only a default
are not, from IR 4 on), which node produces it, what are the node's attributes with their
defaults — and performs the edits through ``ir.rewrite`` so that graph outputs keep their
names and nodes left without readers are dropped.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from torsh_gen.errors import TorshGenError
from torsh_gen.ir.graph import Graph, Node, Value
from torsh_gen.ir.rewrite import NameGen, add_constant, bypass, is_graph_output, use_counts
from torsh_gen.ir.types import TensorType
from torsh_gen.ops.registry import Attrs, lookup


def overridable_inputs(graph: Graph) -> set[int]:
    """ids of graph inputs whose initializer is only a default (IR 4 on): not constants."""
    if graph.info is not None and graph.info.ir_version < 4:
        return set()
    return {id(v) for v in graph.inputs}


@dataclass
class Rewriter:
    """State shared by the rules while they rewrite one graph (the top one or a nested one)."""

    graph: Graph
    names: NameGen
    opsets: dict[str, int]
    not_const: set[int]
    producer: dict[int, Node] = field(default_factory=dict)
    removed: set[int] = field(default_factory=set)
    orphans: list[Node] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)

    # ------------------------------------------------------------------ queries
    def const(self, v: Value | None) -> np.ndarray | None:
        """The constant data of ``v``, or None when it is not known at compile time."""
        if v is None or id(v) in self.not_const:
            return None
        if v.const is None:
            return _constant_node_value(v.producer)
        return v.const

    def ints(self, v: Value | None) -> list[int] | None:
        """A constant integer tensor as a flat list, else None."""
        c = self.const(v)
        if c is None or c.dtype.kind not in "iu":
            return None
        return [int(i) for i in c.reshape(-1)]

    def attrs(self, node: Node) -> Attrs | None:
        """The node's attributes with defaults, or None for ops we do not know."""
        try:
            spec = lookup(node.op_type, node.domain, self.opsets.get(node.domain, 0))
        except TorshGenError:
            return None
        return spec.resolve_attrs(node)

    def source(self, v: Value | None, *ops: str) -> Node | None:
        """The producer of ``v`` in this graph when it is a default-domain op among ``ops``."""
        p = None if v is None else self.producer.get(id(v))
        if p is None or id(p) in self.removed or p.domain not in ("", "ai.onnx"):
            return None
        return p if p.op_type in ops else None

    def list_attr_or_input(self, node: Node, attr: str, index: int) -> list[int] | None:
        """Values that older opsets give as attribute ``attr`` and newer as input ``index``."""
        if len(node.inputs) > index and node.inputs[index] is not None:
            return self.ints(node.inputs[index])
        a = self.attrs(node)
        value = None if a is None else a.get(attr)
        return None if value is None else [int(i) for i in value]

    # ------------------------------------------------------------------ edits
    def remove(self, node: Node, keep: Value, rule: str) -> bool:
        """Route readers of ``node``'s first output to ``keep`` and drop the node."""
        out = node.outputs[0]
        if is_graph_output(self.graph, out):
            p = keep.producer
            if p is None or not any(n is p for n in self.graph.nodes):
                return False  # keep is outer, an input or a constant: the output name can't move
        if not bypass(self.graph, node, keep):
            return False
        self.removed.add(id(node))
        self.orphans.extend(
            self.producer[id(v)] for v in node.inputs if v is not None and id(v) in self.producer
        )
        self.counts[rule] += 1
        return True

    def rewired(self, node: Node, old_inputs: list[Value | None], rule: str) -> bool:
        """Record that ``node`` now reads other values; the old producers may be orphaned."""
        self.orphans.extend(
            self.producer[id(v)] for v in old_inputs if v is not None and id(v) in self.producer
        )
        self.counts[rule] += 1
        return True

    def constant(self, hint: str, array: np.ndarray) -> Value:
        """A new initializer in this graph."""
        return add_constant(self.graph, self.names, hint, array)

    def drop_orphans(self) -> None:
        """Remove recorded producers whose outputs nothing reads any more (transitively)."""
        while self.orphans:
            uses = use_counts(self.graph)
            dead = []
            for n in self.orphans:
                if id(n) in self.removed or any(True for _ in n.subgraphs()):
                    continue
                if any(uses.get(id(o), 0) for o in n.outputs) or not _deterministic(n, self.opsets):
                    continue
                dead.append(n)
            self.orphans = []
            if not dead:
                return
            for n in dead:
                self.removed.add(id(n))
                self.orphans.extend(
                    self.producer[id(v)]
                    for v in n.inputs
                    if v is not None and id(v) in self.producer
                )
            gone = {id(n) for n in dead}
            self.graph.nodes = [n for n in self.graph.nodes if id(n) not in gone]


def _deterministic(node: Node, opsets: dict[str, int]) -> bool:
    try:
        return lookup(node.op_type, node.domain, opsets.get(node.domain, 0)).deterministic
    except TorshGenError:
        return False


def tensor_type(v: Value | None) -> TensorType | None:
    """The TensorType of ``v`` when known."""
    t = None if v is None else v.type
    return t if isinstance(t, TensorType) else None


def shape_of(v: Value | None) -> tuple | None:
    """The (possibly symbolic) shape of ``v``, or None when the rank is unknown."""
    t = tensor_type(v)
    return None if t is None else t.shape


def same_static_type(a: Value | None, b: Value | None) -> bool:
    """True when both values have the same dtype and the same fully known shape."""
    ta, tb = tensor_type(a), tensor_type(b)
    return ta is not None and tb is not None and ta.is_static and ta == tb


def axis(a: int, rank: int) -> int:
    """A possibly negative axis made non-negative."""
    return a + rank if a < 0 else a


def _constant_node_value(node: Node | None) -> np.ndarray | None:
    """The value of a default-domain Constant node's output, else None."""
    if node is None or node.op_type != "Constant" or node.domain not in ("", "ai.onnx"):
        return None
    for name, dtype in _CONSTANT_ATTRS.items():
        a = node.attrs.get(name)
        if a is not None and not a.ref and a.value is not None:
            value = np.asarray(a.value)
            return value if dtype is None or value.dtype.kind == "O" else value.astype(dtype)
    return None


_CONSTANT_ATTRS = {
    "value": None,
    "value_int": np.int64,
    "value_ints": np.int64,
    "value_float": np.float32,
    "value_floats": np.float32,
}
