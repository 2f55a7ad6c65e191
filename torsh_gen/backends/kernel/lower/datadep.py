"""Ops whose output size depends on the data: NonZero, Compress, Unique, NonMaxSuppression.

Native programs have static shapes, so each output whose size depends on the data is a
model output whose buffer holds the op's upper bound (``output_bounds`` in the op's spec:
``ctx.out_shape(j)``). The kernel writes the actual tensor densely (row-major, in its
actual shape) at the buffer's start and the actual dims into ``ctx.extent(j)``, which the
C API's ``output_shape`` and every wrapper read after the run (``kernel/program.py``).

These are small post-processing ops, so the kernels are sequential single-thread loops:
a count, then a fill. Unique is O(n^2) in the rows it compares (each row against the
earlier ones for first occurrences, first occurrences against each other for their rank)
and needs no sort; NonMaxSuppression is the greedy selection per batch and class, O(n^2)
in the boxes. Semantics follow the reference kernels in ``torsh_gen/ops/``.
"""

from __future__ import annotations

from collections.abc import Callable

from torsh_gen.backends.kernel.builder import BufferRef, KernelBuilder
from torsh_gen.backends.kernel.ir import (
    Cast,
    Const,
    Expr,
    Select,
    Var,
    eq,
    idx,
    is_float,
    logical_and,
    logical_or,
    maximum,
    minimum,
    ne,
)
from torsh_gen.backends.kernel.lower import (
    LowerCtx,
    LoweringDeclined,
    lowers,
    norm_axis,
    prod,
    row_major_strides,
)
from torsh_gen.backends.kernel.lower.matrix import lower_constant_compress

F64 = "f64"


def _truthy(e: Expr) -> Expr:
    """``e != 0`` as a bool (NaN counts as non-zero, as numpy's ``nonzero``)."""
    return e if e.dtype == "bool" else Cast(e, "bool")


def _write_extent(ctx: LowerCtx, j: int, dims: list[Expr | int]) -> None:
    ext = ctx.extent(j)
    for d, v in enumerate(dims):
        ext[d] = idx(v)


# --------------------------------------------------------------------------- NonZero
@lowers("NonZero")
def lower_nonzero(ctx: LowerCtx) -> None:
    """Row-major indices of the non-zero elements: count them, then write [rank, count]."""
    shape = ctx.in_shape(0)
    rank, n = len(shape), prod(shape)
    kb, x, y = ctx.kb, ctx.x(0), ctx.y(0)
    count = kb.local("i64", idx(0), "cnt")
    with kb.loop(n) as i:
        with kb.if_(_truthy(x[i])):
            kb.assign(count, count + 1)
    total = kb.let(count, "total")
    if rank:
        strides = row_major_strides(shape)
        k = kb.local("i64", idx(0), "k")
        with kb.loop(n) as i:
            with kb.if_(_truthy(x[i])):
                for d in range(rank):
                    coord = i // strides[d] if strides[d] != 1 else i
                    y[total * d + k] = coord % shape[d] if d else coord
                kb.assign(k, k + 1)
    _write_extent(ctx, 0, [rank, total])


