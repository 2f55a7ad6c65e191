"""Storage-only element types: float16, bfloat16 and the float8 types held as raw bits.

Kernels compute in float32 and keep narrow-float tensors in their own size: a buffer whose
tensor is ``f16``, ``bf16`` or a float8 type is declared in the kernel as ``u16`` or ``u8``
(its raw bits), and the builder's ``BufferRef`` turns every load into a float32 value and
every store of a float32 value into the nearest narrow value (round to nearest, ties to
even; NaN stays NaN; overflow gives infinity, or NaN in formats without one, as ONNX's
Cast with ``saturate=0`` and ml_dtypes do: Cast clamps first when it saturates). The
conversions are integer and bit operations of the kernel IR, not LLVM's ``half`` type: on
targets without F16C or FP16 instructions LLVM would call compiler-rt's
``__extendhfsf2``/``__truncsfhf2``, which neither libc nor a wasm link provides. So every
target, the interpreter included, converts the same way, and the lowerings never see a
narrow type (``LowerCtx`` reports such tensors as ``f32``).

Rounding happens where the graph stores a tensor, so a chain of float16 ops rounds at
every op boundary, as onnxruntime does for ops it runs in float16.

float8e8m0 (``f8e8m0``, the power-of-two scales of the MX formats) is a biased exponent
alone: 2**(b - 127), 0xFF NaN, no sign, zero or infinity. How a value becomes one depends
on Cast's ``round_mode`` and ``saturate`` (``e8m0_bits``); a plain store rounds as Cast's
defaults do (up, saturating), which keeps every e8m0 value exactly, and only Cast makes
new ones.
"""

from __future__ import annotations

from dataclasses import dataclass

from torsh_gen.backends.kernel.ir import Bin, Bitcast, Cast, Const, Expr, Select


@dataclass(frozen=True)
class Float8:
    """A narrow float layout (8 bits, or 4 for float4e2m1): mantissa bits, bias, codes."""

    mantissa: int
    bias: int
    max_bits: int  #: the largest finite magnitude's bits
    nan: int  #: NaN's magnitude bits (the sign is kept unless ``unsigned_zero``)
    overflow: int  #: what a magnitude beyond max_bits becomes: inf, NaN or (float4) max
    unsigned_zero: bool = False  #: "fnuz": no negative zero, 0x80 is the only NaN
    bits: int = 8

    @property
    def sign(self) -> int:
        """The sign bit."""
        return 1 << (self.bits - 1)


FLOAT8: dict[str, Float8] = {
    "f8e4m3fn": Float8(3, 7, 0x7E, 0x7F, 0x7F),
    "f8e4m3fnuz": Float8(3, 8, 0x7F, 0x80, 0x80, True),
    "f8e5m2": Float8(2, 15, 0x7B, 0x7E, 0x7C),
    "f8e5m2fnuz": Float8(2, 16, 0x7F, 0x80, 0x80, True),
    # float4e2m1 has no inf or NaN: overflow saturates to 6, NaN becomes the -0 pattern
    # (ml_dtypes' choice; ONNX leaves it open). One element per byte, in the low bits.
    "f4e2m1": Float8(1, 1, 0x7, 0x8, 0x7, bits=4),
}
#: sub-byte integers: bits and signedness. One element per byte (numpy/ml_dtypes' layout),
#: in the low bits; a store keeps the low bits (wraps), a load sign-extends.
SMALL_INTS: dict[str, tuple[int, bool]] = {"i4": (4, True), "u4": (4, False), "i2": (2, True), "u2": (2, False)}
#: float8e8m0's kernel-IR name, and Cast's rounding modes for it (``round_mode``).
E8M0 = "f8e8m0"
E8M0_ROUND_MODES = ("up", "down", "nearest")
#: storage dtype → the kernel-IR dtype its buffers are declared with.
STORAGE_DTYPES: dict[str, str] = {
    "f16": "u16",
    "bf16": "u16",
    **{k: "u8" for k in (*FLOAT8, *SMALL_INTS, E8M0)},
}


