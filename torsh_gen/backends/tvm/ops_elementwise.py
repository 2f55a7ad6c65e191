"""Elementwise ops → Relax: arithmetic, comparisons, logic, casts and activations.

Plain math maps onto ``relax.op`` (TVM knows those ops and folds and fuses them). Where
ONNX's semantics differ from TVM's operator, or Relax lacks the op, the element function is
written in TE over broadcast operands (``_ewise``): NaN-propagating Max/Min and Clip,
Python-style float Mod, BitShift past the width, the activations. Activations of 16-bit
floats compute in float32 and round once at the end.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from torsh_gen.backends.tvm import narrow
from torsh_gen.backends.tvm.convert import DTYPES, Ctx, Decline, converts, str_attr, tvm_dtype
from torsh_gen.ir.graph import Node
from torsh_gen.ir.types import DType

_FLOATS = ("float16", "bfloat16", "float32", "float64")


# -- helpers -----------------------------------------------------------------------------

def _is_float(dtype: str) -> bool:
    return dtype in _FLOATS


def _wide(dtype: str) -> str:
    """The type an activation computes in: float32 for the 16-bit floats (one rounding at
    the end, as onnxruntime does), the type itself otherwise."""
    return "float32" if dtype in ("float16", "bfloat16") else dtype


def _c(value: float | int, dtype: str) -> Any:
    """A TIR scalar constant."""
    from tvm import tirx

    return tirx.const(value, dtype)


def _legacy_rhs(ctx: Ctx, node: Node, b: Any) -> Any:
    """Before opset 7, ``broadcast=1`` with ``axis`` aligned B with A from ``axis`` on
    rather than from the end; trailing unit axes make numpy broadcasting do the same."""
    from tvm import relax

    if ctx.opset >= 7 or not node.attr("broadcast", 0) or node.attr("axis", None) is None:
        return b
    ra, rb = ctx.rank(node.inputs[0]), ctx.rank(node.inputs[1])
    axis = int(node.attr("axis")) % ra if ra else 0
    pad = ra - axis - rb
    if pad > 0:
        b = ctx.emit(relax.op.expand_dims(b, list(range(rb, rb + pad))))
    return b


def _operands(ctx: Ctx, node: Node) -> tuple[Any, Any]:
    """The two operands of a binary node, with legacy (opset < 7) broadcasting applied."""
    a, b = ctx.x(node.inputs[0]), _legacy_rhs(ctx, node, ctx.x(node.inputs[1]))
    _check_broadcast(a, b)
    return a, b


def _is_one(d: Any) -> bool:
    from tvm.ir.prim.expr import IntImm

    return (isinstance(d, int) and d == 1) or (isinstance(d, IntImm) and int(d) == 1)


def _broadcast_shape(shapes: list[list[Any]]) -> list[Any]:
    """Numpy broadcasting of shapes (ints or PrimExprs); symbolic dims must be provably
    equal (else Decline: TVM cannot legalize a broadcast whose sizes meet only at run
    time)."""
    from tvm.sym.analyzer import Analyzer

    analyzer = Analyzer()
    rank = max((len(s) for s in shapes), default=0)
    out: list[Any] = []
    for k in range(rank):
        dims = [s[len(s) - rank + k] for s in shapes if len(s) - rank + k >= 0]
        big = [d for d in dims if not _is_one(d)]
        if not big:
            out.append(dims[0])
            continue
        for d in big[1:]:
            same = d == big[0] if isinstance(d, int) and isinstance(big[0], int) else analyzer.can_prove_equal(d, big[0])
            if not same:
                raise Decline(f"cannot broadcast dims {big[0]} and {d}")
        out.append(big[0])
    return out


def _check_broadcast(*exprs: Any) -> None:
    """Decline operands whose broadcast TVM cannot build (see ``_broadcast_shape``)."""
    _broadcast_shape([Ctx.shape_of(e) for e in exprs])


def _index(shape: Sequence[Any], out: Sequence[Any], idx: Sequence[Any]) -> list[Any]:
    """The element of a broadcast operand of ``shape`` read at output index ``idx``."""
    lead = len(out) - len(shape)
    return [0 if _is_one(d) and not _is_one(o) else i for d, o, i in zip(shape, out[lead:], idx[lead:])]


def _ewise(ctx: Ctx, fn: Callable[..., Any], *args: Any, name: str = "ewise") -> Any:
    """``fn`` of the operands' elements as one TE kernel over their broadcast shape."""
    from tvm import te

    def compute(*ts: Any) -> Any:
        shape = _broadcast_shape([list(t.shape) for t in ts])
        return te.compute(shape, lambda *i: fn(*[t(*_index(t.shape, shape, i)) for t in ts]), name=name)

    return ctx.emit_te(compute, *args, primfunc_name_hint=name)


