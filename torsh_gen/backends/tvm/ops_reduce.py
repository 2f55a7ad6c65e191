"""Reductions and scans → Relax: Reduce*, ArgMax/ArgMin, CumSum, TopK, Softmax family."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from torsh_gen.backends.tvm.convert import Ctx, Decline, converts
from torsh_gen.ir.graph import Node, Value
from torsh_gen.ir.types import TensorType


@converts("GlobalAveragePool")
def global_average_pool(ctx: Ctx, node: Node) -> Sequence[Any]:
    from tvm import relax

    rank = ctx.rank(node.inputs[0])
    return [ctx.emit(relax.op.mean(ctx.x(node.inputs[0]), axis=list(range(2, rank)), keepdims=True))]


# -- Reduce* ------------------------------------------------------------------------------

#: The opset from which each reduction takes its axes as an input instead of an attribute.
_AXES_INPUT_FROM = {"ReduceSum": 13}
_REDUCE_OPS = (
    "ReduceL1",
    "ReduceL2",
    "ReduceLogSum",
    "ReduceLogSumExp",
    "ReduceMax",
    "ReduceMean",
    "ReduceMin",
    "ReduceProd",
    "ReduceSum",
    "ReduceSumSquare",
)


def _static_dims(value: Value | None) -> list[int] | None:
    """``value``'s inferred shape when every dim is a known int, else None."""
    t = None if value is None else value.type
    if not isinstance(t, TensorType) or t.shape is None:
        return None
    dims = list(t.shape)
    return dims if all(isinstance(d, int) for d in dims) else None


#: Most candidate axis sets a run-time axes operand may be resolved among.
_MAX_CANDIDATES = 8


def _axes_from_shapes(in_dims: list[int] | None, out_dims: list[int] | None, keepdims: bool) -> list[list[int]]:
    """The axis sets that turn the static input shape into the declared output shape, for
    reduction axes given at run time (singleton axes may go either way: reducing one
    changes no value once another axis is reduced)."""
    if in_dims is None or out_dims is None:
        raise Decline("the reduction axes must be a constant (they are computed at run time)")
    rank = len(in_dims)
    if keepdims:
        if len(out_dims) != rank or any(o not in (i, 1) for i, o in zip(in_dims, out_dims)):
            raise Decline("the reduction axes are computed at run time and the output shape does not match")
        axes = [k for k, (i, o) in enumerate(zip(in_dims, out_dims)) if o == 1 and i != 1]
        if axes:
            return [axes]
        raise Decline("the reduction axes are computed at run time and the shapes do not tell them apart")
    gone = rank - len(out_dims)
    combos = [
        list(c)
        for c in itertools.combinations(range(rank), gone)
        if [d for k, d in enumerate(in_dims) if k not in c] == list(out_dims)
    ]
    if gone <= 0 or not combos or len(combos) > _MAX_CANDIDATES:
        raise Decline("the reduction axes are computed at run time and the shapes do not tell them apart")
    return combos


def _reduce_axes(ctx: Ctx, node: Node, rank: int) -> list[list[int]]:
    """The normalized, sorted axes ``node`` reduces ([] for the no-op of
    noop_with_empty_axes), from the attribute (older opsets) or the axes input: one set,
    or for run-time axes the candidate sets the shapes allow (chosen among at run time)."""
    keepdims = bool(node.attr("keepdims", 1))
    if ctx.opset < _AXES_INPUT_FROM.get(node.op_type, 18):
        axes = node.attr("axes", None)
        axes = list(axes) if axes is not None else []
        return [sorted({ctx.axis(int(a), rank) for a in axes}) if axes else list(range(rank))]
    noop = bool(node.attr("noop_with_empty_axes", 0))
    if not ctx.has(node, 1):
        axes = []
    elif ctx.const(node.inputs[1]) is not None:
        axes = ctx.ints(node.inputs[1], "the reduction axes")
    elif _static_dims(node.inputs[1]) == [0]:
        axes = []
    else:
        combos = _axes_from_shapes(_static_dims(node.inputs[0]), _static_dims(node.outputs[0]), keepdims)
        if len(combos) > 1 and _static_dims(node.inputs[1]) != [len(combos[0])]:
            raise Decline("the reduction axes are computed at run time and their count is unknown")
        return combos
    if not axes:
        return [[] if noop else list(range(rank))]
    return [sorted({ctx.axis(a, rank) for a in axes})]


