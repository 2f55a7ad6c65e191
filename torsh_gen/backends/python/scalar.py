"""Scalar code for numba kernels: one elementwise op → one Python expression.

A fused elementwise chain becomes a numba function whose loop body evaluates, per
element, the ops of the chain as scalar expressions from this table. Each table entry
gets the input expressions, the node's resolved attributes and the output dtype
constructor (``np.float32``), and returns an expression or None when it does not cover
the node (the caller then falls back to numpy). Semantics follow the numpy reference:
NaN propagates through Max/Min/Clip/Relu as np.maximum does.

float32 chains call the vectorizable polynomial helpers of ``templates/python/_nn.py.j2``
(``nn_exp``, ``nn_tanh``, ``nn_sigmoid``, ``nn_gelu``...) for their transcendentals
instead of ``math.*``, which numba compiles to scalar libm calls that stop LLVM from
vectorizing the loop; ``helpers_used`` lists the helpers a kernel source calls.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

from torsh_gen.backends.python.literals import literal
from torsh_gen.ir.types import DType

#: numba type names of the element types kernels handle.
NB_TYPES = {DType.FLOAT: "nb.float32", DType.DOUBLE: "nb.float64", DType.BOOL: "nb.boolean"}
CTORS = {DType.FLOAT: "np.float32", DType.DOUBLE: "np.float64", DType.BOOL: "bool"}

Rule = Callable[[list[str], Any, str], "str | None"]
_RULES: dict[str, Rule] = {}


def rule(*ops: str) -> Callable[[Rule], Rule]:
    """Register a scalar rule for ``ops``."""

    def register(fn: Rule) -> Rule:
        for o in ops:
            _RULES[o] = fn
        return fn

    return register


def scalar_expr(op_type: str, args: list[str], attrs: Any, ctor: str) -> str | None:
    """The scalar expression of ``op_type`` on ``args`` (None when not covered)."""
    if ctor == F32:
        fast = _fast32(op_type, args, attrs)
        if fast is not None:
            return fast
    fn = _RULES.get(op_type)
    return None if fn is None else fn(args, attrs, ctor)


F32 = "np.float32"
#: helper → the helpers it calls (definition order: callees first).
HELPERS = {
    "nn_exp": (), "nn_exp_wide": (), "nn_sigmoid": ("nn_exp",), "nn_tanh": ("nn_exp",),
    "nn_gelu": (),
    "nn_gelu_tanh": ("nn_exp_wide",),
}
_HELPER_RX = re.compile(r"\b(nn_[a-z_]+)\(")


def _fast32(op_type: str, a: list[str], at: Any) -> str | None:
    """float32 transcendentals through the polynomial helpers (vectorizable)."""
    x = f"np.float32({a[0]})" if a else ""
    if op_type == "Exp":
        return f"nn_exp({x})"
    if op_type == "Tanh":
        return f"nn_tanh({x})"
    if op_type == "Sigmoid":
        return f"nn_sigmoid({x})"
    if op_type == "Gelu":
        return f"nn_gelu_tanh({x})" if (at.approximate or "none") == "tanh" else f"nn_gelu({x})"
    return None


def helpers_used(source: str) -> list[str]:
    """The polynomial helpers ``source`` calls, with their own callees, callees first."""
    out: list[str] = []

    def add(name: str) -> None:
        if name in out or name not in HELPERS:
            return
        for dep in HELPERS[name]:
            add(dep)
        out.append(name)

    for name in _HELPER_RX.findall(source):
        add(name)
    return out


def _c(ctor: str, value: float) -> str:
    return f"{ctor}({literal(float(value))})"


def fmax(a: str, b: str) -> str:
    """max with NaN propagation (either NaN gives NaN), as np.maximum."""
    return f"({a} if ({a} >= {b} or {a} != {a}) else {b})"


def fmin(a: str, b: str) -> str:
    """min with NaN propagation, as np.minimum."""
    return f"({a} if ({a} <= {b} or {a} != {a}) else {b})"


_BIN = {"Add": "+", "Sub": "-", "Mul": "*", "Div": "/"}
_MATH1 = {
    "Exp": "math.exp", "Log": "math.log", "Sqrt": "math.sqrt", "Sin": "math.sin", "Cos": "math.cos",
    "Tan": "math.tan", "Asin": "math.asin", "Acos": "math.acos", "Atan": "math.atan",
    "Sinh": "math.sinh", "Cosh": "math.cosh", "Asinh": "math.asinh", "Acosh": "math.acosh",
    "Atanh": "math.atanh", "Tanh": "math.tanh", "Erf": "math.erf", "Floor": "np.floor",
    "Ceil": "np.ceil", "Abs": "abs",
}


for _op, _sym in _BIN.items():
    _RULES[_op] = (lambda sym: lambda a, at, c: f"{c}({a[0]} {sym} {a[1]})")(_sym)
for _op, _fn in _MATH1.items():
    _RULES[_op] = (lambda fn: lambda a, at, c: f"{c}({fn}({a[0]}))")(_fn)


@rule("Neg")
def _neg(a: list[str], at: Any, c: str) -> str:
    return f"{c}(-{a[0]})"


@rule("Identity")
def _identity(a: list[str], at: Any, c: str) -> str:
    return a[0]


@rule("Reciprocal")
def _recip(a: list[str], at: Any, c: str) -> str:
    return f"{c}({_c(c, 1)} / {a[0]})"


@rule("Pow")
def _pow(a: list[str], at: Any, c: str) -> str:
    return f"{c}({a[0]} ** {a[1]})"


@rule("Relu")
def _relu(a: list[str], at: Any, c: str) -> str:
    return f"({a[0]} if not ({a[0]} < 0) else {_c(c, 0)})"


@rule("Sigmoid")
def _sigmoid(a: list[str], at: Any, c: str) -> str:
    return f"{c}(1.0 / (1.0 + math.exp(-{a[0]})))"


@rule("Sign")
def _sign(a: list[str], at: Any, c: str) -> str:
    x = a[0]
    return f"({_c(c, 1)} if {x} > 0 else ({_c(c, -1)} if {x} < 0 else {x}))"


_RULES["Max"] = lambda a, at, c: _fold(a, fmax)
_RULES["Min"] = lambda a, at, c: _fold(a, fmin)
_RULES["Sum"] = lambda a, at, c: f"{c}({' + '.join(a)})"
_RULES["Mean"] = lambda a, at, c: f"{c}(({' + '.join(a)}) / {len(a)})"


def _fold(args: list[str], fn: Callable[[str, str], str]) -> str:
    out = args[0]
    for x in args[1:]:
        out = fn(out, x)
    return out


@rule("Clip")
def _clip(a: list[str], at: Any, c: str) -> str | None:
    x = a[0]
    lo = a[1] if len(a) > 1 and a[1] else None
    hi = a[2] if len(a) > 2 and a[2] else None
    if at.min is not None and len(a) == 1:  # opset < 11: bounds as attributes
        lo, hi = _c(c, at.min), _c(c, at.max)
    if lo is not None:
        x = fmax(x, lo)
    if hi is not None:
        x = fmin(x, hi)
    return x


@rule("LeakyRelu")
def _leaky(a: list[str], at: Any, c: str) -> str:
    return f"({a[0]} if {a[0]} >= 0 else {c}({a[0]} * {_c(c, at.alpha)}))"


@rule("PRelu")
def _prelu(a: list[str], at: Any, c: str) -> str:
    return f"({a[0]} if {a[0]} >= 0 else {c}({a[0]} * {a[1]}))"


@rule("ThresholdedRelu")
def _thr(a: list[str], at: Any, c: str) -> str:
    return f"({a[0]} if {a[0]} > {_c(c, at.alpha)} else {_c(c, 0)})"


@rule("Elu")
def _elu(a: list[str], at: Any, c: str) -> str:
    return f"({a[0]} if {a[0]} >= 0 else {c}({literal(float(at.alpha))} * math.expm1({a[0]})))"


@rule("Selu")
def _selu(a: list[str], at: Any, c: str) -> str:
    x, al, g = a[0], literal(float(at.alpha)), literal(float(at.gamma))
    return f"{c}({g} * ({x} if {x} > 0 else {al} * math.expm1({x})))"


@rule("Celu")
def _celu(a: list[str], at: Any, c: str) -> str:
    x, al = a[0], literal(float(at.alpha))
    return f"{c}(max({x}, 0.0) + min(0.0, {al} * math.expm1(min({x}, 0.0) / {al})))"


@rule("HardSigmoid")
def _hsig(a: list[str], at: Any, c: str) -> str:
    v = f"{c}({a[0]} * {_c(c, at.alpha)} + {_c(c, at.beta)})"
    return fmin(fmax(v, _c(c, 0)), _c(c, 1))


@rule("HardSwish")
def _hswish(a: list[str], at: Any, c: str) -> str:
    gate = fmin(fmax(f"{c}({a[0]} / {_c(c, 6)} + {_c(c, 0.5)})", _c(c, 0)), _c(c, 1))
    return f"{c}({a[0]} * {gate})"


@rule("Softplus")
def _softplus(a: list[str], at: Any, c: str) -> str:
    x = a[0]
    return f"{c}(max({x}, 0.0) + math.log1p(math.exp(-abs({x}))))"


@rule("Softsign")
def _softsign(a: list[str], at: Any, c: str) -> str:
    return f"{c}({a[0]} / (1.0 + abs({a[0]})))"


@rule("Mish")
def _mish(a: list[str], at: Any, c: str) -> str:
    x = a[0]
    return f"{c}({x} * math.tanh(max({x}, 0.0) + math.log1p(math.exp(-abs({x})))))"


@rule("Gelu")
def _gelu(a: list[str], at: Any, c: str) -> str:
    x = a[0]
    if (at.approximate or "none") == "tanh":
        k = literal(math.sqrt(2 / math.pi))
        return f"{c}(0.5 * {x} * (1.0 + math.tanh({k} * ({x} + 0.044715 * {x} * {x} * {x}))))"
    return f"{c}(0.5 * {x} * (1.0 + math.erf({x} * {literal(1 / math.sqrt(2))})))"


_CMP = {"Equal": "==", "Less": "<", "LessOrEqual": "<=", "Greater": ">", "GreaterOrEqual": ">="}
for _op, _sym in _CMP.items():
    _RULES[_op] = (lambda sym: lambda a, at, c: f"({a[0]} {sym} {a[1]})")(_sym)
_RULES["And"] = lambda a, at, c: f"({a[0]} and {a[1]})"
_RULES["Or"] = lambda a, at, c: f"({a[0]} or {a[1]})"
_RULES["Xor"] = lambda a, at, c: f"({a[0]} != {a[1]})"
_RULES["Not"] = lambda a, at, c: f"(not {a[0]})"
_RULES["IsNaN"] = lambda a, at, c: f"({a[0]} != {a[0]})"
_RULES["Where"] = lambda a, at, c: f"({a[1]} if {a[0]} else {a[2]})"


@rule("Cast")
def _cast(a: list[str], at: Any, c: str) -> str | None:
    if isinstance(at.to, str):
        return None
    if c == "bool":
        return f"({a[0]} != 0)"
    return f"{c}({a[0]})"


def activation_expr(name: str, params: list[float], x: str, ctor: str) -> str | None:
    """The scalar expression of a fused-op activation (ai.torsh ``activation`` attribute)."""

    class _A:
        pass

    at = _A()
    if name == "LeakyRelu":
        at.alpha = params[0]  # type: ignore[attr-defined]
    elif name == "Elu":
        at.alpha = params[0]  # type: ignore[attr-defined]
    elif name == "HardSigmoid":
        at.alpha, at.beta = params[0], params[1]  # type: ignore[attr-defined]
    elif name == "Clip":
        return fmin(fmax(x, _c(ctor, params[0])), _c(ctor, params[1]))
    elif name == "Silu":
        if ctor == F32:
            return f"({x} * nn_sigmoid({x}))"
        return f"{ctor}({x} / (1.0 + math.exp(-{x})))"
    elif name in ("Gelu", "GeluTanh"):
        at.approximate = "tanh" if name == "GeluTanh" else "none"  # type: ignore[attr-defined]
        name = "Gelu"
    elif name not in _RULES:
        return None
    return scalar_expr(name, [x], at, ctor)
