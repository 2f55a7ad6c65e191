"""Transcendentals as kernel-IR code: polynomials plus exponent bit tricks, no libm.

Every function takes the builder (it binds intermediate values with ``let`` so a value is
computed once) and a float32 expression, and returns a float32 expression. float64 inputs
are computed through float32 (documented precision: about 1e-7 relative, enough for the
1e-4 tolerance of the targets' tests; a float64-exact path is not provided).

The coefficients are the classic minimax fits of the Cephes library for single precision
(public domain): exp on [-ln2/2, ln2/2], log on [sqrt(1/2) - 1, sqrt(2) - 1], tanh on
|x| < 0.625; erf uses Abramowitz and Stegun 7.1.26 (absolute error below 1.5e-7).

Inverse trigonometric, hyperbolic and tan use Cephes's single-precision fits too, with
these reductions and these measured maximum relative errors against numpy's float64 value
of the same float32 input (7 to 9 million inputs each: 4 million random bit patterns,
so every exponent, plus dense samples of the interesting ranges):

=====  ==========================================================  =========
asin   poly on |x| <= 0.5; pi/2 - 2 asin(sqrt((1-|x|)/2)) above      2.0e-7
acos   pi/2 - asin(x); 2 asin(sqrt((1-|x|)/2)), mirrored for x < 0   1.4e-7
atan   |x| to [0, tan(pi/8)] by -1/x and (x-1)/(x+1)                 2.0e-7
sinh   poly on |x| <= 1; h - 1/(4h), h = e**|x| / 2                  1.3e-7
cosh   h + 1/(4h), finite up to |x| = 89.4 (h scaled by 2**-1)       1.4e-7
asinh  poly below 0.5; log(|x| + sqrt(x*x+1)); log|x| + ln2 > 1500   2.4e-7
acosh  sqrt(x-1) poly below 1.5; log(x + sqrt(x*x-1)); log x + ln2   1.6e-7
atanh  poly below 0.5; log((1+x)/(1-x)) / 2                          1.5e-7
tan    exact reduction by pi/2 (below); poly; -1/tan, odd quadrants  1.7e-7
=====  ==========================================================  =========

Domain errors give NaN, atanh(+-1) gives +-inf, signed zeros and infinities follow C.
tan's argument reduction is exact for every finite float32: float64 Cody-Waite with 30-bit
parts of pi/2 below 2**22, Payne-Hanek above (the mantissa times a 96-bit window of 2/pi
picked by the exponent, in 64-bit integer pieces).

Also exact integer/bit algorithms: ``fmod`` (C's fmod, float32 and float64, bit-exact:
(mx * 2**(ex-ey)) mod my by square-and-double in int64), ``mod_floor`` (numpy's float
mod), ``int_pow`` (integer powers by squaring, onnxruntime's conventions for negative
exponents and overflow) and ``pow_int`` (float base, integer exponent, squared in float64).
"""

from __future__ import annotations

import math
import struct

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
    return _exp_scaled(kb, x, 0, 88.73)


def _exp_scaled(kb: KernelBuilder, x: Expr, shift: int, hi: float) -> Expr:
    """e**x * 2**shift, the argument clamped to ``hi`` (a larger ``hi`` with a negative
    shift reaches results whose e**x alone would overflow: cosh and sinh up to 89.4)."""
    x = kb.let(_f32(kb, x), "ex")
    xc = kb.let(minimum(maximum(x, -104.0), hi), "exc")
    n = kb.let(call("roundeven", xc * LOG2E), "en")
    r = kb.let(xc - n * LN2_HI - n * LN2_LO, "er")
    p = _poly(r, [1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1])
    y = kb.let(call("fma", p, r * r, r + 1.0), "ey")
    ni = kb.let(Cast(n, "i32") + Const(shift, "i32") if shift else Cast(n, "i32"), "eni")
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


# Inverse trigonometric and hyperbolic functions (Cephes single-precision fits).

PIO2 = math.pi / 2
PIO4 = math.pi / 4
#: pi/4 minus its float32 rounding: adding it after a subtraction from float32 pi/4 halves
#: asin's worst error just above 0.5.
PIO4_LO = PIO4 - struct.unpack("f", struct.pack("f", PIO4))[0]