@dataclass(frozen=True, eq=False)
class HalfToFloat(Bitcast):
    """float16 bits -> float32, marked so a target with a conversion instruction can use
    it: ``x`` is the portable integer expansion that every consumer of the kernel IR
    (interpreter, printer, CPU and wasm emitters) evaluates as an ordinary ``Bitcast``;
    ``bits`` is the raw ``u16`` value inside it, which the NVPTX emitter converts with one
    ``cvt.f32.f16`` instead of about fifteen integer instructions (the same value: the
    conversion is exact)."""

    bits: Expr | None = None


@dataclass(frozen=True, eq=False)
class FloatToHalf(Cast):
    """float32 -> float16 bits, marked like ``HalfToFloat``: ``x`` is the portable
    rounding (nearest, ties to even, overflow to infinity), ``value`` the float32 it
    rounds, which the NVPTX emitter rounds with one ``cvt.rn.f16.f32`` (the same bits
    for every value but NaN, which both keep a NaN)."""

    value: Expr | None = None


def is_storage(dtype: str) -> bool:
    """Whether ``dtype`` is held as raw bits and computed in a wider type."""
    return dtype in STORAGE_DTYPES


def compute_dtype(dtype: str) -> str:
    """The dtype a lowering sees for a tensor of ``dtype`` (float32, or int32 for the
    sub-byte integers)."""
    if dtype in SMALL_INTS:
        return "i32"
    return "f32" if dtype in STORAGE_DTYPES else dtype


def _i(v: int) -> Const:
    return Const(v, "i32")


def _and(a: Expr, m: int) -> Expr:
    return Bin("and", a, _i(m))


def _shl(a: Expr, n: int) -> Expr:
    return Bin("shl", a, _i(n))


def _shr(a: Expr, n: int) -> Expr:
    return Bin("shr", a, _i(n))


def to_f32(bits: Expr, dtype: str) -> Expr:
    """The value (float32; int32 for sub-byte integers) of stored bits (a ``u16``/``u8`` load)."""
    b = Cast(bits, "i32")  # zero-extends
    if dtype in SMALL_INTS:
        width, signed = SMALL_INTS[dtype]
        low = _and(b, (1 << width) - 1)
        return Bin("sub", Bin("xor", low, _i(1 << (width - 1))), _i(1 << (width - 1))) if signed else low
    if dtype in FLOAT8:
        return _f8_to_f32(b, FLOAT8[dtype])
    if dtype == E8M0:
        return _e8m0_to_f32(b)
    if dtype == "bf16":
        return Bitcast(_shl(b, 16), "f32")
    mag = _and(b, 0x7FFF)
    sign = _shl(_and(b, 0x8000), 16)
    normal = Bitcast(Bin("add", _shl(mag, 13), _i(112 << 23)), "f32")  # rebias 15 → 127
    special = Bitcast(Bin("or", _shl(mag, 13), _i(0x7F800000)), "f32")  # inf, NaN payload
    subnormal = Bin("mul", Cast(mag, "f32"), Const(2.0**-24, "f32"))  # exact, no denormal input
    value = Select(Bin("lt", mag, _i(0x400)), subnormal, Select(Bin("ge", mag, _i(0x7C00)), special, normal))
    return HalfToFloat(Bin("or", Bitcast(value, "i32"), sign), "f32", bits=bits)


def from_f32(value: Expr, dtype: str) -> Expr:
    """The stored bits (``u16``/``u8``) of the narrow value nearest to ``value`` (ties to
    even; sub-byte integers keep the low bits of the int32 value)."""
    if dtype in SMALL_INTS:  # the low bits: values out of range wrap, as ml_dtypes does
        v = value if value.dtype == "i32" else Cast(value, "i32")
        return Cast(_and(v, (1 << SMALL_INTS[dtype][0]) - 1), "u8")
    if dtype == E8M0:
        return e8m0_bits(value)
    x = value if value.dtype == "f32" else Cast(value, "f32")
    if dtype in FLOAT8:
        return _f32_to_f8(x, FLOAT8[dtype])
    b = Bitcast(x, "i32")
    mag = _and(b, 0x7FFFFFFF)
    is_nan = Bin("gt", mag, _i(0x7F800000))
    if dtype == "bf16":
        rounded = _shr(Bin("add", b, Bin("add", _i(0x7FFF), _and(_shr(b, 16), 1))), 16)
        bits = Select(is_nan, Bin("or", _and(_shr(b, 16), 0x8000), _i(0x7FC0)), _and(rounded, 0xFFFF))
        return Cast(bits, "u16")
    sign = _and(_shr(b, 16), 0x8000)
    normal = _shr(Bin("add", mag, Bin("add", _i(((15 - 127) << 23) + 0xFFF), _and(_shr(mag, 13), 1))), 13)
    # below the smallest normal half (2**-14): adding 0.5 puts the half's last bit (2**-24)
    # at float32's last bit, so the FPU's own rounding is the half's rounding
    sub = Bin("sub", Bitcast(Bin("add", Bitcast(mag, "f32"), Const(0.5, "f32")), "i32"), _i(0x3F000000))
    inf_or_nan = Select(is_nan, _i(0x7E00), _i(0x7C00))
    half = Select(Bin("ge", mag, _i(0x477FF000)), inf_or_nan, Select(Bin("lt", mag, _i(0x38800000)), sub, normal))
    return FloatToHalf(Bin("or", half, sign), "u16", value=x)