def _activation(ctx: Ctx, node: Node, fn: Callable[[Any, str], Any], floats_only: bool = True) -> list[Any]:
    """A unary activation ``fn(x, dtype)`` over input 0, in float32 for 16-bit floats."""
    from tvm import tirx

    dtype = ctx.dtype(node.inputs[0])
    if floats_only and not _is_float(dtype):
        raise Decline(f"{node.op_type} of {dtype} is not defined")
    wide = _wide(dtype)

    def element(v: Any) -> Any:
        y = fn(tirx.Cast(wide, v) if wide != dtype else v, wide)
        return tirx.Cast(dtype, y) if wide != dtype else y

    return [_ewise(ctx, element, ctx.x(node.inputs[0]), name=node.op_type.lower())]


def _tanh(v: Any, dtype: str) -> Any:
    """tanh with small relative error near zero: TVM's LLVM lowering computes
    (1 - e^-2x) / (1 + e^-2x), which cancels for small |x| (tanh(1e-10) gives 0); there
    the Taylor series to x^9 is exact to the type's precision."""
    from tvm import tirx

    small = 0.125 if dtype != "float64" else 0.01
    x2 = v * v
    poly = v * (_c(1.0, dtype) + x2 * (_c(-1 / 3, dtype) + x2 * (_c(2 / 15, dtype) + x2 * (_c(-17 / 315, dtype) + x2 * _c(62 / 2835, dtype)))))
    return tirx.Select(tirx.abs(v) < _c(small, dtype), poly, tirx.tanh(v))


def _softplus(v: Any, dtype: str) -> Any:
    """log(1 + e^x) without overflow: max(x, 0) + log1p(e^-|x|)."""
    from tvm import tirx

    return tirx.max(v, _c(0.0, dtype)) + tirx.log1p(tirx.exp(-tirx.abs(v)))


def _sigmoid(v: Any, dtype: str) -> Any:
    from tvm import tirx

    return _c(1.0, dtype) / (_c(1.0, dtype) + tirx.exp(-v))


def _clamp01(v: Any, dtype: str) -> Any:
    """v clamped to [0, 1]; NaN stays NaN (TIR max/min would drop it)."""
    from tvm import tirx

    return tirx.Select(tirx.isnan(v), v, tirx.min(tirx.max(v, _c(0.0, dtype)), _c(1.0, dtype)))


# -- unary math ----------------------------------------------------------------------------
_UNARY = {
    "Abs": "abs",
    "Acos": "acos",
    "Acosh": "acosh",
    "Asin": "asin",
    "Asinh": "asinh",
    "Atan": "atan",
    "Atanh": "atanh",
    "Ceil": "ceil",
    "Cos": "cos",
    "Erf": "erf",
    "Exp": "exp",
    "Floor": "floor",
    "IsNaN": "isnan",
    "Log": "log",
    "Neg": "negative",
    "Not": "logical_not",
    "BitwiseNot": "bitwise_not",
    "Round": "round",  # nearbyint: ties to even, as ONNX requires
    "Sin": "sin",
    "Sqrt": "sqrt",
    "Tan": "tan",
}


