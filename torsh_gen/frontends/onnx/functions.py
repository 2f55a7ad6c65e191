"""Expand ONNX ops into the function bodies their schemas define.

Many ONNX ops are specified as functions of simpler ones: SoftmaxCrossEntropyLoss is a
LogSoftmax and a NegativeLogLikelihoodLoss, NegativeLogLikelihoodLoss a Gather, a Where
and a reduction, Attention MatMuls, a Softmax and reshapes. A backend that has no kernel
for such an op can still run it through its body. The body comes from onnx itself (the
schema's function body, or its context-dependent function, built for the node's
attributes and input types), so it is exactly the op's specification.

``expand_functions`` replaces, in place, each node of the default domain that the caller
wants expanded by its body: formal inputs and outputs become the node's own values, the
body's intermediate values get fresh names, attributes that refer to the caller's
(``ref_attr_name``) take its values. Nodes the bodies introduce are expanded in turn.
A body written for an older opset than the model's is brought to the model's opset by
onnx's version converter; where it cannot be, the node stays and the backend's own "cannot
lower" error names it. Body nodes may hold subgraphs (LinearAttention's body is a Scan):
they are built by the importer's scoped builder, so their reads of the body's values
resolve, and every value they define is renamed fresh like the body's own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import onnx
import onnx.defs

from torsh_gen.errors import TorshGenError
from torsh_gen.frontends.onnx.exporter import _node_to_proto
from torsh_gen.frontends.onnx.importer import _GraphBuilder
from torsh_gen.ir.graph import Graph, Node, Value
from torsh_gen.ir.proto import attribute_from_proto, attribute_to_proto, type_to_proto
from torsh_gen.ir.rewrite import NameGen
from torsh_gen.ops.inference import infer_types

#: Rounds of expansion (a body's ops expanded in turn: SoftmaxCrossEntropyLoss →
#: NegativeLogLikelihoodLoss → its body is two).
MAX_DEPTH = 4


def expand_functions(graph: Graph, wanted: Callable[[Node], bool]) -> list[str]:
    """Replace the nodes of ``graph`` for which ``wanted`` holds and whose schema (at the
    graph's opset) defines a usable body; returns the op types expanded, once each, in the
    order met. Subgraphs are left alone."""
    opset = graph.opset
    expanded: list[str] = []
    if not opset:
        return expanded
    names = NameGen(graph)
    for _ in range(MAX_DEPTH):
        if not any(node.domain == "" and wanted(node) for node in graph.nodes):
            break
        try:  # context-dependent bodies depend on the input types
            infer_types(graph)
        except TorshGenError:
            pass  # the backend's own checks will name what is wrong
        changed = False
        nodes: list[Node] = []
        for node in graph.nodes:
            fn = _body(node, opset) if node.domain == "" and wanted(node) else None
            body = _instantiate(node, fn, names) if fn is not None else None
            if body is None:
                nodes.append(node)
                continue
            nodes.extend(body)
            if node.op_type not in expanded:
                expanded.append(node.op_type)
            changed = True
        graph.nodes = nodes
        if not changed:
            break
    return expanded


@dataclass
class _Body:
    """A function body ready to splice in: formal inputs and outputs, and nodes whose
    attribute references are resolved and whose ops are at the model's opset."""

    inputs: list[str]
    outputs: list[str]
    nodes: list[onnx.NodeProto]


def _body(node: Node, opset: int) -> _Body | None:
    """The node's function body at ``opset``, or None (a node with subgraphs, no schema, no
    body, a body with nodes of other domains, or one onnx's version converter cannot bring
    to ``opset``)."""
    if any(True for _ in node.subgraphs()):  # SequenceMap, If, Loop: bodies over subgraphs
        return None
    try:
        schema = onnx.defs.get_schema(node.op_type, opset, "")
    except onnx.defs.SchemaError:
        return None
    fn = None
    versions = [v for v in schema.context_dependent_function_opset_versions if v <= opset]
    if schema.has_context_dependent_function and versions:
        proto = _node_to_proto(node, value_info=False)
        types = [type_to_proto(v.type if v is not None else None).SerializeToString() for v in node.inputs]
        try:
            data = schema.get_context_dependent_function_with_opset_version(max(versions), proto.SerializeToString(), types)
        except Exception:  # onnx declines (e.g. an input type it needs is unknown)
            return None
        if data:
            fn = onnx.FunctionProto()
            fn.ParseFromString(data)
    else:
        versions = [v for v in schema.function_opset_versions if v <= opset]
        if schema.has_function and versions:
            data = schema.get_function_with_opset_version(max(versions))  # serialized
            fn = onnx.FunctionProto()
            fn.ParseFromString(data)
    if fn is None or not fn.node:
        return None
    defaults = _defaults(schema, fn)
    nodes = []
    for n in fn.node:
        if n.domain not in ("", "ai.onnx") or not _default_domain_only(n):
            return None
        nodes.append(_resolved(n, node, defaults))
    fn_opset = {o.domain: o.version for o in fn.opset_import}.get("", opset)
    if fn_opset != opset:
        nodes = _converted(nodes, list(fn.input), list(fn.output), fn_opset, opset)
        if nodes is None:
            return None
    return _Body(list(fn.input), list(fn.output), nodes)


def _default_domain_only(n: onnx.NodeProto) -> bool:
    """True when ``n`` and every node of its subgraphs are of the default domain."""
    for a in n.attribute:
        graphs = [a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)
        if any(m.domain not in ("", "ai.onnx") or not _default_domain_only(m) for g in graphs for m in g.node):
            return False
    return True


def _resolved(n: onnx.NodeProto, node: Node, defaults: dict[str, onnx.AttributeProto]) -> onnx.NodeProto:
    """A copy of body node ``n`` whose attribute references (in its subgraphs too) hold the
    calling node's values, else the defaults; a reference with no value anywhere is dropped
    (the body's op takes its own default)."""
    resolved = onnx.NodeProto()
    resolved.CopyFrom(n)
    del resolved.attribute[:]
    for a in n.attribute:
        if a.ref_attr_name:
            if a.ref_attr_name in node.attrs:
                resolved.attribute.append(attribute_to_proto(a.name, node.attrs[a.ref_attr_name]))
            elif a.ref_attr_name in defaults:
                value = resolved.attribute.add()
                value.CopyFrom(defaults[a.ref_attr_name])
                value.name = a.name
            continue
        value = resolved.attribute.add()
        value.CopyFrom(a)
        for g in [value.g] if a.type == onnx.AttributeProto.GRAPH else value.graphs:
            inner = [_resolved(m, node, defaults) for m in g.node]
            del g.node[:]
            g.node.extend(inner)
    return resolved


def _defaults(schema: onnx.defs.OpSchema, fn: onnx.FunctionProto) -> dict[str, onnx.AttributeProto]:
    """The values an attribute reference takes when the node leaves the attribute out: the
    function's own defaults, else the op's (MeanVarianceNormalization's ``axes`` is
    [0, 2, 3], not "every axis")."""
    out = {
        name: attr.default_value
        for name, attr in schema.attributes.items()
        if attr.default_value.type != onnx.AttributeProto.UNDEFINED
    }
    out.update({a.name: a for a in fn.attribute_proto})
    return out


def _converted(
    nodes: list[onnx.NodeProto], inputs: list[str], outputs: list[str], source: int, target: int
) -> list[onnx.NodeProto] | None:
    """``nodes`` (ops at opset ``source``) rewritten for opset ``target`` by onnx's version
    converter, or None where it cannot."""
    import onnx.version_converter

    untyped = onnx.TypeProto()
    graph = onnx.helper.make_graph(
        nodes, "body",
        [onnx.helper.make_value_info(name, untyped) for name in inputs if name],
        [onnx.helper.make_value_info(name, untyped) for name in outputs if name],
    )
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", source)])
    try:
        return list(onnx.version_converter.convert_version(model, target).graph.node)
    except Exception:  # the converter has no adapter for some op of the body
        return None


def _instantiate(node: Node, fn: _Body, names: NameGen) -> list[Node] | None:
    """The body's nodes reading and writing the node's values; None when the body reads a
    name before defining it or leaves one of the node's outputs unwritten."""
    defined = {"", *fn.inputs}
    for n in fn.nodes:
        if any(name not in defined for name in n.input):
            return None
        defined.update(n.output)
    used = [k for k, v in enumerate(node.outputs) if v.name]
    if any(k >= len(fn.outputs) or fn.outputs[k] not in defined for k in used):
        return None
    scope: dict[str, Value | None] = {"": None}
    for k, name in enumerate(fn.inputs):
        scope[name] = node.inputs[k] if k < len(node.inputs) else None
    outputs = {fn.outputs[k]: node.outputs[k] for k in used}
    prefix = f"{node.name or node.op_type}/"
    body: list[Node] = []
    for n in fn.nodes:
        nested = any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in n.attribute)
        load = _subgraph_loader(scope, names, prefix) if nested else None
        try:
            attrs = {a.name: attribute_from_proto(a, graph_loader=load) for a in n.attribute}
        except TorshGenError:  # a subgraph reads a name nothing defines
            return None
        ins = [scope[name] for name in n.input]
        outs = []
        for name in n.output:
            v = outputs.get(name) or Value(names.fresh(prefix + name))
            scope[name] = v
            outs.append(v)
        body.append(Node(n.op_type, ins, outs, attrs, "", names.fresh(prefix + (n.name or n.op_type))))
    return body


def _subgraph_loader(scope: dict[str, Value | None], names: NameGen, prefix: str) -> Callable[[onnx.GraphProto], Graph]:
    """Builds a body node's subgraph as the importer does (its reads resolve first inside it,
    then in ``scope``, the body's values so far) and renames everything it defines fresh:
    the body's names mean nothing in the model, and a nested graph may not shadow them."""
    root = _GraphBuilder(None, "function body")
    root.scope = {name: v for name, v in scope.items() if name and v is not None}

    def load(gp: onnx.GraphProto) -> Graph:
        graph = _GraphBuilder(root, "function body").build(gp)
        _rename_defined(graph, names, prefix)
        return graph

    return load


def _rename_defined(graph: Graph, names: NameGen, prefix: str) -> None:
    """Give every value and node that ``graph`` (or a graph nested in it) defines a fresh name."""
    for v in graph.values():
        if v.name:
            v.name = names.fresh(prefix + v.name)
    for n in graph.nodes:
        n.name = names.fresh(prefix + (n.name or n.op_type))
        for sg in n.subgraphs():
            _rename_defined(sg, names, prefix)


__all__ = ["expand_functions"]
