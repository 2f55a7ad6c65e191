"""Matrix and sequence ops: EyeLike, ReverseSequence, Det, TensorScatter, Compress.

Run-time indices never leave a buffer: ReverseSequence clamps each sequence length into
``[0, time]``, TensorScatter wraps positions (circular mode) or skips the rows that fall
outside the cache (linear mode; the spec requires them inside, onnxruntime raises), as
``indexing.py`` does for gathers.

Det factors each matrix by LU with partial pivoting in float64 scratch (one matrix per
batch entry, so the batch loop may run on threads): the determinant is the product of the
pivots, its sign flipped per row swap; a zero pivot column makes it 0 without dividing.

Compress with a compile-time constant condition is here: its kept indices become a table
and the op a gather along the axis (or along the flattened input when ``axis`` is absent).
A run-time condition makes the output size depend on the data (``datadep``).
"""

from __future__ import annotations

import numpy as np

from torsh_gen.backends.kernel.ir import (
    Cast,
    Const,
    Expr,
    Select,
    call,
    idx,
    logical_and,
    maximum,
    minimum,
    ne,
)
from torsh_gen.backends.kernel.lower import LowerCtx, LoweringDeclined, lowers, norm_axis, prod
from torsh_gen.backends.kernel.lower.indexing import copy_all
from torsh_gen.backends.kernel.lower.shape import expect_out, fill, literal

F64 = "f64"


def _as(e: Expr, dtype: str) -> Expr:
    return e if e.dtype == dtype else Cast(e, dtype)


# --------------------------------------------------------------------------- EyeLike
@lowers("EyeLike")
def lower_eye_like(ctx: LowerCtx) -> None:
    """Zeros with ones on diagonal ``k`` (shape of the input, type of ``dtype`` or input)."""
    shape = ctx.in_shape(0)
    if len(shape) != 2:
        raise LoweringDeclined("EyeLike needs a 2-D input")
    expect_out(ctx, shape)
    rows, cols = shape
    k = int(ctx.attrs.get("k", 0))
    y = ctx.y(0)
    if rows * cols == 0:
        return
    fill(ctx, y, 0, rows * cols, literal(0, y.dtype), rows * cols)
    first, last = max(0, -k), min(rows, cols - k)
    if last > first:
        with ctx.kb.loop(last, start=first) as i:
            y[i * (cols + 1) + k] = literal(1, y.dtype)


