"""Random ops (RandomUniform(Like), RandomNormal(Like), Bernoulli, Multinomial) and BitCast:
the ops that work on raw bits.

The generator is counter based: element ``i`` of a node's output takes its bits from
splitmix64's finalizer applied to ``key + (i + 1) * golden``, where ``key`` comes from the
node's seed. No state is kept, so every element is independent of the loop order, vector
loops and threads give the same numbers, and a seeded node gives the same numbers on every
run and every target (the interpreter included).

Seeds: with the ``seed`` attribute, ``key`` is the splitmix64 hash of the seed's float64
bits, so the node draws the same numbers on every call. Without it, the key also mixes in
a call counter the node keeps in its own persistent workspace state (``ctx.state``): it
advances by one per call, so every call draws new numbers, as the cpu target's
interpreter does; the counter starts from whatever the workspace held (zero in the JIT,
the interpreter and wasm), and the hash of the node's first output name keeps two
unseeded nodes of one model apart.

Uniform floats take the top 24 (float32) or 53 (float64) bits of a draw; normals use
Box-Muller with ``kernel.math``'s float32 log and sin/cos (float64 outputs are computed
in float32 and widened).
"""

from __future__ import annotations

import hashlib
import math

import numpy as np

from torsh_gen.backends.kernel import math as km
from torsh_gen.backends.kernel.builder import KernelBuilder
from torsh_gen.backends.kernel.ir import (
    Bin,
    Bitcast,
    Cast,
    Const,
    Expr,
    Load,
    Select,
    Store,
    Un,
    call,
    idx,
    minimum,
)
from torsh_gen.backends.kernel.lower import LowerCtx, LoweringDeclined, lowers, prod
from torsh_gen.backends.kernel.lower.elementwise import elementwise_nest

GOLDEN = 0x9E3779B97F4A7C15
_M1 = 0xBF58476D1CE4E5B9
_M2 = 0x94D049BB133111EB
_MASK = (1 << 64) - 1


# --------------------------------------------------------------------------- generator
def _mix_int(z: int) -> int:
    """splitmix64's finalizer on a Python int (for keys computed at compile time)."""
    z &= _MASK
    z = ((z ^ (z >> 30)) * _M1) & _MASK
    z = ((z ^ (z >> 27)) * _M2) & _MASK
    return z ^ (z >> 31)


def node_key(ctx: LowerCtx, stream: int = 0) -> Expr:
    """The 64-bit key of the node's draws: from its seed; else from the hash of the first
    output's name and the node's call counter, which this advances (see the module doc)."""
    seed = ctx.attrs.get("seed")
    if seed is not None:
        base = int(np.asarray(float(seed), np.float64).view(np.uint64))
        return _u64(_mix_int(base + stream * GOLDEN))
    base = int.from_bytes(hashlib.sha256(ctx.node.outputs[0].name.encode()).digest()[:8], "little")
    counter = ctx.state("u64", 1)
    calls = ctx.kb.let(counter[0], "calls")
    counter[0] = calls + _u64(1)
    mixed = Bin("mul", Bin("add", calls, _u64(1)), _u64(_CALL_STEP))
    return ctx.kb.let(Bin("add", _u64(_mix_int(base + stream * GOLDEN)), mixed), "key")


#: Odd multiplier that spreads successive calls' keys far apart.
_CALL_STEP = 0xD1B54A32D192ED03


def _u64(v: int) -> Const:
    return Const(v & _MASK, "u64")


def draw_bits(kb: KernelBuilder, key: Expr, counter: Expr) -> Expr:
    """64 random bits for ``counter`` (an i64 element number) under ``key``."""
    z = kb.let(
        Bin("add", key, Bin("mul", Cast(counter, "u64") + _u64(1), _u64(GOLDEN))), "rz"
    )
    z = kb.let(Bin("mul", Bin("xor", z, Bin("shr", z, _u64(30))), _u64(_M1)), "rz")
    z = kb.let(Bin("mul", Bin("xor", z, Bin("shr", z, _u64(27))), _u64(_M2)), "rz")
    return kb.let(Bin("xor", z, Bin("shr", z, _u64(31))), "rb")


def uniform01(kb: KernelBuilder, bits: Expr, dtype: str, open_low: bool = False) -> Expr:
    """A float in [0, 1) of ``dtype`` from 64 random bits (in (0, 1] when ``open_low``)."""
    mant = 53 if dtype == "f64" else 24
    top = Bin("shr", bits, _u64(64 - mant))
    if open_low:
        top = top + _u64(1)
    return kb.let(Cast(top, dtype) * Const(2.0**-mant, dtype), "ru")


