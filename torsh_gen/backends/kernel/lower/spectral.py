"""Spectral ops: DFT, STFT and MelWeightMatrix.

Transforms are direct sums, O(n^2) per signal: each output point adds ``count`` products
of a sample and a twiddle. The twiddles are compile-time weights (float64 numpy math;
quarter turns are stored as exact 0 and +-1, so a result whose exact value is real, such
as bin 0 of a real signal, comes out exactly real), with the sign, the 1/n of inverse
transforms and the doubled mirror bins of an inverse one-sided one folded in. Up to
``MATRIX_LIMIT`` entries a transform stores its whole [terms, points] matrix: a vector loop
over the points (a lane per point) around a serial loop over the terms, the samples
scalars, the matrix rows contiguous loads, sums in the data's type. Longer ones read the
length-n table at ``m = j * k mod n`` (a running index, no division) with float64 sums.
No sin/cos runs in the kernel.

Scalars that decide shapes may arrive at run time (DFT's ``axis`` and ``dft_length``,
STFT's ``frame_length``). The static output shape leaves a few possible values (an axis
whose length fits; ``n`` or ``n + 1`` behind a one-sided spectrum of ``n / 2 + 1`` bins):
each gets its own loop nest at compile time and the run-time value selects one. A value
that matches none writes zeros, since a kernel cannot report an error. STFT's
``frame_step`` only moves the frames: it is read at run time and each frame start is
clamped so that a frame never leaves the signal.

MelWeightMatrix is computed at compile time when its five scalar inputs are constants;
otherwise the kernel computes it from the run-time scalars with the polynomial ``log`` and
``exp`` of ``math.py`` (float32: a band edge that falls within rounding of an integer
frequency bin may land one bin off the float64 reference).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from torsh_gen.backends.kernel import math as km
from torsh_gen.backends.kernel.builder import BufferRef, KernelBuilder
from torsh_gen.backends.kernel.interp import numpy_dtype
from torsh_gen.backends.kernel.ir import (
    Cast,
    Const,
    Expr,
    Select,
    call,
    eq,
    idx,
    is_float,
    logical_and,
    logical_or,
    maximum,
    minimum,
)
from torsh_gen.backends.kernel.lower import LowerCtx, LoweringDeclined, lowers, prod
from torsh_gen.backends.kernel.lower.shape import fill

F64 = "f64"
#: A choice among compile-time variants: (run-time condition or None, the variant's body).
Option = tuple[Expr | None, Callable[[], None]]


# --------------------------------------------------------------------------- helpers
def twiddle_table(n: int) -> tuple[np.ndarray, np.ndarray]:
    """``cos`` and ``sin`` of ``2 pi m / n`` for ``m < n``, exact at quarter turns."""
    m = np.arange(n, dtype=np.int64)
    angle = 2.0 * np.pi * m / n
    cos, sin = np.cos(angle), np.sin(angle)
    quarter = (4 * m) % n == 0
    turn = ((4 * m) // n)[quarter] % 4
    cos[quarter] = np.array([1.0, 0.0, -1.0, 0.0])[turn]
    sin[quarter] = np.array([0.0, 1.0, 0.0, -1.0])[turn]
    return cos, sin


#: Entries of a twiddle matrix ([terms, points]) up to which a transform reads its own
#: matrix; longer ones read the length-n table through a running index (weights and cache
#: stay small).
MATRIX_LIMIT = 1 << 18
#: A sample loader: term index -> (real, imaginary or None) in the accumulation type.
Load = Callable[[Expr], tuple[Expr, Expr | None]]
#: An output writer: (point index, real sum, imaginary sum).
Store = Callable[[Expr, Expr, Expr], None]


@dataclass(frozen=True)
class Transform:
    """One signal's transform: ``points`` outputs of a length-``n`` DFT from ``count``
    terms (``inverse``: e^{+i...} / n; ``hermitian``: the real part of an inverse one-sided
    spectrum, where every bin but 0 and n/2 stands for itself and its mirror)."""

    n: int
    count: int
    points: int
    inverse: bool
    hermitian: bool = False

    def term_weights(self) -> np.ndarray:
        """Per-term factor: the scale, doubled for mirrored bins of a hermitian sum."""
        j = np.arange(self.count)
        w = np.full(self.count, 1.0 / self.n if self.inverse else 1.0)
        if self.hermitian:
            mirrored = (j != 0) & ~((self.n % 2 == 0) & (j == self.n // 2))
            w[mirrored] *= 2.0
        return w

    def matrices(self) -> tuple[np.ndarray, np.ndarray]:
        """[count, points] C and S with re += a C - b S, im += b C + a S (sign, scale and
        term weights folded in)."""
        cos, sin = twiddle_table(self.n)
        m = (np.arange(self.count)[:, None] * np.arange(self.points)[None, :]) % self.n
        w = self.term_weights()[:, None]
        return cos[m] * w, sin[m] * w * (1.0 if self.inverse else -1.0)


class Transformer:
    """Emits transforms into one kernel; their twiddle weights are stored once each."""

    def __init__(self, ctx: LowerCtx, dtype: str) -> None:
        self.ctx = ctx
        self.dtype = dtype  # of the matrices and the vector accumulators
        self._weights: dict[tuple, tuple[BufferRef, BufferRef]] = {}

    def points(self, tr: Transform, load: Load, store: Store) -> None:
        """Every output point of one signal (inside the caller's loop over signals)."""
        if tr.count * tr.points <= MATRIX_LIMIT:
            self._by_matrix(tr, load, store)
        else:
            self._by_index(tr, load, store)

    def _stored(
        self, key: tuple, make: Callable[[], tuple[np.ndarray, np.ndarray]], dtype: str
    ) -> tuple[BufferRef, BufferRef]:
        if key not in self._weights:
            c, s = make()
            self._weights[key] = (self.ctx.weight(c, dtype), self.ctx.weight(s, dtype))
        return self._weights[key]

    def _by_matrix(self, tr: Transform, load: Load, store: Store) -> None:
        """A vector loop over the points (each lane one point, its accumulators a lane of
        a vector local) around a serial loop over the terms: the samples are scalars,
        the matrix rows contiguous vector loads."""
        kb, dt = self.ctx.kb, self.dtype
        cm, sm = self._stored(("m", tr), tr.matrices, dt)
        k_n = tr.points
        with kb.loop(k_n, kind="vector", width=self.ctx.vector_width(k_n), hint="k") as k:
            re = kb.local(dt, Const(0.0, dt), "re")
            im = kb.local(dt, Const(0.0, dt), "im")
            with kb.loop(tr.count, hint="j") as j:
                a, b = load(j)
                at = kb.let(j * k_n + k, "w")
                c, s = kb.let(cm[at], "c"), kb.let(sm[at], "s")
                kb.assign(re, re + a * c if b is None else re + (a * c - b * s))
                if not tr.hermitian:
                    kb.assign(im, im + a * s if b is None else im + (b * c + a * s))
            store(k, re, im)

    def _by_index(self, tr: Transform, load: Load, store: Store) -> None:
        """Serial points, float64 sums over the length-n table at ``m = j * k mod n``."""
        kb = self.ctx.kb
        scale, sign = (1.0 / tr.n if tr.inverse else 1.0), (1.0 if tr.inverse else -1.0)

        def tables() -> tuple[np.ndarray, np.ndarray]:
            cos, sin = twiddle_table(tr.n)
            return cos * scale, sin * (scale * sign)

        cos_t, sin_t = self._stored(("t", tr.n, tr.inverse), tables, F64)
        half = tr.n // 2 if tr.n % 2 == 0 else -1
        with kb.loop(tr.points, hint="k") as k:
            re = kb.local(F64, Const(0.0, F64), "re")
            im = kb.local(F64, Const(0.0, F64), "im")
            m = kb.local("i64", idx(0), "m")
            with kb.loop(tr.count, hint="j") as j:
                a, b = (_f64(v) if v is not None else None for v in load(j))
                c, s = kb.let(cos_t[m], "c"), kb.let(sin_t[m], "s")
                if tr.hermitian:
                    w = Select(logical_or(eq(j, 0), eq(j, half)), Const(1.0, F64), Const(2.0, F64))
                    kb.assign(re, re + w * (a * c if b is None else a * c - b * s))
                else:
                    kb.assign(re, re + a * c if b is None else re + (a * c - b * s))
                    kb.assign(im, im + a * s if b is None else im + (b * c + a * s))
                step = kb.let(m + k, "mk")
                kb.assign(m, Select(step >= tr.n, step - tr.n, step))
            store(k, re, im)


def choose(kb: KernelBuilder, options: list[Option], fallback: Callable[[], None]) -> None:
    """Run the first option whose condition holds (None: always), else ``fallback``."""
    if not options:
        fallback()
        return
    cond, body = options[0]
    if cond is None:
        body()
        return
    with kb.if_(cond):
        body()
    with kb.else_():
        choose(kb, options[1:], fallback)


def _all(conds: list[Expr]) -> Expr | None:
    """The conjunction of ``conds`` (None when empty)."""
    out: Expr | None = None
    for c in conds:
        out = c if out is None else logical_and(out, c)
    return out


def _f64(e: Expr) -> Expr:
    return e if e.dtype == F64 else Cast(e, F64)


def _as(e: Expr, dtype: str) -> Expr:
    return e if e.dtype == dtype else Cast(e, dtype)


def _float_io(ctx: LowerCtx) -> str:
    """The output element type; declines unless float32/float64."""
    dtype = ctx.y(0).dtype
    if not is_float(dtype) or not is_float(ctx.x(0).dtype):
        raise LoweringDeclined(f"{ctx.node.op_type} is lowered for float32/float64 data")
    return dtype


def _zero_output(ctx: LowerCtx) -> Callable[[], None]:
    """A fallback that writes zeros over output 0."""
    n = prod(ctx.out_shape(0))
    return lambda: fill(ctx, ctx.y(0), 0, n, Const(0.0, ctx.y(0).dtype), n)


def _runtime_int(ctx: LowerCtx, i: int) -> tuple[int | None, Expr | None]:
    """Input ``i`` as (compile-time int, None) or (None, run-time i64 expression)."""
    v = ctx.const(i)
    if v is not None:
        return int(np.asarray(v).reshape(-1)[0]), None
    if prod(ctx.in_shape(i)) < 1:
        raise LoweringDeclined(f"input {i} is empty where a scalar is expected")
    return None, ctx.kb.let(_as(ctx.x(i)[0], "i64"), "rt")


def _spectrum_lengths(bins: int, onesided: bool) -> list[int]:
    """Transform lengths that give ``bins`` output points."""
    if not onesided:
        return [bins]
    return [n for n in (2 * (bins - 1), 2 * bins - 1) if n >= 1]


# --------------------------------------------------------------------------- DFT
@dataclass(frozen=True)
class _DftCase:
    """One compile-time variant of a DFT: signal ``axis`` and transform length ``n``."""

    axis: int
    n: int


def _dft_shape(x: tuple[int, ...], c: _DftCase, inverse: bool, onesided: bool) -> tuple:
    out = list(x)
    out[c.axis] = c.n // 2 + 1 if onesided and not inverse else c.n
    out[-1] = 1 if inverse and onesided else 2
    return tuple(out)


def _dft_axes(ctx: LowerCtx, rank: int) -> tuple[list[int], Expr | None]:
    """Candidate signal axes and the run-time axis (normalized) when it is not static."""
    if ctx.opset < 20:
        given: int | None = int(ctx.attrs.get("axis", 1))
        rt = None
    elif not ctx.has(2):
        given, rt = -2, None
    else:
        given, rt = _runtime_int(ctx, 2)
    if rt is not None:
        rt = ctx.kb.let(Select(rt < 0, rt + rank, rt), "ax")
        return list(range(rank - 1)), rt
    assert given is not None
    axis = given + rank if given < 0 else given
    if not 0 <= axis <= rank - 2:
        raise LoweringDeclined(f"DFT axis {given} is not a signal axis of a rank-{rank} input")
    return [axis], None


def _dft_lengths(
    x: tuple, out: tuple, axis: int, inverse: bool, onesided: bool, given: int | None, runtime: bool
) -> list[int]:
    """Candidate transform lengths along ``axis``."""
    if given is not None:
        return [given]
    if not runtime:
        return [2 * (x[axis] - 1) if inverse and onesided else x[axis]]
    return _spectrum_lengths(out[axis], onesided and not inverse)


@lowers("DFT")
def lower_dft(ctx: LowerCtx) -> None:
    """Forward, inverse, one-sided and inverse one-sided (real output) DFTs along an axis."""
    x, out = ctx.in_shape(0), ctx.out_shape(0)
    dtype = _float_io(ctx)
    if len(x) < 2 or x[-1] not in (1, 2):
        raise LoweringDeclined("DFT input needs a last dimension of 1 (real) or 2 (complex)")
    inverse, onesided = bool(ctx.attrs.get("inverse", 0)), bool(ctx.attrs.get("onesided", 0))
    axes, axis_rt = _dft_axes(ctx, len(x))
    given, length_rt = _runtime_int(ctx, 1) if ctx.has(1) else (None, None)
    if given is not None and given < 1:
        raise LoweringDeclined(f"dft_length {given} must be positive")
    cases = [
        _DftCase(a, n)
        for a in axes
        for n in _dft_lengths(x, out, a, inverse, onesided, given, length_rt is not None)
        if n >= 1 and _dft_shape(x, _DftCase(a, n), inverse, onesided) == tuple(out)
    ]
    if not cases:
        raise LoweringDeclined(f"no DFT axis and length give the output shape {out}")
    if prod(out) == 0:
        return
    tf = Transformer(ctx, dtype)
    options: list[Option] = []
    for c in cases:
        conds = ([eq(axis_rt, c.axis)] if axis_rt is not None else []) + (
            [eq(length_rt, c.n)] if length_rt is not None else []
        )
        options.append((_all(conds), _dft_body(ctx, tf, c, inverse, onesided)))
    choose(ctx.kb, options, _zero_output(ctx))


def _dft_body(
    ctx: LowerCtx, tf: Transformer, c: _DftCase, inverse: bool, onesided: bool
) -> Callable[[], None]:
    """The loop nest of one variant: every signal along ``c.axis``, all its points."""
    x_shape, out = ctx.in_shape(0), ctx.out_shape(0)
    length, points = x_shape[c.axis], out[c.axis]
    outer, inner = prod(x_shape[: c.axis]), prod(x_shape[c.axis + 1 : -1])
    cin, cout = x_shape[-1], out[-1]
    hermitian = inverse and onesided
    tr = Transform(c.n, min(length, c.n // 2 + 1 if hermitian else c.n), points, inverse, hermitian)

    def body() -> None:
        kb, xb, y, dt = ctx.kb, ctx.x(0), ctx.y(0), tf.dtype
        work = outer * inner * points * tr.count
        with kb.loop(outer * inner, kind=ctx.outer_kind(work), hint="sig") as sig:
            o, i = (
                (kb.let(sig // inner, "o"), kb.let(sig % inner, "i"))
                if inner > 1
                else (sig, idx(0))
            )
            src = kb.let((o * (length * inner) + i) * cin, "src")
            dst = kb.let((o * (points * inner) + i) * cout, "dst")

            def load(j: Expr) -> tuple[Expr, Expr | None]:
                at = kb.let(src + j * (inner * cin), "at")
                return _as(xb[at], dt), (_as(xb[at + 1], dt) if cin == 2 else None)

            def store(k: Expr, re: Expr, im: Expr) -> None:
                at = kb.let(dst + k * (inner * cout), "out")
                y[at] = _as(re, y.dtype)
                if cout == 2:
                    y[at + 1] = _as(im, y.dtype)

            tf.points(tr, load, store)

    return body


# --------------------------------------------------------------------------- STFT
def _stft_lengths(
    ctx: LowerCtx, signal: int, bins: int, onesided: bool
) -> tuple[list[int], Expr | None]:
    """Candidate frame lengths and the run-time frame_length (None when static)."""
    if ctx.has(2):
        return [ctx.in_shape(2)[0] if ctx.in_shape(2) else 1], None
    if not ctx.has(3):
        return [signal], None
    given, rt = _runtime_int(ctx, 3)
    return ([given] if given is not None else _spectrum_lengths(bins, onesided)), rt


@lowers("STFT")
def lower_stft(ctx: LowerCtx) -> None:
    """Frames ``frame_step`` apart, each windowed and transformed: [batch, frames, bins, 2]."""
    x, out = ctx.in_shape(0), ctx.out_shape(0)
    dtype = _float_io(ctx)
    if len(x) != 3 or x[-1] not in (1, 2) or len(out) != 4 or out[-1] != 2 or out[0] != x[0]:
        raise LoweringDeclined(f"STFT of a {x} signal into {out}: expected [batch, length, 1|2]")
    if ctx.has(2) and len(ctx.in_shape(2)) != 1:
        raise LoweringDeclined("STFT window must be 1-D")
    onesided = bool(ctx.attrs.get("onesided", 1))
    frames, bins = out[1], out[2]
    lengths, length_rt = _stft_lengths(ctx, x[1], bins, onesided)
    lengths = [n for n in lengths if 1 <= n <= x[1] and (n // 2 + 1 if onesided else n) == bins]
    if not lengths:
        raise LoweringDeclined(f"no frame length fits {bins} bins of a {x[1]}-sample signal")
    step_c, step_rt = _runtime_int(ctx, 1)
    if step_c is not None and (
        step_c < 1 or any((x[1] - n) // step_c + 1 != frames for n in lengths)
    ):
        raise LoweringDeclined(f"frame_step {step_c} does not give {frames} frames")
    if prod(out) == 0:
        return
    step = step_rt if step_rt is not None else idx(step_c)
    tf = Transformer(ctx, dtype)
    options: list[Option] = [
        (eq(length_rt, n) if length_rt is not None else None, _stft_body(ctx, tf, n, step))
        for n in lengths
    ]
    choose(ctx.kb, options, _zero_output(ctx))


def _stft_body(ctx: LowerCtx, tf: Transformer, n: int, step: Expr) -> Callable[[], None]:
    """All frames of all signals for frame length ``n``."""
    x = ctx.in_shape(0)
    _, frames, bins, _ = ctx.out_shape(0)
    length, cin = x[1], x[-1]
    tr = Transform(n, n, bins, inverse=False)

    def body() -> None:
        kb, xb, y, dt = ctx.kb, ctx.x(0), ctx.y(0), tf.dtype
        win = ctx.x(2) if ctx.has(2) else None
        with kb.loop(
            x[0] * frames, kind=ctx.outer_kind(prod(ctx.out_shape(0)) * n), hint="fr"
        ) as t:
            f, b = kb.let(t % frames, "f"), kb.let(t // frames, "b")
            start = kb.let(minimum(maximum(f * step, 0), length - n), "st")
            src = kb.let((b * length + start) * cin, "src")
            dst = kb.let(t * (bins * 2), "dst")

            def load(j: Expr) -> tuple[Expr, Expr | None]:
                at = kb.let(src + j * cin, "at")
                w = kb.let(_as(win[j], dt), "win") if win is not None else None
                re = kb.let(_as(xb[at], dt) * w if w is not None else _as(xb[at], dt), "xr")
                if cin == 1:
                    return re, None
                return re, kb.let(
                    _as(xb[at + 1], dt) * w if w is not None else _as(xb[at + 1], dt), "xi"
                )

            def store(k: Expr, re: Expr, im: Expr) -> None:
                at = kb.let(dst + k * 2, "out")
                y[at] = _as(re, y.dtype)
                y[at + 1] = _as(im, y.dtype)

            tf.points(tr, load, store)

    return body


# --------------------------------------------------------------------------- MelWeightMatrix
@lowers("MelWeightMatrix")
def lower_mel_weight_matrix(ctx: LowerCtx) -> None:
    """Triangular mel filters [dft_length / 2 + 1, num_mel_bins]: a stored table when the
    inputs are constants, else computed in the kernel from the run-time scalars."""
    out = ctx.out_shape(0)
    dtype = ctx.y(0).dtype
    if len(out) != 2 or not is_float(dtype):
        raise LoweringDeclined("MelWeightMatrix is lowered for a 2-D float output")
    consts = [ctx.const(i) for i in range(5)]
    if all(c is not None for c in consts):
        _mel_from_constants(ctx, consts)
        return
    for i in range(5):
        if prod(ctx.in_shape(i)) < 1:
            raise LoweringDeclined(f"input {i} is empty where a scalar is expected")
    if prod(out):
        _mel_kernel(ctx, out[0], out[1], dtype)


def _mel_from_constants(ctx: LowerCtx, consts: list) -> None:
    """Evaluate the op's reference at compile time and copy the table into the output."""
    from torsh_gen.ops.execute import evaluate_node
    from torsh_gen.ops.registry import lookup

    spec = lookup(ctx.node.op_type, ctx.node.domain, ctx.opset)
    got = evaluate_node(spec, ctx.node, ctx.attrs, ctx.opset, consts)
    if got is None or tuple(np.shape(got[0])) != tuple(ctx.out_shape(0)):
        raise LoweringDeclined("MelWeightMatrix constants do not give the output shape")
    table = np.asarray(got[0]).astype(numpy_dtype(ctx.y(0).dtype)).reshape(-1)
    src, y, n = ctx.weight(table, ctx.y(0).dtype), ctx.y(0), table.size
    with ctx.kb.loop(n, kind="vector", width=ctx.vector_width(n)) as i:
        y[i] = src[i]


def _mel_edges(ctx: LowerCtx, n_mel: int) -> BufferRef:
    """Scratch of the ``n_mel + 2`` band edges, as spectrogram bins (floor, i64)."""
    kb = ctx.kb
    f = "f32"

    def scalar(i: int) -> Expr:
        return kb.let(_as(ctx.x(i)[0], f), "sc")

    n_dft, rate, lo, hi = scalar(1), scalar(2), scalar(3), scalar(4)
    to_mel = 2595.0 / math.log(10.0)
    lo_mel = kb.let(km.log(kb, lo / 700.0 + 1.0) * to_mel, "lm")
    hi_mel = kb.let(km.log(kb, hi / 700.0 + 1.0) * to_mel, "hm")
    step = kb.let((hi_mel - lo_mel) / float(n_mel + 2), "ms")
    edges = ctx.scratch("i64", n_mel + 2)
    with kb.loop(n_mel + 2, hint="e") as e:
        mel = kb.let(_as(e, f) * step + lo_mel, "mel")
        hz = kb.let((km.exp(kb, mel / to_mel) - 1.0) * 700.0, "hz")
        edges[e] = Cast(call("floor", (n_dft + 1.0) * hz / rate), "i64")
    return edges


def _mel_kernel(ctx: LowerCtx, n_bins: int, n_mel: int, dtype: str) -> None:
    """Zero the matrix, then per filter its rising and falling edge (rows clamped)."""
    kb, y = ctx.kb, ctx.y(0)
    edges = _mel_edges(ctx, n_mel)
    fill(ctx, y, 0, n_bins * n_mel, Const(0.0, dtype), n_bins * n_mel)
    with kb.loop(n_mel, hint="b") as i:
        left, center, right = (kb.let(edges[i + d], "edge") for d in range(3))
        with kb.if_(eq(center, left)):
            with kb.if_(logical_and(center >= 0, center < n_bins)):
                y[center * n_mel + i] = Const(1.0, dtype)
        with kb.else_():
            _mel_ramp(kb, y, i, n_bins, n_mel, left, center, True, dtype)
        _mel_ramp(kb, y, i, n_bins, n_mel, center, right, False, dtype)


def _mel_ramp(
    kb: KernelBuilder,
    y: BufferRef,
    i: Expr,
    n_bins: int,
    n_mel: int,
    lo: Expr,
    hi: Expr,
    rising: bool,
    dtype: str,
) -> None:
    """Rising: (j - lo) / (hi - lo) for lo <= j <= hi; falling: (hi - j) / (hi - lo) for
    lo <= j < hi; only rows inside the matrix are written."""
    with kb.if_(hi > lo):
        span = kb.let(_as(hi - lo, dtype), "span")
        first = kb.let(maximum(lo, 0), "j0")
        stop = kb.let(minimum(hi + 1 if rising else hi, n_bins), "j1")
        with kb.loop(stop, start=first, hint="j") as j:
            num = j - lo if rising else hi - j
            y[j * n_mel + i] = _as(num, dtype) / span


__all__ = ["MATRIX_LIMIT", "Transform", "Transformer", "choose", "twiddle_table"]
