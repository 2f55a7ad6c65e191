"""The table of TFLite operator converters, filled by decorators in the op modules.

A converter is ``fn(ctx, op) -> None``: it reads the operator's tensors through the
``Context`` and defines its outputs. An optional ``check(op, model) -> str | None`` says
why one particular use cannot be mapped (an option the IR cannot express), so every
unsupported operator is listed before any conversion starts.

Also here: the helpers several op families share (fused activations, SAME padding).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from torsh_gen.frontends.tflite.context import Context, Unsupported
from torsh_gen.frontends.tflite.reader import Model, Operator
from torsh_gen.ir.graph import Value

ConvertFn = Callable[[Context, Operator], None]
CheckFn = Callable[[Operator, Model], "str | None"]


@dataclass(frozen=True)
class Converter:
    """How one TFLite builtin operator becomes IR nodes."""

    opcode: str
    fn: ConvertFn
    check: CheckFn | None = None
    arity: int = 1  # leading inputs that must be present


CONVERTERS: dict[str, Converter] = {}


def converter(
    *opcodes: str, arity: int = 1, check: CheckFn | None = None
) -> Callable[[ConvertFn], ConvertFn]:
    """Register ``fn`` as the converter of each TFLite builtin in ``opcodes``.

    ``arity``: how many leading inputs the operator must have (checked before ``check``).
    """

    def register(fn: ConvertFn) -> ConvertFn:
        for code in opcodes:
            if code in CONVERTERS:
                raise RuntimeError(f"TFLite converter for {code} registered twice")
            CONVERTERS[code] = Converter(code, fn, check, arity)
        return fn

    return register


# TFLite ActivationFunctionType values.
_ACTIVATIONS = {0: "NONE", 1: "RELU", 2: "RELU_N1_TO_1", 3: "RELU6", 4: "TANH", 5: "SIGN_BIT"}


def activation_name(op: Operator) -> str:
    """The operator's fused activation ('NONE' when it has none)."""
    code = getattr(op.options, "fusedActivationFunction", 0) if op.options is not None else 0
    return _ACTIVATIONS.get(int(code), f"UNKNOWN({code})")


def check_activation(op: Operator, model: Model) -> str | None:
    """Refuse fused activations other than RELU, RELU_N1_TO_1, RELU6 and TANH."""
    name = activation_name(op)
    if name in ("NONE", "RELU", "RELU_N1_TO_1", "RELU6", "TANH"):
        return None
    return f"fused activation {name}"


def activate(ctx: Context, x: Value, op: Operator, hint: str) -> Value:
    """Apply the operator's fused activation to float ``x``."""
    name = activation_name(op)
    if name == "NONE":
        return x
    if name == "RELU":
        return ctx.node1("Relu", [x], f"{hint}/relu")
    if name == "TANH":
        return ctx.node1("Tanh", [x], f"{hint}/tanh")
    lo, hi = (-1.0, 1.0) if name == "RELU_N1_TO_1" else (0.0, 6.0)
    bounds = [ctx.const(f"{hint}/min", np.float32(lo)), ctx.const(f"{hint}/max", np.float32(hi))]
    return ctx.node1("Clip", [x, *bounds], f"{hint}/{name.lower()}")


def same_pads(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """TensorFlow's SAME padding (begin, end) of one spatial axis; an odd pixel goes at the end."""
    out = -(-size // stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def spatial_pads(
    ctx: Context,
    op: Operator,
    hw: tuple[int, int],
    kernel: tuple[int, int],
    stride: tuple[int, int],
    dilation: tuple[int, int],
) -> list[int]:
    """ONNX ``pads`` [top, left, bottom, right] for the operator's padding mode."""
    padding = int(getattr(op.options, "padding", 1))
    if padding == 1:  # VALID
        return [0, 0, 0, 0]
    if any(d < 0 for d in hw):
        raise Unsupported(
            f"operator #{op.index} {op.opcode}: SAME padding needs static spatial sizes"
        )
    (t, b), (left, r) = (same_pads(hw[i], kernel[i], stride[i], dilation[i]) for i in range(2))
    return [t, left, b, r]
