"""Emit one Graph as one Python function: dispatch each node to its emitter, free values.

The top-level graph becomes the method ``Model._forward``; nested graphs (If branches,
Loop/Scan bodies) become nested functions defined just before the node that runs them,
so they read outer-scope values as closures. After each node, values whose last reader
it was are deleted (``del``), so peak memory follows the live set as in the reference
interpreter. Each node's code starts with a ``# @node K:`` marker comment; after
formatting, the markers give the generated-line → node map used in error messages.
"""

from __future__ import annotations

from torsh_gen.backends.python.context import Buffer, Lines, Module, NodeCtx, np_dtype
from torsh_gen.backends.python.emitters import emitter_for
from torsh_gen.backends.python.names import comment_text
from torsh_gen.backends.python.reference import emit_reference
from torsh_gen.backends.python.upcast import emit_fast
from torsh_gen.ir.graph import Graph, Node, Value, outer_reads
from torsh_gen.ir.types import TensorType
from torsh_gen.ops.registry import lookup

MARKER = "# @node "


def emit_function(module: Module, graph: Graph, fn_name: str, params: list[str], out: Lines, *, method: bool, top: bool = False) -> None:
    """Write ``def fn_name(params): ...`` computing ``graph``'s outputs into ``out``."""
    sig = ", ".join((["self"] if method else []) + params)
    out.add(f"def {fn_name}({sig}):")
    body = Lines(out.indent + 1)
    for v, p in zip(graph.inputs, params):
        module.expr[id(v)] = p
    returned = {id(v) for v in graph.outputs}
    _emit_nodes(module, graph, body, top, {id(v) for v in graph.inputs}, returned)
    results = [module.value_expr(v) for v in graph.outputs]
    if top:
        results = [_owned(module, graph, v, e) for v, e in zip(graph.outputs, results)]
    else:  # bodies return arrays, as the reference interpreter's do (numpy gives 0-d scalars)
        results = [f"_rt.array({e})" for e in results]
    if len(results) == 1:
        body.add(f"return ({results[0]},)")
    else:
        body.add(f"return ({', '.join(results)})")
    out.lines.extend(body.lines)


def _emit_nodes(module: Module, graph: Graph, body: Lines, top: bool, local: set[int], returned: set[int]) -> None:
    """Emit every node of ``graph`` into ``body``, deleting values after their last reader."""
    last = _last_uses(graph)
    for i, node in enumerate(graph.nodes):
        emit_node(module, node, body, top)
        local.update(id(v) for v in node.outputs)
        dead = [v for v in last.get(i, []) if id(v) in local and id(v) not in returned]
        dead += [v for v in node.outputs if id(v) not in last["read"] and id(v) not in returned]
        names = sorted({module.expr[id(v)] for v in dead if module.expr.get(id(v), "").isidentifier()})
        if names:
            body.add(f"del {', '.join(names)}")


def inline_graph(module: Module, graph: Graph, args: list[str], lines: Lines) -> list[str]:
    """Emit ``graph``'s nodes in place (inputs bound to ``args``); returns its output expressions."""
    for v, a in zip(graph.inputs, args):
        module.expr[id(v)] = a
    _emit_nodes(module, graph, lines, False, set(), {id(v) for v in graph.outputs})
    return [module.value_expr(v) for v in graph.outputs]


def _owned(module: Module, graph: Graph, v: Value, expr: str) -> str:
    """Wrap outputs that may alias a graph input or a weight in a copy; 0-d results as arrays."""
    if not isinstance(v.type, TensorType) and v.type is not None:
        return expr
    if v.const is not None or any(v is i for i in graph.inputs) or not _fresh_root(graph, v):
        return f"_rt.owned({expr})"
    return f"_rt.array({expr})"


def _fresh_root(graph: Graph, v: Value) -> bool:
    """True when ``v`` cannot view a graph input or weight (through view-making ops)."""
    from torsh_gen.passes.memplan import makes_new_memory

    seen: set[int] = set()
    stack = [v]
    while stack:
        w = stack.pop()
        if id(w) in seen:
            continue
        seen.add(id(w))
        p = w.producer
        if p is None or w.const is not None:
            return False
        if makes_new_memory(p):
            continue
        stack.extend(x for x in p.inputs if x is not None)
        for sg in p.subgraphs():
            stack.extend(outer_reads(sg))
    return True