def _axes_at_run_time(ctx: Ctx, node: Node) -> bool:
    """Whether ``node``'s reduction axes come from a run-time, non-empty axes operand (so
    the converter resolves them from the declared output shape)."""
    if ctx.opset < _AXES_INPUT_FROM.get(node.op_type, 18) or not ctx.has(node, 1):
        return False
    return ctx.const(node.inputs[1]) is None and _static_dims(node.inputs[1]) != [0]


def _any_of(ctx: Ctx, hits: Any, axis: int) -> Any:
    """``hits`` (a boolean tensor) reduced with "any" along ``axis``."""
    from tvm import relax

    return ctx.emit(relax.op.max(ctx.emit(relax.op.astype(ctx.emit(hits), "uint8")), axis=[axis]))


def _axes_match(ctx: Ctx, axes: Value, rank: int, candidate: list[int], free: list[int]) -> Any:
    """A boolean scalar: whether the run-time ``axes`` (negative ones normalized) reduce as
    ``candidate`` does: every axis given is in ``candidate`` or in ``free`` (singleton
    axes kept with keepdims, whose reduction changes nothing), and every axis of
    ``candidate`` is given. An axis out of range matches nothing."""
    from tvm import relax

    a = ctx.emit(relax.op.astype(ctx.x(axes), "int64"))
    a = ctx.emit(relax.op.reshape(a, [-1]))
    a = ctx.emit(
        relax.op.where(
            relax.op.less(a, relax.const(0, "int64")),
            relax.op.add(a, relax.const(rank, "int64")),
            a,
        )
    )
    allowed = relax.const(np.array(sorted(set(candidate) | set(free)), np.int64))
    inside = _any_of(ctx, relax.op.equal(ctx.emit(relax.op.expand_dims(a, -1)), allowed), 1)
    wanted = relax.const(np.array(candidate, np.int64).reshape(-1, 1))
    covered = _any_of(ctx, relax.op.equal(wanted, ctx.emit(relax.op.expand_dims(a, 0))), 1)
    both = ctx.emit(
        relax.op.minimum(ctx.emit(relax.op.min(inside)), ctx.emit(relax.op.min(covered)))
    )
    return ctx.emit(relax.op.astype(both, "bool"))


def _identity(op: str, dtype: str) -> float | int | bool:
    """The value of ``op`` over an empty set (ONNX: the reduction's identity element)."""
    is_float = dtype.startswith(("float", "bfloat"))
    if op in ("ReduceMax", "ReduceLogSum", "ReduceLogSumExp"):
        if dtype == "bool":
            return False
        return -np.inf if is_float else int(np.iinfo(dtype).min)
    if op == "ReduceMin":
        if dtype == "bool":
            return True
        return np.inf if is_float else int(np.iinfo(dtype).max)
    if op == "ReduceProd":
        return 1
    if op == "ReduceMean":
        return np.nan if is_float else 0
    return 0


