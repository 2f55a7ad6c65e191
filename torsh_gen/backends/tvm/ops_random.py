"""Random ops → Relax: RandomUniform(Like), RandomNormal(Like), Bernoulli, Multinomial, and
Dropout in training mode (``dropout_training``, for the Dropout converter to call).

The generator is the native targets' counter-based one (``kernel/lower/random.py``, whose
constants this module imports): draw ``i`` of a node takes its 64 bits from splitmix64's
finalizer of ``key + (i + 1) * golden``, the key from the node's ``seed``. A seeded node's
draws therefore depend only on the seed and the output's shape: they are computed here,
at build time, with numpy's wrapping uint64 arithmetic, and enter the module as a weight
(uniform and normal samples as they are; Bernoulli, Multinomial and Dropout compare the
run-time input with the uniform draws). The uniform ops and Bernoulli draw the same
numbers as the native targets; normals use numpy's float32 log and cos, so they agree
with the native targets' polynomials to rounding only.

Why at build time rather than in a TIR kernel: TVM's simplifier folds 64-bit constant
arithmetic wrongly once a value passes 2^63 (it saturates, or rejects the literal), and
unrolled loops and Relax's FoldConstant make element numbers and keys constants, so an
in-kernel hash of a seeded node comes out constant.

Unseeded nodes are declined. Drawing new numbers per call needs a counter that outlives
the call; the converter builds ``main`` pure (``pure=True``), its weights are inputs that
``LiftTransformParams`` may fold, and the package's ``run`` keeps no state. A per-call
counter would be a new input of ``main`` that the package (templates/tvm/__init__.py.j2
and session.py) keeps and advances: a change to the core, not to a converter.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from torsh_gen.backends.kernel.lower.random import _M1, _M2, _MASK, GOLDEN, _mix_int
from torsh_gen.backends.tvm.convert import Ctx, Decline, converts, numpy_dtype
from torsh_gen.ir.graph import Node


def seed_key(node: Node, stream: int = 0) -> int:
    """The node's 64-bit key from its ``seed`` attribute (as the native targets derive
    it); Decline for an unseeded node (see the module doc)."""
    seed = node.attr("seed")
    if seed is None:
        raise Decline(
            f"an unseeded {node.op_type} draws new numbers per call, which needs state a pure "
            "Relax function cannot keep; give the node a seed attribute"
        )
    base = int(np.asarray(float(seed), np.float64).view(np.uint64))
    return _mix_int(base + stream * GOLDEN) & _MASK


def draw_bits(key: int, counters: np.ndarray) -> np.ndarray:
    """64 random bits (uint64) per element number in ``counters``."""
    with np.errstate(over="ignore"):
        z = np.uint64(key) + (counters.astype(np.uint64) + np.uint64(1)) * np.uint64(
            GOLDEN
        )
        z = (z ^ (z >> np.uint64(30))) * np.uint64(_M1)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(_M2)
        return z ^ (z >> np.uint64(31))


def uniform01(bits: np.ndarray, dtype: Any, open_low: bool = False) -> np.ndarray:
    """Floats in [0, 1) of ``dtype`` (float32 or float64) from 64 bits each, (0, 1] when
    ``open_low``: the top 24 or 53 bits, as the native targets take them."""
    mant = 53 if np.dtype(dtype) == np.float64 else 24
    top = bits >> np.uint64(64 - mant)
    if open_low:
        top = top + np.uint64(1)
    return top.astype(dtype) * np.asarray(2.0**-mant, dtype)


def _static(ctx: Ctx, node: Node, dims: list[Any]) -> list[int]:
    if not all(isinstance(d, int) for d in dims):
        raise Decline(
            f"{node.op_type} needs a static shape for the TVM backend (its draws are made at build time)"
        )
    return dims


def _uniform(ctx: Ctx, node: Node, dims: list[Any], dtype: Any) -> np.ndarray:
    """The node's uniform draws 0..n-1 shaped ``dims``."""
    shape = _static(ctx, node, dims)
    bits = draw_bits(seed_key(node), np.arange(int(np.prod(shape)), dtype=np.uint64))
    return uniform01(bits, dtype).reshape(shape)


def _out_dtype(ctx: Ctx, node: Node) -> str:
    dtype = ctx.dtype(node.outputs[0])
    if dtype not in ("float16", "float32", "float64"):
        raise Decline(f"{node.op_type} of {dtype} (float types only)")
    return dtype


def _out_shape(ctx: Ctx, node: Node) -> list[Any]:
    """The attribute ``shape``, or the input's for the Like ops."""
    if node.op_type.endswith("Like"):
        return ctx.shape(node.inputs[0])
    return [int(d) for d in node.attr("shape")]


# -- samplers -------------------------------------------------------------------------------
@converts("RandomUniform", "RandomUniformLike")
def random_uniform(ctx: Ctx, node: Node) -> Sequence[Any]:
    """low + (high - low) * u in float32 (float64 for double), kept below ``high`` where
    rounding would reach it, as the native targets."""
    dtype = _out_dtype(ctx, node)
    wd = np.float64 if dtype == "float64" else np.float32
    low, high = float(node.attr("low", 0.0)), float(node.attr("high", 1.0))
    u = _uniform(ctx, node, _out_shape(ctx, node), wd)
    v = u * wd(high - low) + wd(low)
    if high > low:
        v = np.minimum(v, np.nextafter(wd(high), wd(low)))
    return [ctx.weight(v.astype(numpy_dtype(dtype)))]


