"""Pooling: MaxPool (with indices), AveragePool, LpPool, their global forms, MaxUnpool.

Windows come from the same strided im2col view as the convolutions (``nn.windows``) and
are reduced along the kernel axes in one numpy call. ``ceil_mode`` windows that run past
the input are padded with the reduction's identity; AveragePool's divisor counts, per
axis, the taps that fall in the input (or in the explicit pads with count_include_pad).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from torsh_gen.ir.types import DType, TensorType, Type
from torsh_gen.ops.nn import conv_pads, pad_spatial, spatial_params, windows
from torsh_gen.ops.registry import INT, INTS, STRING, Cost, InferContext, OpSpec, RunContext, op

Geometry = tuple[list[int], list[int], list[int], list[int], list[int], list[int]]


class _Pool(OpSpec):
    """Shared attributes, window geometry and cost of the windowed pools."""

    attrs = {
        "auto_pad": STRING("NOTSET"),
        "ceil_mode": INT(0),
        "dilations": INTS(),
        "kernel_shape": INTS(required=True),
        "pads": INTS(),
        "strides": INTS(),
    }

    def geometry(self, ctx: RunContext, x: np.ndarray) -> Geometry:
        """(kernel, strides, dilations, pads_begin, pads_end, output_size) for input ``x``."""
        kernel = list(ctx.attrs.kernel_shape)
        strides, dilations, pads = spatial_params(ctx.attrs, len(kernel))
        begin, end, out = conv_pads(
            x.shape[2:],
            kernel,
            strides,
            dilations,
            pads,
            ctx.attrs.auto_pad,
            bool(ctx.attrs.ceil_mode),
        )
        return kernel, strides, dilations, begin, end, out

    def view(self, ctx: RunContext, x: np.ndarray, fill: Any) -> tuple[np.ndarray, Geometry]:
        """Strided windows (N, C, *out, *kernel) of ``x`` padded with ``fill``, and the geometry."""
        geo = self.geometry(ctx, x)
        kernel, strides, dilations, begin, end, out = geo
        return windows(pad_spatial(x, begin, end, fill), kernel, strides, dilations, out), geo

    def cost(self, ctx: InferContext, output_types: list[Type | None]) -> Cost:
        """FLOPs = output elements * kernel size."""
        base = super().cost(ctx, output_types)
        y = output_types[0] if output_types else None
        if not isinstance(y, TensorType) or not y.is_static:
            return base
        k = math.prod(ctx.attrs.get("kernel_shape", [1]))
        return Cost(0, math.prod(y.shape) * k, base.bytes_read, base.bytes_written)


def _lowest(dt: np.dtype) -> Any:
    if dt.kind == "f" or DType.from_numpy(dt).is_float:  # ml_dtypes floats (bfloat16) have kind 'V'
        return -np.inf
    return np.iinfo(dt).min


@op("MaxPool", since=1)
class MaxPool(_Pool):
    """Max over windows; the optional second output holds flat argmax indices into X."""

    attrs = dict(_Pool.attrs, storage_order=INT(0))

    def run(self, ctx: RunContext, x: np.ndarray) -> Any:
        v, (kernel, strides, dilations, begin, _, out) = self.view(ctx, x, _lowest(x.dtype))
        n = len(kernel)
        flat = v.reshape(v.shape[: 2 + n] + (-1,))
        arg = np.argmax(flat, axis=-1)
        y = np.take_along_axis(flat, arg[..., None], axis=-1)[..., 0].astype(x.dtype)
        if ctx.n_outputs < 2:
            return y
        taps = np.unravel_index(arg, kernel)
        grid = np.meshgrid(*[np.arange(o) for o in out], indexing="ij")
        coords = [grid[i] * strides[i] - begin[i] + taps[i] * dilations[i] for i in range(n)]
        size = x.shape[2:]
        order = range(n) if not ctx.attrs.storage_order else reversed(range(n))
        index = np.zeros(arg.shape, np.int64)
        for i in order:
            index = index * size[i] + coords[i]
        nc = np.arange(x.shape[0] * x.shape[1], dtype=np.int64).reshape(x.shape[:2] + (1,) * n)
        return y, index + nc * math.prod(size)


@op("AveragePool", since=1)
class AveragePool(_Pool):
    """Mean over windows; the divisor counts pads only with count_include_pad."""

    attrs = dict(_Pool.attrs, count_include_pad=INT(0))

    def run(self, ctx: RunContext, x: np.ndarray) -> np.ndarray:
        wt = np.float64 if x.dtype == np.float64 else np.float32
        v, (kernel, strides, dilations, begin, end, out) = self.view(ctx, x.astype(wt), 0)
        n = len(kernel)
        total = v.sum(axis=tuple(range(-n, 0)))
        explicit = self._explicit_pads(ctx, x, n, begin)
        count = np.ones((), wt)
        for i in range(n):
            size = x.shape[2 + i]
            lo, hi = (explicit[i], explicit[i + n]) if ctx.attrs.count_include_pad else (0, 0)
            pos = np.arange(-begin[i], size + end[i])
            inside = ((pos >= -lo) & (pos < size + hi)).astype(wt)
            cnt = windows(inside, [kernel[i]], [strides[i]], [dilations[i]], [out[i]]).sum(axis=-1)
            count = count[..., None] * cnt
        return (total / np.maximum(count, 1)).astype(x.dtype)

    def _explicit_pads(self, ctx: RunContext, x: np.ndarray, n: int, begin: list[int]) -> list[int]:
        """The pads the op asks for (explicit or auto), without ceil_mode's extra end padding."""
        if ctx.attrs.auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            b, e = self.geometry(ctx, x)[3:5]
            return b + e
        if ctx.attrs.auto_pad == "VALID":
            return [0] * (2 * n)
        return list(ctx.attrs.pads or [0] * (2 * n))


