"""The quantization rewrite: pick nodes, let their op quantizers rewrite them, tidy up.

Preconditions: the graph's default-domain opset is at least ``required_opset(options)``
(13 for per-axis scales, 21 for int4 blocks); for static quantization ``ranges`` holds a
calibrated range for the inputs (and, for QOperator, outputs) of the nodes to quantize.
Nodes not selected, or that their quantizer declines, stay float; the result says why.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from torsh_gen.errors import InputError
from torsh_gen.ir.graph import Graph, Node
from torsh_gen.passes.quantize.builder import QuantContext
from torsh_gen.passes.quantize.options import QuantMode, QuantOptions, TensorRange
from torsh_gen.passes.quantize.prepare import SPLIT_GEMMS
from torsh_gen.passes.quantize.quantizers import QUANTIZERS


@dataclass
class QuantizeResult:
    """Which nodes were quantized and which stayed float, with the reason."""

    quantized: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)


def required_opset(options: QuantOptions) -> int:
    """The lowest default-domain opset that the quantized graph's ops need."""
    return 21 if options.mode == QuantMode.WEIGHT_INT4 else 13


def node_key(node: Node) -> str:
    """How reports and ``keep_float`` name a node: its name, else its first output's name."""
    return node.name or (node.outputs[0].name if node.outputs else node.op_type)


def candidates(graph: Graph) -> list[Node]:
    """Nodes of ``graph`` whose op has a quantizer (before any selection)."""
    return [
        n
        for n in graph.nodes
        if n.op_type in QUANTIZERS
        and n.domain in ("", "ai.onnx")
        and QUANTIZERS[n.op_type].applies(n)
    ]


def check_selection(graph: Graph, items: tuple[str, ...], flag: str) -> None:
    """Reject ``--include``/``--exclude`` items naming no quantizable op type or node."""
    ops = {n.op_type for n in graph.nodes}
    nodes = {node_key(n): n for n in graph.nodes}
    for item in items:
        if item in QUANTIZERS:
            continue
        if item in nodes:
            if nodes[item].op_type not in QUANTIZERS:
                raise InputError(
                    f"{flag} {item!r}: node is a {nodes[item].op_type}, which cannot be "
                    f"quantized; quantizable ops: {', '.join(sorted(QUANTIZERS))}"
                )
            continue
        what = (
            "op type that cannot be quantized"
            if item in ops
            else "neither an op type nor a node of this model"
        )
        raise InputError(
            f"{flag} {item!r}: {what}; give one of {', '.join(sorted(QUANTIZERS))} "
            "or a node name (see `torsh-gen inspect`)"
        )


def selected(
    node: Node, options: QuantOptions, split: set[str] | frozenset[str] = frozenset()
) -> str | None:
    """Why ``node`` is left out by the options (None when it is in).

    ``split`` names MatMuls made from Gemms, which op-type items match as ``Gemm``.
    """
    key = node_key(node)
    ops = {node.op_type, "Gemm"} if key in split else {node.op_type}
    if options.include and not ops & set(options.include) and key not in options.include:
        return "not in --include"
    if ops & set(options.exclude) or key in options.exclude:
        return "in --exclude"
    if key in options.keep_float:
        return "kept float by the accuracy guard"
    return None


def quantize_graph(
    graph: Graph, options: QuantOptions, ranges: Mapping[str, TensorRange] | None = None
) -> QuantizeResult:
    """Quantize ``graph`` in place as ``options`` asks; see the module docstring."""
    need = required_opset(options)
    if graph.info is None or graph.opset < need:
        raise InputError(
            f"quantized models need opset {need} or newer; this graph has opset {graph.opset}"
        )
    ctx = QuantContext(graph, options, dict(ranges or {}))
    result = QuantizeResult()
    for node in candidates(graph):
        key = node_key(node)
        why = selected(node, options, graph.meta.get(SPLIT_GEMMS, frozenset())) or QUANTIZERS[
            node.op_type
        ].check(node, ctx)
        if why:
            result.skipped[key] = why
            continue
        QUANTIZERS[node.op_type].rewrite(node, ctx)
        result.quantized.append(key)
    _drop_dead_quantization(graph)
    _drop_unused_initializers(graph)
    graph.toposort()
    return result


def _drop_dead_quantization(graph: Graph) -> None:
    """Remove Q/DQ nodes nobody reads any more (left behind by integer data movement)."""
    while True:
        read = {id(v) for _, n in graph.walk() for v in n.inputs if v is not None} | {
            id(v) for v in graph.outputs
        }
        dead = [
            n
            for n in graph.nodes
            if n.op_type in ("QuantizeLinear", "DequantizeLinear")
            and not any(id(o) in read for o in n.outputs)
        ]
        if not dead:
            return
        graph.nodes = [n for n in graph.nodes if not any(n is d for d in dead)]


def _drop_unused_initializers(graph: Graph) -> None:
    used = {id(v) for _, n in graph.walk() for v in n.inputs if v is not None} | {
        id(v) for v in graph.outputs
    }
    graph.initializers = [
        v for v in graph.initializers if id(v) in used or any(v is i for i in graph.inputs)
    ]
