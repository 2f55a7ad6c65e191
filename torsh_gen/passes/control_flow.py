"""Unroll control flow (Scan, Loop, If) into straight-line nodes, for flat-program backends.

Preconditions: none (infers types as it goes). Native targets run a model as a fixed list
of kernel calls over statically planned memory, so they have no way to repeat or skip a
subgraph at run time. Where the number of iterations and the branch taken are known at
compile time, the control flow is turned into plain nodes of the top-level graph:

- Scan (opset 9+) of a static length T: the body copied T times. Each copy reads the
  slices of the scan inputs (``Gather`` with a constant index along ``scan_input_axes``,
  from the end where ``scan_input_directions`` says so) and the previous copy's states; the
  per-iteration scan outputs are stacked with ``Unsqueeze`` + ``Concat`` along
  ``scan_output_axes`` (in reverse order where ``scan_output_directions`` says so)::

      %s, %ys = Scan[body = (%s_in, %x_t) -> (%s_out, %y_t), num_scan_inputs = 1](%s0, %xs)
      ==>  %x0 = Gather(%xs, 0); %s1 = <body>(%s0, %x0) ... %x2 = Gather(%xs, 2); ...
           %s = Identity(%s3); %ys = Concat(Unsqueeze(%y0), Unsqueeze(%y1), Unsqueeze(%y2))

  Opset 8 Scan (batched, scan axis 1) is unrolled per batch item too, when it has no
  ``sequence_lens`` or they all equal the full length.
- Loop with a compile-time trip count and/or condition: the body copied while the condition
  (evaluated at compile time after each copy, as type inference folds small values) holds
  and the trip count is not reached; scan outputs are stacked along a new axis 0.
- If with a compile-time condition: the branch taken is inlined. With a run-time condition
  whose branches give outputs of identical static tensor types, and whose ops have no side
  effects (no random ops), both branches are inlined and ``Where`` picks each output.

Every value of a copied body gets a fresh name (``ir.rewrite.NameGen``), nested subgraphs
are copied with their reads remapped, and reads of enclosing-graph values stay as they
are. Nested control flow exposed by an unroll is unrolled in turn. A limit on the nodes
unrolling creates (``MAX_UNROLLED_NODES``) raises an error that suggests ``--target cpu``.
Nodes that cannot be unrolled stay, with the reason in the returned result.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from torsh_gen.errors import TorshGenError, UnsupportedOpError
from torsh_gen.ir.graph import Attribute, AttrKind, Graph, Node, Value
from torsh_gen.ir.rewrite import NameGen
from torsh_gen.ir.types import TensorType, Type, tensor_type_of
from torsh_gen.ops.inference import TypeInference, static_shape_value
from torsh_gen.ops.registry import lookup

#: Nodes that unrolling may create in one compile before it gives up.
MAX_UNROLLED_NODES = 4096
CONTROL_OPS = frozenset({"If", "Loop", "Scan"})
_MAX_ROUNDS = 8


class _Declined(Exception):
    """This node cannot be unrolled; the message says why."""


@dataclass
class UnrollBudget:
    """How many nodes unrolling may still create (shared by repeated calls of one compile)."""

    limit: int = MAX_UNROLLED_NODES
    used: int = 0

    def spend(self, count: int, node: Node, what: str) -> None:
        """Account for ``count`` new nodes; UnsupportedOpError when over the limit."""
        if self.used + count > self.limit:
            raise UnsupportedOpError(
                f"unrolling {_label(node)} ({what}) would create more than {self.limit} nodes "
                f"({self.used} so far, {count} more): native targets run control flow unrolled, "
                "so a loop this long does not fit; compile with --target cpu, which runs it as a loop"
            )
        self.used += count


@dataclass
class UnrollResult:
    """What ``unroll_control_flow`` did: nodes unrolled, and nodes left with the reason."""

    unrolled: list[str] = field(default_factory=list)
    declined: dict[Node, str] = field(default_factory=dict)


def unroll_control_flow(
    graph: Graph, wanted: Callable[[Node], bool] | None = None, budget: UnrollBudget | None = None
) -> UnrollResult:
    """Replace the top-level If, Loop and Scan nodes of ``graph`` for which ``wanted`` holds
    by straight-line nodes, where their trip counts and conditions are known at compile
    time; returns what was unrolled and why the rest was not."""
    budget = budget or UnrollBudget()
    result = UnrollResult()
    names = NameGen(graph)
    for _ in range(_MAX_ROUNDS):
        result.declined = {}
        if not _sweep(graph, wanted or (lambda n: True), names, budget, result):
            break
    return result


def _sweep(graph: Graph, wanted: Callable[[Node], bool], names: NameGen, budget: UnrollBudget, result: UnrollResult) -> bool:
    """One pass over the nodes in order, inferring types as it goes (a node's decision reads
    its inputs' static shapes and compile-time values); nodes an unroll creates are visited
    next, so nested control flow unrolls in the same sweep."""
    ti = TypeInference(graph.info.opset_imports if graph.info else {"": 0})
    for v in graph.initializers:
        ti.known[id(v)] = v.const
    work: list[tuple[Node, bool]] = [(n, False) for n in reversed(graph.nodes)]
    kept: list[Node] = []
    changed = False
    while work:
        node, typed = work.pop()
        if node.domain in ("", "ai.onnx") and node.op_type in CONTROL_OPS and wanted(node):
            em = _Emitter(graph, names, ti, f"{node.name or node.op_type}/")
            spent = budget.used
            try:
                what = _EXPANDERS[node.op_type](node, em, budget)
            except _Declined as e:
                result.declined[node] = str(e)
                budget.used = spent  # nothing of it stays
                for o in node.outputs:  # an expansion may have bound them before declining
                    o.producer = node
            else:
                graph.initializers.extend(em.inits)
                work.extend((n, True) for n in reversed(em.nodes))
                result.unrolled.append(f"{_label(node)}: {what}")
                changed = True
                continue
        kept.append(node)
        if not typed:
            _infer(ti, node)
    graph.nodes = kept
    return changed


def _infer(ti: TypeInference, node: Node) -> None:
    """Infer ``node``'s output types and fold its small values into ``ti.known``; ``Size``
    of a static shape too (inference folds only ``Shape``), as conditions test ranks."""
    ti.node(node)
    for sg in node.subgraphs():
        ti.run(sg)
    if node.op_type == "Size" and node.domain == "" and len(node.inputs) == 1:
        value = static_shape_value(node, {})
        if value is not None:
            ti.known[id(node.outputs[0])] = value


def _label(node: Node) -> str:
    return f"{node.op_type} '{node.name}'" if node.name else f"{node.op_type} (unnamed)"


# ====================================================================== building blocks
class _Emitter:
    """The nodes and initializers of one expansion, typed as they are added (later
    decisions, such as a Loop's condition after each iteration, read those types and the
    values type inference folds)."""

    def __init__(self, graph: Graph, names: NameGen, ti: TypeInference, prefix: str) -> None:
        self.opset = graph.opset
        self.names = names
        self.ti = ti
        self.prefix = prefix
        self.nodes: list[Node] = []
        self.inits: list[Value] = []
        self._hoisted: dict[int, Value] = {}
        self._ints: dict[tuple[int, ...] | int, Value] = {}

    def known(self, v: Value | None) -> np.ndarray | None:
        """The compile-time value of ``v`` (initializer or folded), if any."""
        if v is None:
            return None
        value = v.const if v.const is not None else self.ti.known.get(id(v))
        return value if isinstance(value, np.ndarray) else None

    def const(self, array: np.ndarray, hint: str) -> Value:
        v = Value(self.names.fresh(self.prefix + hint), tensor_type_of(array), const=array)
        self.inits.append(v)
        self.ti.known[id(v)] = array
        return v

    def int64(self, value: int | tuple[int, ...]) -> Value:
        """A shared int64 constant: a scalar for an int, a 1-D tensor for a tuple."""
        if value not in self._ints:
            hint = f"i{value}" if isinstance(value, int) else "axes"
            self._ints[value] = self.const(np.array(value, dtype=np.int64), hint)
        return self._ints[value]

    def add(self, op: str, inputs: list[Value | None], attrs: dict[str, Attribute] | None = None, out: Value | None = None) -> Value:
        out = out if out is not None else Value(self.names.fresh(self.prefix + op.lower()))
        self.append(Node(op, inputs, [out], attrs or {}, "", self.names.fresh(self.prefix + op)))
        return out

    def append(self, node: Node) -> None:
        self.nodes.append(node)
        _infer(self.ti, node)

    def gather(self, x: Value, index: int, axis: int) -> Value:
        """``x`` at ``index`` along ``axis``, that axis removed (a scalar index)."""
        return self.add("Gather", [x, self.int64(index)], {"axis": Attribute(AttrKind.INT, axis)})

    def unsqueeze(self, x: Value, axis: int, out: Value | None = None) -> Value:
        if self.opset >= 13:
            return self.add("Unsqueeze", [x, self.int64((axis,))], out=out)
        return self.add("Unsqueeze", [x], {"axes": Attribute(AttrKind.INTS, [axis])}, out)

    def stack(self, values: list[Value], axis: int, out: Value | None = None) -> Value:
        """``values`` stacked along a new ``axis`` (counted in the result's rank)."""
        if len(values) == 1:
            return self.unsqueeze(values[0], axis, out)
        parts: list[Value | None] = [self.unsqueeze(v, axis) for v in values]
        return self.add("Concat", parts, {"axis": Attribute(AttrKind.INT, axis)}, out)

    def bind(self, outputs: list[Value], values: list[Value]) -> None:
        """Make each named node output the value computed for it."""
        for out, v in zip(outputs, values):
            if out.name:
                self.add("Identity", [v], out=out)

    def inline(self, body: Graph, args: list[Value], tag: str) -> list[Value]:
        """Copies of ``body``'s nodes reading ``args`` for its inputs; returns the values
        its outputs take. Body initializers become initializers of the graph, once."""
        env: dict[int, Value] = {id(p): a for p, a in zip(body.inputs, args)}
        for v in body.initializers:
            if id(v) not in env:
                if id(v) not in self._hoisted:
                    self._hoisted[id(v)] = self.const(v.const, v.name or "init")
                env[id(v)] = self._hoisted[id(v)]
        for n in body.nodes:
            self.append(_clone_node(n, env, self.names, self.prefix + tag))
        return [env.get(id(v), v) for v in body.outputs]


def _clone_node(n: Node, env: dict[int, Value], names: NameGen, prefix: str) -> Node:
    """A copy of ``n`` reading through ``env`` (what body values stand for in this copy),
    its outputs fresh values that ``env`` records; its subgraphs copied the same way."""
    attrs = {k: _clone_attr(a, env, names, prefix) for k, a in n.attrs.items()}
    ins = [None if v is None else env.get(id(v), v) for v in n.inputs]
    outs = []
    for o in n.outputs:
        copy = Value(names.fresh(prefix + o.name) if o.name else "", o.type, doc=o.doc)
        env[id(o)] = copy
        outs.append(copy)
    name = names.fresh(prefix + (n.name or n.op_type))
    return Node(n.op_type, ins, outs, attrs, n.domain, name, n.doc, dict(n.metadata), n.overload)


def _clone_attr(a: Attribute, env: dict[int, Value], names: NameGen, prefix: str) -> Attribute:
    if a.kind == AttrKind.GRAPH:
        return Attribute(a.kind, _clone_graph(a.value, env, names, prefix), a.ref, a.doc)
    if a.kind == AttrKind.GRAPHS:
        return Attribute(a.kind, [_clone_graph(g, env, names, prefix) for g in a.value], a.ref, a.doc)
    return Attribute(a.kind, list(a.value) if isinstance(a.value, list) else a.value, a.ref, a.doc)


def _clone_graph(g: Graph, env: dict[int, Value], names: NameGen, prefix: str) -> Graph:
    """A copy of nested graph ``g`` with fresh names; its reads of enclosing values go
    through ``env``."""

    def fresh(v: Value) -> Value:
        if id(v) not in env:
            env[id(v)] = Value(names.fresh(prefix + v.name), v.type, const=v.const, doc=v.doc)
        return env[id(v)]

    inputs = [fresh(v) for v in g.inputs]
    inits = [fresh(v) for v in g.initializers]
    nodes = [_clone_node(n, env, names, prefix) for n in g.nodes]
    return Graph(g.name, nodes, inputs, [env.get(id(v), v) for v in g.outputs], inits, doc=g.doc)


def _body_size(graph: Graph) -> int:
    """Nodes a copy of ``graph`` puts in the top level (nested graphs count when they are
    unrolled in turn)."""
    return len(graph.nodes)


def _static_shape(v: Value | None) -> tuple[int, ...] | None:
    t = v.type if v is not None else None
    if isinstance(t, TensorType) and t.shape is not None and t.is_static:
        return tuple(int(d) for d in t.shape)
    return None


def _empty_stack(em: _Emitter, t: Type | None, axis: int, out: Value) -> None:
    """Zero iterations' stacked output, shaped from the body's declared type."""
    if not out.name:
        return
    if not (isinstance(t, TensorType) and t.shape is not None and t.is_static and t.dtype):
        raise _Declined("it runs zero times and the type of a scan output is not static")
    shape = [int(d) for d in t.shape]
    shape.insert(axis + len(shape) + 1 if axis < 0 else axis, 0)
    em.bind([out], [em.const(np.zeros(shape, dtype=t.dtype.numpy), "empty")])


def _iterate(em: _Emitter, body: Graph, states: list[Value], slices: list[list[Value]], tag: str) -> tuple[list[Value], list[list[Value]]]:
    """Run ``body`` once per entry of ``slices`` (the scan inputs of that iteration),
    threading the states; returns the final states and each scan output per iteration."""
    n = len(states)
    scans: list[list[Value]] = [[] for _ in range(len(body.outputs) - n)]
    for t, xs in enumerate(slices):
        outs = em.inline(body, states + xs, f"{tag}{t}/")
        states = outs[:n]
        for acc, v in zip(scans, outs[n:]):
            acc.append(v)
    return states, scans


# ====================================================================== Scan
def _scan(node: Node, em: _Emitter, budget: UnrollBudget) -> str:
    if 0 < em.opset < 9:
        return _scan8(node, em, budget)
    body: Graph = node.attr("body")
    m = int(node.attr("num_scan_inputs"))
    n = len(node.inputs) - m
    k = len(body.outputs) - n
    if len(body.inputs) != n + m or k < 0 or n < 0:
        raise _Declined(f"its body's {len(body.inputs)} inputs and {len(body.outputs)} outputs do not match its {len(node.inputs)} inputs")
    in_axes = node.attr("scan_input_axes") or [0] * m
    in_dirs = node.attr("scan_input_directions") or [0] * m
    out_axes = node.attr("scan_output_axes") or [0] * k
    out_dirs = node.attr("scan_output_directions") or [0] * k
    xs = list(node.inputs[n:])
    length = _scan_length(xs, in_axes)
    budget.spend(length * _body_size(body), node, f"{length} iterations of a {_body_size(body)}-node body")
    slices = [
        [em.gather(x, length - 1 - t if d else t, a) for x, a, d in zip(xs, in_axes, in_dirs)]
        for t in range(length)
    ]
    states, scans = _iterate(em, body, list(node.inputs[:n]), slices, "t")
    em.bind(node.outputs[:n], states)
    for j, (vals, axis, rev, out) in enumerate(zip(scans, out_axes, out_dirs, node.outputs[n:])):
        if not vals:
            _empty_stack(em, body.outputs[n + j].type, axis, out)
        elif out.name:
            em.stack(vals[::-1] if rev else vals, axis, out)
    return f"{length} iterations"


def _scan_length(xs: list[Value | None], axes: list[int]) -> int:
    """The common static length of the scan inputs along their scan axes."""
    lengths = set()
    for x, axis in zip(xs, axes):
        shape = _static_shape(x)
        if shape is None:
            name = x.name if x is not None else "?"
            raise _Declined(f"the shape of its scan input '{name}' is not static, so the number of iterations is unknown")
        lengths.add(shape[axis])
    if len(lengths) != 1:
        raise _Declined(f"its scan inputs have different lengths {sorted(lengths)} or there are none")
    return lengths.pop()


def _scan8(node: Node, em: _Emitter, budget: UnrollBudget) -> str:
    """Opset 8 Scan: batch axis 0, scan axis 1; each batch item runs its own scan."""
    body: Graph = node.attr("body")
    m = int(node.attr("num_scan_inputs"))
    rest = list(node.inputs[1:])
    n = len(rest) - m
    dirs = node.attr("directions") or [0] * m
    if len(body.inputs) != n + m or n < 0 or not rest:
        raise _Declined("its body's inputs do not match its inputs")
    shapes = [_static_shape(v) for v in rest]
    if any(s is None or len(s) < (2 if i >= n else 1) for i, s in enumerate(shapes)):
        raise _Declined("the shapes of its inputs are not static")
    batch = shapes[0][0]
    length = shapes[n][1] if m else 0
    if any(s[0] != batch for s in shapes) or any(s[1] != length for s in shapes[n:]):
        raise _Declined("its inputs disagree on the batch size or the sequence length")
    lens = em.known(node.inputs[0])
    if node.inputs[0] is not None and (lens is None or np.any(lens != length)):
        raise _Declined("its sequence_lens are not all the full length at compile time")
    size = batch * length * _body_size(body)
    budget.spend(size, node, f"{batch} batch items x {length} iterations of a {_body_size(body)}-node body")
    finals: list[list[Value]] = [[] for _ in range(n)]
    stacked: list[list[Value]] = [[] for _ in range(len(body.outputs) - n)]
    for b in range(batch):
        xs = [em.gather(x, b, 0) for x in rest[n:]]
        slices = [[em.gather(x, length - 1 - t if d else t, 0) for x, d in zip(xs, dirs)] for t in range(length)]
        states, scans = _iterate(em, body, [em.gather(s, b, 0) for s in rest[:n]], slices, f"b{b}/t")
        for acc, v in zip(finals, states):
            acc.append(v)
        for acc, vals in zip(stacked, scans):
            if not vals:
                raise _Declined("its sequences are empty")
            acc.append(em.stack(vals, 0))
    for out, vals in zip(node.outputs, finals + stacked):
        if out.name:
            em.stack(vals, 0, out)
    return f"{batch} x {length} iterations"


# ====================================================================== Loop
def _loop(node: Node, em: _Emitter, budget: UnrollBudget) -> str:
    body: Graph = node.attr("body")
    trip_in = node.inputs[0] if node.inputs else None
    cond_in = node.inputs[1] if len(node.inputs) > 1 else None
    carried = list(node.inputs[2:])
    n = len(carried)
    if len(body.inputs) != n + 2 or len(body.outputs) < n + 1 or any(v is None for v in carried):
        raise _Declined("its body's inputs and outputs do not match its inputs")
    trip = _loop_trip(em, trip_in)
    go = True if cond_in is None else _known_flag(em, cond_in, "its initial condition")
    if trip is None and cond_in is None:
        raise _Declined("it has neither a trip count nor a condition")
    cond = cond_in if cond_in is not None else em.const(np.array(True), "cond")
    states: list[Value] = carried  # type: ignore[assignment]
    scans: list[list[Value]] = [[] for _ in range(len(body.outputs) - 1 - n)]
    i = 0
    while go and (trip is None or i < trip):
        budget.spend(_body_size(body), node, f"iteration {i + 1} of a {_body_size(body)}-node body")
        outs = em.inline(body, [em.int64(i), cond, *states], f"i{i}/")
        cond, states = outs[0], outs[1 : 1 + n]
        for acc, v in zip(scans, outs[1 + n :]):
            acc.append(v)
        i += 1
        go = _known_flag(em, cond, f"its condition after iteration {i}")
    em.bind(node.outputs[:n], states)
    for j, (vals, out) in enumerate(zip(scans, node.outputs[n:])):
        if not vals:
            _empty_stack(em, body.outputs[1 + n + j].type, 0, out)
        elif out.name:
            em.stack(vals, 0, out)
    return f"{i} iterations"


def _loop_trip(em: _Emitter, trip: Value | None) -> int | None:
    if trip is None:
        return None
    value = em.known(trip)
    if value is None or value.size != 1:
        raise _Declined(f"its trip count '{trip.name}' is only known at run time")
    return int(value.reshape(-1)[0])


def _known_flag(em: _Emitter, v: Value, what: str) -> bool:
    value = em.known(v)
    if value is None or value.size != 1:
        raise _Declined(f"{what} ('{v.name}') is only known at run time")
    return bool(value.reshape(-1)[0])


# ====================================================================== If
def _if(node: Node, em: _Emitter, budget: UnrollBudget) -> str:
    then_b: Graph = node.attr("then_branch")
    else_b: Graph = node.attr("else_branch")
    cond = node.inputs[0]
    value = em.known(cond)
    if value is not None and value.size == 1:
        taken = then_b if bool(value.reshape(-1)[0]) else else_b
        budget.spend(_body_size(taken), node, f"a {_body_size(taken)}-node branch")
        em.bind(node.outputs, em.inline(taken, [], "then/" if taken is then_b else "else/"))
        return f"{'then' if taken is then_b else 'else'} branch taken"
    if cond is None or em.opset < 9:
        raise _Declined("its condition is only known at run time and Where needs opset 9")
    for branch in (then_b, else_b):
        op = _side_effect(branch, em.ti.opsets)
        if op:
            raise _Declined(f"its condition is only known at run time and a branch runs {op}, which must not run when not taken")
    budget.spend(_body_size(then_b) + _body_size(else_b), node, "both branches")
    a_vals = em.inline(then_b, [], "then/")
    b_vals = em.inline(else_b, [], "else/")
    for i, (a, b) in enumerate(zip(a_vals, b_vals)):
        if not _same_static_tensor(a.type, b.type):
            raise _Declined(
                f"its condition is only known at run time and its branches' output {i} has "
                f"types {a.type} and {b.type}, not one static tensor type"
            )
    flag = cond if isinstance(cond.type, TensorType) and cond.type.shape == () else em.add("Squeeze", [cond])
    for out, a, b in zip(node.outputs, a_vals, b_vals):
        if out.name:
            em.add("Where", [flag, a, b], out=out)
    return "both branches, selected with Where"


def _same_static_tensor(a: Type | None, b: Type | None) -> bool:
    return isinstance(a, TensorType) and a.is_static and a.shape is not None and bool(a.dtype) and a == b


def _side_effect(graph: Graph, opsets: dict[str, int]) -> str:
    """The first op of ``graph`` (nested graphs included) that is not a pure function of
    its inputs (random ops), or one torsh-gen does not know; '' when there is none."""
    for _, n in graph.walk():
        try:
            spec = lookup(n.op_type, n.domain, opsets.get(n.domain, opsets.get("", 0)))
        except TorshGenError:
            return n.qualified_op
        if not spec.deterministic:
            return n.qualified_op
    return ""


_EXPANDERS: dict[str, Callable[[Node, _Emitter, UnrollBudget], str]] = {"Scan": _scan, "Loop": _loop, "If": _if}

__all__ = ["CONTROL_OPS", "MAX_UNROLLED_NODES", "UnrollBudget", "UnrollResult", "unroll_control_flow"]