def _float_out(ctx: LowerCtx) -> str:
    dtype = ctx.y(0).dtype
    if dtype not in ("f32", "f64"):
        raise LoweringDeclined(f"random output of type {dtype} (float types only)")
    return dtype


def _elements(ctx: LowerCtx, body) -> None:
    """Vector loops (in parallel blocks when large) over the output; ``body(kb, i)`` writes
    element ``i`` (draws depend only on ``i``, so any split gives the same numbers)."""
    n = prod(ctx.out_shape(0))
    elementwise_nest(ctx, (n,), [[1]], lambda index: body(ctx.kb, index[0]))


# --------------------------------------------------------------------------- dropout
@lowers("Dropout")
def lower_dropout(ctx: LowerCtx) -> None:
    """Dropout with its mask output, or in training mode (an alias of its input otherwise).

    At inference (no training_mode input, or a constant false) the data is copied and the
    mask is all true. In training mode (a constant true, or a flag read at run time)
    element ``i`` is kept when its uniform draw is at least ``ratio`` (a constant or read at
    run time) and then scaled by ``1 / (1 - ratio)``, as the spec says; draws come from the
    node's generator (``seed`` attribute, else a per-call counter), so they are not numpy's."""
    shape = ctx.out_shape(0)
    mask = ctx.wants(1)
    mode = ctx.const(2) if ctx.has(2) else np.array(False)
    training = mode is None or bool(np.asarray(mode).any())
    dtype = ctx.y(0).dtype
    if training and dtype not in ("f32", "f64"):
        raise LoweringDeclined(f"Dropout in training mode of {dtype}")
    kb = ctx.kb
    key = node_key(ctx) if training else None
    if training:
        given = ctx.const(1) if ctx.has(1) else np.array(0.5)
        if given is not None:
            ratio: Expr = Const(float(np.asarray(given).reshape(-1)[0]), "f32")
        else:
            r = ctx.x(1)[idx(0)]
            ratio = kb.let(r if r.dtype == "f32" else Cast(r, "f32"), "ratio")
        on: Expr = Const(True, "bool") if mode is not None else kb.let(Cast(ctx.x(2)[idx(0)], "bool"), "train")
        scale = kb.let(Select(on, Const(1.0, "f32") / (Const(1.0, "f32") - ratio), Const(1.0, "f32")), "scale")
    n = prod(shape)

    def body(i: Expr) -> None:
        x = ctx.x(0)[i]
        if key is None:
            ctx.y(0)[i] = x
            if mask:
                ctx.y(1)[i] = Const(True, "bool")
            return
        drawn = Bin("ge", uniform01(kb, draw_bits(kb, key, i), "f32"), ratio)
        keep = kb.let(Bin("or", Un("not", on), drawn), "keep")
        s = scale if dtype == "f32" else Cast(scale, dtype)
        ctx.y(0)[i] = Select(keep, x * s, Const(0.0, dtype))
        if mask:
            ctx.y(1)[i] = keep

    elementwise_nest(ctx, (n,), [[1]], lambda index: body(index[0]))


# --------------------------------------------------------------------------- samplers
@lowers("RandomUniform", "RandomUniformLike")
def lower_uniform(ctx: LowerCtx) -> None:
    """low + (high - low) * u, kept below ``high`` where rounding would reach it."""
    dtype = _float_out(ctx)
    low, high = float(ctx.attrs.low), float(ctx.attrs.high)
    np_t = np.float64 if dtype == "f64" else np.float32
    top = float(np.nextafter(np_t(high), np_t(low))) if high > low else low
    key = node_key(ctx)

    def body(kb: KernelBuilder, i: Expr) -> None:
        u = uniform01(kb, draw_bits(kb, key, i), dtype)
        v = call("fma", u, Const(high - low, dtype), Const(low, dtype))
        ctx.y(0)[i] = minimum(v, Const(top, dtype)) if high > low else v

    _elements(ctx, body)


@lowers("RandomNormal", "RandomNormalLike")
def lower_normal(ctx: LowerCtx) -> None:
    """mean + scale * z, z by Box-Muller from two draws (counters 2i and 2i + 1)."""
    dtype = _float_out(ctx)
    mean, scale = float(ctx.attrs.mean), float(ctx.attrs.scale)
    key = node_key(ctx)

    def body(kb: KernelBuilder, i: Expr) -> None:
        u1 = uniform01(kb, draw_bits(kb, key, i * 2), "f32", open_low=True)
        u2 = uniform01(kb, draw_bits(kb, key, i * 2 + 1), "f32")
        r = kb.let(call("sqrt", km.log(kb, u1) * -2.0), "rr")
        z = kb.let(r * km.sin_cos(kb, u2 * (2.0 * math.pi), "cos"), "rn")
        v = call("fma", z, Const(scale, "f32"), Const(mean, "f32"))
        ctx.y(0)[i] = v if dtype == "f32" else Cast(v, dtype)

    _elements(ctx, body)


