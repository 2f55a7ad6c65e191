"""Resampling: Resize, Upsample, GridSample, AffineGrid, RoiAlign, NonMaxSuppression.

Resize is separable: each resized axis maps its output coordinates back to input ones
(``_source_coords``), turns them into a few (index, weight) taps per output position
(``_taps``: nearest, linear, cubic, optionally antialiased), and is gathered and summed in
one vectorized step (``_apply_taps``). GridSample does the same per spatial axis of the
grid and multiplies the taps of all axes together. RoiAlign and NonMaxSuppression loop
over regions/boxes only; each region's samples are vectorized.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np

from torsh_gen.ops.registry import FLOAT, FLOATS, INT, INTS, STRING, Attrs, OpSpec, RunContext, op


# --------------------------------------------------------------------------- shared helpers
def _cast_back(y: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Cast a float64 result to ``dtype``, truncating and saturating integers (as onnxruntime)."""
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return np.clip(y, info.min, info.max).astype(dtype)
    return y.astype(dtype, copy=False)


def _cubic_weight(t: np.ndarray, a: float) -> np.ndarray:
    """Keys' cubic convolution kernel with coefficient ``a``."""
    t = np.abs(t)
    near = ((a + 2) * t - (a + 3)) * t * t + 1
    far = ((a * t - 5 * a) * t + 8 * a) * t - 4 * a
    return np.where(t <= 1, near, np.where(t < 2, far, 0.0))


def _round_nearest(x: np.ndarray, mode: str) -> np.ndarray:
    """Nearest-pixel rounding per Resize's nearest_mode."""
    if mode == "round_prefer_ceil":
        return np.floor(x + 0.5)
    if mode == "floor":
        return np.floor(x)
    if mode == "ceil":
        return np.ceil(x)
    return np.ceil(x - 0.5)  # round_prefer_floor


