"""Elementwise fusion: chains and DAGs of elementwise ops become one FusedElementwise.

Every elementwise op run on its own reads its inputs from memory and writes its output back;
a chain of k of them moves k times the bytes of one kernel that computes the whole
expression per element. This pass groups, in the top-level graph, the largest sets of
elementwise nodes (unary math, binary arithmetic with broadcasting, comparisons and logic,
Where, Clip, Cast, activations with attributes) whose intermediate values are read only
inside the set and are not graph outputs, and replaces each set of two or more nodes by::

    ai.torsh::FusedElementwise(x0, x1, ...)  body=<graph: the same nodes on fresh values>

The group's one result is the last node's output Value (name and type kept). Its external
inputs become the fused node's inputs in order of first use; scalar constants are copied
into the body as initializers, larger constants stay outer inputs. Body names are fresh
across the whole model, so the verifier's no-shadowing rule holds and exports stay valid.

Preconditions: verified, topologically sorted graph. Run after fuse_epilogues so that
activations go into GEMM/conv epilogues first. Sets the ``ai.torsh`` opset import to 1.
"""

from __future__ import annotations

from torsh_gen.ir.graph import Attribute, AttrKind, Graph, Node, Value
from torsh_gen.ir.rewrite import NameGen
from torsh_gen.ir.types import DType, TensorType
from torsh_gen.ops.fused import DOMAIN
from torsh_gen.ops.inference import infer_types
from torsh_gen.passes.manager import note, register_pass
from torsh_gen.passes.matching import View, op_is, splice, use_custom_domain

#: Default-domain ops whose every output element depends only on the same (broadcast) element
#: of each input.
ELEMENTWISE = frozenset(
    {
        # unary math
        "Abs", "Neg", "Exp", "Log", "Sqrt", "Reciprocal", "Floor", "Ceil", "Round", "Sign",
        "Sin", "Cos", "Tan", "Asin", "Acos", "Atan", "Sinh", "Cosh", "Asinh", "Acosh", "Atanh",
        "Erf", "Not", "IsNaN", "IsInf", "BitwiseNot",
        # binary and variadic arithmetic (multidirectional broadcasting)
        "Add", "Sub", "Mul", "Div", "Pow", "Mod", "Max", "Min", "Sum", "Mean",
        "BitwiseAnd", "BitwiseOr", "BitwiseXor",
        # comparisons and logic
        "Equal", "Less", "LessOrEqual", "Greater", "GreaterOrEqual", "And", "Or", "Xor",
        "Where", "Clip", "Cast",
        # activations (some with attributes)
        "Relu", "LeakyRelu", "PRelu", "Elu", "Selu", "Celu", "Sigmoid", "HardSigmoid", "HardSwish",
        "Tanh", "Softplus", "Softsign", "ThresholdedRelu", "Gelu", "Mish", "Shrink",
    }
)  # fmt: skip


def _fusible(node: Node) -> bool:
    """An elementwise node with one typed tensor output, no subgraph and no string tensors.

    Integer vectors and scalars are left alone: they are shape arithmetic, which later
    stages (type inference, code generators) want to see as plain ops.
    """
    if (
        not op_is(node, *ELEMENTWISE)
        or len(node.outputs) != 1
        or any(True for _ in node.subgraphs())
    ):
        return False
    t = node.outputs[0].type
    if not isinstance(t, TensorType) or t.rank is None or (t.dtype.is_integer and t.rank <= 1):
        return False
    for v in node.inputs:
        if v is not None and isinstance(v.type, TensorType) and v.type.dtype == DType.STRING:
            return False
    return t.dtype != DType.STRING


def find_groups(graph: Graph) -> list[list[Node]]:
    """Groups of elementwise nodes (in node order) whose intermediates stay inside the group.

    Walks the nodes backwards: a node joins the group of its readers when all of them are in
    one group and its output is not a graph output; otherwise it starts a group.
    """
    view = View(graph)
    group_of: dict[int, int] = {}
    groups: list[list[Node]] = []
    for node in reversed(graph.nodes):
        if not _fusible(node):
            continue
        out = node.outputs[0]
        readers = view.readers_of(out)
        owners = {group_of.get(id(r)) for r in readers}
        if readers and len(owners) == 1 and None not in owners and id(out) not in view.outputs:
            g = owners.pop()
        else:
            g = len(groups)
            groups.append([])
        group_of[id(node)] = g
        groups[g].append(node)
    return [list(reversed(g)) for g in groups if len(g) > 1]


def _body(view: View, names: NameGen, group: list[Node]) -> tuple[Graph, list[Value]]:
    """The body graph computing ``group`` on fresh values, and the fused node's outer inputs."""
    inside: dict[int, Value] = {}
    body = Graph(names.fresh("fused_body"))
    outer: list[Value] = []
    for node in group:
        for v in node.inputs:
            if v is None or id(v) in inside:
                continue
            c = view.const(v)
            if c is not None and c.size == 1:
                inner = body.add_initializer(names.fresh(f"{v.name}_c"), c.copy())
            else:
                inner = Value(names.fresh(f"{v.name}_in"), v.type)
                body.inputs.append(inner)
                outer.append(v)
            inside[id(v)] = inner
        outs = [Value(names.fresh(f"{o.name}_e"), o.type) for o in node.outputs]
        clone = Node(
            node.op_type,
            [None if v is None else inside[id(v)] for v in node.inputs],
            outs,
            dict(node.attrs),
            node.domain,
            names.fresh(node.name or node.op_type.lower()),
        )
        body.nodes.append(clone)
        inside[id(node.outputs[0])] = outs[0]
    body.outputs = [inside[id(group[-1].outputs[0])]]
    return body, outer


@register_pass("fuse_elementwise", custom_ops=True)
def fuse_elementwise(graph: Graph) -> bool:
    """Fuse chains of elementwise ops into ai.torsh FusedElementwise nodes with a body graph."""
    infer_types(graph)
    groups = find_groups(graph)
    if not groups:
        return False
    view = View(graph)
    names = NameGen(graph)
    rewrites = []
    for group in groups:
        body, outer = _body(view, names, group)
        root = group[-1]
        attrs = {"body": Attribute(AttrKind.GRAPH, body)}
        fused = Node(
            "FusedElementwise",
            outer,
            [root.outputs[0]],
            attrs,
            DOMAIN,
            names.fresh("fused_elementwise"),
        )
        rewrites.append((root, [fused], group))
    splice(graph, rewrites)
    use_custom_domain(graph)
    sizes = sorted(len(g) for g in groups)
    note(f"{len(groups)} groups of {sum(sizes)} elementwise nodes (largest {sizes[-1]})")
    return True
