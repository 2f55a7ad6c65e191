"""Convolutions: Conv, ConvTranspose, ConvInteger, QLinearConv, DeformConv, Col2Im, CausalConv.

Every convolution is N-dimensional and vectorized: ``_windows`` builds a strided im2col
view of the padded input (``sliding_window_view``), the grouped product is one batched
``matmul`` per call, and the transposed direction (ConvTranspose, Col2Im) scatters columns
back with one slice-add per kernel offset, never a Python loop over pixels. The padding
rules (explicit pads, SAME_UPPER/SAME_LOWER/VALID, pooling's ceil_mode) live in
``conv_pads``, which the pooling family shares.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np

from torsh_gen.ir.types import TensorType, Type
from torsh_gen.ops.registry import INT, INTS, STRING, Cost, InferContext, OpSpec, RunContext, op

_CONV_ATTRS = {
    "auto_pad": STRING("NOTSET"),
    "dilations": INTS(),
    "group": INT(1),
    "kernel_shape": INTS(),
    "pads": INTS(),
    "strides": INTS(),
}


# --------------------------------------------------------------------------- shared helpers
def spatial_params(attrs: object, n: int) -> tuple[list[int], list[int], list[int]]:
    """(strides, dilations, pads) of an n-D window op with ONNX defaults applied."""
    strides = list(getattr(attrs, "strides", None) or [1] * n)
    dilations = list(getattr(attrs, "dilations", None) or [1] * n)
    pads = list(getattr(attrs, "pads", None) or [0] * (2 * n))
    return strides, dilations, pads


def conv_pads(
    size: Sequence[int],
    kernel: Sequence[int],
    strides: Sequence[int],
    dilations: Sequence[int],
    pads: Sequence[int],
    auto_pad: str = "NOTSET",
    ceil_mode: bool = False,
) -> tuple[list[int], list[int], list[int]]:
    """(pads_begin, pads_end, output_size) of a strided window op over ``size``.

    With ``ceil_mode`` the output rounds up, but a last window that would start in the end
    padding is dropped; the returned end pads then cover every window fully.
    """
    n = len(size)
    begin, end, out = [0] * n, [0] * n, [0] * n
    for i in range(n):
        dk = (kernel[i] - 1) * dilations[i] + 1
        if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            out[i] = -(-size[i] // strides[i])
            total = max(0, (out[i] - 1) * strides[i] + dk - size[i])
            small = total // 2
            begin[i], end[i] = (
                (small, total - small) if auto_pad == "SAME_UPPER" else (total - small, small)
            )
            continue
        if auto_pad != "VALID":
            begin[i], end[i] = pads[i], pads[i + n]
        span = size[i] + begin[i] + end[i] - dk
        if ceil_mode:
            out[i] = -(-span // strides[i]) + 1
            if (out[i] - 1) * strides[i] >= size[i] + begin[i]:
                out[i] -= 1
        else:
            out[i] = span // strides[i] + 1
        out[i] = max(out[i], 0)
        end[i] = max(end[i], (out[i] - 1) * strides[i] + dk - size[i] - begin[i])
    return begin, end, out


def pad_spatial(
    x: np.ndarray, begin: Sequence[int], end: Sequence[int], value: float = 0
) -> np.ndarray:
    """Pad (or crop, for negative pads) the trailing len(begin) axes of ``x``."""
    lead = x.ndim - len(begin)
    sl = [slice(None)] * lead + [
        slice(max(0, -b), x.shape[lead + i] - max(0, -e))
        for i, (b, e) in enumerate(zip(begin, end))
    ]
    x = x[tuple(sl)]
    widths = [(0, 0)] * lead + [(max(0, b), max(0, e)) for b, e in zip(begin, end)]
    if not any(w for pair in widths for w in pair):
        return x
    return np.pad(x, widths, constant_values=np.asarray(value).astype(x.dtype))


def windows(
    xp: np.ndarray,
    kernel: Sequence[int],
    strides: Sequence[int],
    dilations: Sequence[int],
    out: Sequence[int],
) -> np.ndarray:
    """Strided view (..., *out, *kernel) of the windows of the already padded ``xp``."""
    n = len(kernel)
    axes = tuple(range(xp.ndim - n, xp.ndim))
    dk = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
    v = np.lib.stride_tricks.sliding_window_view(xp, dk, axis=axes)
    lead = [slice(None)] * (xp.ndim - n)
    pos = [slice(0, (o - 1) * s + 1, s) if o > 0 else slice(0, 0) for o, s in zip(out, strides)]
    taps = [slice(None, None, d) for d in dilations]
    return v[tuple(lead + pos + taps)]


def _work_dtype(dt: np.dtype) -> np.dtype:
    """The dtype convolutions compute in: float16/bfloat16 widen to float32."""
    if dt.kind == "f" and dt.itemsize >= 4:
        return dt
    return np.dtype(np.float64) if dt.kind in "iub" else np.dtype(np.float32)


def conv_nd(
    x: np.ndarray,
    w: np.ndarray,
    group: int,
    strides: Sequence[int],
    dilations: Sequence[int],
    begin: Sequence[int],
    end: Sequence[int],
    out: Sequence[int],
) -> np.ndarray:
    """Grouped N-d correlation of x (N, C, *sp) with w (M, C/group, *k), in w's dtype."""
    n_sp = w.ndim - 2
    kernel = w.shape[2:]
    nb, c = x.shape[:2]
    m, cg = w.shape[:2]
    xp = pad_spatial(x, begin, end)
    v = windows(xp, kernel, strides, dilations, out)  # (N, C, *out, *k)
    v = v.reshape((nb, group, cg) + v.shape[2:])
    perm = [0, 1, 2] + list(range(3 + n_sp, 3 + 2 * n_sp)) + list(range(3, 3 + n_sp))
    kk = cg * math.prod(kernel)
    p = math.prod(out)
    cols = np.ascontiguousarray(v.transpose(perm)).reshape(nb, group, kk, p)
    wg = w.reshape(group, m // group, kk)
    if kk == 1 or (m // group == 1 and kk <= 32):
        y = np.einsum("gmk,ngkp->ngmp", wg, cols, optimize=True)
    else:
        y = np.matmul(wg, cols)
    return y.reshape((nb, m) + tuple(out))


def col2im_add(
    cols: np.ndarray, full: Sequence[int], strides: Sequence[int], dilations: Sequence[int]
) -> np.ndarray:
    """Scatter-add columns (N, C, *k, *pos) into a zero image (N, C, *full)."""
    n = len(full)
    kernel = cols.shape[2 : 2 + n]
    pos = cols.shape[2 + n :]
    img = np.zeros(cols.shape[:2] + tuple(full), cols.dtype)
    for kk in itertools.product(*(range(k) for k in kernel)):
        dst = tuple(
            slice(k * d, k * d + (p - 1) * s + 1, s)
            for k, d, p, s in zip(kk, dilations, pos, strides)
        )
        img[(slice(None), slice(None)) + dst] += cols[(slice(None), slice(None)) + kk]
    return img


def _kernel_of(ctx: RunContext, w: np.ndarray) -> list[int]:
    return list(ctx.attrs.kernel_shape or w.shape[2:])


def _static(t: Type | None) -> TensorType | None:
    return t if isinstance(t, TensorType) and t.is_static else None


def _conv_cost(
    spec: OpSpec, ctx: InferContext, output_types: list[Type | None], transposed: bool
) -> Cost:
    """MACs = N * Cout * prod(out) * (Cin/group) * prod(k); the transposed op counts inputs."""
    base = OpSpec.cost(spec, ctx, output_types)
    x, w = _static(ctx.input_type(0)), _static(ctx.input_type(1))
    y = _static(output_types[0] if output_types else None)
    if x is None or w is None or y is None:
        return base
    group = ctx.attrs.get("group", 1)
    k = math.prod(w.shape[2:])
    if transposed:  # every input pixel meets every (Cout/group) x kernel weight once
        macs = x.shape[0] * x.shape[1] * math.prod(x.shape[2:]) * (y.shape[1] // group) * k
    else:
        macs = y.shape[0] * y.shape[1] * math.prod(y.shape[2:]) * (x.shape[1] // group) * k
    bias = math.prod(y.shape) if len(ctx.input_types) > 2 and ctx.input_type(2) is not None else 0
    return Cost(macs, 2 * macs + bias, base.bytes_read, base.bytes_written)


# --------------------------------------------------------------------------- Conv
@op("Conv", since=1)
class Conv(OpSpec):
    """N-d grouped convolution (cross-correlation) with optional bias, as im2col + matmul."""

    attrs = dict(_CONV_ATTRS)

    def run(
        self, ctx: RunContext, x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None
    ) -> np.ndarray:
        wt = _work_dtype(x.dtype)
        y = self.conv(ctx, x.astype(wt, copy=False), w.astype(wt, copy=False))
        if b is not None:
            y = y + b.astype(wt).reshape((1, -1) + (1,) * (y.ndim - 2))
        return y.astype(x.dtype, copy=False)

    def conv(self, ctx: RunContext, x: np.ndarray, w: np.ndarray) -> np.ndarray:
        """The bias-free convolution of two arrays of the same dtype."""
        kernel = _kernel_of(ctx, w)
        strides, dilations, pads = spatial_params(ctx.attrs, len(kernel))
        begin, end, out = conv_pads(
            x.shape[2:], kernel, strides, dilations, pads, ctx.attrs.auto_pad
        )
        return conv_nd(x, w, ctx.attrs.group, strides, dilations, begin, end, out)

    def cost(self, ctx: InferContext, output_types: list[Type | None]) -> Cost:
        return _conv_cost(self, ctx, output_types, transposed=False)


@op("ConvInteger", since=10)
class ConvInteger(Conv):
    """Integer convolution of (x - x_zero_point) and (w - w_zero_point) into int32."""

    def run(  # type: ignore[override]
        self,
        ctx: RunContext,
        x: np.ndarray,
        w: np.ndarray,
        x_zp: np.ndarray | None = None,
        w_zp: np.ndarray | None = None,
    ) -> np.ndarray:
        xs = x.astype(np.float64) - (0 if x_zp is None else x_zp.astype(np.float64))
        ws = w.astype(np.float64) - _per_channel(w_zp, w.ndim)
        return np.rint(self.conv(ctx, xs, ws)).astype(np.int32)


def _per_channel(v: np.ndarray | None, ndim: int) -> np.ndarray | float:
    """A scalar or per-output-channel quantization parameter, broadcastable over weights."""
    if v is None:
        return 0.0
    v = np.asarray(v, np.float64)
    return v.reshape((-1,) + (1,) * (ndim - 1)) if v.size > 1 else v.reshape(())


@op("QLinearConv", since=10)
class QLinearConv(Conv):
    """Quantized convolution: dequantize, convolve, add int32 bias, requantize (half to even)."""

    def run(  # type: ignore[override]
        self,
        ctx: RunContext,
        x: np.ndarray,
        x_scale: np.ndarray,
        x_zp: np.ndarray,
        w: np.ndarray,
        w_scale: np.ndarray,
        w_zp: np.ndarray,
        y_scale: np.ndarray,
        y_zp: np.ndarray,
        b: np.ndarray | None = None,
    ) -> np.ndarray:
        xs = x.astype(np.float64) - np.asarray(x_zp, np.float64)
        ws = w.astype(np.float64) - _per_channel(w_zp, w.ndim)
        acc = self.conv(ctx, xs, ws)  # exact integer accumulator
        if b is not None:
            acc = acc + b.astype(np.float64).reshape((1, -1) + (1,) * (acc.ndim - 2))
        scale = np.asarray(x_scale, np.float64) * np.asarray(w_scale, np.float64).reshape(-1)
        scale = (
            scale.reshape((1, -1) + (1,) * (acc.ndim - 2)) if scale.size > 1 else scale.reshape(())
        )
        y = np.rint(acc * scale / np.asarray(y_scale, np.float64)) + np.asarray(y_zp, np.float64)
        info = np.iinfo(y_zp.dtype)
        return np.clip(y, info.min, info.max).astype(y_zp.dtype)


# --------------------------------------------------------------------------- ConvTranspose
@op("ConvTranspose", since=1)
class ConvTranspose(OpSpec):
    """Transposed (fractionally strided) convolution: matmul to columns, then col2im."""

    attrs = dict(_CONV_ATTRS, output_padding=INTS(), output_shape=INTS())

    def run(
        self, ctx: RunContext, x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None
    ) -> np.ndarray:
        a = ctx.attrs
        kernel = _kernel_of(ctx, w)
        n = len(kernel)
        strides, dilations, pads = spatial_params(a, n)
        size = x.shape[2:]
        out_pad = list(a.output_padding or [0] * n)
        full = [
            (i - 1) * s + (k - 1) * d + 1 for i, s, k, d in zip(size, strides, kernel, dilations)
        ]
        begin, out = self._layout(a, size, strides, full, out_pad, pads)
        wt = _work_dtype(x.dtype)
        nb, c = x.shape[:2]
        g = a.group
        mg = w.shape[1]
        xg = x.astype(wt, copy=False).reshape(nb, g, c // g, math.prod(size))
        wg = w.astype(wt, copy=False).reshape(g, c // g, mg * math.prod(kernel))
        cols = np.matmul(wg.transpose(0, 2, 1), xg)  # (N, G, Mg*K, P)
        cols = cols.reshape((nb, g * mg) + tuple(kernel) + tuple(size))
        canvas = [max(f, bg + o) for f, bg, o in zip(full, begin, out)]
        img = col2im_add(cols, canvas, strides, dilations)
        y = img[(slice(None), slice(None)) + tuple(slice(bg, bg + o) for bg, o in zip(begin, out))]
        if b is not None:
            y = y + b.astype(wt).reshape((1, -1) + (1,) * n)
        return np.ascontiguousarray(y).astype(x.dtype, copy=False)

    @staticmethod
    def _layout(
        a: object,
        size: Sequence[int],
        strides: list[int],
        full: list[int],
        out_pad: list[int],
        pads: list[int],
    ) -> tuple[list[int], list[int]]:
        """(pads_begin, output_size) from pads, output_shape or auto_pad."""
        n = len(size)
        auto_pad = getattr(a, "auto_pad", "NOTSET")
        target = list(getattr(a, "output_shape", None) or [])
        if not target and auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            target = [i * s for i, s in zip(size, strides)]
        if target:
            target = target[-n:]
            begin = []
            for i in range(n):
                total = full[i] + out_pad[i] - target[i]
                half = total // 2
                begin.append(half if auto_pad == "SAME_UPPER" else total - half)
            return begin, target
        if auto_pad == "VALID":
            pads = [0] * (2 * n)
        out = [full[i] + out_pad[i] - pads[i] - pads[i + n] for i in range(n)]
        return pads[:n], out

    def cost(self, ctx: InferContext, output_types: list[Type | None]) -> Cost:
        return _conv_cost(self, ctx, output_types, transposed=True)


@op("Col2Im", since=18)
class Col2Im(OpSpec):
    """Fold column blocks (N, C*prod(block), L) back into an image, summing overlaps."""

    attrs = {"dilations": INTS(), "pads": INTS(), "strides": INTS()}

    def run(
        self, ctx: RunContext, x: np.ndarray, image_shape: np.ndarray, block_shape: np.ndarray
    ) -> np.ndarray:
        img = [int(v) for v in image_shape]
        block = [int(v) for v in block_shape]
        n = len(img)
        strides, dilations, pads = spatial_params(ctx.attrs, n)
        begin, end, out = conv_pads(img, block, strides, dilations, pads)
        nb = x.shape[0]
        c = x.shape[1] // math.prod(block)
        cols = x.reshape((nb, c) + tuple(block) + tuple(out))
        full = [i + b + e for i, b, e in zip(img, begin, end)]
        canvas = col2im_add(cols, full, strides, dilations)
        y = canvas[(slice(None), slice(None)) + tuple(slice(b, b + i) for b, i in zip(begin, img))]
        return np.ascontiguousarray(y).astype(x.dtype, copy=False)


# --------------------------------------------------------------------------- DeformConv
def _linear_taps(coord: np.ndarray, size: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The two (index, weight) taps of linear interpolation at ``coord``; outside is weight 0."""
    lo = np.floor(coord)
    frac = coord - lo
    lo = lo.astype(np.int64)
    taps = []
    for idx, wgt in ((lo, 1.0 - frac), (lo + 1, frac)):
        ok = (idx >= 0) & (idx < size)
        taps.append((np.where(ok, idx, 0), np.where(ok, wgt, 0.0)))
    return taps


@op("DeformConv", since=19)
class DeformConv(OpSpec):
    """Deformable convolution: each kernel tap samples the input bilinearly at a learned offset."""

    attrs = {
        "dilations": INTS(),
        "group": INT(1),
        "kernel_shape": INTS(),
        "offset_group": INT(1),
        "pads": INTS(),
        "strides": INTS(),
    }

    def run(
        self,
        ctx: RunContext,
        x: np.ndarray,
        w: np.ndarray,
        offset: np.ndarray,
        b: np.ndarray | None = None,
        mask: np.ndarray | None = None,
    ) -> np.ndarray:
        kernel = _kernel_of(ctx, w)
        n = len(kernel)
        strides, dilations, pads = spatial_params(ctx.attrs, n)
        _, _, out = conv_pads(x.shape[2:], kernel, strides, dilations, pads)
        nb, c = x.shape[:2]
        og = ctx.attrs.offset_group
        k = math.prod(kernel)
        p = math.prod(out)
        wt = _work_dtype(x.dtype)
        # base sampling positions (n, K, P): out * stride - pad + tap * dilation
        grids = np.meshgrid(
            *[np.arange(v) for v in kernel], *[np.arange(v) for v in out], indexing="ij"
        )
        base = [
            (grids[n + i] * strides[i] - pads[i] + grids[i] * dilations[i]).reshape(k, p).astype(wt)
            for i in range(n)
        ]
        off = offset.astype(wt).reshape(nb, og, k, n, p)
        msk = np.ones((nb, og, k, p), wt) if mask is None else mask.astype(wt).reshape(nb, og, k, p)
        xg = x.astype(wt).reshape(nb, og, c // og, -1)
        cols = np.zeros((nb, og, c // og, k, p), wt)
        bi = np.arange(nb)[:, None, None, None]
        gi = np.arange(og)[None, :, None, None]
        taps = [
            _linear_taps(base[i][None, None] + off[:, :, :, i], x.shape[2 + i]) for i in range(n)
        ]
        strides_flat = [math.prod(x.shape[3 + i :]) for i in range(n)]
        for combo in itertools.product(range(2), repeat=n):
            flat = sum(taps[i][combo[i]][0] * strides_flat[i] for i in range(n))
            wgt = math.prod(taps[i][combo[i]][1] for i in range(n)) * msk
            vals = xg[bi, gi, :, flat]  # (N, og, K, P, C/og)
            cols += np.moveaxis(vals, -1, 2) * wgt[:, :, None]
        cols = cols.reshape(nb, 1, c, k, p).reshape(nb, ctx.attrs.group, -1, p)
        m = w.shape[0]
        y = np.matmul(w.astype(wt).reshape(ctx.attrs.group, m // ctx.attrs.group, -1), cols)
        y = y.reshape((nb, m) + tuple(out))
        if b is not None:
            y = y + b.astype(wt).reshape((1, -1) + (1,) * n)
        return y.astype(x.dtype, copy=False)

    def cost(self, ctx: InferContext, output_types: list[Type | None]) -> Cost:
        return _conv_cost(self, ctx, output_types, transposed=False)


# --------------------------------------------------------------------------- CausalConvWithState
@op("CausalConvWithState", since=27)
class CausalConvWithState(OpSpec):
    """Causal depthwise 1-D conv over [past_state, input]; also returns the last k-1 steps."""

    attrs = {"activation": STRING("none")}

    def run(
        self,
        ctx: RunContext,
        x: np.ndarray,
        w: np.ndarray,
        b: np.ndarray | None = None,
        past: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        nb, c, length = x.shape
        k = w.shape[-1]
        wt = _work_dtype(x.dtype)
        if past is None:
            past = np.zeros((nb, c, k - 1), x.dtype)
        seq = np.concatenate([past.astype(wt), x.astype(wt)], axis=2)
        v = np.lib.stride_tricks.sliding_window_view(seq, k, axis=2)[:, :, :length]  # (N, C, L, k)
        y = np.einsum("nclk,ck->ncl", v, w.astype(wt).reshape(c, k))
        if b is not None:
            y = y + b.astype(wt).reshape(1, c, 1)
        if ctx.attrs.activation in ("silu", "swish"):
            y = y / (1.0 + np.exp(-y))
        state = seq[:, :, seq.shape[2] - (k - 1) :]
        return y.astype(x.dtype), np.ascontiguousarray(state).astype(x.dtype)

    def cost(self, ctx: InferContext, output_types: list[Type | None]) -> Cost:
        base = super().cost(ctx, output_types)
        w = _static(ctx.input_type(1))
        y = _static(output_types[0] if output_types else None)
        if w is None or y is None:
            return base
        macs = math.prod(y.shape) * w.shape[-1]
        return Cost(macs, 2 * macs, base.bytes_read, base.bytes_written)