@converts(*_UNARY)
def unary(ctx: Ctx, node: Node) -> Sequence[Any]:
    from tvm import relax

    return [ctx.emit(getattr(relax.op, _UNARY[node.op_type])(ctx.x(node.inputs[0])))]


@converts("Tanh")
def tanh(ctx: Ctx, node: Node) -> Sequence[Any]:
    """Our accurate tanh (see ``_tanh``) rather than relax.op.tanh."""
    return _activation(ctx, node, _tanh)


@converts("Sinh", "Cosh")
def sinh_cosh(ctx: Ctx, node: Node) -> Sequence[Any]:
    """(e^|x| ± e^-|x|) / 2 with e^|x| as (e^(|x|/2))^2, so the result overflows only where
    the true one does: TVM's LLVM code generator has no sinh/cosh intrinsic. sinh of small
    |x| uses its Taylor series, where the difference would cancel."""
    from tvm import tirx

    def fn(v: Any, t: str) -> Any:
        a = tirx.abs(v)
        h = tirx.exp(a * _c(0.5, t))
        big, tiny = _c(0.5, t) * h * h, _c(0.5, t) * tirx.exp(-a)
        if node.op_type == "Cosh":
            return big + tiny
        x2 = v * v
        poly = v * (_c(1.0, t) + x2 * (_c(1 / 6, t) + x2 * (_c(1 / 120, t) + x2 * (_c(1 / 5040, t) + x2 * _c(1 / 362880, t)))))
        small = 0.125 if t != "float64" else 0.01
        return tirx.Select(a < _c(small, t), poly, tirx.copysign(big - tiny, v))

    return _activation(ctx, node, fn)


@converts("Identity")
def identity(ctx: Ctx, node: Node) -> Sequence[Any]:
    return [ctx.x(node.inputs[0])]


@converts("Reciprocal")
def reciprocal(ctx: Ctx, node: Node) -> Sequence[Any]:
    from tvm import relax

    x = ctx.x(node.inputs[0])
    return [ctx.emit(relax.op.divide(relax.const(1, ctx.dtype(node.inputs[0])), x))]


@converts("IsInf")
def isinf(ctx: Ctx, node: Node) -> Sequence[Any]:
    """Infinities, of the signs ``detect_negative`` / ``detect_positive`` ask for."""
    from tvm import tirx

    neg, pos = bool(node.attr("detect_negative", 1)), bool(node.attr("detect_positive", 1))
    dtype = ctx.dtype(node.inputs[0])
    if not _is_float(dtype):
        raise Decline(f"IsInf of {dtype} is not defined")

    def element(v: Any) -> Any:
        inf = tirx.isinf(v)
        if neg and pos:
            return inf
        if not (neg or pos):
            return tirx.const(False, "bool")
        zero = _c(0.0, dtype)
        return tirx.all(inf, v > zero) if pos else tirx.all(inf, v < zero)

    return [_ewise(ctx, element, ctx.x(node.inputs[0]), name="isinf")]


# -- binary arithmetic, comparison, logic -------------------------------------------------------------
_BINARY = {
    "Add": "add",
    "Sub": "subtract",
    "Mul": "multiply",
    "Div": "divide",  # integers: TIR Div truncates toward zero, as ONNX requires
    "And": "logical_and",
    "Or": "logical_or",
    "Xor": "logical_xor",
    "BitwiseAnd": "bitwise_and",
    "BitwiseOr": "bitwise_or",
    "BitwiseXor": "bitwise_xor",
    "Equal": "equal",
    "Greater": "greater",
    "GreaterOrEqual": "greater_equal",
    "Less": "less",
    "LessOrEqual": "less_equal",
}


@converts(*_BINARY)
def binary(ctx: Ctx, node: Node) -> Sequence[Any]:
    from tvm import relax

    a, b = _operands(ctx, node)
    return [ctx.emit(getattr(relax.op, _BINARY[node.op_type])(a, b))]


