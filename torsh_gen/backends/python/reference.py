"""The fallback emitter: call the op's reference kernel, vendored into the artifact.

Any node without a fast emitter (or whose emitter declines its attributes or types) runs
the same numpy kernel the reference interpreter uses, so the artifact supports every op
the registry does. The Model builds one ``_refcall.Kernel`` per such node at init (op,
opset and attributes fixed at compile time); subgraph attributes become placeholders
whose bodies are generated functions passed at call time.
"""

from __future__ import annotations

from torsh_gen.backends.python.context import NodeCtx, RefKernel
from torsh_gen.backends.python.literals import literal
from torsh_gen.errors import UnsupportedOpError
from torsh_gen.ir.graph import Attribute, AttrKind, Graph
from torsh_gen.ir.types import MapType, OptionalType, SequenceType, TensorType, Type
from torsh_gen.passes.memplan import FRESH_OPS


def type_src(t: Type | None) -> str:
    """Source building ``t`` with the vendored IR types (for subgraph placeholders)."""
    if t is None:
        return "None"
    if isinstance(t, TensorType):
        shape = None if t.shape is None else tuple(t.shape)
        return f"_refcall.tensor({int(t.dtype)}, {literal(shape)})"
    if isinstance(t, SequenceType):
        return f"_refcall.sequence({type_src(t.elem)})"
    if isinstance(t, OptionalType):
        return f"_refcall.optional({type_src(t.elem)})"
    if isinstance(t, MapType):
        return f"_refcall.map_type({int(t.key)}, {type_src(t.value)})"
    return "None"


def _graph_src(g: Graph) -> str:
    ins = ", ".join(type_src(v.type) for v in g.inputs)
    outs = ", ".join(type_src(v.type) for v in g.outputs)
    return f"_refcall.placeholder([{ins}], [{outs}])"


def _attr_src(ctx: NodeCtx, name: str, a: Attribute) -> str:
    k = a.kind
    v = a.value
    if k in (AttrKind.INT, AttrKind.FLOAT, AttrKind.STRING, AttrKind.INTS, AttrKind.FLOATS, AttrKind.STRINGS, AttrKind.UNDEFINED):
        src = literal(v)
    elif k == AttrKind.TENSOR:
        src = ctx.weight(v, f"{ctx.node.op_type}_{name}")
    elif k == AttrKind.TENSORS:
        src = "[" + ", ".join(ctx.weight(t, f"{ctx.node.op_type}_{name}") for t in v) + "]"
    elif k == AttrKind.GRAPH:
        src = _graph_src(v)
    elif k == AttrKind.GRAPHS:
        src = "[" + ", ".join(_graph_src(g) for g in v) + "]"
    elif k == AttrKind.TYPE_PROTO:
        src = type_src(v)
    elif k == AttrKind.TYPE_PROTOS:
        src = "[" + ", ".join(type_src(t) for t in v) + "]"
    else:
        raise UnsupportedOpError(
            f"node {ctx.node.name!r} ({ctx.node.op_type}): attribute {name!r} of kind {k.name} "
            "cannot be compiled; fold it into a constant before compiling"
        )
    return f"({int(k)}, {src})"


def tuple_src(items: list[str]) -> str:
    """A tuple display without a trailing comma black would treat as magic."""
    if len(items) == 1:
        return f"({items[0]},)"
    return f"({', '.join(items)})"


def emit_reference(ctx: NodeCtx) -> None:
    """Call the node's vendored reference kernel."""
    node, module = ctx.node, ctx.module
    module.ref_modules.add(type(ctx.spec).__module__)
    attr = module.names.name(node.op_type, prefix="op")
    items = ", ".join(f"{literal(n)}: {_attr_src(ctx, n, a)}" for n, a in sorted(node.attrs.items()))
    graphs = [n for n, a in sorted(node.attrs.items()) if a.kind in (AttrKind.GRAPH, AttrKind.GRAPHS)]
    fresh = node.op_type in FRESH_OPS and node.domain in ("", "ai.torsh")
    module.ref_kernels.append(
        RefKernel(attr, node.op_type, node.domain, module.opsets.get(node.domain, module.opsets.get("", 0)),
                  ctx.opset, "{" + items + "}", len(node.outputs), graphs)
    )
    args = tuple_src(["None" if x is None else x for x in ctx.ins])
    if graphs:
        fns = []
        for n in graphs:
            a = node.attrs[n]
            gs = [a.value] if a.kind == AttrKind.GRAPH else list(a.value)
            names = [ctx.subgraph(g, f"{node.op_type}_{n}") for g in gs]
            fns.append(f"{literal(n)}: {names[0] if a.kind == AttrKind.GRAPH else '[' + ', '.join(names) + ']'}")
        call = f"self.{attr}.call({args}, {{{', '.join(fns)}}}, {fresh})"
    else:
        call = f"self.{attr}.call({args}, None, {fresh})"
    if not ctx.outs:
        ctx.emit(call)
    elif len(ctx.outs) == 1:
        ctx.emit(f"{ctx.y(0)} = {call}[0]")
    else:
        ctx.emit(f"{', '.join(ctx.outs)} = {call}")
