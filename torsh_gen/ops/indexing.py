"""Indexing ops: gathers, scatters, selection, sorting-like ops, cumulative ops, masks.

Negative indices count from the end of the indexed axis (ONNX allows them from opset 11 on,
earlier models never contain them, so one kernel serves every version). Kernels that index
normalise them with ``_wrap`` first. Ties in TopK, ArgMax/ArgMin and Hardmax resolve to the
lower index (or the last one where ``select_last_index`` asks), as the spec requires.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from torsh_gen.ops.registry import INT, STRING, Attrs, OpSpec, RunContext, op

# --------------------------------------------------------------------------- output bounds
#: What ``output_bounds`` gives per output: the largest shape the output can have (a
#: native target allocates that much) and the dims whose actual size depends on the data
#: (empty: the output's shape is exactly the bound).
OutputBound = tuple[tuple[int, ...], tuple[int, ...]]


# --------------------------------------------------------------------------- helpers
def _wrap(indices: np.ndarray, size: Any) -> np.ndarray:
    """Indices as int64 with negative ones counted from the end of an axis of ``size``."""
    idx = np.asarray(indices).astype(np.int64)
    return np.where(idx < 0, idx + size, idx)


def _axis(axis: int, rank: int) -> int:
    """``axis`` normalised into [0, rank)."""
    a = int(axis)
    if not -rank <= a < max(rank, 1):
        raise ValueError(f"axis {a} out of range for rank {rank}")
    return a + rank if a < 0 else a


def _scalar(x: np.ndarray) -> int:
    """The single value of a scalar or one-element tensor as a Python int."""
    return int(np.asarray(x).reshape(-1)[0])


def _sort_key(x: np.ndarray) -> np.ndarray:
    """``x`` in a dtype numpy can sort (ml_dtypes' bfloat16 and float8 become float32)."""
    return x.astype(np.float32) if x.dtype.kind == "V" else x


# --------------------------------------------------------------------------- gathers
@op("Gather", since=1)
class Gather(OpSpec):
    """Take slices along ``axis`` at the given (possibly negative) indices."""

    attrs = {"axis": INT(0)}
    flops_per_element = 0

    def run(self, ctx: RunContext, data: np.ndarray, indices: np.ndarray) -> np.ndarray:
        axis = _axis(ctx.attrs.axis, data.ndim)
        return np.take(data, _wrap(indices, data.shape[axis]), axis=axis)


@op("GatherElements", since=11)
class GatherElements(OpSpec):
    """Element-wise gather: ``out[i][j] = data[indices[i][j]][j]`` for axis 0."""

    attrs = {"axis": INT(0)}
    flops_per_element = 0

    def run(self, ctx: RunContext, data: np.ndarray, indices: np.ndarray) -> np.ndarray:
        axis = _axis(ctx.attrs.axis, data.ndim)
        return np.take_along_axis(data, _wrap(indices, data.shape[axis]), axis=axis)


def _nd_index(data_shape: tuple[int, ...], indices: np.ndarray, batch_dims: int) -> tuple:
    """The fancy-index tuple that GatherND/ScatterND address, leading batch dims included.

    ``data`` must be reshaped to ``(prod(batch), *data_shape[batch_dims:])`` and ``indices``
    to ``(prod(batch), ..., m)`` by the caller; the tuple indexes that reshaped data.
    """
    nb = indices.shape[0]
    m = indices.shape[-1]
    inner = data_shape[batch_dims : batch_dims + m]
    idx = _wrap(indices, np.asarray(inner, dtype=np.int64))
    batch = np.arange(nb, dtype=np.int64).reshape((nb,) + (1,) * (indices.ndim - 2))
    return (batch,) + tuple(idx[..., j] for j in range(m))


@op("GatherND", since=11)
class GatherND(OpSpec):
    """Gather slices addressed by the last dimension of ``indices``, after ``batch_dims``."""

    attrs = {"batch_dims": INT(0)}
    flops_per_element = 0

    def run(self, ctx: RunContext, data: np.ndarray, indices: np.ndarray) -> np.ndarray:
        b = int(ctx.attrs.batch_dims)
        batch_shape = data.shape[:b]
        nb = int(np.prod(batch_shape, dtype=np.int64))
        m = indices.shape[-1]
        d = data.reshape((nb,) + data.shape[b:])
        idx = indices.reshape((nb,) + indices.shape[b:])
        out = d[_nd_index(data.shape, idx, b)]
        return out.reshape(batch_shape + indices.shape[b:-1] + data.shape[b + m :])


# --------------------------------------------------------------------------- scatters
_REDUCE_AT: dict[str, Callable[..., None]] = {
    "add": np.add.at,
    "mul": np.multiply.at,
    "max": np.maximum.at,
    "min": np.minimum.at,
}


def _scatter_into(out: np.ndarray, index: tuple, updates: np.ndarray, reduction: str) -> None:
    """Write ``updates`` at ``out[index]``, combining with ``reduction`` ("none" replaces)."""
    updates = updates.astype(out.dtype, copy=False)
    if reduction == "none":
        out[index] = updates
    elif reduction in _REDUCE_AT:
        _REDUCE_AT[reduction](out, index, updates)
    else:
        raise ValueError(f"unknown reduction '{reduction}'")


@op("ScatterElements", since=11)
class ScatterElements(OpSpec):
    """Element-wise scatter along ``axis``; ``reduction`` combines duplicates (opset 16+)."""

    attrs = {"axis": INT(0), "reduction": STRING("none")}
    flops_per_element = 0

    def run(
        self, ctx: RunContext, data: np.ndarray, indices: np.ndarray, updates: np.ndarray
    ) -> np.ndarray:
        axis = _axis(ctx.attrs.axis, data.ndim)
        out = data.copy()
        if indices.size == 0:
            return out
        grid = list(np.indices(indices.shape, sparse=True))
        grid[axis] = _wrap(indices, data.shape[axis])
        _scatter_into(out, tuple(grid), updates, ctx.attrs.get("reduction", "none"))
        return out


@op("Scatter", since=9)
class Scatter(ScatterElements):
    """The deprecated name of ScatterElements without reduction (opsets 9 to 10)."""

    attrs = {"axis": INT(0)}


@op("ScatterND", since=11)
class ScatterND(OpSpec):
    """Scatter slices addressed by the last dimension of ``indices``; optional reduction."""

    attrs = {"reduction": STRING("none")}
    flops_per_element = 0

    def run(
        self, ctx: RunContext, data: np.ndarray, indices: np.ndarray, updates: np.ndarray
    ) -> np.ndarray:
        out = data.copy()
        if indices.size == 0:
            return out
        idx = indices.reshape((1,) + indices.shape)
        index = _nd_index(data.shape, idx, 0)[1:]
        _scatter_into(out, index, updates, ctx.attrs.get("reduction", "none"))
        return out


@op("TensorScatter", since=24)
class TensorScatter(OpSpec):
    """KV-cache update: write ``update`` into the cache at per-batch positions along ``axis``."""

    attrs = {"mode": STRING("linear"), "axis": INT(-2)}
    flops_per_element = 0

    def run(
        self,
        ctx: RunContext,
        past: np.ndarray,
        update: np.ndarray,
        write_indices: np.ndarray | None = None,
    ) -> np.ndarray:
        axis = _axis(ctx.attrs.axis, past.ndim)
        if axis == 0:
            raise ValueError("TensorScatter: axis must not be the batch axis 0")
        out = past.copy()
        max_len, seq_len = past.shape[axis], update.shape[axis]
        circular = ctx.attrs.mode == "circular"
        for b in range(past.shape[0]):
            start = 0 if write_indices is None else int(write_indices[b])
            pos = np.arange(start, start + seq_len)
            if circular:
                pos = pos % max_len
            dst = np.moveaxis(out[b], axis - 1, 0)  # a view: writes land in ``out``
            dst[pos] = np.moveaxis(update[b], axis - 1, 0)
        return out


# --------------------------------------------------------------------------- selection
@op("OneHot", since=9)
class OneHot(OpSpec):
    """One-hot encoding; indices outside [-depth, depth-1] give an all-off row."""

    attrs = {"axis": INT(-1)}
    flops_per_element = 0

    def run(
        self, ctx: RunContext, indices: np.ndarray, depth: np.ndarray, values: np.ndarray
    ) -> np.ndarray:
        n = int(np.asarray(depth).reshape(-1)[0])
        axis = _axis(ctx.attrs.axis, indices.ndim + 1)
        idx = _wrap(indices, n)
        hot = idx[..., None] == np.arange(n, dtype=np.int64)
        off, on = values.reshape(-1)[0], values.reshape(-1)[1]
        out = np.where(hot, on, off).astype(values.dtype)
        return np.moveaxis(out, -1, axis)


@op("Compress", since=9)
class Compress(OpSpec):
    """Keep the slices along ``axis`` (or elements of the flattened input) where condition."""

    attrs = {"axis": INT()}
    flops_per_element = 0

    def run(self, ctx: RunContext, x: np.ndarray, condition: np.ndarray) -> np.ndarray:
        cond = condition.astype(bool).reshape(-1)
        if ctx.attrs.axis is None:
            return np.compress(cond, x.reshape(-1))
        return np.compress(cond, x, axis=_axis(ctx.attrs.axis, x.ndim))

    def output_bounds(
        self, attrs: Attrs, shapes: list[tuple[int, ...]], values: list[np.ndarray | None]
    ) -> list[OutputBound]:
        """The kept slices are at most the condition's length and the axis (or element
        count); a constant condition gives the exact shape."""
        x, n_cond = tuple(shapes[0]), math.prod(shapes[1])
        axis = 0 if attrs.axis is None else _axis(attrs.axis, len(x))
        if attrs.axis is None:
            x = (math.prod(x),)
        kept: int | None = None
        if len(values) > 1 and values[1] is not None:
            kept = int(np.count_nonzero(np.asarray(values[1]).reshape(-1)[: x[axis]]))
        size = min(x[axis], n_cond) if kept is None else kept
        return [(x[:axis] + (size,) + x[axis + 1 :], (axis,) if kept is None else ())]


@op("NonZero", since=9)
class NonZero(OpSpec):
    """Indices of the non-zero elements, one row per dimension (int64, shape [rank, n])."""

    def run(self, ctx: RunContext, x: np.ndarray) -> np.ndarray:
        if x.ndim == 0:
            return np.zeros((0, int(bool(x))), dtype=np.int64)
        nz = np.nonzero(_sort_key(x))
        return np.array(nz, dtype=np.int64).reshape(x.ndim, -1)

    def output_bounds(
        self, attrs: Attrs, shapes: list[tuple[int, ...]], values: list[np.ndarray | None]
    ) -> list[OutputBound]:
        """At most every element is non-zero: ``[rank, numel]``."""
        x = tuple(shapes[0])
        return [((len(x), math.prod(x)), (1,))]


@op("ReverseSequence", since=10)
class ReverseSequence(OpSpec):
    """Reverse the first ``sequence_lens[b]`` steps along ``time_axis`` of each batch entry."""

    attrs = {"batch_axis": INT(1), "time_axis": INT(0)}
    flops_per_element = 0

    def run(self, ctx: RunContext, x: np.ndarray, lens: np.ndarray) -> np.ndarray:
        b_ax = _axis(ctx.attrs.batch_axis, x.ndim)
        t_ax = _axis(ctx.attrs.time_axis, x.ndim)
        out = x.copy()
        src = np.moveaxis(x, (b_ax, t_ax), (0, 1))
        dst = np.moveaxis(out, (b_ax, t_ax), (0, 1))  # a view: writes land in ``out``
        for b, n in enumerate(np.asarray(lens).reshape(-1)):
            n = int(n)
            dst[b, :n] = src[b, :n][::-1]
        return out


# --------------------------------------------------------------------------- unique
def _first_occurrence_order(
    rows: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sorted-unique analysis of ``rows`` (n, m): first indices, inverse, counts."""
    n = rows.shape[0]
    if n == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    keys = _sort_key(rows)
    # Lexicographic stable sort of the rows: the last key passed to lexsort is primary.
    order = np.lexsort(tuple(keys[:, j] for j in range(keys.shape[1] - 1, -1, -1)))
    sk = keys[order]
    new = np.ones(n, dtype=bool)
    if keys.shape[1]:
        new[1:] = np.any(sk[1:] != sk[:-1], axis=1)
    else:
        new[1:] = False
    group = np.cumsum(new) - 1
    starts = np.flatnonzero(new)
    first = order[starts].astype(np.int64)  # stable sort: the first of each group is earliest
    inverse = np.empty(n, dtype=np.int64)
    inverse[order] = group
    counts = np.diff(np.append(starts, n)).astype(np.int64)
    return first, inverse, counts


@op("Unique", since=11)
class Unique(OpSpec):
    """Unique elements (or slices along ``axis``), sorted or in first-occurrence order."""

    attrs = {"axis": INT(), "sorted": INT(1)}
    flops_per_element = 0

    def run(self, ctx: RunContext, x: np.ndarray) -> tuple[np.ndarray, ...]:
        if ctx.attrs.axis is None:
            axis, moved = 0, x.reshape(-1)
        else:
            axis = _axis(ctx.attrs.axis, x.ndim)
            moved = np.moveaxis(x, axis, 0)
        rows = moved.reshape(moved.shape[0], -1)
        first, inverse, counts = _first_occurrence_order(rows)
        if not ctx.attrs.sorted:
            perm = np.argsort(first, kind="stable")
            rank = np.empty_like(perm)
            rank[perm] = np.arange(perm.size)
            first, counts, inverse = first[perm], counts[perm], rank[inverse]
        y = np.take(x.reshape(-1) if ctx.attrs.axis is None else x, first, axis=axis)
        outs = (y, first, inverse.astype(np.int64), counts)
        return outs[: max(ctx.n_outputs, 1)]

    def output_bounds(
        self, attrs: Attrs, shapes: list[tuple[int, ...]], values: list[np.ndarray | None]
    ) -> list[OutputBound]:
        """At most every element (or slice along ``axis``) is unique; ``inverse_indices``
        has one entry per element (slice) whatever the data."""
        x = tuple(shapes[0])
        if attrs.axis is None:
            n = math.prod(x)
            return [((n,), (0,)), ((n,), (0,)), ((n,), ()), ((n,), (0,))]
        axis = _axis(attrs.axis, len(x))
        n = x[axis]
        return [(x, (axis,)), ((n,), (0,)), ((n,), ()), ((n,), (0,))]


# --------------------------------------------------------------------------- sorting
def _stable_order(x: np.ndarray, axis: int, descending: bool) -> np.ndarray:
    """Argsort along ``axis``; equal values keep ascending index order either way."""
    keys = _sort_key(x)
    if not descending:
        return np.argsort(keys, axis=axis, kind="stable")
    n = x.shape[axis]
    rev = np.argsort(np.flip(keys, axis=axis), axis=axis, kind="stable")
    return (n - 1 - np.flip(rev, axis=axis)).astype(np.int64)


@op("TopK", since=1)
class TopK1(OpSpec):
    """TopK with ``k`` as an attribute (opsets 1 to 9); always the largest, sorted."""

    attrs = {"axis": INT(-1), "k": INT(required=True)}

    def k_of(self, ctx: RunContext, k: np.ndarray | None) -> int:
        return int(ctx.attrs.k)

    def run(
        self, ctx: RunContext, x: np.ndarray, k: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        axis = _axis(ctx.attrs.axis, x.ndim)
        kk = self.k_of(ctx, k)
        if not 0 <= kk <= x.shape[axis]:
            raise ValueError(f"TopK: k={kk} out of range for axis of size {x.shape[axis]}")
        largest = bool(ctx.attrs.get("largest", 1))
        order = _stable_order(x, axis, largest)
        idx = np.take(order, np.arange(kk), axis=axis).astype(np.int64)
        return np.take_along_axis(x, idx, axis=axis), idx


@op("TopK", since=10)
class TopK10(TopK1):
    """TopK with ``k`` as a one-element input tensor (opset 10 on)."""

    attrs = {"axis": INT(-1)}

    def k_of(self, ctx: RunContext, k: np.ndarray | None) -> int:
        if k is None:
            raise ValueError("TopK: input 'K' is required")
        return _scalar(k)


@op("TopK", since=11)
class TopK11(TopK10):
    """TopK with ``largest`` and ``sorted`` (opset 11 on); unsorted output is sorted anyway."""

    attrs = {"axis": INT(-1), "largest": INT(1), "sorted": INT(1)}


class _ArgBase(OpSpec):
    """ArgMax/ArgMin: first (or last, with select_last_index) extreme index along ``axis``."""

    attrs = {"axis": INT(0), "keepdims": INT(1), "select_last_index": INT(0)}
    find: Callable[..., np.ndarray] = staticmethod(np.argmax)

    def run(self, ctx: RunContext, x: np.ndarray) -> np.ndarray:
        axis = _axis(ctx.attrs.axis, x.ndim)
        keys = _sort_key(x)
        find = type(self).find
        if ctx.attrs.select_last_index:
            idx = x.shape[axis] - 1 - find(np.flip(keys, axis=axis), axis=axis)
        else:
            idx = find(keys, axis=axis)
        idx = np.asarray(idx, dtype=np.int64)
        return np.expand_dims(idx, axis) if ctx.attrs.keepdims else idx


@op("ArgMax", since=1)
class ArgMax(_ArgBase):
    find = staticmethod(np.argmax)


@op("ArgMin", since=1)
class ArgMin(_ArgBase):
    find = staticmethod(np.argmin)


@op("Hardmax", since=1)
class Hardmax1(OpSpec):
    """Hardmax before opset 13: the input is coerced to 2-D at ``axis`` (default 1)."""

    attrs = {"axis": INT(1)}

    def run(self, ctx: RunContext, x: np.ndarray) -> np.ndarray:
        axis = _axis(ctx.attrs.axis, x.ndim) if x.ndim else 0
        outer = int(np.prod(x.shape[:axis], dtype=np.int64))
        flat = x.reshape(outer, -1)
        return _hardmax_last(flat).reshape(x.shape)


@op("Hardmax", since=13)
class Hardmax13(Hardmax1):
    """Hardmax from opset 13: one-hot of the first maximum along ``axis`` (default -1)."""

    attrs = {"axis": INT(-1)}

    def run(self, ctx: RunContext, x: np.ndarray) -> np.ndarray:
        axis = _axis(ctx.attrs.axis, x.ndim)
        return np.moveaxis(_hardmax_last(np.moveaxis(x, axis, -1)), -1, axis)


def _hardmax_last(x: np.ndarray) -> np.ndarray:
    """One-hot of the first maximum along the last axis, in ``x``'s dtype."""
    out = np.zeros(x.shape, dtype=x.dtype)
    if x.size == 0:
        return out
    idx = np.argmax(_sort_key(x), axis=-1)
    np.put_along_axis(out, idx[..., None], np.ones((), dtype=x.dtype), axis=-1)
    return out


# --------------------------------------------------------------------------- cumulative
class _Cumulative(OpSpec):
    """CumSum/CumProd along an axis given as an input; ``exclusive`` and ``reverse``."""

    attrs = {"exclusive": INT(0), "reverse": INT(0)}
    accumulate: Callable[..., np.ndarray] = staticmethod(np.cumsum)
    identity: int = 0

    def run(self, ctx: RunContext, x: np.ndarray, axis: np.ndarray) -> np.ndarray:
        ax = _axis(_scalar(axis), x.ndim)
        y = np.flip(x, axis=ax) if ctx.attrs.reverse else x
        acc = type(self).accumulate(y, axis=ax, dtype=x.dtype)
        if ctx.attrs.exclusive and x.shape[ax]:
            head = np.full_like(np.take(acc, [0], axis=ax), type(self).identity)
            acc = np.concatenate([head, np.take(acc, np.arange(x.shape[ax] - 1), axis=ax)], ax)
        if ctx.attrs.reverse:
            acc = np.flip(acc, axis=ax)
        return np.ascontiguousarray(acc).astype(x.dtype, copy=False)


@op("CumSum", since=11)
class CumSum(_Cumulative):
    accumulate = staticmethod(np.cumsum)
    identity = 0


@op("CumProd", since=26)
class CumProd(_Cumulative):
    accumulate = staticmethod(np.cumprod)
    identity = 1


# --------------------------------------------------------------------------- masks
@op("Trilu", since=14)
class Trilu(OpSpec):
    """Keep the upper (or lower) triangle of the last two dims, offset by diagonal ``k``."""

    attrs = {"upper": INT(1)}
    flops_per_element = 0

    def run(self, ctx: RunContext, x: np.ndarray, k: np.ndarray | None = None) -> np.ndarray:
        kk = 0 if k is None else _scalar(k)
        rows, cols = x.shape[-2], x.shape[-1]
        r = np.arange(rows, dtype=np.int64)[:, None]
        c = np.arange(cols, dtype=np.int64)[None, :]
        keep = (c - r >= kk) if ctx.attrs.upper else (c - r <= kk)
        return np.where(keep, x, np.zeros((), dtype=x.dtype)).astype(x.dtype, copy=False)