@lowers("Bernoulli")
def lower_bernoulli(ctx: LowerCtx) -> None:
    """1 where a uniform draw (in the input's float type) is below p, else 0."""
    x = ctx.x(0)
    if x.dtype not in ("f32", "f64"):
        raise LoweringDeclined(f"Bernoulli input of type {x.dtype}")
    out = ctx.y(0).dtype
    key = node_key(ctx)

    def body(kb: KernelBuilder, i: Expr) -> None:
        u = uniform01(kb, draw_bits(kb, key, i), x.dtype)
        hit = u < x[i]
        ctx.y(0)[i] = hit if out == "bool" else Select(hit, Const(1, out), Const(0, out))

    _elements(ctx, body)


@lowers("Multinomial")
def lower_multinomial(ctx: LowerCtx) -> None:
    """Per batch row: the softmax's running sum over classes, then for each sample the
    first class whose running sum passes u * total (the last class if none does)."""
    b, c = _batch_classes(ctx)
    x, y = ctx.x(0), ctx.y(0)
    if x.dtype not in ("f32", "f64") or y.dtype not in ("i32", "i64"):
        raise LoweringDeclined(f"Multinomial from {x.dtype} to {y.dtype}")
    samples = int(ctx.attrs.sample_size)
    key = node_key(ctx)
    kb = ctx.kb
    cdf = ctx.scratch("f64", b * c)
    with kb.loop(b, kind=ctx.outer_kind(b * c * max(samples, 1))) as r:
        peak = kb.local(x.dtype, x[r * c], "mx")
        with kb.loop(c, start=1) as k:
            kb.assign(peak, Bin("max", peak, x[r * c + k]))
        total = kb.local("f64", Const(0.0, "f64"), "tot")
        with kb.loop(c) as k:
            e = Cast(km.exp(kb, Cast(x[r * c + k] - peak, "f32")), "f64")
            kb.assign(total, total + e)
            cdf[r * c + k] = total
        with kb.loop(samples) as s:
            u = uniform01(kb, draw_bits(kb, key, r * samples + s), "f64")
            target = kb.let(u * total, "tg")
            pick = kb.local("i64", idx(c - 1), "pk")
            with kb.loop(c, kind="rolled") as k:
                found = Bin("and", cdf[r * c + k] > target, Bin("eq", pick, idx(c - 1)))
                kb.assign(pick, Select(Bin("and", found, k < pick), k, pick))
            y[r * samples + s] = Cast(pick, y.dtype)


def _batch_classes(ctx: LowerCtx) -> tuple[int, int]:
    shape = ctx.in_shape(0)
    if len(shape) != 2 or shape[1] < 1:
        raise LoweringDeclined(f"Multinomial input of shape {shape} (needs [batch, classes])")
    return shape[0], shape[1]


# --------------------------------------------------------------------------- BitCast
@lowers("BitCast")
def lower_bitcast(ctx: LowerCtx) -> None:
    """Reinterpret each element's bits: loads and stores of the buffers' declared types
    (a float16 or float8 tensor's raw bits, not its float32 value)."""
    src, dst = ctx.x(0).buffer, ctx.y(0).buffer
    if _width(src.dtype) != _width(dst.dtype):
        raise LoweringDeclined(f"BitCast between {src.dtype} and {dst.dtype} of different widths")
    n = prod(ctx.out_shape(0))
    with ctx.kb.loop(n, kind="vector", width=ctx.vector_width(n)) as i:
        ctx.kb.emit(Store(dst.name, i, _reinterpret(Load(src.name, i, src.dtype), dst.dtype)))


def _width(dtype: str) -> int:
    return 8 if dtype == "bool" else int(dtype[1:])


def _reinterpret(v: Expr, dtype: str) -> Expr:
    """``v``'s bits as ``dtype``: integer to integer of one width is a no-op conversion
    (two's complement), a bool's byte is 0 or 1, floats go through ``Bitcast``."""
    if v.dtype == dtype:
        return v
    if dtype == "bool":
        return Bin("ne", v, Const(0, v.dtype))
    if v.dtype == "bool" or (v.dtype[0] != "f" and dtype[0] != "f"):
        return Cast(v, dtype)
    return Bitcast(v, dtype)
