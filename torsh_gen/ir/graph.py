"""The graph IR: Value, Node, Attribute, Graph and model-level metadata.

A Graph is a list of Nodes in some order (``toposort`` fixes one), its inputs, outputs and
initializers (Values carrying a constant array). Values are objects, not names: a Node
refers to the Value objects it consumes, so renaming never breaks an edge. Names stay
unique within a graph because exporters and printers rely on them.

Nested graphs (If branches, Loop and Scan bodies) are Graphs held in GRAPH attributes;
they may read Values of enclosing graphs by reference (outer scope), as ONNX allows.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from torsh_gen.ir.types import Type, tensor_type_of


class AttrKind(enum.IntEnum):
    """Attribute kinds, numbered as in ``onnx.AttributeProto.AttributeType``."""

    UNDEFINED = 0
    FLOAT = 1
    INT = 2
    STRING = 3
    TENSOR = 4
    GRAPH = 5
    FLOATS = 6
    INTS = 7
    STRINGS = 8
    TENSORS = 9
    GRAPHS = 10
    SPARSE_TENSOR = 11
    SPARSE_TENSORS = 12
    TYPE_PROTO = 13
    TYPE_PROTOS = 14


@dataclass
class Attribute:
    """A typed attribute value; ``ref`` names a parent function attribute (ONNX ref_attr_name)."""

    kind: AttrKind
    value: Any
    ref: str = ""
    doc: str = ""


@dataclass(eq=False)
class Value:
    """A named SSA value: a graph input, a node output, or an initializer (``const``)."""

    name: str
    type: Type | None = None
    const: np.ndarray | None = None
    doc: str = ""
    producer: Node | None = field(default=None, repr=False)

    @property
    def is_const(self) -> bool:
        """True for initializers (values with data known at compile time)."""
        return self.const is not None

    def __repr__(self) -> str:
        return f"Value({self.name!r}, {self.type})"


@dataclass(eq=False)
class Node:
    """One op application; ``inputs`` may hold None for omitted optional inputs."""

    op_type: str
    inputs: list[Value | None]
    outputs: list[Value]
    attrs: dict[str, Attribute] = field(default_factory=dict)
    domain: str = ""
    name: str = ""
    doc: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    overload: str = ""

    def __post_init__(self) -> None:
        for out in self.outputs:
            out.producer = self

    def attr(self, name: str, default: Any = None) -> Any:
        """The raw value of attribute ``name`` or ``default`` when absent."""
        a = self.attrs.get(name)
        return default if a is None else a.value

    def subgraphs(self) -> Iterator[Graph]:
        """Every graph nested directly in this node's attributes."""
        for a in self.attrs.values():
            if a.kind == AttrKind.GRAPH:
                yield a.value
            elif a.kind == AttrKind.GRAPHS:
                yield from a.value

    @property
    def qualified_op(self) -> str:
        """``domain::op_type`` for non-default domains, else the op type."""
        return f"{self.domain}::{self.op_type}" if self.domain not in ("", "ai.onnx") else self.op_type

    def __repr__(self) -> str:
        return f"Node({self.qualified_op}, name={self.name!r})"


@dataclass
class ModelInfo:
    """Model-level metadata kept for faithful export (only top-level graphs have one)."""

    ir_version: int = 10
    opset_imports: dict[str, int] = field(default_factory=lambda: {"": 21})
    producer_name: str = ""
    producer_version: str = ""
    domain: str = ""
    model_version: int = 0
    doc: str = ""
    metadata_props: dict[str, str] = field(default_factory=dict)
    functions: list[Any] = field(default_factory=list)  # onnx FunctionProto kept opaque

    def opset(self, domain: str = "") -> int:
        """The imported opset version of ``domain`` ('' and 'ai.onnx' are the same)."""
        if domain == "ai.onnx":
            domain = ""
        return self.opset_imports.get(domain, self.opset_imports.get("ai.onnx", 0))


