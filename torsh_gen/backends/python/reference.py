"""The fallback emitter: call the op's reference kernel, vendored into the artifact.

Any node without a fast emitter (or whose emitter declines its attributes or types) runs
the same numpy kernel the reference interpreter uses, so the artifact supports every op
the registry does. The Model builds one ``_refcall.Kernel`` per such node at init (op,
opset and attributes fixed at compile time); subgraph attributes become placeholders
whose bodies are generated functions passed at call time.
"""

from __future__ import annotations

import keyword
import re

from torsh_gen.backends.python.context import NodeCtx, RefKernel
from torsh_gen.backends.python.literals import literal
from torsh_gen.errors import UnsupportedOpError
from torsh_gen.ir.graph import Attribute, AttrKind, Graph
from torsh_gen.ir.types import MapType, OptionalType, SequenceType, TensorType, Type
from torsh_gen.passes.memplan import makes_new_memory


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


_KERNEL_PATH = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$")


def emit_plugin_kernel(ctx: NodeCtx) -> None:
    """Call a plugin op's own kernel (``spec.artifact_kernel``), imported by the artifact.

    Plugin specs import torsh_gen, so they cannot be vendored; their kernel module can be
    imported instead (it needs only numpy/numba and the plugin package the user installed).
    It is called as ``fn(*inputs, **attrs)`` with the spec's attributes fixed at compile time.
    """
    node, path = ctx.node, ctx.spec.artifact_kernel
    if not _KERNEL_PATH.match(path):
        raise UnsupportedOpError(f"op {node.qualified_op}: artifact_kernel {path!r} is not 'module:function'")
    module_name, fn = path.split(":")
    alias = ctx.module.plugin_kernels.get(path) or ctx.module.names.name(f"{fn}", prefix="_p")
    ctx.module.plugin_kernels[path] = alias
    args = ["None" if x is None else x for x in ctx.ins]
    values = ctx.attrs.as_dict()
    for name in sorted(ctx.spec.attrs):
        kind = ctx.spec.attrs[name].kind
        if not name.isidentifier() or keyword.iskeyword(name) or kind in (AttrKind.GRAPH, AttrKind.GRAPHS):
            raise UnsupportedOpError(f"op {node.qualified_op}: attribute {name!r} cannot be passed to a plugin kernel")
        v = values.get(name)
        args.append(f"{name}={ctx.weight(v, name) if kind == AttrKind.TENSOR and v is not None else literal(v)}")
    call = f"{alias}({', '.join(args)})"
    if not ctx.outs:
        ctx.emit(call)
    elif len(ctx.outs) == 1:
        ctx.emit(f"{ctx.y(0)} = {call}")
    else:
        ctx.emit(f"{', '.join(ctx.outs)} = {call}")


def emit_reference(ctx: NodeCtx) -> None:
    """Call the node's vendored reference kernel (or a plugin op's own kernel)."""
    if ctx.spec.artifact_kernel:
        emit_plugin_kernel(ctx)
        return
    node, module = ctx.node, ctx.module
    origin = type(ctx.spec).__module__
    if origin.split(".")[0] != "torsh_gen":  # a plugin's spec imports torsh_gen: not vendorable
        raise UnsupportedOpError(
            f"op {node.qualified_op} (from {origin}) cannot be compiled: its spec has no "
            "artifact_kernel; set artifact_kernel = 'module:function' (see docs/scaffold-op.md)"
        )
    module.ref_modules.add(type(ctx.spec).__module__)
    attr = module.names.name(node.op_type, prefix="op")
    items = ", ".join(f"{literal(n)}: {_attr_src(ctx, n, a)}" for n, a in sorted(node.attrs.items()))
    graphs = [n for n, a in sorted(node.attrs.items()) if a.kind in (AttrKind.GRAPH, AttrKind.GRAPHS)]
    fresh = makes_new_memory(node)
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
