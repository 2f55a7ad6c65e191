"""Lowerings of elementwise ops and activations to functional torch code.

Each op is one expression template; ONNX attributes with torch equivalents become keyword
arguments, the others are spelled out as formulas (HardSigmoid with custom alpha/beta,
Selu with custom constants, PRelu with ONNX broadcasting).
"""

from __future__ import annotations

import numpy as np

from torsh_gen.ir.graph import Node
from torsh_gen.ir.types import DType
from torsh_gen.scaffold.train.lower import TORCH_DTYPES, Ctx, NotLowerable, literal, lowers

UNARY = {
    "Relu": "torch.relu({x})",
    "Sigmoid": "torch.sigmoid({x})",
    "Tanh": "torch.tanh({x})",
    "Exp": "torch.exp({x})",
    "Log": "torch.log({x})",
    "Sqrt": "torch.sqrt({x})",
    "Abs": "torch.abs({x})",
    "Neg": "torch.neg({x})",
    "Reciprocal": "torch.reciprocal({x})",
    "Floor": "torch.floor({x})",
    "Ceil": "torch.ceil({x})",
    "Round": "torch.round({x})",
    "Sign": "torch.sign({x})",
    "Erf": "torch.erf({x})",
    "Sin": "torch.sin({x})",
    "Cos": "torch.cos({x})",
    "Tan": "torch.tan({x})",
    "Asin": "torch.asin({x})",
    "Acos": "torch.acos({x})",
    "Atan": "torch.atan({x})",
    "Sinh": "torch.sinh({x})",
    "Cosh": "torch.cosh({x})",
    "Softplus": "F.softplus({x})",
    "Softsign": "F.softsign({x})",
    "HardSwish": "F.hardswish({x})",
    "Mish": "F.mish({x})",
    "Not": "torch.logical_not({x})",
    "IsNaN": "torch.isnan({x})",
    "Identity": None,
}

BINARY = {
    "Add": "{a} + {b}",
    "Sub": "{a} - {b}",
    "Mul": "{a} * {b}",
    "Pow": "torch.pow({a}, {b})",
    "Equal": "torch.eq({a}, {b})",
    "Less": "torch.lt({a}, {b})",
    "LessOrEqual": "torch.le({a}, {b})",
    "Greater": "torch.gt({a}, {b})",
    "GreaterOrEqual": "torch.ge({a}, {b})",
    "And": "torch.logical_and({a}, {b})",
    "Or": "torch.logical_or({a}, {b})",
    "Xor": "torch.logical_xor({a}, {b})",
}

SELU_ALPHA = 1.67326319217681884765625
SELU_GAMMA = 1.05070102214813232421875


def _float_attr(node: Node, name: str, default: float) -> str:
    return literal(np.float32(node.attr(name, default)))


@lowers(*UNARY)
def unary(ctx: Ctx, node: Node) -> None:
    """One-input elementwise ops with a direct torch function; Identity is an alias."""
    x = ctx.var(node.inputs[0])
    template = UNARY[node.op_type]
    if template is None:
        ctx.names[id(node.outputs[0])] = x
        return
    ctx.emit(template.format(x=x))


@lowers(*BINARY)
def binary(ctx: Ctx, node: Node) -> None:
    """Two-input broadcasting ops."""
    a, b = (ctx.var(v) for v in node.inputs)
    ctx.emit(BINARY[node.op_type].format(a=a, b=b))


def _is_int(ctx: Ctx, node: Node) -> bool:
    t = node.outputs[0].type
    dtype = getattr(t, "dtype", None)
    return dtype is not None and dtype.is_integer


@lowers("Div")
def div(ctx: Ctx, node: Node) -> None:
    """Div: true division for floats, truncation for integers (as ONNX defines it)."""
    a, b = (ctx.var(v) for v in node.inputs)
    ctx.emit(f'torch.div({a}, {b}, rounding_mode="trunc")' if _is_int(ctx, node) else f"{a} / {b}")


@lowers("Mod")
def mod(ctx: Ctx, node: Node) -> None:
    """Mod: torch.fmod when fmod=1, else the sign-of-divisor remainder."""
    a, b = (ctx.var(v) for v in node.inputs)
    fn = "torch.fmod" if int(node.attr("fmod", 0)) else "torch.remainder"
    ctx.emit(f"{fn}({a}, {b})")


@lowers("Max", "Min", "Sum", "Mean")
def variadic(ctx: Ctx, node: Node) -> None:
    """Variadic Max/Min/Sum/Mean as a chain of binary torch ops."""
    xs = [ctx.var(v) for v in node.inputs]
    if node.op_type in ("Sum", "Mean"):
        expr = " + ".join(xs)
        if node.op_type == "Mean" and len(xs) > 1:
            expr = f"({expr}) / {len(xs)}"
        ctx.emit(expr)
        return
    fn = "torch.maximum" if node.op_type == "Max" else "torch.minimum"
    expr = xs[0]
    for x in xs[1:]:
        expr = f"{fn}({expr}, {x})"
    ctx.emit(expr)


@lowers("Where")
def where(ctx: Ctx, node: Node) -> None:
    """Where → torch.where."""
    c, a, b = (ctx.var(v) for v in node.inputs)
    ctx.emit(f"torch.where({c}, {a}, {b})")


