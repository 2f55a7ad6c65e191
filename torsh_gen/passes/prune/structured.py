"""Structured pruning: remove whole output channels and shrink every layer that reads them.

Preconditions: value types inferred (``infer_types``) so channel counts and the spatial
size under a Flatten are known; weights are initializers. See ``channels.py`` for which
channels form a group and when a group is left alone.

Criterion: each producer scores its filters by their L1 (default) or L2 norm, multiplied
by ``|gamma| / sqrt(var + eps)`` when a BatchNormalization reads the producer's output
directly (that is the scale the filter really has). Scores are divided by the producer's
mean score, so every producer of a residual group has the same say, and summed over the
group's producers. ``layer`` scope removes ``round(S * C)`` channels of every group;
``global`` scope ranks the normalized scores of all groups together and removes the
lowest ``round(S * total)`` channels. Every group keeps at least one channel.

Removing channel ``c`` slices filter ``c`` (and its bias) out of the producers, entry
``c`` out of the members' per-channel constants (BatchNormalization statistics, depthwise
filters, per-channel Add/Mul constants) and input channel ``c`` out of the consumers (for
a Flatten, the ``c``-th block of columns of the Gemm/MatMul after it). The result equals
the unpruned model with those consumer inputs zeroed, and computes fewer MACs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from torsh_gen.errors import InputError
from torsh_gen.ir.graph import Attribute, AttrKind, Graph, Node
from torsh_gen.ir.rewrite import NameGen, add_constant, use_counts
from torsh_gen.ir.types import tensor_type_of
from torsh_gen.ops.inference import infer_types
from torsh_gen.passes.prune.channels import ChannelGroup, find_channel_groups
from torsh_gen.passes.prune.magnitude import SCOPES, NodeFilter, check_sparsity

NORMS = ("l1", "l2")


@dataclass
class GroupResult:
    """One channel group: producers, channels before and kept, or why it was left alone."""

    name: str
    producers: list[str]
    consumers: list[str]
    channels: int
    kept: list[int]
    blocked: str = ""

    @property
    def removed(self) -> list[int]:
        """Indices of the removed channels."""
        keep = set(self.kept)
        return [c for c in range(self.channels) if c not in keep]

    def to_dict(self) -> dict:
        """Plain data for JSON/YAML output."""
        return {
            "group": self.name,
            "producers": self.producers,
            "consumers": self.consumers,
            "channels": self.channels,
            "kept": len(self.kept),
            "removed": self.removed,
            "left_alone": self.blocked or None,
        }


def structured_prune(
    graph: Graph,
    sparsity: float,
    scope: str = "layer",
    norm: str = "l1",
    node_filter: NodeFilter | None = None,
    channel_multiple: int = 1,
) -> list[GroupResult]:
    """Remove the lowest-scoring channels of every prunable group in place; one row per group.

    ``channel_multiple`` rounds each group's kept channel count up to a multiple of it
    (never above the original count), putting back the best-scoring removed channels:
    onnxruntime's blocked convolution kernels want channel counts divisible by 8 or 16.
    """
    check_sparsity(sparsity)
    if channel_multiple < 1:
        raise InputError(f"channel multiple must be a positive integer, got {channel_multiple}")
    if scope not in SCOPES:
        raise InputError(f"unknown scope {scope!r}; use layer or global")
    if norm not in NORMS:
        raise InputError(f"unknown norm {norm!r}; use l1 or l2")
    infer_types(graph)
    groups = find_channel_groups(graph)
    for g in groups:
        if node_filter and not g.blocked and not all(node_filter.allows(p) for p in g.producers):
            g.block("a producer is excluded by --include/--exclude")
    open_groups = [g for g in groups if not g.blocked]
    if not open_groups:
        reasons = (
            "; ".join(f"{g.name}: {g.blocked}" for g in groups[:4])
            or "no Conv/Gemm/MatMul with constant weights"
        )
        raise InputError(f"nothing in this model can be pruned structurally ({reasons})")
    users = graph.consumers()
    scores = [channel_scores(g, norm, users) for g in open_groups]
    keeps = [
        _round_up(k, sc, channel_multiple)
        for k, sc in zip(_choose(scores, sparsity, scope), scores)
    ]
    results = {id(g): _result(g, list(range(g.channels))) for g in groups}
    if any(len(k) < g.channels for g, k in zip(open_groups, keeps)):
        names = NameGen(graph)
        for g, keep in zip(open_groups, keeps):
            if len(keep) < g.channels:
                _shrink(graph, g, np.asarray(keep), names)
        _refresh_types(graph)
    for g, keep in zip(open_groups, keeps):
        results[id(g)].kept = list(keep)
    return [results[id(g)] for g in groups]


def _result(g: ChannelGroup, kept: list[int]) -> GroupResult:
    return GroupResult(
        g.name,
        [p.name for p in g.producers],
        [c.node.name for c in g.consumers],
        g.channels,
        kept,
        g.blocked,
    )


def channel_scores(
    group: ChannelGroup, norm: str = "l1", users: dict[int, list[Node]] | None = None
) -> np.ndarray:
    """Importance of each channel of ``group`` (see the module docstring), float64 [C].

    ``users`` (``graph.consumers()``) lets a BatchNormalization after a producer scale its scores.
    """
    total = np.zeros(group.channels)
    for p in group.producers:
        w = p.inputs[1].const.astype(np.float64)
        w = np.moveaxis(w, _out_axis(p), 0).reshape(group.channels, -1)
        s = np.abs(w).sum(axis=1) if norm == "l1" else np.sqrt((w * w).sum(axis=1))
        s = s * _bn_scale(p, users or {})
        mean = s.mean()
        total += s / mean if mean > 0 else s
    return total


def _bn_scale(p: Node, users: dict[int, list[Node]]) -> np.ndarray | float:
    """``|gamma| / sqrt(var + eps)`` of a BatchNormalization reading ``p``'s output, else 1."""
    out = p.outputs[0]
    readers = users.get(id(out), [])
    if (
        len(readers) == 1
        and readers[0].op_type == "BatchNormalization"
        and readers[0].inputs[0] is out
    ):
        bn = readers[0]
        gamma, var = bn.inputs[1].const, bn.inputs[4].const
        if gamma is not None and var is not None:
            return np.abs(gamma.astype(np.float64)) / np.sqrt(
                var.astype(np.float64) + float(bn.attr("epsilon", 1e-5))
            )
    return 1.0