@converts(*_REDUCE_OPS)
def reduce(ctx: Ctx, node: Node) -> Sequence[Any]:
    """Every Reduce* op: axes resolved at compile time (or, given at run time, chosen at
    run time among the sets the static shapes allow), an empty reduced set replaced by
    the op's identity, and no reduction at all (noop_with_empty_axes) kept as the op's
    elementwise part only (ReduceSumSquare of no axes squares, as the spec says)."""
    from tvm import relax

    src = node.inputs[0]
    x = ctx.x(src)
    dims = ctx.shape(src)
    rank = len(dims)
    dtype = ctx.dtype(src)
    keepdims = bool(node.attr("keepdims", 1))
    candidates = _reduce_axes(ctx, node, rank)
    if not _axes_at_run_time(ctx, node):
        return [_reduce_over(ctx, node, x, dims, candidates[0], keepdims, dtype)]
    # the axes were read off the declared output shape: pick among the candidates at run
    # time, and stop where the run-time axes are none of them (the declaration is wrong)
    free = [k for k, d in enumerate(dims) if d == 1] if keepdims else []
    matches = [_axes_match(ctx, node.inputs[1], rank, axes, free) for axes in candidates]
    ok = matches[0]
    for m in matches[1:]:
        ok = ctx.emit(relax.op.logical_or(ok, m))
    shown = ", ".join(str(c) for c in candidates)
    ctx.check(
        ok,
        f"{node.op_type}: the reduction axes given at run time ({{}}) disagree with the "
        f"model's declared output shape, which implies axes {shown}",
        [ctx.x(node.inputs[1])],
    )
    y = _reduce_over(ctx, node, x, dims, candidates[-1], keepdims, dtype)
    for axes, match in zip(reversed(candidates[:-1]), reversed(matches[:-1])):
        y = ctx.emit(
            relax.op.where(match, _reduce_over(ctx, node, x, dims, axes, keepdims, dtype), y)
        )
    return [y]


def _reduce_over(ctx: Ctx, node: Node, x: Any, dims: list[Any], axes: list[int], keepdims: bool, dtype: str) -> Any:
    """``node``'s reduction of ``x`` over ``axes`` (the identity where the set is empty)."""
    from tvm import relax

    if any(isinstance(dims[a], int) and dims[a] == 0 for a in axes):
        out = [1 if k in axes else d for k, d in enumerate(dims) if keepdims or k not in axes]
        # broadcast_to, not full: TVM 0.27's full fails to legalize with a float dtype
        return ctx.emit(relax.op.broadcast_to(relax.const(_identity(node.op_type, dtype), dtype), out))
    return _REDUCERS[node.op_type](ctx, x, axes, keepdims, dtype)


def _reduced(ctx: Ctx, fn: Callable[..., Any], x: Any, axes: list[int], keepdims: bool) -> Any:
    """``fn`` over ``axes``; no axes means no reduction (Relax would reduce them all)."""
    return ctx.emit(fn(x, axis=axes, keepdims=keepdims)) if axes else x


def _float_of(dtype: str) -> str:
    """The float type an integer reduction computes sqrt/log/exp in (numpy's float64)."""
    return dtype if dtype.startswith(("float", "bfloat")) else "float64"


def _with_float(ctx: Ctx, x: Any, dtype: str, fn: Callable[[Any], Any]) -> Any:
    """``fn(x)`` computed in float, cast back to ``dtype`` (integers truncate, as numpy's
    astype and onnx's reference do)."""
    from tvm import relax

    ftype = _float_of(dtype)
    if ftype != dtype:
        x = ctx.emit(relax.op.astype(x, ftype))
    y = ctx.emit(fn(x))
    return ctx.emit(relax.op.astype(y, dtype)) if ftype != dtype else y


def _r_sum(ctx: Ctx, x: Any, axes: list[int], keepdims: bool, dtype: str) -> Any:
    from tvm import relax

    return _reduced(ctx, relax.op.sum, x, axes, keepdims)


def _r_mean(ctx: Ctx, x: Any, axes: list[int], keepdims: bool, dtype: str) -> Any:
    from tvm import relax

    return _reduced(ctx, relax.op.mean, x, axes, keepdims)


def _r_prod(ctx: Ctx, x: Any, axes: list[int], keepdims: bool, dtype: str) -> Any:
    from tvm import relax

    return _reduced(ctx, relax.op.prod, x, axes, keepdims)


