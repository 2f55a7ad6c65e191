"""One scalar formula per elementwise op, shared by elementwise kernels, fused chains and
the activation epilogues of convolutions and matrix products.

``SCALAR_OPS[op](kb, args, attrs)`` returns the expression of one output element from the
expressions of the input elements (already of the op's input dtype). Transcendentals come
from ``kernel.math`` (polynomials); float64 ones are computed through float32.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from torsh_gen.backends.kernel import math as km
from torsh_gen.backends.kernel.builder import KernelBuilder
from torsh_gen.backends.kernel.ir import (
    Bin,
    Cast,
    Const,
    Expr,
    Select,
    Un,
    as_expr,
    call,
    is_float,
    maximum,
    minimum,
)
from torsh_gen.backends.kernel.lower import KERNEL_DTYPES, LoweringDeclined
from torsh_gen.backends.kernel.storage import (
    E8M0,
    E8M0_ROUND_MODES,
    FLOAT8,
    SMALL_INTS,
    e8m0_bits,
    from_f32,
    is_storage,
    saturated,
    to_f32,
)
from torsh_gen.ir.types import DType
from torsh_gen.ops.registry import Attrs

ScalarFn = Callable[[KernelBuilder, list[Expr], Attrs], Expr]
SCALAR_OPS: dict[str, ScalarFn] = {}


def _reg(*names: str) -> Callable[[ScalarFn], ScalarFn]:
    def deco(fn: ScalarFn) -> ScalarFn:
        for n in names:
            SCALAR_OPS[n] = fn
        return fn

    return deco


def _k(v: float, like: Expr) -> Expr:
    return Const(v, like.dtype)


def _through_f32(kb: KernelBuilder, x: Expr, fn: Callable[[KernelBuilder, Expr], Expr]) -> Expr:
    """Apply a float32 polynomial to ``x`` and cast back to its dtype."""
    if not is_float(x.dtype):
        raise LoweringDeclined(f"{x.dtype} input to a float function")
    r = fn(kb, x)
    return r if x.dtype == "f32" else Cast(r, x.dtype)


def _fold(op: str) -> ScalarFn:
    def f(kb: KernelBuilder, a: list[Expr], attrs: Attrs) -> Expr:
        acc = a[0]
        for b in a[1:]:
            acc = Bin(op, acc, b)
        return acc

    return f


SCALAR_OPS["Add"] = _fold("add")
SCALAR_OPS["Sub"] = _fold("sub")
SCALAR_OPS["Mul"] = _fold("mul")
SCALAR_OPS["Sum"] = _fold("add")


@_reg("Div")
def _div(kb: KernelBuilder, a: list[Expr], attrs: Attrs) -> Expr:
    if not is_float(a[0].dtype):
        # ONNX integer Div truncates toward zero, like the IR's div; a zero divisor gives 0
        # and MIN / -1 wraps (numpy's results), instead of the CPU's division trap.
        x, y = kb.let(a[0], "dx"), kb.let(a[1], "dy")
        q = Bin("div", x, _safe_divisor(kb, y))
        if y.dtype[0] == "i":
            q = Select(Bin("eq", y, _k(-1, y)), Un("neg", x), q)
        return Select(Bin("eq", y, _k(0, y)), _k(0, x), q)
    return a[0] / a[1]


def _safe_divisor(kb: KernelBuilder, y: Expr) -> Expr:
    """``y`` with 0 (and -1 for signed types, whose MIN / -1 traps) replaced by 1: integer
    division by it never traps; callers fix those lanes' results."""
    bad = Bin("eq", y, _k(0, y))
    if y.dtype[0] == "i":
        bad = Bin("or", bad, Bin("eq", y, _k(-1, y)))
    return kb.let(Select(bad, _k(1, y), y), "dv")


@_reg("Max")
def _max(kb: KernelBuilder, a: list[Expr], attrs: Attrs) -> Expr:
    acc = a[0]
    for b in a[1:]:
        acc = _nan_max(kb, acc, b, "max")
    return acc


@_reg("Min")
def _min(kb: KernelBuilder, a: list[Expr], attrs: Attrs) -> Expr:
    acc = a[0]
    for b in a[1:]:
        acc = _nan_max(kb, acc, b, "min")
    return acc