class Graph:
    """A dataflow graph: nodes, inputs, outputs, initializers and value annotations."""

    def __init__(
        self,
        name: str = "main",
        nodes: list[Node] | None = None,
        inputs: list[Value] | None = None,
        outputs: list[Value] | None = None,
        initializers: list[Value] | None = None,
        doc: str = "",
        info: ModelInfo | None = None,
    ) -> None:
        self.name = name
        self.nodes: list[Node] = list(nodes or [])
        self.inputs: list[Value] = list(inputs or [])
        self.outputs: list[Value] = list(outputs or [])
        self.initializers: list[Value] = list(initializers or [])
        self.doc = doc
        self.info = info
        self.sparse_initializers: list[Any] = []
        #: Annotations passes leave for later stages (e.g. the memory plan); not serialized.
        self.meta: dict[str, Any] = {}

    # ----------------------------------------------------------------- building
    def add_initializer(self, name: str, array: np.ndarray) -> Value:
        """Add a constant Value holding ``array`` and return it."""
        v = Value(name, tensor_type_of(array), const=array)
        self.initializers.append(v)
        return v

    def add_node(
        self,
        op_type: str,
        inputs: list[Value | None],
        n_outputs: int = 1,
        attrs: dict[str, Attribute] | None = None,
        name: str = "",
        domain: str = "",
        output_names: list[str] | None = None,
    ) -> Node:
        """Append a node with fresh output Values named after it."""
        base = name or f"{op_type.lower()}_{len(self.nodes)}"
        names = output_names or [f"{base}_out{i}" if n_outputs > 1 else base for i in range(n_outputs)]
        node = Node(op_type, list(inputs), [Value(n) for n in names], dict(attrs or {}), domain, name)
        self.nodes.append(node)
        return node

    # ----------------------------------------------------------------- queries
    @property
    def opset(self) -> int:
        """The default-domain opset of the model this graph belongs to (0 if unknown)."""
        return self.info.opset("") if self.info else 0

    def values(self) -> Iterator[Value]:
        """Every Value defined in this graph (not in subgraphs): inputs, initializers, outputs of nodes."""
        yield from self.inputs
        yield from self.initializers
        for n in self.nodes:
            yield from n.outputs

    def value_map(self) -> dict[str, Value]:
        """Name → Value for the values defined in this graph."""
        return {v.name: v for v in self.values() if v.name}

    def consumers(self) -> dict[int, list[Node]]:
        """id(Value) → nodes of this graph that read it (including through subgraphs)."""
        users: dict[int, list[Node]] = {}
        for n in self.nodes:
            for v in _all_reads(n):
                users.setdefault(id(v), []).append(n)
        return users

    def walk(self) -> Iterator[tuple[Graph, Node]]:
        """Every (graph, node) pair in this graph and, recursively, its subgraphs."""
        for n in self.nodes:
            yield self, n
            for sg in n.subgraphs():
                yield from sg.walk()

    def toposort(self) -> None:
        """Order ``nodes`` so every node follows the producers of its inputs (stable).

        Raises GraphError on a cycle. Reads of outer-scope values are not edges here.
        """
        from torsh_gen.errors import GraphError

        producer = {id(o): n for n in self.nodes for o in n.outputs}
        state: dict[int, int] = {}
        order: list[Node] = []
        for root in self.nodes:
            if state.get(id(root)):
                continue
            stack: list[tuple[Node, Iterator[Value]]] = [(root, iter(_all_reads(root)))]
            state[id(root)] = 1
            while stack:
                node, it = stack[-1]
                advanced = False
                for v in it:
                    p = producer.get(id(v))
                    if p is None:
                        continue
                    s = state.get(id(p), 0)
                    if s == 1:
                        raise GraphError(
                            f"graph '{self.name}' has a cycle through node '{p.name or p.op_type}'; "
                            "a model's nodes must form a DAG"
                        )
                    if s == 0:
                        state[id(p)] = 1
                        stack.append((p, iter(_all_reads(p))))
                        advanced = True
                        break
                if not advanced:
                    stack.pop()
                    state[id(node)] = 2
                    order.append(node)
        self.nodes = order

    def __repr__(self) -> str:
        return f"Graph({self.name!r}, {len(self.nodes)} nodes)"


def _all_reads(node: Node) -> list[Value]:
    """Inputs of ``node`` plus outer-scope values its subgraphs read."""
    reads = [v for v in node.inputs if v is not None]
    for sg in node.subgraphs():
        reads.extend(outer_reads(sg))
    return reads


def outer_reads(graph: Graph) -> list[Value]:
    """Values that ``graph`` (or its nested subgraphs) reads but does not define."""
    defined = {id(v) for v in graph.values()}
    seen: set[int] = set()
    result: list[Value] = []
    for n in graph.nodes:
        for v in _all_reads(n):
            if id(v) not in defined and id(v) not in seen:
                seen.add(id(v))
                result.append(v)
    for v in graph.outputs:
        if id(v) not in defined and id(v) not in seen:
            seen.add(id(v))
            result.append(v)
    return result
