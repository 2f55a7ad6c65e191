"""Emitters for data movement: reshape family, Transpose, Slice, Concat, Gather, Cast, ...

Shape arguments known at compile time (initializers, folded shape arithmetic) become
literals; otherwise a small runtime helper applies ONNX's conventions. Movement ops
return numpy views where numpy does (Reshape, Transpose, Slice, Squeeze, Expand): the
memory planner treats every op outside its FRESH set as a possible view, and outputs
that may view an input or a weight are copied before they are returned.
"""

from __future__ import annotations

import numpy as np

from torsh_gen.backends.python.context import NodeCtx
from torsh_gen.backends.python.emitters import emits
from torsh_gen.backends.python.literals import index_src
from torsh_gen.ir.types import DType, TensorType
from torsh_gen.ops.registry import RunContext

PLAIN = (DType.FLOAT, DType.DOUBLE, DType.FLOAT16, DType.INT8, DType.INT16, DType.INT32,
         DType.INT64, DType.UINT8, DType.UINT16, DType.UINT32, DType.UINT64, DType.BOOL)


def _rank(ctx: NodeCtx, i: int = 0) -> int | None:
    t = ctx.in_tensor(i)
    return None if t is None or t.shape is None else len(t.shape)


@emits("Identity")
def identity(ctx: NodeCtx) -> bool:
    """The same object (tensor, sequence or optional)."""
    ctx.emit(f"{ctx.y()} = {ctx.x(0)}")
    return True


@emits("Reshape")
def reshape(ctx: NodeCtx) -> bool:
    """np.reshape with 0 (copy the input dim, unless allowzero) and -1 resolved."""
    dims = ctx.const_ints(1) if ctx.opset >= 5 else [int(d) for d in (ctx.attrs.shape or [])]
    x = ctx.x(0)
    allowzero = int(ctx.attrs.allowzero or 0)
    if dims is None:
        if ctx.x(1) is None:
            return False
        ctx.emit(f"{ctx.y()} = _rt.reshape({x}, {ctx.x(1)}, {allowzero})")
        return True
    parts = [f"{x}.shape[{i}]" if d == 0 and not allowzero else str(d) for i, d in enumerate(dims)]
    ctx.emit(f"{ctx.y()} = np.reshape({x}, ({', '.join(parts)}{',' if len(parts) == 1 else ''}))")
    return True


@emits("Flatten")
def flatten(ctx: NodeCtx) -> bool:
    """2-D view: dims before ``axis`` become rows."""
    ctx.emit(f"{ctx.y()} = _rt.flatten({ctx.x(0)}, {int(ctx.attrs.axis)})")
    return True


@emits("Squeeze")
def squeeze(ctx: NodeCtx) -> bool:
    """np.squeeze over the given axes (all size-1 axes when none)."""
    axes = ctx.const_ints(1) if ctx.opset >= 13 else [int(a) for a in (ctx.attrs.axes or [])]
    if axes is None:
        if ctx.x(1) is not None:
            return False
        axes = []
    x = ctx.x(0)
    if not axes:
        ctx.emit(f"{ctx.y()} = np.squeeze({x})")
    else:
        ctx.emit(f"{ctx.y()} = np.squeeze({x}, axis={ctx.lit(tuple(axes))})")
    return True


@emits("Unsqueeze")
def unsqueeze(ctx: NodeCtx) -> bool:
    """np.expand_dims at the output positions ``axes``."""
    axes = ctx.const_ints(1) if ctx.opset >= 13 else [int(a) for a in (ctx.attrs.axes or [])]
    if not axes:
        return False
    ctx.emit(f"{ctx.y()} = np.expand_dims({ctx.x(0)}, {ctx.lit(tuple(axes))})")
    return True


@emits("Transpose")
def transpose(ctx: NodeCtx) -> bool:
    """A transposed view (reversed axes by default)."""
    perm = ctx.attrs.perm
    if perm is None:
        ctx.emit(f"{ctx.y()} = np.transpose({ctx.x(0)})")
    else:
        ctx.emit(f"{ctx.y()} = np.transpose({ctx.x(0)}, {ctx.lit(tuple(int(p) for p in perm))})")
    return True


@emits("Concat")
def concat(ctx: NodeCtx) -> bool:
    """np.concatenate of the given inputs (into the planned buffer when there is one)."""
    xs = [x for x in ctx.ins if x is not None]
    if not xs:
        return False
    plan, out = ctx.module.plan, ctx.node.outputs[0]
    if plan is not None and out.name in plan.concats and ctx.buf(0):
        # the plan made every input a block of this buffer: an input computed into its
        # block needs nothing; one that came out elsewhere is copied into its block
        blocks = [ctx.module.buffer_of.get(id(v)) for v in ctx.node.inputs]
        if all(blocks):
            for x, block in zip(xs, blocks):
                ctx.emit(f"if {x} is not {block}:")
                ctx.emit(f"    np.copyto({block}, {x})")
            ctx.emit(f"{ctx.y()} = {ctx.buf(0)}")
            return True
    ctx.emit(f"{ctx.y()} = np.concatenate(({', '.join(xs)},), axis={int(ctx.attrs.axis)}{ctx.out_kw()})")
    return True


