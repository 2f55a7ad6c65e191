"""Tensor-manipulation ops → Relax: shapes, layout, slicing, gathering, scattering, padding.

Operands that ONNX passes as tensors but that decide an output's shape (Reshape's shape,
Slice's starts and ends, Pad's pads, Expand's shape, ...) are often computed at run time,
or are graph inputs. Where they are constants the shape is worked out here, at compile
time; otherwise a small TE kernel computes the output dims into a tensor, which
``tensor_to_shape`` and a ``MatchCast`` turn into fresh symbolic dims, and the data kernel
reads its offsets from tensors. The data kernels are TE (one loop nest each) where Relax's
own op would need compile-time operands or departs from ONNX (negative indices, clamping).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from torsh_gen.backends.tvm.convert import Ctx, Decline, converts, str_attr
from torsh_gen.ir.graph import Node, Value

I64 = "int64"


# -- small helpers ------------------------------------------------------------------------

def _c(v: int) -> Any:
    """An int64 TIR constant."""
    from tvm import tirx

    return tirx.const(v, I64)


def _i64(x: Any) -> Any:
    """A TIR expression as int64 (shape dims and index tensors come in several int types)."""
    from tvm import tirx

    if isinstance(x, int):
        return _c(x)
    return x if str(x.expr_ty()) == I64 else tirx.Cast(I64, x)


def _clamp(v: Any, lo: Any, hi: Any) -> Any:
    from tvm import tirx

    return tirx.max(tirx.min(v, hi), lo)


def _dim_at(shape: Sequence[Any], j: Any) -> Any:
    """``shape[j]`` for a TIR index ``j`` (a chain of selects: shapes are short)."""
    from tvm import tirx

    out = _c(1)
    for d in range(len(shape) - 1, -1, -1):
        out = tirx.Select(j == d, _i64(shape[d]), out)
    return out


def _dims_expr(dims: Sequence[Any]) -> list[Any]:
    """Shape dims as TIR: Python ints become int64 constants."""
    return [_c(d) if isinstance(d, int) else d for d in dims]


def _as_int(e: Any) -> Any:
    """A TIR expression that simplifies to a constant as a Python int, else simplified."""
    from tvm.ir.prim.expr import IntImm
    from tvm.sym import Analyzer

    if isinstance(e, int):
        return e
    e = Analyzer().simplify(e)
    return int(e.value) if isinstance(e, IntImm) else e


def _fresh_dims(ctx: Ctx, vec: Any, hint: str) -> list[Any]:
    """A 1-D int64 tensor of static length, computed at run time, as fresh symbolic
    dims bound by a MatchCast: how an output shape that depends on data enters Relax."""
    from tvm import relax, tirx

    n = ctx.shape_of(vec)[0]
    if not isinstance(n, int):
        raise Decline("the rank of the result is not known at compile time")
    shape = ctx.emit(relax.op.tensor_to_shape(vec))
    dims = [tirx.Var(f"{hint}{k}", I64) for k in range(n)]
    ctx.binders.append(ctx.bb.match_cast(shape, relax.ShapeType(dims)))
    return dims


def _int_vec(ctx: Ctx, value: Value, what: str) -> Any:
    """A run-time integer operand as a 1-D int64 Relax tensor (0-d becomes length 1)."""
    from tvm import relax

    kind = ctx.tensor_type(value).dtype.name
    if not kind.startswith(("INT", "UINT")):
        raise Decline(f"{what} must be an integer tensor")
    x = ctx.x(value)
    if ctx.dtype(value) != I64:
        x = ctx.emit(relax.op.astype(x, I64))
    if len(ctx.shape_of(x)) != 1:
        x = ctx.emit(relax.op.reshape(x, [-1]))
    if not isinstance(ctx.shape_of(x)[0], int):
        raise Decline(f"{what} must have a static length")
    return x


def _const_ints(ctx: Ctx, node: Node, index: int) -> list[int] | None:
    """Optional input ``index`` as ints when it is a constant; None when it is absent or
    computed at run time (see ``ctx.has`` to tell them apart)."""
    if not ctx.has(node, index):
        return None
    arr = ctx.const(node.inputs[index])
    return None if arr is None else [int(v) for v in np.asarray(arr).reshape(-1)]


def _te(
    ctx: Ctx, shape: Sequence[Any], body: Callable[..., Any], *args: Any, name: str = "T"
) -> Any:
    """Emit one TE kernel ``out[i...] = body(tensors, i...)`` of ``shape`` over the Relax
    ``args`` (passed to ``body`` as TE tensors, in order)."""
    from tvm import te

    def fn(*tensors: Any) -> Any:
        return te.compute(_dims_expr(shape), lambda *i: body(tensors, *i), name=name)

    return ctx.emit_te(fn, *args)


# -- reshaping ---------------------------------------------------------------------------
@converts("Reshape")
def reshape(ctx: Ctx, node: Node) -> Sequence[Any]:
    """A constant shape is resolved here (0 copies the input dim unless allowzero, -1 is
    left to Relax); a run-time shape goes through a shape kernel and fresh dims."""
    from tvm import relax

    data = ctx.x(node.inputs[0])
    dims = ctx.shape(node.inputs[0])
    allowzero = bool(node.attr("allowzero", 0))
    shape = _const_ints(ctx, node, 1)
    if shape is not None:
        if not allowzero:
            shape = [dims[k] if s == 0 and k < len(dims) else s for k, s in enumerate(shape)]
        elif 0 in shape:
            # Relax's reshape reads 0 as "copy"; an allowzero 0 means the (valid) result
            # is empty, so no data moves
            if -1 in shape:
                raise Decline("Reshape with allowzero has both 0 and -1 in its shape")
            # (a kernel over the input, not relax.op.zeros: an empty constant folded from
            # that does not survive TVM's serialization)
            rank = len(dims)
            return [_te(ctx, shape, lambda ts, *i: ts[0][(_c(0),) * rank], data, name="empty")]
        return [ctx.emit(relax.op.reshape(data, shape))]
    vec = _int_vec(ctx, node.inputs[1], "Reshape's shape")
    return [
        ctx.emit(
            relax.op.reshape(data, _fresh_dims(ctx, _reshape_dims(ctx, data, vec, allowzero), "r"))
        )
    ]


def _reshape_dims(ctx: Ctx, data: Any, vec: Any, allowzero: bool) -> Any:
    """The output dims of Reshape with a run-time shape, as an int64 tensor."""
    from tvm import tirx

    k = ctx.shape_of(vec)[0]

    def body(ts: Any, j: Any) -> Any:
        x, s = ts
        rank = len(x.shape)
        total = _c(1)
        for d in x.shape:
            total = total * _i64(d)

        def resolved(j: Any) -> Any:
            v = s[j]
            if not allowzero and rank:
                v = tirx.Select(tirx.all(v == 0, j < rank), _dim_at(x.shape, j), v)
            return v

        known = _c(1)
        for m in range(k):
            known = known * tirx.Select(resolved(_c(m)) == -1, _c(1), resolved(_c(m)))
        v = resolved(j)
        return tirx.Select(v == -1, tirx.floordiv(total, tirx.max(known, _c(1))), v)

    return _te(ctx, [k], body, data, vec, name="reshape_dims")


@converts("Flatten")
def flatten(ctx: Ctx, node: Node) -> Sequence[Any]:
    from tvm import relax

    rank = ctx.rank(node.inputs[0])
    axis = int(node.attr("axis", 1))
    axis = axis + rank if axis < 0 else axis
    if not 0 <= axis <= rank:
        raise Decline(f"Flatten axis {node.attr('axis', 1)} is out of range for rank {rank}")
    dims = ctx.shape(node.inputs[0])
    head = 1
    for d in dims[:axis]:
        head = head * d
    tail = 1
    for d in dims[axis:]:
        tail = tail * d
    return [ctx.emit(relax.op.reshape(ctx.x(node.inputs[0]), [head, tail]))]


@converts("Transpose")
def transpose(ctx: Ctx, node: Node) -> Sequence[Any]:
    from tvm import relax

    rank = ctx.rank(node.inputs[0])
    perm = node.attr("perm")
    perm = list(range(rank))[::-1] if perm is None else [ctx.axis(int(p), rank) for p in perm]
    return [ctx.emit(relax.op.permute_dims(ctx.x(node.inputs[0]), perm))]


def _axes(ctx: Ctx, node: Node, since: int) -> list[int] | None:
    """Axes of Squeeze/Unsqueeze/...: an attribute before opset ``since``, an optional
    input from it; None when absent. Decline when the input is computed at run time
    (callers that can take that check first)."""
    if ctx.opset < since:
        axes = node.attr("axes")
        return None if axes is None else [int(a) for a in axes]
    if not ctx.has(node, 1):
        return None
    return ctx.ints(node.inputs[1], f"{node.op_type}'s axes")


def _runtime_axes(ctx: Ctx, node: Node, since: int) -> bool:
    return ctx.opset >= since and ctx.has(node, 1) and ctx.const(node.inputs[1]) is None


@converts("Squeeze")
def squeeze(ctx: Ctx, node: Node) -> Sequence[Any]:
    from tvm import relax

    data = ctx.x(node.inputs[0])
    dims = ctx.shape(node.inputs[0])
    rank = len(dims)
    if _runtime_axes(ctx, node, 13):
        vec = _int_vec(ctx, node.inputs[1], "Squeeze's axes")
        return [
            ctx.emit(relax.op.reshape(data, _fresh_dims(ctx, _squeeze_dims(ctx, data, vec), "q")))
        ]
    axes = _axes(ctx, node, 13)
    if axes is None:
        if not all(isinstance(d, int) for d in dims):
            raise Decline("Squeeze without axes needs a static input shape")
        axes = [k for k, d in enumerate(dims) if d == 1]
    axes = sorted({ctx.axis(a, rank) for a in axes})
    return [ctx.emit(relax.op.reshape(data, [d for k, d in enumerate(dims) if k not in axes]))]


def _squeeze_dims(ctx: Ctx, data: Any, vec: Any) -> Any:
    """The input dims left after dropping the run-time ``axes``, as an int64 tensor: the
    j-th kept dim is the one where the count of kept dims so far reaches j + 1."""
    from tvm import tirx

    rank = len(ctx.shape_of(data))
    k = ctx.shape_of(vec)[0]
    if k > rank:
        raise Decline("Squeeze has more axes than its input has dims")

    def body(ts: Any, j: Any) -> Any:
        x, a = ts

        def kept(d: int) -> Any:
            drop = tirx.const(False, "bool")
            for m in range(k):
                am = a[m]
                drop = tirx.Or(drop, tirx.Select(am < 0, am + rank, am) == d)
            return tirx.Not(drop)

        out, count = _c(1), _c(0)
        for d in range(rank):
            keep = kept(d)
            count = count + tirx.Select(keep, _c(1), _c(0))
            out = tirx.Select(tirx.all(keep, count == j + 1), _i64(x.shape[d]), out)
        return out

    return _te(ctx, [rank - k], body, data, vec, name="squeeze_dims")


@converts("Unsqueeze")
def unsqueeze(ctx: Ctx, node: Node) -> Sequence[Any]:
    from tvm import relax

    data = ctx.x(node.inputs[0])
    dims = ctx.shape(node.inputs[0])
    if _runtime_axes(ctx, node, 13):
        vec = _int_vec(ctx, node.inputs[1], "Unsqueeze's axes")
        return [
            ctx.emit(relax.op.reshape(data, _fresh_dims(ctx, _unsqueeze_dims(ctx, data, vec), "u")))
        ]
    axes = _axes(ctx, node, 13)
    if axes is None:
        raise Decline("Unsqueeze needs axes")
    out_rank = len(dims) + len(axes)
    axes_n = {ctx.axis(a, out_rank) for a in axes}
    if len(axes_n) != len(axes):
        raise Decline("Unsqueeze's axes repeat")
    rest = iter(dims)
    shape = [1 if k in axes_n else next(rest) for k in range(out_rank)]
    return [ctx.emit(relax.op.reshape(data, shape))]


def _unsqueeze_dims(ctx: Ctx, data: Any, vec: Any) -> Any:
    """Output dims of Unsqueeze with run-time axes: 1 where an axis points, else the next
    input dim."""
    from tvm import tirx

    rank = len(ctx.shape_of(data))
    k = ctx.shape_of(vec)[0]
    out_rank = rank + k

    def body(ts: Any, j: Any) -> Any:
        x, a = ts
        hit, before = tirx.const(False, "bool"), _c(0)
        for m in range(k):
            am = tirx.Select(a[m] < 0, a[m] + out_rank, a[m])
            hit = tirx.Or(hit, am == j)
            before = before + tirx.Select(am < j, _c(1), _c(0))
        if not rank:
            return _c(1)
        return tirx.Select(hit, _c(1), _dim_at(x.shape, j - before))

    return _te(ctx, [out_rank], body, data, vec, name="unsqueeze_dims")


@converts("Concat")
def concat(ctx: Ctx, node: Node) -> Sequence[Any]:
    from tvm import relax

    ins = [v for v in node.inputs if v is not None]
    rank = ctx.rank(ins[0])
    axis = ctx.axis(int(node.attr("axis")), rank)
    return [ctx.emit(relax.op.concat([ctx.x(v) for v in ins], axis=axis))]


@converts("Dropout")
def dropout(ctx: Ctx, node: Node) -> Sequence[Any]:
    """Inference: the input unchanged and a mask of all true. Training mode (a true or
    run-time ``training_mode``) draws its mask like the random ops (``ops_random``: seeded
    nodes only); ``is_test=0`` before opset 7 is declined."""
    from tvm import relax

    from torsh_gen.backends.tvm.ops_random import dropout_training

    if ctx.opset < 7 and not node.attr("is_test", 0):
        raise Decline("Dropout in training mode (is_test=0) is random")
    if ctx.has(node, 2):
        mode = ctx.const(node.inputs[2])
        if mode is None or bool(np.asarray(mode).reshape(-1)[0]):
            return dropout_training(ctx, node)
    x = ctx.x(node.inputs[0])
    mask = None
    if len(node.outputs) > 1 and node.outputs[1] is not None:
        # bool from opset 10; before, the mask has the input's type
        mask = ctx.emit(relax.op.ones(ctx.shape(node.inputs[0]), ctx.dtype(node.outputs[1])))
    return [x, mask]


# -- shapes and constants ------------------------------------------------------------------
@converts("Shape")
def shape(ctx: Ctx, node: Node) -> Sequence[Any]:
    from tvm import relax

    dims = ctx.shape(node.inputs[0])
    rank = len(dims)
    start, end = int(node.attr("start", 0)), node.attr("end")
    start = min(max(start + rank if start < 0 else start, 0), rank)
    end = rank if end is None else int(end)
    end = min(max(end + rank if end < 0 else end, 0), rank)
    picked = dims[start:end]
    if all(isinstance(d, int) for d in picked):
        return [ctx.constant(np.array(picked, dtype=np.int64))]
    vec = ctx.emit(relax.op.shape_to_tensor(relax.op.shape_of(ctx.x(node.inputs[0]))))
    if (start, end) != (0, rank):
        vec = ctx.emit(relax.op.strided_slice(vec, [0], [start], [end]))
    return [vec]


@converts("Size")
def size(ctx: Ctx, node: Node) -> Sequence[Any]:
    from tvm import relax

    total: Any = 1
    for d in ctx.shape(node.inputs[0]):
        total = total * d
    total = _as_int(total)
    if isinstance(total, int):
        return [ctx.constant(np.array(total, dtype=np.int64))]
    return [ctx.emit(relax.op.size(ctx.x(node.inputs[0])))]


@converts("Constant")
def constant(ctx: Ctx, node: Node) -> Sequence[Any]:
    """Usually folded away before conversion; kept for graphs that are not."""
    for name, dtype in (("value_float", np.float32), ("value_int", np.int64)):
        v = node.attr(name)
        if v is not None:
            return [ctx.constant(np.array(v, dtype=dtype))]
    for name, dtype in (("value_floats", np.float32), ("value_ints", np.int64)):
        v = node.attr(name)
        if v is not None:
            return [ctx.constant(np.array(list(v), dtype=dtype))]
    v = node.attr("value")
    if not isinstance(v, np.ndarray):
        raise Decline("Constant of this kind (string, sparse) is not supported")
    return [ctx.weight(v) if v.ndim else ctx.constant(v)]


@converts("ConstantOfShape")
def constant_of_shape(ctx: Ctx, node: Node) -> Sequence[Any]:
    from tvm import relax

    value = node.attr("value")
    fill = np.zeros(1, np.float32) if value is None else np.asarray(value).reshape(-1)
    dtype = ctx.dtype(node.outputs[0])
    shape_ints = _const_ints(ctx, node, 0)
    if shape_ints is not None:
        dims: list[Any] = shape_ints
    else:
        dims = _fresh_dims(ctx, _int_vec(ctx, node.inputs[0], "ConstantOfShape's shape"), "c")
    return [ctx.emit(relax.op.full(dims, ctx.scalar(fill[0], dtype), dtype))]


def _first(t: Any) -> Any:
    """The one element of a Range operand: ONNX asks for scalars, models also pass
    one-element 1-D tensors (AffineGrid's body does)."""
    return t[tuple(0 for _ in t.shape)]


@converts("Range")
def range_(ctx: Ctx, node: Node) -> Sequence[Any]:
    """Constant operands give a constant; otherwise the count max(ceil((limit - start) /
    delta), 0) is a fresh dim and ``out[i] = start + i * delta``."""
    from tvm import tirx

    dtype = ctx.dtype(node.outputs[0])
    consts = [ctx.const(v) for v in node.inputs[:3]]
    if all(c is not None for c in consts):
        s, lim, d = (np.asarray(c).reshape(()) for c in consts)
        return [ctx.weight(np.arange(s, lim, d).astype(s.dtype))]
    args = [ctx.x(v) for v in node.inputs[:3]]
    wide = "float64" if dtype.startswith(("float", "bfloat")) else I64

    def count(ts: Any, i: Any) -> Any:
        s, lim, d = (tirx.Cast(wide, t) for t in (_first(t) for t in ts))
        n = (
            (lim - s) / d
            if wide != I64
            else tirx.floordiv(lim - s + d - tirx.Select(d > 0, _c(1), _c(-1)), d)
        )
        if wide != I64:
            n = tirx.Cast(I64, tirx.ceil(n))
        return tirx.max(n, _c(0))

    n = _fresh_dims(ctx, _te(ctx, [1], count, *args, name="range_count"), "n")
    ctx.fence()  # the values are sized by n: they must not move above its MatchCast
    args = [ctx.x(v) for v in node.inputs[:3]]

    def body(ts: Any, i: Any) -> Any:
        s, _, d = (_first(t) for t in ts)
        if wide == I64:
            return tirx.Cast(dtype, _i64(s) + i * _i64(d))
        return tirx.Cast(
            dtype, tirx.Cast(wide, s) + tirx.Cast(wide, i) * tirx.Cast(wide, d)
        )

    return [_te(ctx, n, body, *args, name="range")]


@converts("EyeLike")
def eye_like(ctx: Ctx, node: Node) -> Sequence[Any]:
    from tvm import tirx

    dims = ctx.shape(node.inputs[0])
    if len(dims) != 2:
        raise Decline("EyeLike needs a 2-D input")
    k = int(node.attr("k", 0))
    dtype = ctx.dtype(node.outputs[0])

    def body(ts: Any, i: Any, j: Any) -> Any:
        return tirx.Select(j - i == k, tirx.const(1, dtype), tirx.const(0, dtype))

    return [_te(ctx, dims, body, ctx.x(node.inputs[0]), name="eye_like")]


# -- layout --------------------------------------------------------------------------------
def _four_d(ctx: Ctx, node: Node) -> tuple[Any, list[Any], int]:
    dims = ctx.shape(node.inputs[0])
    if len(dims) != 4:
        raise Decline(f"{node.op_type} needs a 4-D input")
    return ctx.x(node.inputs[0]), dims, int(node.attr("blocksize"))


@converts("DepthToSpace")
def depth_to_space(ctx: Ctx, node: Node) -> Sequence[Any]:
    from tvm import relax

    x, (n, c, h, w), b = _four_d(ctx, node)
    mode = str_attr(node, "mode", "DCR")
    if mode == "DCR":
        tmp, perm = [n, b, b, c // (b * b), h, w], [0, 3, 4, 1, 5, 2]
    elif mode == "CRD":
        tmp, perm = [n, c // (b * b), b, b, h, w], [0, 1, 4, 2, 5, 3]
    else:
        raise Decline(f"DepthToSpace mode {mode}")
    y = ctx.emit(relax.op.permute_dims(ctx.emit(relax.op.reshape(x, tmp)), perm))
    return [ctx.emit(relax.op.reshape(y, [n, c // (b * b), h * b, w * b]))]


@converts("SpaceToDepth")
def space_to_depth(ctx: Ctx, node: Node) -> Sequence[Any]:
    from tvm import relax

    x, (n, c, h, w), b = _four_d(ctx, node)
    mode = str_attr(node, "mode", "DCR")
    if mode not in ("DCR", "CRD"):
        raise Decline(f"SpaceToDepth mode {mode}")
    perm = [0, 3, 5, 1, 2, 4] if mode == "DCR" else [0, 1, 3, 5, 2, 4]
    y = ctx.emit(relax.op.reshape(x, [n, c, h // b, b, w // b, b]))
    y = ctx.emit(relax.op.permute_dims(y, perm))
    return [ctx.emit(relax.op.reshape(y, [n, c * b * b, h // b, w // b]))]


@converts("Trilu")
def trilu(ctx: Ctx, node: Node) -> Sequence[Any]:
    """Keeps x[..., i, j] where j - i >= k (upper) or <= k (lower); k may be a run-time
    scalar, read inside the kernel."""
    from tvm import tirx

    dims = ctx.shape(node.inputs[0])
    if len(dims) < 2:
        raise Decline("Trilu needs rank 2 or more")
    upper = bool(node.attr("upper", 1))
    dtype = ctx.dtype(node.inputs[0])
    args = [ctx.x(node.inputs[0])]
    kc = _const_ints(ctx, node, 1)
    runtime_k = ctx.has(node, 1) and kc is None
    if runtime_k:
        args.append(_int_vec(ctx, node.inputs[1], "Trilu's k"))
    k0 = kc[0] if kc else 0

    def body(ts: Any, *i: Any) -> Any:
        k = ts[1][0] if runtime_k else _c(k0)
        diff = _i64(i[-1]) - _i64(i[-2])
        keep = diff >= k if upper else diff <= k
        return tirx.Select(keep, ts[0][i], tirx.const(0, dtype))

    return [_te(ctx, dims, body, *args, name="trilu")]


# -- slicing -------------------------------------------------------------------------------
def _canon(s: Any, e: Any, st: Any, dim: Any) -> tuple[Any, Any]:
    """ONNX Slice's clamping of one axis in TIR: the first index and the element count."""
    from tvm import tirx

    dim = _i64(dim)
    s = tirx.Select(s < 0, s + dim, s)
    e = tirx.Select(e < 0, e + dim, e)
    pos = st > 0
    s = tirx.Select(pos, _clamp(s, _c(0), dim), _clamp(s, _c(0), dim - 1))
    e = tirx.Select(pos, _clamp(e, _c(0), dim), _clamp(e, _c(-1), dim - 1))
    span = tirx.Select(pos, e - s, s - e)
    mag = tirx.Select(pos, st, _c(0) - st)
    n = tirx.max(_c(0) - tirx.floordiv(_c(0) - span, mag), _c(0))
    return s, tirx.Select(dim == 0, _c(0), n)


def _strided(
    ctx: Ctx,
    x: Any,
    dims: Sequence[Any],
    begin: Callable[[Any, int], Any],
    step: Callable[[Any, int], Any],
    *extra: Any,
) -> Any:
    """``out[i] = x[begin(d) + i_d * step(d)]``; ``begin``/``step`` get the TE tensors of
    ``extra`` (parameter tensors) and the axis."""

    def body(ts: Any, *i: Any) -> Any:
        src, params = ts[0], ts[1:]
        return src[tuple(begin(params, d) + _i64(i[d]) * step(params, d) for d in range(len(i)))]

    return _te(ctx, dims, body, x, *extra, name="slice")


@converts("Slice")
def slice_(ctx: Ctx, node: Node) -> Sequence[Any]:
    dims = ctx.shape(node.inputs[0])
    rank = len(dims)
    if ctx.opset < 10:
        starts, ends = [int(v) for v in node.attr("starts")], [int(v) for v in node.attr("ends")]
        axes = node.attr("axes")
        return [
            _slice_const(ctx, node, dims, starts, ends, None if axes is None else list(axes), None)
        ]
    parts = [_const_ints(ctx, node, k) for k in range(1, 5)]
    runtime = any(p is None and ctx.has(node, k + 1) for k, p in enumerate(parts))
    if not runtime:
        starts, ends, axes, steps = parts
        return [_slice_const(ctx, node, dims, starts or [], ends or [], axes, steps)]
    return [_slice_runtime(ctx, node, rank)]


def _slice_const(
    ctx: Ctx,
    node: Node,
    dims: list[Any],
    starts: list[int],
    ends: list[int],
    axes: list[int] | None,
    steps: list[int] | None,
) -> Any:
    rank = len(dims)
    axes = list(range(len(starts))) if axes is None else [ctx.axis(int(a), rank) for a in axes]
    steps = [1] * len(starts) if steps is None else steps
    if 0 in steps:
        raise Decline("Slice step 0")
    begin: list[Any] = [0] * rank
    step: list[Any] = [1] * rank
    out: list[Any] = list(dims)
    for a, s, e, st in zip(axes, starts, ends, steps):
        b, n = _canon(_c(s), _c(e), _c(st), _dims_expr([dims[a]])[0])
        begin[a], out[a], step[a] = _as_int(b), _as_int(n), st
    return _strided(
        ctx,
        ctx.x(node.inputs[0]),
        out,
        lambda _, d: _dims_expr([begin[d]])[0],
        lambda _, d: _c(step[d]),
    )


def _slice_runtime(ctx: Ctx, node: Node, rank: int) -> Any:
    """Slice with run-time starts/ends/axes/steps: a kernel computes (begin, count, step)
    of every axis into a (3, rank) tensor, the counts become fresh dims."""
    from tvm import relax, tirx

    x = ctx.x(node.inputs[0])
    vecs = [
        _int_vec(ctx, node.inputs[k], f"Slice input {k}") if ctx.has(node, k) else None
        for k in range(1, 5)
    ]
    k = ctx.shape_of(vecs[0])[0]
    present = [v for v in vecs if v is not None]
    slots = [i for i, v in enumerate(vecs) if v is not None]

    def params(ts: Any, row: Any, d: Any) -> Any:
        src, got = ts[0], dict(zip(slots, ts[1:]))
        dim = _dim_at(src.shape, d)
        b, n, st = _c(0), dim, _c(1)
        for m in range(k):
            a = got[2][m] if 2 in got else _c(m)
            a = tirx.Select(a < 0, a + rank, a)
            stm = got[3][m] if 3 in got else _c(1)
            bm, nm = _canon(got[0][m], got[1][m], stm, dim)
            hit = a == d
            b, n, st = tirx.Select(hit, bm, b), tirx.Select(hit, nm, n), tirx.Select(hit, stm, st)
        return tirx.Select(row == 0, b, tirx.Select(row == 1, n, st))

    table = _te(ctx, [3, rank], params, x, *present, name="slice_params")
    counts = ctx.emit(relax.op.take(table, relax.const(1, I64), axis=0, mode="clip"))
    dims = _fresh_dims(ctx, counts, "s")
    return _strided(ctx, x, dims, lambda p, d: p[0][0, d], lambda p, d: p[0][2, d], table)


@converts("Split")
def split(ctx: Ctx, node: Node) -> Sequence[Any]:
    """Sizes from the ``split`` attribute (before opset 13) or input, else equal parts
    (opset 18: ``num_outputs`` parts of ceil(dim / n), the last smaller)."""
    from tvm import relax

    dims = ctx.shape(node.inputs[0])
    axis = ctx.axis(int(node.attr("axis", 0)), len(dims))
    n = len(node.outputs)
    x = ctx.x(node.inputs[0])
    if ctx.opset < 13:
        sizes = node.attr("split")
        sizes = None if sizes is None else [int(s) for s in sizes]
    elif ctx.has(node, 1):
        sizes = _const_ints(ctx, node, 1)
        if sizes is None:
            return _split_runtime(ctx, node, x, dims, axis)
    else:
        sizes = None
    if sizes is None:
        d = dims[axis]
        chunk = _as_int((d + n - 1) // n) if ctx.opset >= 18 else _as_int(d // n)
        sizes = [_as_int(_min(chunk * (k + 1), d) - _min(chunk * k, d)) for k in range(n)]
    elif len(sizes) != n:
        raise Decline("Split's sizes do not match its outputs")
    if n == 1:
        return [x]
    if all(isinstance(v, int) and v > 0 for v in sizes):
        parts = ctx.emit(relax.op.split(x, np.cumsum(sizes[:-1]).astype(int).tolist(), axis=axis))
        return [ctx.emit(relax.TupleGetItem(parts, k)) for k in range(n)]
    # symbolic or empty parts: relax.split wants strictly increasing integer bounds
    outs, offset = [], 0
    for size_k in sizes:
        shape = list(dims)
        shape[axis] = size_k
        start = offset

        def begin(_: Any, d: int, start: Any = start) -> Any:
            return _dims_expr([start])[0] if d == axis else _c(0)

        outs.append(_strided(ctx, x, shape, begin, lambda _, d: _c(1)))
        offset = _as_int(offset + size_k)
    return outs


def _min(a: Any, b: Any) -> Any:
    from tvm import tirx

    if isinstance(a, int) and isinstance(b, int):
        return min(a, b)
    return tirx.min(_dims_expr([a])[0], _dims_expr([b])[0])


def _split_runtime(ctx: Ctx, node: Node, x: Any, dims: list[Any], axis: int) -> list[Any]:
    """Split with run-time sizes: each size a fresh dim, each part a slice at the running
    offset, read from the sizes tensor."""
    sizes = _int_vec(ctx, node.inputs[1], "Split's sizes")
    n = len(node.outputs)
    if ctx.shape_of(sizes)[0] != n:
        raise Decline("Split's sizes do not match its outputs")
    lens = _fresh_dims(ctx, sizes, "p")
    outs = []
    for k in range(n):
        shape = list(dims)
        shape[axis] = lens[k]

        def begin(p: Any, d: int, k: int = k) -> Any:
            if d != axis:
                return _c(0)
            off = _c(0)
            for m in range(k):
                off = off + p[0][m]
            return off

        outs.append(_strided(ctx, x, shape, begin, lambda p, d: _c(1), sizes))
    return outs


# -- gather and scatter -------------------------------------------------------------------
def _wrapped(ctx: Ctx, value: Value, dims: Sequence[Any], last_axis: bool) -> Any:
    """Index tensor ``value`` with negative entries wrapped: by ``dims[0]``, or (GatherND,
    ScatterND) by ``dims[c]`` for component c of the last axis. Constant indices are
    wrapped here."""
    from tvm import tirx

    arr = ctx.const(value)
    if arr is not None and all(isinstance(d, int) for d in dims):
        arr = np.asarray(arr).astype(np.int64)
        bound = np.array(dims, dtype=np.int64) if last_axis else np.int64(dims[0])
        return ctx.constant(np.where(arr < 0, arr + bound, arr))
    dtype = ctx.dtype(value)

    def body(ts: Any, *i: Any) -> Any:
        v = ts[0][i]
        d = _dim_at(dims, i[-1]) if last_axis else _dims_expr([dims[0]])[0]
        return tirx.Select(v < 0, v + tirx.Cast(dtype, d), v)

    return _te(ctx, ctx.shape(value), body, ctx.x(value), name="wrap_indices")


@converts("Gather")
def gather(ctx: Ctx, node: Node) -> Sequence[Any]:
    """Constant indices are wrapped (and range-checked) here; run-time ones use take's
    ``wrap`` mode, right for the valid negatives and never reading out of bounds."""
    from tvm import relax

    dims = ctx.shape(node.inputs[0])
    axis = ctx.axis(int(node.attr("axis", 0)), len(dims))
    arr, dim = ctx.const(node.inputs[1]), dims[axis]
    x = ctx.x(node.inputs[0])
    if arr is None or not isinstance(dim, int):
        return [ctx.emit(relax.op.take(x, ctx.x(node.inputs[1]), axis=axis, mode="wrap"))]
    arr = np.asarray(arr).astype(np.int64)
    if arr.size and (arr.min() < -dim or arr.max() >= dim):
        raise Decline("Gather's constant indices are out of range")
    return [ctx.emit(relax.op.take(x, ctx.constant(np.where(arr < 0, arr + dim, arr)), axis=axis))]


@converts("GatherElements")
def gather_elements(ctx: Ctx, node: Node) -> Sequence[Any]:
    from tvm import relax

    dims = ctx.shape(node.inputs[0])
    axis = ctx.axis(int(node.attr("axis", 0)), len(dims))
    idx = _wrapped(ctx, node.inputs[1], [dims[axis]], False)
    return [ctx.emit(relax.op.gather_elements(ctx.x(node.inputs[0]), idx, axis=axis))]


@converts("GatherND")
def gather_nd(ctx: Ctx, node: Node) -> Sequence[Any]:
    from tvm import relax

    dims = ctx.shape(node.inputs[0])
    bd = int(node.attr("batch_dims", 0))
    q = ctx.static_shape(node.inputs[1], "GatherND's indices")[-1]
    idx = _wrapped(ctx, node.inputs[1], dims[bd : bd + q], True)
    return [ctx.emit(relax.op.gather_nd(ctx.x(node.inputs[0]), idx, batch_dims=bd))]


_REDUCTIONS = {"none": "update", "add": "add", "mul": "mul", "max": "max", "min": "min"}


def _reduction(node: Node) -> str:
    red = str_attr(node, "reduction", "none")
    if red not in _REDUCTIONS:
        raise Decline(f"{node.op_type} reduction '{red}'")
    return _REDUCTIONS[red]


@converts("ScatterElements", "Scatter")
def scatter_elements(ctx: Ctx, node: Node) -> Sequence[Any]:
    from tvm import relax

    dims = ctx.shape(node.inputs[0])
    axis = ctx.axis(int(node.attr("axis", 0)), len(dims))
    idx = _wrapped(ctx, node.inputs[1], [dims[axis]], False)
    x, upd = ctx.x(node.inputs[0]), ctx.x(node.inputs[2])
    return [ctx.emit(relax.op.scatter_elements(x, idx, upd, axis, _reduction(node)))]


@converts("ScatterND")
def scatter_nd(ctx: Ctx, node: Node) -> Sequence[Any]:
    from tvm import relax

    dims = ctx.shape(node.inputs[0])
    q = ctx.static_shape(node.inputs[1], "ScatterND's indices")[-1]
    idx = _wrapped(ctx, node.inputs[1], dims[:q], True)
    x, upd = ctx.x(node.inputs[0]), ctx.x(node.inputs[2])
    return [ctx.emit(relax.op.scatter_nd(x, idx, upd, _reduction(node)))]


@converts("TensorScatter")
def tensor_scatter(ctx: Ctx, node: Node) -> Sequence[Any]:
    """``present[b, ..., w_b + i, ...] = update[b, ..., i, ...]`` (mod the cache length in
    circular mode), the rest of the cache unchanged: one gather-style kernel."""
    from tvm import tirx

    dims = ctx.shape(node.inputs[0])
    axis = ctx.axis(int(node.attr("axis", -2)), len(dims))
    if axis == 0:
        raise Decline("TensorScatter's axis cannot be the batch axis")
    mode = str_attr(node, "mode", "linear")
    if mode not in ("linear", "circular"):
        raise Decline(f"TensorScatter mode {mode}")
    args = [ctx.x(node.inputs[0]), ctx.x(node.inputs[1])]
    has_w = ctx.has(node, 2)
    if has_w:
        args.append(_int_vec(ctx, node.inputs[2], "TensorScatter's write_indices"))

    def body(ts: Any, *i: Any) -> Any:
        cache, upd = ts[0], ts[1]
        w = ts[2][i[0]] if has_w else _c(0)
        length, seq = _i64(cache.shape[axis]), _i64(upd.shape[axis])
        rel = _i64(i[axis]) - w
        if mode == "circular":
            rel = tirx.floormod(rel, length)
        inside = tirx.all(rel >= 0, rel < seq)
        src = list(i)
        src[axis] = tirx.Select(inside, rel, _c(0))
        return tirx.Select(inside, upd[tuple(src)], cache[i])

    return [_te(ctx, dims, body, *args, name="tensor_scatter")]


# -- broadcasting, tiling, padding ---------------------------------------------------------
@converts("Expand")
def expand(ctx: Ctx, node: Node) -> Sequence[Any]:
    from tvm import relax

    x = ctx.x(node.inputs[0])
    dims = ctx.shape(node.inputs[0])
    shape = _const_ints(ctx, node, 1)
    if shape is None:
        vec = _int_vec(ctx, node.inputs[1], "Expand's shape")
        return [
            ctx.emit(relax.op.broadcast_to(x, _fresh_dims(ctx, _expand_dims(ctx, x, vec), "e")))
        ]
    rank = max(len(dims), len(shape))
    a = [1] * (rank - len(dims)) + list(dims)
    b = [1] * (rank - len(shape)) + shape
    out = [ad if bd == 1 else bd for ad, bd in zip(a, b)]
    return [ctx.emit(relax.op.broadcast_to(x, out))]


def _expand_dims(ctx: Ctx, x: Any, vec: Any) -> Any:
    """Broadcast of the input's shape with a run-time shape, as an int64 tensor."""
    from tvm import tirx

    rank = len(ctx.shape_of(x))
    k = ctx.shape_of(vec)[0]
    out_rank = max(rank, k)

    def body(ts: Any, j: Any) -> Any:
        src, s = ts
        a = _dim_at([1] * (out_rank - rank) + list(src.shape), j)
        b = s[tirx.max(j - (out_rank - k), _c(0))] if k else _c(1)
        b = tirx.Select(j < out_rank - k, _c(1), b)
        return tirx.Select(b == 1, a, b)

    return _te(ctx, [out_rank], body, x, vec, name="expand_dims")


@converts("Tile")
def tile(ctx: Ctx, node: Node) -> Sequence[Any]:
    from tvm import relax, tirx

    x = ctx.x(node.inputs[0])
    dims = ctx.shape(node.inputs[0])
    reps = _const_ints(ctx, node, 1)
    if reps is not None:
        return [ctx.emit(relax.op.tile(x, reps))]
    vec = _int_vec(ctx, node.inputs[1], "Tile's repeats")
    if ctx.shape_of(vec)[0] != len(dims):
        raise Decline("Tile's repeats do not match the input rank")

    def out_dims(ts: Any, j: Any) -> Any:
        return _dim_at(ts[0].shape, j) * ts[1][j]

    shape = _fresh_dims(ctx, _te(ctx, [len(dims)], out_dims, x, vec, name="tile_dims"), "t")

    def body(ts: Any, *i: Any) -> Any:
        src = ts[0]
        return src[tuple(tirx.floormod(_i64(i[d]), _i64(src.shape[d])) for d in range(len(i)))]

    return [_te(ctx, shape, body, x, name="tile")]


@converts("Pad")
def pad(ctx: Ctx, node: Node) -> Sequence[Any]:
    """All four modes in one kernel: the source index of every output element, mirrored,
    clamped or wrapped, or the constant where it falls outside (negative pads crop)."""
    dims = ctx.shape(node.inputs[0])
    rank = len(dims)
    mode = str_attr(node, "mode", "constant")
    if mode not in ("constant", "reflect", "edge", "wrap"):
        raise Decline(f"Pad mode {mode}")
    dtype = ctx.dtype(node.inputs[0])
    x = ctx.x(node.inputs[0])
    if ctx.opset < 11:
        pads = [int(p) for p in node.attr("pads", node.attr("paddings", []))]
        value = ctx.constant(np.array(float(node.attr("value", 0.0))), dtype)
        return [_pad_const(ctx, x, dims, pads, mode, value)]
    value = ctx.x(node.inputs[2]) if ctx.has(node, 2) else ctx.scalar(0, dtype)
    if len(ctx.shape_of(value)) != 0:
        from tvm import relax

        value = ctx.emit(relax.op.reshape(value, []))
    pads = _const_ints(ctx, node, 1)
    axes = _const_ints(ctx, node, 3)
    runtime_axes = ctx.has(node, 3) and axes is None
    if pads is not None and not runtime_axes:
        if axes is not None:
            full = [0] * (2 * rank)
            for k, a in enumerate(axes):
                a = ctx.axis(a, rank)
                full[a], full[a + rank] = pads[k], pads[k + len(axes)]
            pads = full
        return [_pad_const(ctx, x, dims, pads, mode, value)]
    return [_pad_runtime(ctx, node, x, rank, mode, value)]


def _pad_source(mode: str, j: Any, dim: Any) -> tuple[Any, Any]:
    """Source index along one axis for output index minus the before-pad ``j``, and
    whether the element comes from the input."""
    from tvm import tirx

    inside = tirx.all(j >= 0, j < dim)
    if mode == "constant":
        return _clamp(j, _c(0), dim - 1), inside
    if mode == "edge":
        return _clamp(j, _c(0), dim - 1), tirx.const(True, "bool")
    if mode == "wrap":
        return tirx.floormod(j, tirx.max(dim, _c(1))), tirx.const(True, "bool")
    period = tirx.max(2 * dim - 2, _c(1))
    m = tirx.floormod(tirx.abs(j), period)
    return tirx.Select(m < dim, m, period - m), tirx.const(True, "bool")


def _pad_kernel(
    ctx: Ctx,
    x: Any,
    shape: Sequence[Any],
    pads: Callable[[Any, int], tuple[Any, Any]],
    mode: str,
    value: Any,
    *extra: Any,
) -> Any:
    """Negative pads crop first; the modes then pad the cropped input (as onnxruntime
    does: mirror, edge and wrap read from what is left)."""
    from tvm import tirx

    def body(ts: Any, *i: Any) -> Any:
        src, val, params = ts[0], ts[1], ts[2:]
        idx, ok = [], tirx.const(True, "bool")
        for d in range(len(i)):
            before, after = pads(params, d)
            crop = tirx.max(_c(0) - before, _c(0))
            kept = _i64(src.shape[d]) - crop - tirx.max(_c(0) - after, _c(0))
            j = _i64(i[d]) - tirx.max(before, _c(0))
            s, inside = _pad_source(mode, j, kept)
            idx.append(s + crop)
            ok = tirx.all(ok, inside)
        got = src[tuple(idx)]
        return got if mode != "constant" else tirx.Select(ok, got, val[()])

    return _te(ctx, shape, body, x, value, *extra, name=f"pad_{mode}")


def _pad_const(ctx: Ctx, x: Any, dims: list[Any], pads: list[int], mode: str, value: Any) -> Any:
    rank = len(dims)
    if len(pads) != 2 * rank:
        raise Decline(f"Pad has {len(pads)} pads for rank {rank}")
    shape = [_as_int(d + pads[k] + pads[k + rank]) for k, d in enumerate(dims)]
    return _pad_kernel(ctx, x, shape, lambda _, d: (_c(pads[d]), _c(pads[d + rank])), mode, value)


def _pad_runtime(ctx: Ctx, node: Node, x: Any, rank: int, mode: str, value: Any) -> Any:
    """Run-time pads (and axes): a kernel spreads them over all axes into a 2*rank
    vector [begins..., ends...]; the output dims are fresh."""
    from tvm import tirx

    pads = _int_vec(ctx, node.inputs[1], "Pad's pads")
    has_axes = ctx.has(node, 3)
    args = [pads] + ([_int_vec(ctx, node.inputs[3], "Pad's axes")] if has_axes else [])
    k = ctx.shape_of(pads)[0] // 2

    def full(ts: Any, p: Any) -> Any:
        pv = ts[0]
        if not has_axes:
            return pv[p] if k == rank else _c(0)
        d, side = tirx.floormod(p, rank), tirx.floordiv(p, rank)
        out = _c(0)
        for m in range(k):
            a = ts[1][m]
            a = tirx.Select(a < 0, a + rank, a)
            out = tirx.Select(a == d, pv[side * k + m], out)
        return out

    if not has_axes and k != rank:
        raise Decline(f"Pad has {2 * k} pads for rank {rank}")
    table = _te(ctx, [2 * rank], full, *args, name="pad_table")

    def out_dims(ts: Any, d: Any) -> Any:
        src, t = ts
        return _dim_at(src.shape, d) + t[d] + t[d + rank]

    shape = _fresh_dims(ctx, _te(ctx, [rank], out_dims, x, table, name="pad_dims"), "p")
    return _pad_kernel(ctx, x, shape, lambda p, d: (p[0][d], p[0][d + rank]), mode, value, table)


@converts("CenterCropPad")
def center_crop_pad(ctx: Ctx, node: Node) -> Sequence[Any]:
    """Crop or zero-pad the given axes to ``shape``, centred (crop start and pad before
    rounded down)."""
    from tvm import tirx

    x = ctx.x(node.inputs[0])
    dims = ctx.shape(node.inputs[0])
    rank = len(dims)
    axes = node.attr("axes")
    axes = list(range(rank)) if axes is None else [ctx.axis(int(a), rank) for a in axes]
    dtype = ctx.dtype(node.inputs[0])
    sizes: list[Any] | None = _const_ints(ctx, node, 1)
    if sizes is None:
        sizes = _fresh_dims(ctx, _int_vec(ctx, node.inputs[1], "CenterCropPad's shape"), "cc")
    if len(sizes) != len(axes):
        raise Decline("CenterCropPad's shape does not match its axes")
    shape: list[Any] = list(dims)
    for a, s in zip(axes, sizes):
        shape[a] = s

    def body(ts: Any, *i: Any) -> Any:
        src = ts[0]
        idx, ok = [], tirx.const(True, "bool")
        for d in range(rank):
            dim, size = _i64(src.shape[d]), _dims_expr([shape[d]])[0]
            off = tirx.Select(
                dim >= size, tirx.floordiv(dim - size, 2), _c(0) - tirx.floordiv(size - dim, 2)
            )
            j = _i64(i[d]) + off
            ok = tirx.all(ok, j >= 0, j < dim)
            idx.append(_clamp(j, _c(0), dim - 1))
        return tirx.Select(ok, src[tuple(idx)], tirx.const(0, dtype))

    return [_te(ctx, shape, body, x, name="center_crop_pad")]


# -- the rest ------------------------------------------------------------------------------
@converts("OneHot")
def one_hot(ctx: Ctx, node: Node) -> Sequence[Any]:
    """``out[..., k, ...] = on if wrap(indices[...]) == k else off`` with the depth axis
    inserted at ``axis``; a run-time depth becomes a fresh dim."""
    from tvm import relax, tirx

    idx = ctx.x(node.inputs[0])
    dims = ctx.shape(node.inputs[0])
    out_rank = len(dims) + 1
    axis = ctx.axis(int(node.attr("axis", -1)), out_rank)
    depth_c = ctx.const(node.inputs[1])
    if depth_c is not None:
        depth: Any = int(np.asarray(depth_c).reshape(-1)[0])
    else:
        dv = ctx.x(node.inputs[1])
        dv = ctx.emit(relax.op.reshape(ctx.emit(relax.op.astype(dv, I64)), [1]))
        depth = _fresh_dims(ctx, dv, "depth")[0]
    shape = list(dims)
    shape.insert(axis, depth)
    values = ctx.x(node.inputs[2])
    dtype = ctx.dtype(node.inputs[0])
    is_float = dtype.startswith(("float", "bfloat"))

    def body(ts: Any, *i: Any) -> Any:
        ind, val = ts
        k = _i64(i[axis])
        pos = i[:axis] + i[axis + 1 :]
        v = ind[pos]
        v = tirx.Cast(I64, v) if is_float else _i64(v)
        d = _dims_expr([depth])[0]
        v = tirx.Select(v < 0, v + d, v)
        return tirx.Select(v == k, val[1], val[0])

    return [_te(ctx, shape, body, idx, values, name="one_hot")]


@converts("ReverseSequence")
def reverse_sequence(ctx: Ctx, node: Node) -> Sequence[Any]:
    from tvm import tirx

    dims = ctx.shape(node.inputs[0])
    rank = len(dims)
    t_axis = ctx.axis(int(node.attr("time_axis", 0)), rank)
    b_axis = ctx.axis(int(node.attr("batch_axis", 1)), rank)
    lens = _int_vec(ctx, node.inputs[1], "ReverseSequence's sequence_lens")

    def body(ts: Any, *i: Any) -> Any:
        src, ln = ts
        n = ln[i[b_axis]]
        t = _i64(i[t_axis])
        idx = list(i)
        idx[t_axis] = tirx.Select(t < n, n - 1 - t, t)
        return src[tuple(idx)]

    return [_te(ctx, dims, body, ctx.x(node.inputs[0]), lens, name="reverse_sequence")]


@converts("Compress")
def compress(ctx: Ctx, node: Node) -> Sequence[Any]:
    """Take the slices whose condition is true: constant conditions give constant indices;
    a run-time condition goes through ``relax.op.nonzero`` (a data-dependent length)."""
    from tvm import relax

    x = ctx.x(node.inputs[0])
    axis = node.attr("axis")
    if axis is None:
        x = ctx.emit(relax.op.reshape(x, [-1]))
        axis = 0
    else:
        axis = ctx.axis(int(axis), ctx.rank(node.inputs[0]))
    cond = ctx.const(node.inputs[1])
    if cond is not None:
        idx = ctx.constant(np.nonzero(np.asarray(cond).reshape(-1))[0].astype(np.int64))
    else:
        c = ctx.x(node.inputs[1])
        if len(ctx.shape_of(c)) != 1:
            c = ctx.emit(relax.op.reshape(c, [-1]))
        dim, length = ctx.shape_of(x)[axis], ctx.shape_of(c)[0]
        if isinstance(dim, int) and isinstance(length, int) and length > dim:
            c = ctx.emit(relax.op.strided_slice(c, [0], [0], [dim]))
        idx = _nonzero_1d(ctx, c)
    # clip: a condition longer than the axis (invalid) must not read out of bounds
    return [ctx.emit(relax.op.take(x, idx, axis=axis, mode="clip"))]


def _nonzero_1d(ctx: Ctx, cond: Any) -> Any:
    """The positions where the 1-D ``cond`` is true; its count is a fresh dim."""
    from tvm import relax, tirx

    n = tirx.Var("nz", I64)
    nz = ctx.bb.match_cast(ctx.emit(relax.op.nonzero(cond)), relax.TensorType([1, n], I64))
    return ctx.emit(relax.op.reshape(nz, [n]))


@converts("NonZero")
def nonzero(ctx: Ctx, node: Node) -> Sequence[Any]:
    from tvm import relax

    if ctx.rank(node.inputs[0]) == 0:
        raise Decline("NonZero of a scalar")
    return [ctx.emit(relax.op.nonzero(ctx.x(node.inputs[0])))]