# --------------------------------------------------------------------------- Compress
@lowers("Compress")
def lower_compress(ctx: LowerCtx) -> None:
    """Keep the slices along ``axis`` (or the flat elements) where the condition holds.

    A constant condition with a static output is ``matrix.lower_constant_compress`` (a gather by a
    compile-time table); a run-time one counts the kept slices, then copies them."""
    if not ctx.is_data_dependent(0):
        lower_constant_compress(ctx)
        return
    shape = ctx.in_shape(0)
    if ctx.attrs.axis is None:
        shape, axis = (prod(shape),), 0
    else:
        axis = norm_axis(int(ctx.attrs.axis), len(shape))
    size, length = shape[axis], min(shape[axis], prod(ctx.in_shape(1)))
    outer, inner = prod(shape[:axis]), prod(shape[axis + 1 :])
    kb, x, cond, y = ctx.kb, ctx.x(0), ctx.x(1), ctx.y(0)
    count = kb.local("i64", idx(0), "cnt")
    with kb.loop(length) as t:
        with kb.if_(_truthy(cond[t])):
            kb.assign(count, count + 1)
    kept = kb.let(count, "kept")
    row = kb.local("i64", idx(0), "row")
    with kb.loop(outer) as o:
        with kb.loop(length) as t:
            with kb.if_(_truthy(cond[t])):
                src = kb.let((o * size + t) * inner, "src")
                dst = kb.let(row * inner, "dst")
                with kb.loop(inner) as i:
                    y[dst + i] = x[src + i]
                kb.assign(row, row + 1)
    _write_extent(ctx, 0, [kept if d == axis else shape[d] for d in range(len(shape))])


# --------------------------------------------------------------------------- Unique
def _compare_rows(
    kb: KernelBuilder, load: Callable[[Expr, Expr], Expr], a: Expr, b: Expr, width: int, dtype: str
) -> Var:
    """-1, 0 or 1 (i64): rows ``a`` and ``b`` compared lexicographically over ``width``
    elements. As in the reference's sort, NaN orders after every number and equals nothing
    (two NaNs at the first difference order by row index)."""
    c = kb.local("i64", idx(0), "cmp")
    with kb.loop(width) as e:
        with kb.if_(eq(c, 0)):
            u = kb.let(load(a, e), "u")
            v = kb.let(load(b, e), "v")
            if is_float(dtype):
                u_nan, v_nan = ne(u, u), ne(v, v)
                nan_order = Select(
                    logical_and(u_nan, v_nan),
                    Select(a < b, idx(-1), idx(1)),
                    Select(u_nan, idx(1), idx(-1)),
                )
                kb.assign(
                    c,
                    Select(
                        u < v,
                        idx(-1),
                        Select(v < u, idx(1), Select(logical_or(u_nan, v_nan), nan_order, idx(0))),
                    ),
                )
            else:
                kb.assign(c, Select(u < v, idx(-1), Select(v < u, idx(1), idx(0))))
    return c


