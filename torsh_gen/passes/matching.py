"""Matching helpers shared by the pattern and fusion passes: a read-only graph view, polynomials.

Rewrites that replace a chain of nodes must know who else reads each intermediate value,
which values are compile-time constants (initializers or Constant nodes, never graph
inputs, which callers may override), and how to put the replacement where the chain's last
node was so that the node list stays topologically sorted. Keeping these answers in one
place keeps the passes to their patterns. Arithmetic spelled out of scalar constants and
Add/Sub/Mul/Div/Pow/Neg (``x * 0.5``, ``x + 0.044715 * x^3``) is compared as a polynomial in
one value, so that every operand order an exporter may choose matches.
"""

from __future__ import annotations

import numpy as np

from torsh_gen.ir.graph import Attribute, Graph, ModelInfo, Node, Value, outer_reads
from torsh_gen.ir.rewrite import NameGen
from torsh_gen.ir.types import TensorType
from torsh_gen.ops.fused import DOMAIN
from torsh_gen.passes.manager import note


class View:
    """Who reads each value of one graph, which values are constants, and node positions.

    Built once per scan; rewrites that keep the matched chain's last Value keep it valid
    for privacy questions (a removed reader and its replacement are both "outside").
    """

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.node_ids = {id(n) for n in graph.nodes}
        self.readers: dict[int, list[Node]] = {}
        for n in graph.nodes:
            reads = [v for v in n.inputs if v is not None]
            for sg in n.subgraphs():
                reads.extend(outer_reads(sg))
            for v in reads:
                lst = self.readers.setdefault(id(v), [])
                if not any(r is n for r in lst):
                    lst.append(n)
        self.outputs = {id(v) for v in graph.outputs}
        self.inputs = {id(v) for v in graph.inputs}

    def readers_of(self, v: Value) -> list[Node]:
        """Distinct nodes reading ``v`` (directly or from a nested graph)."""
        return self.readers.get(id(v), [])

    def reader(self, v: Value) -> Node | None:
        """The only node reading ``v``, when ``v`` has one reader and is not a graph output."""
        rs = self.readers_of(v)
        return rs[0] if len(rs) == 1 and id(v) not in self.outputs else None

    def producer(self, v: Value | None) -> Node | None:
        """The node of this graph computing ``v`` (None for inputs and constants)."""
        p = None if v is None else v.producer
        return p if p is not None and id(p) in self.node_ids and v.const is None else None

    def const(self, v: Value | None) -> np.ndarray | None:
        """The compile-time data of ``v``: an initializer or a Constant node's value."""
        if v is None or id(v) in self.inputs:
            return None  # graph inputs may be overridden, even those with defaults
        if v.const is not None:
            return v.const
        p = self.producer(v)
        if p is None or p.op_type != "Constant" or p.domain not in ("", "ai.onnx"):
            return None
        for key, dtype in (("value", None), ("value_float", np.float32), ("value_int", np.int64)):
            if key in p.attrs:
                return np.asarray(p.attrs[key].value, dtype=dtype)
        return None

    def scalar(self, v: Value | None) -> float | None:
        """``v``'s value when it is a one-element constant of rank 0 or 1."""
        c = self.const(v)
        if c is None or c.size != 1 or c.ndim > 1 or c.dtype.kind not in "fiub":
            return None
        return float(c.reshape(()))

    def private(self, nodes: list[Node], root: Node) -> bool:
        """True when the outputs of ``nodes`` other than ``root`` are read only inside ``nodes``."""
        ids = {id(n) for n in nodes}
        for n in nodes:
            if n is root:
                continue
            for o in n.outputs:
                if id(o) in self.outputs or any(id(r) not in ids for r in self.readers_of(o)):
                    return False
        return True


def op_is(node: Node | None, *op_types: str) -> bool:
    """True when ``node`` is a default-domain node of one of ``op_types``."""
    return node is not None and node.domain in ("", "ai.onnx") and node.op_type in op_types


def other_input(node: Node, v: Value) -> Value | None:
    """The operand of binary ``node`` that is not ``v`` (None if ``v`` is both or neither)."""
    a, b = (node.inputs + [None, None])[:2]
    if a is v and b is not v:
        return b
    if b is v and a is not v:
        return a
    return None


def tensor_type(v: Value | None) -> TensorType | None:
    """``v``'s TensorType, or None when unknown or not a tensor."""
    t = None if v is None else v.type
    return t if isinstance(t, TensorType) else None


def is_float(v: Value | None) -> bool:
    """True when ``v`` is known to hold a floating-point tensor."""
    t = tensor_type(v)
    return t is not None and t.dtype.is_float


def same_shape(a: Value | None, b: Value | None) -> bool:
    """True when both shapes are known and equal dimension by dimension (no unknown dims)."""
    ta, tb = tensor_type(a), tensor_type(b)
    if ta is None or tb is None or ta.shape is None or tb.shape is None:
        return False
    return ta.shape == tb.shape and all(d is not None for d in ta.shape)


def reduce_axes(view: View, node: Node) -> list[int] | None:
    """The axes of a Reduce* node (attribute or, from opset 18/13, constant input)."""
    if "axes" in node.attrs:
        return [int(a) for a in node.attr("axes")]
    if len(node.inputs) > 1 and node.inputs[1] is not None:
        c = view.const(node.inputs[1])
        return None if c is None else [int(a) for a in c.reshape(-1)]
    return None