@op("LpPool", since=1)
class LpPool(_Pool):
    """(sum |x|^p)^(1/p) over windows, zero padded."""

    attrs = dict(_Pool.attrs, p=INT(2))

    def run(self, ctx: RunContext, x: np.ndarray) -> np.ndarray:
        p = float(ctx.attrs.p)
        wt = np.float64 if x.dtype == np.float64 else np.float32
        v, (kernel, *_rest) = self.view(ctx, np.abs(x.astype(wt)) ** p, 0)
        s = v.sum(axis=tuple(range(-len(kernel), 0)))
        return (s ** (1.0 / p)).astype(x.dtype)


class _GlobalPool(OpSpec):
    """Reduction over every spatial axis, keeping them as size-1 axes."""

    def cost(self, ctx: InferContext, output_types: list[Type | None]) -> Cost:
        """FLOPs = output elements * spatial size = input elements."""
        base = super().cost(ctx, output_types)
        x = ctx.input_type(0)
        if not isinstance(x, TensorType) or not x.is_static:
            return base
        return Cost(0, math.prod(x.shape), base.bytes_read, base.bytes_written)


def _spatial_axes(x: np.ndarray) -> tuple[int, ...]:
    return tuple(range(2, x.ndim))


@op("GlobalAveragePool", since=1)
class GlobalAveragePool(_GlobalPool):
    """Mean over all spatial axes."""

    def run(self, ctx: RunContext, x: np.ndarray) -> np.ndarray:
        return x.mean(axis=_spatial_axes(x), keepdims=True, dtype=np.float64).astype(x.dtype)


@op("GlobalMaxPool", since=1)
class GlobalMaxPool(_GlobalPool):
    """Max over all spatial axes."""

    def run(self, ctx: RunContext, x: np.ndarray) -> np.ndarray:
        return x.max(axis=_spatial_axes(x), keepdims=True)


@op("GlobalLpPool", since=2)
class GlobalLpPool(_GlobalPool):
    """(sum |x|^p)^(1/p) over all spatial axes."""

    attrs = {"p": INT(2)}

    def run(self, ctx: RunContext, x: np.ndarray) -> np.ndarray:
        p = float(ctx.attrs.p)
        s = (np.abs(x.astype(np.float64)) ** p).sum(axis=_spatial_axes(x), keepdims=True)
        return (s ** (1.0 / p)).astype(x.dtype)


@op("MaxUnpool", since=9)
class MaxUnpool(OpSpec):
    """Scatter pooled values back to the flat positions MaxPool's indices name; zeros elsewhere."""

    attrs = {"kernel_shape": INTS(required=True), "pads": INTS(), "strides": INTS()}
    flops_per_element = 0

    def run(
        self,
        ctx: RunContext,
        x: np.ndarray,
        indices: np.ndarray,
        output_shape: np.ndarray | None = None,
    ) -> np.ndarray:
        kernel = list(ctx.attrs.kernel_shape)
        n = len(kernel)
        strides, _, pads = spatial_params(ctx.attrs, n)
        sp = [
            (x.shape[2 + i] - 1) * strides[i] + kernel[i] - pads[i] - pads[i + n] for i in range(n)
        ]
        shape = tuple(x.shape[:2]) + tuple(sp)
        y = np.zeros(math.prod(shape), x.dtype)
        y[indices.reshape(-1)] = x.reshape(-1)
        y = y.reshape(shape)
        if output_shape is None:
            return y
        # the indices address the default layout; a larger requested shape pads at the end
        target = [int(v) for v in output_shape][-n:]
        out = np.zeros(tuple(x.shape[:2]) + tuple(target), x.dtype)
        region = tuple(slice(0, min(a, b)) for a, b in zip(sp, target))
        out[(slice(None), slice(None)) + region] = y[(slice(None), slice(None)) + region]
        return out
