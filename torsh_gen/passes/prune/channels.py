"""Channel groups: the output channels that structured pruning removes as one unit.

A group is a set of values that carry the same channels on the same axis, linked by the
ops that keep channels apart: Conv/Gemm/MatMul *producers* create them, pass-through
*members* (elementwise unary ops and activations, BatchNormalization, pooling, depthwise
Conv, and binary elementwise ops such as a residual Add, whose non-constant inputs all
join the group) carry them along, and *consumers* (Conv, Gemm, MatMul, or a Flatten feeding
a Gemm/MatMul) read them as input channels. Removing channel ``c`` of a group deletes
filter ``c`` of every producer, entry ``c`` of every member's per-channel parameter and
input channel ``c`` of every consumer, so the channel vanishes everywhere at once: the
residual case (every producer of an Add group pruned consistently) needs nothing special.

A group is left alone (``blocked`` says why) when any of its values is a graph output or
graph input, is read or produced by any other op (Concat, Reshape, Transpose, Softmax,
Shape, a grouped Conv that is not depthwise, ...), has an unknown channel count, or
when a producer is excluded by the node filter. Correctness first: such channels keep
their width, and the rest of the model is pruned around them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from torsh_gen.ir.graph import Graph, Node, Value
from torsh_gen.ir.rewrite import producers
from torsh_gen.ir.types import TensorType

#: Single-input ops that act on each element alone (extra inputs, if any, are scalar constants).
UNARY = frozenset(
    {
        "Relu",
        "LeakyRelu",
        "Elu",
        "Selu",
        "Celu",
        "Sigmoid",
        "HardSigmoid",
        "HardSwish",
        "Tanh",
        "Gelu",
        "Mish",
        "Softplus",
        "Softsign",
        "ThresholdedRelu",
        "Shrink",
        "Swish",
        "Clip",
        "Abs",
        "Neg",
        "Exp",
        "Log",
        "Sqrt",
        "Reciprocal",
        "Erf",
        "Sin",
        "Cos",
        "Floor",
        "Ceil",
        "Round",
        "Sign",
        "Identity",
        "Dropout",
    }
)
#: Ops that pool over space but keep channels (on axis 1).
POOLS = frozenset(
    {"MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "LpPool", "GlobalLpPool"}
)
#: Elementwise binary ops: non-constant inputs join the group; constants broadcast or get sliced.
BINARY = frozenset({"Add", "Sub", "Mul", "Div", "Max", "Min", "Sum", "PRelu"})


@dataclass
class Consumer:
    """A node reading a group's channels: ``kind`` is conv, gemm, matmul or flatten."""

    node: Node
    kind: str
    #: For flatten: the Gemm/MatMul nodes reading its output, and elements per channel.
    readers: list[Node] = field(default_factory=list)
    per_channel: int = 1


@dataclass
class ChannelGroup:
    """Values sharing one set of channels, and every node that must shrink with them."""

    channels: int
    axis: int
    rank: int
    producers: list[Node] = field(default_factory=list)
    members: list[Node] = field(default_factory=list)
    consumers: list[Consumer] = field(default_factory=list)
    values: dict[int, Value] = field(default_factory=dict)
    #: Constants of members that must be sliced: (node, input index, axis in that constant).
    sliced_constants: list[tuple[Node, int, int]] = field(default_factory=list)
    blocked: str = ""

    @property
    def name(self) -> str:
        """A readable label: the first producer's node name (or output name)."""
        p = self.producers[0]
        return p.name or p.outputs[0].name

    def block(self, reason: str) -> None:
        """Mark the group as left alone (the first reason is kept)."""
        if not self.blocked:
            self.blocked = reason


def producer_channels(node: Node) -> tuple[int, int] | None:
    """(channel count, channel axis of the output) when ``node`` can be a producer, else None."""
    if node.domain not in ("", "ai.onnx") or not node.outputs:
        return None
    ins = node.inputs
    w = ins[1] if len(ins) > 1 else None
    if (
        w is None
        or w.const is None
        or w.const.dtype.kind != "f"
        or ins[0] is None
        or ins[0].const is not None
    ):
        return None
    bias = ins[2] if len(ins) > 2 else None
    if bias is not None and bias.const is None:
        return None
    if node.op_type == "Conv" and w.const.ndim >= 3 and int(node.attr("group", 1)) == 1:
        return w.const.shape[0], 1
    if node.op_type == "Gemm" and w.const.ndim == 2:
        return (w.const.shape[0] if node.attr("transB", 0) else w.const.shape[1]), 1
    if node.op_type == "MatMul" and w.const.ndim == 2:
        rank = _rank(node.outputs[0])
        return (w.const.shape[1], rank - 1) if rank and rank >= 2 else None
    return None


