"""Transcendentals as kernel-IR code: polynomials plus exponent bit tricks, no libm.

Every function takes the builder (it binds intermediate values with ``let`` so a value is
computed once) and a float32 expression, and returns a float32 expression. float64 inputs
are computed through float32 (documented precision: about 1e-7 relative, enough for the
1e-4 tolerance of the targets' tests; a float64-exact path is not provided).

The coefficients are the classic minimax fits of the Cephes library for single precision
(public domain): exp on [-ln2/2, ln2/2], log on [sqrt(1/2) - 1, sqrt(2) - 1], tanh on
|x| < 0.625; erf uses Abramowitz and Stegun 7.1.26 (absolute error below 1.5e-7).
"""

from __future__ import annotations

import math

from torsh_gen.backends.kernel.builder import KernelBuilder
from torsh_gen.backends.kernel.ir import (
    Bin,
    Bitcast,
    Cast,
    Const,
    Expr,
    Select,
    call,
    maximum,
    minimum,
)

F = "f32"
LN2_HI = 0.693359375
LN2_LO = -2.12194440e-4
LOG2E = 1.44269504088896341


def _c(v: float) -> Const:
    return Const(float(v), F)


def _poly(x: Expr, coeffs: list[float]) -> Expr:
    """Horner's rule, highest coefficient first."""
    acc: Expr = _c(coeffs[0])
    for c in coeffs[1:]:
        acc = call("fma", acc, x, _c(c))
    return acc


def _f32(kb: KernelBuilder, x: Expr) -> Expr:
    return x if x.dtype == F else kb.let(Cast(x, F), "xf")


def exp(kb: KernelBuilder, x: Expr) -> Expr:
    """e**x: subnormal results near the bottom, 0 below -104, inf above 88.73, NaN kept.

    The power of two is applied in two halves, so neither factor leaves the normal range.
    """
    x = kb.let(_f32(kb, x), "ex")
    xc = kb.let(minimum(maximum(x, -104.0), 88.73), "exc")
    n = kb.let(call("roundeven", xc * LOG2E), "en")
    r = kb.let(xc - n * LN2_HI - n * LN2_LO, "er")
    p = _poly(r, [1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1])
    y = kb.let(call("fma", p, r * r, r + 1.0), "ey")
    ni = kb.let(Cast(n, "i32"), "eni")
    n1 = kb.let(Bin("shr", ni, Const(1, "i32")), "en1")
    s1 = Bitcast(Bin("shl", n1 + Const(127, "i32"), Const(23, "i32")), F)
    s2 = Bitcast(Bin("shl", ni - n1 + Const(127, "i32"), Const(23, "i32")), F)
    scaled = kb.let(y * s1 * s2, "es")
    return kb.let(Select(_isnan(x), x, scaled), "e")


def log(kb: KernelBuilder, x: Expr) -> Expr:
    """Natural log: -inf at 0, NaN below 0, inf at inf (normal numbers; subnormals as 0)."""
    x = kb.let(_f32(kb, x), "lx")
    bits = kb.let(Bitcast(x, "i32"), "lb")
    e = kb.let(Cast(Bin("and", Bin("shr", bits, Const(23, "i32")), Const(255, "i32")) - Const(126, "i32"), F), "le")
    m = kb.let(Bitcast(Bin("or", Bin("and", bits, Const(0x7FFFFF, "i32")), Const(0x3F000000, "i32")), F), "lm")
    small = kb.let(m < 0.707106781186547524, "ls")
    e2 = kb.let(Select(small, e - 1.0, e), "le")
    f = kb.let(Select(small, m + m - 1.0, m - 1.0), "lf")
    z = kb.let(f * f, "lz")
    p = _poly(f, [7.0376836292e-2, -1.1514610310e-1, 1.1676998740e-1, -1.2420140846e-1, 1.4249322787e-1,
                  -1.6668057665e-1, 2.0000714765e-1, -2.4999993993e-1, 3.3333331174e-1])
    y = kb.let(f * z * p - 0.5 * z + f + e2 * -2.12194440e-4 + e2 * 0.693359375, "ly")
    y = Select(x < 0.0, _c(math.nan), Select(_eq(x, 0.0), _c(-math.inf), y))
    return kb.let(Select(_eq(x, math.inf), _c(math.inf), Select(_isnan(x), x, y)), "l")


