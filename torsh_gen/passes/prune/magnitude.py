"""Unstructured magnitude pruning of Conv, Gemm and MatMul weights.

Preconditions: weights are initializers (constants). The weight of a Conv is its input 1,
of a Gemm its input B (1), of a MatMul whichever input is constant (the right one first).
A weight read by several nodes is pruned once. Exactly ``round(S * size)`` entries are
zeroed per layer (``layer`` scope) or over all selected weights together (``global``
scope: one threshold, so layers with many small weights lose more); ties at the threshold
are broken by position, so the count is exact. Entries that were already zero count as
the smallest, so a layer never ends below its original sparsity.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from torsh_gen.errors import InputError
from torsh_gen.ir.graph import Graph, Node, Value

#: Ops whose constant weights are pruned.
WEIGHT_OPS = ("Conv", "Gemm", "MatMul")
SCOPES = ("layer", "global")


@dataclass(frozen=True)
class NodeFilter:
    """Which nodes may be pruned: names or shell patterns to include (all when empty) or exclude."""

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    def allows(self, node: Node) -> bool:
        """True when ``node``'s name passes the include and exclude patterns."""
        name = node.name
        if self.include and not any(fnmatch.fnmatchcase(name, p) for p in self.include):
            return False
        return not any(fnmatch.fnmatchcase(name, p) for p in self.exclude)

    def check(self, graph: Graph) -> None:
        """Raise InputError for a pattern that matches no node (a typo would prune everything)."""
        names = [n.name for n in graph.nodes]
        for option, patterns in (("--include", self.include), ("--exclude", self.exclude)):
            for p in patterns:
                if not any(fnmatch.fnmatchcase(n, p) for n in names):
                    shown = ", ".join(repr(n) for n in names[:8]) + (
                        ", ..." if len(names) > 8 else ""
                    )
                    raise InputError(
                        f"{option} {p!r} matches no node name; the model's nodes are {shown}"
                    )


@dataclass
class LayerSparsity:
    """One pruned weight: which node reads it and its zero count before and after."""

    node: str
    op: str
    weight: str
    size: int
    zeros_before: int
    zeros_after: int

    @property
    def sparsity(self) -> float:
        """Fraction of zero entries after pruning."""
        return self.zeros_after / self.size if self.size else 0.0

    def to_dict(self) -> dict:
        """Plain data for JSON/YAML output."""
        return {
            "node": self.node,
            "op": self.op,
            "weight": self.weight,
            "size": self.size,
            "sparsity_before": self.zeros_before / self.size if self.size else 0.0,
            "sparsity": self.sparsity,
        }


def weight_input(node: Node) -> int | None:
    """Index of ``node``'s constant float weight input, or None when it has none."""
    if node.domain not in ("", "ai.onnx") or node.op_type not in WEIGHT_OPS:
        return None
    order = (1, 0) if node.op_type == "MatMul" else (1,)
    for i in order:
        v = node.inputs[i] if i < len(node.inputs) else None
        if (
            v is not None
            and v.const is not None
            and v.const.dtype.kind == "f"
            and v.const.ndim >= 2
        ):
            return i
    return None


def prunable_weights(
    graph: Graph, node_filter: NodeFilter | None = None
) -> list[tuple[Node, Value]]:
    """(first reader, weight) of each distinct Conv/Gemm/MatMul weight the filter allows."""
    chosen: list[tuple[Node, Value]] = []
    seen: set[int] = set()
    for node in graph.nodes:
        i = weight_input(node)
        if i is None or (node_filter and not node_filter.allows(node)):
            continue
        w = node.inputs[i]
        if w is not None and id(w) not in seen:
            seen.add(id(w))
            chosen.append((node, w))
    return chosen


def magnitude_prune(
    graph: Graph,
    sparsity: float,
    scope: str = "layer",
    node_filter: NodeFilter | None = None,
) -> list[LayerSparsity]:
    """Zero the smallest-magnitude weight entries in place; one row per pruned weight."""
    check_sparsity(sparsity)
    if scope not in SCOPES:
        raise InputError(f"unknown scope {scope!r}; use layer or global")
    weights = prunable_weights(graph, node_filter)
    if not weights:
        raise InputError(
            "the model has no Conv, Gemm or MatMul with a constant float weight to prune"
        )
    zeros_before = [int(np.count_nonzero(w.const == 0)) for _, w in weights]
    if scope == "layer":
        for _, w in weights:
            w.const = _zero_smallest([w.const], sparsity)[0]
    else:
        arrays = _zero_smallest([w.const for _, w in weights], sparsity)
        for (_, w), a in zip(weights, arrays):
            w.const = a
    return [
        LayerSparsity(
            n.name, n.op_type, w.name, int(w.const.size), z, int(np.count_nonzero(w.const == 0))
        )
        for (n, w), z in zip(weights, zeros_before)
    ]


def check_sparsity(sparsity: float) -> None:
    """Raise InputError unless 0 <= sparsity < 1."""
    if not (0.0 <= sparsity < 1.0):
        raise InputError(f"sparsity must be in [0, 1) (the fraction removed), got {sparsity}")


def _zero_smallest(arrays: Sequence[np.ndarray], sparsity: float) -> list[np.ndarray]:
    """Copies of ``arrays`` with the ``round(sparsity * total)`` smallest |entries| set to zero."""
    sizes = [a.size for a in arrays]
    total = sum(sizes)
    k = int(round(sparsity * total))
    out = [a.copy() for a in arrays]
    if k == 0:
        return out
    flat = np.concatenate([np.abs(a.astype(np.float64, copy=False)).ravel() for a in arrays])
    idx = np.argpartition(flat, k - 1)[:k] if k < total else np.arange(total)
    mask = np.zeros(total, dtype=bool)
    mask[idx] = True
    start = 0
    for a, size in zip(out, sizes):
        a.reshape(-1)[mask[start : start + size]] = 0
        start += size
    return out