def _r_extreme(fn_name: str) -> Callable[..., Any]:
    """ReduceMax / ReduceMin; booleans go through uint8 (max = any, min = all)."""

    def run(ctx: Ctx, x: Any, axes: list[int], keepdims: bool, dtype: str) -> Any:
        from tvm import relax

        fn = getattr(relax.op, fn_name)
        if dtype.startswith(("float", "bfloat")) and axes:
            return _nan_extreme(ctx, x, axes, keepdims, fn_name == "max")
        if dtype != "bool":
            return _reduced(ctx, fn, x, axes, keepdims)
        y = _reduced(ctx, fn, ctx.emit(relax.op.astype(x, "uint8")), axes, keepdims)
        return ctx.emit(relax.op.astype(y, "bool"))

    return run


def _isnan(v: Any) -> Any:
    """isnan of a TIR float, through float32 for the 16-bit types (TVM's isnan rejects
    bfloat16)."""
    from tvm import tirx

    dtype = str(v.expr_ty())
    return tirx.isnan(tirx.Cast("float32", v) if dtype in ("float16", "bfloat16") else v)


def _nan_extreme(ctx: Ctx, x: Any, axes: list[int], keepdims: bool, greater: bool) -> Any:
    """Float max/min as one TE reduction that starts from -inf/+inf (TVM's max/min start
    from the type's largest finite value, so a set of only -inf gave -3.4e38 and the
    Attention body's "row fully masked" test missed) and lets a NaN win wherever it sits,
    as numpy and onnx's reference do (TVM's max/min drop NaNs depending on position)."""
    from tvm import te, tirx

    def combine(a: Any, b: Any) -> Any:
        better = b > a if greater else b < a
        return tirx.Select(_isnan(a), a, tirx.Select(tirx.any(better, _isnan(b)), b, a))

    reducer = te.comm_reducer(combine, lambda t: tirx.const(float("-inf") if greater else float("inf"), t), name="nan_extreme")

    def compute(t: Any) -> Any:
        shape = list(t.shape)
        raxes = {a: te.reduce_axis((0, shape[a]), name=f"k{a}") for a in axes}
        out = [1 if k in raxes else d for k, d in enumerate(shape) if keepdims or k not in raxes]

        def body(*idx: Any) -> Any:
            it = iter(idx)
            full = []
            for k in range(len(shape)):
                if k in raxes:
                    if keepdims:
                        next(it)
                    full.append(raxes[k].var)
                else:
                    full.append(next(it))
            return reducer(t(*full), axis=list(raxes.values()))

        return te.compute(out, body, name="max" if greater else "min")

    return ctx.emit_te(compute, x, primfunc_name_hint="max" if greater else "min")


def _r_sum_square(ctx: Ctx, x: Any, axes: list[int], keepdims: bool, dtype: str) -> Any:
    from tvm import relax

    return _reduced(ctx, relax.op.sum, ctx.emit(relax.op.multiply(x, x)), axes, keepdims)


def _r_l1(ctx: Ctx, x: Any, axes: list[int], keepdims: bool, dtype: str) -> Any:
    from tvm import relax

    return _reduced(ctx, relax.op.sum, ctx.emit(relax.op.abs(x)), axes, keepdims)


def _r_l2(ctx: Ctx, x: Any, axes: list[int], keepdims: bool, dtype: str) -> Any:
    from tvm import relax

    s = _reduced(ctx, relax.op.sum, ctx.emit(relax.op.multiply(x, x)), axes, keepdims)
    return _with_float(ctx, s, dtype, relax.op.sqrt)


def _r_log_sum(ctx: Ctx, x: Any, axes: list[int], keepdims: bool, dtype: str) -> Any:
    from tvm import relax

    s = _reduced(ctx, relax.op.sum, x, axes, keepdims)
    return _with_float(ctx, s, dtype, relax.op.log)