def _last_uses(graph: Graph) -> dict:
    """Node index → values whose last reader it is; key "read" → ids of all read values."""
    last: dict[int, tuple[int, Value]] = {}
    for idx, node in enumerate(graph.nodes):
        reads = [v for v in node.inputs if v is not None]
        for sg in node.subgraphs():
            reads.extend(outer_reads(sg))
        for v in reads:
            last[id(v)] = (idx, v)
    by_node: dict = {"read": set(last)}
    for idx, v in last.values():
        by_node.setdefault(idx, []).append(v)
    return by_node


def emit_node(module: Module, node: Node, lines: Lines, top: bool) -> None:
    """Write the code of one node: its emitter's, or a call of its reference kernel."""
    opset = module.opsets.get(node.domain, module.opsets.get("", 0))
    spec = lookup(node.op_type, node.domain, opset)
    k = module.label(node)
    marker = f"{MARKER}{k}: {comment_text(node.qualified_op, 40)[1:-1]} {comment_text(node.name) if node.name else ''}".rstrip()
    if _emit_folded(module, node, lines, marker):
        return
    outs = [module.names.name(v.name, fallback=node.op_type) for v in node.outputs]
    ins = [None if v is None else module.value_expr(v) for v in node.inputs]
    bufs = [_buffer(module, v) if top else None for v in node.outputs]

    def subgraph(graph: Graph, hint: str, params: list[str] | None, pre: Lines) -> str:
        name = module.names.name(hint)
        names = params or [module.names.name(v.name, fallback="arg") for v in graph.inputs]
        emit_function(module, graph, name, names, pre, method=False)
        return name

    def ctx_for() -> NodeCtx:
        return NodeCtx(
            module=module, node=node, spec=spec, attrs=spec.resolve_attrs(node),
            opset=module.opsets.get(node.domain, 0), ins=ins, outs=outs, out_bufs=bufs,
            lines=Lines(lines.indent), pre=Lines(lines.indent), emit_subgraph=subgraph,
            emit_inline=lambda g, args, into: inline_graph(module, g, args, into),
        )

    ctx = emit_fast(ctx_for, emitter_for(node.op_type, node.domain))  # fp16/bf16: upcast.py
    if ctx is not None:
        module.fast_nodes += 1
    else:
        ctx = ctx_for()
        emit_reference(ctx)
        module.ref_nodes += 1
    module.may_warn = module.may_warn or not ctx.silent
    lines.lines.extend(ctx.pre.lines)
    lines.add(marker)
    lines.lines.extend(ctx.lines.lines)
    for v, name in zip(node.outputs, outs):
        module.expr[id(v)] = name


def _emit_folded(module: Module, node: Node, lines: Lines, marker: str) -> bool:
    """Nodes whose outputs type inference computed at compile time become weights."""
    if any(True for _ in node.subgraphs()) or not node.outputs:
        return False
    vals = [module.known.get(id(v)) for v in node.outputs if v.name]
    if not vals or any(val is None for val in vals):
        return False
    lines.add(marker + " (computed at compile time)")
    for v in node.outputs:
        if v.name:
            module.expr[id(v)] = module.weight(module.known[id(v)], v.name)
    return True


def _buffer(module: Module, v: Value) -> str | None:
    plan = module.plan
    if plan is None or not v.name or v.name not in plan.assignment:
        return None
    t = v.type
    assert isinstance(t, TensorType) and t.is_static
    attr = module.names.name(v.name, prefix="b", fallback="buf")
    shape = tuple(int(d) for d in t.shape)  # type: ignore[union-attr]
    if np_dtype(t.dtype).startswith("_rt"):
        module.uses_ml_dtypes = True
    module.buffers.append(Buffer(attr, plan.assignment[v.name], t.dtype.numpy.name, shape, plan.offsets.get(v.name, 0)))
    module.buffer_of[id(v)] = f"self.{attr}"
    return f"self.{attr}"
