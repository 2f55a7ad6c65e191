"""Calibrators: strategies that turn observed activation values into a quantization range.

``TensorStats`` gathers, per tensor, the exact minimum and maximum over all calibration
batches and a bounded, evenly strided sample of the values (enough for percentiles and
histograms without keeping every activation in memory). A calibrator reads the stats:

- ``MinMaxCalibrator``: the observed range, exactly;
- ``PercentileCalibrator``: the ``p``-th and ``(100 - p)``-th percentiles, clipping rare
  outliers so the common values get finer steps;
- ``EntropyCalibrator``: the clipping threshold whose 8-bit quantized histogram is closest
  to the unclipped one in KL divergence (the method TensorRT describes: bins beyond the
  candidate threshold fold into the last kept bin; the kept bins are merged into 128
  levels and spread back over their non-empty bins; the threshold with the smallest
  divergence wins). The spike of exact zeros is flattened first, and one-sided tensors
  (uint8 over [0, t]) are judged with 256 levels.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from torsh_gen.passes.quantize import TensorRange

DEFAULT_SAMPLE_CAP = 1 << 20


@dataclass
class TensorStats:
    """Running min/max and a bounded sample of one tensor's values."""

    cap: int = DEFAULT_SAMPLE_CAP
    lo: float = float("inf")
    hi: float = float("-inf")
    count: int = 0
    _parts: list[np.ndarray] = field(default_factory=list)
    _kept: int = 0

    def update(self, values: np.ndarray) -> None:
        """Add one batch of values."""
        flat = np.asarray(values, np.float32).ravel()
        if flat.size == 0:
            return
        self.lo = min(self.lo, float(flat.min()))
        self.hi = max(self.hi, float(flat.max()))
        self.count += flat.size
        per_batch = max(1, self.cap // 8)
        if flat.size > per_batch:
            flat = flat[:: -(-flat.size // per_batch)]
        self._parts.append(flat.copy())
        self._kept += flat.size
        while self._kept > self.cap:  # halve what is kept, evenly
            self._parts = [p[::2] for p in self._parts]
            self._kept = sum(p.size for p in self._parts)

    @property
    def sample(self) -> np.ndarray:
        """The kept values (all of them while fewer than ``cap`` were seen)."""
        return np.concatenate(self._parts) if self._parts else np.zeros(0, np.float32)


class Calibrator(ABC):
    """A strategy mapping a tensor's statistics to the range its quantization covers."""

    name: ClassVar[str] = ""

    @abstractmethod
    def range(self, stats: TensorStats) -> TensorRange:
        """The float range to quantize."""


class MinMaxCalibrator(Calibrator):
    """The observed minimum and maximum."""

    name = "minmax"

    def range(self, stats: TensorStats) -> TensorRange:
        return TensorRange(stats.lo, stats.hi)


@dataclass
class PercentileCalibrator(Calibrator):
    """Clip to the ``percentile``-th (and the mirrored lower) percentile of the values."""

    percentile: float = 99.99
    name: ClassVar[str] = "percentile"

    def range(self, stats: TensorStats) -> TensorRange:
        s = stats.sample
        if s.size == 0:
            return TensorRange(0.0, 0.0)
        lo, hi = np.percentile(s, [100.0 - self.percentile, self.percentile])
        return TensorRange(max(float(lo), stats.lo), min(float(hi), stats.hi))


@dataclass
class EntropyCalibrator(Calibrator):
    """The clipping threshold of least KL divergence (see the module docstring)."""

    bins: int = 2048
    levels: int = 128
    name: ClassVar[str] = "entropy"

    def range(self, stats: TensorStats) -> TensorRange:
        s = np.abs(stats.sample.astype(np.float64))
        amax = max(abs(stats.lo), abs(stats.hi))
        if s.size == 0 or amax == 0.0:
            return TensorRange(stats.lo, stats.hi)
        hist, edges = np.histogram(s, bins=self.bins, range=(0.0, amax))
        # exact zeros (ReLU outputs, padding) stay exact under any threshold: their spike
        # must not pull the threshold down
        hist[0] = min(hist[0], hist[1])
        # a one-sided tensor gets all 256 uint8 levels, a two-sided one 128 per side
        levels = 2 * self.levels if stats.lo >= 0.0 else self.levels
        t = float(edges[best_threshold_bin(hist, levels)])
        return TensorRange(max(stats.lo, -t), min(stats.hi, t))


def best_threshold_bin(hist: np.ndarray, levels: int = 128) -> int:
    """How many leading histogram bins to keep so that KL(P || Q) is smallest."""
    hist = hist.astype(np.float64)
    n = hist.size
    if n <= levels:
        return n
    tail = np.cumsum(hist[::-1])[::-1]  # tail[i] = sum(hist[i:])
    best_i, best_kl = n, np.inf
    for i in range(levels, n + 1):
        kept = hist[:i]
        p = kept.copy()
        if i < n:
            p[-1] += tail[i]  # outliers clip into the last kept bin
        total = p.sum()
        if total == 0:
            continue
        group = (np.arange(i) * levels) // i
        nonzero = kept > 0
        sums = np.bincount(group, weights=kept, minlength=levels)
        counts = np.bincount(group, weights=nonzero, minlength=levels)
        q = np.where(nonzero, sums[group] / np.maximum(counts[group], 1.0), 0.0)
        p /= total
        qs = q.sum()
        if qs == 0:
            continue
        q /= qs
        mask = p > 0
        kl = float(np.sum(p[mask] * np.log(p[mask] / np.maximum(q[mask], 1e-12))))
        if kl < best_kl:
            best_i, best_kl = i, kl
    return best_i


CALIBRATORS: dict[str, type[Calibrator]] = {
    c.name: c for c in (MinMaxCalibrator, PercentileCalibrator, EntropyCalibrator)
}


def make_calibrator(method: str) -> Calibrator:
    """The calibrator called ``method`` with its default settings."""
    return CALIBRATORS[method]()