def _taps(
    x: np.ndarray,
    size: int,
    mode: str,
    scale: float,
    cubic_a: float,
    antialias: bool,
    exclude: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """(indices, weights), both (len(x), taps), of linear or cubic interpolation at ``x``."""
    support = 1.0 if mode == "linear" else 2.0
    s = min(scale, 1.0) if antialias else 1.0
    start = int(math.floor(-support / s)) + 1
    offsets = np.arange(start, 1 - start + 1)
    base = np.ceil(x) - 1  # the left neighbour, so that ratio = x - base is in (0, 1]
    idx = base[:, None].astype(np.int64) + offsets[None, :]
    t = (offsets[None, :] - (x - base)[:, None]) * s
    w = np.clip(1 - np.abs(t), 0, 1) if mode == "linear" else _cubic_weight(t, cubic_a)
    if exclude:
        w = np.where((idx < 0) | (idx >= size), 0.0, w)
    total = w.sum(axis=1, keepdims=True)
    w = w / np.where(total == 0, 1.0, total)
    return np.clip(idx, 0, size - 1), w


def _apply_taps(data: np.ndarray, axis: int, idx: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Gather ``data`` at idx (out, taps) along ``axis`` and sum with weights ``w``."""
    out, n = idx.shape
    g = np.take(data, idx.reshape(-1), axis=axis)
    g = g.reshape(data.shape[:axis] + (out, n) + data.shape[axis + 1 :])
    wshape = (1,) * axis + (out, n) + (1,) * (data.ndim - axis - 1)
    return (g * w.reshape(wshape)).sum(axis=axis + 1)


def _source_coords(
    mode: str, out: int, size: int, scale: float, roi: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray | None]:
    """Input coordinates of output positions 0..out-1, and the tf_crop_and_resize outside mask.

    Computed in float32 like onnxruntime, so that nearest-pixel ties round the same way.
    """
    f = np.float32
    y = np.arange(out, dtype=f)
    sc, n, half = f(scale), f(size), f(0.5)
    if mode == "asymmetric":
        x = y / sc
    elif mode == "align_corners":
        width = sc * n  # the fractional output length the scale asks for, as onnx's reference
        x = np.zeros_like(y) if width == 1 else y * (n - 1) / (width - 1)
    elif mode == "pytorch_half_pixel":
        x = np.zeros_like(y) if out <= 1 else (y + half) / sc - half
    elif mode == "tf_half_pixel_for_nn":
        x = (y + half) / sc
    elif mode == "half_pixel_symmetric":
        offset = n / 2 * (1 - f(out) / (sc * n))
        x = offset + (y + half) / sc - half
    elif mode == "tf_crop_and_resize":
        a, b = f(roi[0]), f(roi[1])
        width = sc * n
        if width == 1:
            x = np.full_like(y, (b - a) * (n - 1) / 2 + a * (n - 1))
        else:
            x = y * (b - a) * (n - 1) / (width - 1) + a * (n - 1)
        x = x.astype(np.float64)
        return x, (x < 0) | (x > size - 1)
    else:  # half_pixel
        x = (y + half) / sc - half
    return x.astype(np.float64), None


def resample(
    x: np.ndarray,
    scales: list[float],
    out_shape: list[int],
    attrs: Any,
    roi: np.ndarray | None = None,
    simple_nearest: bool = False,
) -> np.ndarray:
    """Separable N-d resampling of ``x`` to ``out_shape`` under Resize's attributes."""
    a = attrs
    mode = a.get("mode", "nearest")
    ctm = a.get("coordinate_transformation_mode", "half_pixel")
    r = x.ndim
    nearest = mode == "nearest"
    y = x if nearest else x.astype(np.float64)
    for axis in range(r):
        size, out, scale = x.shape[axis], out_shape[axis], scales[axis]
        span = (
            (0.0, 1.0)
            if roi is None or roi.size < 2 * r
            else (float(roi[axis]), float(roi[axis + r]))
        )
        if out == size and scale == 1.0 and (ctm != "tf_crop_and_resize" or span == (0.0, 1.0)):
            continue
        coords, outside = _source_coords(ctm, out, size, scale, span)
        if nearest:
            if simple_nearest:  # opset-10 Resize / Upsample: truncate, or ceil when shrinking
                near = np.ceil(coords) if scale < 1 else np.floor(coords)
            else:
                near = _round_nearest(coords, a.get("nearest_mode", "round_prefer_floor"))
            y = np.take(y, np.clip(near, 0, size - 1).astype(np.int64), axis=axis)
        else:
            if mode == "linear" and not a.get("antialias", 0):
                coords = np.clip(coords, 0, size - 1)
            idx, w = _taps(
                coords,
                size,
                mode,
                scale,
                a.get("cubic_coeff_a", -0.75),
                bool(a.get("antialias", 0)),
                bool(a.get("exclude_outside", 0)),
            )
            y = _apply_taps(y, axis, idx, w)
        if outside is not None and outside.any():
            y = y.astype(np.float64) if nearest else y
            mask = outside.reshape((1,) * axis + (out,) + (1,) * (r - axis - 1))
            y = np.where(mask, a.get("extrapolation_value", 0.0), y)
    return _cast_back(np.asarray(y), x.dtype) if y.dtype != x.dtype else y


# --------------------------------------------------------------------------- Resize / Upsample
_RESIZE_ATTRS = {
    "antialias": INT(0),
    "axes": INTS(),
    "coordinate_transformation_mode": STRING("half_pixel"),
    "cubic_coeff_a": FLOAT(-0.75),
    "exclude_outside": INT(0),
    "extrapolation_value": FLOAT(0.0),
    "keep_aspect_ratio_policy": STRING("stretch"),
    "mode": STRING("nearest"),
    "nearest_mode": STRING("round_prefer_floor"),
}


class _Dict(dict):
    """A dict read like ``Attrs`` (``get`` with a default)."""


@op("Resize", since=10)
class Resize10(OpSpec):
    """Opset-10 Resize: inputs (X, scales), asymmetric coordinates, nearest or linear."""

    attrs = {"mode": STRING("nearest")}
    flops_per_element = 4

    def run(self, ctx: RunContext, x: np.ndarray, scales: np.ndarray) -> np.ndarray:
        sc = [float(v) for v in scales]
        out = [int(math.floor(d * s)) for d, s in zip(x.shape, sc)]
        attrs = {"mode": ctx.attrs.mode, "coordinate_transformation_mode": "asymmetric"}
        return resample(x, sc, out, _Dict(attrs), simple_nearest=True)


@op("Resize", since=11)
class Resize(Resize10):
    """Resize from opset 11: (X, roi, scales, sizes), every coordinate mode, axes, antialias."""

    attrs = dict(_RESIZE_ATTRS)

    def run(  # type: ignore[override]
        self,
        ctx: RunContext,
        x: np.ndarray,
        roi: np.ndarray | None = None,
        scales: np.ndarray | None = None,
        sizes: np.ndarray | None = None,
    ) -> np.ndarray:
        a = ctx.attrs
        r = x.ndim
        axes = [int(v) % r for v in (a.axes or range(r))]
        full_scales = [1.0] * r
        out = list(x.shape)
        if sizes is not None and sizes.size:
            want = [int(v) for v in sizes]
            ratios = [w / x.shape[ax] for w, ax in zip(want, axes)]
            policy = a.keep_aspect_ratio_policy
            if policy in ("not_larger", "not_smaller"):
                common = min(ratios) if policy == "not_larger" else max(ratios)
                ratios = [common] * len(axes)
                want = [int(math.floor(common * x.shape[ax] + 0.5)) for ax in axes]
            for ax, w, s in zip(axes, want, ratios):
                out[ax], full_scales[ax] = w, s
        else:
            for ax, s in zip(axes, [float(v) for v in scales]):
                full_scales[ax] = s
                out[ax] = int(math.floor(x.shape[ax] * s))
        full_roi = None
        if roi is not None and roi.size:
            starts, ends = [0.0] * r, [1.0] * r
            k = len(axes)
            for i, ax in enumerate(axes):
                starts[ax], ends[ax] = float(roi[i]), float(roi[i + k])
            full_roi = np.array(starts + ends)
        return resample(x, full_scales, out, a, full_roi)


@op("Upsample", since=7)
class Upsample(OpSpec):
    """Upsample (opset 7, scales attribute): nearest or linear with asymmetric coordinates."""

    attrs = {"mode": STRING("nearest"), "scales": FLOATS()}
    flops_per_element = 4

    def run(self, ctx: RunContext, x: np.ndarray, scales: np.ndarray | None = None) -> np.ndarray:
        sc = [float(v) for v in (ctx.attrs.scales if scales is None else scales)]
        out = [int(math.floor(d * s)) for d, s in zip(x.shape, sc)]
        mode = "linear" if ctx.attrs.mode in ("linear", "bilinear") else "nearest"
        attrs = {"mode": mode, "coordinate_transformation_mode": "asymmetric"}
        return resample(x, sc, out, _Dict(attrs), simple_nearest=True)


@op("Upsample", since=9)
class Upsample9(Upsample):
    """Upsample from opset 9: the scales are the second input."""

    attrs = {"mode": STRING("nearest")}


# --------------------------------------------------------------------------- GridSample
def _reflect(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Reflect coordinates off [lo, hi] until they fall inside."""
    rng = hi - lo
    if rng <= 0:
        return np.full_like(x, lo)
    below = x < lo
    d = np.where(below, lo - x, x - hi)
    n = np.floor(d / rng)
    rem = d - n * rng
    even = n % 2 == 0
    low_side = np.where(even, lo + rem, hi - rem)
    high_side = np.where(even, hi - rem, lo + rem)
    return np.where(below, low_side, np.where(x > hi, high_side, x))


def _grid_taps(
    coord: np.ndarray, size: int, mode: str, padding: str, lo: float, hi: float
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(index, weight) taps along one axis; index -1 marks a zero-padded tap."""
    if mode == "nearest":
        base, offsets, ws = np.rint(coord), [0], [np.ones_like(coord)]
    else:
        base = np.floor(coord)
        t = coord - base
        if mode == "linear":
            offsets, ws = [0, 1], [1 - t, t]
        else:
            offsets = [-1, 0, 1, 2]
            ws = [_cubic_weight(t - o, -0.75) for o in offsets]
    taps = []
    for o, w in zip(offsets, ws):
        i = base + o
        if padding == "border":
            i = np.clip(i, 0, size - 1)
        elif padding == "reflection":
            i = np.trunc(_reflect(i, lo, hi))
        i = i.astype(np.int64)
        ok = (i >= 0) & (i < size)
        taps.append((np.where(ok, i, -1), w))
    return taps


@op("GridSample", since=16)
class GridSample(OpSpec):
    """Sample X at normalized grid positions; N-d, nearest/linear/cubic, three paddings."""

    attrs = {"align_corners": INT(0), "mode": STRING("linear"), "padding_mode": STRING("zeros")}
    flops_per_element = 8

    def run(self, ctx: RunContext, x: np.ndarray, grid: np.ndarray) -> np.ndarray:
        a = ctx.attrs
        mode = {"bilinear": "linear", "bicubic": "cubic"}.get(a.mode, a.mode)
        nb, c = x.shape[:2]
        dims = x.shape[2:]
        r = len(dims)
        out_sp = grid.shape[1:-1]
        g = grid.astype(np.float64).reshape(nb, -1, r)[..., ::-1]  # to the order of X's axes
        axis_taps = []
        for i, d in enumerate(dims):
            n = g[..., i]
            coord = (n + 1) / 2 * (d - 1) if a.align_corners else ((n + 1) * d - 1) / 2
            lo, hi = (0.0, d - 1.0) if a.align_corners else (-0.5, d - 0.5)
            if mode == "nearest":
                coord = np.rint(coord)
            outside = (coord < lo) | (coord > hi)
            if mode == "cubic":  # cubic pads each tap, not the coordinate (as PyTorch does)
                pass
            elif a.padding_mode == "border":
                coord = np.where(outside, np.clip(coord, 0, d - 1), coord)
            elif a.padding_mode == "reflection":
                coord = np.where(outside, _reflect(coord, lo, hi), coord)
            axis_taps.append(_grid_taps(coord, d, mode, a.padding_mode, lo, hi))
        flat_x = x.astype(np.float64).reshape(nb, c, -1)
        pad_x = np.concatenate([flat_x, np.zeros((nb, c, 1))], axis=2)  # index -1 reads zero
        strides = [math.prod(dims[i + 1 :]) for i in range(r)]
        y = np.zeros((nb, c, g.shape[1]))
        bi = np.arange(nb)[:, None]
        for combo in itertools.product(*axis_taps):
            flat = sum(t[0] * s for t, s in zip(combo, strides))
            bad = np.any([t[0] < 0 for t in combo], axis=0)
            flat = np.where(bad, -1, flat)
            w = math.prod(t[1] for t in combo)
            y += np.moveaxis(pad_x[bi, :, flat], -1, 1) * w[:, None, :]
        return _cast_back(y.reshape((nb, c) + tuple(out_sp)), x.dtype)


@op("GridSample", since=20)
class GridSample20(GridSample):
    """GridSample from opset 20: modes renamed linear/cubic (bilinear/bicubic still read)."""


@op("AffineGrid", since=20)
class AffineGrid(OpSpec):
    """Sampling grid (N, *spatial, r) of an affine map of the normalized output coordinates."""

    attrs = {"align_corners": INT(0)}

    def run(self, ctx: RunContext, theta: np.ndarray, size: np.ndarray) -> np.ndarray:
        dims = [int(v) for v in size[2:]]
        axes = []
        for d in dims:
            if ctx.attrs.align_corners:
                axes.append(np.linspace(-1.0, 1.0, d) if d > 1 else np.zeros(d))
            else:
                axes.append((2 * np.arange(d) + 1) / d - 1)
        mesh = np.meshgrid(*axes, indexing="ij")
        # homogeneous coordinates in x, y, (z) order: the last spatial axis first
        base = np.stack([m.reshape(-1) for m in mesh[::-1]] + [np.ones(math.prod(dims))], axis=-1)
        out = np.einsum("pk,njk->npj", base, theta.astype(np.float64))
        return out.reshape([theta.shape[0]] + dims + [len(dims)]).astype(theta.dtype)


# --------------------------------------------------------------------------- RoiAlign
def _roi_axis(
    start: float, bin_size: float, bins: int, grid: int, size: int
) -> tuple[np.ndarray, ...]:
    """Sample positions of one RoI axis: (low, high, w_low, w_high), each (bins*grid,)."""
    k = np.arange(bins * grid)
    ft = type(start)
    pos = (
        start
        + (k // grid).astype(ft) * bin_size
        + ((k % grid) + ft(0.5)).astype(ft) * bin_size / ft(grid)
    )
    pos = pos.astype(np.float64)
    valid = (pos >= -1.0) & (pos <= size)
    pos = np.maximum(pos, 0.0)
    low = pos.astype(np.int64)
    at_edge = low >= size - 1
    low = np.where(at_edge, size - 1, low)
    high = np.where(at_edge, size - 1, low + 1)
    pos = np.where(at_edge, low, pos)
    frac = pos - low
    return low, high, np.where(valid, 1 - frac, 0.0), np.where(valid, frac, 0.0)


@op("RoiAlign", since=10)
class RoiAlign(OpSpec):
    """Bilinear RoI pooling (avg, or max of the weighted corner values as onnxruntime does)."""

    attrs = {
        "coordinate_transformation_mode": STRING("output_half_pixel"),
        "mode": STRING("avg"),
        "output_height": INT(1),
        "output_width": INT(1),
        "sampling_ratio": INT(0),
        "spatial_scale": FLOAT(1.0),
    }
    flops_per_element = 16

    def run(
        self, ctx: RunContext, x: np.ndarray, rois: np.ndarray, batch: np.ndarray
    ) -> np.ndarray:
        a = ctx.attrs
        ph, pw = a.output_height, a.output_width
        h, w = x.shape[2:]
        half = a.coordinate_transformation_mode == "half_pixel"
        offset = 0.5 if half else 0.0
        y = np.zeros((rois.shape[0], x.shape[1], ph, pw))
        ft = (
            rois.dtype.type if rois.dtype.kind == "f" else np.float32
        )  # geometry in rois' precision
        for r, (roi, b) in enumerate(zip(rois, batch)):
            x0, y0, x1, y1 = roi * ft(a.spatial_scale) - ft(offset)
            rw, rh = x1 - x0, y1 - y0
            if not half:
                rw, rh = max(rw, ft(1.0)), max(rh, ft(1.0))
            gh = a.sampling_ratio if a.sampling_ratio > 0 else int(math.ceil(rh / ph))
            gw = a.sampling_ratio if a.sampling_ratio > 0 else int(math.ceil(rw / pw))
            ylo, yhi, wyl, wyh = _roi_axis(y0, rh / ft(ph), ph, gh, h)
            xlo, xhi, wxl, wxh = _roi_axis(x0, rw / ft(pw), pw, gw, w)
            img = x[int(b)].astype(np.float64)
            corners = [
                img[:, yi[:, None], xi[None, :]] * (wy[:, None] * wx[None, :])
                for yi, wy in ((ylo, wyl), (yhi, wyh))
                for xi, wx in ((xlo, wxl), (xhi, wxh))
            ]
            c = x.shape[1]
            if a.mode == "max":
                v = np.max(corners, axis=0).reshape(c, ph, gh, pw, gw)
                y[r] = v.max(axis=(2, 4)) if gh * gw else 0.0
            else:
                v = np.sum(corners, axis=0).reshape(c, ph, gh, pw, gw)
                y[r] = v.sum(axis=(2, 4)) / max(gh * gw, 1)
        return y.astype(x.dtype)


@op("RoiAlign", since=16)
class RoiAlign16(RoiAlign):
    """RoiAlign from opset 16: half_pixel coordinates by default."""

    attrs = dict(RoiAlign.attrs, coordinate_transformation_mode=STRING("half_pixel"))


# --------------------------------------------------------------------------- NonMaxSuppression
def _iou(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    """IoU of one corner-format box (y1, x1, y2, x2 in any order) with many."""
    lo = np.minimum(box[:2], box[2:])
    hi = np.maximum(box[:2], box[2:])
    olo = np.minimum(others[:, :2], others[:, 2:])
    ohi = np.maximum(others[:, :2], others[:, 2:])
    inter = np.clip(np.minimum(hi, ohi) - np.maximum(lo, olo), 0, None).prod(axis=1)
    union = (hi - lo).prod() + (ohi - olo).prod(axis=1) - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


@op("NonMaxSuppression", since=10)
class NonMaxSuppression(OpSpec):
    """Greedy per-class NMS; output rows are (batch, class, box) in selection order."""

    attrs = {"center_point_box": INT(0)}

    def run(
        self,
        ctx: RunContext,
        boxes: np.ndarray,
        scores: np.ndarray,
        max_out: np.ndarray | None = None,
        iou_threshold: np.ndarray | None = None,
        score_threshold: np.ndarray | None = None,
    ) -> np.ndarray:
        limit = int(max_out.reshape(-1)[0]) if max_out is not None and max_out.size else 0
        iou_t = (
            float(iou_threshold.reshape(-1)[0])
            if iou_threshold is not None and iou_threshold.size
            else 0.0
        )
        has_score_t = score_threshold is not None and score_threshold.size > 0
        score_t = float(score_threshold.reshape(-1)[0]) if has_score_t else 0.0
        b = boxes.astype(np.float64)
        if ctx.attrs.center_point_box:
            xc, yc, bw, bh = b[..., 0], b[..., 1], b[..., 2], b[..., 3]
            b = np.stack([yc - bh / 2, xc - bw / 2, yc + bh / 2, xc + bw / 2], axis=-1)
        rows: list[tuple[int, int, int]] = []
        for n, c in itertools.product(range(scores.shape[0]), range(scores.shape[1])):
            s = scores[n, c].astype(np.float64)
            order = np.argsort(-s, kind="stable")
            if has_score_t:
                order = order[s[order] > score_t]
            kept: list[int] = []
            while order.size and len(kept) < limit:
                best = int(order[0])
                kept.append(best)
                rest = order[1:]
                order = rest[_iou(b[n, best], b[n, rest]) <= iou_t]
            rows.extend((n, c, k) for k in kept)
        return np.array(rows, np.int64).reshape(-1, 3)

    def output_bounds(
        self, attrs: Attrs, shapes: list[tuple[int, ...]], values: list[np.ndarray | None]
    ) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
        """At most ``min(max_output_boxes_per_class, num_boxes)`` rows per batch and class
        (bounded by ``num_boxes`` when the limit is read at run time)."""
        batches, classes, boxes = (int(d) for d in shapes[1])
        per_class = boxes
        limit = values[2] if len(values) > 2 else None
        if len(shapes) <= 2 or shapes[2] is None:
            per_class = 0  # no limit given: the spec's default 0 selects nothing
        elif limit is not None:
            flat = np.asarray(limit).reshape(-1)
            per_class = max(0, min(int(flat[0]), boxes)) if flat.size else 0
        return [((batches * classes * per_class, 3), (0,))]