@lowers("LeakyRelu")
def leaky_relu(ctx: Ctx, node: Node) -> None:
    """LeakyRelu(alpha) → F.leaky_relu."""
    ctx.emit(f"F.leaky_relu({ctx.var(node.inputs[0])}, {_float_attr(node, 'alpha', 0.01)})")


@lowers("Elu", "Celu")
def elu(ctx: Ctx, node: Node) -> None:
    """Elu/Celu(alpha) → F.elu/F.celu."""
    fn = "F.elu" if node.op_type == "Elu" else "F.celu"
    ctx.emit(f"{fn}({ctx.var(node.inputs[0])}, alpha={_float_attr(node, 'alpha', 1.0)})")


@lowers("Selu")
def selu(ctx: Ctx, node: Node) -> None:
    """Selu → F.selu with the standard constants, else the formula with the model's."""
    x = ctx.var(node.inputs[0])
    alpha, gamma = float(node.attr("alpha", SELU_ALPHA)), float(node.attr("gamma", SELU_GAMMA))
    if np.float32(alpha) == np.float32(SELU_ALPHA) and np.float32(gamma) == np.float32(SELU_GAMMA):
        ctx.emit(f"F.selu({x})")
        return
    a, g = literal(np.float32(alpha)), literal(np.float32(gamma))
    ctx.emit(f"{g} * torch.where({x} > 0, {x}, {a} * torch.expm1({x}))")


@lowers("Gelu")
def gelu(ctx: Ctx, node: Node) -> None:
    """Gelu (approximate none or tanh) → F.gelu."""
    approx = node.attr("approximate", b"none")
    approx = approx.decode() if isinstance(approx, bytes) else str(approx)
    if approx not in ("none", "tanh"):
        raise NotLowerable(f"approximate={approx!r} is not supported")
    ctx.emit(f"F.gelu({ctx.var(node.inputs[0])}, approximate={approx!r})")


@lowers("HardSigmoid")
def hard_sigmoid(ctx: Ctx, node: Node) -> None:
    """HardSigmoid(alpha, beta) → clamp(alpha * x + beta, 0, 1)."""
    a, b = _float_attr(node, "alpha", 0.2), _float_attr(node, "beta", 0.5)
    ctx.emit(f"torch.clamp({a} * {ctx.var(node.inputs[0])} + {b}, 0.0, 1.0)")


@lowers("ThresholdedRelu")
def thresholded_relu(ctx: Ctx, node: Node) -> None:
    """ThresholdedRelu(alpha) → x where x > alpha, else 0."""
    x = ctx.var(node.inputs[0])
    ctx.emit(f"torch.where({x} > {_float_attr(node, 'alpha', 1.0)}, {x}, torch.zeros_like({x}))")


@lowers("PRelu")
def prelu(ctx: Ctx, node: Node) -> None:
    """PRelu with a (trainable) slope broadcast as ONNX does."""
    x, slope = ctx.var(node.inputs[0]), ctx.var(node.inputs[1])
    ctx.emit(f"torch.where({x} >= 0, {x}, {x} * {slope})")


@lowers("Clip")
def clip(ctx: Ctx, node: Node) -> None:
    """Clip with constant bounds (inputs from opset 11, attributes before) → torch.clamp."""
    x = ctx.var(node.inputs[0])
    if ctx.graph.opset and ctx.graph.opset < 11:
        lo, hi = node.attr("min"), node.attr("max")
    else:
        bounds = []
        for v in node.inputs[1:3]:
            arr = ctx.const(v) if v is not None else None
            if v is not None and arr is None:
                raise NotLowerable("min/max must be constants")
            bounds.append(None if arr is None else np.asarray(arr).reshape(-1)[0])
        lo, hi = (bounds + [None, None])[:2]
    lo_s = "None" if lo is None else literal(np.float32(lo) if isinstance(lo, float) else lo)
    hi_s = "None" if hi is None else literal(np.float32(hi) if isinstance(hi, float) else hi)
    ctx.emit(f"torch.clamp({x}, {lo_s}, {hi_s})")


@lowers("Softmax", "LogSoftmax")
def softmax(ctx: Ctx, node: Node) -> None:
    """Softmax/LogSoftmax along one axis (before opset 13 only when that axis is the last)."""
    rank = ctx.rank(node.inputs[0])
    default = -1 if ctx.graph.opset >= 13 else 1
    axis = int(node.attr("axis", default))
    axis = axis + rank if axis < 0 else axis
    if ctx.graph.opset < 13 and axis != rank - 1:
        raise NotLowerable("opset < 13 coerces to 2-d; only the last axis is supported")
    fn = "torch.softmax" if node.op_type == "Softmax" else "torch.log_softmax"
    ctx.emit(f"{fn}({ctx.var(node.inputs[0])}, dim={axis})")


@lowers("Cast")
def cast(ctx: Ctx, node: Node) -> None:
    """Cast → Tensor.to(dtype)."""
    to = DType(int(node.attr("to", 1)))
    if to not in TORCH_DTYPES:
        raise NotLowerable(f"cast to {to.name.lower()} has no torch dtype")
    ctx.emit(f"{ctx.var(node.inputs[0])}.to({TORCH_DTYPES[to]})")
