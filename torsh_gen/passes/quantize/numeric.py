"""Quantization arithmetic: scales and zero points from ranges, and weight quantizers.

Conventions (the ones onnxruntime's integer kernels expect):
- activations: uint8 with a zero point (asymmetric, the range stretched to include 0), or
  int8 with zero point 0 (symmetric);
- int8 weights: symmetric, zero point 0, values in [-127, 127] so that negating a weight
  never overflows; one scale per tensor or per output channel;
- int4 weights: symmetric per block of ``block_size`` values along the reduction axis,
  values in [-7, 7], scales representable in float16;
- biases: int32 with scale ``activation_scale * weight_scale`` and zero point 0.
Rounding is half to even (``np.rint``), as QuantizeLinear does.
"""

from __future__ import annotations

from dataclasses import dataclass

import ml_dtypes
import numpy as np

from torsh_gen.passes.quantize.options import TensorRange

_TINY = np.float32(1e-12)


@dataclass(frozen=True)
class ActivationParams:
    """Scale (float32 scalar) and zero point (uint8 or int8 scalar) of one activation."""

    scale: np.ndarray
    zero_point: np.ndarray


def activation_params(r: TensorRange, symmetric: bool) -> ActivationParams:
    """Scale and zero point that cover ``r`` (always including 0, so zeros stay exact)."""
    lo, hi = min(float(r.lo), 0.0), max(float(r.hi), 0.0)
    if symmetric:
        bound = max(abs(lo), abs(hi))
        scale = np.float32(bound / 127.0) if bound > 0 else np.float32(1.0)
        return ActivationParams(np.asarray(scale, np.float32), np.asarray(0, np.int8))
    span = hi - lo
    scale = np.float32(span / 255.0) if span > 0 else np.float32(1.0)
    zp = int(np.clip(np.rint(-lo / float(scale)), 0, 255))
    return ActivationParams(np.asarray(scale, np.float32), np.asarray(zp, np.uint8))


@dataclass(frozen=True)
class QuantizedWeight:
    """An int8/int4 weight with its scales; ``axis`` is None for one scale per tensor."""

    data: np.ndarray
    scale: np.ndarray
    axis: int | None
    block_size: int = 0

    def dequantize(self) -> np.ndarray:
        """The float32 weight the quantized one stands for."""
        s = self.scale
        if self.block_size:
            s = np.repeat(s, self.block_size, axis=self.axis)
            s = np.take(s, np.arange(self.data.shape[self.axis]), axis=self.axis)
        elif self.axis is not None:
            shape = [1] * self.data.ndim
            shape[self.axis] = -1
            s = s.reshape(shape)
        return self.data.astype(np.float32) * s


def _safe_scale(amax: np.ndarray, levels: float) -> np.ndarray:
    scale = (amax / levels).astype(np.float32)
    return np.where(scale > _TINY, scale, np.float32(1.0)).astype(np.float32)


def quantize_weight_int8(w: np.ndarray, axis: int | None) -> QuantizedWeight:
    """Symmetric int8 weight, one scale per tensor (``axis`` None) or per index of ``axis``."""
    w = w.astype(np.float32)
    if axis is None:
        scale = _safe_scale(np.asarray(np.abs(w).max() if w.size else 0.0, np.float32), 127.0)
        q = np.clip(np.rint(w / scale), -127, 127).astype(np.int8)
        return QuantizedWeight(q, np.asarray(scale, np.float32).reshape(()), None)
    axis = axis % w.ndim
    other = tuple(i for i in range(w.ndim) if i != axis)
    amax = np.abs(w).max(axis=other) if w.size else np.zeros(w.shape[axis], np.float32)
    scale = _safe_scale(amax, 127.0)
    shape = [1] * w.ndim
    shape[axis] = -1
    q = np.clip(np.rint(w / scale.reshape(shape)), -127, 127).astype(np.int8)
    return QuantizedWeight(q, scale, axis)


def quantize_weight_int4(w: np.ndarray, axis: int, block_size: int) -> QuantizedWeight:
    """Symmetric int4 weight with one scale per ``block_size`` values along ``axis``.

    The last block may be shorter; the scale tensor has ``ceil(n / block_size)`` entries
    along ``axis``, as DequantizeLinear's blocked form (opset 21) reads it.
    """
    w = w.astype(np.float32)
    axis = axis % w.ndim
    n = w.shape[axis]
    blocks = -(-n // block_size)
    pad = blocks * block_size - n
    padded = np.pad(w, [(0, pad if i == axis else 0) for i in range(w.ndim)])
    moved = np.moveaxis(padded, axis, 0).reshape(blocks, block_size, -1)
    amax = np.abs(moved).max(axis=1)  # [blocks, rest]
    # scales are stored as float16 (see QuantContext.weight_dq): quantize with exactly
    # the values that will be read back, kept inside float16's normal range
    scale = np.clip(_safe_scale(amax, 7.0), 2.0**-14, 65504.0).astype(np.float16).astype(np.float32)
    q = np.clip(np.rint(moved / scale[:, None, :]), -7, 7)
    rest = [d for i, d in enumerate(padded.shape) if i != axis]
    q = np.moveaxis(q.reshape(blocks * block_size, *rest), 0, axis)
    q = np.take(q, np.arange(n), axis=axis).astype(ml_dtypes.int4)
    scale = np.moveaxis(scale.reshape(blocks, *rest), 0, axis).astype(np.float32)
    return QuantizedWeight(q, scale, axis, block_size)


def quantize_bias(
    b: np.ndarray, act_scale: np.ndarray, w_scale: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """int32 bias and its (per-channel or scalar) scale ``act_scale * w_scale``."""
    scale = (np.float32(act_scale) * w_scale.astype(np.float32)).astype(np.float32)
    safe = np.where(np.abs(scale) > _TINY, scale, np.float32(1.0))
    info = np.iinfo(np.int32)
    q = np.clip(np.rint(b.astype(np.float64) / safe), info.min, info.max).astype(np.int32)
    return q, scale.astype(np.float32)
