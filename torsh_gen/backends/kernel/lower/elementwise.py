"""Elementwise ops and fused elementwise chains: one loop nest over the output, numpy
broadcasting by per-operand strides, the innermost loop vectorized, the outer one split
across threads when the tensor is large.
"""

from __future__ import annotations

from collections.abc import Callable

from torsh_gen.backends.kernel.ir import Cast, Const, Expr, Var, idx, minimum
from torsh_gen.backends.kernel.lower import (
    KERNEL_DTYPES,
    LowerCtx,
    LoweringDeclined,
    broadcast_strides,
    lowers,
    prod,
    row_major_strides,
)
from torsh_gen.backends.kernel.lower.scalar_ops import SCALAR_OPS
from torsh_gen.backends.kernel.storage import compute_dtype, is_storage
from torsh_gen.ir.types import TensorType
from torsh_gen.ops.registry import Attrs

BLOCK = 4096


def coalesce(shape: tuple[int, ...], strides: list[list[int]]) -> tuple[list[int], list[list[int]]]:
    """Merge adjacent dims that every operand walks contiguously; drop dims of size 1."""
    dims = [d for d in range(len(shape)) if shape[d] != 1]
    out_shape: list[int] = []
    out_strides: list[list[int]] = [[] for _ in strides]
    for d in dims:
        if out_shape and all(st[d] * shape[d] == os_[-1] for st, os_ in zip(strides, out_strides)):
            out_shape[-1] *= shape[d]
            for st, os_ in zip(strides, out_strides):
                os_[-1] = st[d]
            continue
        out_shape.append(shape[d])
        for st, os_ in zip(strides, out_strides):
            os_.append(st[d])
    return out_shape, out_strides