def _signed(x: Expr, mag: Expr) -> Expr:
    """``mag`` (>= 0) with the sign bit of ``x`` (so -0 stays -0)."""
    sign = Bin("and", Bitcast(x, "i32"), Const(-(1 << 31), "i32"))
    return Bitcast(Bin("or", Bitcast(mag, "i32"), sign), F)


def _asin_poly(kb: KernelBuilder, s: Expr, z: Expr) -> Expr:
    """asin(s) for |s| <= 0.5, with ``z`` = s*s."""
    p = _poly(z, [4.2163199048e-2, 2.4181311049e-2, 4.5470025998e-2, 7.4953002686e-2, 1.6666752422e-1])
    return kb.let(call("fma", s * z, p, s), "as")


def asin(kb: KernelBuilder, x: Expr) -> Expr:
    """asin: the polynomial on |x| <= 0.5, pi/2 - 2 asin(sqrt((1 - |x|) / 2)) above (1 - |x|
    is exact there); NaN outside [-1, 1]."""
    x = kb.let(_f32(kb, x), "ax")
    a = kb.let(call("fabs", x), "aa")
    big = kb.let(a > 0.5, "ab")
    z = kb.let(Select(big, (1.0 - a) * 0.5, a * a), "az")
    t = _asin_poly(kb, Select(big, call("sqrt", z), a), z)
    r = Select(big, ((_c(PIO4) - t) + PIO4_LO) * 2.0, t)
    return kb.let(Select(a > 1.0, _c(math.nan), _signed(x, r)), "asin")


def acos(kb: KernelBuilder, x: Expr) -> Expr:
    """acos: pi/2 - asin(x) on |x| <= 0.5, 2 asin(sqrt((1 - |x|) / 2)) (mirrored through pi
    for negative x) above; NaN outside [-1, 1]."""
    x = kb.let(_f32(kb, x), "cx")
    a = kb.let(call("fabs", x), "ca")
    big = kb.let(a > 0.5, "cb")
    z = kb.let(Select(big, (1.0 - a) * 0.5, x * x), "cz")
    t = _asin_poly(kb, Select(big, call("sqrt", z), x), z)
    outer = Select(x < 0.0, _c(math.pi) - t * 2.0, t * 2.0)
    r = Select(big, outer, _c(PIO2) - t)
    return kb.let(Select(a > 1.0, _c(math.nan), r), "acos")


def atan(kb: KernelBuilder, x: Expr) -> Expr:
    """atan by reduction to |t| <= tan(pi/8): t = -1/|x| above tan(3pi/8) (offset pi/2),
    t = (|x| - 1)/(|x| + 1) above tan(pi/8) (offset pi/4); sign restored."""
    x = kb.let(_f32(kb, x), "tx")
    a = kb.let(call("fabs", x), "ta")
    big = kb.let(a > 2.414213562373095, "tb")
    mid = kb.let(a > 0.4142135623730950, "tm")
    t = kb.let(Select(big, -1.0 / a, Select(mid, (a - 1.0) / (a + 1.0), a)), "tt")
    base = Select(big, _c(PIO2), Select(mid, _c(PIO4), _c(0.0)))
    z = kb.let(t * t, "tz")
    p = _poly(z, [8.05374449538e-2, -1.38776856032e-1, 1.99777106478e-1, -3.33329491539e-1])
    r = base + call("fma", t * z, p, t)
    return kb.let(_signed(x, r), "atan")


def sinh(kb: KernelBuilder, x: Expr) -> Expr:
    """sinh: an odd polynomial on |x| <= 1, h - 1/(4h) above with h = e**|x| / 2 (finite up
    to |x| = 89.4, where e**|x| alone would overflow)."""
    x = kb.let(_f32(kb, x), "hx")
    a = kb.let(call("fabs", x), "ha")
    h = _exp_scaled(kb, a, -1, 89.5)
    big = h - 0.25 / h
    z = kb.let(a * a, "hz")
    small = call("fma", a * z, _poly(z, [2.03721912945e-4, 8.33028376239e-3, 1.66667160211e-1]), a)
    return kb.let(_signed(x, Select(a > 1.0, big, small)), "sinh")


def cosh(kb: KernelBuilder, x: Expr) -> Expr:
    """cosh = h + 1/(4h) with h = e**|x| / 2 (no cancellation; finite up to |x| = 89.4)."""
    x = kb.let(_f32(kb, x), "kx")
    h = _exp_scaled(kb, call("fabs", x), -1, 89.5)
    return kb.let(h + 0.25 / h, "cosh")