def _nan_max(kb: KernelBuilder, a: Expr, b: Expr, op: str) -> Expr:
    """max/min that propagate NaN from either side (numpy and onnxruntime do)."""
    a = kb.let(a, "ma")
    b = kb.let(b, "mb")
    r = maximum(a, b) if op == "max" else minimum(a, b)
    if not is_float(a.dtype):
        return r
    return Select(Bin("ne", a, a), a, r)


@_reg("Mean")
def _mean(kb: KernelBuilder, a: list[Expr], attrs: Attrs) -> Expr:
    return _fold("add")(kb, a, attrs) / _k(float(len(a)), a[0])


@_reg("Neg")
def _neg(kb, a, attrs):
    return Un("neg", a[0])


@_reg("Abs")
def _abs(kb, a, attrs):
    if is_float(a[0].dtype):
        return call("fabs", a[0])
    if a[0].dtype[0] == "u":
        return a[0]
    x = kb.let(a[0])
    return Select(x < _k(0, x), Un("neg", x), x)


@_reg("Identity")
def _identity(kb, a, attrs):
    return a[0]


@_reg("Relu")
def _relu(kb, a, attrs):
    x = kb.let(a[0])
    return Select(x < _k(0, x), _k(0, x), x)


@_reg("LeakyRelu")
def _leaky(kb, a, attrs):
    x = kb.let(a[0])
    return Select(x < _k(0, x), x * _k(attrs.get("alpha", 0.01), x), x)


@_reg("PRelu")
def _prelu(kb, a, attrs):
    x = kb.let(a[0])
    return Select(x < _k(0, x), x * a[1], x)


@_reg("ThresholdedRelu")
def _trelu(kb, a, attrs):
    x = kb.let(a[0])
    return Select(x > _k(attrs.get("alpha", 1.0), x), x, _k(0, x))


@_reg("Elu")
def _elu(kb, a, attrs):
    x = kb.let(a[0])
    em1 = _through_f32(kb, x, km.exp) - _k(1.0, x)
    return Select(x < _k(0, x), em1 * _k(attrs.get("alpha", 1.0), x), x)


@_reg("Selu")
def _selu(kb, a, attrs):
    x = kb.let(a[0])
    alpha, gamma = attrs.get("alpha", 1.67326319217681884765625), attrs.get("gamma", 1.05070102214813232421875)
    neg = (_through_f32(kb, x, km.exp) * _k(alpha, x) - _k(alpha, x)) * _k(gamma, x)
    return Select(x > _k(0, x), x * _k(gamma, x), neg)


@_reg("Celu")
def _celu(kb, a, attrs):
    x = kb.let(a[0])
    alpha = attrs.get("alpha", 1.0)
    e = _through_f32(kb, x / _k(alpha, x), km.exp)
    return maximum(_k(0, x), x) + minimum(_k(0, x), (e - _k(1.0, x)) * _k(alpha, x))


@_reg("Sigmoid")
def _sigmoid(kb, a, attrs):
    return _through_f32(kb, a[0], km.sigmoid)


@_reg("HardSigmoid")
def _hsig(kb, a, attrs):
    x = a[0]
    v = x * _k(attrs.get("alpha", 0.2), x) + _k(attrs.get("beta", 0.5), x)
    return minimum(maximum(v, _k(0, x)), _k(1, x))


@_reg("HardSwish")
def _hswish(kb, a, attrs):
    x = kb.let(a[0])
    v = x * _k(1.0 / 6.0, x) + _k(0.5, x)
    return x * minimum(maximum(v, _k(0, x)), _k(1, x))


@_reg("Tanh")
def _tanh(kb, a, attrs):
    return _through_f32(kb, a[0], km.tanh)


@_reg("Exp")
def _exp(kb, a, attrs):
    return _through_f32(kb, a[0], km.exp)


@_reg("Log")
def _log(kb, a, attrs):
    return _through_f32(kb, a[0], km.log)


@_reg("Erf")
def _erf(kb, a, attrs):
    return _through_f32(kb, a[0], km.erf)


@_reg("Sin")
def _sin(kb, a, attrs):
    return _through_f32(kb, a[0], lambda k, x: km.sin_cos(k, x, "sin"))


@_reg("Cos")
def _cos(kb, a, attrs):
    return _through_f32(kb, a[0], lambda k, x: km.sin_cos(k, x, "cos"))


