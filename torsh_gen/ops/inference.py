"""Graph-level type and shape inference, with compile-time propagation of small values.

Walks the nodes in order, asks each op's spec for its output types and merges them with
what the model declared (keeping the more specific). Small values that are known at
compile time (initializers, Shape of a static tensor, arithmetic on those) are evaluated
with the reference kernels so that shape computations such as Shape→Gather→Concat→Reshape
give static shapes downstream.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import numpy as np

from torsh_gen.errors import GraphError, TorshGenError
from torsh_gen.ir.graph import Graph, Node, Value
from torsh_gen.ir.types import DType, TensorType, Type, tensor_type_of
from torsh_gen.ops.execute import evaluate_node
from torsh_gen.ops.registry import Cost, InferContext, lookup

#: Values up to this many elements are evaluated at compile time when their inputs are known.
MAX_FOLD_ELEMENTS = 1024


def bind_inputs(graph: Graph, bindings: Mapping[str, Any]) -> None:
    """Replace symbolic or unknown input dims: ``{"batch": 1}`` binds a symbol everywhere,
    ``{"x": (1, 3, 224, 224)}`` fixes input ``x``'s whole shape."""
    by_name = {v.name: v for v in graph.inputs}
    bindings = {k: ((v,) if k in by_name and not isinstance(v, (tuple, list)) else v) for k, v in bindings.items()}
    symbols = {k: int(v) for k, v in bindings.items() if not isinstance(v, (tuple, list))}
    for name, shape in bindings.items():
        if isinstance(shape, (tuple, list)):
            v = by_name.get(name)
            if v is None:
                raise GraphError(f"--input-shape names '{name}', but the model's inputs are {list(by_name)}")
            t = v.type if isinstance(v.type, TensorType) else None
            if t is not None and t.shape is not None and len(t.shape) != len(shape):
                raise GraphError(f"input '{name}' has rank {len(t.shape)}, --input-shape gave {len(shape)} dims")
            v.type = TensorType(t.dtype if t else DType.FLOAT, tuple(int(d) for d in shape))
    if symbols:
        for v in graph.inputs:
            if isinstance(v.type, TensorType) and v.type.shape is not None:
                v.type = TensorType(v.type.dtype, tuple(symbols.get(d, d) if isinstance(d, str) else d for d in v.type.shape))


class TypeInference:
    """Infers types in a graph and its subgraphs; remembers compile-time-known values."""

    def __init__(self, opsets: Mapping[str, int]) -> None:
        self.opsets = dict(opsets)
        self.known: dict[int, Any] = {}
        self.costs: dict[int, Cost] = {}

    def run(self, graph: Graph) -> None:
        for v in graph.initializers:
            self.known[id(v)] = v.const
        for node in graph.nodes:
            self.node(node)
            for sg in node.subgraphs():
                self.run(sg)
        _shapes_backward(graph)

    def node(self, node: Node) -> None:
        try:
            spec = lookup(node.op_type, node.domain, self.opsets.get(node.domain, 0))
        except TorshGenError:
            return
        attrs = spec.resolve_attrs(node)
        ctx = InferContext(
            node=node,
            attrs=attrs,
            input_types=[None if v is None else v.type for v in node.inputs],
            input_values=[None if v is None else self.known.get(id(v)) for v in node.inputs],
            opset=self.opsets.get(node.domain, 0),
        )
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                inferred = spec.infer(ctx)
        except Exception:
            inferred = [None] * len(node.outputs)
        for v, t in zip(node.outputs, inferred):
            v.type = merge_types(v.type, t)
        self._fold(node, spec, ctx)
        try:
            self.costs[id(node)] = spec.cost(ctx, [v.type for v in node.outputs])
        except Exception:
            self.costs[id(node)] = Cost()

    def _fold(self, node: Node, spec: Any, ctx: InferContext) -> None:
        """Evaluate small nodes whose inputs are all known (including Shape of static tensors)."""
        if not spec.deterministic or any(True for _ in node.subgraphs()):
            return
        if node.op_type == "Shape" and node.domain == "" and len(node.inputs) == 1:
            shape = static_shape_value(node, ctx.attrs)
            if shape is not None:
                self.known[id(node.outputs[0])] = shape
                node.outputs[0].type = merge_types(node.outputs[0].type, tensor_type_of(shape))
            return
        vals = ctx.input_values
        if any(v is not None and val is None for v, val in zip(node.inputs, vals)):
            return
        # Only fold when every output is known to be small: never allocate a crafted huge tensor.
        sizes = [v.type.numel() if isinstance(v.type, TensorType) else None for v in node.outputs if v.name]
        if any(n is None or n > MAX_FOLD_ELEMENTS for n in sizes):
            return
        if not all(isinstance(val, np.ndarray) and val.size <= MAX_FOLD_ELEMENTS for val in vals if val is not None):
            return
        if not any(val is not None for val in vals):
            if node.op_type not in ("Constant", "Range", "ConstantOfShape"):
                return
        outs = evaluate_node(spec, node, ctx.attrs, ctx.opset, vals)
        if outs is None:
            return
        for v, out in zip(node.outputs, outs):
            if isinstance(out, np.ndarray) and out.size <= MAX_FOLD_ELEMENTS:
                self.known[id(v)] = out
                v.type = merge_types(v.type, tensor_type_of(out))