@emits("Gather")
def gather(ctx: NodeCtx) -> bool:
    """np.take (negative indices count from the end, as in ONNX)."""
    t = ctx.in_tensor(1)
    if t is None or t.dtype not in (DType.INT32, DType.INT64):
        return False
    ctx.emit(f"{ctx.y()} = np.take({ctx.x(0)}, {ctx.x(1)}, axis={int(ctx.attrs.axis)}{ctx.out_kw()})")
    return True


@emits("Slice")
def slice_(ctx: NodeCtx) -> bool:
    """Basic indexing with compile-time bounds (Python slices clamp as ONNX does)."""
    rank = _rank(ctx)
    if rank is None:
        return False
    if ctx.opset >= 10:
        starts, ends = ctx.const_ints(1), ctx.const_ints(2)
        axes = ctx.const_ints(3) if ctx.x(3) is not None else None
        steps = ctx.const_ints(4) if ctx.x(4) is not None else None
        if starts is None or ends is None or (ctx.x(3) is not None and axes is None) or (ctx.x(4) is not None and steps is None):
            return False
    else:
        a = ctx.attrs
        starts, ends = [int(s) for s in a.starts or []], [int(e) for e in a.ends or []]
        axes = [int(x) for x in a.axes] if a.axes else None
        steps = None
    axes = axes or list(range(len(starts)))
    steps = steps or [1] * len(starts)
    if any(s == 0 for s in steps) or not all(-rank <= ax < rank for ax in axes):
        return False
    index: list = [(None, None, None)] * rank
    for start, end, axis, step in zip(starts, ends, axes, steps):
        index[axis % rank] = (start, end, step)
    ctx.emit(f"{ctx.y()} = {ctx.x(0)}[{index_src(index)}]")
    return True


@emits("Shape")
def shape(ctx: NodeCtx) -> bool:
    """The input's dims as int64 (``start``/``end`` from opset 15)."""
    start, end = ctx.attrs.get("start", 0), ctx.attrs.end
    sl = f"{start}:{'' if end is None else end}"
    ctx.emit(f"{ctx.y()} = np.array({ctx.x(0)}.shape[{sl}], dtype=np.int64)")
    return True


@emits("Size")
def size(ctx: NodeCtx) -> bool:
    """Element count as an int64 scalar."""
    ctx.emit(f"{ctx.y()} = np.array({ctx.x(0)}.size, dtype=np.int64)")
    return True


_BF16_CASTS = {DType.BFLOAT16, DType.FLOAT, DType.FLOAT16, DType.DOUBLE}


@emits("Cast")
def cast(ctx: NodeCtx) -> bool:
    """astype between plain numpy types (strings and ml_dtypes use the reference)."""
    t = ctx.in_tensor(0)
    to = ctx.attrs.to
    if t is None or isinstance(to, str):
        return False
    dst = DType(int(to))
    bf16 = DType.BFLOAT16 in (t.dtype, dst) and {t.dtype, dst} <= _BF16_CASTS  # ml_dtypes casts as ONNX does
    if (t.dtype not in PLAIN or dst not in PLAIN) and not bf16:
        return False
    ctx.emit(f"{ctx.y()} = {ctx.x(0)}.astype({ctx.dtype(dst)})")
    return True


@emits("Expand")
def expand(ctx: NodeCtx) -> bool:
    """A broadcast view to the (numpy-broadcast) target shape."""
    dims = ctx.const_ints(1)
    x = ctx.x(0)
    target = ctx.lit(tuple(dims)) if dims is not None else f"tuple(int(d) for d in {ctx.x(1)})"
    ctx.emit(f"{ctx.y()} = np.broadcast_to({x}, np.broadcast_shapes({x}.shape, {target}))")
    return True


@emits("Constant")
def constant(ctx: NodeCtx) -> bool:
    """The value, computed now by the reference kernel, stored as a weight."""
    rctx = RunContext(ctx.node, ctx.attrs, ctx.opset, 1, lambda g, a: [], np.random.default_rng(0))
    value = ctx.spec.run(rctx)
    if not isinstance(value, np.ndarray):
        return False
    ctx.emit(f"{ctx.y()} = {ctx.weight(value, ctx.node.outputs[0].name or 'constant')}")
    return True


@emits("ConstantOfShape")
def constant_of_shape(ctx: NodeCtx) -> bool:
    """np.full of the attribute's value (float32 zero by default)."""
    value = ctx.attrs.value
    arr = np.zeros(1, np.float32) if value is None else np.asarray(value).reshape(-1)
    if arr.dtype == object or arr.size != 1 or arr.dtype.kind not in "biuf" or arr.dtype.name.startswith("float8"):
        return False
    out = ctx.node.outputs[0].type
    if not isinstance(out, TensorType):
        return False
    dims = ctx.const_ints(0)
    shape = ctx.lit(tuple(dims)) if dims is not None else f"tuple(int(d) for d in {ctx.x(0)})"
    ctx.emit(f"{ctx.y()} = np.full({shape}, {ctx.lit(arr.item())}, dtype={ctx.dtype(DType.from_numpy(arr.dtype))})")
    return True
