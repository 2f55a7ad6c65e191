"""Fused elementwise chains as numba kernels, and the activations of fused epilogues.

``FusedElementwise`` bodies whose ops and types the scalar table covers become one
numba kernel (one pass over memory, explicit signatures so they compile at import,
``error_model="numpy"`` so division by zero gives inf/nan as numpy does). Identical
bodies share one kernel. Other bodies are emitted inline, node by node, with the normal
emitters. ``emit_activation`` applies a FusedConv/FusedMatMul activation in place.
"""

from __future__ import annotations

from torsh_gen.backends.python.context import NodeCtx
from torsh_gen.backends.python.emitters import emits
from torsh_gen.backends.python.literals import literal
from torsh_gen.backends.python.scalar import CTORS, NB_TYPES, activation_expr, scalar_expr
from torsh_gen.ir.graph import Graph
from torsh_gen.ir.types import DType, TensorType
from torsh_gen.ops.registry import lookup

_LOOP = ("i0", "i1", "i2")


def _dtype(t: object) -> DType | None:
    return t.dtype if isinstance(t, TensorType) and t.dtype in NB_TYPES else None


def kernel_source(body: Graph, opsets: dict[str, int]) -> str | None:
    """numba source (with a ``{name}`` placeholder) computing ``body`` per element, or None."""
    names: dict[int, str] = {}
    params, loads = [], []
    sig = []
    for k, v in enumerate(body.inputs):
        dt = _dtype(v.type)
        if dt is None:
            return None
        params.append(f"x{k}")
        sig.append(f"_in({NB_TYPES[dt]})")
        loads.append(f"a{k} = x{k}[i0, i1, i2]")
        names[id(v)] = f"a{k}"
    for v in body.initializers:
        dt = _dtype(v.type)
        if dt is None or v.const is None or v.const.size != 1:
            return None
        value = v.const.reshape(-1)[0].item()
        names[id(v)] = literal(bool(value)) if dt == DType.BOOL else f"{CTORS[dt]}({literal(float(value))})"
    steps = []
    for j, node in enumerate(body.nodes):
        expr = _node_expr(node, names, opsets)
        if expr is None:
            return None
        names[id(node.outputs[0])] = f"t{j}"
        steps.append(f"t{j} = {expr}")
    stores = []
    for k, v in enumerate(body.outputs):
        dt = _dtype(v.type)
        if dt is None or id(v) not in names:
            return None
        params.append(f"y{k}")
        sig.append(f"_out({NB_TYPES[dt]})")
        stores.append(f"y{k}[i0, i1, i2] = {names[id(v)]}")
    inner = "\n".join(" " * 16 + s for s in loads + steps + stores)
    return (
        f'@nb.njit([nb.void({", ".join(sig)})], cache=True, error_model="numpy")\n'
        f"def {{name}}({', '.join(params)}):\n"
        "    n0, n1, n2 = y0.shape\n"
        "    for i0 in range(n0):\n"
        "        for i1 in range(n1):\n"
        "            for i2 in range(n2):\n"
        f"{inner}\n"
    )


def _node_expr(node: object, names: dict[int, str], opsets: dict[str, int]) -> str | None:
    if node.domain not in ("", "ai.onnx") or len(node.outputs) != 1 or any(True for _ in node.subgraphs()):
        return None
    opset = opsets.get("", 0)
    if opset and opset < 7 and ("broadcast" in node.attrs or "axis" in node.attrs):
        return None
    out = _dtype(node.outputs[0].type)
    if out is None:
        return None
    args = []
    for v in node.inputs:
        if v is None:
            args.append("")
            continue
        if id(v) not in names or _dtype(v.type) is None:
            return None
        args.append(names[id(v)])
    spec = lookup(node.op_type, node.domain, opset)
    return scalar_expr(node.op_type, args, spec.resolve_attrs(node), CTORS[out])


def _shape_expr(ctx: NodeCtx, xs: list[str]) -> str:
    t = ctx.out_type(0)
    if t is not None and t.is_static:
        return literal(tuple(int(d) for d in t.shape))
    return f"np.broadcast_shapes({', '.join(x + '.shape' for x in xs)})"


@emits("FusedElementwise", domain="ai.torsh")
def fused_elementwise(ctx: NodeCtx) -> bool:
    """One numba kernel for the whole chain, or the chain inline when not covered."""
    body: Graph = ctx.attrs.body
    xs = [x for x in ctx.ins]
    if any(x is None for x in xs) or len(body.inputs) != len(xs):
        return False
    src = kernel_source(body, ctx.module.opsets)
    if src is None:
        results = ctx.inline(body, xs)
        for k, r in enumerate(results):
            copy = r in xs or r.startswith("self.")
            ctx.emit(f"{ctx.y(k)} = {'np.array(' + r + ', copy=True)' if copy else r}")
        return True
    kernel = ctx.kernel(src, "fused")
    shape = _shape_expr(ctx, xs)
    for k in range(len(ctx.outs)):
        t = ctx.out_type(k)
        if t is None:
            return False
        alloc = ctx.buf(k) or f"np.empty({shape}, dtype={ctx.dtype(t.dtype)})"
        ctx.emit(f"{ctx.y(k)} = {alloc}")
    outs = ", ".join(ctx.outs)
    ctx.emit(f"_rt.ew({kernel}, ({', '.join(xs)},), ({outs},))")
    return True


_NUMPY_ACT = {
    "Relu": "np.maximum({y}, 0, out={y})",
    "Tanh": "np.tanh({y}, out={y})",
    "Sigmoid": "np.negative({y}, out={y})\nnp.exp({y}, out={y})\nnp.add({y}, 1, out={y})\nnp.reciprocal({y}, out={y})",
}


def emit_activation(ctx: NodeCtx, y: str, name: str, params: list[float], dtype: DType) -> bool:
    """Apply activation ``name`` to ``y`` in place; False when it cannot."""
    if not name:
        return True
    if name in _NUMPY_ACT:
        ctx.emit(_NUMPY_ACT[name].format(y=y))
        return True
    if name == "Clip":
        d = ctx.dtype(dtype)
        ctx.emit(f"np.clip({y}, {d}({literal(float(params[0]))}), {d}({literal(float(params[1]))}), out={y})")
        return True
    if dtype not in (DType.FLOAT, DType.DOUBLE):
        return False
    expr = activation_expr(name, params, "a0", CTORS[dtype])
    if expr is None:
        return False
    nbt = NB_TYPES[dtype]
    src = (
        f'@nb.njit([nb.void(_in({nbt}), _out({nbt}))], cache=True, error_model="numpy")\n'
        "def {name}(x0, y0):\n"
        "    n0, n1, n2 = y0.shape\n"
        "    for i0 in range(n0):\n"
        "        for i1 in range(n1):\n"
        "            for i2 in range(n2):\n"
        "                a0 = x0[i0, i1, i2]\n"
        f"                y0[i0, i1, i2] = {expr}\n"
    )
    kernel = ctx.kernel(src, name)
    ctx.emit(f"_rt.ew({kernel}, ({y},), ({y},))")
    return True