def elementwise_nest(
    ctx: LowerCtx,
    shape: tuple[int, ...],
    strides: list[list[int]],
    body: Callable[[list[Expr]], None],
) -> None:
    """Loops over ``shape``; ``body`` gets one flat index per operand (``strides[k]``)."""
    kb = ctx.kb
    cshape, cstrides = coalesce(tuple(shape), strides)
    total = prod(cshape)
    if total == 0:
        return
    if not cshape:
        body([idx(0) for _ in strides])
        return
    kind = ctx.outer_kind(total)
    if len(cshape) == 1:
        n = cshape[0]
        if kind == "parallel" and n > BLOCK and not ctx.sched.gpu:
            with kb.loop((n + BLOCK - 1) // BLOCK, kind="parallel", hint="blk") as blk:
                lo = kb.let(blk * BLOCK, "lo")
                hi = kb.let(minimum(lo + BLOCK, n), "hi")
                with kb.loop(hi, start=lo, kind="vector", width=ctx.sched.lanes) as i:
                    body([i * st[0] if st[0] != 1 else i for st in cstrides])
            return
        with kb.loop(n, kind=ctx.inner_kind(), width=ctx.vector_width(n)) as i:
            body([i * st[0] if st[0] != 1 else i for st in cstrides])
        return
    loops: list[Var] = []

    def nest(level: int, offsets: list[Expr]) -> None:
        n = cshape[level]
        last = level == len(cshape) - 1
        # under a GPU schedule every level is parallel: one thread per element
        k = ctx.inner_kind() if last else (kind if level == 0 or ctx.sched.gpu else "serial")
        with kb.loop(n, kind=k, width=ctx.vector_width(n) if last else 1) as v:
            loops.append(v)
            new = [off + v * st[level] if st[level] not in (0, 1) else (off + v if st[level] == 1 else off) for off, st in zip(offsets, cstrides)]
            if last:
                body(new)
            else:
                base = [kb.let(e, "o") for e in new]
                nest(level + 1, base)

    nest(0, [idx(0) for _ in strides])


def _operand(ctx: LowerCtx, i: int, out_shape: tuple[int, ...]) -> list[int]:
    return broadcast_strides(ctx.in_shape(i), out_shape)


@lowers(*sorted(SCALAR_OPS))
def lower_elementwise(ctx: LowerCtx) -> None:
    """Any op of the scalar table, numpy broadcasting included."""
    op = ctx.node.op_type
    out_shape = ctx.out_shape(0)
    present = [i for i in range(len(ctx.inputs)) if ctx.has(i)]
    if (op == "Clip" and ctx.opset < 11) or op == "CastLike":
        present = [0]  # CastLike's second input only names the dtype
    strides = [row_major_strides(out_shape)] + [_operand(ctx, i, out_shape) for i in present]
    fn = SCALAR_OPS[op]
    attrs = ctx.attrs
    if op == "CastLike":  # a Cast to the output's type (saturating, rounding narrow floats)
        fn, attrs = _cast_like(ctx.node.outputs[0].type, attrs)

    def body(index: list[Expr]) -> None:
        args: list = [None] * len(ctx.inputs)
        for k, i in enumerate(present):
            args[i] = ctx.kb.let(ctx.x(i)[index[k + 1]], "v")
        if op == "Clip":
            vals = args + [None] * (3 - len(args))
        else:
            vals = [a for a in args if a is not None]
        ctx.y(0)[index[0]] = _as_out(fn(ctx.kb, vals, attrs), ctx.y(0).dtype)

    elementwise_nest(ctx, out_shape, strides, body)


def _cast_like(out_type, attrs: Attrs) -> tuple[Callable, Attrs]:
    """CastLike as the Cast to its output's element type."""
    if not isinstance(out_type, TensorType):
        raise LoweringDeclined("CastLike output of unknown type")
    return SCALAR_OPS["Cast"], Attrs({**attrs.as_dict(), "to": int(out_type.dtype)})


def _as_out(e: Expr, dtype: str) -> Expr:
    return e if e.dtype == dtype else Cast(e, dtype)


@lowers("FusedElementwise")
def lower_fused(ctx: LowerCtx) -> None:
    """A fused chain (the ``body`` subgraph) as one pass over memory."""
    graph = ctx.attrs.body
    out_shape = ctx.out_shape(0)
    if any(s != out_shape for s in ctx.out_shapes):
        raise LoweringDeclined("fused outputs of different shapes")
    n_in = len(ctx.inputs)
    strides = [row_major_strides(out_shape)] + [_operand(ctx, i, out_shape) for i in range(n_in)]

    def body(index: list[Expr]) -> None:
        values = [ctx.kb.let(ctx.x(i)[index[i + 1]], "v") for i in range(len(graph.inputs))]
        for j, r in enumerate(fused_values(ctx.kb, graph, values, ctx.opset)):
            ctx.y(j)[index[0]] = _as_out(r, ctx.y(j).dtype)

    elementwise_nest(ctx, out_shape, strides, body)


def fused_values(kb, graph, inputs: list[Expr], opset: int) -> list[Expr]:
    """The outputs of a FusedElementwise ``body`` subgraph on one element: ``inputs`` are
    the values of its inputs (bound names); every node is a scalar op, every constant a
    single element. Shared with the CUDA target, whose GEMM epilogues apply a fused chain
    that reads only the product."""
    from torsh_gen.ops.registry import lookup

    env: dict[int, Expr] = {id(v): x for v, x in zip(graph.inputs, inputs)}
    for node in graph.nodes:
        fn = SCALAR_OPS.get(node.op_type)
        if fn is None or len(node.outputs) != 1:
            raise LoweringDeclined(f"fused body op {node.op_type}")
        args = []
        for v in node.inputs:
            if v is None:
                args.append(None)
            elif id(v) in env:
                args.append(env[id(v)])
            elif v.const is not None and v.const.size == 1:
                args.append(_scalar_const(v))
            else:
                raise LoweringDeclined("fused body reads a non-scalar constant")
        spec = lookup(node.op_type, node.domain, opset)
        attrs = spec.resolve_attrs(node)
        if node.op_type == "CastLike":
            fn, attrs = _cast_like(node.outputs[0].type, attrs)
        vals = args if node.op_type == "Clip" else [a for a in args if a is not None]
        r = fn(kb, vals, attrs)
        out_t = node.outputs[0].type
        if isinstance(out_t, TensorType) and out_t.dtype in KERNEL_DTYPES:
            r = _as_out(r, compute_dtype(KERNEL_DTYPES[out_t.dtype]))
        env[id(node.outputs[0])] = kb.let(r, "f")
    return [env[id(v)] for v in graph.outputs]


def _scalar_const(v) -> Expr:
    """A one-element constant of a fused body as a literal."""
    dtype = KERNEL_DTYPES.get(v.type.dtype) if isinstance(v.type, TensorType) else None
    if dtype is None:
        raise LoweringDeclined("constant of an unsupported type")
    return Const(float(v.const.reshape(-1)[0]) if is_storage(dtype) else v.const.reshape(-1)[0].item(), compute_dtype(dtype))

