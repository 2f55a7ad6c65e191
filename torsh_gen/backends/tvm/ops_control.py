"""Run-time control flow → Relax: If, Loop and Scan as private functions of the module.

The control-flow pass unrolls what it can first (a compile-time condition keeps one branch,
a run-time one with equal static branch types becomes ``Where``, a compile-time trip count
or scan length copies the body); the nodes it leaves come here (``SECOND_CHANCE`` in
``convert``).

``main`` stays one dataflow block (FuseOps and LiftTransformParams work on those), and
Relax allows no ``relax.If`` inside one, so control flow is outlined: each subgraph (If
branch, Loop body) becomes a private function whose body is a dataflow block of its own,
and the ``relax.If`` lives in a small function of its own that only calls them::

    main:      r = if_fn(cond, captured...)                      (inside main's dataflow)
    if_fn:     if cond: r = then_fn(captured...) else: r = else_fn(captured...)

Each branch only calls (apache-tvm 0.27's StaticPlanBlockMemory reuses a storage allocated
in one branch of an If in the other, which crashes at run time, so no branch allocates).
Values of enclosing graphs that a subgraph reads become extra parameters (``_Body``).

A Loop is recursion: ``step`` runs the body once (and appends the scan outputs), and
``level`` functions repeat it while ``i < M`` and the condition holds. One recursion level
per iteration would overflow the VM's native stack after a few thousand iterations, so the
levels nest: level 1 runs at most ``_FANOUT`` steps, level 2 at most ``_FANOUT`` level-1
runs, and the outermost level recurses once per ``_FANOUT ** 2`` iterations. A Scan is such
a loop over its inputs' scan axis, the body reading slices of the (captured) inputs.
Scan outputs grow by one concatenation per iteration (quadratic copying in the length).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from torsh_gen.backends.tvm.convert import (
    DTYPES,
    PARAM_MIN_ELEMENTS,
    SECOND_CHANCE,
    Ctx,
    Decline,
    _convert_node,
    converts,
)
from torsh_gen.ir.graph import Graph, Node, Value
from torsh_gen.ir.types import TensorType

#: Steps one recursion level runs before returning to the level above it.
_FANOUT = 64
#: Nesting levels of a loop (the outermost one unbounded): about _FANOUT ** (levels - 1)
#: iterations per frame of the outermost level.
_LEVELS = 3
#: A Loop with a constant trip count whose unrolled copies would hold more nodes than this
#: is run as a loop instead of being unrolled by the passes.
UNROLL_NODES = 512
_INT64_MAX = np.iinfo(np.int64).max
_PENDING = itertools.count()

#: Ops this module takes when the passes leave them (they prefer to unroll them first).
SECOND_CHANCE.update({"If", "Loop", "Scan"})


class _Body(Ctx):
    """The context of an outlined function's body: the values of enclosing graphs it reads
    become parameters of the function (``captures``), passed by the caller; weights large
    enough to be parameters of ``main`` travel the same way."""

    def __init__(self, parent: Ctx, graph: Graph) -> None:
        super().__init__(parent.bb, graph, parent.opset)
        self.parent = parent
        #: (parameter of this function, the caller's expression it receives)
        self.captures: list[tuple[Any, Any]] = []

    def x(self, value: Value | None) -> Any:
        if value is None:
            raise Decline("a required input is missing")
        got = self.env.get(id(value))
        if got is not None:
            return got
        if value.const is not None:
            return self._constant(value)
        expr = self._capture(self.parent.x(value))
        self.env[id(value)] = expr
        return expr

    def weight(self, array: np.ndarray) -> Any:
        arr = np.asarray(array)
        if arr.size <= PARAM_MIN_ELEMENTS:
            return super().weight(arr)
        return self._capture(self.parent.weight(arr))

    def _constant(self, value: Value) -> Any:
        arr = np.asarray(value.const)
        expr = (
            super().weight(arr)
            if arr.size <= PARAM_MIN_ELEMENTS
            else self._capture(self.parent.x(value))
        )
        self.env[id(value)] = expr
        return expr

    def _capture(self, outer: Any) -> Any:
        from tvm import relax

        for param, expr in self.captures:
            if expr.same_as(outer):
                return param
        param = relax.Var(f"cap{len(self.captures)}", _fresh_type(outer.ty))
        self.captures.append((param, outer))
        return param


def _fresh_type(ty: Any) -> Any:
    """A tensor type like ``ty`` whose non-constant dims are new symbolic variables (each
    function defines its own; sharing the caller's would tie the two)."""
    from tvm import relax, tirx
    from tvm.ir.prim.expr import IntImm

    if not isinstance(ty, relax.TensorType) or ty.ndim < 0:
        raise Decline("a value a control-flow body reads is not a tensor of known rank")
    shape = getattr(ty.shape, "values", None)
    dims = [
        d if shape is not None and isinstance(d, IntImm) else tirx.Var("n", "int64")
        for d in (shape if shape is not None else range(ty.ndim))
    ]
    return relax.TensorType(dims, ty.dtype)


def _settle(ctx: Ctx, expr: Any, value: Value) -> Any:
    """``expr`` (a tensor whose shape Relax cannot know, such as a branch output) cast to
    ``value``'s inferred dims where they are static and fresh symbolic ones elsewhere, so
    the converters after it see its rank and dims (checked at run time)."""
    from tvm import relax, tirx

    ty = expr.ty
    if (
        not isinstance(ty, relax.TensorType)
        or ty.ndim < 0
        or getattr(ty.shape, "values", None) is not None
    ):
        return expr
    t = value.type
    known = (
        t.shape
        if isinstance(t, TensorType) and t.shape is not None and len(t.shape) == ty.ndim
        else None
    )
    if known is None:
        return ctx.bb.match_cast(expr, _fresh_type(ty))
    dims = [d if isinstance(d, int) else tirx.Var("n", "int64") for d in known]
    return ctx.bb.match_cast(expr, relax.TensorType(dims, ty.dtype))


def _typed(node: Node, outs: list[Any]) -> list[Any]:
    """``outs``, after giving each output of ``node`` that type inference left untyped (it
    does not always see through subgraphs) its type from Relax, as converters reading it
    ask for its dtype and rank."""
    from tvm.ir.prim.expr import IntImm

    dtypes = {v: k for k, v in DTYPES.items()}
    for value, expr in zip(node.outputs, outs):
        ty = getattr(expr, "ty", None)
        if isinstance(value.type, TensorType) or str(getattr(ty, "dtype", "")) not in dtypes:
            continue
        dims = getattr(ty.shape, "values", None)
        shape = (
            None
            if dims is None
            else tuple(int(d.value) if isinstance(d, IntImm) else None for d in dims)
        )
        value.type = TensorType(dtypes[str(ty.dtype)], shape)
    return outs


def _scalar(ctx: Ctx, value: Value, dtype: str, what: str) -> Any:
    """A one-element operand (trip count, condition) as a 0-d tensor of ``dtype``."""
    from tvm import relax

    expr = ctx.x(value)
    if ctx.dtype(value) != dtype:
        raise Decline(f"{what} must be {dtype}")
    dims = ctx.shape_of(expr)
    if dims != [] and not all(d == 1 for d in dims):
        raise Decline(f"{what} must hold one element")
    return ctx.emit(relax.op.reshape(expr, [])) if dims else expr


def _function(
    parent: Ctx,
    graph: Graph,
    params: list[Any],
    enter: Callable[[_Body], None],
    finish: Callable[[_Body], list[Any]],
    name: str,
) -> tuple[Any, list[Any]]:
    """Convert ``graph`` into a new private function in one dataflow block: ``enter`` binds
    its inputs (to ``params``), ``finish`` gives the returned values (it may append to
    ``params``); the captured values are appended as parameters. Returns the function's
    GlobalVar and the caller's expressions for its captured parameters."""
    from tvm import relax

    bb = parent.bb
    body = _Body(parent, graph)
    missing: list[str] = []
    outs: list[Any] = []
    bb.begin_scope(params)
    bb._begin_dataflow_block()
    try:
        enter(body)
        for node in graph.nodes:
            _convert_node(body, node, missing)
        if not missing:
            outs = [bb.emit_output(o) for o in finish(body)]
    finally:
        block = bb._end_block()
        bb.end_scope()
    if missing:
        raise Decline(f"its {name.replace('_', ' ')}: " + "; ".join(missing[:3]))
    every = params + [p for p, _ in body.captures]
    bb.begin_scope(every)
    try:
        seq = bb.normalize(relax.SeqExpr([block], relax.Tuple(outs)))
    finally:
        bb.end_scope()
    gv = bb.add_func(relax.Function(every, seq, None, is_pure=True), name)
    return gv, [e for _, e in body.captures]


def _call_block(bb: Any, gv: Any, args: list[Any]) -> Any:
    """A SeqExpr that only calls ``gv``: an If branch that allocates nothing itself."""
    from tvm import relax

    bb._begin_binding_block()
    var = bb.emit(relax.Call(gv, args))
    return relax.SeqExpr([bb._end_block()], var)


# ====================================================================== If
def _if_accepts(node: Node) -> bool:
    """Never first: the control-flow pass inlines a compile-time condition's branch and
    selects equal static branch types with Where (inside main's dataflow block, where
    fusion works); what it leaves is taken at conversion (``SECOND_CHANCE``)."""
    return False


@converts("If", accepts=_if_accepts)
def _if(ctx: Ctx, node: Node) -> Sequence[Any]:
    """An If on a run-time condition: each branch a function, and a function that calls
    the one the condition picks (``relax.If`` is not allowed inside dataflow blocks)."""
    from tvm import relax

    cond = _scalar(ctx, node.inputs[0], "bool", "the condition")
    branches = []
    for which in ("then_branch", "else_branch"):
        graph: Graph = node.attr(which)
        if len(graph.outputs) != len(node.outputs):
            raise Decline(
                f"its {which} gives {len(graph.outputs)} outputs, {len(node.outputs)} expected"
            )
        branches.append(
            _function(
                ctx,
                graph,
                [],
                lambda b: None,
                lambda b, g=graph: [b.x(v) for v in g.outputs],
                which,
            )
        )
    caps: list[Any] = []
    for _, outer in branches:
        caps += [e for e in outer if not any(e.same_as(c) for c in caps)]
    c = relax.Var("cond", relax.TensorType([], "bool"))
    cap_params = [relax.Var(f"cap{k}", _fresh_type(e.ty)) for k, e in enumerate(caps)]
    bb = ctx.bb

    def args(outer: list[Any]) -> list[Any]:
        return [cap_params[next(k for k, e in enumerate(caps) if e.same_as(o))] for o in outer]

    bb.begin_scope([c, *cap_params])
    try:
        then_seq = _call_block(bb, branches[0][0], args(branches[0][1]))
        else_seq = _call_block(bb, branches[1][0], args(branches[1][1]))
        bb._begin_binding_block()
        result = bb.emit(relax.If(c, then_seq, else_seq))
        seq = bb.normalize(relax.SeqExpr([bb._end_block()], result))
    finally:
        bb.end_scope()
    gv = bb.add_func(relax.Function([c, *cap_params], seq, None, is_pure=True), "if_select")
    res = ctx.emit(relax.Call(gv, [cond, *caps]))
    return _typed(
        node,
        [_settle(ctx, ctx.emit(relax.TupleGetItem(res, k)), v) for k, v in enumerate(node.outputs)],
    )


# ====================================================================== Loop
def _loop_accepts(node: Node) -> bool:
    """Taken without the pass trying first only when the trip count is a constant so large
    that unrolling would copy the body into more than ``UNROLL_NODES`` nodes; the loops the
    pass cannot unroll (run-time trip counts and conditions) are taken when it leaves them."""
    trip = node.inputs[0] if node.inputs else None
    if trip is None or trip.const is None or np.asarray(trip.const).size != 1:
        return False
    body: Graph = node.attr("body")
    return int(np.asarray(trip.const).reshape(-1)[0]) * max(1, len(body.nodes)) > UNROLL_NODES


@converts("Loop", accepts=_loop_accepts)
def _loop(ctx: Ctx, node: Node) -> Sequence[Any]:
    """A Loop with a run-time trip count or condition: a recursion over a function that runs
    the body once (see the module docstring); scan outputs are appended per iteration."""
    from tvm import relax

    body: Graph = node.attr("body")
    n = len(node.inputs) - 2
    if n < 0 or len(body.inputs) != n + 2 or len(body.outputs) < n + 1:
        raise Decline("its body's inputs and outputs do not match its inputs")
    if any(v is None for v in node.inputs[2:]):
        raise Decline("a loop-carried input is missing")
    if ctx.has(node, 0):
        trip = _scalar(ctx, node.inputs[0], "int64", "the trip count")
    else:
        trip = ctx.scalar(_INT64_MAX, "int64")
    if ctx.has(node, 1):
        cond = _scalar(ctx, node.inputs[1], "bool", "the condition")
    else:
        cond = ctx.scalar(True, "bool")

    def bind(b: _Body, i: Any, c: Any) -> None:
        for value, param in zip(body.inputs[:2], (i, c)):
            want = value.type.shape if isinstance(value.type, TensorType) else None
            if want is not None and len(want) == 1:  # declared [1], not a scalar
                param = b.emit(relax.op.reshape(param, [1]))
            b.env[id(value)] = param

    loop = _Loop(ctx, body, [ctx.x(v) for v in node.inputs[2:]], body.inputs[2:], bind)
    loop.cond_out = body.outputs[0]
    loop.carried_out = body.outputs[1 : 1 + n]
    loop.scan_out = body.outputs[1 + n :]
    return _typed(node, loop.run(node.outputs, trip, cond))


class _Loop:
    """The functions of one loop (a Loop, or a Scan seen as one): ``step`` (the body once)
    and the nested ``level``s. ``bind`` binds the body inputs other than the carried ones
    (the iteration number and condition of a Loop, the slices of a Scan) in a step."""

    def __init__(
        self,
        ctx: Ctx,
        body: Graph,
        inits: list[Any],
        carried_in: Sequence[Value],
        bind: Callable[[_Body, Any, Any], None],
    ) -> None:
        self.ctx, self.body, self.inits, self.carried_in, self.bind = (
            ctx,
            body,
            inits,
            list(carried_in),
            bind,
        )
        #: The body outputs: the condition (None: always true), carried values, scans.
        self.cond_out: Value | None = None
        self.carried_out: list[Value] = []
        self.scan_out: list[Value] = []
        #: Per scan output: whether each iteration's value goes first (reverse direction).
        self.prepend: list[bool] = []
        #: Per scan output: its per-iteration static shape and dtype (known after ``step``).
        self.elems: list[tuple[list[int], str]] = []
        self.caps: list[Any] = []

    def run(self, outputs: Sequence[Value], trip: Any, cond: Any) -> list[Any]:
        """Build the functions and call them from the caller: the final carried values and
        the stacked scan outputs (along a new axis 0), one per ``outputs``."""
        from tvm import relax, tirx

        ctx = self.ctx
        self.fixed = [
            _fixed_shape(init, out.type) for init, out in zip(self.inits, self.carried_out)
        ]
        top = self.build()
        accs = [relax.op.zeros([0, *shape], dtype) for shape, dtype in self.elems]
        zero = ctx.scalar(0, "int64")
        res = ctx.emit(relax.Call(top, [zero, cond, *self.inits, *accs, trip, *self.caps]))
        outs = []
        for j, v in enumerate(outputs):
            got = ctx.emit(relax.TupleGetItem(res, 2 + j))
            if j < len(self.inits):
                outs.append(_settle(ctx, got, v))
            else:  # a scan: [iterations, *its static per-iteration shape]
                shape, dtype = self.elems[j - len(self.inits)]
                ty = relax.TensorType([tirx.Var("k", "int64"), *shape], dtype)
                outs.append(ctx.bb.match_cast(got, ty))
        return outs

    def state_types(self, general: bool) -> list[Any]:
        """Types of the state (i, cond, carried..., scans...): in parameters, fresh dims for
        what may change; with ``general``, the declared results (dims unknown there)."""
        from tvm import relax, tirx

        types = [relax.TensorType([], "int64"), relax.TensorType([], "bool")]
        for init, fixed in zip(self.inits, self.fixed):
            ty = init.ty
            if fixed:
                types.append(ty)
            elif general:
                types.append(relax.TensorType(ndim=ty.ndim, dtype=ty.dtype))
            else:
                types.append(_fresh_type(relax.TensorType(ndim=ty.ndim, dtype=ty.dtype)))
        for shape, dtype in self.elems:
            if general:
                types.append(relax.TensorType(ndim=1 + len(shape), dtype=dtype))
            else:
                types.append(relax.TensorType([tirx.Var("k", "int64"), *shape], dtype))
        return types

    def build(self) -> Any:
        """The outermost level's GlobalVar (after building every function it needs)."""
        inner, counted = self.step(), False
        for level in range(1, _LEVELS + 1):
            inner = self.level(inner, counted, level < _LEVELS)
            counted = level < _LEVELS
        return inner

    def step(self) -> Any:
        """The body once: (i, cond, carried..., scans..., captured...) → (i + 1, its
        condition, carried..., each scan with this iteration's output appended)."""
        from tvm import relax

        ctx, body = self.ctx, self.body
        params = [relax.Var(f"s{k}", t) for k, t in enumerate(self.state_types(False))]

        def enter(b: _Body) -> None:
            self.bind(b, params[0], params[1])
            for value, param in zip(self.carried_in, params[2:]):
                b.env[id(value)] = param

        def finish(b: _Body) -> list[Any]:
            op = relax.op
            outs = [b.emit(op.add(params[0], relax.const(1, "int64")))]
            # the body's condition ends the loop even without a condition input, as in
            # onnxruntime, onnx's reference and our Loop kernel
            if self.cond_out is None:
                outs.append(params[1])
            else:
                outs.append(_scalar(b, self.cond_out, "bool", "the body's condition"))
            for k, v in enumerate(self.carried_out):
                expr = b.x(v)
                if expr.ty.dtype != self.inits[k].ty.dtype:
                    raise Decline(f"loop-carried value {k} changes its element type in the body")
                outs.append(_declared(b, expr, v) if self.fixed[k] else expr)
            for k, v in enumerate(self.scan_out):
                y = _declared(b, b.x(v), v)
                shape = b.shape_of(y)
                if not all(isinstance(d, int) for d in shape):
                    raise Decline(f"scan output {k} has a shape known only at run time")
                self.elems.append((shape, str(y.ty.dtype)))
                acc = relax.Var(f"scan{k}", self.state_types(False)[-1])
                params.append(acc)
                parts = [acc, op.expand_dims(y, [0])]
                first = k < len(self.prepend) and self.prepend[k]
                outs.append(b.emit(op.concat(parts[::-1] if first else parts, axis=0)))
            return outs

        gv, self.caps = _function(ctx, body, params, enter, finish, "loop_body")
        return gv

    def level(self, inner: Any, inner_counted: bool, counted: bool) -> Any:
        """A function that runs ``inner`` (the step or the level below) while ``i < M`` and
        the condition holds, recursing on itself; ``counted`` ones stop after ``_FANOUT``
        runs of ``inner`` (so the level above takes over and the native stack stays short)."""
        from tvm import relax

        bb, op = self.ctx.bb, relax.op
        state = [relax.Var(f"s{k}", t) for k, t in enumerate(self.state_types(False))]
        count = [relax.Var("count", relax.TensorType([], "int64"))] if counted else []
        trip = relax.Var("trip", relax.TensorType([], "int64"))
        caps = [relax.Var(f"cap{k}", _fresh_type(e.ty)) for k, e in enumerate(self.caps)]
        params = [*state, *count, trip, *caps]
        ret = relax.TupleType(self.state_types(True))
        gv = _declare(bb, params, ret)
        bb.begin_scope(params)
        try:
            bb._begin_dataflow_block()
            go = op.logical_and(op.less(state[0], trip), state[1])
            if counted:
                go = op.logical_and(go, op.greater(count[0], relax.const(0, "int64")))
                nxt = [bb.emit_output(op.subtract(count[0], relax.const(1, "int64")))]
            else:
                nxt = []
            go = bb.emit_output(go)
            first = bb._end_block()
            bb._begin_binding_block()  # the branches only call: see the module docstring
            args = [*state, *([relax.const(_FANOUT, "int64")] if inner_counted else [])]
            ran = bb.emit(relax.Call(inner, [*args, *([trip] if inner_counted else []), *caps]))
            fields = [bb.emit(relax.TupleGetItem(ran, k)) for k in range(len(state))]
            again = bb.emit(relax.Call(gv, [*fields, *nxt, trip, *caps]))
            then_seq = relax.SeqExpr([bb._end_block()], again)
            bb._begin_binding_block()
            res = bb.emit(relax.If(go, then_seq, relax.SeqExpr([], relax.Tuple(state))))
            seq = bb.normalize(relax.SeqExpr([first, bb._end_block()], res))
        finally:
            bb.end_scope()
        bb.update_func(gv, relax.Function(params, seq, ret, is_pure=True))
        return gv


def _declare(bb: Any, params: list[Any], ret: Any) -> Any:
    """A GlobalVar for a recursive function of ``params`` returning ``ret``, bound to a
    placeholder until ``update_func`` gives the real body (a call needs the callee's type).
    The placeholder is made unique, as ``add_func`` merges structurally equal functions."""
    from tvm import relax

    holder = relax.Function(params, relax.Var("pending", ret), ret, is_pure=True)
    return bb.add_func(holder.with_attr("torsh_pending", str(next(_PENDING))), "loop")


def _fixed_shape(init: Any, out_type: Any) -> bool:
    """Whether a loop-carried value keeps its initial static shape: the initial value's is
    static and the body's output type says the same."""
    from tvm.ir.prim.expr import IntImm

    dims = getattr(init.ty.shape, "values", None)
    if dims is None or not all(isinstance(d, IntImm) for d in dims):
        return False
    return (
        isinstance(out_type, TensorType)
        and out_type.shape is not None
        and list(out_type.shape) == [int(d.value) for d in dims]
    )


def _declared(ctx: Ctx, expr: Any, value: Value) -> Any:
    """``expr`` cast to ``value``'s static type where Relax's shape for it is symbolic (the
    body's declared or inferred type is static): checked at run time, known after."""
    from tvm import relax

    t = value.type
    dims = ctx.shape_of(expr) if getattr(expr.ty, "shape", None) is not None else None
    if not (isinstance(t, TensorType) and t.shape is not None and t.is_static):
        return expr
    if dims is not None and all(isinstance(d, int) for d in dims):
        return expr
    return ctx.bb.match_cast(expr, relax.TensorType([int(d) for d in t.shape], expr.ty.dtype))


# ====================================================================== Scan
def _scan_accepts(node: Node) -> bool:
    """Like Loop's: taken first only when the pass would unroll a static length into more
    than ``UNROLL_NODES`` nodes; run-time lengths are taken when the pass leaves them."""
    m = int(node.attr("num_scan_inputs", 0) or 0)
    first = node.inputs[len(node.inputs) - m] if 0 < m <= len(node.inputs) else None
    t = first.type if first is not None else None
    if not (isinstance(t, TensorType) and t.is_static and t.shape):
        return False
    axes = node.attr("scan_input_axes") or [0]
    axis = int(axes[0]) % len(t.shape)
    body: Graph = node.attr("body")
    return int(t.shape[axis]) * max(1, len(body.nodes)) > UNROLL_NODES


@converts("Scan", accepts=_scan_accepts)
def _scan(ctx: Ctx, node: Node) -> Sequence[Any]:
    """A Scan (opset 9+) of a run-time length: a loop over the scan axis whose body takes
    slice ``i`` of each scan input; reverse directions read flipped inputs and prepend."""
    from tvm import relax

    if 0 < ctx.opset < 9:
        raise Decline("opset 8 Scan (batched, with sequence_lens) of a run-time length")
    body: Graph = node.attr("body")
    m = int(node.attr("num_scan_inputs"))
    n = len(node.inputs) - m
    k = len(body.outputs) - n
    if n < 0 or m < 1 or k < 0 or len(body.inputs) != n + m or None in node.inputs:
        raise Decline("its body's inputs and outputs do not match its inputs")
    xs = [ctx.x(v) for v in node.inputs[n:]]
    in_axes = [
        ctx.axis(int(a), len(ctx.shape_of(x)))
        for a, x in zip(_ints(node, "scan_input_axes", m), xs)
    ]
    xs = [
        ctx.emit(relax.op.flip(x, axis)) if rev else x
        for x, axis, rev in zip(xs, in_axes, _ints(node, "scan_input_directions", m))
    ]
    length = ctx.shape_of(xs[0])[in_axes[0]]
    xs = [xs[0]] + [_same_length(ctx, x, a, length) for x, a in zip(xs[1:], in_axes[1:])]
    if isinstance(length, int):
        trip = ctx.scalar(length, "int64")
    else:
        dims = relax.op.shape_to_tensor(relax.op.shape_of(xs[0]))
        trip = ctx.emit(relax.op.take(dims, relax.const(in_axes[0], "int64"), axis=0))

    def bind(b: _Body, i: Any, c: Any) -> None:
        for value, x, axis in zip(body.inputs[n:], xs, in_axes):
            b.env[id(value)] = b.emit(relax.op.take(b._capture(x), i, axis=axis))

    loop = _Loop(ctx, body, [ctx.x(v) for v in node.inputs[:n]], body.inputs[:n], bind)
    loop.carried_out = body.outputs[:n]
    loop.scan_out = body.outputs[n:]
    loop.prepend = [bool(d) for d in _ints(node, "scan_output_directions", k)]
    outs = loop.run(node.outputs, trip, ctx.scalar(True, "bool"))
    for j, axis in enumerate(_ints(node, "scan_output_axes", k)):
        if n + j < len(outs):
            rank = len(ctx.shape_of(outs[n + j]))
            a = ctx.axis(int(axis), rank)
            if a:
                perm = [*range(1, a + 1), 0, *range(a + 1, rank)]
                outs[n + j] = ctx.emit(relax.op.permute_dims(outs[n + j], perm))
    return _typed(node, outs)


def _ints(node: Node, name: str, count: int) -> list[int]:
    """Integer list attribute ``name`` (one per scan input or output), zeros when absent."""
    got = node.attr(name) or [0] * count
    if len(got) != count:
        raise Decline(f"{name} has {len(got)} entries, {count} expected")
    return [int(v) for v in got]


def _same_length(ctx: Ctx, x: Any, axis: int, length: Any) -> Any:
    """``x`` with its scan axis checked (at run time where symbolic) to be ``length``."""
    from tvm import relax, tirx

    dims = ctx.shape_of(x)
    if isinstance(dims[axis], int) and isinstance(length, int):
        if dims[axis] != length:
            raise Decline(f"its scan inputs have different lengths {length} and {dims[axis]}")
        return x
    if dims[axis] is length:
        return x
    want = [
        length if j == axis else d if isinstance(d, int) else tirx.Var("n", "int64")
        for j, d in enumerate(dims)
    ]
    return ctx.bb.match_cast(x, relax.TensorType(want, x.ty.dtype))