@converts("Pow")
def power(ctx: Ctx, node: Node) -> Sequence[Any]:
    """The result has the base's type. An integer base or exponent computes in float64 and
    converts back, as onnxruntime's std::pow does; float ** same-float is native; a constant
    exponent 1 or 2 is the base or its square."""
    from tvm import relax

    a, b = _operands(ctx, node)
    ta, tb = ctx.dtype(node.inputs[0]), ctx.dtype(node.inputs[1])
    exp = ctx.const(node.inputs[1])
    if exp is not None and exp.size == 1 and _is_float(ta) and np.ndim(exp) <= ctx.rank(node.inputs[0]):
        e = float(np.asarray(exp).reshape(-1)[0])  # broadcasting it leaves the base's shape
        if e == 1.0:
            return [a]
        if e == 2.0:
            return [ctx.emit(relax.op.multiply(a, a))]
    if ta == tb and _is_float(ta):
        return [ctx.emit(relax.op.power(a, b))]
    wide = "float64"
    if _is_float(ta) and _is_float(tb):
        wide = "float32" if {ta, tb} <= {"float16", "bfloat16", "float32"} else "float64"
    y = relax.op.power(relax.op.astype(a, wide) if ta != wide else a, relax.op.astype(b, wide) if tb != wide else b)
    return [ctx.emit(relax.op.astype(y, ta) if ta != wide else y)]


@converts("Mod")
def mod(ctx: Ctx, node: Node) -> Sequence[Any]:
    """fmod=1: C fmod, the dividend's sign (TIR truncmod / LLVM frem). fmod=0: the
    divisor's sign; integers use TIR floormod, floats CPython's float %, which also gets
    the special cases the spec lists (±0 takes the divisor's sign, x % ±inf is x or the
    divisor)."""
    from tvm import relax, tirx

    a, b = _operands(ctx, node)
    dtype = ctx.dtype(node.inputs[0])
    if node.attr("fmod", 0):
        return [ctx.emit(relax.op.mod(a, b))]
    if not _is_float(dtype):
        return [ctx.emit(relax.op.floor_mod(a, b))]

    def element(x: Any, y: Any) -> Any:
        wide = _wide(dtype)
        x, y = (tirx.Cast(wide, x), tirx.Cast(wide, y)) if wide != dtype else (x, y)
        zero = _c(0.0, wide)
        r = tirx.truncmod(x, y)  # C fmod (LLVM frem) for floats
        signs_differ = tirx.any(tirx.all(r < zero, y > zero), tirx.all(r > zero, y < zero))
        r = tirx.Select(signs_differ, r + y, r)
        r = tirx.Select(r == zero, tirx.copysign(zero, y), r)
        return tirx.Cast(dtype, r) if wide != dtype else r

    return [_ewise(ctx, element, a, b, name="mod")]


@converts("BitShift")
def bitshift(ctx: Ctx, node: Node) -> Sequence[Any]:
    """Shifts by a negative amount or by the width or more give what the sign fill alone
    gives (0, or -1 for a right shift of a negative signed value); LLVM would give poison."""
    from tvm import tirx

    direction = str_attr(node, "direction", "")
    if direction not in ("LEFT", "RIGHT"):
        raise Decline(f"BitShift direction '{direction}' is not LEFT or RIGHT")
    a, b = _operands(ctx, node)
    dtype = ctx.dtype(node.inputs[0])
    if ctx.dtype(node.inputs[1]) != dtype or _is_float(dtype) or dtype == "bool":
        raise Decline(f"BitShift of {dtype} is not defined")
    bits = int(dtype.lstrip("uint"))
    signed = not dtype.startswith("u")

    def element(x: Any, y: Any) -> Any:
        zero = _c(0, dtype)
        out_of_range = y >= _c(bits, dtype)
        if signed:
            out_of_range = tirx.any(out_of_range, y < zero)
        safe = tirx.Select(out_of_range, zero, y)
        if direction == "LEFT":
            return tirx.Select(out_of_range, zero, tirx.shift_left(x, safe))
        fill = tirx.Select(x < zero, _c(-1, dtype), zero) if signed else zero
        return tirx.Select(out_of_range, fill, tirx.shift_right(x, safe))

    return [_ewise(ctx, element, a, b, name="bitshift")]