def asinh(kb: KernelBuilder, x: Expr) -> Expr:
    """asinh: an odd polynomial below 0.5, log(|x| + sqrt(x*x + 1)) up to 1500, log(|x|) +
    ln 2 above (x*x would overflow); sign restored."""
    x = kb.let(_f32(kb, x), "sx")
    a = kb.let(call("fabs", x), "sa")
    large = kb.let(a > 1500.0, "sl")
    lg = log(kb, Select(large, a, a + call("sqrt", call("fma", a, a, _c(1.0)))))
    big = Select(large, lg + math.log(2.0), lg)
    z = kb.let(a * a, "sz")
    p = _poly(z, [2.0122003309e-2, -4.2699340972e-2, 7.4847586088e-2, -1.6666288134e-1])
    small = call("fma", a * z, p, a)
    return kb.let(_signed(x, Select(a < 0.5, small, big)), "asinh")


def acosh(kb: KernelBuilder, x: Expr) -> Expr:
    """acosh: sqrt(x - 1) times a polynomial below 1.5 (x - 1 is exact there), log(x +
    sqrt((x - 1)(x + 1))) up to 1500, log(x) + ln 2 above; NaN below 1."""
    x = kb.let(_f32(kb, x), "ox")
    z = kb.let(x - 1.0, "oz")
    large = kb.let(x > 1500.0, "ol")
    lg = log(kb, Select(large, x, x + call("sqrt", z * (x + 1.0))))
    big = Select(large, lg + math.log(2.0), lg)
    p = _poly(z, [1.7596881071e-3, -7.5272886713e-3, 2.6454905019e-2, -1.1784741703e-1, 1.4142135263])
    small = p * call("sqrt", z)
    r = Select(z < 0.5, small, big)
    return kb.let(Select(x < 1.0, _c(math.nan), r), "acosh")


def atanh(kb: KernelBuilder, x: Expr) -> Expr:
    """atanh: an odd polynomial below 0.5, log((1 + x)/(1 - x)) / 2 above, which also gives
    +-inf at +-1 and NaN outside [-1, 1]."""
    x = kb.let(_f32(kb, x), "nx")
    z = kb.let(x * x, "nz")
    p = _poly(z, [1.81740078349e-1, 8.24370301058e-2, 1.46691431730e-1, 1.99782164500e-1, 3.33337300303e-1])
    small = call("fma", x * z, p, x)
    big = log(kb, (1.0 + x) / (1.0 - x)) * 0.5
    return kb.let(Select(call("fabs", x) < 0.5, small, big), "atanh")


# tan, with an argument reduction exact for every float32.

#: pi/2 in three parts; the first two have 30 significant bits, so q * part is exact in
#: float64 for |q| < 2**23 (Cody and Waite).
PIO2_PARTS = (1.570796325802803, 9.920935791635221e-10, 5.170182981794105e-19)
#: 2/pi's binary fraction as 32-bit words after four zero bits: with the first bit after
#: the point numbered 1, word k holds bits 32k-3 .. 32k+28 (bits -3 .. 0 are 0). Payne and
#: Hanek's reduction reads a 96-bit window of these chosen by the exponent of x.
TWO_OVER_PI_WORDS = (0x0A2F9836, 0xE4E44152, 0x9FC2757D, 0x1F534DDC, 0x0DB62959, 0x93C43904, 0x1FE5163A)
#: float32 biased exponents from which the reduction takes the window route (|x| >= 2**22).
LARGE_EXP = 149


def _u64(v: int) -> Const:
    return Const(v, "u64")


def _window_word(kb: KernelBuilder, a: Expr, s: Expr, k: int) -> Expr:
    """32 bits of the 2/pi table from bit 32(a + k) + s, for a in 0..3."""
    def word(j: int) -> Expr:
        w = _u64(TWO_OVER_PI_WORDS[j + 3])
        for i in (2, 1, 0):
            w = Select(Bin("eq", a, Const(i, "u64")), _u64(TWO_OVER_PI_WORDS[i + j]), w)
        return w

    pair = kb.let(Bin("or", Bin("shl", word(k), _u64(32)), word(k + 1)), "pw")
    return kb.let(Bin("shr", Bin("shl", pair, s), _u64(32)), "pw")


