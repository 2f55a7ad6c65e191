"""Fused elementwise chains as numba kernels, and the activations of fused epilogues.

``FusedElementwise`` bodies whose ops and types the scalar table covers become one
numba kernel (one pass over memory, explicit signatures so they compile at import,
``error_model="numpy"`` so division by zero gives inf/nan as numpy does). Identical
bodies share one kernel. Other bodies are emitted inline, node by node, with the normal
emitters. ``emit_activation`` applies a FusedConv/FusedMatMul activation in place.

When every operand has the output's shape or one element (known at compile time), the
kernel is a flat 1-D loop over contiguous memory that LLVM vectorizes. When the others
vary along one run of axes (a per-channel scale: ``(C, 1, 1)`` against ``(N, C, H, W)``)
and/or along the trailing axes (a bias row), the kernel loops over rows: their values are
loaded once per row and the inner loop runs over contiguous memory, vectorized, the rows
split across threads for large tensors (DenseNet's BatchNorm + Scale + Relu chains ran
3.3 ns per element through the strided path, 0.2 here). Other layouts go through
``_rt.ew``'s 3-d kernel with broadcasting. ``nn_kernel`` adds a block of
``templates/python/_nn.py.j2`` (GEMM epilogues, softmax, LayerNorm) with the shared
helpers it calls.
"""

from __future__ import annotations

from torsh_gen.backends.python.context import NodeCtx
from torsh_gen.backends.python.emitters import emits
from torsh_gen.backends.python.literals import literal
from torsh_gen.backends.python.scalar import (
    CTORS,
    NB_TYPES,
    activation_expr,
    helpers_used,
    scalar_expr,
)
from torsh_gen.backends.python.templating import environment
from torsh_gen.ir.graph import Graph
from torsh_gen.ir.types import DType, TensorType
from torsh_gen.ops.registry import lookup

_LOOP = ("i0", "i1", "i2")


def _dtype(t: object) -> DType | None:
    return t.dtype if isinstance(t, TensorType) and t.dtype in NB_TYPES else None


#: Operand kinds of a row kernel: the output's size, one value per row (the middle run of
#: axes), one value per position in the row (the trailing axes), one element.
FULL, MID, INNER, ONE = "full", "mid", "inner", "one"
#: Row kernels over at least this many elements split their rows across threads (also
#: activation epilogues and softmax: BERT's GELU over 128 x 1536 took 0.72 ms serial,
#: its 6 x 128 x 128 attention softmax 0.28 ms).
PARALLEL_ELEMENTS = 1 << 16


def parallel_worthwhile(t: object) -> bool:
    """True when a tensor of type ``t`` holds at least PARALLEL_ELEMENTS elements, counting
    its static dims (symbolic ones as 1): a row kernel over it runs its rows across threads."""
    n = 1
    for d in getattr(t, "shape", None) or ():
        n *= d if isinstance(d, int) else 1
    return n >= PARALLEL_ELEMENTS


