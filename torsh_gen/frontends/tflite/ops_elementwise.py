"""Elementwise operators: arithmetic, activations, QUANTIZE/DEQUANTIZE and CAST.

Elementwise ops do not care about layout, so they run in the layout their inputs already
have: a residual ADD of two conv outputs stays NCHW and adds no Transpose. Constant
operands are rearranged on their data to broadcast against NCHW.
"""

from __future__ import annotations

import numpy as np

from torsh_gen.frontends.tflite.context import NATIVE, Context, pick_layout, unary_layout
from torsh_gen.frontends.tflite.reader import Operator
from torsh_gen.frontends.tflite.registry import activate, check_activation, converter
from torsh_gen.ir.graph import Value

_BINARY = {
    "ADD": "Add",
    "SUB": "Sub",
    "MUL": "Mul",
    "DIV": "Div",
    "MAXIMUM": "Max",
    "MINIMUM": "Min",
    "POW": "Pow",
}


@converter(*_BINARY, arity=2, check=check_activation)
def binary(ctx: Context, op: Operator) -> None:
    """ADD, SUB, MUL, DIV, MAXIMUM, MINIMUM, POW → the ONNX op (+ fused activation)."""
    a, b, out = ctx.input(0), ctx.input(1), ctx.output()
    layout = pick_layout(ctx, [a, b], out)
    suffix = "" if layout == NATIVE else ".nchw"
    args = [ctx.real(a.index, layout), ctx.real(b.index, layout)]
    y = ctx.node1(_BINARY[op.opcode], args, f"{out.name}/{op.opcode.lower()}{suffix}")
    ctx.put_real(out.index, activate(ctx, y, op, out.name), layout)


@converter("SQUARED_DIFFERENCE", arity=2)
def squared_difference(ctx: Context, op: Operator) -> None:
    """SQUARED_DIFFERENCE → Sub, Mul."""
    a, b, out = ctx.input(0), ctx.input(1), ctx.output()
    layout = pick_layout(ctx, [a, b], out)
    d = ctx.node1("Sub", [ctx.real(a.index, layout), ctx.real(b.index, layout)], f"{out.name}/diff")
    ctx.put_real(out.index, ctx.node1("Mul", [d, d], f"{out.name}/square"), layout)


_UNARY = {
    "LOGISTIC": "Sigmoid",
    "TANH": "Tanh",
    "HARD_SWISH": "HardSwish",
    "RELU": "Relu",
    "EXP": "Exp",
    "LOG": "Log",
    "SQRT": "Sqrt",
    "ABS": "Abs",
    "NEG": "Neg",
    "SIN": "Sin",
    "COS": "Cos",
    "FLOOR": "Floor",
    "CEIL": "Ceil",
}


@converter(*_UNARY)
def unary(ctx: Context, op: Operator) -> None:
    """One-input activations and math functions → the ONNX op of the same meaning."""
    x, out = ctx.input(0), ctx.output()
    layout = unary_layout(ctx, x)
    y = ctx.node1(_UNARY[op.opcode], [ctx.real(x.index, layout)], f"{out.name}/{op.opcode.lower()}")
    ctx.put_real(out.index, y, layout)


_CLIPS = {"RELU6": (0.0, 6.0), "RELU_N1_TO_1": (-1.0, 1.0), "RELU_0_TO_1": (0.0, 1.0)}


@converter(*_CLIPS)
def clip(ctx: Context, op: Operator) -> None:
    """RELU6, RELU_N1_TO_1, RELU_0_TO_1 → Clip."""
    x, out = ctx.input(0), ctx.output()
    layout = unary_layout(ctx, x)
    lo, hi = _CLIPS[op.opcode]
    bounds = [
        ctx.const(f"{out.name}/min", np.float32(lo)),
        ctx.const(f"{out.name}/max", np.float32(hi)),
    ]
    ctx.put_real(
        out.index,
        ctx.node1("Clip", [ctx.real(x.index, layout), *bounds], f"{out.name}/clip"),
        layout,
    )


@converter("LEAKY_RELU")
def leaky_relu(ctx: Context, op: Operator) -> None:
    """LEAKY_RELU → LeakyRelu."""
    x, out = ctx.input(0), ctx.output()
    layout = unary_layout(ctx, x)
    alpha = float(getattr(op.options, "alpha", 0.2))
    ctx.put_real(
        out.index,
        ctx.node1("LeakyRelu", [ctx.real(x.index, layout)], f"{out.name}/leaky_relu", alpha=alpha),
        layout,
    )


@converter("RSQRT")
def rsqrt(ctx: Context, op: Operator) -> None:
    """RSQRT → Sqrt, Reciprocal."""
    x, out = ctx.input(0), ctx.output()
    layout = unary_layout(ctx, x)
    s = ctx.node1("Sqrt", [ctx.real(x.index, layout)], f"{out.name}/sqrt")
    ctx.put_real(out.index, ctx.node1("Reciprocal", [s], f"{out.name}/reciprocal"), layout)


@converter("SQUARE")
def square(ctx: Context, op: Operator) -> None:
    """SQUARE → Mul of the input with itself."""
    x, out = ctx.input(0), ctx.output()
    layout = unary_layout(ctx, x)
    v = ctx.real(x.index, layout)
    ctx.put_real(out.index, ctx.node1("Mul", [v, v], f"{out.name}/square"), layout)


@converter("GELU")
def gelu(ctx: Context, op: Operator) -> None:
    """GELU → Gelu (``approximate='tanh'`` when the model asks for the tanh form)."""
    x, out = ctx.input(0), ctx.output()
    layout = unary_layout(ctx, x)
    approx = "tanh" if getattr(op.options, "approximate", False) else "none"
    ctx.put_real(
        out.index,
        ctx.node1("Gelu", [ctx.real(x.index, layout)], f"{out.name}/gelu", approximate=approx),
        layout,
    )


@converter("QUANTIZE", "DEQUANTIZE")
def requantize(ctx: Context, op: Operator) -> None:
    """QUANTIZE/DEQUANTIZE: the real values pass through; the context adds the (De)QuantizeLinear.

    QUANTIZE of float → QuantizeLinear; of an integer tensor (requantization) →
    DequantizeLinear then QuantizeLinear; DEQUANTIZE → DequantizeLinear, or a Cast for
    float16 weights.
    """
    x, out = ctx.input(0), ctx.output()
    layout = unary_layout(ctx, x)
    ctx.put_real(out.index, ctx.real(x.index, layout), layout)


@converter("CAST")
def cast(ctx: Context, op: Operator) -> None:
    """CAST → Cast to the output tensor's element type."""
    x, out = ctx.input(0), ctx.output()
    layout = unary_layout(ctx, x)
    v: Value = ctx.value(x.index, layout)
    ctx.define(out.index, ctx.node1("Cast", [v], f"{out.name}/cast", to=int(out.dtype)), layout)