def _reduce_large(kb: KernelBuilder, bits: Expr) -> tuple[Expr, Expr]:
    """(r, q) with |x| * 2/pi = q + r / (pi/2), |r| <= pi/4, for |x| >= 2**22 (Payne and
    Hanek): the 24-bit mantissa times a 96-bit window of 2/pi, in 64-bit integer pieces."""
    bexp = kb.let(Cast(Bin("and", Bin("shr", bits, Const(23, "i32")), Const(255, "i32")), "u64"), "pe")
    mant = kb.let(Cast(Bin("or", Bin("and", bits, Const(0x7FFFFF, "i32")), Const(0x800000, "i32")), "u64"), "pm")
    start = kb.let(bexp - _u64(148), "ps")  # bit 32a + s of the table = bit E - 1 of 2/pi
    a = kb.let(Bin("shr", start, _u64(5)), "pa")
    s = kb.let(Bin("and", start, _u64(31)), "pb")
    w2, w1, w0 = (_window_word(kb, a, s, k) for k in range(3))
    hi = kb.let(Bin("shl", mant * w2, _u64(32)) + mant * w1 + Bin("shr", mant * w0, _u64(32)), "ph")
    q = kb.let(Bin("shr", hi + _u64(1 << 61), _u64(62)), "pq")
    frac = Cast(hi - Bin("shl", q, _u64(62)), "i64")
    r = kb.let(Cast(frac, "f64") * Const(2.0**-62 * math.pi / 2, "f64"), "pr")
    return r, Cast(q, "i64")


def _reduce_pio2(kb: KernelBuilder, x: Expr) -> tuple[Expr, Expr]:
    """(r, q) with x = q pi/2 + r, |r| <= pi/4, r in float64 and exact to ~2**-60 relative
    for every finite float32 (q only matters modulo 4)."""
    bits = kb.let(Bitcast(x, "i32"), "rb")
    large = kb.let(Bin("ge", Bin("and", Bin("shr", bits, Const(23, "i32")), Const(255, "i32")), Const(LARGE_EXP, "i32")), "rl")
    xd = kb.let(Cast(Select(large, _c(0.0), x), "f64"), "rx")
    qd = kb.let(call("roundeven", xd * Const(2.0 / math.pi, "f64")), "rq")
    p1, p2, p3 = (Const(v, "f64") for v in PIO2_PARTS)
    small = kb.let(xd - qd * p1 - qd * p2 - qd * p3, "rs")
    r_big, q_big = _reduce_large(kb, bits)
    neg = kb.let(x < 0.0, "rn")
    r = Select(large, Select(neg, -r_big, r_big), small)
    q = Select(large, Select(neg, -q_big, q_big), Cast(qd, "i64"))
    return kb.let(r, "rr"), kb.let(q, "rk")


def tan(kb: KernelBuilder, x: Expr) -> Expr:
    """tan: exact reduction by pi/2, an odd polynomial on [-pi/4, pi/4], -1/tan(r) in odd
    quadrants; NaN for inf and NaN."""
    x = kb.let(_f32(kb, x), "nx")
    rd, q = _reduce_pio2(kb, x)
    r = kb.let(Cast(rd, F), "nr")
    z = kb.let(r * r, "nz")
    p = _poly(z, [9.38540185543e-3, 3.11992232697e-3, 2.44301354525e-2, 5.34112807005e-2, 1.33387994085e-1,
                  3.33331568548e-1])
    t = kb.let(call("fma", r * z, p, r), "nt")
    odd = Bin("eq", Bin("and", q, Const(1, "i64")), Const(1, "i64"))
    y = Select(odd, -1.0 / t, t)
    y = Select(_eq(x, 0.0), x, y)  # keeps -0
    return kb.let(Select(Bin("ne", x - x, _c(0.0)), _c(math.nan), y), "tan")


# Exact floating-point remainders (no libm fmod).

#: dtype → (its bits' integer type, mantissa bits, exponent bias of the mantissa's last
#: bit, smallest normal exponent, exponent bits of the largest difference of exponents)
_FLOAT_LAYOUT = {"f32": ("i32", 23, 150, -126, 8), "f64": ("i64", 52, 1075, -1022, 11)}


def _i64(v: int) -> Const:
    return Const(v, "i64")