def kernel_source(
    body: Graph,
    opsets: dict[str, int],
    flat: list[bool] | None = None,
    rows: list[str] | None = None,
    parallel: bool = False,
) -> str | None:
    """numba source (with a ``{name}`` placeholder) computing ``body`` per element, or None.

    With ``flat`` (one flag per input: True for a one-element operand) the kernel is a 1-D
    loop over C-contiguous operands of the output's size. With ``rows`` (one kind per
    input, see FULL..ONE) it loops over ``n_outer * n_mid`` rows of ``n_inner`` contiguous
    elements (``parallel``: rows across threads). Else a 3-d loop over any strides.
    """
    names: dict[int, str] = {}
    params, loads, hoisted = [], [], []
    sig = []
    for k, v in enumerate(body.inputs):
        dt = _dtype(v.type)
        if dt is None:
            return None
        params.append(f"x{k}")
        if rows is not None:
            sig.append(f'nb.types.Array({NB_TYPES[dt]}, 1, "C", readonly=True)')
            where = {FULL: "j", MID: "m", INNER: "_U(i)", ONE: "0"}[rows[k]]
            (hoisted if rows[k] in (MID, ONE) else loads).append(f"a{k} = x{k}[{where}]")
        elif flat is None:
            sig.append(f"_in({NB_TYPES[dt]})")
            loads.append(f"a{k} = x{k}[i0, i1, i2]")
        else:
            sig.append(f'nb.types.Array({NB_TYPES[dt]}, 1, "C", readonly=True)')
            loads.append(f"a{k} = x{k}[0]" if flat[k] else f"a{k} = x{k}[i0]")
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
        if rows is not None:
            sig.append(f'nb.types.Array({NB_TYPES[dt]}, 1, "C")')
            stores.append(f"y{k}[j] = {names[id(v)]}")
        elif flat is None:
            sig.append(f"_out({NB_TYPES[dt]})")
            stores.append(f"y{k}[i0, i1, i2] = {names[id(v)]}")
        else:
            sig.append(f'nb.types.Array({NB_TYPES[dt]}, 1, "C")')
            stores.append(f"y{k}[i0] = {names[id(v)]}")
    if rows is not None:
        sig += ["nb.int64"] * 3
        params += ["n_outer", "n_mid", "n_inner"]
    extra = ", parallel=True" if parallel else ""
    head = f'@nb.njit([nb.void({", ".join(sig)})], cache=True, error_model="numpy"{extra})\n'
    head += f"def {{name}}({', '.join(params)}):\n"
    if rows is not None:
        # unsigned indices: no negative-index wraparound, so the inner loop vectorizes
        top = "\n".join(" " * 8 + line for line in ["m = _U(r % n_mid)", "base = r * n_inner", *hoisted])
        inner = "\n".join(" " * 12 + line for line in ["j = _U(base + i)", *loads, *steps, *stores])
        return head + (
            "    for r in nb.prange(n_outer * n_mid):\n"
            f"{top}\n"
            "        for i in range(n_inner):\n"
            f"{inner}\n"
        )
    if flat is not None:
        inner = "\n".join(" " * 8 + s for s in loads + steps + stores)
        return head + "    for i0 in range(y0.shape[0]):\n" + f"{inner}\n"
    inner = "\n".join(" " * 16 + s for s in loads + steps + stores)
    return head + (
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
    if any(ctx.out_type(k) is None for k in range(len(ctx.outs))):
        return False
    layout = _operand_kinds(ctx)
    kinds, sizes = layout if layout is not None else (None, None)
    flat = [k == ONE for k in kinds] if kinds is not None and set(kinds) <= {FULL, ONE} else None
    flat_src = None if flat is None else kernel_source(body, ctx.module.opsets, flat)
    shape = _shape_expr(ctx, xs)
    for k in range(len(ctx.outs)):
        alloc = ctx.buf(k) or f"np.empty({shape}, dtype={ctx.dtype(ctx.out_type(k).dtype)})"
        ctx.emit(f"{ctx.y(k)} = {alloc}")
    if flat_src is not None:
        kernel = nn_kernel(ctx, flat_src, "fused")
        args = [f"np.ascontiguousarray({x}).reshape(-1)" for x in xs]
        args += [f"{y}.reshape(-1)" for y in ctx.outs]
        ctx.emit(f"{kernel}({', '.join(args)})")
        return True
    rows_src = None
    if kinds is not None:
        rows_src = kernel_source(body, ctx.module.opsets, rows=kinds, parallel=parallel_worthwhile(ctx.out_type(0)))
    if rows_src is not None:
        kernel = nn_kernel(ctx, rows_src, "fused")
        args = [f"np.ascontiguousarray({x}).reshape(-1)" for x in xs]
        args += [f"{y}.reshape(-1)" for y in ctx.outs]
        args += [str(n) for n in sizes]
        ctx.emit(f"{kernel}({', '.join(args)})")
        return True
    kernel = nn_kernel(ctx, src, "fused")
    outs = ", ".join(ctx.outs)
    ctx.emit(f"_rt.ew({kernel}, ({', '.join(xs)},), ({outs},))")
    return True


def _operand_kinds(ctx: NodeCtx) -> tuple[list[str], tuple[int, int, int]] | None:
    """Operand kinds (FULL, MID, INNER, ONE) and (n_outer, n_mid, n_inner), or None for the
    strided 3-d kernel. Static, nonempty shapes only (the kernels trust the sizes they are
    given). Over the output's axes longer than 1, an operand is FULL (all of them), ONE
    (none), or varies along one contiguous run of them: MID when the run ends before the
    last axis (the axes after it are the row), INNER when it is the trailing run that the
    MID operands' rows span (or, with no MID operand, any trailing run). Only FULL and ONE
    operands: the flat 1-D kernel; else the row kernel."""
    shapes = [ctx.out_type(k).shape for k in range(len(ctx.outs))]
    shape = shapes[0]
    if shape is None or any(s != shape for s in shapes) or not all(isinstance(d, int) and d > 0 for d in shape):
        return None
    axes = [a for a, d in enumerate(shape) if d > 1]
    runs: list[tuple[int, int] | None] = []
    for i in range(len(ctx.ins)):
        t = ctx.in_tensor(i)
        if t is None or t.shape is None or len(t.shape) > len(shape) or not all(isinstance(d, int) for d in t.shape):
            return None
        padded = (1,) * (len(shape) - len(t.shape)) + tuple(t.shape)
        if any(d != 1 and d != shape[a] for a, d in enumerate(padded)):
            return None
        pos = [p for p, a in enumerate(axes) if padded[a] != 1]
        if pos and pos != list(range(pos[0], pos[-1] + 1)):
            return None  # not one contiguous run of axes
        runs.append((pos[0], pos[-1] + 1) if pos else None)
    last = len(axes)
    partial = {r for r in runs if r is not None and r != (0, last)}
    mids = sorted(r for r in partial if r[1] < last)
    inners = sorted(r for r in partial if r[1] == last)
    if not partial:
        return [FULL if r is not None else ONE for r in runs], (1, 1, 1)  # the flat kernel
    if len(mids) > 1 or len(inners) > 1:
        return None
    if mids:
        mid = mids[0]
        if inners and inners[0][0] != mid[1]:
            return None  # the per-column operand must span exactly the row
    else:
        mid = (inners[0][0], inners[0][0])  # no MID operand: the rows are the INNER run
    kinds = []
    for r in runs:
        if r is None:
            kinds.append(ONE)
        elif r == (0, last):
            kinds.append(FULL)
        else:
            kinds.append(MID if r == mid and mid[1] < last and mid[0] < mid[1] else INNER)

    def size(lo: int, hi: int) -> int:
        n = 1
        for a in axes[lo:hi]:
            n *= shape[a]
        return n

    return kinds, (size(0, mid[0]), size(mid[0], mid[1]), size(mid[1], last))


def nn_kernel(ctx: NodeCtx, src: str, hint: str) -> str:
    """Register kernel ``src`` after the ``_nn.py.j2`` helpers it calls; its expression."""
    helpers = helpers_used(src)
    if helpers:
        nn = environment().get_template("_nn.py.j2").module
        ctx.kernel(str(nn.types()), "nn_types")
        for h in helpers:
            ctx.kernel(str(getattr(nn, h[3:])()), h)
    return ctx.kernel(src, hint)


def nn_block(ctx: NodeCtx, macro: str, hint: str, *args: object) -> str:
    """Register the ``_nn.py.j2`` kernel ``macro(*args)`` with its helpers; its expression."""
    nn = environment().get_template("_nn.py.j2").module
    src = str(getattr(nn, macro)(*args))
    ctx.kernel(str(nn.types()), "nn_types")
    return nn_kernel(ctx, src, hint)


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
    kernel = nn_kernel(ctx, src, name)
    ctx.emit(f"_rt.ew({kernel}, ({y},), ({y},))")
    return True