def max_finite(dtype: str) -> float:
    """The largest finite value of a float8 type (what a saturating Cast clamps to)."""
    f = FLOAT8[dtype]
    exp, man = f.max_bits >> f.mantissa, f.max_bits & ((1 << f.mantissa) - 1)
    return (1 + man / (1 << f.mantissa)) * 2.0 ** (exp - f.bias)


def saturated(x: Expr, dtype: str) -> Expr:
    """float32 ``x`` clamped to ±the float8 type's largest finite value, NaN kept (what a
    saturating Cast or QuantizeLinear does before the store rounds). ``x`` is used more
    than once: pass a bound name."""
    top = max_finite(dtype)
    return Select(Bin("ne", x, x), x, Bin("min", Bin("max", x, Const(-top, "f32")), Const(top, "f32")))


def _f8_to_f32(b: Expr, f: Float8) -> Expr:
    mag = _and(b, f.sign - 1)
    shift = 23 - f.mantissa
    normal = Bitcast(Bin("add", _shl(mag, shift), _i((127 - f.bias) << 23)), "f32")
    subnormal = Bin("mul", Cast(mag, "f32"), Const(2.0 ** (1 - f.bias - f.mantissa), "f32"))
    value = Select(Bin("lt", mag, _i(1 << f.mantissa)), subnormal, normal)
    value = Select(Bin("gt", mag, _i(f.max_bits)), Const(float("nan"), "f32"), value)  # fn, e5m2
    if f.max_bits < f.overflow != f.nan:  # infinity exists (e5m2)
        value = Select(Bin("eq", mag, _i(f.overflow)), Const(float("inf"), "f32"), value)
    signed = Bitcast(Bin("or", Bitcast(value, "i32"), _shl(_and(b, f.sign), 32 - f.bits)), "f32")
    if f.unsigned_zero:
        return Select(Bin("eq", b, _i(f.sign)), Const(float("nan"), "f32"), signed)
    return signed


def _f32_to_f8(x: Expr, f: Float8) -> Expr:
    b = Bitcast(x, "i32")
    mag = _and(b, 0x7FFFFFFF)
    shift = 23 - f.mantissa
    lsb = _and(_shr(mag, shift), 1)
    normal = _shr(Bin("add", mag, Bin("add", _i(((f.bias - 127) << 23) + (1 << (shift - 1)) - 1), lsb)), shift)
    # below the smallest normal: adding C, whose last bit is the float8's subnormal step,
    # lets the FPU round (ties to even) at that step
    c = 2.0 ** (1 - f.bias - f.mantissa + 23)
    sub = Bin("sub", Bitcast(Bin("add", Bitcast(mag, "f32"), Const(c, "f32")), "i32"), Bitcast(Const(c, "f32"), "i32"))
    small = Bin("lt", mag, _i((128 - f.bias) << 23))
    r = Select(small, sub, Select(Bin("gt", mag, _i(0x7F000000)), _i(f.overflow), normal))
    r = Select(Bin("gt", r, _i(f.max_bits)), _i(f.overflow), r)
    is_nan = Bin("gt", mag, _i(0x7F800000))
    sign = _and(_shr(b, 32 - f.bits), f.sign)
    if f.unsigned_zero:  # one NaN code, and zero has no sign
        out = Select(Bin("or", is_nan, Bin("eq", r, _i(0x80))), _i(0x80),
                     Select(Bin("eq", r, _i(0)), _i(0), Bin("or", r, sign)))
    elif f.bits == 4:  # float4: NaN is a whole pattern (sign bit only), not a magnitude
        out = Select(is_nan, Select(Bin("eq", sign, _i(0)), _i(f.nan), _i(0)), Bin("or", r, sign))
    else:
        out = Bin("or", Select(is_nan, _i(f.nan), r), sign)
    return Cast(out, "u8")