def _mant_exp(kb: KernelBuilder, abits: Expr, dtype: str) -> tuple[Expr, Expr]:
    """(m, e) as int64 with |x| = m * 2**(e - bias): the integer mantissa (implicit bit
    added for normal numbers) and the biased exponent (1 for subnormals)."""
    ib, mb, _, _, _ = _FLOAT_LAYOUT[dtype]
    bexp = kb.let(Cast(Bin("shr", abits, Const(mb, ib)), "i64"), "fe")
    frac = Cast(Bin("and", abits, Const((1 << mb) - 1, ib)), "i64")
    m = frac + Select(Bin("eq", bexp, _i64(0)), _i64(0), _i64(1 << mb))
    return kb.let(m, "fm"), kb.let(maximum(bexp, _i64(1)), "fe")


def _mulmod(kb: KernelBuilder, a: Expr, b: Expr, m: Expr, inv: Expr | None) -> Expr:
    """a * b mod m for 0 <= a, b < m. float32 mantissas (< 2**24) multiply exactly in int64;
    for float64 ones (< 2**53) a float64 estimate of the quotient brings a*b - q*m (int64,
    wrapping: its true value is small) into range, and one remainder makes it exact."""
    if inv is None:
        return kb.let(Bin("rem", a * b, m), "fr")
    q = Cast(call("floor", Cast(a, "f64") * Cast(b, "f64") * inv), "i64")
    r = kb.let(Bin("rem", a * b - q * m, m), "fr")
    return kb.let(Select(r < _i64(0), r + m, r), "fr")


def _pow2_mod(kb: KernelBuilder, d: Expr, m: Expr, nbits: int, inv: Expr | None) -> Expr:
    """2**d mod m (d < 2**nbits) by square and double, highest bit of d first."""
    p: Expr = kb.let(Select(Bin("eq", m, _i64(1)), _i64(0), _i64(1)), "fp")
    for k in range(nbits - 1, -1, -1):
        if k != nbits - 1:
            p = _mulmod(kb, p, p, m, inv)
        bit = Bin("ne", Bin("and", d, _i64(1 << k)), _i64(0))
        twice = kb.let(p + p, "fd")
        p = kb.let(Select(bit, Select(Bin("ge", twice, m), twice - m, twice), p), "fp")
    return p


def _scale2(kb: KernelBuilder, v: Expr, e: Expr, dtype: str) -> Expr:
    """v * 2**e for an int64 e from the smallest subnormal's exponent up, in two normal
    factors so that an exact result stays exact."""
    ib, mb, _, emin, _ = _FLOAT_LAYOUT[dtype]
    bias = -emin + 1
    e1 = kb.let(maximum(e, _i64(emin)), "fs")

    def two_to(k: Expr) -> Expr:
        return Bitcast(Bin("shl", Cast(k + _i64(bias), ib), Const(mb, ib)), dtype)

    return v * two_to(e1) * two_to(e - e1)


def fmod(kb: KernelBuilder, x: Expr, y: Expr) -> Expr:
    """C's fmod, exact, for float32 and float64: sign of x, NaN for an infinite x or a zero
    y, x for an infinite y.

    With |x| = mx 2**ex and |y| = my 2**ey (integer mantissas), |x| mod |y| =
    ((mx mod my) * (2**(ex - ey) mod my) mod my) 2**ey: integer arithmetic only, the power
    of two by square and double over the bits of ex - ey.
    """
    dtype = x.dtype
    ib, _, bias, _, nbits = _FLOAT_LAYOUT[dtype]
    width = int(ib[1:])
    sign_bit, abs_mask = Const(-(1 << (width - 1)), ib), Const((1 << (width - 1)) - 1, ib)
    x, y = kb.let(x, "fx"), kb.let(y, "fy")
    bx = kb.let(Bitcast(x, ib), "fb")
    mx, ex = _mant_exp(kb, Bin("and", bx, abs_mask), dtype)
    my, ey = _mant_exp(kb, Bin("and", Bitcast(y, ib), abs_mask), dtype)
    m = kb.let(Select(Bin("eq", my, _i64(0)), _i64(1), my), "fn")
    inv = kb.let(Const(1.0, "f64") / Cast(m, "f64"), "fi") if dtype == "f64" else None
    d = kb.let(maximum(ex - ey, _i64(0)), "fd")
    r = _mulmod(kb, kb.let(Bin("rem", mx, m), "fr"), _pow2_mod(kb, d, m, nbits, inv), m, inv)
    mag = _scale2(kb, Cast(r, dtype), ey - _i64(bias), dtype)
    signed = Bitcast(Bin("or", Bitcast(mag, ib), Bin("and", bx, sign_bit)), dtype)
    res = Select(call("fabs", x) < call("fabs", y), x, signed)
    bad = Bin("or", Bin("ne", x - x, Const(0.0, dtype)), Bin("or", Bin("ne", y, y), Bin("eq", y, Const(0.0, dtype))))
    return kb.let(Select(bad, Const(math.nan, dtype), res), "fmod")