@converts("RandomNormal", "RandomNormalLike")
def random_normal(ctx: Ctx, node: Node) -> Sequence[Any]:
    """mean + scale * z, z by Box-Muller in float32 from draws 2i and 2i + 1."""
    key = seed_key(node)
    dtype = _out_dtype(ctx, node)
    mean, scale = np.float32(node.attr("mean", 0.0)), np.float32(
        node.attr("scale", 1.0)
    )
    shape = _static(ctx, node, _out_shape(ctx, node))
    n = np.arange(int(np.prod(shape)), dtype=np.uint64)
    u1 = uniform01(draw_bits(key, n * np.uint64(2)), np.float32, open_low=True)
    u2 = uniform01(draw_bits(key, n * np.uint64(2) + np.uint64(1)), np.float32)
    z = np.sqrt(np.log(u1) * np.float32(-2.0)) * np.cos(u2 * np.float32(2.0 * np.pi))
    v = (z * scale + mean).reshape(shape)
    return [ctx.weight(v.astype(numpy_dtype(dtype)))]


@converts("Bernoulli")
def bernoulli(ctx: Ctx, node: Node) -> Sequence[Any]:
    """1 where the node's uniform draw (in the input's float type) is below p, else 0."""
    from tvm import relax

    xdt = ctx.dtype(node.inputs[0])
    if xdt not in ("float32", "float64"):
        raise Decline(f"Bernoulli of {xdt}")
    u = _uniform(ctx, node, ctx.shape(node.inputs[0]), np.dtype(xdt))
    hit = ctx.emit(relax.op.less(ctx.weight(u), ctx.x(node.inputs[0])))
    out = ctx.dtype(node.outputs[0])
    return [hit if out == "bool" else ctx.emit(relax.op.astype(hit, out))]


@converts("Multinomial")
def multinomial(ctx: Ctx, node: Node) -> Sequence[Any]:
    """Per row, the running sum of exp(x - max) in float64; sample s picks the first class
    whose running sum passes u * total (the last class if none does), u being draw
    row * samples + s, as the native targets: the pick is the number of running sums
    before the last one that do not pass."""
    from tvm import relax

    x = ctx.x(node.inputs[0])
    dims = ctx.shape(node.inputs[0])
    xdt, out = ctx.dtype(node.inputs[0]), ctx.dtype(node.outputs[0])
    if len(dims) != 2 or not isinstance(dims[1], int) or dims[1] < 1:
        raise Decline(
            f"Multinomial input of shape {dims} (needs [batch, classes] with static classes)"
        )
    if xdt not in ("float32", "float64") or out not in ("int32", "int64"):
        raise Decline(f"Multinomial from {xdt} to {out}")
    b, c = dims
    samples = int(node.attr("sample_size", 1))
    u = _uniform(ctx, node, [b, samples], np.float64)
    wide = ctx.emit(relax.op.astype(x, "float64"))
    peak = ctx.emit(relax.op.max(wide, axis=[1], keepdims=True))
    cdf = ctx.emit(relax.op.cumsum(relax.op.exp(relax.op.subtract(wide, peak)), axis=1))
    total = ctx.emit(
        relax.op.strided_slice(cdf, axes=[1], begin=[c - 1], end=[c])
    )  # [b, 1]
    target = ctx.emit(
        relax.op.expand_dims(relax.op.multiply(ctx.weight(u), total), 2)
    )  # [b, s, 1]
    head = ctx.emit(
        relax.op.expand_dims(
            relax.op.strided_slice(cdf, axes=[1], begin=[0], end=[c - 1]), 1
        )
    )
    below = ctx.emit(
        relax.op.astype(relax.op.less_equal(head, target), "int64")
    )  # [b, s, c-1]
    return [ctx.emit(relax.op.astype(relax.op.sum(below, axis=[2]), out))]


# -- Dropout in training mode ---------------------------------------------------------------
def dropout_training(ctx: Ctx, node: Node) -> list[Any]:
    """Dropout whose training_mode is a constant true or a run-time flag (for the Dropout
    converter to call): element i is kept when its uniform draw (float32) is at least
    ``ratio`` (a constant or read at run time) and then scaled by 1 / (1 - ratio); with
    the flag false at run time the input passes unchanged. Returns [output, mask]."""
    from tvm import relax

    dtype = ctx.dtype(node.inputs[0])
    if dtype not in ("float32", "float64"):
        raise Decline(f"Dropout in training mode of {dtype}")
    u = ctx.weight(_uniform(ctx, node, ctx.shape(node.inputs[0]), np.float32))
    f32 = "float32"
    if ctx.has(node, 1):
        ratio = ctx.emit(
            relax.op.astype(relax.op.reshape(ctx.x(node.inputs[1]), []), f32)
        )
    else:
        ratio = ctx.scalar(0.5, f32)
    keep = ctx.emit(relax.op.greater_equal(u, ratio))
    scale = ctx.emit(
        relax.op.divide(
            ctx.scalar(1.0, f32), relax.op.subtract(ctx.scalar(1.0, f32), ratio)
        )
    )
    if ctx.has(node, 2) and ctx.const(node.inputs[2]) is None:
        on = ctx.emit(
            relax.op.astype(relax.op.reshape(ctx.x(node.inputs[2]), []), "bool")
        )
        keep = ctx.emit(relax.op.logical_or(relax.op.logical_not(on), keep))
        scale = ctx.emit(relax.op.where(on, scale, ctx.scalar(1.0, f32)))
    x = ctx.x(node.inputs[0])
    scaled = ctx.emit(relax.op.multiply(x, relax.op.astype(scale, dtype)))
    y = ctx.emit(relax.op.where(keep, scaled, relax.op.zeros_like(x)))
    mask = keep if len(node.outputs) > 1 and node.outputs[1] is not None else None
    return [y, mask]
