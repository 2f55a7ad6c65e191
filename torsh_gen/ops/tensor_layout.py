"""Layout ops that move data without computing on it: Reshape, Flatten, Squeeze, Unsqueeze,
Transpose, Concat, Split, Slice, Expand, Tile, Pad, CenterCropPad, DepthToSpace, SpaceToDepth.

Several of these took their parameters as attributes in early opsets and as inputs later
(Reshape 5, Squeeze/Unsqueeze/Split 13, Slice 10, Pad 11, Tile 6): the later spec subclasses
the earlier one and only changes where the parameters come from.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from torsh_gen.ops.registry import FLOAT, INT, INTS, STRING, OpSpec, RunContext, op


def _ints(v: Any) -> list[int]:
    """A list of Python ints from an attribute list or an int64 tensor (None gives [])."""
    if v is None:
        return []
    return [int(i) for i in np.asarray(v).reshape(-1)]


def _axis(a: int, rank: int) -> int:
    """A non-negative axis from one that may count from the back."""
    if not -rank <= a < max(rank, 1):
        raise ValueError(f"axis {a} is out of range for rank {rank}")
    return a + rank if a < 0 else a


class _Movement(OpSpec):
    """Base of pure data movement ops: no arithmetic in the cost."""

    flops_per_element = 0


# --------------------------------------------------------------------------- Reshape
@op("Reshape", since=1)
class Reshape(_Movement):
    """New shape from the ``shape`` attribute; 0 copies the input dim, -1 is inferred."""

    attrs = {"shape": INTS()}

    def run(self, ctx: RunContext, x: np.ndarray, shape: Any = None) -> np.ndarray:
        return reshape(
            x, _ints(ctx.attrs.shape if shape is None else shape), ctx.attrs.allowzero or 0
        )


@op("Reshape", since=5)
class Reshape5(Reshape):
    """Shape as an input; ``allowzero`` (opset 14) makes 0 a literal zero-size dim."""

    attrs = {"allowzero": INT(0)}


def reshape(x: np.ndarray, shape: Sequence[int], allowzero: int = 0) -> np.ndarray:
    """``x`` reshaped with ONNX's 0 / -1 conventions."""
    dims = list(shape)
    if not allowzero:
        dims = [x.shape[i] if d == 0 and i < x.ndim else d for i, d in enumerate(dims)]
    return x.reshape(dims)


@op("Flatten", since=1)
class Flatten(_Movement):
    """2-D view: dims before ``axis`` become rows, the rest columns."""

    attrs = {"axis": INT(1)}

    def run(self, ctx: RunContext, x: np.ndarray) -> np.ndarray:
        axis = ctx.attrs.axis
        axis = axis + x.ndim if axis < 0 else axis
        rows = int(np.prod(x.shape[:axis], dtype=np.int64))
        cols = int(np.prod(x.shape[axis:], dtype=np.int64))
        return x.reshape(rows, cols)


# --------------------------------------------------------------------------- Squeeze/Unsqueeze
@op("Squeeze", since=1)
class Squeeze(_Movement):
    """Drop size-1 dims listed in ``axes`` (all size-1 dims when absent)."""

    attrs = {"axes": INTS()}

    def run(self, ctx: RunContext, x: np.ndarray, axes: Any = None) -> np.ndarray:
        ax = ctx.attrs.axes if axes is None else axes
        if not _ints(ax):
            return x.reshape([d for d in x.shape if d != 1])
        keep = set(_axis(a, x.ndim) for a in _ints(ax))
        return x.reshape([d for i, d in enumerate(x.shape) if i not in keep])


@op("Squeeze", since=13)
class Squeeze13(Squeeze):
    """Axes as an optional input."""

    attrs = {}


@op("Unsqueeze", since=1)
class Unsqueeze(_Movement):
    """Insert size-1 dims at ``axes`` (positions in the output)."""

    attrs = {"axes": INTS()}

    def run(self, ctx: RunContext, x: np.ndarray, axes: Any = None) -> np.ndarray:
        ax = _ints(ctx.attrs.axes if axes is None else axes)
        rank = x.ndim + len(ax)
        where = sorted(_axis(a, rank) for a in ax)
        dims = list(x.shape)
        for a in where:
            dims.insert(a, 1)
        return x.reshape(dims)


