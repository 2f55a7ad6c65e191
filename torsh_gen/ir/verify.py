"""The IR verifier: the structural rules every pass must leave intact.

Checks, for a graph and its nested graphs:
- single assignment: each Value is defined once and value names are unique in scope;
- order and acyclicity: every node input is defined earlier in the node list, by an
  enclosing graph (outer scope) or is a graph input/initializer;
- consistency: initializer arrays match their declared types, graph outputs exist,
  attribute values match their kinds.

Op-level type rules (does an op accept these input types?) live in ``ops.inference``.
"""

from __future__ import annotations

import numpy as np

from torsh_gen.errors import GraphError
from torsh_gen.ir.graph import AttrKind, Graph, Node, Value
from torsh_gen.ir.types import DType, TensorType


def verify(graph: Graph) -> None:
    """Raise GraphError describing the first broken rule in ``graph``; return None if valid."""
    _verify(graph, outer=set(), outer_names=set())


def _verify(graph: Graph, outer: set[int], outer_names: set[str]) -> None:
    defined: set[int] = set(outer)
    names: set[str] = set()
    where = f"graph '{graph.name}'"

    def define(v: Value, what: str) -> None:
        if id(v) in defined and id(v) not in outer:
            raise GraphError(f"{where}: value '{v.name}' is assigned twice ({what})")
        if v.name and v.name in names:
            raise GraphError(f"{where}: two values are named '{v.name}'; names must be unique")
        if v.name and v.name in outer_names:
            raise GraphError(f"{where}: value '{v.name}' shadows a value of an enclosing graph")
        defined.add(id(v))
        if v.name:
            names.add(v.name)

    for v in graph.inputs:
        define(v, "graph input")
    for v in graph.initializers:
        if v.const is None:
            raise GraphError(f"{where}: initializer '{v.name}' has no data")
        _check_const(v, where)
        if id(v) not in defined:
            define(v, "initializer")
    for node in graph.nodes:
        for i, v in enumerate(node.inputs):
            if v is not None and id(v) not in defined:
                raise GraphError(
                    f"{where}: node '{_label(node)}' input {i} '{v.name}' is not defined before it "
                    "(undefined value or a cycle)"
                )
        _check_attrs(node, where)
        for sg in node.subgraphs():
            _verify(sg, defined | outer, names | outer_names)
        for v in node.outputs:
            if v.producer is not node:
                raise GraphError(f"{where}: output '{v.name}' of node '{_label(node)}' has a wrong producer link")
            if v.name or id(v) in defined:
                define(v, f"output of node '{_label(node)}'")
    for v in graph.outputs:
        if id(v) not in defined:
            raise GraphError(f"{where}: graph output '{v.name}' is never defined")


def _check_const(v: Value, where: str) -> None:
    arr = v.const
    t = v.type
    if not isinstance(arr, np.ndarray):
        raise GraphError(f"{where}: initializer '{v.name}' is not an array")
    if isinstance(t, TensorType):
        try:
            actual = DType.from_numpy(arr.dtype)
        except ValueError:
            raise GraphError(f"{where}: initializer '{v.name}' has unsupported dtype {arr.dtype}") from None
        if actual != t.dtype:
            raise GraphError(f"{where}: initializer '{v.name}' holds {actual.name} data but is typed {t.dtype.name}")
        if t.shape is not None and t.is_static and tuple(t.shape) != tuple(arr.shape):
            raise GraphError(f"{where}: initializer '{v.name}' has shape {arr.shape} but is typed {t}")


_ATTR_CHECKS = {
    AttrKind.INT: lambda x: isinstance(x, (int, np.integer)),
    AttrKind.FLOAT: lambda x: isinstance(x, (float, int, np.floating)),
    AttrKind.STRING: lambda x: isinstance(x, (str, bytes)),
    AttrKind.INTS: lambda x: isinstance(x, list) and all(isinstance(i, (int, np.integer)) for i in x),
    AttrKind.FLOATS: lambda x: isinstance(x, list),
    AttrKind.STRINGS: lambda x: isinstance(x, list),
    AttrKind.TENSOR: lambda x: isinstance(x, np.ndarray),
    AttrKind.GRAPH: lambda x: isinstance(x, Graph),
    AttrKind.GRAPHS: lambda x: isinstance(x, list) and all(isinstance(g, Graph) for g in x),
}


def _check_attrs(node: Node, where: str) -> None:
    for name, a in node.attrs.items():
        if a.ref and a.value is None:
            continue
        check = _ATTR_CHECKS.get(a.kind)
        if check is not None and not check(a.value):
            raise GraphError(f"{where}: attribute '{name}' of node '{_label(node)}' is not a valid {a.kind.name}")


def _label(node: Node) -> str:
    return node.name or node.op_type