def _choose(scores: list[np.ndarray], sparsity: float, scope: str) -> list[list[int]]:
    """Sorted indices of the channels each group keeps."""
    if scope == "layer":
        drops = [
            np.argsort(s, kind="stable")[: min(int(round(sparsity * len(s))), len(s) - 1)]
            for s in scores
        ]
    else:
        normed = [s / s.mean() if s.mean() > 0 else s for s in scores]
        flat = np.concatenate(normed)
        owner = np.concatenate([np.full(len(s), i) for i, s in enumerate(scores)])
        index = np.concatenate([np.arange(len(s)) for s in scores])
        budget = int(round(sparsity * len(flat)))
        left = [len(s) for s in scores]
        dropped: list[list[int]] = [[] for _ in scores]
        for j in np.argsort(flat, kind="stable"):
            if budget == 0:
                break
            g = int(owner[j])
            if left[g] > 1:
                dropped[g].append(int(index[j]))
                left[g] -= 1
                budget -= 1
        drops = [np.asarray(d, dtype=np.int64) for d in dropped]
    keeps = []
    for s, d in zip(scores, drops):
        mask = np.ones(len(s), dtype=bool)
        mask[d] = False
        keeps.append([int(i) for i in np.flatnonzero(mask)])
    return keeps


def _round_up(keep: list[int], scores: np.ndarray, multiple: int) -> list[int]:
    """``keep`` grown by the best removed channels to a multiple of ``multiple`` (at most all)."""
    target = min(len(scores), -(-len(keep) // multiple) * multiple)
    if target <= len(keep):
        return keep
    kept = set(keep)
    removed = [c for c in np.argsort(-scores, kind="stable") if int(c) not in kept]
    return sorted(kept | {int(c) for c in removed[: target - len(keep)]})


def _out_axis(node: Node) -> int:
    """The axis of ``node``'s weight that holds its output channels."""
    if node.op_type == "Gemm":
        return 0 if node.attr("transB", 0) else 1
    return 1 if node.op_type == "MatMul" else 0


def _in_axis(node: Node) -> int:
    """The axis of ``node``'s weight that holds its input channels."""
    if node.op_type == "Gemm":
        return 1 if node.attr("transB", 0) else 0
    return 0 if node.op_type == "MatMul" else 1


def _shrink(graph: Graph, group: ChannelGroup, keep: np.ndarray, names: NameGen) -> None:
    """Slice every weight and per-channel constant of ``group`` down to the ``keep`` channels."""
    for p in group.producers:
        _slice_input(graph, p, 1, _out_axis(p), keep, names)
        bias = p.inputs[2] if len(p.inputs) > 2 else None
        if bias is not None and bias.const.ndim >= 1 and bias.const.shape[-1] == group.channels:
            _slice_input(graph, p, 2, bias.const.ndim - 1, keep, names)
    for node, i, axis in group.sliced_constants:
        _slice_input(graph, node, i, axis, keep, names)
        if node.op_type == "Conv" and i == 1:  # depthwise: one group per remaining channel
            node.attrs["group"] = Attribute(AttrKind.INT, len(keep))
    for c in group.consumers:
        if c.kind == "flatten":
            rows = (keep[:, None] * c.per_channel + np.arange(c.per_channel)).ravel()
            for r in c.readers:
                _slice_input(graph, r, 1, _in_axis(r), rows, names)
        else:
            _slice_input(graph, c.node, 1, _in_axis(c.node), keep, names)


def _slice_input(
    graph: Graph, node: Node, i: int, axis: int, keep: np.ndarray, names: NameGen
) -> None:
    """Replace constant input ``i`` of ``node`` by its ``keep`` entries along ``axis``.

    A constant read by other nodes too gets a sliced copy, so they are not changed.
    """
    v = node.inputs[i]
    sliced = np.ascontiguousarray(np.take(v.const, keep, axis=axis))
    if use_counts(graph).get(id(v), 0) > 1:
        node.inputs[i] = add_constant(graph, names, v.name, sliced)
    else:
        v.const = sliced
        v.type = tensor_type_of(sliced)


def _refresh_types(graph: Graph) -> None:
    """Forget the inferred shapes of intermediate values and infer them again."""
    outputs = {id(v) for v in graph.outputs}
    for n in graph.nodes:
        for o in n.outputs:
            if id(o) not in outputs:
                o.type = None
    infer_types(graph)