# -- variadic ---------------------------------------------------------------------------------
def _maximum(dtype: str, greater: bool) -> Callable[[Any, Any], Any]:
    """max/min of two elements; for floats a NaN wins (numpy's maximum, onnxruntime's Max)."""
    from tvm import tirx

    def pick(acc: Any, v: Any) -> Any:
        better = v > acc if greater else v < acc
        if _is_float(dtype):
            better = tirx.any(better, tirx.isnan(v))
        return tirx.Select(better, v, acc)

    return pick


@converts("Max", "Min", "Sum", "Mean")
def variadic(ctx: Ctx, node: Node) -> Sequence[Any]:
    """All operands in one broadcasting kernel. Integer Mean truncates, like Div."""
    xs = [ctx.x(v) for v in node.inputs if v is not None]
    if not xs:
        raise Decline(f"{node.op_type} without inputs")
    if len(xs) == 1:
        return [xs[0]]
    dtype = ctx.dtype(node.inputs[0])
    if node.op_type in ("Max", "Min"):
        step = _maximum(dtype, node.op_type == "Max")
    else:
        step = lambda acc, v: acc + v  # noqa: E731
    n = len(xs)

    def element(*vs: Any) -> Any:
        acc = vs[0]
        for v in vs[1:]:
            acc = step(acc, v)
        if node.op_type == "Mean":
            acc = acc / _c(n, dtype) if _is_float(dtype) else _truncdiv(acc, _c(n, dtype))
        return acc

    return [_ewise(ctx, element, *xs, name=node.op_type.lower())]


def _truncdiv(a: Any, b: Any) -> Any:
    from tvm import tirx

    return tirx.truncdiv(a, b)


# -- selection, clipping ------------------------------------------------------------------------
@converts("Where")
def where(ctx: Ctx, node: Node) -> Sequence[Any]:
    from tvm import relax

    c, x, y = (ctx.x(v) for v in node.inputs[:3])
    _check_broadcast(c, x, y)
    return [ctx.emit(relax.op.where(c, x, y))]


@converts("Clip")
def clip(ctx: Ctx, node: Node) -> Sequence[Any]:
    """max(x, min) then min(., max), so min > max gives max as the spec says; NaN stays NaN.
    Bounds are attributes before opset 11, optional inputs (constant or not) after."""
    from tvm import tirx

    dtype = ctx.dtype(node.inputs[0])
    x = ctx.x(node.inputs[0])
    operands: list[Any] = [x]
    bounds: list[Any] = []  # per bound: None, a TIR constant, or an operand index
    if ctx.opset < 11:
        for name in ("min", "max"):
            v = node.attr(name, None)
            bounds.append(None if v is None else _c(float(v), dtype))
    else:
        for k in (1, 2):
            if not ctx.has(node, k):
                bounds.append(None)
                continue
            arr = ctx.const(node.inputs[k])
            if arr is not None and np.size(arr) == 1:
                v = np.asarray(arr).reshape(-1)[0]
                bounds.append(_c(float(v) if _is_float(dtype) else int(v), dtype))
            else:
                bounds.append(len(operands))
                operands.append(ctx.x(node.inputs[k]))

    def element(*vs: Any) -> Any:
        v = vs[0]
        lo, hi = (vs[b] if isinstance(b, int) else b for b in bounds)
        y = v
        if lo is not None:
            y = tirx.max(y, lo)
        if hi is not None:
            y = tirx.min(y, hi)
        return tirx.Select(tirx.isnan(v), v, y) if _is_float(dtype) else y

    return [_ewise(ctx, element, *operands, name="clip")]