def _r_log_sum_exp(ctx: Ctx, x: Any, axes: list[int], keepdims: bool, dtype: str) -> Any:
    """log(sum(exp(x - m))) + m with m the (finite) max: no overflow for large inputs."""
    from tvm import relax

    ftype = _float_of(dtype)
    xf = ctx.emit(relax.op.astype(x, ftype)) if ftype != dtype else x
    if not axes:
        return x
    m = ctx.emit(relax.op.max(xf, axis=axes, keepdims=True))
    m = ctx.emit(relax.op.where(relax.op.isfinite(m), m, relax.const(0, ftype)))
    e = ctx.emit(relax.op.exp(relax.op.subtract(xf, m)))
    s = ctx.emit(relax.op.log(relax.op.sum(e, axis=axes, keepdims=True)))
    y = ctx.emit(relax.op.add(s, m))
    if not keepdims:
        y = ctx.emit(relax.op.squeeze(y, axis=axes))
    return ctx.emit(relax.op.astype(y, dtype)) if ftype != dtype else y


_REDUCERS: dict[str, Callable[..., Any]] = {
    "ReduceSum": _r_sum,
    "ReduceMean": _r_mean,
    "ReduceProd": _r_prod,
    "ReduceMax": _r_extreme("max"),
    "ReduceMin": _r_extreme("min"),
    "ReduceSumSquare": _r_sum_square,
    "ReduceL1": _r_l1,
    "ReduceL2": _r_l2,
    "ReduceLogSum": _r_log_sum,
    "ReduceLogSumExp": _r_log_sum_exp,
}


# -- ArgMax / ArgMin ----------------------------------------------------------------------


@converts("ArgMax", "ArgMin")
def arg_extreme(ctx: Ctx, node: Node) -> Sequence[Any]:
    """Relax's argmax/argmin return the first index of ties; select_last_index runs them
    on the reversed axis and maps the index back (n - 1 - i)."""
    from tvm import relax

    src = node.inputs[0]
    x = ctx.x(src)
    dims = ctx.shape(src)
    axis = ctx.axis(int(node.attr("axis", 0)), len(dims))
    keepdims = bool(node.attr("keepdims", 1))
    if ctx.dtype(src) == "bool":
        x = ctx.emit(relax.op.astype(x, "uint8"))
    fn = relax.op.argmax if node.op_type == "ArgMax" else relax.op.argmin
    last = bool(node.attr("select_last_index", 0))
    if last and not isinstance(dims[axis], int):
        raise Decline("select_last_index needs a static size of the reduced axis")
    if last:
        x = ctx.emit(relax.op.flip(x, axis))
    y = ctx.emit(fn(x, axis=axis, keepdims=keepdims))
    y = ctx.emit(relax.op.astype(y, "int64"))
    if last:
        y = ctx.emit(relax.op.subtract(relax.const(dims[axis] - 1, "int64"), y))
    return [y]


# -- CumSum / CumProd ---------------------------------------------------------------------


def _scan(ctx: Ctx, node: Node, x: Any, axis: int) -> Any:
    """CumSum/CumProd of ``x`` along ``axis`` with ONNX's exclusive and reverse."""
    from tvm import relax

    fn = relax.op.cumsum if node.op_type == "CumSum" else relax.op.cumprod
    reverse = bool(node.attr("reverse", 0))
    if reverse:
        x = ctx.emit(relax.op.flip(x, axis))
    y = ctx.emit(fn(x, axis=axis, exclusive=bool(node.attr("exclusive", 0))))
    return ctx.emit(relax.op.flip(y, axis)) if reverse else y