@op("Unsqueeze", since=13)
class Unsqueeze13(Unsqueeze):
    """Axes as an input."""

    attrs = {}


# --------------------------------------------------------------------------- Transpose, Concat
@op("Transpose", since=1)
class Transpose(_Movement):
    """Permute dims by ``perm`` (reversed by default)."""

    attrs = {"perm": INTS()}

    def run(self, ctx: RunContext, x: np.ndarray) -> np.ndarray:
        perm = ctx.attrs.perm
        perm = list(range(x.ndim))[::-1] if perm is None else [_axis(p, x.ndim) for p in perm]
        return np.ascontiguousarray(np.transpose(x, perm))


@op("Concat", since=1)
class Concat(_Movement):
    """Join inputs along ``axis`` (default 1 in opset 1, required from 4)."""

    attrs = {"axis": INT(1)}

    def run(self, ctx: RunContext, *xs: np.ndarray) -> np.ndarray:
        arrays = [np.asarray(x) for x in xs if x is not None]
        axis = _axis(int(ctx.attrs.axis), arrays[0].ndim)
        return np.concatenate(arrays, axis=axis)


# --------------------------------------------------------------------------- Split
@op("Split", since=1)
class Split(_Movement):
    """Split along ``axis`` by ``split`` sizes (input or attribute), else equal parts per output."""

    attrs = {"axis": INT(0), "split": INTS()}

    def sizes(self, ctx: RunContext, x: np.ndarray, axis: int, split: Any) -> list[int]:
        """Part sizes: the given ``split``, else equal parts, one per output."""
        given = _ints(split if split is not None else ctx.attrs.split)
        if given:
            return given
        n = ctx.n_outputs
        dim = x.shape[axis]
        if dim % n:
            raise ValueError(f"Split: dim {dim} does not split into {n} equal parts")
        return [dim // n] * n

    def run(self, ctx: RunContext, x: np.ndarray, split: Any = None) -> tuple[np.ndarray, ...]:
        axis = _axis(int(ctx.attrs.axis), x.ndim)
        sizes = self.sizes(ctx, x, axis, split)
        bounds = np.cumsum(sizes)[:-1]
        return tuple(np.ascontiguousarray(p) for p in np.split(x, bounds, axis=axis))


@op("Split", since=13)
class Split13(Split):
    """``split`` is an optional input."""

    attrs = {"axis": INT(0)}


@op("Split", since=18)
class Split18(Split13):
    """``num_outputs`` splits into parts of ceil(dim / n), the last one smaller."""

    attrs = {"axis": INT(0), "num_outputs": INT()}

    def sizes(self, ctx: RunContext, x: np.ndarray, axis: int, split: Any) -> list[int]:
        n = ctx.attrs.num_outputs
        if split is not None or n is None:
            return super().sizes(ctx, x, axis, split)
        dim = x.shape[axis]
        chunk = -(-dim // n)
        return [min(chunk, max(dim - i * chunk, 0)) for i in range(n)]


# --------------------------------------------------------------------------- Slice
@op("Slice", since=1)
class Slice(_Movement):
    """Slice with ``starts``/``ends``/``axes`` attributes; out-of-range bounds are clamped."""

    attrs = {"starts": INTS(), "ends": INTS(), "axes": INTS()}

    def run(self, ctx: RunContext, x: np.ndarray) -> np.ndarray:
        a = ctx.attrs
        return slice_array(x, _ints(a.starts), _ints(a.ends), a.axes and _ints(a.axes), None)


@op("Slice", since=10)
class Slice10(Slice):
    """Starts, ends, axes and steps as inputs; negative steps walk backwards."""

    attrs = {}

    def run(  # type: ignore[override]
        self,
        ctx: RunContext,
        x: np.ndarray,
        starts: np.ndarray,
        ends: np.ndarray,
        axes: np.ndarray | None = None,
        steps: np.ndarray | None = None,
    ) -> np.ndarray:
        ax = None if axes is None else _ints(axes)
        st = None if steps is None else _ints(steps)
        return slice_array(x, _ints(starts), _ints(ends), ax, st)


def slice_array(
    x: np.ndarray,
    starts: list[int],
    ends: list[int],
    axes: list[int] | None,
    steps: list[int] | None,
) -> np.ndarray:
    """ONNX Slice on ``x``: bounds clamped to [0, dim] (to [-1, dim-1] for negative steps)."""
    axes = list(range(len(starts))) if not axes else [_axis(a, x.ndim) for a in axes]
    steps = steps or [1] * len(starts)
    index: list[slice] = [slice(None)] * x.ndim
    for start, end, axis, step in zip(starts, ends, axes, steps):
        if step == 0:
            raise ValueError("Slice: steps must not be 0")
        dim = x.shape[axis]
        start = start + dim if start < 0 else start
        end = end + dim if end < 0 else end
        if step > 0:
            start, end = min(max(start, 0), dim), min(max(end, 0), dim)
            index[axis] = slice(start, end, step)
        else:
            start, end = min(max(start, -1), dim - 1), min(max(end, -1), dim - 1)
            index[axis] = (
                slice(start, None if end < 0 else end, step) if start >= 0 else slice(0, 0)
            )
    return np.ascontiguousarray(x[tuple(index)])


# --------------------------------------------------------------------------- Expand, Tile
@op("Expand", since=8)
class Expand(_Movement):
    """Broadcast to ``shape`` (numpy rules; the result may be larger than ``shape``)."""

    def run(self, ctx: RunContext, x: np.ndarray, shape: np.ndarray) -> np.ndarray:
        target = np.broadcast_shapes(x.shape, tuple(_ints(shape)))
        return np.array(np.broadcast_to(x, target))


@op("Tile", since=1)
class Tile(_Movement):
    """Opset 1: repeat ``tiles`` times along ``axis`` (both scalar inputs)."""

    def run(
        self, ctx: RunContext, x: np.ndarray, tiles: np.ndarray, axis: np.ndarray
    ) -> np.ndarray:
        reps = [1] * x.ndim
        reps[_axis(int(np.asarray(axis).reshape(-1)[0]), x.ndim)] = int(
            np.asarray(tiles).reshape(-1)[0]
        )
        return np.tile(x, reps)


@op("Tile", since=6)
class Tile6(Tile):
    """Repeat counts per dim as one input."""

    def run(self, ctx: RunContext, x: np.ndarray, repeats: np.ndarray, *_: Any) -> np.ndarray:
        return np.tile(x, _ints(repeats))


# --------------------------------------------------------------------------- Pad
@op("Pad", since=1)
class Pad(_Movement):
    """Pad with ``paddings``/``value`` attributes; modes constant, reflect, edge (and wrap)."""

    attrs = {"paddings": INTS(), "value": FLOAT(0.0), "mode": STRING("constant")}

    def run(
        self,
        ctx: RunContext,
        x: np.ndarray,
        pads: np.ndarray | None = None,
        constant_value: np.ndarray | None = None,
        axes: np.ndarray | None = None,
    ) -> np.ndarray:
        a = ctx.attrs
        widths = (
            _ints(pads) if pads is not None else _ints(a.pads if a.pads is not None else a.paddings)
        )
        if constant_value is not None and np.asarray(constant_value).size:
            value: Any = np.asarray(constant_value).reshape(-1)[0]
        else:
            value = a.value if a.value is not None else 0
        ax = None if axes is None else _ints(axes)
        return pad_array(x, widths, a.mode or "constant", value, ax)


@op("Pad", since=2)
class Pad2(Pad):
    """The attribute is named ``pads``."""

    attrs = {"pads": INTS(), "value": FLOAT(0.0), "mode": STRING("constant")}


@op("Pad", since=11)
class Pad11(Pad):
    """Pads, constant value and (opset 18) axes are inputs."""

    attrs = {"mode": STRING("constant")}


def pad_array(
    x: np.ndarray, pads: list[int], mode: str, value: Any = 0, axes: list[int] | None = None
) -> np.ndarray:
    """ONNX Pad: ``pads`` = begins then ends per axis; negative pads crop."""
    rank = x.ndim
    axes = list(range(rank)) if axes is None else [_axis(a, rank) for a in axes]
    n = len(axes)
    if len(pads) != 2 * n:
        raise ValueError(f"Pad: {len(pads)} pads for {n} axes (expected {2 * n})")
    before, after = [0] * rank, [0] * rank
    for i, a in enumerate(axes):
        before[a], after[a] = pads[i], pads[i + n]
    crop = tuple(slice(max(-b, 0), d - max(-e, 0)) for d, b, e in zip(x.shape, before, after))
    x = x[crop]
    widths = [(max(b, 0), max(e, 0)) for b, e in zip(before, after)]
    if mode == "constant":
        if x.dtype == object and value == 0:
            value = ""
        out = np.empty([d + b + e for d, (b, e) in zip(x.shape, widths)], dtype=x.dtype)
        out[...] = value
        out[tuple(slice(b, b + d) for d, (b, _) in zip(x.shape, widths))] = x
        return out
    if mode not in ("reflect", "edge", "wrap"):
        raise ValueError(f"Pad: unknown mode '{mode}' (expected constant, reflect, edge or wrap)")
    return np.pad(x, widths, mode=mode)


@op("CenterCropPad", since=18)
class CenterCropPad(_Movement):
    """Crop (start rounded down) or zero-pad (extra pixel on the right) to ``shape``."""

    attrs = {"axes": INTS()}

    def run(self, ctx: RunContext, x: np.ndarray, shape: np.ndarray) -> np.ndarray:
        target = _ints(shape)
        axes = ctx.attrs.axes
        axes = list(range(x.ndim)) if axes is None else [_axis(a, x.ndim) for a in axes]
        crop = [slice(None)] * x.ndim
        widths = [(0, 0)] * x.ndim
        for a, t in zip(axes, target):
            d = x.shape[a]
            if t < d:
                start = (d - t) // 2
                crop[a] = slice(start, start + t)
            elif t > d:
                widths[a] = ((t - d) // 2, t - d - (t - d) // 2)
        return np.pad(x[tuple(crop)], widths, mode="constant")


# --------------------------------------------------------------------------- depth <-> space
@op("DepthToSpace", since=1)
class DepthToSpace(_Movement):
    """Move channel blocks into b x b spatial blocks, DCR (default) or CRD order."""

    attrs = {"blocksize": INT(required=True), "mode": STRING("DCR")}

    def run(self, ctx: RunContext, x: np.ndarray) -> np.ndarray:
        b = int(ctx.attrs.blocksize)
        n, c, h, w = x.shape
        if ctx.attrs.mode == "CRD":
            t = x.reshape(n, c // (b * b), b, b, h, w).transpose(0, 1, 4, 2, 5, 3)
        else:
            t = x.reshape(n, b, b, c // (b * b), h, w).transpose(0, 3, 4, 1, 5, 2)
        return np.ascontiguousarray(t).reshape(n, c // (b * b), h * b, w * b)


@op("SpaceToDepth", since=1)
class SpaceToDepth(_Movement):
    """Inverse of DepthToSpace: b x b spatial blocks become channels, DCR or CRD (opset 28)."""

    attrs = {"blocksize": INT(required=True), "mode": STRING("DCR")}

    def run(self, ctx: RunContext, x: np.ndarray) -> np.ndarray:
        b = int(ctx.attrs.blocksize)
        n, c, h, w = x.shape
        t = x.reshape(n, c, h // b, b, w // b, b)
        order = (0, 1, 3, 5, 2, 4) if ctx.attrs.mode == "CRD" else (0, 3, 5, 1, 2, 4)
        return np.ascontiguousarray(t.transpose(order)).reshape(n, c * b * b, h // b, w // b)