# -- casts ----------------------------------------------------------------------------------------
def _cast_to(ctx: Ctx, node: Node, to: DType) -> list[Any]:
    """TVM's casts follow the spec's rules for the types it holds: float→bool is x != 0
    (NaN → True), int→bool nonzero, narrowing ints wrap, float→float rounds to nearest
    even (bfloat16 included) and overflows to ±inf; float→int out of range is undefined
    in ONNX too. The narrow types (float8, float4, 4- and 2-bit integers) are decoded to
    float32 or int32 and encoded from any type by ``narrow``, with ``saturate`` (float8)
    and ``round_mode`` (float8e8m0)."""
    from tvm import relax

    src = node.inputs[0]
    source = ctx.tensor_type(src).dtype
    if source == to:
        return [narrow.operand(ctx, src)]
    if not (narrow.is_narrow(source) or narrow.is_narrow(to)):
        if to not in DTYPES:
            raise Decline(f"Cast to {to.name} is not supported by the TVM backend")
        return [ctx.emit(relax.op.astype(ctx.x(src), DTYPES[to]))]
    round_mode = str_attr(node, "round_mode", "up")
    if round_mode not in narrow.ROUND_MODES:
        raise Decline(f"round_mode '{round_mode}' is not one of {', '.join(narrow.ROUND_MODES)}")
    if narrow.is_narrow(source):
        x = narrow.decoded(ctx, src)
    else:
        tvm_dtype(source)  # declines strings and complex
        x = ctx.x(src)
    if narrow.is_narrow(to):
        saturate = bool(node.attr("saturate", 1))
        return [narrow.encode(ctx, x, to, saturate, round_mode)]
    if to not in DTYPES:
        raise Decline(f"Cast to {to.name} is not supported by the TVM backend")
    return [x if x.ty.dtype == DTYPES[to] else ctx.emit(relax.op.astype(x, DTYPES[to]))]


@converts("Cast")
def cast(ctx: Ctx, node: Node) -> Sequence[Any]:
    to = node.attr("to", None)
    if to is None:
        raise Decline("Cast without 'to'")
    if isinstance(to, (str, bytes)):  # opset 1-5: the type's name
        import onnx

        to = onnx.TensorProto.DataType.Value(to.decode() if isinstance(to, bytes) else to)
    return _cast_to(ctx, node, DType(int(to)))


@converts("CastLike")
def cast_like(ctx: Ctx, node: Node) -> Sequence[Any]:
    return _cast_to(ctx, node, ctx.tensor_type(node.inputs[1]).dtype)


# -- activations -------------------------------------------------------------------------------
@converts("Relu")
def relu(ctx: Ctx, node: Node) -> Sequence[Any]:
    """x < 0 ? 0 : x, so NaN and -0 pass as in onnxruntime (relax's relu, max(x, 0),
    turns NaN into 0)."""
    from tvm import tirx

    return _activation(ctx, node, lambda v, t: tirx.Select(v < _c(0, t), _c(0, t), v), floats_only=False)


@converts("Sign")
def sign(ctx: Ctx, node: Node) -> Sequence[Any]:
    """-1, 0 or 1; NaN stays NaN (relax's sign gives 0)."""
    from tvm import relax, tirx

    dtype = ctx.dtype(node.inputs[0])
    if not _is_float(dtype):
        return [ctx.emit(relax.op.sign(ctx.x(node.inputs[0])))]

    def fn(v: Any, t: str) -> Any:
        one, zero = _c(1.0, t), _c(0.0, t)
        return tirx.Select(v > zero, one, tirx.Select(v < zero, -one, tirx.Select(v == zero, zero, v)))

    return _activation(ctx, node, fn)


@converts("Sigmoid")
def sigmoid(ctx: Ctx, node: Node) -> Sequence[Any]:
    return _activation(ctx, node, _sigmoid)


@converts("LeakyRelu")
def leaky_relu(ctx: Ctx, node: Node) -> Sequence[Any]:
    from tvm import tirx

    alpha = float(node.attr("alpha", 0.01))
    return _activation(ctx, node, lambda v, t: tirx.Select(v < _c(0.0, t), v * _c(alpha, t), v))


