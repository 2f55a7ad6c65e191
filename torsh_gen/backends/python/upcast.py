"""Upcasting kernels: fp16/bf16 nodes run through the float32 emitters.

numpy has no BLAS for float16 (a 128x384x1536 product takes ~0.8 s instead of ~2 ms) and
computes bfloat16 through ml_dtypes' generic loops, and the float32 fast paths (packed
GEMM, numba convolutions, row kernels) decline other types, so an fp16/bf16 graph would
otherwise run almost entirely on reference kernels. When a node's float tensors all have
one 16-bit float type and its emitter declines, ``emit_upcast`` emits it as float32:

    x32 = x.astype(np.float32)          # constant inputs are converted at compile time
    <the float32 emitter's code reading x32, writing y32>
    y = y32.astype(np.float16)          # one rounding per node (per fused kernel)

Each node's result is its float32 result rounded once to the 16-bit type, which is how
onnxruntime's CPU fp16 kernels compute too (they convert to float32 around MLAS/Eigen),
so the artifact matches the ONNX model op by op; a fused chain rounds only at its end,
which is at least as accurate. ``FusedElementwise`` bodies are widened with their node
(so the chain becomes one float32 numba kernel); Cast nodes, bodies holding Casts and
other nodes with nested graphs are not upcast.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from torsh_gen.backends.python.context import NodeCtx
from torsh_gen.ir.graph import Attribute, AttrKind, Graph, Node, Value
from torsh_gen.ir.types import DType, TensorType

#: 16-bit float types computed through float32.
UPCAST_TYPES = (DType.FLOAT16, DType.BFLOAT16)
_SKIP = frozenset({"Cast", "CastLike"})
_FUSED = ("ai.torsh", "FusedElementwise")


def upcast_type(node: Node) -> DType | None:
    """The 16-bit float type shared by every float tensor ``node`` reads or writes, else None."""
    if node.op_type in _SKIP:
        return None
    if any(True for _ in node.subgraphs()):
        body = node.attr("body")
        if (node.domain, node.op_type) != _FUSED or not isinstance(body, Graph):
            return None
        if any(n.op_type in _SKIP or any(True for _ in n.subgraphs()) for n in body.nodes):
            return None
    found: set[DType] = set()
    for v in (*node.inputs, *node.outputs):
        t = None if v is None else v.type
        if v is None:
            continue
        if not isinstance(t, TensorType) or t.dtype == DType.UNDEFINED:
            return None
        if t.dtype.is_float:
            found.add(t.dtype)
    if len(found) != 1:
        return None
    dtype = found.pop()
    return dtype if dtype in UPCAST_TYPES else None


def emit_fast(make_ctx: Callable[[], NodeCtx], emitter: Callable[[NodeCtx], bool] | None) -> NodeCtx | None:
    """The context ``emitter`` wrote the node into (as is, or upcast to float32), else None.

    16-bit fused chains are upcast first (their emitter would otherwise inline the body
    node by node in 16 bits); other nodes try their emitter as is first, since data
    movement in float16 needs no conversion.
    """
    if emitter is None:
        return None
    first = make_ctx()
    wide_first = (first.node.domain, first.node.op_type) == _FUSED and upcast_type(first.node) is not None
    if wide_first and emit_upcast(first, emitter):
        return first
    ctx = make_ctx() if wide_first else first
    if emitter(ctx):
        return ctx
    ctx = make_ctx()
    if not wide_first and emit_upcast(ctx, emitter):
        return ctx
    return None


def emit_upcast(ctx: NodeCtx, emitter: Callable[[NodeCtx], bool] | None) -> bool:
    """Emit ``ctx.node`` through ``emitter`` in float32 with casts around it; False to decline."""
    node = ctx.node
    low = upcast_type(node) if emitter is not None else None
    if low is None:
        return False
    module = ctx.module
    shadow_in: list[Value | None] = []
    ins: list[str | None] = []
    casts: list[str] = []
    for v, expr in zip(node.inputs, ctx.ins):
        if v is None or v.type.dtype != low:
            shadow_in.append(v)
            ins.append(expr)
            continue
        s = Value(v.name, TensorType(DType.FLOAT, v.type.shape))
        known = module.known.get(id(v))
        if known is not None:  # constants: converted once, at compile time
            wide = np.asarray(known).astype(np.float32)
            s.const = wide if v.const is not None else None
            module.known[id(s)] = wide
            ins.append(module.weight(wide, f"{v.name}_f32"))
        else:
            name = module.names.name(f"{v.name}_f32")
            casts.append(f"{name} = {expr}.astype(np.float32)")
            ins.append(name)
        shadow_in.append(s)
    shadow_out = [Value(o.name, TensorType(DType.FLOAT, o.type.shape)) if o.type.dtype == low else Value(o.name, o.type) for o in node.outputs]
    attrs = dict(node.attrs)
    if (node.domain, node.op_type) == _FUSED:
        attrs["body"] = Attribute(AttrKind.GRAPH, widen(node.attr("body"), low))
    shadow = Node(node.op_type, shadow_in, shadow_out, attrs, node.domain, node.name)
    outs = [module.names.name(f"{o}_f32") if v.type.dtype == low else o for o, v in zip(ctx.outs, node.outputs)]
    wide_ctx = NodeCtx(
        module=module, node=shadow, spec=ctx.spec, attrs=ctx.spec.resolve_attrs(shadow), opset=ctx.opset, ins=ins, outs=outs,
        out_bufs=[None] * len(outs), lines=type(ctx.lines)(ctx.lines.indent), pre=ctx.pre,
        emit_subgraph=ctx.emit_subgraph, emit_inline=ctx.emit_inline,
    )
    done = emitter(wide_ctx)
    for s in (*shadow_in, *shadow_out):  # module tables key values by id(): the shadows die here
        if s is not None and not any(s is v for v in node.inputs):
            module.known.pop(id(s), None)
            module.expr.pop(id(s), None)
    if not done:
        return False
    for line in casts:
        ctx.emit(line)
    ctx.lines.lines.extend(wide_ctx.lines.lines)
    dtype = ctx.dtype(low)
    for y, wide_name in zip(ctx.outs, outs):
        if y != wide_name:
            ctx.emit(f"{y} = np.asarray({wide_name}).astype({dtype})\ndel {wide_name}")
    for line in casts:
        ctx.emit(f"del {line.split(' = ', 1)[0]}")
    return True


def widen(body: Graph, low: DType) -> Graph:
    """A copy of elementwise ``body`` whose ``low``-typed values and constants are float32."""
    mapped: dict[int, Value] = {}

    def value(v: Value | None) -> Value | None:
        if v is None:
            return None
        if id(v) not in mapped:  # outer-scope reads keep their own Value
            return v
        return mapped[id(v)]

    def copy(v: Value) -> Value:
        t = v.type
        wide = isinstance(t, TensorType) and t.dtype == low
        const = None if v.const is None else (v.const.astype(np.float32) if wide else v.const)
        new = Value(v.name, TensorType(DType.FLOAT, t.shape) if wide else t, const=const)
        mapped[id(v)] = new
        return new

    inputs = [copy(v) for v in body.inputs]
    inits = [copy(v) for v in body.initializers]
    nodes = []
    for n in body.nodes:
        ins = [value(v) for v in n.inputs]
        nodes.append(Node(n.op_type, ins, [copy(o) for o in n.outputs], dict(n.attrs), n.domain, n.name))
    return Graph(body.name, nodes, inputs, [value(v) for v in body.outputs], inits, info=body.info)