def _eq(x: Expr, v: float) -> Expr:
    return Bin("eq", x, _c(v))


def _isnan(x: Expr) -> Expr:
    return Bin("ne", x, x)


def tanh(kb: KernelBuilder, x: Expr) -> Expr:
    """tanh: polynomial near 0, 1 - 2 / (e**2|x| + 1) elsewhere, sign restored."""
    x = kb.let(_f32(kb, x), "tx")
    a = kb.let(call("fabs", x), "ta")
    z = kb.let(x * x, "tz")
    small = call("fma", x * z, _poly(z, [-5.70498872745e-3, 2.06390887954e-2, -5.37397155531e-2, 1.33314422036e-1, -3.33332819422e-1]), x)
    e = exp(kb, minimum(a * 2.0, 88.0))
    big = kb.let(1.0 - 2.0 / (e + 1.0), "tb")
    signed = Select(x < 0.0, -big, big)
    return kb.let(Select(a < 0.625, small, signed), "t")


def sigmoid(kb: KernelBuilder, x: Expr) -> Expr:
    """1 / (1 + e**-x)."""
    x = _f32(kb, x)
    return kb.let(1.0 / (exp(kb, -x) + 1.0), "sg")


def erf(kb: KernelBuilder, x: Expr) -> Expr:
    """erf by Abramowitz and Stegun 7.1.26, sign restored."""
    x = kb.let(_f32(kb, x), "fx")
    a = kb.let(call("fabs", x), "fa")
    t = kb.let(1.0 / call("fma", a, _c(0.3275911), _c(1.0)), "ft")
    p = _poly(t, [1.061405429, -1.453152027, 1.421413741, -0.284496736, 0.254829592])
    y = kb.let(1.0 - t * p * exp(kb, -(a * a)), "fy")
    return kb.let(Select(x < 0.0, -y, y), "f")


def pow_(kb: KernelBuilder, x: Expr, y: Expr) -> Expr:
    """x**y through exp(y log|x|): negative x with an integer y keeps the sign of x**y."""
    x = kb.let(_f32(kb, x), "px")
    y = kb.let(_f32(kb, y), "py")
    mag = exp(kb, y * log(kb, call("fabs", x)))
    yi = call("trunc", y)
    is_int = Bin("eq", yi, y)
    odd = Bin("ne", call("trunc", y * 0.5) * 2.0, yi)
    neg = Select(is_int, Select(odd, -mag, mag), _c(math.nan))
    r = Select(x < 0.0, neg, mag)
    r = Select(Bin("eq", y, _c(0.0)), _c(1.0), r)
    return kb.let(r, "p")


def sin_cos(kb: KernelBuilder, x: Expr, want: str) -> Expr:
    """sin or cos by reduction to [-pi/4, pi/4] (Cody-Waite, three parts of pi/2)."""
    x = kb.let(_f32(kb, x), "sx")
    q = kb.let(call("roundeven", x * (2.0 / math.pi)), "sq")
    r = kb.let(x - q * 1.5703125 - q * 4.837512969970703125e-4 - q * 7.54978995489188216e-8, "sr")
    z = kb.let(r * r, "sz")
    s = kb.let(call("fma", r * z, _poly(z, [-1.9515295891e-4, 8.3321608736e-3, -1.6666654611e-1]), r), "ss")
    c = kb.let(call("fma", z * z, _poly(z, [2.443315711809948e-5, -1.388731625493765e-3, 4.166664568298827e-2]), 1.0 - 0.5 * z), "sc")
    qi = kb.let(Bin("and", Cast(q, "i64") + (1 if want == "cos" else 0), Const(3, "i64")), "sqi")
    val = Select(Bin("eq", Bin("and", qi, Const(1, "i64")), Const(1, "i64")), c, s)
    sign = Select(Bin("ge", qi, Const(2, "i64")), _c(-1.0), _c(1.0))
    return kb.let(val * sign, "sin" if want == "sin" else "cos")
