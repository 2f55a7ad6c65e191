"""Sequence and optional ops.

Values: an ONNX sequence is a Python ``list`` of arrays and an empty optional is ``None``
(an omitted optional input also arrives as None, which reads the same). Kernels never
mutate a sequence they receive: an outer value may still be read after the node runs.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from torsh_gen.ir.graph import Graph
from torsh_gen.ir.types import DType, SequenceType, Type
from torsh_gen.ops.registry import GRAPH, INT, InferContext, OpSpec, RunContext, op


def _position(pos: np.ndarray | None, length: int, default: int, inclusive_end: bool) -> int:
    """A sequence position from an int tensor, negative counting from the end, bounds-checked."""
    p = default if pos is None else int(np.asarray(pos).reshape(-1)[0])
    if p < 0:
        p += length
    hi = length if inclusive_end else length - 1
    if p < 0 or p > hi:
        raise IndexError(f"position {p} is out of range for a sequence of length {length}")
    return p


class _DataMovement(OpSpec):
    """Base of the ops in this module: no arithmetic."""

    flops_per_element = 0


@op("SequenceEmpty", since=11)
class SequenceEmpty(_DataMovement):
    """An empty sequence; ``dtype`` only matters for the type."""

    attrs = {"dtype": INT(int(DType.FLOAT))}

    def run(self, ctx: RunContext) -> list[np.ndarray]:
        return []


@op("SequenceConstruct", since=11)
class SequenceConstruct(_DataMovement):
    """A sequence of the (variadic) inputs, in order."""

    def run(self, ctx: RunContext, *tensors: np.ndarray) -> list[np.ndarray]:
        return list(tensors)


@op("SequenceInsert", since=11)
class SequenceInsert(_DataMovement):
    """Insert a tensor at ``position`` (default: at the end); returns a new list."""

    def run(
        self, ctx: RunContext, seq: list[np.ndarray], tensor: np.ndarray, position: Any = None
    ) -> list[np.ndarray]:
        p = _position(position, len(seq), len(seq), inclusive_end=True)
        out = list(seq)
        out.insert(p, tensor)
        return out


@op("SequenceAt", since=11)
class SequenceAt(_DataMovement):
    """The element at ``position`` (negative counts from the end)."""

    def run(self, ctx: RunContext, seq: list[np.ndarray], position: np.ndarray) -> np.ndarray:
        return seq[_position(position, len(seq), 0, inclusive_end=False)]


@op("SequenceErase", since=11)
class SequenceErase(_DataMovement):
    """Remove the element at ``position`` (default: the last)."""

    def run(self, ctx: RunContext, seq: list[np.ndarray], position: Any = None) -> list[np.ndarray]:
        p = _position(position, len(seq), len(seq) - 1, inclusive_end=False)
        return seq[:p] + seq[p + 1 :]


@op("SequenceLength", since=11)
class SequenceLength(_DataMovement):
    """Number of elements, as an int64 scalar."""

    def run(self, ctx: RunContext, seq: list[np.ndarray]) -> np.ndarray:
        return np.array(len(seq), dtype=np.int64)


@op("SplitToSequence", since=11)
class SplitToSequence(_DataMovement):
    """Split along ``axis``: scalar chunk size, 1-D lengths, or 1s (then ``keepdims`` applies)."""

    attrs = {"axis": INT(0), "keepdims": INT(1)}

    def run(self, ctx: RunContext, x: np.ndarray, split: Any = None) -> list[np.ndarray]:
        axis = ctx.attrs.axis
        axis = axis + x.ndim if axis < 0 else axis
        n = x.shape[axis]
        if split is None:
            parts = [np.take(x, [i], axis=axis) for i in range(n)]
            if not ctx.attrs.keepdims:
                parts = [np.squeeze(p, axis=axis) for p in parts]
            return parts
        split = np.asarray(split)
        if split.ndim == 0:
            size = int(split)
            bounds = list(range(size, n, size))
        else:
            bounds = np.cumsum(split.astype(np.int64))[:-1].tolist()
            if int(split.sum()) != n:
                raise ValueError(f"split lengths {split.tolist()} do not sum to {n}")
        return [np.ascontiguousarray(p) for p in np.split(x, bounds, axis=axis)]


@op("ConcatFromSequence", since=11)
class ConcatFromSequence(_DataMovement):
    """Concatenate the elements along ``axis``, or stack them on a new axis with ``new_axis``."""

    attrs = {"axis": INT(required=True), "new_axis": INT(0)}

    def run(self, ctx: RunContext, seq: list[np.ndarray]) -> np.ndarray:
        if not seq:
            raise ValueError("ConcatFromSequence of an empty sequence")
        if ctx.attrs.new_axis:
            return np.stack(seq, axis=ctx.attrs.axis)
        return np.concatenate(seq, axis=ctx.attrs.axis)


@op("SequenceMap", since=17)
class SequenceMap(_DataMovement):
    """Run ``body`` once per element of the first sequence; tensor inputs are passed whole."""

    attrs = {"body": GRAPH()}

    def run(self, ctx: RunContext, first: list[np.ndarray], *rest: Any) -> tuple[Any, ...]:
        body: Graph = ctx.attrs.body
        outs: list[list[Any]] = [[] for _ in body.outputs]
        for i in range(len(first)):
            args = [first[i]] + [r[i] if isinstance(r, list) else r for r in rest]
            for acc, value in zip(outs, ctx.run_graph(body, args)):
                acc.append(value)
        return tuple(outs)

    def infer(self, ctx: InferContext) -> list[Type | None]:
        body: Graph = ctx.attrs.body
        return [SequenceType(v.type) if v.type is not None else None for v in body.outputs]


@op("Optional", since=15)
class Optional(_DataMovement):
    """Wrap the input in an optional, or an empty optional when there is no input."""

    def run(self, ctx: RunContext, x: Any = None) -> Any:
        return x


@op("OptionalGetElement", since=15)
class OptionalGetElement(_DataMovement):
    """The optional's value (a plain tensor or sequence passes through); empty is an error."""

    def run(self, ctx: RunContext, x: Any = None) -> Any:
        if x is None:
            raise ValueError("OptionalGetElement of an empty optional")
        return x


@op("OptionalHasElement", since=15)
class OptionalHasElement(_DataMovement):
    """True unless the input is an empty optional or omitted (tensor inputs allowed from 18)."""

    def run(self, ctx: RunContext, x: Any = None) -> np.ndarray:
        return np.array(x is not None)
