"""Emitters for If and Loop: subgraphs become nested functions, control flow stays Python.

If runs one of two nested functions under a plain ``if``; Loop is a ``while`` loop over
its body function, carrying the loop state and collecting scan outputs exactly as the
reference kernel does (stacked along a new first axis; empty scans shaped from the
body's declared type). Scan and SequenceMap run their reference kernels, with their
bodies compiled into nested functions the same way (see ``reference``).
"""

from __future__ import annotations

from torsh_gen.backends.python.context import NodeCtx
from torsh_gen.backends.python.emitters import emits
from torsh_gen.ir.graph import Graph
from torsh_gen.ir.types import DType, TensorType


def _unpack(names: list[str]) -> str:
    return f"({names[0]},)" if len(names) == 1 else f"({', '.join(names)})"


@emits("If")
def if_(ctx: NodeCtx) -> bool:
    """``if cond: outs = then() else: outs = else()``."""
    then_fn = ctx.subgraph(ctx.attrs.then_branch, "then_branch")
    else_fn = ctx.subgraph(ctx.attrs.else_branch, "else_branch")
    target = _unpack(ctx.outs) if ctx.outs else "_"
    ctx.emit(f"if _rt.truth({ctx.x(0)}):")
    ctx.emit(f"{target} = {then_fn}()", 1)
    ctx.emit("else:")
    ctx.emit(f"{target} = {else_fn}()", 1)
    return True


def _stack_args(t: object) -> str:
    """dtype name and per-iteration shape for stacking an empty scan output."""
    dtype, shape = "float32", ()
    if isinstance(t, TensorType):
        if t.dtype not in (DType.UNDEFINED, DType.STRING):
            dtype = t.dtype.numpy.name
        if t.shape is not None:
            shape = tuple(d if isinstance(d, int) else 0 for d in t.shape)
    return f"{dtype!r}, {shape!r}"


@emits("Loop")
def loop(ctx: NodeCtx) -> bool:
    """A while loop over the body function (trip count and/or condition)."""
    body: Graph = ctx.attrs.body
    fn = ctx.subgraph(body, "loop_body")
    m, cond = ctx.x(0), ctx.x(1)
    carried = [x for x in ctx.ins[2:]]
    if any(c is None for c in carried):
        return False
    n = len(carried)
    n_scan = len(body.outputs) - 1 - n
    trip, go, i, outs = ctx.tmp("trip"), ctx.tmp("go"), ctx.tmp("it"), ctx.tmp("step")
    state = [ctx.tmp("state") for _ in range(n)]
    scans = [ctx.tmp("scan") for _ in range(n_scan)]
    if m is not None:
        ctx.emit(f"{trip} = _rt.scalar_int({m})")
    ctx.emit(f"{go} = {'_rt.truth(' + cond + ')' if cond is not None else 'True'}")
    for s, c in zip(state, carried):
        ctx.emit(f"{s} = {c}")
    for s in scans:
        ctx.emit(f"{s} = []")
    ctx.emit(f"{i} = 0\n{outs} = None")
    test = go if m is None else f"{go} and {i} < {trip}"
    ctx.emit(f"while {test}:")
    args = ", ".join([f"np.array({i}, dtype=np.int64)", f"np.array({go})"] + state)
    ctx.emit(f"{outs} = {fn}({args})", 1)
    ctx.emit(f"{go} = _rt.truth({outs}[0])", 1)
    for k, s in enumerate(state):
        ctx.emit(f"{s} = {outs}[{1 + k}]", 1)
    for k, s in enumerate(scans):
        ctx.emit(f"{s}.append({outs}[{1 + n + k}])", 1)
    ctx.emit(f"{i} += 1", 1)
    results = state + [f"_rt.stack({s}, {_stack_args(v.type)})" for s, v in zip(scans, body.outputs[1 + n:])]
    for y, r in zip(ctx.outs, results):
        ctx.emit(f"{y} = {r}")
    temps = [trip] * (m is not None) + [go, i, outs] + state + scans
    ctx.emit(f"del {', '.join(temps)}")
    return True