def is_last_axis(axis: int, v: Value | None) -> bool:
    """True when ``axis`` names the last dimension of ``v`` (-1, or rank-1 when known)."""
    if axis == -1:
        return True
    t = tensor_type(v)
    return t is not None and t.rank is not None and axis == t.rank - 1


def splice(graph: Graph, rewrites: list[tuple[Node, list[Node], list[Node]]]) -> None:
    """Apply (root, new nodes, removed nodes) rewrites: new nodes take the root's place."""
    at = {id(root): new for root, new, _ in rewrites}
    gone = {id(n) for _, _, removed in rewrites for n in removed}
    nodes: list[Node] = []
    for n in graph.nodes:
        if id(n) in at:
            nodes.extend(at[id(n)])
        elif id(n) not in gone:
            nodes.append(n)
    graph.nodes = nodes


def use_custom_domain(graph: Graph) -> None:
    """Declare the ``ai.torsh`` opset (version 1) in the model, for export and execution."""
    if graph.info is None:
        graph.info = ModelInfo(opset_imports={DOMAIN: 1})
    graph.info.opset_imports[DOMAIN] = 1


def apply_fusions(graph: Graph, rewrites: list[tuple[Node, list[Node], list[Node]]], counts: dict[str, int]) -> bool:
    """The end of a fusion pass: splice the ``rewrites`` into ``graph``, declare the custom
    opset, report how many of each fused kind were made; True when anything changed."""
    if not rewrites:
        return False
    splice(graph, rewrites)
    use_custom_domain(graph)
    for key, count in sorted(counts.items()):
        note(f"{count} × {key}")
    return True


def new_node(
    names: NameGen,
    op_type: str,
    inputs: list[Value | None],
    output: Value,
    attrs: dict[str, Attribute] | None = None,
    domain: str = "",
    hint: str = "",
) -> Node:
    """A node computing the existing Value ``output`` (which keeps its name and type)."""
    return Node(op_type, inputs, [output], dict(attrs or {}), domain, names.fresh(hint or op_type))


# --------------------------------------------------------------------------- polynomials
Poly = dict[int, float]
_POLY_OPS = ("Add", "Sub", "Mul", "Div", "Pow", "Neg")


def poly_mul(a: Poly, b: Poly) -> Poly:
    """The product of two polynomials."""
    out: Poly = {}
    for i, x in a.items():
        for j, y in b.items():
            out[i + j] = out.get(i + j, 0.0) + x * y
    return out


def poly_add(a: Poly, b: Poly, sign: float = 1.0) -> Poly:
    """``a + sign * b``."""
    out = dict(a)
    for k, v in b.items():
        out[k] = out.get(k, 0.0) + sign * v
    return out


def poly_close(p: Poly, target: Poly, rtol: float = 1e-4) -> bool:
    """True when ``p`` and ``target`` have the same non-zero terms, coefficients within ``rtol``."""
    scale = max((abs(v) for v in target.values()), default=1.0)
    keys = {k for k, v in p.items() if abs(v) > 1e-9 * scale} | set(target)
    return all(
        abs(p.get(k, 0.0) - target.get(k, 0.0)) <= rtol * abs(target.get(k, scale)) for k in keys
    )


def poly_of(
    view: View, v: Value | None, x: Value, nodes: list[Node], depth: int = 0
) -> Poly | None:
    """``v`` as a polynomial in ``x`` built from scalar constants and Add/Sub/Mul/Div/Pow/Neg.

    Nodes walked through are appended to ``nodes``; None when ``v`` is anything else.
    """
    if v is x:
        return {1: 1.0}
    c = view.scalar(v)
    if c is not None:
        return {0: c}
    p = view.producer(v)
    if depth > 8 or not op_is(p, *_POLY_OPS):
        return None
    nodes.append(p)
    a = poly_of(view, p.inputs[0], x, nodes, depth + 1)
    if a is None:
        return None
    if p.op_type == "Neg":
        return {k: -c for k, c in a.items()}
    if p.op_type in ("Div", "Pow"):
        c = view.scalar(p.inputs[1])
        if p.op_type == "Div":
            return None if not c else {k: v / c for k, v in a.items()}
        if c is None or c != int(c) or not 1 <= c <= 4:
            return None
        r: Poly = {0: 1.0}
        for _ in range(int(c)):
            r = poly_mul(r, a)
        return r
    b = poly_of(view, p.inputs[1], x, nodes, depth + 1)
    if b is None:
        return None
    if p.op_type == "Mul":
        return poly_mul(a, b)
    return poly_add(a, b, 1.0 if p.op_type == "Add" else -1.0)


def poly_leaves(view: View, v: Value | None, out: list[Value], depth: int = 0) -> None:
    """Non-constant values where the private arithmetic below ``v`` bottoms out."""
    if v is None or view.scalar(v) is not None:
        return
    p = view.producer(v)
    if depth > 8 or not op_is(p, *_POLY_OPS) or view.reader(v) is None:
        if not any(o is v for o in out):
            out.append(v)
        return
    for inp in p.inputs:
        poly_leaves(view, inp, out, depth + 1)
