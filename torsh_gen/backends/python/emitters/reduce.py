"""Emitters for the Reduce* ops on float tensors: one numpy reduction with resolved axes.

Axes are resolved at compile time exactly as the reference does (attribute or constant
input, negative axes wrapped, empty meaning all axes unless ``noop_with_empty_axes``),
so the generated call is a single ``np.sum``/``np.mean``/``ufunc.reduce``.
"""

from __future__ import annotations

from torsh_gen.backends.python.context import NodeCtx
from torsh_gen.backends.python.emitters import emits
from torsh_gen.backends.python.emitters.elementwise import FLOATS, dtypes

_SIMPLE = {
    "ReduceSum": "np.sum({x}, axis={axes}, keepdims={k}{out})",
    "ReduceMean": "np.mean({x}, axis={axes}, keepdims={k}{out})",
    "ReduceProd": "np.prod({x}, axis={axes}, keepdims={k}{out})",
    "ReduceMax": "np.maximum.reduce({x}, axis={axes}, keepdims={k}, initial=-np.inf{out})",
    "ReduceMin": "np.minimum.reduce({x}, axis={axes}, keepdims={k}, initial=np.inf{out})",
    "ReduceSumSquare": "np.sum(np.square({x}), axis={axes}, keepdims={k}{out})",
    "ReduceL1": "np.sum(np.abs({x}), axis={axes}, keepdims={k}{out})",
    "ReduceL2": "np.sqrt(np.sum(np.square({x}), axis={axes}, keepdims={k}))",
}


def resolve_axes(ctx: NodeCtx) -> tuple[int, ...] | None:
    """The reduced axes as the reference resolves them; None when not known now."""
    t = ctx.in_tensor(0)
    if t is None or t.shape is None:
        return None
    rank = len(t.shape)
    axes_input = "axes" not in ctx.spec.attrs
    if axes_input:
        if ctx.x(1) is not None:
            listed = ctx.const_ints(1)
            if listed is None:
                return None
        else:
            listed = []
        noop = bool(ctx.attrs.noop_with_empty_axes)
    else:
        listed = [int(a) for a in ctx.attrs.axes or []]
        noop = False
    if listed:
        return tuple(sorted({a % max(rank, 1) for a in listed})) if rank else ()
    return () if noop else tuple(range(rank))


@emits(*_SIMPLE)
def reduce(ctx: NodeCtx) -> bool:
    """One numpy reduction over the resolved axes."""
    ds = dtypes(ctx, 1)
    if not ds or ds[0] not in FLOATS:
        return False
    axes = resolve_axes(ctx)
    if axes is None:
        return False
    out = ctx.out_kw() if (ctx.out_type(0) is not None and ctx.out_type(0).shape) else ""
    code = _SIMPLE[ctx.node.op_type].format(x=ctx.x(0), axes=ctx.lit(axes), k=bool(ctx.attrs.keepdims), out=out)
    ctx.emit(f"{ctx.y()} = {code}")
    return True