def find_channel_groups(graph: Graph) -> list[ChannelGroup]:
    """Every channel group of ``graph`` (types must be inferred), blocked ones included."""
    users = graph.consumers()
    prod = producers(graph)
    outputs = {id(v) for v in graph.outputs}
    taken: set[int] = set()
    groups = []
    for node in graph.nodes:
        pc = producer_channels(node)
        if pc is None or id(node.outputs[0]) in taken:
            continue
        rank = _rank(node.outputs[0])
        group = ChannelGroup(pc[0], pc[1], rank or 0)
        _explore(group, node.outputs[0], users, prod, outputs)
        taken.update(group.values)
        groups.append(group)
    return groups


def _explore(group: ChannelGroup, seed: Value, users: dict, prod: dict, outputs: set[int]) -> None:
    """Grow ``group`` from ``seed`` over producers, members and consumers (both directions).

    A node is visited once as the writer of a group value and once as a reader, so a Conv
    that reads and writes the same group (``x + conv(x)``) is both consumer and producer.
    """
    stack = [seed]
    visited: set[tuple[int, str]] = set()
    member_ids: set[int] = set()

    def member(node: Node) -> None:
        if id(node) not in member_ids:
            member_ids.add(id(node))
            stack.extend(_member(group, node, users, outputs))

    while stack:
        v = stack.pop()
        if id(v) in group.values:
            continue
        group.values[id(v)] = v
        shape = v.type.shape if isinstance(v.type, TensorType) else None
        if shape is None or len(shape) != group.rank or shape[group.axis] != group.channels:
            group.block(f"value {v.name!r} has no known {group.channels}-channel shape")
        if id(v) in outputs:
            group.block(f"its channels reach the graph output {v.name!r}")
        p = prod.get(id(v))
        if p is None:
            group.block(f"value {v.name!r} is a graph input or constant")
        elif (id(p), "writes") not in visited:
            visited.add((id(p), "writes"))
            if v is p.outputs[0] and producer_channels(p) == (group.channels, group.axis):
                group.producers.append(p)
            else:
                member(p)
        for u in users.get(id(v), []):
            if (id(u), "reads") in visited:
                continue
            visited.add((id(u), "reads"))
            consumer = None if id(u) in member_ids else _consumer(group, u, v, users, outputs)
            if consumer is not None:
                group.consumers.append(consumer)
            else:
                member(u)


def _member(group: ChannelGroup, node: Node, users: dict, outputs: set[int]) -> list[Value]:
    """Check ``node`` as a pass-through member; the values it links to the group."""
    op = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}::{node.op_type}"
    used_outputs = [o for o in node.outputs[1:] if id(o) in outputs or users.get(id(o))]
    if op in UNARY or op in POOLS:
        if op in POOLS and group.axis != 1:
            group.block(f"{op} {node.name!r} pools a non-channel axis")
        if used_outputs:
            group.block(f"{op} {node.name!r} has a second output in use")
        for v in node.inputs[1:]:
            if v is not None and not _is_scalar(v):
                group.block(f"{op} {node.name!r} has a non-scalar parameter")
        group.members.append(node)
        return [node.inputs[0], node.outputs[0]]
    if op == "BatchNormalization":
        if len(node.inputs) < 5 or used_outputs or node.attr("training_mode", 0):
            group.block(f"BatchNormalization {node.name!r} is in training form")
        for i in range(1, 5):
            c = node.inputs[i].const if node.inputs[i] is not None else None
            if c is None or c.shape != (group.channels,):
                group.block(f"BatchNormalization {node.name!r} has non-constant statistics")
            group.sliced_constants.append((node, i, 0))
        group.members.append(node)
        return [node.inputs[0], node.outputs[0]]
    if op == "Conv" and _is_depthwise(node, group.channels):
        group.sliced_constants.append((node, 1, 0))
        if len(node.inputs) > 2 and node.inputs[2] is not None:
            group.sliced_constants.append((node, 2, 0))
        group.members.append(node)
        return [node.inputs[0], node.outputs[0]]
    if op in BINARY:
        return _binary_member(group, node)
    group.block(f"{op} {node.name!r} touches its channels")
    return []


