"""Random ops: Bernoulli, RandomUniform(Like), RandomNormal(Like), Multinomial.

None of them is deterministic (never constant-folded). With a ``seed`` attribute each
node draws from its own numpy generator seeded from that value, so a seeded node gives
the same numbers on every run; without one it draws from the interpreter's ``ctx.rng``.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from torsh_gen.ir.types import DType
from torsh_gen.ops.registry import FLOAT, INT, INTS, OpSpec, RunContext, op


def _rng(ctx: RunContext) -> np.random.Generator:
    """A generator seeded from the ``seed`` attribute (a float) if set, else ``ctx.rng``."""
    seed = ctx.attrs.seed
    if seed is None:
        return ctx.rng
    return np.random.default_rng(int(np.asarray(float(seed), np.float64).view(np.uint64)))


def _dtype(ctx: RunContext, fallback: np.dtype) -> np.dtype:
    """The numpy type of the ``dtype`` attribute, or ``fallback`` when it is unset."""
    dt = ctx.attrs.dtype
    return fallback if dt is None else DType(dt).numpy


class _Random(OpSpec):
    """Base of the random ops."""

    deterministic = False
    flops_per_element = 4


@op("Bernoulli", since=15)
class Bernoulli(_Random):
    """1 with probability x[i], else 0; output type ``dtype`` (default: the input's)."""

    attrs = {"dtype": INT(), "seed": FLOAT()}

    def run(self, ctx: RunContext, x: np.ndarray) -> np.ndarray:
        draws = _rng(ctx).random(x.shape)
        return (draws < x.astype(np.float64)).astype(_dtype(ctx, x.dtype))


class _Sampler(_Random):
    """Samples of numpy's ``distribution`` with the two ``params`` attributes, shaped by the
    ``shape`` attribute; type ``dtype`` (default float32, or the input's for the Like ops)."""

    distribution: ClassVar[str] = ""
    params: ClassVar[tuple[str, str]] = ("", "")

    def _shape(self, ctx: RunContext, like: np.ndarray | None) -> tuple[int, ...]:
        return tuple(int(d) for d in ctx.attrs.shape)

    def run(self, ctx: RunContext, like: np.ndarray | None = None) -> np.ndarray:
        a = ctx.attrs
        fallback = like.dtype if like is not None else np.dtype(np.float32)
        draw = getattr(_rng(ctx), self.distribution)
        out = draw(*(a.get(p) for p in self.params), self._shape(ctx, like))
        return out.astype(_dtype(ctx, fallback))


class _ShapedLikeInput(_Sampler):
    """The *Like variants: the output takes the input's shape."""

    def _shape(self, ctx: RunContext, like: np.ndarray | None) -> tuple[int, ...]:
        assert like is not None
        return like.shape


@op("RandomUniform", since=1)
class RandomUniform(_Sampler):
    """Uniform samples in [low, high) of the attribute ``shape``."""

    attrs = {"dtype": INT(1), "high": FLOAT(1.0), "low": FLOAT(0.0), "seed": FLOAT(),
             "shape": INTS(required=True)}
    distribution = "uniform"
    params = ("low", "high")


@op("RandomUniformLike", since=1)
class RandomUniformLike(_ShapedLikeInput):
    """Uniform samples shaped like the input; type ``dtype`` or the input's."""

    attrs = {"dtype": INT(), "high": FLOAT(1.0), "low": FLOAT(0.0), "seed": FLOAT()}
    distribution = "uniform"
    params = ("low", "high")


@op("RandomNormal", since=1)
class RandomNormal(_Sampler):
    """Normal samples with ``mean`` and standard deviation ``scale``."""

    attrs = {"dtype": INT(1), "mean": FLOAT(0.0), "scale": FLOAT(1.0), "seed": FLOAT(),
             "shape": INTS(required=True)}
    distribution = "normal"
    params = ("mean", "scale")


@op("RandomNormalLike", since=1)
class RandomNormalLike(_ShapedLikeInput):
    """Normal samples shaped like the input; type ``dtype`` or the input's."""

    attrs = {"dtype": INT(), "mean": FLOAT(0.0), "scale": FLOAT(1.0), "seed": FLOAT()}
    distribution = "normal"
    params = ("mean", "scale")


@op("Multinomial", since=7)
class Multinomial(_Random):
    """Class indices drawn from rows of unnormalised log-probabilities [batch, classes]."""

    attrs = {"dtype": INT(int(DType.INT32)), "sample_size": INT(1), "seed": FLOAT()}

    def run(self, ctx: RunContext, x: np.ndarray) -> np.ndarray:
        logits = x.astype(np.float64)
        logits = logits - logits.max(axis=-1, keepdims=True)
        probs = np.exp(logits)
        cdf = np.cumsum(probs, axis=-1)
        cdf /= cdf[:, -1:]
        draws = _rng(ctx).random((x.shape[0], int(ctx.attrs.sample_size)))
        idx = np.zeros(draws.shape, dtype=np.int64)
        for b in range(x.shape[0]):
            idx[b] = np.searchsorted(cdf[b], draws[b], side="right")
        idx = np.minimum(idx, x.shape[1] - 1)
        return idx.astype(_dtype(ctx, np.dtype(np.int32)))