def static_shape_value(node: Node, attrs: Any) -> np.ndarray | None:
    """``Shape`` (with start/end) or ``Size`` of an input whose shape is static, as int64."""
    t = node.inputs[0].type if node.inputs and node.inputs[0] is not None else None
    if not isinstance(t, TensorType) or not t.is_static:
        return None
    if node.op_type == "Size":
        return np.array(int(np.prod(t.shape, dtype=np.int64)), dtype=np.int64)
    start, end = attrs.get("start", 0), attrs.get("end")
    return np.array(t.shape[start:end] if end is not None else t.shape[start:], dtype=np.int64)


#: Ops whose output has exactly the shape of their (first) input.
_SAME_SHAPE = frozenset({
    "Cast", "CastLike", "Identity", "Sqrt", "Log", "Exp", "Neg", "Abs", "Relu", "Sigmoid", "Tanh",
    "Reciprocal", "Floor", "Ceil", "Round", "Sign", "Erf", "Softplus", "Softsign", "Not", "IsNaN", "IsInf",
})


def _shapes_backward(graph: Graph) -> None:
    """Give the input of a shape-preserving unary op the dims its output is known to have.

    A graph output's declared shape (or one an op fixed later) then reaches values that
    forward inference left symbolic, e.g. a ReduceSum whose axes arrive at run time
    followed by a Sqrt (the body of ReduceL2): the native targets need those static."""
    for node in reversed(graph.nodes):
        if node.op_type not in _SAME_SHAPE or node.domain not in ("", "ai.onnx") or not node.inputs:
            continue
        src, out = node.inputs[0], node.outputs[0]
        if src is None or src.const is not None or any(src is v for v in graph.inputs):
            continue
        if isinstance(src.type, TensorType) and isinstance(out.type, TensorType) and out.type.shape is not None:
            if src.type.shape is None or len(src.type.shape) == len(out.type.shape):
                src.type = merge_types(src.type, TensorType(src.type.dtype, out.type.shape))


def merge_types(declared: Type | None, inferred: Type | None) -> Type | None:
    """The more informative of two types for the same value (declared wins on ties)."""
    if declared is None:
        return inferred
    if inferred is None:
        return declared
    if isinstance(declared, TensorType) and isinstance(inferred, TensorType):
        if declared.shape is None:
            return TensorType(declared.dtype or inferred.dtype, inferred.shape)
        if inferred.shape is None or len(inferred.shape) != len(declared.shape):
            return declared
        dims = tuple(d if isinstance(d, int) else (i if isinstance(i, int) else (d if d is not None else i)) for d, i in zip(declared.shape, inferred.shape))
        return TensorType(declared.dtype or inferred.dtype, dims)
    return declared


def infer_types(graph: Graph, bindings: Mapping[str, Any] | None = None) -> TypeInference:
    """Infer every value's type in ``graph`` (in place); returns the inference state (costs, known values)."""
    if bindings:
        bind_inputs(graph, bindings)
    opsets = graph.info.opset_imports if graph.info else {"": 0}
    ti = TypeInference(opsets)
    ti.run(graph)
    return ti


@contextmanager
def bound_types(graph: Graph, bindings: Mapping[str, Any]) -> Iterator[TypeInference]:
    """Infer types with ``bindings`` for the duration of a block, then restore every type.

    Lets a caller run a graph with concrete input shapes without fixing those shapes in
    the graph for later calls.
    """
    saved = [(v, v.type) for v in graph.inputs]
    saved += [(v, v.type) for _, n in graph.walk() for v in n.outputs]
    try:
        yield infer_types(graph, bindings)
    finally:
        for v, t in saved:
            v.type = t


def check_types(graph: Graph) -> None:
    """Raise GraphError where a declared tensor type contradicts the inferred element type."""
    opsets = graph.info.opset_imports if graph.info else {"": 0}
    for g, node in graph.walk():
        try:
            spec = lookup(node.op_type, node.domain, opsets.get(node.domain, 0))
        except TorshGenError:
            continue
        ctx = InferContext(node, spec.resolve_attrs(node), [None if v is None else v.type for v in node.inputs], [None] * len(node.inputs), opsets.get(node.domain, 0))
        try:
            inferred = spec.infer(ctx)
        except Exception:
            continue
        for v, t in zip(node.outputs, inferred):
            if isinstance(v.type, TensorType) and isinstance(t, TensorType) and v.type.dtype and t.dtype and v.type.dtype != t.dtype:
                raise GraphError(
                    f"graph '{g.name}': value '{v.name}' is declared {v.type.dtype.name} but node "
                    f"'{node.name or node.op_type}' produces {t.dtype.name}"
                )


def value_of(ti: TypeInference, v: Value) -> Any:
    """The compile-time value of ``v`` if inference found one, else None."""
    return ti.known.get(id(v))
