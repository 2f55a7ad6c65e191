"""Signal processing ops: DFT, STFT, the Hann/Hamming/Blackman windows and MelWeightMatrix.

Complex tensors are real tensors whose last dimension holds (real, imaginary) (size 2), or
real signals with a last dimension of size 1. Transforms run in numpy's FFT, in single
precision for float32 inputs, and are cast back to the input's element type.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from torsh_gen.ir.types import DType, TensorType
from torsh_gen.ops.registry import INT, Cost, InferContext, OpSpec, RunContext, op


def _to_complex(x: np.ndarray) -> np.ndarray:
    """[..., 1] real or [..., 2] (re, im) tensor -> array without the last axis.

    The precision follows the input (single for float32 and narrower, double for float64),
    as numpy's FFT keeps single precision, so results round as the reference's do.
    """
    real = np.float64 if x.dtype.itemsize > 4 else np.float32
    if x.shape[-1] == 1:
        return x[..., 0].astype(real)
    if x.shape[-1] == 2:
        cplx = np.complex128 if real is np.float64 else np.complex64
        return x[..., 0].astype(real) + np.asarray(1j, cplx) * x[..., 1].astype(real)
    raise ValueError(f"last dimension must be 1 (real) or 2 (complex), got {x.shape[-1]}")


def _from_complex(y: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Complex array -> [..., 2] tensor of ``dtype``."""
    return np.stack([y.real, y.imag], axis=-1).astype(dtype)