@converts("ThresholdedRelu")
def thresholded_relu(ctx: Ctx, node: Node) -> Sequence[Any]:
    from tvm import tirx

    alpha = float(node.attr("alpha", 1.0))
    return _activation(ctx, node, lambda v, t: tirx.Select(v > _c(alpha, t), v, _c(0.0, t)))


@converts("Elu")
def elu(ctx: Ctx, node: Node) -> Sequence[Any]:
    from tvm import tirx

    alpha = float(node.attr("alpha", 1.0))
    return _activation(ctx, node, lambda v, t: tirx.Select(v < _c(0.0, t), _c(alpha, t) * (tirx.exp(v) - _c(1.0, t)), v))


@converts("Selu")
def selu(ctx: Ctx, node: Node) -> Sequence[Any]:
    from tvm import tirx

    alpha = float(node.attr("alpha", 1.67326319217681884765625))
    gamma = float(node.attr("gamma", 1.05070102214813232421875))

    def fn(v: Any, t: str) -> Any:
        neg = _c(alpha, t) * tirx.exp(v) - _c(alpha, t)
        return _c(gamma, t) * tirx.Select(v > _c(0.0, t), v, neg)

    return _activation(ctx, node, fn)


@converts("Celu")
def celu(ctx: Ctx, node: Node) -> Sequence[Any]:
    """max(0, x) + min(0, alpha (e^(x/alpha) - 1))."""
    from tvm import tirx

    alpha = float(node.attr("alpha", 1.0))
    if alpha == 0.0:
        raise Decline("Celu with alpha 0 divides by zero")

    def fn(v: Any, t: str) -> Any:
        zero = _c(0.0, t)
        return tirx.max(zero, v) + tirx.min(zero, _c(alpha, t) * (tirx.exp(v / _c(alpha, t)) - _c(1.0, t)))

    return _activation(ctx, node, fn)


@converts("HardSigmoid")
def hard_sigmoid(ctx: Ctx, node: Node) -> Sequence[Any]:
    alpha, beta = float(node.attr("alpha", 0.2)), float(node.attr("beta", 0.5))
    return _activation(ctx, node, lambda v, t: _clamp01(_c(alpha, t) * v + _c(beta, t), t))


@converts("HardSwish")
def hard_swish(ctx: Ctx, node: Node) -> Sequence[Any]:
    return _activation(ctx, node, lambda v, t: v * _clamp01(_c(1 / 6, t) * v + _c(0.5, t), t))


@converts("Softsign")
def softsign(ctx: Ctx, node: Node) -> Sequence[Any]:
    from tvm import tirx

    return _activation(ctx, node, lambda v, t: v / (_c(1.0, t) + tirx.abs(v)))


@converts("Softplus")
def softplus(ctx: Ctx, node: Node) -> Sequence[Any]:
    """Overflow-free, unlike the function body log(exp(x) + 1)."""
    return _activation(ctx, node, _softplus)


@converts("Mish")
def mish(ctx: Ctx, node: Node) -> Sequence[Any]:
    return _activation(ctx, node, lambda v, t: v * _tanh(_softplus(v, t), t))


@converts("Swish")
def swish(ctx: Ctx, node: Node) -> Sequence[Any]:
    alpha = float(node.attr("alpha", 1.0))
    return _activation(ctx, node, lambda v, t: v * _sigmoid(_c(alpha, t) * v, t))


@converts("Gelu")
def gelu(ctx: Ctx, node: Node) -> Sequence[Any]:
    """0.5 x (1 + erf(x / sqrt 2)), or with approximate='tanh'
    0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3)))."""
    from tvm import tirx

    approximate = str_attr(node, "approximate", "none")
    if approximate not in ("none", "tanh"):
        raise Decline(f"Gelu approximate='{approximate}' is not defined")

    def fn(v: Any, t: str) -> Any:
        if approximate == "tanh":
            inner = _c(math.sqrt(2 / math.pi), t) * (v + _c(0.044715, t) * v * v * v)
            return _c(0.5, t) * v * (_c(1.0, t) + _tanh(inner, t))
        return _c(0.5, t) * v * (_c(1.0, t) + tirx.erf(v * _c(math.sqrt(0.5), t)))

    return _activation(ctx, node, fn)


