"""Control flow: If, Loop and Scan, whose bodies are subgraphs run with ``ctx.run_graph``.

Subgraphs read outer-scope values by themselves (the executor chains environments), so the
kernels only bind the positional inputs each body declares. ONNX's schema inference cannot
see into GRAPH attributes, so each op here states its output types from its bodies.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from torsh_gen.ir.graph import Graph
from torsh_gen.ir.types import DType, TensorType, Type
from torsh_gen.ops.registry import GRAPH, INT, INTS, InferContext, OpSpec, RunContext, op


def _join_types(a: Type | None, b: Type | None) -> Type | None:
    """A type covering both branches' types: dims that differ become unknown."""
    if a is None or b is None:
        return a if b is None else b
    if isinstance(a, TensorType) and isinstance(b, TensorType) and a.dtype == b.dtype:
        if a.shape is None or b.shape is None or len(a.shape) != len(b.shape):
            return TensorType(a.dtype, None)
        return TensorType(a.dtype, tuple(x if x == y else None for x, y in zip(a.shape, b.shape)))
    return a


def _stacked_type(t: Type | None) -> Type | None:
    """The type of per-iteration tensors ``t`` stacked along a new leading axis."""
    if isinstance(t, TensorType):
        return TensorType(t.dtype, None if t.shape is None else (None, *t.shape))
    return None


def _empty_stack(t: Type | None) -> np.ndarray:
    """Zero iterations' stacked scan output, shaped from the body's declared type when known."""
    dtype = np.float32
    shape: tuple[int, ...] = ()
    if isinstance(t, TensorType):
        if t.dtype != DType.UNDEFINED:
            dtype = t.dtype.numpy
        if t.shape is not None:
            shape = tuple(d if isinstance(d, int) else 0 for d in t.shape)
    return np.zeros((0, *shape), dtype=dtype)


def _stack(values: list[Any], t: Type | None, axis: int = 0) -> Any:
    """Per-iteration scan values stacked on a new ``axis`` (tensors) or kept as a list."""
    if not values:
        return np.moveaxis(_empty_stack(t), 0, axis) if axis else _empty_stack(t)
    if all(isinstance(v, np.ndarray) for v in values):
        return np.stack(values, axis=axis)
    return list(values)


@op("If", since=1)
class If(OpSpec):
    """Run ``then_branch`` or ``else_branch`` on a one-element boolean condition."""

    attrs = {"then_branch": GRAPH(), "else_branch": GRAPH()}
    flops_per_element = 0

    def run(self, ctx: RunContext, cond: np.ndarray) -> tuple[Any, ...]:
        taken = bool(np.asarray(cond).reshape(-1)[0])
        branch: Graph = ctx.attrs.then_branch if taken else ctx.attrs.else_branch
        return tuple(ctx.run_graph(branch, []))

    def infer(self, ctx: InferContext) -> list[Type | None]:
        then_b: Graph = ctx.attrs.then_branch
        else_b: Graph = ctx.attrs.else_branch
        return [_join_types(t.type, e.type) for t, e in zip(then_b.outputs, else_b.outputs)]


@op("Loop", since=1)
class Loop(OpSpec):
    """A loop bounded by an optional trip count ``M`` and an optional condition.

    Body: (iteration, cond, carried...) -> (cond, carried..., scan outputs...); scan outputs
    are stacked along a new axis 0 over the iterations.
    """

    attrs = {"body": GRAPH()}
    flops_per_element = 0

    def run(
        self, ctx: RunContext, m: Any = None, cond: Any = None, *carried: Any
    ) -> tuple[Any, ...]:
        body: Graph = ctx.attrs.body
        n_carried = len(carried)
        n_scan = len(body.outputs) - 1 - n_carried
        trip = None if m is None else int(np.asarray(m).reshape(-1)[0])
        go = True if cond is None else bool(np.asarray(cond).reshape(-1)[0])
        state = list(carried)
        scans: list[list[Any]] = [[] for _ in range(n_scan)]
        i = 0
        while go and (trip is None or i < trip):
            args = [np.array(i, dtype=np.int64), np.array(go), *state]
            outs = ctx.run_graph(body, args)
            go = bool(np.asarray(outs[0]).reshape(-1)[0])
            state = list(outs[1 : 1 + n_carried])
            for acc, value in zip(scans, outs[1 + n_carried :]):
                acc.append(value)
            i += 1
        scan_types = [v.type for v in body.outputs[1 + n_carried :]]
        stacked = [_stack(vals, t) for vals, t in zip(scans, scan_types)]
        return tuple(state + stacked)

    def infer(self, ctx: InferContext) -> list[Type | None]:
        body: Graph = ctx.attrs.body
        n_carried = max(len(ctx.node.inputs) - 2, 0)
        carried = [v.type for v in body.outputs[1 : 1 + n_carried]]
        scans = [_stacked_type(v.type) for v in body.outputs[1 + n_carried :]]
        return (carried + scans)[: len(ctx.node.outputs)]