def _dft(x: np.ndarray, axis: int, length: int | None, inverse: bool, onesided: bool) -> np.ndarray:
    """The DFT of ``x`` (ONNX layout) along signal ``axis`` (an axis of ``x``)."""
    rank = x.ndim
    if axis < 0:
        axis += rank
    if not 0 <= axis <= rank - 2:
        raise ValueError(f"DFT axis {axis} out of range for rank {rank}")
    c = _to_complex(x)
    if inverse and onesided:  # IRFFT: one-sided spectrum in, real signal out
        n = length if length is not None else 2 * (c.shape[axis] - 1)
        return np.fft.irfft(c, n=n, axis=axis)[..., None].astype(x.dtype)
    n = length if length is not None else c.shape[axis]
    y = np.fft.ifft(c, n=n, axis=axis) if inverse else np.fft.fft(c, n=n, axis=axis)
    if onesided:
        y = np.take(y, np.arange(n // 2 + 1), axis=axis)
    return _from_complex(y, x.dtype)


def _fft_cost(ctx: InferContext, output_types: list[Any], base: Cost) -> Cost:
    """About 5 n log2 n FLOPs per transform of length n (n = the output elements' count)."""
    out = output_types[0] if output_types else None
    if not isinstance(out, TensorType) or not out.numel():
        return base
    n = max(2, int(out.numel()))
    return Cost(0, int(5 * n * math.log2(n)), base.bytes_read, base.bytes_written)


@op("DFT", since=17)
class DFT17(OpSpec):
    """DFT with the axis as an attribute (default 1, the first signal axis)."""

    attrs = {"axis": INT(1), "inverse": INT(0), "onesided": INT(0)}

    def _axis(self, ctx: RunContext, axis_input: np.ndarray | None) -> int:
        return int(ctx.attrs.axis)

    def run(
        self,
        ctx: RunContext,
        x: np.ndarray,
        dft_length: np.ndarray | None = None,
        axis: np.ndarray | None = None,
    ) -> np.ndarray:
        length = None if dft_length is None else int(dft_length)
        a = ctx.attrs
        return _dft(x, self._axis(ctx, axis), length, bool(a.inverse), bool(a.onesided))

    def cost(self, ctx: InferContext, output_types: list[Any]) -> Cost:
        return _fft_cost(ctx, output_types, super().cost(ctx, output_types))


@op("DFT", since=20)
class DFT20(DFT17):
    """DFT with the axis as an optional third input (default -2, the last signal axis)."""

    attrs = {"inverse": INT(0), "onesided": INT(0)}

    def _axis(self, ctx: RunContext, axis_input: np.ndarray | None) -> int:
        return -2 if axis_input is None else int(axis_input)


@op("STFT", since=17)
class STFT(OpSpec):
    """Short-time Fourier transform: [batch, len, 1|2] -> [batch, frames, bins, 2]."""

    attrs = {"onesided": INT(1)}

    def run(
        self,
        ctx: RunContext,
        signal: np.ndarray,
        frame_step: np.ndarray,
        window: np.ndarray | None = None,
        frame_length: np.ndarray | None = None,
    ) -> np.ndarray:
        c = _to_complex(signal)  # [batch, len]
        if frame_length is not None:
            length = int(frame_length)
        elif window is not None:
            length = int(window.shape[0])
        else:
            length = c.shape[1]
        step = int(frame_step)
        n_frames = (c.shape[1] - length) // step + 1
        idx = np.arange(n_frames)[:, None] * step + np.arange(length)[None, :]
        frames = c[:, idx]  # [batch, frames, length]
        if window is not None:
            frames = frames * window.astype(frames.real.dtype)
        y = np.fft.fft(frames, axis=-1)
        if ctx.attrs.onesided:
            y = y[..., : length // 2 + 1]
        return _from_complex(y, signal.dtype)

    def cost(self, ctx: InferContext, output_types: list[Any]) -> Cost:
        return _fft_cost(ctx, output_types, super().cost(ctx, output_types))


class _Window(OpSpec):
    """Generalised cosine window sum_k (-1)^k a_k cos(2 pi k n / N), N = size or size - 1."""

    attrs = {"output_datatype": INT(int(DType.FLOAT)), "periodic": INT(1)}
    coefficients: tuple[float, ...] = (0.5, 0.5)
    flops_per_element = 8

    def run(self, ctx: RunContext, size: np.ndarray) -> np.ndarray:
        n = int(size)
        dtype = DType(ctx.attrs.output_datatype).numpy
        denom = n if ctx.attrs.periodic else n - 1
        if denom <= 0:
            return np.ones(max(n, 0), dtype=dtype)
        phase = 2 * np.pi * np.arange(n, dtype=np.float64) / denom
        w = np.zeros(n, dtype=np.float64)
        for k, a in enumerate(self.coefficients):
            w += (-1) ** k * a * np.cos(k * phase)
        return w.astype(dtype)


@op("HannWindow", since=17)
class HannWindow(_Window):
    coefficients = (0.5, 0.5)


@op("HammingWindow", since=17)
class HammingWindow(_Window):
    coefficients = (25 / 46, 21 / 46)


@op("BlackmanWindow", since=17)
class BlackmanWindow(_Window):
    coefficients = (0.42, 0.5, 0.08)


def _hz_to_mel(hz: float) -> float:
    return 2595.0 * math.log10(1.0 + hz / 700.0)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


@op("MelWeightMatrix", since=17)
class MelWeightMatrix(OpSpec):
    """Triangular mel filterbank of shape [dft_length // 2 + 1, num_mel_bins], peaks at 1."""

    attrs = {"output_datatype": INT(int(DType.FLOAT))}

    def run(
        self,
        ctx: RunContext,
        num_mel_bins: np.ndarray,
        dft_length: np.ndarray,
        sample_rate: np.ndarray,
        lower_edge_hertz: np.ndarray,
        upper_edge_hertz: np.ndarray,
    ) -> np.ndarray:
        n_mel, n_dft, rate = int(num_mel_bins), int(dft_length), int(sample_rate)
        n_bins = n_dft // 2 + 1
        lo_mel = _hz_to_mel(float(lower_edge_hertz))
        hi_mel = _hz_to_mel(float(upper_edge_hertz))
        step = (hi_mel - lo_mel) / (n_mel + 2)
        hz = _mel_to_hz(np.arange(n_mel + 2) * step + lo_mel)
        edges = np.floor((n_dft + 1) * hz / rate).astype(np.int64)
        out = np.zeros((n_bins, n_mel), dtype=np.float64)
        for i in range(n_mel):
            left, center, right = (int(e) for e in edges[i : i + 3])
            if center == left:
                if 0 <= center < n_bins:
                    out[center, i] = 1.0
            else:
                for j in range(max(left, 0), min(center + 1, n_bins)):
                    out[j, i] = (j - left) / (center - left)
            for j in range(max(center, 0), min(right, n_bins)):
                out[j, i] = (right - j) / (right - center)
        return out.astype(DType(ctx.attrs.output_datatype).numpy)