def _math(fn: Callable[[KernelBuilder, Expr], Expr], domain: Callable[[Expr], Expr] | None = None) -> ScalarFn:
    """A float32 polynomial of ``km`` as a scalar op; float64 inputs outside ``domain``
    give NaN (checked before the float32 rounding could move them inside)."""

    def f(kb: KernelBuilder, a: list[Expr], attrs: Attrs) -> Expr:
        x = kb.let(a[0])
        r = _through_f32(kb, x, fn)
        if domain is None or x.dtype == "f32":
            return r
        return Select(domain(x), r, _k(math.nan, x))

    return f


def _within_one(x: Expr) -> Expr:
    return call("fabs", x) <= _k(1.0, x)


SCALAR_OPS["Tan"] = _math(km.tan)
SCALAR_OPS["Asin"] = _math(km.asin, _within_one)
SCALAR_OPS["Acos"] = _math(km.acos, _within_one)
SCALAR_OPS["Atan"] = _math(km.atan)
SCALAR_OPS["Sinh"] = _math(km.sinh)
SCALAR_OPS["Cosh"] = _math(km.cosh)
SCALAR_OPS["Asinh"] = _math(km.asinh)
SCALAR_OPS["Acosh"] = _math(km.acosh, lambda x: x >= _k(1.0, x))
SCALAR_OPS["Atanh"] = _math(km.atanh, _within_one)


@_reg("Softplus")
def _softplus(kb, a, attrs):
    x = kb.let(a[0])
    ex = _through_f32(kb, Un("neg", call("fabs", x)), km.exp)
    return maximum(x, _k(0, x)) + _through_f32(kb, ex + _k(1.0, x), km.log)


@_reg("Softsign")
def _softsign(kb, a, attrs):
    x = kb.let(a[0])
    return x / (call("fabs", x) + _k(1.0, x))


@_reg("Mish")
def _mish(kb, a, attrs):
    x = kb.let(a[0])
    sp = _softplus(kb, [x], attrs)
    return x * _through_f32(kb, sp, km.tanh)


@_reg("Gelu")
def _gelu(kb, a, attrs):
    x = kb.let(a[0])
    if attrs.get("approximate", "none") == "tanh":
        inner = (x + x * x * x * _k(0.044715, x)) * _k(math.sqrt(2.0 / math.pi), x)
        return x * _k(0.5, x) * (_k(1.0, x) + _through_f32(kb, inner, km.tanh))
    return x * _k(0.5, x) * (_k(1.0, x) + _through_f32(kb, x * _k(1.0 / math.sqrt(2.0), x), km.erf))


@_reg("Sqrt")
def _sqrt(kb, a, attrs):
    return call("sqrt", a[0])


@_reg("Reciprocal")
def _recip(kb, a, attrs):
    return _k(1.0, a[0]) / a[0]


@_reg("Floor")
def _floor(kb, a, attrs):
    return call("floor", a[0])


@_reg("Ceil")
def _ceil(kb, a, attrs):
    return call("ceil", a[0])


@_reg("Round")
def _round(kb, a, attrs):
    return call("roundeven", a[0])


@_reg("Sign")
def _sign(kb, a, attrs):
    x = kb.let(a[0])
    return Select(x > _k(0, x), _k(1, x), Select(x < _k(0, x), _k(-1, x), _k(0, x)))


@_reg("Pow")
def _pow(kb, a, attrs):
    """Float powers through exp and log, integer exponents by squaring (exact for integer
    bases, see ``km.int_pow``); the result has the base's type."""
    x, y = a
    if "bool" in (x.dtype, y.dtype):
        raise LoweringDeclined("Pow of booleans")
    if not is_float(x.dtype):
        if x.dtype not in ("i32", "i64"):
            raise LoweringDeclined(f"Pow of a {x.dtype} base (ONNX allows int32 and int64)")
        return km.int_pow_float(kb, x, y) if is_float(y.dtype) else km.int_pow(kb, x, y)
    if not is_float(y.dtype):
        return km.pow_int(kb, x, y)
    if isinstance(y, Const) or (isinstance(y, Cast) and isinstance(y.x, Const)):
        c = float(y.value if isinstance(y, Const) else y.x.value)
        if c == 2.0:
            xx = kb.let(x)
            return xx * xx
        if c == 1.0:
            return x
        if c == 0.5:
            return call("sqrt", x)
        if c == int(c) and abs(c) < 2**31:
            return km.pow_int(kb, x, int(c))
    if y.dtype != x.dtype:
        y = Cast(y, x.dtype)
    return Cast(km.pow_(kb, x, y), x.dtype) if x.dtype != "f32" else km.pow_(kb, x, y)