def mod_floor(kb: KernelBuilder, x: Expr, y: Expr) -> Expr:
    """numpy's float mod (sign of y): fmod, plus y where the signs differ, zero signed as y."""
    dtype = x.dtype
    ib = _FLOAT_LAYOUT[dtype][0]
    x, y = kb.let(x, "gx"), kb.let(y, "gy")
    r = kb.let(fmod(kb, x, y), "gr")
    zero = Const(0.0, dtype)
    fix = Bin("and", Bin("ne", r, zero), Bin("ne", r < zero, y < zero))
    sign = Bin("and", Bitcast(y, ib), Const(-(1 << (int(ib[1:]) - 1)), ib))
    signed_zero = Bitcast(sign, dtype)
    return kb.let(Select(Bin("eq", r, zero), signed_zero, Select(fix, r + y, r)), "gmod")


# Powers with integer exponents.


def _int_min(dtype: str) -> Const:
    return Const(-(1 << (int(dtype[1:]) - 1)), dtype)


def to_int_like_x86(kb: KernelBuilder, v: Expr, dtype: str) -> Expr:
    """float → signed int32/int64 truncating, the integer minimum for NaN and out-of-range
    values: what onnxruntime's static_cast gives on x86 (cvttss2si), without LLVM's
    poison for such inputs."""
    v = kb.let(v, "cv")
    lim = float(1 << (int(dtype[1:]) - 1))
    t = call("trunc", v)
    ok = kb.let(Bin("and", Bin("ge", t, Const(-lim, v.dtype)), Bin("lt", t, Const(lim, v.dtype))), "co")
    return Select(ok, Cast(Select(ok, v, Const(0.0, v.dtype)), dtype), _int_min(dtype))


def int_pow(kb: KernelBuilder, x: Expr, n: Expr) -> Expr:
    """x**n for an int32/int64 x and any integer n, exact where the result fits; otherwise
    the integer minimum (onnxruntime's result on x86). Negative n: the power truncated
    toward zero (0 for |x| >= 2, +-1 for x = +-1, the minimum for x = 0).

    Squaring runs over the bits of n below the width (for larger n only x in {-1, 0, 1}
    fits); a float64 copy of |x|**n tells overflow apart from the wrapped integer."""
    dt = x.dtype
    width = int(dt[1:])
    x = kb.let(x, "ix")
    n = kb.let(n, "in")
    neg = Bin("lt", n, Const(0, n.dtype)) if n.dtype[0] == "i" else Const(False, "bool")
    out = kb.let(Bin("or", neg, Bin("ge", n, Const(width, n.dtype))), "io")
    odd = Bin("ne", Bin("and", n, Const(1, n.dtype)), Const(0, n.dtype))
    k = kb.let(Cast(Select(out, Const(0, n.dtype), n), "i64"), "ik")
    acc: Expr = Const(1, dt)
    accf: Expr = Const(1.0, "f64")
    b: Expr = x
    bf: Expr = kb.let(call("fabs", Cast(x, "f64")), "if")
    steps = width.bit_length() - 1
    for j in range(steps):
        bit = kb.let(Bin("ne", Bin("and", k, _i64(1 << j)), _i64(0)), "ib")
        acc = kb.let(Select(bit, acc * b, acc), "ia")
        accf = kb.let(Select(bit, accf * bf, accf), "ia")
        if j < steps - 1:
            b, bf = kb.let(b * b, "ib"), kb.let(bf * bf, "ib")
    inside = Select(Bin("ge", accf, Const(float(1 << (width - 1)), "f64")), _int_min(dt), acc)
    zero = Select(neg, _int_min(dt), Const(0, dt))
    other = Select(Bin("eq", x, Const(0, dt)), zero, Select(neg, Const(0, dt), _int_min(dt)))
    unit = Select(Bin("eq", x, Const(1, dt)), Const(1, dt),
                  Select(Bin("eq", x, Const(-1, dt)), Select(odd, Const(-1, dt), Const(1, dt)), other))
    return kb.let(Select(out, unit, inside), "ipow")


