"""Fused ops of the ``ai.torsh`` domain, produced by the fusion passes (pipeline O3).

They exist so the optimized graph stays executable by the reference interpreter and
exportable to ONNX (under the custom domain, documented in docs/fused-ops.md):

- ``FusedConv(X, W, B?, Z?)``: ``act(Conv(X, W) + B + Z)``, Conv's attributes plus
  ``activation`` and ``activation_params``;
- ``FusedMatMul(A, B, bias?, Z?)``: ``act(A @ B + bias + Z)`` with MatMul broadcasting;
- ``FusedElementwise(x...)``: a chain of elementwise ops held in the ``body`` subgraph,
  computed in one pass over memory by the code generators.

``activation`` is one of: "" (none), Relu, LeakyRelu(alpha), Clip(min, max), Sigmoid,
Tanh, HardSigmoid(alpha, beta), HardSwish, Gelu, GeluTanh, Silu, Elu(alpha).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from torsh_gen.ir.graph import Node, Value
from torsh_gen.ir.types import Type
from torsh_gen.ops.registry import (
    FLOATS,
    GRAPH,
    INT,
    INTS,
    STRING,
    Cost,
    InferContext,
    OpSpec,
    RunContext,
    lookup,
    op,
)

DOMAIN = "ai.torsh"

#: activation name → number of parameters it takes from ``activation_params``.
ACTIVATIONS = {
    "": 0,
    "Relu": 0,
    "LeakyRelu": 1,
    "Clip": 2,
    "Sigmoid": 0,
    "Tanh": 0,
    "HardSigmoid": 2,
    "HardSwish": 0,
    "Gelu": 0,
    "GeluTanh": 0,
    "Silu": 0,
    "Elu": 1,
}


def apply_activation(y: np.ndarray, name: str, params: list[float]) -> np.ndarray:
    """``y`` through the named activation (computed in float32 or wider, cast back)."""
    if not name:
        return y
    x = y.astype(np.float64) if y.dtype == np.float64 else y.astype(np.float32)
    if name == "Relu":
        r = np.maximum(x, 0)
    elif name == "LeakyRelu":
        r = np.where(x >= 0, x, x * params[0])
    elif name == "Clip":
        r = np.clip(x, params[0], params[1])
    elif name == "Sigmoid":
        r = 1.0 / (1.0 + np.exp(-x))
    elif name == "Tanh":
        r = np.tanh(x)
    elif name == "HardSigmoid":
        r = np.clip(params[0] * x + params[1], 0, 1)
    elif name == "HardSwish":
        r = x * np.clip(x / 6.0 + 0.5, 0, 1)
    elif name == "Gelu":
        erf = np.vectorize(math.erf, otypes=[np.float64])
        r = 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))
    elif name == "GeluTanh":
        r = 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))
    elif name == "Silu":
        r = x / (1.0 + np.exp(-x))
    elif name == "Elu":
        r = np.where(x >= 0, x, params[0] * (np.exp(x) - 1))
    else:
        raise ValueError(f"unknown fused activation '{name}'")
    return np.asarray(r).astype(y.dtype, copy=False)


def _as_node(node: Node, op_type: str, n_inputs: int, drop: tuple[str, ...]) -> Node:
    """A look-alike standard node (first ``n_inputs`` inputs, fused attributes dropped).

    Its outputs are fresh Values: a Node links its outputs to itself, and the real node's
    outputs must keep pointing at the real node.
    """
    attrs = {k: a for k, a in node.attrs.items() if k not in drop}
    outputs = [Value(o.name, o.type) for o in node.outputs]
    return Node(op_type, node.inputs[:n_inputs], outputs, attrs, "", node.name)


def _delegate_infer(ctx: InferContext, op_type: str, n_inputs: int) -> list[Type | None]:
    base = lookup(op_type, "", ctx.opset if ctx.opset else 0)
    n = _as_node(ctx.node, op_type, n_inputs, ("activation", "activation_params"))
    sub = InferContext(n, base.resolve_attrs(n), ctx.input_types[:n_inputs], ctx.input_values[:n_inputs], 0)
    return base.infer(sub)


@op("FusedConv", since=1, domain=DOMAIN)
class FusedConv(OpSpec):
    """Conv with bias, residual add and activation applied in the same pass."""

    attrs = {
        "auto_pad": STRING("NOTSET"),
        "dilations": INTS(),
        "group": INT(1),
        "kernel_shape": INTS(),
        "pads": INTS(),
        "strides": INTS(),
        "activation": STRING(""),
        "activation_params": FLOATS([]),
    }

    def run(self, ctx: RunContext, x: np.ndarray, w: np.ndarray, b: Any = None, z: Any = None) -> np.ndarray:
        conv = lookup("Conv", "", 11)
        node = _as_node(ctx.node, "Conv", 3, ("activation", "activation_params"))
        sub = RunContext(node, conv.resolve_attrs(node), 11, 1, ctx.run_graph, ctx.rng)
        y = conv.run(sub, x, w, b)
        if z is not None:
            y = (y + z).astype(y.dtype, copy=False)
        return apply_activation(y, ctx.attrs.activation, list(ctx.attrs.activation_params or []))

    def infer(self, ctx: InferContext) -> list[Type | None]:
        return _delegate_infer(ctx, "Conv", 3)

    def cost(self, ctx: InferContext, output_types: list[Type | None]) -> Cost:
        base = lookup("Conv", "", 11)
        n = _as_node(ctx.node, "Conv", 3, ("activation", "activation_params"))
        sub = InferContext(n, base.resolve_attrs(n), ctx.input_types[:3], ctx.input_values[:3], 11)
        return base.cost(sub, output_types)


@op("FusedMatMul", since=1, domain=DOMAIN)
class FusedMatMul(OpSpec):
    """MatMul with bias, residual add and activation applied in the same pass."""

    attrs = {"activation": STRING(""), "activation_params": FLOATS([])}

    def run(self, ctx: RunContext, a: np.ndarray, b: np.ndarray, bias: Any = None, z: Any = None) -> np.ndarray:
        wide = a.dtype if a.dtype in (np.float32, np.float64) else np.float32
        y = np.matmul(a.astype(wide, copy=False), b.astype(wide, copy=False))
        if bias is not None:
            y = y + bias
        if z is not None:
            y = y + z
        return apply_activation(y.astype(a.dtype, copy=False), ctx.attrs.activation, list(ctx.attrs.activation_params or []))

    def infer(self, ctx: InferContext) -> list[Type | None]:
        return _delegate_infer(ctx, "MatMul", 2)

    def cost(self, ctx: InferContext, output_types: list[Type | None]) -> Cost:
        base = lookup("MatMul", "", 13)
        n = _as_node(ctx.node, "MatMul", 2, ("activation", "activation_params"))
        sub = InferContext(n, base.resolve_attrs(n), ctx.input_types[:2], ctx.input_values[:2], 13)
        return base.cost(sub, output_types)


@op("FusedElementwise", since=1, domain=DOMAIN)
class FusedElementwise(OpSpec):
    """A chain of elementwise ops (the ``body`` graph) evaluated as one kernel."""

    attrs = {"body": GRAPH()}

    def run(self, ctx: RunContext, *inputs: np.ndarray) -> Any:
        outs = ctx.run_graph(ctx.attrs.body, list(inputs))
        return outs[0] if len(outs) == 1 else tuple(outs)

    def infer(self, ctx: InferContext) -> list[Type | None]:
        body = ctx.attrs.body
        return [v.type for v in body.outputs]

    def cost(self, ctx: InferContext, output_types: list[Type | None]) -> Cost:
        base = super().cost(ctx, output_types)
        base.flops *= max(len(ctx.attrs.body.nodes), 1)
        return base
