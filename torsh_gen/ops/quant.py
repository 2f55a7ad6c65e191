"""Linear quantization ops: QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear.

Scales and zero points come in three granularities (per tensor, per axis, blocked along one
axis); ``_expand`` turns each into an array that broadcasts against the data. Targets range
over the integer types (8/16 bits, and 4/2 bits from ml_dtypes) and the small float types
(float8 variants, float4), which numpy reaches through ml_dtypes casts (round to nearest
even). Integer quantization rounds half to even with ``np.rint`` before clipping.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np

from torsh_gen.ir.types import DType
from torsh_gen.ops.registry import INT, OpSpec, RunContext, op


def _expand(s: np.ndarray, x_shape: tuple[int, ...], axis: int, block_size: int) -> np.ndarray:
    """A scale or zero point reshaped (and, for blocks, repeated) to broadcast against x."""
    if s.ndim == 0 or (s.size == 1 and s.ndim <= 1):
        return s.reshape(())
    rank = len(x_shape)
    axis = axis + rank if axis < 0 else axis
    if s.ndim == 1 and block_size <= 0:  # per axis
        shape = [1] * rank
        shape[axis] = s.shape[0]
        return s.reshape(shape)
    if block_size <= 0:
        raise ValueError(f"scale of shape {s.shape} needs block_size for input {x_shape}")
    rep = np.repeat(s, block_size, axis=axis)
    return np.take(rep, np.arange(x_shape[axis]), axis=axis)


def _is_float_target(dt: np.dtype) -> bool:
    return dt.kind == "f" or (dt.kind == "V" and "float" in dt.name)


def _int_limits(dt: np.dtype) -> tuple[int, int]:
    info = np.iinfo(dt) if dt.kind in "iu" else ml_dtypes.iinfo(dt)
    return int(info.min), int(info.max)


def _to_float_target(v: np.ndarray, dt: np.dtype, saturate: bool) -> np.ndarray:
    """Cast float values to a small float type, clipping to its finite range if asked."""
    v = v.astype(np.float32)
    fmax = float(ml_dtypes.finfo(dt).max)
    if saturate or dt.name.startswith(("float4", "float6")):
        v = np.where(np.isnan(v), v, np.clip(v, -fmax, fmax))
    # without saturation the cast itself gives NaN (fn/fnuz types) or inf (e5m2) on overflow
    return v.astype(dt)


def _dtype_attr(code: int) -> np.dtype | None:
    return DType(code).numpy if code else None


@op("QuantizeLinear", since=10)
class QuantizeLinear(OpSpec):
    """y = saturate(round(x / scale) + zero_point); target from output_dtype or zero point."""

    attrs = {
        "axis": INT(1),
        "block_size": INT(0),
        "output_dtype": INT(0),
        "saturate": INT(1),
        "precision": INT(0),
    }

    def run(
        self, ctx: RunContext, x: np.ndarray, scale: np.ndarray, zp: np.ndarray | None = None
    ) -> np.ndarray:
        a = ctx.attrs
        out_dt = _dtype_attr(a.output_dtype) or (zp.dtype if zp is not None else np.dtype(np.uint8))
        prec = _dtype_attr(a.precision) or scale.dtype
        s = _expand(scale, x.shape, a.axis, a.block_size).astype(prec)
        q = (x.astype(prec) / s).astype(np.float64)
        z = (
            np.zeros(())
            if zp is None
            else _expand(zp, x.shape, a.axis, a.block_size).astype(np.float64)
        )
        if _is_float_target(out_dt):
            return _to_float_target(q + z, out_dt, bool(a.saturate))
        lo, hi = _int_limits(out_dt)
        return np.clip(np.rint(q) + z, lo, hi).astype(out_dt)


@op("DequantizeLinear", since=10)
class DequantizeLinear(OpSpec):
    """y = (x - zero_point) * scale in the output type (output_dtype, else the scale's type)."""

    attrs = {"axis": INT(1), "block_size": INT(0), "output_dtype": INT(0)}

    def run(
        self, ctx: RunContext, x: np.ndarray, scale: np.ndarray, zp: np.ndarray | None = None
    ) -> np.ndarray:
        a = ctx.attrs
        out_dt = _dtype_attr(a.output_dtype) or scale.dtype
        wide = np.float64 if x.dtype.itemsize >= 4 else np.float32
        d = x.astype(wide)
        if zp is not None:
            d = d - _expand(zp, x.shape, a.axis, a.block_size).astype(wide)
        s = _expand(scale, x.shape, a.axis, a.block_size)
        if out_dt == np.float64:
            return (d * s.astype(np.float64)).astype(out_dt)
        return (d.astype(np.float32) * s.astype(np.float32)).astype(out_dt)


@op("DynamicQuantizeLinear", since=11)
class DynamicQuantizeLinear(OpSpec):
    """uint8 quantization whose scale and zero point are computed from x's range (with 0)."""

    flops_per_element = 4

    def run(self, ctx: RunContext, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        xf = x.astype(np.float32)
        lo = np.float32(min(0.0, float(xf.min()) if xf.size else 0.0))
        hi = np.float32(max(0.0, float(xf.max()) if xf.size else 0.0))
        scale = np.float32((hi - lo) / np.float32(255))
        safe = scale if scale != 0 else np.float32(1)
        zp = np.clip(np.rint(np.float32(0) - lo / safe), 0, 255)
        y = np.clip(np.rint(xf / safe) + zp, 0, 255).astype(np.uint8)
        return y, np.asarray(scale, np.float32), np.asarray(zp).astype(np.uint8)
