"""Memory planning: buffer reuse by liveness, and in-place elementwise ops where safe.

Preconditions: nodes in topological order (any verified graph). The pass changes no node;
it records a ``MemoryPlan`` in ``graph.meta["memory_plan"]`` that code generators use to
preallocate one arena per slot and write each planned value into its slot (``out=``).

Only the top-level graph is planned, and only values that
- have a static shape and a numeric element type,
- are produced by an op in ``FRESH_OPS`` (ops whose result is new memory, never a view of
  an input: generators must keep that contract for these ops),
- are not graph outputs and are not viewed by a graph output.

Views: an op outside ``FRESH_OPS`` (Reshape, Transpose, Slice, Identity, ...) may return
a view of any input, so its output joins its inputs' storage; a storage stays alive until
the last read of any value viewing it. A slot is reused by a later value once every value
in it is dead. An elementwise op (``INPLACE_OPS``) writes into its first same-shaped input
when that input's storage dies at this node and is a planned buffer (never a graph input
or a weight).

Concatenation blocks (``build_plan(graph, concat_blocks=True)``, for code generators that
can skip a Concat): when each input of a Concat is a contiguous block of its output (all
axes before ``axis`` have size 1) and is itself a planned value, the inputs are placed at
their byte offsets inside the Concat's arena (``offsets``) and the Concat has nothing left
to do (``concats``). The arena is taken when the first block is computed and released when
the last reader of any block, or of the output, is done. Blocks nest: a Concat feeding
another one is a block of it (DenseNet's dense blocks become one arena each).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torsh_gen.ir.graph import Graph, Node, Value, outer_reads
from torsh_gen.ir.types import TensorType
from torsh_gen.passes.manager import note, register_pass

#: Elementwise ops that may write their output into a dying input of the same shape.
INPLACE_OPS: frozenset[str] = frozenset(
    """Abs Acos Acosh Add Asin Asinh Atan Atanh BitwiseAnd BitwiseNot BitwiseOr BitwiseXor
    Ceil Celu Clip Cos Cosh Div Elu Erf Exp Floor Gelu HardSigmoid HardSwish LeakyRelu Log
    Max Min Mish Mul Neg PRelu Pow Reciprocal Relu Round Selu Sigmoid Sign Sin Sinh Softplus
    Softsign Sqrt Sub Sum Tan Tanh ThresholdedRelu FusedElementwise""".split()
)

#: Ops whose outputs are always new memory: the elementwise ops plus compute ops.
FRESH_OPS: frozenset[str] = INPLACE_OPS | frozenset(
    """And Or Xor Not Equal Greater GreaterOrEqual Less LessOrEqual Where Mod IsNaN IsInf
    Conv ConvTranspose FusedConv MatMul Gemm FusedMatMul MatMulInteger ConvInteger Einsum
    MaxPool AveragePool GlobalAveragePool GlobalMaxPool LpPool Softmax LogSoftmax Hardmax
    LayerNormalization BatchNormalization InstanceNormalization GroupNormalization
    LpNormalization RMSNormalization ReduceSum ReduceMean ReduceMax ReduceMin ReduceProd
    ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceSumSquare ArgMax ArgMin Concat
    Tile Pad Resize CumSum""".split()
)


def makes_new_memory(node: Node) -> bool:
    """Whether ``node``'s outputs are always new memory (an op of ``FRESH_OPS`` in the
    default or torsh domain), never a view of an input."""
    return node.op_type in FRESH_OPS and node.domain in ("", "ai.torsh")


@dataclass
class MemoryPlan:
    """Where each planned value of the top-level graph lives.

    ``slots[k]`` is the size in bytes of arena ``k``; ``assignment`` maps a value name to
    its arena (each planned value starts at byte 0 of its arena); ``inplace`` maps a value
    to the input value whose arena it overwrites. Byte counts compare the plan with giving
    every planned value its own buffer.
    """

    slots: list[int] = field(default_factory=list)
    assignment: dict[str, int] = field(default_factory=dict)
    inplace: dict[str, str] = field(default_factory=dict)
    #: values that start at a byte offset inside their arena (blocks of a Concat)
    offsets: dict[str, int] = field(default_factory=dict)
    #: outputs of the Concats whose inputs are all placed as their blocks
    concats: set[str] = field(default_factory=set)
    nbytes: dict[str, int] = field(default_factory=dict)
    naive_bytes: int = 0

    @property
    def planned_bytes(self) -> int:
        """Bytes of all arenas together."""
        return sum(self.slots)

    def slot_of(self, name: str) -> int | None:
        """The arena of value ``name``, or None when it is not planned."""
        return self.assignment.get(name)

    def to_dict(self) -> dict:
        """Plain data for reports and manifests."""
        return {
            "slots": len(self.slots),
            "planned_bytes": self.planned_bytes,
            "naive_bytes": self.naive_bytes,
            "planned_values": len(self.assignment),
            "inplace_values": len(self.inplace),
            "concats_in_place": len(self.concats),
        }


@register_pass("plan_memory", ensures=("memory_plan",))
def plan_memory(graph: Graph) -> bool:
    """Plan buffer reuse for the top-level graph (graph.meta['memory_plan'])."""
    plan = build_plan(graph, concat_blocks=True)
    graph.meta["memory_plan"] = plan
    note(
        f"{len(plan.assignment)} values in {len(plan.slots)} buffers: {plan.planned_bytes} bytes "
        f"planned vs {plan.naive_bytes} naive, {len(plan.inplace)} in place"
        + (f", {len(plan.concats)} Concat(s) as blocks" if plan.concats else "")
    )
    return False  # an annotation: the graph's nodes are unchanged


def static_nbytes(v: Value) -> int | None:
    """Bytes of ``v`` when its shape is static and its element type numeric, else None."""
    t = v.type
    if not isinstance(t, TensorType) or not t.is_static or t.dtype.name == "STRING":
        return None
    bits = t.dtype.itemsize_bits
    if not bits or bits % 8:
        return None
    return (t.numel() or 0) * bits // 8


def _reads(node: Node) -> list[Value]:
    reads = [v for v in node.inputs if v is not None]
    for sg in node.subgraphs():
        reads.extend(outer_reads(sg))
    return reads


class _Liveness:
    """Storage roots (a value and every view of it) and the last node reading each root."""

    def __init__(self, graph: Graph) -> None:
        end = len(graph.nodes)
        self.roots: dict[int, set[int]] = {}  # id(value) → ids of root values it may view
        self.last: dict[int, int] = {}  # id(root) → index of the last reader of any view
        for v in graph.values():
            self.roots[id(v)] = {id(v)}
        for i, node in enumerate(graph.nodes):
            if not makes_new_memory(node):
                joined = set().union(*(self.roots.get(id(v), {id(v)}) for v in node.inputs if v is not None))
                for out in node.outputs:
                    self.roots[id(out)] = {id(out)} | joined
            for v in _reads(node):
                for r in self.roots.get(id(v), ()):
                    self.last[r] = max(self.last.get(r, -1), i)
        self.pinned: set[int] = set()  # roots viewed by a graph output: never reused
        for v in graph.outputs:
            self.pinned |= self.roots.get(id(v), {id(v)})
            for r in self.roots.get(id(v), ()):
                self.last[r] = end
        self.end = end

    def dies_at(self, root: Value) -> int:
        """The index of the last node reading ``root`` or a view of it (-1 if never read)."""
        return self.last.get(id(root), -1)


def build_plan(graph: Graph, concat_blocks: bool = False) -> MemoryPlan:
    """Assign arenas to the planned values of ``graph`` (best fit, reuse after last read;
    ``concat_blocks``: Concat inputs as blocks of the Concat's arena, see the module doc)."""
    live = _Liveness(graph)
    plan = MemoryPlan()
    blocks = _concat_blocks(graph, live, plan) if concat_blocks else _Blocks()
    free: list[int] = []  # arena indices free for reuse
    ending: dict[int, list[int]] = {}  # node index → arenas released after it
    for i, node in enumerate(graph.nodes):
        if makes_new_memory(node):
            for out in node.outputs:
                _place(plan, live, node, out, i, free, ending, blocks)
        free.extend(sorted(ending.pop(i, [])))
    return plan


@dataclass
class _Blocks:
    """Concat blocks: value id → (id of the outermost Concat output holding it, byte
    offset), and per outermost output its bytes, the last reader of any block and, once
    taken, its arena."""

    at: dict[int, tuple[int, int]] = field(default_factory=dict)
    size: dict[int, int] = field(default_factory=dict)
    death: dict[int, int] = field(default_factory=dict)
    slot: dict[int, int] = field(default_factory=dict)


def _concat_blocks(graph: Graph, live: _Liveness, plan: MemoryPlan) -> _Blocks:
    """Find the Concats whose inputs can be their blocks (latest first, so nested ones
    land inside the block their output already has)."""
    blocks = _Blocks()
    index = {id(o): i for i, n in enumerate(graph.nodes) for o in n.outputs}
    fresh = {id(o) for n in graph.nodes if makes_new_memory(n) for o in n.outputs}

    def planned(v: Value | None) -> bool:
        return (
            v is not None and id(v) in fresh and id(v) not in live.pinned
            and live.roots.get(id(v)) == {id(v)} and bool(v.name) and bool(static_nbytes(v))
        )

    for node in reversed(graph.nodes):
        if node.op_type != "Concat" or node.domain != "" or len(node.outputs) != 1:
            continue
        out, ins = node.outputs[0], list(node.inputs)
        if not ins or not planned(out) or not all(planned(v) for v in ins):
            continue
        if len({id(v) for v in ins}) != len(ins) or any(id(v) in blocks.at for v in ins):
            continue
        shape = out.type.shape
        axis = int(node.attr("axis", 0))
        axis += len(shape) if axis < 0 else 0
        if not 0 <= axis < len(shape) or any(int(d) != 1 for d in shape[:axis]):
            continue
        if any(v.type.dtype != out.type.dtype for v in ins):
            continue
        root, base = blocks.at.get(id(out), (id(out), 0))
        if root == id(out):
            blocks.size[root] = static_nbytes(out) or 0
            blocks.death[root] = max(live.dies_at(out), index[id(out)])
        at = base
        for v in ins:
            blocks.at[id(v)] = (root, at)
            blocks.death[root] = max(blocks.death[root], live.dies_at(v), index[id(v)])
            at += static_nbytes(v) or 0
        blocks.at.setdefault(id(out), (root, 0))
        plan.concats.add(out.name)
    return blocks


def _place(
    plan: MemoryPlan, live: _Liveness, node: Node, out: Value, i: int, free: list[int],
    ending: dict[int, list[int]], blocks: _Blocks,
) -> None:
    nbytes = static_nbytes(out) if out.name else None
    if not nbytes or id(out) in live.pinned:
        return
    plan.naive_bytes += nbytes
    plan.nbytes[out.name] = nbytes
    if id(out) in blocks.at:  # a block of a Concat's arena, taken by its first block
        root, offset = blocks.at[id(out)]
        slot = blocks.slot.get(root)
        if slot is None:
            slot = blocks.slot[root] = _best_fit(plan, free, blocks.size[root])
            ending.setdefault(blocks.death[root], []).append(slot)
        plan.assignment[out.name] = slot
        if offset:
            plan.offsets[out.name] = offset
        return
    death = live.dies_at(out)
    if death <= i:  # never read: still needs memory while it is written
        death = i
    slot = _inplace_slot(plan, live, node, out, i, ending, blocks)
    if slot is None:
        slot = _best_fit(plan, free, nbytes)
    plan.assignment[out.name] = slot
    ending.setdefault(death, []).append(slot)


def _inplace_slot(
    plan: MemoryPlan, live: _Liveness, node: Node, out: Value, i: int, ending: dict[int, list[int]],
    blocks: _Blocks,
) -> int | None:
    if node.op_type not in INPLACE_OPS or len(node.outputs) != 1:
        return None
    for v in node.inputs:
        if v is None or v.name not in plan.assignment or v.type != out.type or id(v) in blocks.at:
            continue
        if live.roots.get(id(v)) != {id(v)} or live.dies_at(v) != i:
            continue
        if any(w is not v and id(v) in live.roots.get(id(w), ()) for w in node.inputs if w is not None):
            continue  # another input views the same memory with its own layout
        slot = plan.assignment[v.name]
        if slot not in ending.get(i, []):
            continue
        ending[i].remove(slot)  # the input's arena is handed over to the output
        plan.inplace[out.name] = v.name
        return slot
    return None


def _best_fit(plan: MemoryPlan, free: list[int], nbytes: int) -> int:
    fitting = [s for s in free if plan.slots[s] >= nbytes]
    if fitting:
        slot = min(fitting, key=lambda s: (plan.slots[s], s))
    elif free:
        slot = max(free, key=lambda s: (plan.slots[s], -s))
        plan.slots[slot] = nbytes  # grow the biggest free arena
    else:
        plan.slots.append(nbytes)
        return len(plan.slots) - 1
    free.remove(slot)
    return slot