def _scan_infer(ctx: InferContext, body: Graph, n_states: int) -> list[Type | None]:
    """Scan output types: the states' types, then scan outputs with an unknown scan dim."""
    states = [v.type for v in body.outputs[:n_states]]
    axes = ctx.attrs.get("scan_output_axes") or []
    scans: list[Type | None] = []
    for k, v in enumerate(body.outputs[n_states:]):
        t = v.type
        if isinstance(t, TensorType) and t.shape is not None:
            axis = axes[k] if k < len(axes) else 0
            axis = axis + len(t.shape) + 1 if axis < 0 else axis
            shape = list(t.shape)
            shape.insert(axis, None)
            scans.append(TensorType(t.dtype, tuple(shape)))
        elif isinstance(t, TensorType):
            scans.append(TensorType(t.dtype, None))
        else:
            scans.append(None)
    return (states + scans)[: len(ctx.node.outputs)]


@op("Scan", since=9)
class Scan(OpSpec):
    """Iterate ``body`` over slices of the scan inputs along their scan axes, carrying states."""

    attrs = {
        "body": GRAPH(),
        "num_scan_inputs": INT(required=True),
        "scan_input_axes": INTS(),
        "scan_input_directions": INTS(),
        "scan_output_axes": INTS(),
        "scan_output_directions": INTS(),
    }
    flops_per_element = 0

    def run(self, ctx: RunContext, *inputs: Any) -> tuple[Any, ...]:
        a = ctx.attrs
        body: Graph = a.body
        m = a.num_scan_inputs
        n = len(inputs) - m
        in_axes = a.get("scan_input_axes", [0] * m)
        in_dirs = a.get("scan_input_directions", [0] * m)
        xs = []
        for x, axis, rev in zip(inputs[n:], in_axes, in_dirs):
            x = np.moveaxis(x, axis + x.ndim if axis < 0 else axis, 0)
            xs.append(x[::-1] if rev else x)
        length = xs[0].shape[0] if xs else 0
        states = list(inputs[:n])
        k = len(body.outputs) - n
        scans: list[list[Any]] = [[] for _ in range(k)]
        for t in range(length):
            outs = ctx.run_graph(body, states + [x[t] for x in xs])
            states = list(outs[:n])
            for acc, value in zip(scans, outs[n:]):
                acc.append(value)
        out_axes = a.get("scan_output_axes", [0] * k)
        out_dirs = a.get("scan_output_directions", [0] * k)
        results = []
        for vals, axis, rev, v in zip(scans, out_axes, out_dirs, body.outputs[n:]):
            vals = vals[::-1] if rev else vals
            if vals and axis < 0:
                axis += vals[0].ndim + 1
            results.append(_stack(vals, v.type, axis))
        return tuple(states + results)

    def infer(self, ctx: InferContext) -> list[Type | None]:
        n = len(ctx.node.inputs) - ctx.attrs.num_scan_inputs
        return _scan_infer(ctx, ctx.attrs.body, n)


@op("Scan", since=8)
class Scan8(Scan):
    """Opset 8 Scan: batch axis 0, scan axis 1, optional ``sequence_lens`` padded with zeros."""

    attrs = {"body": GRAPH(), "num_scan_inputs": INT(required=True), "directions": INTS()}

    def run(self, ctx: RunContext, seq_lens: Any, *inputs: Any) -> tuple[Any, ...]:
        a = ctx.attrs
        body: Graph = a.body
        m = a.num_scan_inputs
        n = len(inputs) - m
        dirs = a.get("directions", [0] * m)
        batch = inputs[n].shape[0] if m else inputs[0].shape[0]
        max_len = inputs[n].shape[1] if m else 0
        per_batch = []
        for b in range(batch):
            length = max_len if seq_lens is None else int(seq_lens[b])
            xs = [x[b, :length] for x in inputs[n:]]
            xs = [x[::-1] if rev else x for x, rev in zip(xs, dirs)]
            states = [s[b] for s in inputs[:n]]
            k = len(body.outputs) - n
            scans: list[list[np.ndarray]] = [[] for _ in range(k)]
            for t in range(length):
                outs = ctx.run_graph(body, states + [x[t] for x in xs])
                states = list(outs[:n])
                for acc, value in zip(scans, outs[n:]):
                    acc.append(value)
            padded = [_padded(v, max_len, o.type) for v, o in zip(scans, body.outputs[n:])]
            per_batch.append((states, padded))
        states_out = [np.stack([pb[0][i] for pb in per_batch]) for i in range(n)]
        k = len(body.outputs) - n
        scans_out = [np.stack([pb[1][i] for pb in per_batch]) for i in range(k)]
        return tuple(states_out + scans_out)

    def infer(self, ctx: InferContext) -> list[Type | None]:
        n = len(ctx.node.inputs) - 1 - ctx.attrs.num_scan_inputs
        body: Graph = ctx.attrs.body
        out: list[Type | None] = []
        for i, v in enumerate(body.outputs):
            t = v.type
            if isinstance(t, TensorType) and t.shape is not None:
                extra = (None,) if i < n else (None, None)
                t = TensorType(t.dtype, extra + tuple(t.shape))
            out.append(t if isinstance(t, TensorType) else None)
        return out[: len(ctx.node.outputs)]


def _padded(values: list[np.ndarray], max_len: int, t: Type | None) -> np.ndarray:
    """Stack one batch item's scan outputs and pad them with zeros up to ``max_len``."""
    stacked = _stack(values, t)
    if stacked.shape[0] < max_len:
        pad = np.zeros((max_len - stacked.shape[0], *stacked.shape[1:]), stacked.dtype)
        stacked = np.concatenate([stacked, pad])
    return stacked