# --------------------------------------------------------------------------- ReverseSequence
@lowers("ReverseSequence")
def lower_reverse_sequence(ctx: LowerCtx) -> None:
    """Per batch entry, the first ``len`` time steps reversed, the rest copied."""
    shape = ctx.in_shape(0)
    if len(shape) < 2:
        raise LoweringDeclined("ReverseSequence needs rank >= 2")
    b_ax = norm_axis(int(ctx.attrs.get("batch_axis", 1)), len(shape))
    t_ax = norm_axis(int(ctx.attrs.get("time_axis", 0)), len(shape))
    if {b_ax, t_ax} != {0, 1}:
        raise LoweringDeclined("batch_axis and time_axis must be 0 and 1")
    expect_out(ctx, shape)
    batch, time, inner = shape[b_ax], shape[t_ax], prod(shape[2:])
    if prod(ctx.in_shape(1)) != batch:
        raise LoweringDeclined(
            f"sequence_lens holds {prod(ctx.in_shape(1))} lengths, batch is {batch}"
        )
    if prod(shape) == 0:
        return
    stride_b = inner * (time if b_ax == 0 else 1)
    stride_t = inner * (batch if t_ax == 0 else 1)
    kb, x, lens, y = ctx.kb, ctx.x(0), ctx.x(1), ctx.y(0)
    with kb.loop(batch * time, kind=ctx.outer_kind(prod(shape))) as u:
        b, t = kb.let(u // time, "b"), kb.let(u % time, "t")
        n = kb.let(minimum(maximum(_as(lens[b], "i64"), 0), time), "n")
        src_t = kb.let(Select(t < n, n - 1 - t, t), "st")
        dst = kb.let(b * stride_b + t * stride_t, "dst")
        src = kb.let(b * stride_b + src_t * stride_t, "src")
        with kb.loop(inner, kind="vector", width=ctx.vector_width(inner)) as i:
            y[dst + i] = x[src + i]


# --------------------------------------------------------------------------- Det
@lowers("Det")
def lower_det(ctx: LowerCtx) -> None:
    """Determinants of the square matrices in the last two dims (LU, partial pivoting)."""
    shape = ctx.in_shape(0)
    if len(shape) < 2 or shape[-1] != shape[-2]:
        raise LoweringDeclined(f"Det needs square matrices, got {shape}")
    y = ctx.y(0)
    if not ctx.x(0).dtype.startswith("f") or not y.dtype.startswith("f"):
        raise LoweringDeclined("Det is lowered for float32/float64")
    expect_out(ctx, shape[:-2])
    batch, n = prod(shape[:-2]), shape[-1]
    if batch == 0:
        return
    kb, x = ctx.kb, ctx.x(0)
    a = ctx.scratch(F64, max(batch * n * n, 1))
    with kb.loop(batch, kind=ctx.outer_kind(batch * n * n * n)) as b:
        base = kb.let(b * (n * n), "base")
        with kb.loop(n * n, kind="vector", width=ctx.vector_width(n * n)) as i:
            a[base + i] = _as(x[base + i], F64)
        det = kb.local(F64, Const(1.0, F64), "det")
        with kb.loop(n, hint="k") as k:
            _eliminate(ctx, a, base, n, k, det)
        y[b] = _as(det, y.dtype)


def _eliminate(ctx: LowerCtx, a, base: Expr, n: int, k: Expr, det: Expr) -> None:
    """Step ``k`` of LU: pick the largest pivot in column k, swap it up, fold it into
    ``det`` and clear the column below it (skipped when the pivot is 0)."""
    kb = ctx.kb
    row_k = kb.let(base + k * n, "rk")
    piv = kb.local("i64", k, "p")
    best = kb.local(F64, call("fabs", a[row_k + k]), "best")
    with kb.loop(n, start=k + 1, hint="r") as r:
        v = kb.let(call("fabs", a[base + r * n + k]), "v")
        with kb.if_(v > best):
            kb.assign(best, v)
            kb.assign(piv, r)
    with kb.if_(ne(piv, k)):
        row_p = kb.let(base + piv * n, "rp")
        with kb.loop(n, start=k, hint="c") as c:
            tmp = kb.let(a[row_k + c], "tmp")
            a[row_k + c] = a[row_p + c]
            a[row_p + c] = tmp
        kb.assign(det, -det)
    pivot = kb.let(a[row_k + k], "pv")
    kb.assign(det, det * pivot)
    with kb.if_(ne(pivot, Const(0.0, F64))):
        with kb.loop(n, start=k + 1, hint="r") as r:
            row_r = kb.let(base + r * n, "rr")
            f = kb.let(a[row_r + k] / pivot, "f")
            with kb.loop(n, start=k + 1, hint="c") as c:
                a[row_r + c] = a[row_r + c] - f * a[row_k + c]


# --------------------------------------------------------------------------- TensorScatter
@lowers("TensorScatter")
def lower_tensor_scatter(ctx: LowerCtx) -> None:
    """Copy the cache, then write each batch entry's update rows along ``axis`` from its
    write index (linear: rows past the end are skipped; circular: positions wrap)."""
    past, upd = ctx.in_shape(0), ctx.in_shape(1)
    rank = len(past)
    axis = norm_axis(int(ctx.attrs.get("axis", -2)), rank)
    if axis == 0:
        raise LoweringDeclined("TensorScatter axis must not be the batch axis 0")
    if len(upd) != rank or any(u != p for d, (u, p) in enumerate(zip(upd, past)) if d != axis):
        raise LoweringDeclined(f"update {upd} does not fit the cache {past} along axis {axis}")
    mode = ctx.attrs.get("mode", "linear")
    mode = mode.decode() if isinstance(mode, bytes) else str(mode)
    if mode not in ("linear", "circular"):
        raise LoweringDeclined(f"TensorScatter mode {mode!r}")
    expect_out(ctx, past)
    kb, x, u, y = ctx.kb, ctx.x(0), ctx.x(1), ctx.y(0)
    if prod(past):
        copy_all(ctx, x, y, prod(past))
    size, seq = past[axis], upd[axis]
    outer, mid, inner = past[0], prod(past[1:axis]), prod(past[axis + 1 :])
    if prod(upd) == 0 or size == 0:
        return
    if ctx.has(2) and prod(ctx.in_shape(2)) != outer:
        raise LoweringDeclined(
            f"write_indices holds {prod(ctx.in_shape(2))} entries, batch is {outer}"
        )
    with kb.loop(outer * mid * seq, kind=ctx.outer_kind(prod(upd))) as t:
        s = kb.let(t % seq, "s")
        row = kb.let(t // seq, "row")
        start = _as(ctx.x(2)[row // mid], "i64") if ctx.has(2) else idx(0)
        pos = kb.let(start + s, "pos")
        if mode == "circular":
            pos = kb.let(pos % size, "pw")
            pos = kb.let(Select(pos < 0, pos + size, pos), "pos")
        with kb.if_(logical_and(pos >= 0, pos < size)):
            dst = kb.let((row * size + pos) * inner, "dst")
            src = kb.let(t * inner, "src")
            with kb.loop(inner, kind="vector", width=ctx.vector_width(inner)) as i:
                y[dst + i] = u[src + i]


# --------------------------------------------------------------------------- Compress
def lower_constant_compress(ctx: LowerCtx) -> None:
    """Keep the slices (or flat elements) a constant condition selects: a gather by table.

    ``datadep.lower_compress`` (the op's one lowering) calls this when the condition is a
    compile-time constant, so the output shape is static."""
    cond = ctx.const(1)
    assert cond is not None, "a run-time condition goes through datadep.lower_compress"
    shape = ctx.in_shape(0)
    if ctx.attrs.axis is None:
        shape, axis = (prod(shape),), 0
    else:
        axis = norm_axis(int(ctx.attrs.axis), len(shape))
    keep = np.flatnonzero(np.asarray(cond).astype(bool).reshape(-1)[: shape[axis]])
    want = tuple(shape[:axis]) + (keep.size,) + tuple(shape[axis + 1 :])
    if prod(ctx.out_shape(0)) != prod(want):
        raise LoweringDeclined(f"output {ctx.out_shape(0)} does not hold the kept slices {want}")
    outer, inner = prod(shape[:axis]), prod(shape[axis + 1 :])
    if prod(want) == 0:
        return
    kb, x, y = ctx.kb, ctx.x(0), ctx.y(0)
    table = ctx.weight((keep * inner).astype(np.int64), "i64")
    n_keep, size = keep.size, shape[axis]
    with kb.loop(outer * n_keep, kind=ctx.outer_kind(prod(want))) as t:
        o, j = kb.let(t // n_keep, "o"), kb.let(t % n_keep, "j")
        src = kb.let(o * (size * inner) + table[j], "src")
        dst = kb.let(t * inner, "dst")
        with kb.loop(inner, kind="vector", width=ctx.vector_width(inner)) as i:
            y[dst + i] = x[src + i]