@converts("CumSum", "CumProd")
def cumulative(ctx: Ctx, node: Node) -> Sequence[Any]:
    """The axis is an input: constant as a rule; given at run time, a rank-1 input has one
    possible axis, and higher ranks scan every axis and select the one asked for."""
    from tvm import relax

    src = node.inputs[0]
    x = ctx.x(src)
    rank = ctx.rank(src)
    if rank == 0:
        raise Decline(f"{node.op_type} of a scalar is not defined")
    if ctx.const(node.inputs[1]) is not None:
        return [_scan(ctx, node, x, ctx.axis(ctx.ints(node.inputs[1], "the axis")[0], rank))]
    if rank == 1:
        return [_scan(ctx, node, x, 0)]
    axis_dtype = ctx.dtype(node.inputs[1])
    a = ctx.emit(relax.op.reshape(ctx.x(node.inputs[1]), []))
    a = ctx.emit(relax.op.astype(a, "int64")) if axis_dtype != "int64" else a
    a = ctx.emit(relax.op.where(relax.op.less(a, relax.const(0, "int64")), relax.op.add(a, relax.const(rank, "int64")), a))
    y = _scan(ctx, node, x, rank - 1)
    for k in range(rank - 1):
        y = ctx.emit(relax.op.where(relax.op.equal(a, relax.const(k, "int64")), _scan(ctx, node, x, k), y))
    return [y]


# -- TopK -------------------------------------------------------------------------------


def _topk_k(ctx: Ctx, node: Node, axis: int) -> int:
    """K as a Python int: from the constant input (or attribute before opset 10), else from
    the output's declared static size along ``axis``. That declaration comes from the
    model file, so the build then checks at run time that the k given is that one."""
    if ctx.opset < 10:
        return int(node.attr("k"))
    if ctx.const(node.inputs[1]) is not None:
        return ctx.ints(node.inputs[1], "TopK's k")[0]
    for out in node.outputs:
        dims = _static_dims(out)
        if dims is not None and len(dims) > axis:
            _check_topk_k(ctx, node.inputs[1], dims[axis])
            return dims[axis]
    raise Decline("TopK's k must be a constant (it is computed at run time)")


def _check_topk_k(ctx: Ctx, k: Value, declared: int) -> None:
    """Stop at run time unless the run-time ``k`` equals the ``declared`` one."""
    message = f"TopK: k is {{}} at run time, but the model's declared output shape says k={declared}"
    ctx.check_one_int(k, declared, message)


@converts("TopK")
def topk(ctx: Ctx, node: Node) -> Sequence[Any]:
    """Relax's topk sorts stably, so ties keep the lower index first, as ONNX asks.
    sorted=0 leaves the order to the implementation: sorted order is a valid one."""
    from tvm import relax

    src = node.inputs[0]
    dims = ctx.shape(src)
    axis = ctx.axis(int(node.attr("axis", -1)), len(dims))
    k = _topk_k(ctx, node, axis)
    if k < 0 or (isinstance(dims[axis], int) and k > dims[axis]):
        raise Decline(f"TopK's k={k} is out of range")
    largest = bool(node.attr("largest", 1))
    if k == 0:
        out = [0 if i == axis else d for i, d in enumerate(dims)]
        return [ctx.emit(relax.op.zeros(out, ctx.dtype(src))), ctx.emit(relax.op.zeros(out, "int64"))]
    x = ctx.x(src)
    if ctx.dtype(src) == "uint64":
        # TVM's sort takes no uint64: x - 2**63 as int64 (the sign bit flipped) orders the
        # same way; the values are then gathered from x at the indices found
        keys = ctx.emit(relax.op.bitwise_xor(relax.op.astype(x, "int64"), ctx.scalar(np.iinfo(np.int64).min, "int64")))
        idx = ctx.emit(relax.op.topk(keys, k=k, axis=axis, ret_type="indices", largest=largest, dtype="int64"))
        return [ctx.emit(relax.op.gather_elements(x, idx, axis=axis)), idx]
    res = ctx.emit(relax.op.topk(x, k=k, axis=axis, ret_type="both", largest=largest, dtype="int64"))
    return [ctx.emit(relax.TupleGetItem(res, 0)), ctx.emit(relax.TupleGetItem(res, 1))]
