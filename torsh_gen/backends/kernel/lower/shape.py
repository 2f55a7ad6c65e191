"""Data-movement ops as copy loop nests: Transpose, Concat, Split, Slice, Expand, Tile,
DepthToSpace, SpaceToDepth, Pad, Trilu, and the generators that survive folding
(ConstantOfShape, Range, Shape, Size).

Most of these are affine copies: output element ``o`` reads the input at ``base + sum_d
o_d * s_d``. ``affine_copy`` walks the output in row-major order, merges the dims both sides
walk contiguously (so whole contiguous runs become one vector loop) and splits the outer loop
across threads when the copy is large. Reshape-like ops never get here: they are aliases.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from functools import partial

import numpy as np

from torsh_gen.backends.kernel.builder import BufferRef
from torsh_gen.backends.kernel.ir import (
    Cast,
    Const,
    Expr,
    Select,
    as_expr,
    eq,
    idx,
    logical_and,
    maximum,
    minimum,
    ne,
)
from torsh_gen.backends.kernel.lower import (
    LowerCtx,
    LoweringDeclined,
    broadcast_strides,
    lowers,
    norm_axis,
    prod,
    row_major_strides,
)
from torsh_gen.backends.kernel.lower.elementwise import coalesce, elementwise_nest

#: Block edge of tiled transposes (elements): two 32 x 32 blocks of f32 fit in 8 KiB.
TILE = 32


# --------------------------------------------------------------------------- helpers
def affine_copy(
    ctx: LowerCtx,
    shape: tuple[int, ...] | list[int],
    dst: BufferRef,
    dst_strides: list[int],
    src: BufferRef,
    src_strides: list[int],
    dst_base: Expr | int = 0,
    src_base: Expr | int = 0,
) -> None:
    """``dst[dst_base + o·dst_strides] = src[src_base + o·src_strides]`` for every ``o < shape``
    (the bases may be run-time values)."""

    def body(ix: list[Expr]) -> None:
        d = ix[0] if isinstance(dst_base, int) and not dst_base else ix[0] + dst_base
        s = ix[1] if isinstance(src_base, int) and not src_base else ix[1] + src_base
        dst[d] = _as(src[s], dst.dtype)

    elementwise_nest(ctx, tuple(shape), [list(dst_strides), list(src_strides)], body)


def fill(
    ctx: LowerCtx, dst: BufferRef, start: Expr | int, stop: Expr | int, value: Expr, n: int
) -> None:
    """``dst[start:stop] = value``; ``n`` is the static trip count when known (for the width)."""
    with ctx.kb.loop(stop, start=start, kind="vector", width=ctx.vector_width(n), hint="f") as i:
        dst[i] = value


def permute_copy(ctx: LowerCtx, in_shape: tuple[int, ...], perm: list[int]) -> None:
    """Output 0 = input 0 (seen with ``in_shape``) transposed by ``perm``."""
    st = row_major_strides(in_shape)
    out_shape = [in_shape[p] for p in perm]
    if prod(out_shape) != prod(ctx.out_shape(0)):
        raise LoweringDeclined(f"output shape {ctx.out_shape(0)} does not match the permutation")
    dst_st, src_st = row_major_strides(tuple(out_shape)), [st[p] for p in perm]
    cshape, (cdst, csrc) = coalesce(tuple(out_shape), [dst_st, src_st])
    inner = len(cshape) - 1
    if 1 in csrc[:-1] and cshape[inner] >= TILE and cshape[csrc.index(1)] >= TILE:
        _tiled_transpose(ctx, cshape, cdst, csrc, csrc.index(1))
    else:
        affine_copy(ctx, out_shape, ctx.y(0), dst_st, ctx.x(0), src_st)


def _tiled_transpose(
    ctx: LowerCtx, shape: list[int], dst_st: list[int], src_st: list[int], p: int
) -> None:
    """A transpose whose read-contiguous dim ``p`` and write-contiguous (last) dim are both
    long: both are cut into TILE x TILE blocks so that the lines a block reads stay in
    cache while its rows are written (the naive order streams through every line per row)."""
    kb, x, y = ctx.kb, ctx.x(0), ctx.y(0)
    last = len(shape) - 1
    outer = [d for d in range(last) if d != p]
    nest = ExitStack()
    dst: Expr = idx(0)
    src: Expr = idx(0)
    kind = ctx.outer_kind(prod(shape))
    for d in outer:
        v = nest.enter_context(kb.loop(shape[d], kind=kind))
        kind = "serial"
        dst, src = kb.let(dst + v * dst_st[d], "o"), kb.let(src + v * src_st[d], "o")
    tiles = [(shape[d] + TILE - 1) // TILE for d in (p, last)]
    pb = nest.enter_context(kb.loop(tiles[0], kind=kind, hint="pb"))
    jb = nest.enter_context(kb.loop(tiles[1], hint="jb"))
    p0, j0 = kb.let(pb * TILE, "p0"), kb.let(jb * TILE, "j0")
    i = nest.enter_context(kb.loop(minimum(p0 + TILE, shape[p]), start=p0))
    rd, rs = kb.let(dst + i * dst_st[p], "rd"), kb.let(src + i, "rs")
    j = nest.enter_context(
        kb.loop(minimum(j0 + TILE, shape[last]), start=j0, kind="vector", width=ctx.sched.lanes)
    )
    y[rd + j] = _as(x[rs + j * src_st[last]], y.dtype)
    nest.close()


def expect_out(ctx: LowerCtx, shape: tuple[int, ...] | list[int], j: int = 0) -> None:
    """Decline unless output ``j`` has ``shape``: kernels write by the shapes they derive,
    so a disagreement with the planned output would write outside its buffer."""
    if tuple(shape) != tuple(ctx.out_shape(j)):
        raise LoweringDeclined(f"output {j} is {ctx.out_shape(j)}, the op gives {tuple(shape)}")


def const_ints(ctx: LowerCtx, i: int, what: str) -> list[int] | None:
    """The compile-time integer values of input ``i`` (None when absent); declines if runtime."""
    if not ctx.has(i):
        return None
    v = ctx.const(i)
    if v is None:
        raise LoweringDeclined(f"{what} must be a compile-time constant")
    return [int(a) for a in np.asarray(v).reshape(-1)]


def scalar_value(ctx: LowerCtx, i: int, dtype: str) -> Expr:
    """Element 0 of input ``i`` as ``dtype``: a literal when constant, else a load."""
    if prod(ctx.in_shape(i)) < 1:
        raise LoweringDeclined(f"input {i} is empty where a scalar is expected")
    v = ctx.const(i)
    if v is not None and np.asarray(v).size:
        return literal(np.asarray(v).reshape(-1)[0], dtype)
    return _as(ctx.x(i)[0], dtype)


def literal(value: object, dtype: str) -> Const:
    """``value`` as a constant of the kernel dtype ``dtype``."""
    if dtype == "bool":
        return Const(bool(value), "bool")
    if dtype[0] in "iu":
        return Const(int(value), dtype)  # type: ignore[call-overload]
    return Const(float(value), dtype)  # type: ignore[arg-type]


def _as(e: Expr, dtype: str) -> Expr:
    return e if e.dtype == dtype else Cast(e, dtype)


# --------------------------------------------------------------------------- permutations
@lowers("Transpose")
def lower_transpose(ctx: LowerCtx) -> None:
    """Any permutation; dims that stay adjacent merge into longer contiguous runs."""
    shape = ctx.in_shape(0)
    perm = ctx.attrs.perm
    perm = (
        list(range(len(shape)))[::-1]
        if perm is None
        else [norm_axis(int(p), len(shape)) for p in perm]
    )
    if sorted(perm) != list(range(len(shape))):
        raise LoweringDeclined(f"perm {perm} is not a permutation of rank {len(shape)}")
    if ctx.input_is_data_dependent(0):
        _transpose_actual(ctx, perm)
        return
    permute_copy(ctx, shape, perm)


def _transpose_actual(ctx: LowerCtx, perm: list[int]) -> None:
    """The transpose of a data-dependent input (``torch.nonzero``'s NonZero -> Transpose):
    its dims come from its producer's extent at run time, both tensors are dense in their
    actual dims at their buffers' start, and the output's dims go to its own extent."""
    kb, x, y = ctx.kb, ctx.x(0), ctx.y(0)
    ext = ctx.in_extent(0)
    rank = len(perm)
    dims = [kb.let(ext[d], f"d{d}") for d in range(rank)]
    strides: list[Expr] = [idx(1)] * rank
    for d in range(rank - 2, -1, -1):
        strides[d] = kb.let(strides[d + 1] * dims[d + 1], f"s{d}")
    with ExitStack() as stack:
        out_flat: Expr = idx(0)
        in_flat: Expr = idx(0)
        for k, p in enumerate(perm):
            i = stack.enter_context(kb.loop(dims[p], hint=f"o{k}"))
            out_flat = out_flat * dims[p] + i
            in_flat = in_flat + i * strides[p]
        y[out_flat] = x[in_flat]
    ext_out = ctx.extent(0)
    for k, p in enumerate(perm):
        ext_out[k] = dims[p]


@lowers("DepthToSpace")
def lower_depth_to_space(ctx: LowerCtx) -> None:
    """A 6-d transpose: DCR moves (b, b, c) → (c, h, b, w, b), CRD (c, b, b) → (c, h, b, w, b)."""
    n, c, h, w = _nchw(ctx)
    b = int(ctx.attrs.blocksize)
    if b <= 0 or c % (b * b):
        raise LoweringDeclined(f"channels {c} not divisible by blocksize² {b * b}")
    if ctx.attrs.get("mode", "DCR") == "CRD":
        permute_copy(ctx, (n, c // (b * b), b, b, h, w), [0, 1, 4, 2, 5, 3])
    else:
        permute_copy(ctx, (n, b, b, c // (b * b), h, w), [0, 3, 4, 1, 5, 2])


@lowers("SpaceToDepth")
def lower_space_to_depth(ctx: LowerCtx) -> None:
    """The inverse 6-d transpose of DepthToSpace."""
    n, c, h, w = _nchw(ctx)
    b = int(ctx.attrs.blocksize)
    if b <= 0 or h % b or w % b:
        raise LoweringDeclined(f"spatial dims {h}x{w} not divisible by blocksize {b}")
    order = [0, 1, 3, 5, 2, 4] if ctx.attrs.get("mode", "DCR") == "CRD" else [0, 3, 5, 1, 2, 4]
    permute_copy(ctx, (n, c, h // b, b, w // b, b), order)


def _nchw(ctx: LowerCtx) -> tuple[int, int, int, int]:
    shape = ctx.in_shape(0)
    if len(shape) != 4:
        raise LoweringDeclined(f"{ctx.node.op_type} needs a 4-d input, got rank {len(shape)}")
    return shape  # type: ignore[return-value]


# --------------------------------------------------------------------------- concat, split
@lowers("Concat")
def lower_concat(ctx: LowerCtx) -> None:
    """One copy nest per input, each writing its slab of the output."""
    out = ctx.out_shape(0)
    axis = norm_axis(int(ctx.attrs.axis), len(out))
    ost = row_major_strides(out)
    off = 0
    for i in range(len(ctx.inputs)):
        if not ctx.has(i):
            continue
        shape = ctx.in_shape(i)
        if len(shape) != len(out) or any(
            a != b for k, (a, b) in enumerate(zip(shape, out)) if k != axis
        ):
            raise LoweringDeclined(f"input {i} of shape {shape} does not fit the output {out}")
        if prod(shape):
            affine_copy(
                ctx,
                shape,
                ctx.y(0),
                ost,
                ctx.x(i),
                row_major_strides(shape),
                dst_base=off * ost[axis],
            )
        off += shape[axis]
    if off != out[axis]:
        raise LoweringDeclined("input sizes along the axis do not add up to the output")


@lowers("Split")
def lower_split(ctx: LowerCtx) -> None:
    """One copy nest per output; the part sizes are the (static) output shapes."""
    shape = ctx.in_shape(0)
    axis = norm_axis(int(ctx.attrs.axis or 0), len(shape))
    ist = row_major_strides(shape)
    off = 0
    for j, out in enumerate(ctx.out_shapes):
        expect_out(
            ctx,
            shape[:axis] + (out[axis] if len(out) == len(shape) else -1,) + shape[axis + 1 :],
            j,
        )
        if prod(out):
            affine_copy(
                ctx, out, ctx.y(j), row_major_strides(out), ctx.x(0), ist, src_base=off * ist[axis]
            )
        off += out[axis]
    if off != shape[axis]:
        raise LoweringDeclined("output sizes along the axis do not add up to the input")


# --------------------------------------------------------------------------- slice
@lowers("Slice")
def lower_slice(ctx: LowerCtx) -> None:
    """Constant starts/ends/axes/steps: an affine copy (negative steps walk backwards); any
    of them read at run time: the same copy from bounds the kernel clamps (``_runtime_slice``)."""
    shape = ctx.in_shape(0)
    if ctx.opset < 10:
        a = ctx.attrs
        starts, ends = list(a.starts or []), list(a.ends or [])
        axes, steps = (list(a.axes) if a.axes else None), None
    elif any(ctx.has(i) and ctx.const(i) is None for i in range(1, 5)):
        _runtime_slice(ctx)
        return
    else:
        starts = const_ints(ctx, 1, "Slice starts") or []
        ends = const_ints(ctx, 2, "Slice ends") or []
        axes, steps = const_ints(ctx, 3, "Slice axes"), const_ints(ctx, 4, "Slice steps")
    axes = list(range(len(starts))) if not axes else [norm_axis(a, len(shape)) for a in axes]
    steps = steps or [1] * len(starts)
    if not len(starts) == len(ends) == len(axes) == len(steps):
        raise LoweringDeclined("starts, ends, axes and steps differ in length")
    begin, step = [0] * len(shape), [1] * len(shape)
    sizes = list(shape)
    for s, e, ax, k in zip(starts, ends, axes, steps):
        if k == 0:
            raise LoweringDeclined("Slice step 0")
        begin[ax], step[ax], sizes[ax] = slice_bounds(s, e, k, shape[ax])
    if tuple(sizes) != tuple(ctx.out_shape(0)):
        raise LoweringDeclined(f"slice gives {tuple(sizes)}, output is {ctx.out_shape(0)}")
    st = row_major_strides(shape)
    base = sum(b * s for b, s in zip(begin, st) if prod(sizes))
    affine_copy(
        ctx,
        sizes,
        ctx.y(0),
        row_major_strides(tuple(sizes)),
        ctx.x(0),
        [s * k for s, k in zip(st, step)],
        src_base=base,
    )


def slice_bounds(start: int, end: int, step: int, dim: int) -> tuple[int, int, int]:
    """(first index, step, count) of ONNX Slice on one axis: bounds clamped like numpy."""
    start = start + dim if start < 0 else start
    end = end + dim if end < 0 else end
    if step > 0:
        start, end = min(max(start, 0), dim), min(max(end, 0), dim)
        count = max(0, -(-(end - start) // step))
    else:
        start, end = min(max(start, -1), dim - 1), min(max(end, -1), dim - 1)
        count = max(0, -(-(start - end) // -step))
    return (start if count else 0), step, count


def _runtime_slice(ctx: LowerCtx) -> None:
    """Slice whose bounds are read at run time, into the static output shape.

    Each sliced axis gets its first index and step in the kernel, clamped as the reference
    (numpy) clamps them; where the values do not give the static length (inconsistent
    data), the axis reads its first elements instead, so no value moves a read outside
    the input. Run-time steps make the copy strided, with a contiguous version for the
    usual steps of 1 chosen at run time."""
    shape, out = ctx.in_shape(0), ctx.out_shape(0)
    if len(out) != len(shape) or any(o > n for o, n in zip(out, shape)):
        raise LoweringDeclined(f"Slice output {out} does not fit in the input {shape}")
    if prod(out) == 0:
        return
    kb = ctx.kb
    st = row_major_strides(shape)
    base: Expr = idx(0)
    src_st: list[Expr | int] = list(st)
    for d, (s, e, k) in _slice_params(ctx).items():
        first, step = _slice_axis(ctx, s, e, k, shape[d], out[d])
        base = base + first * st[d]
        if isinstance(step, int) or out[d] == 1:  # one element: the step never moves
            src_st[d] = step * st[d] if isinstance(step, int) else 0
        else:
            src_st[d] = kb.let(step * st[d], "ss")
    base = kb.let(base, "sb")
    dst_st = row_major_strides(out)
    dynamic = [d for d, s in enumerate(src_st) if not isinstance(s, int)]
    if not dynamic:
        affine_copy(ctx, out, ctx.y(0), dst_st, ctx.x(0), [int(s) for s in src_st], src_base=base)
        return
    unit = eq(src_st[dynamic[0]], st[dynamic[0]])
    for d in dynamic[1:]:
        unit = logical_and(unit, eq(src_st[d], st[d]))
    with kb.if_(unit):  # every run-time step is 1: a contiguous copy
        affine_copy(ctx, out, ctx.y(0), dst_st, ctx.x(0), st, src_base=base)
    with kb.else_():
        strided_copy(ctx, out, src_st, base)


def _slice_params(ctx: LowerCtx) -> dict[int, tuple[Expr, Expr, Expr]]:
    """(start, end, step) expressions per sliced axis.

    Axes read at run time are matched in the kernel: each candidate axis takes the
    values of the last entry naming it (as the reference's loop does), or the whole axis
    when none does. The candidates are the axes whose length changes when they are as many
    as the entries, every axis otherwise."""
    shape, out = ctx.in_shape(0), ctx.out_shape(0)
    rank, k = len(shape), prod(ctx.in_shape(1))
    if any(ctx.has(i) and prod(ctx.in_shape(i)) != k for i in range(2, 5)):
        raise LoweringDeclined("Slice starts, ends, axes and steps differ in length")
    starts, ends = input_values(ctx, 1, k), input_values(ctx, 2, k)
    steps = input_values(ctx, 4, k) if ctx.has(4) else [idx(1)] * k
    changed = [d for d in range(rank) if out[d] != shape[d]]
    axes = const_ints(ctx, 3, "Slice axes") if ctx.has(3) and ctx.const(3) is not None else None
    if axes is not None or not ctx.has(3):
        axes = [norm_axis(a, rank) for a in axes] if axes is not None else list(range(k))
        params = {a: (s, e, t) for a, s, e, t in zip(axes, starts, ends, steps)}
        if any(d not in params for d in changed):
            raise LoweringDeclined(f"Slice of axes {axes} cannot give the output {out}")
        return params
    if len(changed) > k:
        raise LoweringDeclined(f"{k} run-time Slice axes cannot change {len(changed)} axes")
    found = input_values(ctx, 3, k)
    params = {}
    for d in changed if len(changed) == k else range(rank):
        s, e, t = idx(0), idx(shape[d]), idx(1)
        for a, s_i, e_i, t_i in zip(found, starts, ends, steps):
            hit = ctx.kb.let(eq(Select(a < 0, a + rank, a), d), "hit")
            s, e, t = Select(hit, s_i, s), Select(hit, e_i, e), Select(hit, t_i, t)
        unit = all(isinstance(t_i, Const) and t_i.value == 1 for t_i in steps)
        params[d] = (s, e, idx(1) if unit else t)
    return params


def _slice_axis(
    ctx: LowerCtx, start: Expr, end: Expr, step: Expr, dim: int, out: int
) -> tuple[Expr, Expr | int]:
    """(first index, step) of one axis sliced at run time, safe for ``out`` reads.

    The step is clamped to ±(dim + 1) first (a longer one reads one element all the same),
    so that no arithmetic overflows whatever the values."""
    kb = ctx.kb
    s, e = kb.let(_wrap(start, dim), "s0"), kb.let(_wrap(end, dim), "e0")
    fixed = int(step.value) if isinstance(step, Const) else None
    if fixed == 0:
        raise LoweringDeclined("Slice step 0")
    if fixed:
        k = idx(max(-dim - 1, min(fixed, dim + 1)))
    else:
        k = kb.let(_clamp(step, -dim - 1, dim + 1), "k")
    up = k > 0 if fixed is None else Const(fixed > 0, "bool")
    first = kb.let(Select(up, _clamp(s, 0, dim), _clamp(s, -1, dim - 1)), "s1")
    last = Select(up, _clamp(e, 0, dim), _clamp(e, -1, dim - 1))
    span = kb.let(Select(up, last - first, first - last), "sp")
    mag = maximum(Select(up, k, -k), 1)
    count = Select(span > 0, (span - 1) // mag + 1, idx(0))
    ok = kb.let(logical_and(ne(k, 0), count >= out), "ok")
    if fixed is None:
        return kb.let(Select(ok, first, idx(0)), "s2"), kb.let(Select(ok, k, idx(1)), "k1")
    if (out - 1) * abs(fixed) > dim - 1:
        raise LoweringDeclined(f"Slice step {fixed} cannot give {out} elements of {dim}")
    return kb.let(Select(ok, first, idx(0 if fixed > 0 else dim - 1)), "s2"), fixed


def _wrap(v: Expr, dim: int) -> Expr:
    """A possibly negative index as i64, counted from the end when negative."""
    v = _as(v, "i64")
    return Select(v < 0, v + dim, v)


def _clamp(v: Expr, lo: int, hi: int) -> Expr:
    return minimum(maximum(_as(v, "i64"), lo), hi)


def strided_copy(
    ctx: LowerCtx, sizes: tuple[int, ...], src_strides: list[Expr | int], src_base: Expr
) -> None:
    """``y[o] = x[base + o·src_strides]`` over ``sizes`` (row-major output) when some
    strides are run-time values: one loop per dim, the innermost a vector loop whose loads
    go lane by lane."""
    kb, x, y = ctx.kb, ctx.x(0), ctx.y(0)
    dims = [d for d, n in enumerate(sizes) if n > 1]
    ost = row_major_strides(sizes)
    if not dims:
        y[0] = _as(x[src_base], y.dtype)
        return
    src, dst = src_base, idx(0)
    with ExitStack() as nest:
        for pos, d in enumerate(dims):
            last = pos == len(dims) - 1
            kind = "vector" if last else (ctx.outer_kind(prod(sizes)) if pos == 0 else "serial")
            width = ctx.vector_width(sizes[d]) if last else 1
            v = nest.enter_context(kb.loop(sizes[d], kind=kind, width=width))
            s, t = src + v * src_strides[d], dst + v * ost[d]
            if last:
                y[t] = _as(x[s], y.dtype)
            else:
                src, dst = kb.let(s, "o"), kb.let(t, "o")


def input_values(ctx: LowerCtx, i: int, n: int, dtype: str = "i64") -> list[Expr]:
    """The ``n`` elements of input ``i`` as ``dtype``: literals when it is a compile-time
    constant, else loads (declines when the input holds fewer)."""
    if prod(ctx.in_shape(i)) < n:
        raise LoweringDeclined(f"input {i} holds fewer than {n} values")
    v = ctx.const(i)
    if v is not None:
        return [literal(a, dtype) for a in np.asarray(v).reshape(-1)[:n]]
    return [_as(ctx.x(i)[j], dtype) for j in range(n)]


# --------------------------------------------------------------------------- broadcast copies
@lowers("Expand")
def lower_expand(ctx: LowerCtx) -> None:
    """Numpy broadcasting to the (static) output shape: stride 0 along broadcast dims."""
    out = ctx.out_shape(0)
    try:
        expect_out(ctx, np.broadcast_shapes(ctx.in_shape(0), out))
    except ValueError as exc:
        raise LoweringDeclined(f"input does not broadcast to the output: {exc}") from None
    affine_copy(
        ctx,
        out,
        ctx.y(0),
        row_major_strides(out),
        ctx.x(0),
        broadcast_strides(ctx.in_shape(0), out),
    )


@lowers("Tile")
def lower_tile(ctx: LowerCtx) -> None:
    """The output seen as (reps_0, n_0, reps_1, n_1, ...): an affine copy with stride 0 per rep."""
    shape = ctx.in_shape(0)
    out = ctx.out_shape(0)
    if len(out) != len(shape) or any(o % n if n else o for o, n in zip(out, shape)):
        raise LoweringDeclined(f"output {out} is not a tiling of {shape}")
    st = row_major_strides(shape)
    split_shape: list[int] = []
    src: list[int] = []
    for o, n, s in zip(out, shape, st):
        split_shape += [o // n if n else 0, n]
        src += [0, s]
    affine_copy(ctx, split_shape, ctx.y(0), row_major_strides(tuple(split_shape)), ctx.x(0), src)


# --------------------------------------------------------------------------- pad
Width = Expr | int


class _PadDim:
    """One output dim of Pad: ``out`` = ``before`` + ``size`` + after; the input rows it
    reads start at ``lo`` (a crop by negative pads) and are ``stride`` elements apart.

    With pads read at run time, ``before``, ``size`` and ``lo`` are expressions clamped so
    that every read stays in the input and every write in the output (the copied middle
    ends at ``mid`` <= ``out``); compile-time pads keep them ints."""

    def __init__(
        self, out: int, before: Width, size: Width, lo: Width, stride: int, mid: Width | None = None
    ) -> None:
        self.out, self.before, self.size, self.lo, self.stride = out, before, size, lo, stride
        self.mid = before + size if mid is None else mid

    @property
    def static(self) -> bool:
        """Whether the widths are compile-time ints."""
        return isinstance(self.before, int)

    @property
    def padded(self) -> bool:
        """Whether the dim pads or crops at all (else it is a plain copy)."""
        return not self.static or self.out != self.size or self.lo != 0


def _pad_widths(ctx: LowerCtx, rank: int) -> tuple[list[Width], list[Width]]:
    if ctx.opset >= 11 and any(ctx.has(i) and ctx.const(i) is None for i in (1, 3)):
        return _runtime_pad_widths(ctx, rank)
    if ctx.opset >= 11:
        pads = const_ints(ctx, 1, "Pad pads")
        axes = const_ints(ctx, 3, "Pad axes")
    else:
        pads = list(ctx.attrs.pads if ctx.attrs.pads is not None else ctx.attrs.paddings or [])
        axes = None
    axes = list(range(rank)) if axes is None else [norm_axis(a, rank) for a in axes]
    if pads is None or len(pads) != 2 * len(axes):
        raise LoweringDeclined(f"Pad needs 2 pads per axis ({len(axes)} axes)")
    before: list[Width] = [0] * rank
    after: list[Width] = [0] * rank
    for k, a in enumerate(axes):
        before[a], after[a] = pads[k], pads[k + len(axes)]
    return before, after


def _runtime_pad_widths(ctx: LowerCtx, rank: int) -> tuple[list[Width], list[Width]]:
    """Pads (or axes) read at run time, as expressions per dim.

    Run-time axes are matched in the kernel: a candidate dim takes the pads of the last
    entry naming it (as the reference's loop does), none when no entry does. The
    candidates are the dims whose length changes when they are as many as the entries,
    every dim otherwise (a pair of pads can shift a dim without changing its length)."""
    shape, out = ctx.in_shape(0), ctx.out_shape(0)
    n = prod(ctx.in_shape(1))
    pads = input_values(ctx, 1, n)
    before: list[Width] = [0] * rank
    after: list[Width] = [0] * rank
    if ctx.has(3) and ctx.const(3) is None:
        k = prod(ctx.in_shape(3))
        if n != 2 * k:
            raise LoweringDeclined(f"Pad needs 2 pads per axis ({k} axes)")
        found = input_values(ctx, 3, k)
        changed = [d for d in range(rank) if out[d] != shape[d]]
        if len(changed) > k:
            raise LoweringDeclined(f"{k} run-time Pad axes cannot change {len(changed)} dims")
        for d in changed if len(changed) == k else range(rank):
            b: Expr = idx(0)
            e: Expr = idx(0)
            for i, a in enumerate(found):
                hit = ctx.kb.let(eq(Select(a < 0, a + rank, a), d), "hit")
                b, e = Select(hit, pads[i], b), Select(hit, pads[i + k], e)
            before[d], after[d] = b, e
        return before, after
    axes = const_ints(ctx, 3, "Pad axes") if ctx.has(3) else None
    axes = list(range(rank)) if axes is None else [norm_axis(a, rank) for a in axes]
    if n != 2 * len(axes):
        raise LoweringDeclined(f"Pad needs 2 pads per axis ({len(axes)} axes)")
    for i, a in enumerate(axes):
        before[a], after[a] = pads[i], pads[i + len(axes)]
    return before, after


def _runtime_pad_dim(
    ctx: LowerCtx, mode: str, n: int, out: int, pads: tuple[Width, Width], stride: int
) -> _PadDim:
    """A dim padded by run-time amounts, clamped so that no value leaves the buffers:
    the kept input run [lo, lo + size) lies in the input (non-empty outside constant mode,
    whose edges read it) and the output writes the middle up to ``out`` only."""
    if n == 0 and out and mode != "constant":
        raise LoweringDeclined(f"Pad {mode} of an empty axis")
    kb = ctx.kb
    b, e = (kb.let(_as(as_expr(p), "i64"), "pw") for p in pads)
    before = kb.let(_clamp(b, 0, out), "pb")
    lo = kb.let(minimum(maximum(-b, 0), n if mode == "constant" else n - 1), "pl")
    size = n - lo - maximum(-e, 0)
    size = kb.let(minimum(maximum(size, 0 if mode == "constant" else 1), n - lo), "pn")
    return _PadDim(out, before, size, lo, stride, kb.let(minimum(before + size, out), "pm"))


def _pad_dims(ctx: LowerCtx, mode: str) -> list[_PadDim]:
    """The dims of the Pad, trailing unpadded dims merged into whole rows."""
    shape, out = ctx.in_shape(0), ctx.out_shape(0)
    before, after = _pad_widths(ctx, len(shape))
    if len(out) != len(shape):
        raise LoweringDeclined(f"Pad output {out} and input {shape} differ in rank")
    st = row_major_strides(shape)
    dims = []
    for n, b, e, s, o in zip(shape, before, after, st, out):
        if not (isinstance(b, int) and isinstance(e, int)):
            dims.append(_runtime_pad_dim(ctx, mode, n, o, (b, e), s))
            continue
        lo = max(-b, 0)
        size = n - lo - max(-e, 0)
        if size < 0 or (size == 0 and mode != "constant" and max(b, 0) + max(e, 0)):
            raise LoweringDeclined(f"Pad {mode} of an empty (cropped) axis")
        dims.append(_PadDim(max(b, 0) + size + max(e, 0), max(b, 0), size, lo, s))
    if tuple(d.out for d in dims) != tuple(out):
        raise LoweringDeclined(f"pads give {[d.out for d in dims]}, output is {out}")
    while len(dims) > 1 and not dims[-1].padded and (mode == "constant" or not dims[-2].padded):
        inner, outer = dims.pop(), dims.pop()
        r = inner.out
        dims.append(
            _PadDim(
                outer.out * r,
                outer.before * r,
                outer.size * r,
                outer.lo * r,
                inner.stride,
                outer.mid * r,
            )
        )
        if outer.padded:
            break
    return dims or [_PadDim(1, 0, 1, 0, 1)]


def _source_coord(mode: str, o: Expr, d: _PadDim) -> Expr:
    """The input coordinate (within the axis) that output coordinate ``o`` reads.

    Output coordinates are never below ``-before``, so adding a multiple of the period
    above ``before`` makes the remainder's operand non-negative (one ``rem``, not two)."""
    if not d.padded:
        return o
    t = o - d.before
    if mode == "edge":
        c = minimum(maximum(t, 0), d.size - 1)
    elif mode == "wrap":
        c = (t + (d.before // d.size + 1) * d.size) % d.size
    elif d.static and d.size == 1:  # reflect of a single element repeats it
        c = idx(0)
    else:  # a run-time single element has period 1: every r is 0
        p = 2 * (d.size - 1) if d.static else maximum(2 * (d.size - 1), 1)
        r = (t + (d.before // p + 1) * p) % p
        c = Select(r < d.size, r, p - r)
    return c if d.static and not d.lo else c + d.lo


@lowers("Pad")
def lower_pad(ctx: LowerCtx) -> None:
    """Constant, reflect, edge and wrap padding; negative pads crop; pads, axes and the
    value may be read at run time (the output shape is static)."""
    mode = ctx.attrs.get("mode", "constant")
    if mode not in ("constant", "reflect", "edge", "wrap"):
        raise LoweringDeclined(f"Pad mode {mode!r}")
    dims = _pad_dims(ctx, mode)
    dtype = ctx.y(0).dtype
    if ctx.opset >= 11 and ctx.has(2) and prod(ctx.in_shape(2)):
        value = scalar_value(ctx, 2, dtype)
    else:
        value = literal(ctx.attrs.get("value", 0.0) if ctx.opset < 11 else 0, dtype)
    out_st = row_major_strides(tuple(d.out for d in dims))
    kb = ctx.kb
    work = prod([d.out for d in dims])
    if work == 0:
        return

    def level(k: int, dst: Expr, src: Expr) -> None:
        d = dims[k]
        last = k == len(dims) - 1
        if mode == "constant":
            kind = ctx.outer_kind(work) if k == 0 else "serial"
            _pad_constant_level(
                ctx, d, out_st[k], (dst, src), value, kind, None if last else partial(level, k + 1)
            )
            return
        if last:
            _pad_row(ctx, mode, d, dst, src)
            return
        kind = ctx.outer_kind(work) if k == 0 else "serial"
        with kb.loop(d.out, kind=kind) as o:
            s = kb.let(src + _source_coord(mode, o, d) * d.stride, "ps")
            level(k + 1, kb.let(dst + o * out_st[k], "pd"), s)

    level(0, idx(0), idx(0))


def _pad_constant_level(
    ctx: LowerCtx,
    d: _PadDim,
    ost: int,
    at: tuple[Expr, Expr],
    value: Expr,
    kind: str,
    inner: Callable[[Expr, Expr], None] | None,
) -> None:
    """Constant mode at one dim: fill the leading block, copy (innermost dim) or recurse
    (``inner``) over the middle, fill the tail."""
    kb = ctx.kb
    dst, src = at
    if not d.static or d.before:
        fill(ctx, ctx.y(0), dst, dst + d.before * ost, value, _most(d.before, d.out) * ost)
    if inner is None:
        if not d.static or d.size:
            base = d.lo - d.before
            width = ctx.vector_width(_most(d.size, d.out))
            with kb.loop(dst + d.mid, start=dst + d.before, kind="vector", width=width) as i:
                ctx.y(0)[i] = _as(ctx.x(0)[i - dst + src + base], ctx.y(0).dtype)
    elif not d.static or d.size:
        with kb.loop(d.mid, start=d.before, kind=kind) as o:
            inner(kb.let(dst + o * ost, "pd"), kb.let(src + (o - d.before + d.lo) * d.stride, "ps"))
    if not d.static or d.out > d.mid:
        tail = d.out - d.mid if d.static else d.out
        fill(ctx, ctx.y(0), dst + d.mid * ost, dst + d.out * ost, value, tail * ost)


def _most(v: Width, bound: int) -> int:
    """``v`` when it is known, else its upper ``bound`` (to pick a vector width)."""
    return v if isinstance(v, int) else bound


def _pad_row(ctx: LowerCtx, mode: str, d: _PadDim, dst: Expr, src: Expr) -> None:
    """Reflect/edge/wrap along the innermost dim: mapped edges, a contiguous middle."""
    kb, y, x = ctx.kb, ctx.y(0), ctx.x(0)
    segments = [(0, d.before), (d.before, d.mid), (d.mid, d.out)]
    for k, (a, b) in enumerate(segments):
        if d.static and b <= a:
            continue
        n = b - a if d.static else d.out
        with kb.loop(b, start=a, kind="vector", width=ctx.vector_width(n)) as o:
            c = (o - d.before + d.lo) if k == 1 else _source_coord(mode, o, d)
            y[dst + o] = _as(x[src + c], y.dtype)


# --------------------------------------------------------------------------- masks, generators
@lowers("Trilu")
def lower_trilu(ctx: LowerCtx) -> None:
    """Per row, a zero run and a copied run split at column ``row + k`` (clamped)."""
    shape = ctx.in_shape(0)
    if len(shape) < 2:
        raise LoweringDeclined("Trilu needs rank >= 2")
    expect_out(ctx, shape)
    rows, cols = shape[-2], shape[-1]
    batch = prod(shape[:-2])
    kb, y, x = ctx.kb, ctx.y(0), ctx.x(0)
    k = _as(scalar_value(ctx, 1, "i64"), "i64") if ctx.has(1) else idx(0)
    k = kb.let(minimum(maximum(k, -rows - 1), cols + 1), "k")
    zero = literal(0, y.dtype)
    width = ctx.vector_width(cols)
    if prod(shape) == 0:
        return
    with kb.loop(batch * rows, kind=ctx.outer_kind(prod(shape))) as t:
        r = kb.let(t % rows, "r")
        row = kb.let(t * cols, "row")
        if ctx.attrs.get("upper", 1):  # keep c >= r + k
            split = kb.let(minimum(maximum(r + k, 0), cols), "c")
            first, second = zero, None
        else:  # keep c <= r + k
            split = kb.let(minimum(maximum(r + k + 1, 0), cols), "c")
            first, second = None, zero
        for lo, hi, val in ((idx(0), split, first), (split, idx(cols), second)):
            with kb.loop(row + hi, start=row + lo, kind="vector", width=width) as i:
                y[i] = val if val is not None else x[i]


@lowers("ConstantOfShape")
def lower_constant_of_shape(ctx: LowerCtx) -> None:
    """Fill the (static) output shape with the ``value`` attribute (0.0 by default)."""
    value = ctx.attrs.value
    v = 0 if value is None else np.asarray(value).reshape(-1)[0]
    n = prod(ctx.out_shape(0))
    if n:
        fill(ctx, ctx.y(0), 0, n, literal(v, ctx.y(0).dtype), n)


@lowers("Range")
def lower_range(ctx: LowerCtx) -> None:
    """``start + i * delta`` over the static output length (start, delta read at run time)."""
    y = ctx.y(0)
    n = prod(ctx.out_shape(0))
    start = ctx.kb.let(scalar_value(ctx, 0, y.dtype), "st")
    delta = ctx.kb.let(scalar_value(ctx, 2, y.dtype), "dl")
    with ctx.kb.loop(n, kind="vector", width=ctx.vector_width(n)) as i:
        y[i] = start + _as(i, y.dtype) * delta


@lowers("Shape", "Size")
def lower_shape(ctx: LowerCtx) -> None:
    """Static shapes make these constants: store the values."""
    shape = ctx.in_shape(0)
    if ctx.node.op_type == "Size":
        values = [prod(shape)]
    else:
        rank = len(shape)
        start = _clamp_axis(ctx.attrs.get("start", 0), rank)
        end = rank if ctx.attrs.end is None else _clamp_axis(ctx.attrs.end, rank)
        values = list(shape[start:end])
    if len(values) != prod(ctx.out_shape(0)):
        raise LoweringDeclined("output size does not match the shape")
    y = ctx.y(0)
    for k, v in enumerate(values):
        y[k] = as_expr(int(v), y.dtype)


def _clamp_axis(i: int, rank: int) -> int:
    i = int(i) + rank if int(i) < 0 else int(i)
    return min(max(i, 0), rank)


__all__ = [
    "affine_copy",
    "const_ints",
    "expect_out",
    "fill",
    "literal",
    "norm_axis",
    "permute_copy",
    "input_values",
    "scalar_value",
    "slice_bounds",
    "strided_copy",
]
