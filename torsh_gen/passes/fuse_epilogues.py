"""Epilogue fusion: Conv/MatMul/Gemm with bias, residual add and activation as one op.

A convolution or matrix product followed by ``Add bias``, ``Add residual`` and an
activation reads and writes its output tensor up to four times; a fused kernel applies the
epilogue while the output tile is still in registers (see PERF-FACTS: that is where
onnxruntime's MLAS wins). This pass rewrites, in the top-level graph::

    Conv(X, W, B?) [→ Mul/Add per-channel constants] [→ Add/Sum Z] [→ act]
        ⇒ ai.torsh::FusedConv(X, W', B', Z?)  activation=act
    MatMul(A, B) | Gemm(A, B, C?) [→ Mul/Add per-column constants] [→ Add/Sum Z] [→ act]
        ⇒ ai.torsh::FusedMatMul(A, B', bias?, Z?)  activation=act

Bias constants are summed into one 1-D vector; a per-channel Mul before the residual (a
BatchNorm some exporters spell as Mul and Add) scales the constant weights and the bias.
``Z`` must have exactly the output's shape.
Gemm qualifies with alpha=1, transA=0 and beta=1 (or no C); transB=1 needs a constant B,
which is stored transposed. Activations: Relu, LeakyRelu, Clip with constant bounds,
Sigmoid, Tanh, HardSigmoid, HardSwish, Gelu (exact, tanh and decomposed), x*Sigmoid(x)
(Silu), Elu. A step is taken only when the value before it is read by nothing else and is
not a graph output; the fused node computes the chain's last Value, so names survive.

Preconditions: verified, topologically sorted graph; BatchNorm folded (fold_batchnorm) for
the best result. Sets the model's ``ai.torsh`` opset import to 1 when it fuses anything.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from torsh_gen.ir.graph import Attribute, AttrKind, Graph, Node, Value
from torsh_gen.ir.rewrite import NameGen
from torsh_gen.ops.fused import DOMAIN
from torsh_gen.ops.inference import infer_types
from torsh_gen.passes.manager import register_pass
from torsh_gen.passes.matching import (
    View,
    apply_fusions,
    is_float,
    op_is,
    other_input,
    same_shape,
    tensor_type,
)
from torsh_gen.passes.patterns import GeluMatch, find_gelus


@dataclass
class Epilogue:
    """What follows one Conv/MatMul/Gemm ``anchor`` and can run inside its kernel."""

    anchor: Node
    a: Value
    b: Value
    b_const: np.ndarray | None = None  # B stored anew (pre-transposed, scaled)
    bias: Value | None = None
    bias_const: np.ndarray | None = None  # constant bias (folded sum); replaces ``bias``
    residual: Value | None = None
    activation: str = ""
    params: list[float] = field(default_factory=list)
    nodes: list[Node] = field(default_factory=list)  # absorbed nodes after the anchor

    @property
    def out(self) -> Value:
        """The value the fused node computes."""
        return (self.nodes[-1] if self.nodes else self.anchor).outputs[0]

    @property
    def root(self) -> Node:
        """The last node of the chain (the fused node takes its place)."""
        return self.nodes[-1] if self.nodes else self.anchor


# --------------------------------------------------------------------------- anchors
def _conv_start(view: View, node: Node) -> Epilogue | None:
    y = node.outputs[0]
    t = tensor_type(y)
    if len(node.inputs) < 2 or not is_float(y) or t.rank is None or t.rank < 3:
        return None
    ep = Epilogue(node, node.inputs[0], node.inputs[1])
    b = node.inputs[2] if len(node.inputs) > 2 else None
    c = view.const(b)
    if c is not None:
        ep.bias_const = c
    else:
        ep.bias = b
    return ep


def _matmul_start(view: View, node: Node) -> Epilogue | None:
    y = node.outputs[0]
    a, b = node.inputs[0], node.inputs[1]
    ta, tb = tensor_type(a), tensor_type(b)
    if not is_float(y) or ta is None or tb is None or (ta.rank or 0) < 2 or (tb.rank or 0) < 2:
        return None
    if node.op_type == "MatMul":
        return Epilogue(node, a, b)
    if node.attr("alpha", 1.0) != 1.0 or node.attr("transA", 0) != 0:
        return None
    c = node.inputs[2] if len(node.inputs) > 2 else None
    if c is not None and node.attr("beta", 1.0) != 1.0:
        return None
    ep = Epilogue(node, a, b)
    if node.attr("transB", 0):
        w = view.const(b)
        if w is None or w.ndim != 2:
            return None
        ep.b_const = np.ascontiguousarray(w.T)
    if c is not None and not _take_addend(view, ep, c, y):
        return None
    return ep


# --------------------------------------------------------------------------- epilogue steps
def _channel_vector(c: np.ndarray, y: Value, axis: int) -> np.ndarray | None:
    """``c`` as a 1-D vector over ``axis`` of ``y`` when ``c`` broadcasts along that axis only."""
    t = tensor_type(y)
    if t is None or t.shape is None or c.ndim > len(t.shape) or c.dtype != t.dtype.numpy:
        return None
    n = t.shape[axis]
    if not isinstance(n, int):
        return None
    shape = (1,) * (len(t.shape) - c.ndim) + c.shape
    others = [d for i, d in enumerate(shape) if i != axis % len(shape)]
    if any(d != 1 for d in others) or shape[axis] not in (1, n):
        return None
    return np.broadcast_to(c.reshape(-1), (n,)).astype(c.dtype)


def _take_addend(view: View, ep: Epilogue, v: Value, y: Value) -> bool:
    """Absorb ``+ v`` into ``ep`` as bias (per-channel constant) or residual (same shape)."""
    c = view.const(v)
    axis = 1 if ep.anchor.op_type == "Conv" else -1
    vec = None if c is None else _channel_vector(c, y, axis)
    if vec is not None and ep.bias is None:
        ep.bias_const = vec if ep.bias_const is None else (ep.bias_const + vec).astype(vec.dtype)
        return True
    if ep.residual is None and same_shape(v, y):
        ep.residual = v
        return True
    return False


def _take_scale(view: View, ep: Epilogue, v: Value, y: Value) -> bool:
    """Absorb ``* v`` (per-channel constant) into the weights and the bias so far."""
    w = ep.b_const if ep.b_const is not None else view.const(ep.b)
    c = view.const(v)
    is_conv = ep.anchor.op_type == "Conv"
    vec = None if c is None else _channel_vector(c, y, 1 if is_conv else -1)
    if vec is None or w is None or ep.bias is not None or ep.residual is not None:
        return False
    if w.dtype != vec.dtype or w.shape[0 if is_conv else -1] != vec.shape[0]:
        return False
    shape = (-1,) + (1,) * (w.ndim - 1) if is_conv else (-1,)
    ep.b_const = (w * vec.reshape(shape)).astype(w.dtype)
    if ep.bias_const is not None:
        ep.bias_const = (ep.bias_const * vec).astype(vec.dtype)
    return True


def _extend_affine(view: View, ep: Epilogue) -> None:
    """Follow Add/two-input Sum (bias or residual) and Mul (per-channel scale) nodes."""
    while True:
        y = ep.out
        nxt = view.reader(y)
        if not op_is(nxt, "Add", "Sum", "Mul") or len(nxt.inputs) != 2:
            return
        other = other_input(nxt, y)
        if other is None or not same_shape(nxt.outputs[0], y):
            return
        take = _take_scale if nxt.op_type == "Mul" else _take_addend
        if not take(view, ep, other, y):
            return
        ep.nodes.append(nxt)


_PLAIN = {"Relu": "Relu", "Sigmoid": "Sigmoid", "Tanh": "Tanh", "HardSwish": "HardSwish"}


def _activation(
    view: View, y: Value, gelus: dict[int, GeluMatch]
) -> tuple[str, list[float], list[Node]] | None:
    """(name, params, nodes) of an activation applied to ``y`` and nothing else reading ``y``."""
    g = gelus.get(id(y))
    if (
        g is not None
        and id(y) not in view.outputs
        and all(r in g.nodes for r in view.readers_of(y))
    ):
        return ("Gelu" if g.approximate == "none" else "GeluTanh"), [], g.nodes
    silu = _silu(view, y)
    if silu is not None:
        return "Silu", [], silu
    n = view.reader(y)
    if n is None or not n.inputs or n.inputs[0] is not y or any(v is y for v in n.inputs[1:]):
        return None
    if op_is(n, *_PLAIN):
        return _PLAIN[n.op_type], [], [n]
    if op_is(n, "LeakyRelu"):
        return "LeakyRelu", [float(n.attr("alpha", 0.01))], [n]
    if op_is(n, "Elu"):
        return "Elu", [float(n.attr("alpha", 1.0))], [n]
    if op_is(n, "HardSigmoid"):
        return "HardSigmoid", [float(n.attr("alpha", 0.2)), float(n.attr("beta", 0.5))], [n]
    if op_is(n, "Gelu"):
        return ("GeluTanh" if n.attr("approximate", "none") == "tanh" else "Gelu"), [], [n]
    if op_is(n, "Clip"):
        bounds = _clip_bounds(view, n)
        return None if bounds is None else ("Clip", bounds, [n])
    return None


def _clip_bounds(view: View, n: Node) -> list[float] | None:
    """[min, max] of a Clip (attributes before opset 11, constant inputs after; ±inf if absent)."""
    if "min" in n.attrs or "max" in n.attrs or len(n.inputs) == 1:
        big = 3.4028234663852886e38 if (view.graph.opset or 11) < 11 else math.inf
        return [float(n.attr("min", -big)), float(n.attr("max", big))]
    bounds = []
    for i, default in ((1, -math.inf), (2, math.inf)):
        v = n.inputs[i] if len(n.inputs) > i else None
        c = view.scalar(v) if v is not None else default
        if c is None:
            return None
        bounds.append(float(c))
    return bounds


def _silu(view: View, y: Value) -> list[Node] | None:
    """[Sigmoid, Mul] when ``y``'s only readers compute ``y * Sigmoid(y)``."""
    readers = view.readers_of(y)
    if len(readers) != 2 or id(y) in view.outputs:
        return None
    sig = next((r for r in readers if op_is(r, "Sigmoid") and r.inputs[0] is y), None)
    mul = next((r for r in readers if op_is(r, "Mul")), None)
    if sig is None or mul is None or view.reader(sig.outputs[0]) is not mul:
        return None
    return [sig, mul] if other_input(mul, y) is sig.outputs[0] else None


