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

#: float16 <-> float32 on the bits, as numba kernels (numba has no float16 type on CPU and
#: numpy's float16 casts run ~10x slower than a copy). Round to nearest even; subnormals,
#: infinities and NaN (quietened, sign kept) as IEEE and numpy do.
_F16_TO_F32 = '''@nb.njit([nb.void(nb.types.Array(nb.uint16, 1, "C", readonly=True), nb.types.Array(nb.uint32, 1, "C"))], cache=True)
def {name}(src, dst):
    for i in range(src.size):
        h = np.uint32(src[i])
        sign = (h & np.uint32(0x8000)) << np.uint32(16)
        e = (h >> np.uint32(10)) & np.uint32(0x1F)
        m = h & np.uint32(0x3FF)
        if e == 0x1F:
            dst[i] = sign | np.uint32(0x7F800000) | (m << np.uint32(13))
        elif e != 0:
            dst[i] = sign | ((e + np.uint32(112)) << np.uint32(23)) | (m << np.uint32(13))
        elif m == 0:
            dst[i] = sign
        else:
            e = np.uint32(113)
            while (m & np.uint32(0x400)) == 0:
                m <<= np.uint32(1)
                e -= np.uint32(1)
            dst[i] = sign | (e << np.uint32(23)) | ((m & np.uint32(0x3FF)) << np.uint32(13))
'''
_F32_TO_F16 = '''@nb.njit([nb.void(nb.types.Array(nb.uint32, 1, "C", readonly=True), nb.types.Array(nb.uint16, 1, "C"))], cache=True)
def {name}(src, dst):
    for i in range(src.size):
        b = src[i]
        sign = (b >> np.uint32(16)) & np.uint32(0x8000)
        e = np.int32((b >> np.uint32(23)) & np.uint32(0xFF))
        m = b & np.uint32(0x7FFFFF)
        if e == 0xFF:
            dst[i] = sign | np.uint32(0x7C00) | ((m >> np.uint32(13)) | (np.uint32(0x200) if m else np.uint32(0)))
            continue
        ex = e - 112
        if ex >= 31:
            dst[i] = sign | np.uint32(0x7C00)
            continue
        if ex <= 0:
            if ex < -10:
                dst[i] = sign
                continue
            m = m | np.uint32(0x800000)
            shift = np.uint32(14 - ex)
            r = m >> shift
            rem = m & ((np.uint32(1) << shift) - np.uint32(1))
            half = np.uint32(1) << (shift - np.uint32(1))
            if rem > half or (rem == half and (r & np.uint32(1))):
                r += np.uint32(1)
            dst[i] = sign | r
            continue
        r = (np.uint32(ex) << np.uint32(10)) | (m >> np.uint32(13))
        rem = m & np.uint32(0x1FFF)
        if rem > np.uint32(0x1000) or (rem == np.uint32(0x1000) and (r & np.uint32(1))):
            r += np.uint32(1)
        dst[i] = sign | r
'''


def widen_code(ctx: NodeCtx, dst: str, src: str, low: DType) -> str:
    """Lines setting ``dst`` to float32 ``src`` (a ``low`` array)."""
    if low != DType.FLOAT16:
        return f"{dst} = {src}.astype(np.float32)"
    k = ctx.kernel(_F16_TO_F32, "f16_to_f32")
    bits = ctx.tmp(f"{dst}_bits")
    return (f"{bits} = np.asarray({src}, order=\"C\")\n{dst} = np.empty({bits}.shape, np.float32)\n"
            f"{k}({bits}.reshape(-1).view(np.uint16), {dst}.reshape(-1).view(np.uint32))\ndel {bits}")


def narrow_code(ctx: NodeCtx, dst: str, src: str, low: DType) -> str:
    """Lines setting ``dst`` to float32 ``src`` rounded to ``low``."""
    if low != DType.FLOAT16:
        return f"{dst} = np.asarray({src}).astype({ctx.dtype(low)})"
    k = ctx.kernel(_F32_TO_F16, "f32_to_f16")
    return (f"{src} = np.asarray({src}, dtype=np.float32, order=\"C\")\n{dst} = np.empty({src}.shape, np.float16)\n"
            f"{k}({src}.reshape(-1).view(np.uint32), {dst}.reshape(-1).view(np.uint16))")
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
            casts.append((name, widen_code(ctx, name, expr, low)))
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
    for _, code in casts:
        ctx.emit(code)
    ctx.lines.lines.extend(wide_ctx.lines.lines)
    for y, wide_name in zip(ctx.outs, outs):
        if y != wide_name:
            ctx.emit(f"{narrow_code(ctx, y, wide_name, low)}\ndel {wide_name}")
    for name, _ in casts:
        ctx.emit(f"del {name}")
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