@_reg("Clip")
def _clip(kb, a, attrs):
    x = a[0]
    lo = a[1] if len(a) > 1 and a[1] is not None else None
    hi = a[2] if len(a) > 2 and a[2] is not None else None
    if lo is None and attrs.get("min") is not None and len(a) == 1:
        lo = _k(attrs.min, x)
    if hi is None and attrs.get("max") is not None and len(a) == 1:
        hi = _k(attrs.max, x)
    r = x
    if lo is not None:
        r = kb.let(r)
        r = Select(r < lo, lo, r)
    if hi is not None:
        r = kb.let(r)
        r = Select(r > hi, hi, r)
    return r


@_reg("Mod")
def _mod(kb, a, attrs):
    """fmod=1: C's fmod (sign of x); fmod=0: numpy's mod (sign of y). Floats are exact
    (``km.fmod``, no libm); an integer zero divisor gives 0 (numpy) rather than a trap."""
    x, y = kb.let(a[0]), kb.let(a[1])
    fmod = attrs.get("fmod", 0)
    if is_float(x.dtype):
        return km.fmod(kb, x, y) if fmod else km.mod_floor(kb, x, y)
    r = kb.let(Bin("rem", x, _safe_divisor(kb, y)))
    if fmod:
        return r
    fix = Bin("and", Bin("ne", r, _k(0, r)), Bin("ne", r < _k(0, r), y < _k(0, y)))
    return Select(fix, r + y, r)


@_reg("Shrink")
def _shrink(kb, a, attrs):
    """x + bias below -lambd, x - bias above lambd, else 0. Integers compare and shift in
    float32 and truncate back, as onnxruntime's ``static_cast<T>(x + bias)`` does."""
    x = kb.let(a[0], "kx")
    lambd, bias = float(attrs.get("lambd", 0.5)), float(attrs.get("bias", 0.0))
    v = x if is_float(x.dtype) else kb.let(Cast(x, "f32"), "kf")
    r = Select(v < _k(-lambd, v), v + _k(bias, v), Select(v > _k(lambd, v), v - _k(bias, v), _k(0.0, v)))
    return r if is_float(x.dtype) else _float_to_int(kb, r, x.dtype)


def _float_to_int(kb: KernelBuilder, v: Expr, dtype: str) -> Expr:
    """float → any integer type as C++ on x86 converts: through int32 (int64 for uint32
    and int64), out-of-range values giving that type's minimum, then truncated to
    ``dtype``'s width; uint64 takes 2**63 off large values first."""
    if dtype == "u64":  # values from 2**63 up convert in two steps, like C's sequence
        big = kb.let(v >= _k(2.0**63, v), "kb")
        low = km.to_int_like_x86(kb, Select(big, v - _k(2.0**63, v), v), "i64")
        return Cast(low, "u64") + Select(big, Const(1 << 63, "u64"), Const(0, "u64"))
    via = "i64" if dtype in ("u32", "i64") else "i32"
    r = km.to_int_like_x86(kb, v, via)
    return r if dtype == via else Cast(r, dtype)


def _cmp(op: str) -> ScalarFn:
    return lambda kb, a, attrs: Bin(op, a[0], a[1])


SCALAR_OPS["Equal"] = _cmp("eq")
SCALAR_OPS["Less"] = _cmp("lt")
SCALAR_OPS["LessOrEqual"] = _cmp("le")
SCALAR_OPS["Greater"] = _cmp("gt")
SCALAR_OPS["GreaterOrEqual"] = _cmp("ge")
SCALAR_OPS["And"] = lambda kb, a, attrs: Bin("and", a[0], a[1])
SCALAR_OPS["Or"] = lambda kb, a, attrs: Bin("or", a[0], a[1])
SCALAR_OPS["Xor"] = lambda kb, a, attrs: Bin("xor", a[0], a[1])
SCALAR_OPS["Not"] = lambda kb, a, attrs: Un("not", a[0])
SCALAR_OPS["BitwiseAnd"] = SCALAR_OPS["And"]
SCALAR_OPS["BitwiseOr"] = SCALAR_OPS["Or"]
SCALAR_OPS["BitwiseXor"] = SCALAR_OPS["Xor"]
SCALAR_OPS["BitwiseNot"] = SCALAR_OPS["Not"]