def _e8m0_to_f32(b: Expr) -> Expr:
    """2**(b - 127) from the bits of the exponent (``b``: int32, 0..255); 0 is 2**-127, a
    float32 subnormal, and 255 NaN. Built from bits alone, no float arithmetic."""
    value = Select(Bin("eq", b, _i(0)), _i(0x00400000), _shl(b, 23))
    return Bitcast(Select(Bin("eq", b, _i(0xFF)), _i(0x7FC00000), value), "f32")


def e8m0_bits(x: Expr, saturate: bool = True, round_mode: str = "up") -> Expr:
    """The float8e8m0 bits (``u8``) of ``|x|`` (float32 or float64; any other type goes
    through float64, as the op's reference does): its exponent, plus one when
    ``round_mode`` rounds its fraction up (``up``: any fraction, ``nearest``: half or more,
    ``down``: never). Beyond 2**127 (infinity too) gives 254 when ``saturate``, else NaN;
    below 2**-127 (zero too) gives 0 when ``saturate``, else NaN; NaN stays NaN (255).
    Reading the exponent and fraction from the bits rounds the exact value once, where a
    float64 source narrowed to float32 first could round twice."""
    if round_mode not in E8M0_ROUND_MODES:
        modes = ", ".join(E8M0_ROUND_MODES)
        raise ValueError(f"float8e8m0 round_mode {round_mode!r} is not one of {modes}")
    if x.dtype == "f32":
        mag = _and(Bitcast(x, "i32"), 0x7FFFFFFF)
        # a subnormal's bits, read as an integer, convert exactly to a normal float32 whose
        # exponent is the value's plus 149 (no float op ever sees a subnormal input)
        norm = Bitcast(Cast(mag, "f32"), "i32")
        sub = Bin("lt", mag, _i(0x00800000))
        exp = Select(sub, Bin("sub", _shr(norm, 23), _i(149)), _shr(mag, 23))
        frac = _and(Select(sub, norm, mag), 0x007FFFFF)
        is_nan = Bin("gt", mag, _i(0x7F800000))
        return _e8m0_round(exp, frac, 1 << 22, is_nan, saturate, round_mode)
    wide = x if x.dtype == "f64" else Cast(x, "f64")
    mag = Bin("and", Bitcast(wide, "i64"), Const(0x7FFFFFFFFFFFFFFF, "i64"))
    # float64's bias is 1023: every magnitude below its smallest normal is far below 2**-127
    exp = Cast(Bin("sub", Bin("shr", mag, Const(52, "i64")), Const(1023 - 127, "i64")), "i32")
    frac = Bin("and", mag, Const((1 << 52) - 1, "i64"))
    is_nan = Bin("gt", mag, Const(0x7FF0000000000000, "i64"))
    return _e8m0_round(exp, frac, 1 << 51, is_nan, saturate, round_mode)


def _e8m0_round(
    exp: Expr, frac: Expr, half: int, is_nan: Expr, saturate: bool, round_mode: str
) -> Expr:
    """The e8m0 bits of a magnitude with biased exponent ``exp`` (int32, bias 127) and
    fraction bits ``frac`` (whose half is ``half``), rounded by ``round_mode``."""
    if round_mode != "down":
        if round_mode == "up":
            up = Bin("ne", frac, Const(0, frac.dtype))
        else:
            up = Bin("ge", frac, Const(half, frac.dtype))
        exp = Bin("add", exp, Select(up, _i(1), _i(0)))
    out = Select(Bin("gt", exp, _i(254)), _i(254 if saturate else 0xFF), exp)
    out = Select(Bin("lt", exp, _i(0)), _i(0 if saturate else 0xFF), out)
    return Cast(Select(is_nan, _i(0xFF), out), "u8")