@converts("Shrink")
def shrink(ctx: Ctx, node: Node) -> Sequence[Any]:
    """x + bias below -lambd, x - bias above lambd, else 0. Integers compute in float64
    and truncate back, as the reference does."""
    from tvm import tirx

    bias, lambd = float(node.attr("bias", 0.0)), float(node.attr("lambd", 0.5))
    dtype = ctx.dtype(node.inputs[0])
    if dtype == "bool":
        raise Decline("Shrink of bool is not defined")
    wide = "float64" if not _is_float(dtype) else _wide(dtype)

    def element(v: Any) -> Any:
        w = tirx.Cast(wide, v) if wide != dtype else v
        y = tirx.Select(
            w < _c(-lambd, wide), w + _c(bias, wide), tirx.Select(w > _c(lambd, wide), w - _c(bias, wide), _c(0.0, wide))
        )
        return tirx.Cast(dtype, y) if wide != dtype else y

    return [_ewise(ctx, element, ctx.x(node.inputs[0]), name="shrink")]


@converts("PRelu")
def prelu(ctx: Ctx, node: Node) -> Sequence[Any]:
    """slope * x where x < 0; the slope broadcasts to x (unidirectionally)."""
    from tvm import tirx

    dtype = ctx.dtype(node.inputs[0])
    x, slope = ctx.x(node.inputs[0]), ctx.x(node.inputs[1])
    if ctx.rank(node.inputs[1]) > ctx.rank(node.inputs[0]):
        raise Decline("PRelu slope of higher rank than its input")
    return [_ewise(ctx, lambda v, s: tirx.Select(v < _c(0, dtype), v * s, v), x, slope, name="prelu")]


# -- ai.onnx.ml -------------------------------------------------------------------------------
@converts("Binarizer")
def binarizer(ctx: Ctx, node: Node) -> Sequence[Any]:
    """1 where x > threshold else 0, in x's type; integers compare in float64."""
    from tvm import tirx

    threshold = float(np.float32(node.attr("threshold", 0.0)))
    dtype = ctx.dtype(node.inputs[0])
    wide = "float64" if not _is_float(dtype) else dtype

    def element(v: Any) -> Any:
        w = tirx.Cast(wide, v) if wide != dtype else v
        return tirx.Select(w > _c(threshold, wide), _c(1, dtype), _c(0, dtype))

    return [_ewise(ctx, element, ctx.x(node.inputs[0]), name="binarizer")]


@converts("Scaler")
def scaler(ctx: Ctx, node: Node) -> Sequence[Any]:
    """(x - offset) * scale in float32, offset and scale one value or one per feature
    (the last axis)."""
    from tvm import relax

    x = ctx.x(node.inputs[0])
    offset = np.asarray(node.attr("offset", None) or [0.0], np.float32)
    scale = np.asarray(node.attr("scale", None) or [1.0], np.float32)
    last = ctx.shape(node.inputs[0])[-1] if ctx.rank(node.inputs[0]) else 1
    for name, arr in (("offset", offset), ("scale", scale)):
        if arr.size != 1 and (not isinstance(last, int) or arr.size != last):
            raise Decline(f"Scaler {name} has {arr.size} values for {last} features")
    if ctx.dtype(node.inputs[0]) != "float32":
        x = ctx.emit(relax.op.astype(x, "float32"))
    y = ctx.emit(relax.op.subtract(x, ctx.constant(offset if offset.size > 1 else offset.reshape(()))))
    return [ctx.emit(relax.op.multiply(y, ctx.constant(scale if scale.size > 1 else scale.reshape(()))))]
