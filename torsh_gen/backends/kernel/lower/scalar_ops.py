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
from torsh_gen.backends.kernel.storage import from_f32, is_storage, to_f32
from torsh_gen.backends.kernel.lower import KERNEL_DTYPES, LoweringDeclined
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
        # ONNX integer Div truncates toward zero, like the IR's div.
        return Bin("div", a[0], a[1])
    return a[0] / a[1]


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
    x, y = a
    if not is_float(x.dtype):
        raise LoweringDeclined("integer Pow")
    if isinstance(y, Const) or (isinstance(y, Cast) and isinstance(y.x, Const)):
        c = float(y.value if isinstance(y, Const) else y.x.value)
        if c == 2.0:
            xx = kb.let(x)
            return xx * xx
        if c == 1.0:
            return x
        if c == 0.5:
            return call("sqrt", x)
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
    x, y = kb.let(a[0]), kb.let(a[1])
    if attrs.get("fmod", 0) or is_float(x.dtype):
        if not attrs.get("fmod", 0):
            raise LoweringDeclined("float Mod needs fmod=1")
        return Bin("rem", x, y)
    r = kb.let(Bin("rem", x, y))
    fix = Bin("and", Bin("ne", r, _k(0, r)), Bin("ne", r < _k(0, r), y < _k(0, y)))
    return Select(fix, r + y, r)


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
    if is_storage(to):  # computed in float32, rounded to the half's precision here
        return to_f32(from_f32(Cast(a[0], "f32"), to), to)
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