# --------------------------------------------------------------------------- rewriting
def _plan(view: View, node: Node, gelus: dict[int, GeluMatch]) -> Epilogue | None:
    if op_is(node, "Conv"):
        ep = _conv_start(view, node)
    elif op_is(node, "MatMul", "Gemm"):
        ep = _matmul_start(view, node)
    else:
        return None
    if ep is None:
        return None
    _extend_affine(view, ep)
    act = _activation(view, ep.out, gelus) if id(ep.out) not in view.outputs else None
    if act is not None:
        ep.activation, ep.params = act[0], act[1]
        ep.nodes += act[2]
    worth = ep.nodes or (
        op_is(node, "Gemm") and (ep.bias_const is not None or ep.residual is not None)
    )
    return ep if worth else None


def _fused_node(graph: Graph, names: NameGen, ep: Epilogue) -> Node:
    anchor = ep.anchor
    bias = ep.bias
    if ep.bias_const is not None:
        bias = graph.add_initializer(
            names.fresh(f"{anchor.name or anchor.op_type}_bias"), ep.bias_const
        )
    b = ep.b
    if ep.b_const is not None:
        b = graph.add_initializer(names.fresh(f"{b.name}_fused"), np.ascontiguousarray(ep.b_const))
    inputs = [ep.a, b, bias, ep.residual]
    while inputs and inputs[-1] is None:
        inputs.pop()
    is_conv = anchor.op_type == "Conv"
    attrs = dict(anchor.attrs) if is_conv else {}
    if ep.activation:
        attrs["activation"] = Attribute(AttrKind.STRING, ep.activation)
    if ep.params:
        attrs["activation_params"] = Attribute(AttrKind.FLOATS, [float(p) for p in ep.params])
    op_type = "FusedConv" if is_conv else "FusedMatMul"
    hint = anchor.name or op_type
    return Node(op_type, inputs, [ep.out], attrs, DOMAIN, names.fresh(f"{hint}_fused"))


@register_pass("fuse_epilogues", custom_ops=True)
def fuse_epilogues(graph: Graph) -> bool:
    """Fuse bias, residual add and activation into Conv/MatMul/Gemm as ai.torsh ops."""
    infer_types(graph)
    view = View(graph)
    names = NameGen(graph)
    gelus = {id(m.x): m for m in find_gelus(view)}
    rewrites = []
    taken: set[int] = set()
    counts: dict[str, int] = {}
    for node in list(graph.nodes):
        if id(node) in taken:
            continue
        ep = _plan(view, node, gelus)
        if ep is None or any(id(n) in taken for n in ep.nodes):
            continue
        fused = _fused_node(graph, names, ep)
        taken.update(id(n) for n in [ep.anchor, *ep.nodes])
        rewrites.append((ep.root, [fused], [ep.anchor, *ep.nodes]))
        key = f"{fused.op_type}({ep.activation or 'linear'}{'+residual' if ep.residual else ''})"
        counts[key] = counts.get(key, 0) + 1
    return apply_fusions(graph, rewrites, counts)
