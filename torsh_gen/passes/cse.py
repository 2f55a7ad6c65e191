"""Common-subexpression elimination: compute each distinct value once.

Preconditions: none. Two nodes are merged when they have the same op, domain, overload,
attributes, inputs (the same Value objects, not just equal names) and number of outputs,
and the op is deterministic and holds no subgraph. Identical constant initializers (same
dtype, shape and bytes) are merged first, so nodes reading equal weights merge too;
initializers that users may override (graph inputs with a default, IR 4 on) never are.

Readers of a merged node's outputs read the first node's outputs; a graph output keeps
its name (the surviving value takes it), and a node is left alone when merging would
give one value two output names. Runs in every nested graph too.
"""

from __future__ import annotations

import hashlib
from collections.abc import Hashable

import numpy as np

from torsh_gen.errors import TorshGenError
from torsh_gen.ir.graph import Attribute, AttrKind, Graph, Node, Value
from torsh_gen.ops.registry import lookup
from torsh_gen.passes.manager import note, register_pass
from torsh_gen.passes.rewriter import overridable_inputs


@register_pass("eliminate_common_subexpressions")
def eliminate_common_subexpressions(graph: Graph) -> bool:
    """Merge identical deterministic nodes and identical constant initializers."""
    opsets = graph.info.opset_imports if graph.info else {"": 0}
    legacy = graph.info is not None and graph.info.ir_version < 4
    consts, nodes = _cse(graph, opsets, legacy, top=True)
    if consts:
        note(f"merged {consts} duplicate initializers")
    if nodes:
        note(f"merged {nodes} duplicate nodes")
    return bool(consts or nodes)


def _cse(graph: Graph, opsets: dict[str, int], legacy: bool, top: bool) -> tuple[int, int]:
    subst: dict[int, Value] = {}
    consts = _merge_initializers(graph, subst, legacy, top)
    nodes = _merge_nodes(graph, subst, opsets)
    if subst:
        _apply(graph, subst)
    for n in graph.nodes:
        for sg in n.subgraphs():
            c, k = _cse(sg, opsets, legacy, top=False)
            consts += c
            nodes += k
    return consts, nodes


def _merge_initializers(graph: Graph, subst: dict[int, Value], legacy: bool, top: bool) -> int:
    """Map each duplicate initializer to the first equal one and drop it."""
    pinned = {id(v) for v in graph.outputs}
    # Before IR 4 every initializer is listed as an input too; those are plain constants.
    if top and not legacy:
        pinned |= overridable_inputs(graph)
    # Hash only arrays that share dtype, shape and a sample of elements with another one:
    # big weights are nearly always unique, and hashing them all would cost a pass over them.
    groups: dict[Hashable, list[Value]] = {}
    for v in graph.initializers:
        if id(v) not in pinned and v.const is not None:
            groups.setdefault(_sample_key(v.const), []).append(v)
    dropped: set[int] = set()
    for group in groups.values():
        seen: dict[Hashable, Value] = {}
        for v in group if len(group) > 1 else ():
            key = _array_key(v.const)
            first = seen.setdefault(key, v)
            if first is not v and _same_array(first.const, v.const):
                subst[id(v)] = first
                dropped.add(id(v))
    if dropped:
        graph.initializers = [v for v in graph.initializers if id(v) not in dropped]
        graph.inputs = [v for v in graph.inputs if id(v) not in dropped]
    return len(dropped)


def _sample_key(a: np.ndarray) -> Hashable:
    flat = a.reshape(-1)
    step = max(flat.size // 64, 1)
    sample = flat[::step][:64]
    if a.dtype == np.dtype(object):
        return (a.dtype.str, a.shape, repr(sample.tolist()))
    return (a.dtype.str, a.shape, sample.tobytes())


def _array_key(a: np.ndarray) -> Hashable:
    if a.dtype == np.dtype(object):
        data = repr(a.ravel().tolist()).encode()
    else:
        data = np.ascontiguousarray(a).tobytes()
    return (a.dtype.str, a.shape, hashlib.blake2b(data, digest_size=16).digest())


def _same_array(a: np.ndarray, b: np.ndarray) -> bool:
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype == np.dtype(object):
        return a.ravel().tolist() == b.ravel().tolist()
    return np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(b).tobytes()


def _merge_nodes(graph: Graph, subst: dict[int, Value], opsets: dict[str, int]) -> int:
    """Drop nodes equal to an earlier one, recording output substitutions in ``subst``."""
    outputs = {id(v) for v in graph.outputs}
    seen: dict[Hashable, Node] = {}
    kept: list[Node] = []
    merged = 0
    for node in graph.nodes:
        key = _node_key(node, subst, opsets)
        first = None if key is None else seen.get(key)
        if first is None or not _can_merge(first, node, outputs):
            if key is not None and first is None:
                seen[key] = node
            kept.append(node)
            continue
        for a, b in zip(first.outputs, node.outputs):
            if not b.name:
                continue
            if not a.name or id(b) in outputs:
                a.name = b.name  # an unnamed output gets used, or a graph output keeps its name
                a.type = a.type or b.type
                if id(b) in outputs:
                    outputs.add(id(a))
            subst[id(b)] = a
        merged += 1
    graph.nodes = kept
    return merged


def _can_merge(first: Node, node: Node, outputs: set[int]) -> bool:
    """False when an output of both nodes is a graph output: one value can't have two names."""
    return not any(
        id(a) in outputs and id(b) in outputs for a, b in zip(first.outputs, node.outputs)
    )


def _node_key(node: Node, subst: dict[int, Value], opsets: dict[str, int]) -> Hashable | None:
    if not node.outputs or any(True for _ in node.subgraphs()):
        return None
    try:
        if not lookup(node.op_type, node.domain, opsets.get(node.domain, 0)).deterministic:
            return None
    except TorshGenError:
        return None
    inputs = tuple(None if v is None else id(subst.get(id(v), v)) for v in node.inputs)
    attrs = tuple(sorted((k, _attr_key(a)) for k, a in node.attrs.items()))
    if any(a is None for _, a in attrs):
        return None
    return (node.domain, node.op_type, node.overload, inputs, attrs, len(node.outputs))


def _attr_key(a: Attribute) -> Hashable | None:
    if a.ref:
        return ("ref", a.ref)
    v = a.value
    if a.kind == AttrKind.TENSOR:
        return ("tensor", _array_key(np.asarray(v)))
    if a.kind == AttrKind.FLOAT:
        return (int(a.kind), repr(float(v)))  # repr tells -0.0 from 0.0
    if a.kind == AttrKind.FLOATS:
        return (int(a.kind), tuple(repr(float(x)) for x in v))
    if a.kind in (AttrKind.INTS, AttrKind.STRINGS):
        return (int(a.kind), tuple(v))
    if a.kind in (AttrKind.INT, AttrKind.STRING):
        return (int(a.kind), v)
    return None  # graphs, sparse tensors, type protos: never merged


def _apply(graph: Graph, subst: dict[int, Value]) -> None:
    """Make every reader (nested graphs and graph outputs included) read the survivors."""
    for old_id, new in list(subst.items()):
        while id(new) in subst:  # chains from initializer merges feeding node merges
            new = subst[id(new)]
        subst[old_id] = new

    def sub(v: Value | None) -> Value | None:
        return None if v is None else subst.get(id(v), v)

    graphs = [graph] + [sg for _, n in graph.walk() for sg in n.subgraphs()]
    for g in graphs:
        for n in g.nodes:
            n.inputs = [sub(v) for v in n.inputs]
        g.outputs = [sub(v) for v in g.outputs]