@lowers("Unique")
def lower_unique(ctx: LowerCtx) -> None:
    """Unique elements (or slices along ``axis``), sorted or in first-occurrence order.

    Rows are the elements (no axis) or the slices along the axis. Each row finds the first
    row equal to it (its representative); each representative's rank among the
    representatives (by value, or by position when ``sorted`` is 0) is its output slot,
    which gives Y, indices, counts and inverse_indices by scatter."""
    shape = ctx.in_shape(0)
    if ctx.attrs.axis is None:
        shape, axis = (prod(shape),), 0
    else:
        axis = norm_axis(int(ctx.attrs.axis), len(shape))
    n = shape[axis]
    outer, inner = prod(shape[:axis]), prod(shape[axis + 1 :])
    width = outer * inner
    kb, x = ctx.kb, ctx.x(0)
    sort = bool(int(ctx.attrs.get("sorted", 1)))

    def load(r: Expr, e: Expr) -> Expr:  # element e of row r: (o, i) = divmod(e, inner)
        if inner == 1:
            return x[e * n + r] if outer > 1 else x[r]
        return x[((e // inner) * n + r) * inner + e % inner]

    rep = ctx.scratch("i64", max(n, 1))
    rank = ctx.scratch("i64", max(n, 1))
    with kb.loop(n) as r:
        first = kb.local("i64", r, "first")
        with kb.loop(r) as r2:
            with kb.if_(eq(first, r)):
                c = _compare_rows(kb, load, r2, r, width, x.dtype)
                with kb.if_(eq(c, 0)):
                    kb.assign(first, r2)
        rep[r] = first
    uniques = kb.local("i64", idx(0), "nu")
    with kb.loop(n) as r:
        with kb.if_(eq(rep[r], r)):
            kb.assign(uniques, uniques + 1)
            k = kb.local("i64", idx(0), "rk")
            with kb.loop(n if sort else r) as r2:
                with kb.if_(logical_and(eq(rep[r2], r2), ne(r2, r))):
                    if sort:
                        c = _compare_rows(kb, load, r2, r, width, x.dtype)
                        with kb.if_(c < 0):
                            kb.assign(k, k + 1)
                    else:
                        kb.assign(k, k + 1)
            rank[r] = k
    u = kb.let(uniques, "u")
    _unique_outputs(ctx, rep, rank, u, n, outer, inner)


def _unique_outputs(
    ctx: LowerCtx, rep: BufferRef, rank: BufferRef, u: Var, n: int, outer: int, inner: int
) -> None:
    """Scatter the representatives to their slots: Y, indices, inverse_indices, counts."""
    kb, x = ctx.kb, ctx.x(0)
    in_shape = ctx.in_shape(0)
    if ctx.wants(1):
        out = ctx.y(1)
        with kb.loop(n) as r:
            with kb.if_(eq(rep[r], r)):
                out[rank[r]] = r
        _write_extent(ctx, 1, [u])
    if ctx.wants(2):
        out = ctx.y(2)
        with kb.loop(n) as r:
            out[r] = rank[rep[r]]
    if ctx.wants(3):
        out = ctx.y(3)
        with kb.loop(n) as r:
            with kb.if_(eq(rep[r], r)):
                out[rank[r]] = idx(0)
        with kb.loop(n) as r:
            slot = kb.let(rank[rep[r]], "slot")
            out[slot] = out[slot] + 1
        _write_extent(ctx, 3, [u])
    if ctx.wants(0):
        y = ctx.y(0)
        with kb.loop(n) as r:
            with kb.if_(eq(rep[r], r)):
                with kb.loop(outer) as o:
                    dst = kb.let((o * u + rank[r]) * inner, "dst")
                    src = kb.let((o * n + r) * inner, "src")
                    with kb.loop(inner) as i:
                        y[dst + i] = x[src + i]
        if ctx.attrs.axis is None:
            _write_extent(ctx, 0, [u])
        else:
            axis = norm_axis(int(ctx.attrs.axis), len(in_shape))
            _write_extent(ctx, 0, [u if d == axis else in_shape[d] for d in range(len(in_shape))])


# --------------------------------------------------------------------------- NonMaxSuppression
def _f64(e: Expr) -> Expr:
    return e if e.dtype == F64 else Cast(e, F64)


@lowers("NonMaxSuppression")
def lower_nms(ctx: LowerCtx) -> None:
    """Greedy per-class NMS in float64: per batch and class, take the best remaining box
    (highest score, lowest index on ties) until the limit, dropping boxes whose IoU with it
    exceeds the threshold. Rows ``(batch, class, box)`` in that order, as onnxruntime."""
    batches, boxes, four = ctx.in_shape(0)
    _, classes, _ = ctx.in_shape(1)
    if four != 4:
        raise LoweringDeclined("NonMaxSuppression boxes must be [batches, boxes, 4]")
    per_class = ctx.out_shape(0)[0] // max(batches * classes, 1)
    kb, sc, y = ctx.kb, ctx.x(1), ctx.y(0)
    rows = kb.local("i64", idx(0), "rows")
    if per_class > 0 and boxes > 0:
        limit = kb.let(maximum(minimum(ctx.x(2)[0], per_class), 0), "limit")
        iou_t = kb.let(_f64(ctx.x(3)[0]) if ctx.has(3) else Const(0.0, F64), "iou_t")
        corners = _corners(ctx, batches * boxes)
        alive = ctx.scratch("i64", boxes)
        with kb.loop(batches) as b:
            with kb.loop(classes) as c:
                base = kb.let((b * classes + c) * boxes, "sb")
                with kb.loop(boxes) as j:
                    ok = (
                        _f64(sc[base + j]) > _f64(ctx.x(4)[0])
                        if ctx.has(4)
                        else Const(True, "bool")
                    )
                    alive[j] = Select(ok, idx(1), idx(0))
                taken = kb.local("i64", idx(0), "taken")
                with kb.loop(per_class):
                    with kb.if_(taken < limit):
                        best = _best_alive(kb, alive, lambda j: _f64(sc[base + j]), boxes)
                        with kb.if_(best >= 0):
                            alive[best] = idx(0)
                            y[rows * 3] = b
                            y[rows * 3 + 1] = c
                            y[rows * 3 + 2] = best
                            kb.assign(rows, rows + 1)
                            kb.assign(taken, taken + 1)
                            _suppress(kb, corners, alive, b * boxes, best, boxes, iou_t)
                        with kb.else_():
                            kb.assign(taken, limit)  # nothing left: the class is done
    _write_extent(ctx, 0, [rows, 3])


def _corners(ctx: LowerCtx, count: int) -> BufferRef:
    """Each box as (y_lo, x_lo, y_hi, x_hi) in float64 scratch: corners sorted per axis,
    or ``center_point_box`` 1's (x_c, y_c, w, h) turned into corners."""
    kb, bx = ctx.kb, ctx.x(0)
    out = ctx.scratch(F64, count * 4)
    center = int(ctx.attrs.get("center_point_box", 0)) == 1
    with kb.loop(count) as k:
        v = [kb.let(_f64(bx[k * 4 + q]), "bc") for q in range(4)]
        if center:
            xc, yc, w, h = v
            y1, x1, y2, x2 = yc - h / 2.0, xc - w / 2.0, yc + h / 2.0, xc + w / 2.0
        else:
            y1, x1, y2, x2 = v
        out[k * 4] = minimum(y1, y2)
        out[k * 4 + 1] = minimum(x1, x2)
        out[k * 4 + 2] = maximum(y1, y2)
        out[k * 4 + 3] = maximum(x1, x2)
    return out


def _best_alive(
    kb: KernelBuilder, alive: BufferRef, score: Callable[[Expr], Expr], boxes: int
) -> Var:
    """The alive box of highest score, the lowest index among equal scores; -1 if none."""
    best = kb.local("i64", idx(-1), "best")
    top = kb.local(F64, Const(0.0, F64), "top")
    with kb.loop(boxes) as j:
        s = kb.let(score(j), "s")
        with kb.if_(logical_and(ne(alive[j], 0), logical_or(best < 0, s > top))):
            kb.assign(best, j)
            kb.assign(top, s)
    return kb.let(best, "pick")


def _suppress(
    kb: KernelBuilder,
    corners: BufferRef,
    alive: BufferRef,
    base: Expr,
    best: Expr,
    boxes: int,
    iou_t: Expr,
) -> None:
    """Drop the alive boxes whose IoU with ``best`` exceeds ``iou_t`` (IoU 0 when the union
    is empty, as the reference)."""
    a = [kb.let(corners[(base + best) * 4 + q], "a") for q in range(4)]
    area_a = kb.let((a[2] - a[0]) * (a[3] - a[1]), "aa")
    with kb.loop(boxes) as j:
        with kb.if_(ne(alive[j], 0)):
            o = [kb.let(corners[(base + j) * 4 + q], "o") for q in range(4)]
            ih = maximum(minimum(a[2], o[2]) - maximum(a[0], o[0]), 0.0)
            iw = maximum(minimum(a[3], o[3]) - maximum(a[1], o[1]), 0.0)
            inter = kb.let(ih * iw, "inter")
            union = kb.let(area_a + (o[2] - o[0]) * (o[3] - o[1]) - inter, "union")
            iou = Select(union > 0.0, inter / union, Const(0.0, F64))
            with kb.if_(iou > iou_t):
                alive[j] = idx(0)