def _binary_member(group: ChannelGroup, node: Node) -> list[Value]:
    """Elementwise binary ops: tensors with the channels join, constants broadcast or get sliced."""
    linked = [node.outputs[0]]
    for i, v in enumerate(node.inputs):
        if v is None:
            continue
        shape = (
            v.const.shape
            if v.const is not None
            else (v.type.shape if isinstance(v.type, TensorType) else None)
        )
        if shape is None:
            group.block(f"{node.op_type} {node.name!r} has an input of unknown shape")
            continue
        ax = group.axis - (group.rank - len(shape))
        dim = shape[ax] if 0 <= ax < len(shape) else 1
        if dim == 1:
            continue
        if dim != group.channels:
            group.block(f"{node.op_type} {node.name!r} mixes {dim} and {group.channels} channels")
        elif v.const is not None:
            group.sliced_constants.append((node, i, ax))
        elif len(shape) != group.rank:
            group.block(f"{node.op_type} {node.name!r} broadcasts over the channel axis")
        else:
            linked.append(v)
    group.members.append(node)
    return linked


def _consumer(
    group: ChannelGroup, node: Node, v: Value, users: dict, outputs: set[int]
) -> Consumer | None:
    """``node`` as a reader of input channels, or None when it is not one."""
    if node.domain not in ("", "ai.onnx") or sum(1 for x in node.inputs if x is v) != 1:
        return None
    if node.op_type == "Flatten" and group.axis == 1 and int(node.attr("axis", 1)) == 1:
        return _flatten(group, node, users, outputs)
    w = node.inputs[1] if len(node.inputs) > 1 else None
    if node.inputs[0] is not v or w is None or w.const is None:
        return None
    if any(x is not None and x.const is None for x in node.inputs[1:]):
        return None
    if node.op_type == "Conv" and group.axis == 1 and int(node.attr("group", 1)) == 1:
        return Consumer(node, "conv")
    if (
        node.op_type == "Gemm"
        and group.axis == 1
        and group.rank == 2
        and not node.attr("transA", 0)
    ):
        return Consumer(node, "gemm")
    if node.op_type == "MatMul" and w.const.ndim == 2 and group.axis == group.rank - 1:
        return Consumer(node, "matmul")
    return None


def _flatten(group: ChannelGroup, node: Node, users: dict, outputs: set[int]) -> Consumer | None:
    """A Flatten whose output only feeds Gemm/MatMul weights: its readers lose channel blocks."""
    shape = node.inputs[0].type.shape if isinstance(node.inputs[0].type, TensorType) else None
    out = node.outputs[0]
    if shape is None or not all(isinstance(d, int) for d in shape[2:]) or id(out) in outputs:
        return None
    readers = users.get(id(out), [])
    for r in readers:
        w = r.inputs[1] if len(r.inputs) > 1 else None
        ok = (
            r.inputs[0] is out
            and w is not None
            and w.const is not None
            and w.const.ndim == 2
            and w is not out
        )
        if (
            not ok
            or r.op_type not in ("Gemm", "MatMul")
            or (r.op_type == "Gemm" and r.attr("transA", 0))
        ):
            return None
    if not readers:
        return None
    return Consumer(node, "flatten", list(readers), math.prod(shape[2:]))


def _is_depthwise(node: Node, channels: int) -> bool:
    w = node.inputs[1] if len(node.inputs) > 1 else None
    b = node.inputs[2] if len(node.inputs) > 2 else None
    return (
        w is not None
        and w.const is not None
        and w.const.ndim >= 3
        and int(node.attr("group", 1)) == channels == w.const.shape[0]
        and w.const.shape[1] == 1
        and (b is None or b.const is not None)
    )


def _is_scalar(v: Value) -> bool:
    """True for a one-element value (constant or computed), which cannot carry channels."""
    if v.const is not None:
        return v.const.size == 1
    t = v.type
    return isinstance(t, TensorType) and t.shape is not None and all(d == 1 for d in t.shape)


def _rank(v: Value) -> int | None:
    t = v.type
    return len(t.shape) if isinstance(t, TensorType) and t.shape is not None else None
