"""Storage-only element types: float16 and bfloat16 tensors held as 16-bit patterns.

Kernels compute in float32 and keep half-precision tensors in half the memory: a buffer
whose tensor is ``f16`` or ``bf16`` is declared in the kernel as ``u16`` (its raw bits),
and the builder's ``BufferRef`` turns every load into a float32 value and every store of
a float32 value into the nearest half (round to nearest, ties to even; NaN stays NaN,
overflow gives infinity). The conversions are integer and bit operations of the kernel IR,
not LLVM's ``half`` type: on targets without F16C or FP16 instructions LLVM would call
compiler-rt's ``__extendhfsf2``/``__truncsfhf2``, which neither libc nor a wasm link
provides. So every target, the interpreter included, converts the same way, and the
lowerings never see a half type (``LowerCtx`` reports such tensors as ``f32``).

Rounding happens where the graph stores a tensor, so a chain of float16 ops rounds at
every op boundary, as onnxruntime does for ops it runs in float16.
"""

from __future__ import annotations

from torsh_gen.backends.kernel.ir import Bin, Bitcast, Cast, Const, Expr, Select

#: storage dtype → the kernel-IR dtype its buffers are declared with.
STORAGE_DTYPES: dict[str, str] = {"f16": "u16", "bf16": "u16"}
#: storage dtype → the dtype kernels compute it in.
COMPUTE_DTYPE = "f32"


def is_storage(dtype: str) -> bool:
    """Whether ``dtype`` is held as raw bits and computed in float32."""
    return dtype in STORAGE_DTYPES


def compute_dtype(dtype: str) -> str:
    """The dtype a lowering sees for a tensor of ``dtype``."""
    return COMPUTE_DTYPE if dtype in STORAGE_DTYPES else dtype


def _i(v: int) -> Const:
    return Const(v, "i32")


def _and(a: Expr, m: int) -> Expr:
    return Bin("and", a, _i(m))


def _shl(a: Expr, n: int) -> Expr:
    return Bin("shl", a, _i(n))


def _shr(a: Expr, n: int) -> Expr:
    return Bin("shr", a, _i(n))


def to_f32(bits: Expr, dtype: str) -> Expr:
    """The float32 value of 16 stored bits (``bits``: a ``u16`` load)."""
    b = Cast(bits, "i32")  # zero-extends
    if dtype == "bf16":
        return Bitcast(_shl(b, 16), "f32")
    mag = _and(b, 0x7FFF)
    sign = _shl(_and(b, 0x8000), 16)
    normal = Bitcast(Bin("add", _shl(mag, 13), _i(112 << 23)), "f32")  # rebias 15 → 127
    special = Bitcast(Bin("or", _shl(mag, 13), _i(0x7F800000)), "f32")  # inf, NaN payload
    subnormal = Bin("mul", Cast(mag, "f32"), Const(2.0**-24, "f32"))  # exact, no denormal input
    value = Select(Bin("lt", mag, _i(0x400)), subnormal, Select(Bin("ge", mag, _i(0x7C00)), special, normal))
    return Bitcast(Bin("or", Bitcast(value, "i32"), sign), "f32")


def from_f32(value: Expr, dtype: str) -> Expr:
    """The 16 bits (``u16``) of the half nearest to float32 ``value`` (ties to even)."""
    x = value if value.dtype == "f32" else Cast(value, "f32")
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
    return Cast(Bin("or", half, sign), "u16")
