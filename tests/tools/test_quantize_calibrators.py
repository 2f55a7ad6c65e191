"""Calibrators on known distributions: min-max is exact, percentile clips, entropy picks
a threshold below the maximum of a heavy-tailed distribution."""

from __future__ import annotations

import numpy as np

from torsh_gen.tools.quantize.calibrators import (
    EntropyCalibrator,
    MinMaxCalibrator,
    PercentileCalibrator,
    TensorStats,
    best_threshold_bin,
)


def _stats(*batches: np.ndarray, cap: int = 1 << 20) -> TensorStats:
    s = TensorStats(cap=cap)
    for b in batches:
        s.update(b)
    return s


def test_minmax_is_exact_over_batches():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=1000).astype(np.float32), rng.normal(size=1000).astype(np.float32) * 3
    r = MinMaxCalibrator().range(_stats(a, b))
    assert r.lo == float(min(a.min(), b.min())) and r.hi == float(max(a.max(), b.max()))


def test_percentile_clips_rare_outliers():
    rng = np.random.default_rng(2)
    x = rng.uniform(-1, 1, size=100_000).astype(np.float32)
    x[:5] = 50.0  # 0.005% outliers
    r = PercentileCalibrator(percentile=99.9).range(_stats(x))
    assert 0.99 < r.hi < 1.0 and -1.0 < r.lo < -0.99
    assert MinMaxCalibrator().range(_stats(x)).hi == 50.0


def test_entropy_threshold_below_max_on_heavy_tails():
    rng = np.random.default_rng(3)
    x = rng.standard_t(df=2, size=200_000).astype(np.float32)  # heavy tails: max is far out
    s = _stats(x)
    r = EntropyCalibrator().range(s)
    assert 0.0 < r.hi < 0.25 * s.hi
    assert r.lo == -r.hi or r.lo == s.lo


def test_entropy_keeps_the_full_range_of_a_uniform_distribution():
    x = np.random.default_rng(4).uniform(0, 1, size=200_000).astype(np.float32)
    r = EntropyCalibrator().range(_stats(x))
    assert r.lo == 0.0 or r.lo > -1e-6
    assert r.hi > 0.9


def test_kl_search_on_a_histogram_with_an_isolated_outlier():
    hist = np.zeros(2048)
    hist[:200] = 1000.0 * np.exp(-np.arange(200) / 40.0)  # a smooth bulk near zero
    hist[2047] = 1.0  # a single far outlier: keeping it would merge the bulk's bins
    assert best_threshold_bin(hist) < 1024


def test_stats_sample_is_bounded_but_min_max_exact():
    rng = np.random.default_rng(5)
    batches = [rng.normal(size=50_000).astype(np.float32) for _ in range(10)]
    s = _stats(*batches, cap=10_000)
    assert s.sample.size <= 10_000 and s.count == 500_000
    assert s.hi == max(float(b.max()) for b in batches)