@_reg("Where")
def _where(kb, a, attrs):
    return Select(a[0], a[1], a[2])


@_reg("IsNaN")
def _isnan(kb, a, attrs):
    return Bin("ne", a[0], a[0])


@_reg("IsInf")
def _isinf(kb, a, attrs):
    x = kb.let(a[0])
    pos = Bin("eq", x, _k(math.inf, x))
    neg = Bin("eq", x, _k(-math.inf, x))
    dp, dn = attrs.get("detect_positive", 1), attrs.get("detect_negative", 1)
    if dp and dn:
        return Bin("or", pos, neg)
    return pos if dp else neg if dn else as_expr(False)


@_reg("CastLike")
def _cast_like(kb, a, attrs):
    """The value itself: the lowering casts every result to the output's dtype."""
    return a[0]


@_reg("BitShift")
def _bitshift(kb, a, attrs):
    """Integer shifts with numpy's results for amounts outside [0, width): 0, or for a right
    shift of a negative signed value -1 (the sign fill)."""
    x, y = kb.let(a[0], "bx"), kb.let(a[1], "by")
    if is_float(x.dtype) or x.dtype == "bool":
        raise LoweringDeclined("BitShift needs integers")
    bits = int(x.dtype[1:])
    inside = Bin("and", Bin("ge", y, Const(0, y.dtype)), Bin("lt", y, Const(bits, y.dtype)))
    if str(attrs.get("direction", "LEFT")).upper() == "LEFT":
        return Select(inside, Bin("shl", x, y), Const(0, x.dtype))
    fill = Select(x < Const(0, x.dtype), Const(-1, x.dtype), Const(0, x.dtype)) if x.dtype[0] == "i" else Const(0, x.dtype)
    return Select(inside, Bin("shr", x, y), fill)


@_reg("Cast")
def _cast(kb, a, attrs):
    to = KERNEL_DTYPES.get(DType(int(attrs.to)))
    if to is None:
        raise LoweringDeclined(f"Cast to {DType(int(attrs.to)).name}")
    if to == E8M0:  # rounded by round_mode from the source's own bits (float64 for integers)
        mode = str(attrs.get("round_mode", "up"))
        if mode not in E8M0_ROUND_MODES:
            raise LoweringDeclined(f"Cast round_mode '{mode}' (float8e8m0 takes up, down or nearest)")
        return to_f32(e8m0_bits(a[0], bool(int(attrs.get("saturate", 1))), mode), to)
    if to in SMALL_INTS:  # truncated through int64, then the low bits (ml_dtypes' wrap)
        x = a[0] if not is_float(a[0].dtype) else Cast(a[0], "i64")
        return to_f32(from_f32(Cast(x, "i32"), to), to)
    if is_storage(to):  # computed in float32, rounded to the narrow type's precision here
        x = a[0] if a[0].dtype == "f32" else Cast(a[0], "f32")
        if to in FLOAT8 and int(attrs.get("saturate", 1)) and a[0].dtype != "bool":
            x = saturated(kb.let(x, "cx"), to)
        return to_f32(from_f32(x, to), to)
    return Cast(a[0], to)


def activation(kb: KernelBuilder, x: Expr, name: str, params: list[float]) -> Expr:
    """The epilogue of FusedConv/FusedMatMul (``activation`` attribute) applied to ``x``."""
    if not name:
        return x
    if name == "Clip":
        return _clip(kb, [x, Const(params[0], x.dtype), Const(params[1], x.dtype)], Attrs({}))
    if name == "GeluTanh":
        return _gelu(kb, [x], Attrs({"approximate": "tanh"}))
    if name == "Silu":
        v = kb.let(x)
        return v * _through_f32(kb, v, km.sigmoid)
    fn = SCALAR_OPS.get(name)
    if fn is None:
        raise LoweringDeclined(f"activation {name}")
    values: dict = {}
    if name in ("LeakyRelu", "Elu"):
        values["alpha"] = params[0]
    elif name == "HardSigmoid":
        values["alpha"], values["beta"] = params[0], params[1]
    return fn(kb, [x], Attrs(values))