def int_pow_float(kb: KernelBuilder, x: Expr, y: Expr) -> Expr:
    """An int32/int64 x to a float y: an integral y goes the exact ``int_pow`` way; any
    other y through the float32 ``pow_`` and a truncation (the integer minimum for NaN and
    overflow), a result within 2**-20 of an integer taken as that integer."""
    x, y = kb.let(x, "jx"), kb.let(y, "jy")
    cap = float(1 << 30) if y.dtype == "f32" else float(1 << 60)  # even, and above 2**mantissa
    integral = kb.let(Bin("eq", call("trunc", y), y), "ji")
    yc = minimum(maximum(y, Const(-cap, y.dtype)), Const(cap, y.dtype))
    exact = int_pow(kb, x, Cast(Select(integral, yc, Const(0.0, y.dtype)), "i64"))
    v = kb.let(pow_(kb, Cast(x, F), _f32(kb, y)), "jv")
    w = kb.let(call("roundeven", v), "jw")
    v = Select(call("fabs", v - w) <= call("fabs", w) * 2.0**-20, w, v)
    approx = Select(Bin("eq", x, Const(1, x.dtype)), Const(1, x.dtype), to_int_like_x86(kb, v, x.dtype))
    return kb.let(Select(integral, exact, approx), "jpow")


def pow_int(kb: KernelBuilder, x: Expr, n: Expr | int) -> Expr:
    """A float32/float64 x to an integer n (an expression or a Python int) by squaring in
    float64: float32 results are correctly rounded but for rare ties, float64 ones carry
    about |n| * 2**-53 of relative error. n beyond +-2**34 (float32) or +-2**62 (float64)
    is clamped, parity kept: the result is already 0, +-1 or +-inf there."""
    dtype = x.dtype
    b: Expr = kb.let(Cast(x, "f64") if dtype != "f64" else x, "qb")
    one = Const(1.0, "f64")
    if isinstance(n, int):
        acc = _pow_bits(kb, b, abs(n))
        r = one / acc if n < 0 else acc
    else:
        cap, nbits = (1 << 34, 36) if dtype == "f32" else (1 << 62, 63)
        m = _clamp_exponent(kb, n, cap)
        neg = kb.let(m < _i64(0), "qn")
        m = kb.let(Select(neg, -m, m), "qm")
        acc = one
        for j in range(nbits):
            bit = Bin("ne", Bin("and", m, _i64(1 << j)), _i64(0))
            acc = kb.let(Select(bit, acc * b, acc), "qa")
            if j < nbits - 1:
                b = kb.let(b * b, "qb")
        r = Select(neg, one / acc, acc)
    return kb.let(Cast(r, dtype) if dtype != "f64" else r, "qpow")


def _pow_bits(kb: KernelBuilder, b: Expr, m: int) -> Expr:
    """b**m for a known m >= 0: the squarings its bits need, nothing else."""
    acc: Expr | None = None
    while m:
        if m & 1:
            acc = b if acc is None else kb.let(acc * b, "qa")
        m >>= 1
        if m:
            b = kb.let(b * b, "qb")
    return acc if acc is not None else Const(1.0, b.dtype)


def _clamp_exponent(kb: KernelBuilder, n: Expr, cap: int) -> Expr:
    """n as int64 within [-cap - 1, cap + 1], its parity kept (cap is even)."""
    if n.dtype == "u64":
        low = Bin("and", n, Const(1, "u64"))
        return kb.let(Cast(Bin("or", Bin("and", minimum(n, Const(cap, "u64")), Const(~1 & (2**64 - 1), "u64")), low), "i64"), "qc")
    n64 = kb.let(Cast(n, "i64"), "qc")
    c = minimum(maximum(n64, _i64(-cap)), _i64(cap))
    return kb.let(Bin("or", Bin("and", c, _i64(~1)), Bin("and", n64, _i64(1))), "qc")
