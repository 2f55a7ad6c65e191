"""Graph → ``Program``: every node lowered to a kernel call over planned memory.

Memory comes in four kinds, all addressed by byte offsets so a program is position
independent: the caller's inputs and outputs (pointer arrays), one weights blob (graph
initializers and weights derived by lowerings, 64-byte aligned) and one workspace. The
workspace reuses the CPU compiler's memory plan (``plan_memory``): arena k of the plan
sits at a fixed offset, and values the plan leaves out (view-like ops that the kernels
materialize) get regions of their own; scratch that a lowering asks for (a packed
operand) lives in one area after them, shared by all kernels since they run one at a
time. Reshape-like ops are pure aliases: no kernel. A Concat of channel blocks is no kernel
either: the plan places its inputs as blocks of its arena (``MemoryPlan.concats``), so the
ops computing them write straight into place.

Weights go through a ``WeightStore`` that keeps each distinct tensor once (same bytes,
same type and shape, one offset). Several programs of one graph (a library's CPU
variants, lowered with different vector widths) can share one store: what their
lowerings store alike (biases, unpacked initializers) is written once, and the packed
operands that differ are appended, so one weights file serves every variant.

Kernels with identical text are emitted once (same shapes, same op), which keeps code
size down on models that repeat blocks. All shapes must be static here: the native
targets bind symbolic dimensions at compile time (``--input-shape``).

The one exception are outputs whose size depends on the data (NonZero, Unique,
NonMaxSuppression, Compress with a run-time condition). Such a tensor is allowed only as
a model output (directly or through Identity): its buffer is allocated at the op's upper
bound (``output_bounds`` of its spec in ``torsh_gen/ops``, the one source of that rule),
the kernel writes the actual tensor densely at the buffer's start and its actual dims
into an int64 "extent" region of the workspace that nothing else reuses, and the output's
``IOSpec`` records that region (``extent``) next to the bound (``max_shape``). Fed to
another node it would need run-time shapes downstream, so ``check_lowerable`` refuses it.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field, replace

import numpy as np

from torsh_gen.backends.kernel.analysis import used_names
from torsh_gen.backends.kernel.builder import KernelBuilder
from torsh_gen.backends.kernel.ir import Kernel, itemsize
from torsh_gen.backends.kernel.lower import (
    KERNEL_DTYPES,
    LowerCtx,
    LoweringDeclined,
    Schedule,
    lowering_for,
    prod,
)
from torsh_gen.backends.kernel.printer import format_kernel
from torsh_gen.backends.kernel.storage import compute_dtype
from torsh_gen.errors import InputError, UnsupportedOpError
from torsh_gen.ir.graph import Graph, Node, Value
from torsh_gen.ir.types import TensorType
from torsh_gen.ops.registry import lookup

ALIAS_OPS = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Dropout"})
#: Aliases a data-dependent tensor may pass through on its way to a model output (they keep
#: the shape, so the extent the kernel writes stays true).
SHAPE_KEEPING_ALIASES = frozenset({"Identity", "Dropout"})
#: Ops that take a data-dependent tensor (read densely in the dims its producer wrote) and
#: give one of their own, with its own bound and extent: ``torch.nonzero`` exports as
#: NonZero then Transpose.
BOUND_FOLLOWERS = frozenset({"Transpose"})
ALIGN = 64


@dataclass(frozen=True)
class TensorRef:
    """Where a tensor lives: ``kind`` input/output (``index``) or weights/workspace (``offset`` bytes)."""

    kind: str
    index: int
    offset: int
    dtype: str
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        """Bytes of the tensor."""
        from torsh_gen.backends.kernel.ir import itemsize

        return prod(self.shape) * itemsize(self.dtype)


@dataclass(frozen=True)
class IOSpec:
    """One model input or output: name as in the model, kernel dtype, numpy dtype, shape.

    An output whose size depends on the data has ``dims`` (its shape with the varying dims
    as names) and ``extent`` (the workspace byte offset of its int64[rank] actual dims,
    written by each run); its ``shape`` is then the upper bound its buffer must hold."""

    name: str
    dtype: str
    numpy_dtype: str
    shape: tuple[int, ...]
    dims: tuple[int | str, ...] | None = None
    extent: int | None = None

    @property
    def max_shape(self) -> tuple[int, ...]:
        """The largest shape the tensor can have: its buffer's capacity."""
        return self.shape

    @property
    def data_dependent(self) -> bool:
        """Whether the actual shape is known only after a run (read it from ``extent``)."""
        return self.dims is not None


@dataclass
class KernelCall:
    """One kernel invocation: a ``TensorRef`` per kernel buffer, in parameter order."""

    kernel: str
    args: list[TensorRef]
    node: str
    op_type: str


@dataclass
class Program:
    """A lowered model: kernels, the calls in order, and the memory layout."""

    inputs: list[IOSpec]
    outputs: list[IOSpec]
    kernels: dict[str, Kernel] = field(default_factory=dict)
    calls: list[KernelCall] = field(default_factory=list)
    weights: bytearray = field(default_factory=bytearray)
    workspace_bytes: int = 0


class WeightStore:
    """One weights blob (64-byte aligned tensors) that stores each distinct tensor once."""

    def __init__(self) -> None:
        self.blob = bytearray()
        self._index: dict[tuple[str, tuple[int, ...], str], int] = {}

    def add(self, data: np.ndarray, dtype: str) -> int:
        """The byte offset of ``data`` (C order, already of ``dtype``), stored if new."""
        raw = data.tobytes()
        key = (dtype, tuple(data.shape), hashlib.sha256(raw).hexdigest())
        offset = self._index.get(key)
        if offset is None:
            offset = _align(len(self.blob))
            self.blob.extend(b"\0" * (offset - len(self.blob)))
            self.blob.extend(raw)
            self._index[key] = offset
        return offset


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def _tensor_info(v: Value) -> tuple[str, tuple[int, ...]]:
    t = v.type
    if not isinstance(t, TensorType) or t.shape is None:
        raise InputError(f"tensor '{v.name}' has no known type and shape; native targets need static shapes (use --input-shape)")
    dtype = KERNEL_DTYPES.get(t.dtype)
    if dtype is None:
        raise UnsupportedOpError(f"tensor '{v.name}' has element type {t.dtype.name}, which native targets do not support")
    if not t.is_static:
        if v.producer is not None:
            # graph inputs are checked first: a node output left symbolic gets its size
            # from run-time values, which --input-shape cannot bind
            node = v.producer
            raise InputError(
                f"tensor '{v.name}' (output of {node.op_type} node {node.name or '?'!r}) has shape {t}, "
                f"which depends on run-time values; native targets size every tensor at compile "
                f"time: make the operands that set it constants in the model"
            )
        raise InputError(
            f"tensor '{v.name}' has symbolic shape {t}; native targets need static shapes: bind the "
            f"symbolic dimensions with --input-shape NAME=D1xD2..."
        )
    return dtype, tuple(int(d) for d in t.shape)


@dataclass(frozen=True)
class Bound:
    """The upper bound of a node output whose size the op's spec bounds (``output_bounds``):
    ``shape`` is what its buffer holds, ``varying`` the dims that depend on the data (empty:
    the shape is exactly ``shape``), ``node`` the op that computes it."""

    shape: tuple[int, ...]
    varying: tuple[int, ...]
    node: Node

    @property
    def data_dependent(self) -> bool:
        """Whether the actual size is known only at run time."""
        return bool(self.varying)


def _static_shape(v: Value | None) -> tuple[int, ...] | None:
    t = v.type if v is not None else None
    if isinstance(t, TensorType) and t.shape is not None and t.is_static:
        return tuple(int(d) for d in t.shape)
    return None


def output_bounds(graph: Graph) -> dict[int, Bound]:
    """The bounds of the outputs (by ``id``) of ops whose spec has ``output_bounds``, and
    of the shape-keeping aliases of those that depend on the data. The spec decides what
    depends on the data, not the inferred type: a model may declare a static shape for
    such an output (the one its test data happens to give). Outputs whose size does not
    depend on the data are listed only where inference left their shape symbolic. Nodes
    whose inputs are not static yet are skipped (lowering reports those)."""
    opset = graph.opset if isinstance(graph.opset, int) else 0
    bounds: dict[int, Bound] = {}
    for node in graph.nodes:
        if node.op_type in SHAPE_KEEPING_ALIASES and node.inputs and id(node.inputs[0]) in bounds:
            src = bounds[id(node.inputs[0])]
            if src.data_dependent and not _dropout_needs_kernel(node):
                bounds[id(node.outputs[0])] = src
            continue
        if node.op_type in BOUND_FOLLOWERS and node.inputs and id(node.inputs[0]) in bounds:
            src = bounds[id(node.inputs[0])]
            if src.data_dependent:
                bounds[id(node.outputs[0])] = _transposed_bound(node, src)
                continue
        try:
            spec = lookup(node.op_type, node.domain, opset)
        except UnsupportedOpError:
            continue
        rule = getattr(spec, "output_bounds", None)
        if rule is None:
            continue
        shapes = [_static_shape(v) for v in node.inputs]
        if any(v is not None and s is None for v, s in zip(node.inputs, shapes)):
            continue
        rows = rule(spec.resolve_attrs(node), shapes, [v.const if v is not None else None for v in node.inputs])
        for v, (shape, varying) in zip(node.outputs, rows):
            if v is not None and v.name and (varying or _static_shape(v) is None):
                bounds[id(v)] = Bound(tuple(int(d) for d in shape), tuple(varying), node)
    return bounds


def _transposed_bound(node: Node, src: Bound) -> Bound:
    """The bound of a Transpose (the one op of ``BOUND_FOLLOWERS``) of a bounded tensor:
    its dims, and which of them vary, permuted."""
    rank = len(src.shape)
    perm = node.attr("perm")
    perm = list(range(rank))[::-1] if perm is None else [int(p) % max(rank, 1) for p in perm]
    shape = tuple(src.shape[p] for p in perm)
    varying = tuple(k for k, p in enumerate(perm) if p in src.varying)
    return Bound(shape, varying, node)


def _data_dependent_refusals(graph: Graph, allowed: bool) -> list[str]:
    """One line per node whose data-dependent output the target cannot return: fed to
    another node (``allowed``: native targets return such tensors as model outputs), or
    any at all (a target with static outputs only)."""
    bounds = output_bounds(graph)
    lines: dict[int, str] = {}
    for node in graph.nodes:
        for v in node.inputs:
            b = bounds.get(id(v)) if v is not None else None
            if b is None or not b.data_dependent or id(b.node) in lines:
                continue
            if node.op_type in SHAPE_KEEPING_ALIASES and id(node.outputs[0]) in bounds:
                continue  # passes it on unchanged
            if allowed and node.op_type in BOUND_FOLLOWERS and id(node.outputs[0]) in bounds:
                continue  # reads it in its actual dims and gives a bounded tensor of its own
            lines[id(b.node)] = (
                f"{b.node.op_type} (node {b.node.name or '?'!r}: output {v.name!r} feeds "
                f"{node.op_type} (node {node.name or '?'!r}), but its size depends on the data "
                "and native targets return such tensors only as model outputs)"
            )
    if not allowed:
        for b in bounds.values():
            if b.data_dependent and id(b.node) not in lines:
                lines[id(b.node)] = (
                    f"{b.node.op_type} (node {b.node.name or '?'!r}: its output size depends on "
                    "the data, and this target needs static output shapes)"
                )
    return list(lines.values())


def _kernel_name(op_type: str, n: int) -> str:
    return f"k{n}_{re.sub(r'[^A-Za-z0-9]', '', op_type)[:24].lower()}"


def _dropout_needs_kernel(node: Node) -> bool:
    """A Dropout is an alias of its input only at inference without a mask output; else
    its lowering writes the mask (or declines training mode, which draws random numbers)."""
    if node.op_type != "Dropout":
        return False
    mask = len(node.outputs) > 1 and node.outputs[1] is not None and bool(node.outputs[1].name)
    training = node.inputs[2] if len(node.inputs) > 2 else None
    return mask or (training is not None and (training.const is None or bool(np.asarray(training.const).any())))


def lowerable(node: Node) -> bool:
    """Whether some lowering covers ``node``'s op (aliases and constants need none)."""
    return node.op_type in ALIAS_OPS or node.op_type == "Constant" or lowering_for(node.op_type) is not None


def check_lowerable(graph: Graph, data_dependent: bool = False) -> None:
    """Raise one UnsupportedOpError listing every node no lowering covers, and every node
    whose output size depends on the data where the target cannot return it
    (``data_dependent``: the target returns such tensors as model outputs, not elsewhere)."""
    missing = [node for node in graph.nodes if not lowerable(node)]
    reasons = graph.meta.get("not_lowered", {})  # why a pass left a node (control flow)

    def why(n: Node) -> str:
        return f": {reasons[id(n)]}" if id(n) in reasons else ""

    listed = [f"{n.op_type} (node {n.name or '?'!r}{why(n)})" for n in missing]
    refused = _data_dependent_refusals(graph, data_dependent)
    if not listed and not refused:
        return
    entries = listed + refused
    shown = "; ".join(entries[:40])
    more = f" and {len(entries) - 40} more" if len(entries) > 40 else ""
    if not refused:
        raise UnsupportedOpError(f"{len(missing)} node(s) have no native lowering: {shown}{more}")
    raise UnsupportedOpError(f"{len(entries)} node(s) cannot be lowered for native targets: {shown}{more}")


class _Builder:
    def __init__(self, graph: Graph, sched: Schedule, store: WeightStore | None = None) -> None:
        self.graph = graph
        self.store = store or WeightStore()
        self.sched = sched
        self.opset = graph.opset if isinstance(graph.opset, int) else 0
        self.refs: dict[int, TensorRef] = {}
        self.texts: dict[str, str] = {}
        self.workspace = 0
        self.bounds = output_bounds(graph)
        self.extent_of: dict[int, int] = {}  # value id -> workspace offset of its actual dims
        self.program = Program(
            [self._io(v) for v in graph.inputs if v.const is None],
            [self._io(v, j) for j, v in enumerate(graph.outputs)],
            weights=self.store.blob,
        )
        plan = graph.meta.get("memory_plan")
        self.arena_offsets: list[int] = []
        if plan is not None:
            for size in plan.slots:
                self.arena_offsets.append(self.workspace)
                self.workspace += _align(size)
        self.plan = plan
        self.scratch_bytes = 0

    def _io(self, v: Value, j: int = 0) -> IOSpec:
        dtype, shape = self.info(v)
        b = self.bounds.get(id(v))
        dims = None
        if b is not None and b.data_dependent:
            ir_dims = v.type.shape if isinstance(v.type, TensorType) and v.type.shape is not None else ()
            ir_dims = tuple(ir_dims) if len(ir_dims) == len(shape) else (None,) * len(shape)
            dims = tuple(
                (ir_dims[d] if isinstance(ir_dims[d], str) else f"output{j}_dim{d}") if d in b.varying else shape[d]
                for d in range(len(shape))
            )
        return IOSpec(v.name, dtype, np.dtype(v.type.dtype.numpy).name, shape, dims)

    def info(self, v: Value) -> tuple[str, tuple[int, ...]]:
        """Kernel dtype and static shape of ``v``: for a bounded output, its bound."""
        b = self.bounds.get(id(v))
        if b is None:
            return _tensor_info(v)
        dtype = KERNEL_DTYPES.get(v.type.dtype) if isinstance(v.type, TensorType) else None
        if dtype is None:
            return _tensor_info(v)  # its error
        return dtype, b.shape

    def weight(self, array: np.ndarray, dtype: str) -> TensorRef:
        from torsh_gen.backends.kernel.interp import numpy_dtype

        data = np.array(array, dtype=numpy_dtype(dtype), order="C")  # keeps 0-d shapes
        offset = self.store.add(data, dtype)
        return TensorRef("weights", 0, offset, dtype, tuple(data.shape))

    def region(self, dtype: str, shape: tuple[int, ...]) -> TensorRef:
        from torsh_gen.backends.kernel.ir import itemsize

        offset = self.workspace
        self.workspace += _align(max(prod(shape) * itemsize(dtype), 1))
        return TensorRef("workspace", 0, offset, dtype, shape)

    def build(self) -> Program:
        g = self.graph
        for j, v in enumerate(v for v in g.inputs if v.const is None):
            dtype, shape = _tensor_info(v)
            self.refs[id(v)] = TensorRef("input", j, 0, dtype, shape)
        self.out_index = {id(v): j for j, v in enumerate(g.outputs)}
        failures: list[str] = []
        for node in g.nodes:
            try:
                self.node(node)
            except LoweringDeclined as exc:
                failures.append(f"{node.op_type} (node {node.name or '?'!r}: {exc})")
        if failures:
            raise UnsupportedOpError(f"{len(failures)} node(s) cannot be lowered for native targets: " + "; ".join(failures[:40]))
        self.finish_outputs()
        # kernels run one at a time, so one scratch area after the tensors serves them all
        base = self.workspace
        for call in self.program.calls:
            call.args = [TensorRef("workspace", 0, base + r.offset, r.dtype, r.shape) if r.kind == "scratch" else r for r in call.args]
        self.program.workspace_bytes = self.workspace + self.scratch_bytes
        return self.program

    def ref(self, v: Value | None) -> TensorRef | None:
        if v is None:
            return None
        got = self.refs.get(id(v))
        if got is not None:
            return got
        if v.const is not None:
            dtype, shape = self.info(v)
            got = self.weight(v.const, dtype)
            self.refs[id(v)] = got
            return got
        raise InputError(f"tensor '{v.name}' is read before it is computed")

    def pending(self, v: Value | None) -> TensorRef | None:
        """The input's ref; a weight not stored yet stays pending until a kernel reads it."""
        if v is None or id(v) in self.refs or v.const is None:
            return self.ref(v)
        dtype, shape = self.info(v)
        return TensorRef("pending", 0, 0, dtype, shape)

    def out_ref(self, v: Value) -> TensorRef:
        dtype, shape = self.info(v)
        j = self.out_index.get(id(v))
        if j is None and id(v) in self.bounds:
            j = self._output_through_aliases(v)
        if j is not None:
            return TensorRef("output", j, 0, dtype, shape)
        if id(v) in self.bounds:  # the plan does not size it: a region of its own
            return self.region(dtype, shape)
        return self.slot_ref(v, dtype, shape) or self.region(dtype, shape)

    def slot_ref(self, v: Value, dtype: str, shape: tuple[int, ...]) -> TensorRef | None:
        """Where the memory plan's arena holds ``v``, or None where it has no slot there."""
        slot = self.plan.slot_of(v.name) if self.plan is not None else None
        if slot is None:
            return None
        return TensorRef("workspace", 0, self.arena_offsets[slot] + self.plan.offsets.get(v.name, 0), dtype, shape)

    def _output_through_aliases(self, v: Value) -> int | None:
        """The first model output a data-dependent ``v`` reaches through shape-keeping
        aliases (check_lowerable made sure nothing else reads it), or None."""
        frontier = [v]
        while frontier:
            cur = frontier.pop(0)
            j = self.out_index.get(id(cur))
            if j is not None:
                return j
            for n in self.graph.nodes:
                if n.op_type in SHAPE_KEEPING_ALIASES and n.inputs and n.inputs[0] is cur:
                    if self.bounds.get(id(n.outputs[0])) is self.bounds.get(id(v)):
                        frontier.append(n.outputs[0])
        return None

    def node(self, node: Node) -> None:
        if node.op_type == "Constant":
            raise LoweringDeclined("Constant nodes must be folded first (run fold_constants)")
        if node.op_type in ALIAS_OPS and not _dropout_needs_kernel(node):
            src = self.ref(node.inputs[0])
            dtype, shape = self.info(node.outputs[0])
            # an aliased graph output is copied into place by finish_outputs
            self.refs[id(node.outputs[0])] = TensorRef(src.kind, src.index, src.offset, dtype, shape)
            if id(node.inputs[0]) in self.extent_of:
                self.extent_of[id(node.outputs[0])] = self.extent_of[id(node.inputs[0])]
            return
        if self.plan is not None and node.op_type == "Concat" and node.outputs[0].name in self.plan.concats:
            self.refs[id(node.outputs[0])] = self.out_ref(node.outputs[0])  # its blocks are written
            return
        fn = lowering_for(node.op_type)
        if fn is None:
            raise LoweringDeclined("no lowering")
        spec = lookup(node.op_type, node.domain, self.opset)
        ins = [self.pending(v) for v in node.inputs]
        # an optional output left out has no name (the importer keeps a placeholder value)
        outs = [self.out_ref(v) if v is not None and v.name else None for v in node.outputs]
        kb = KernelBuilder("kernel")
        ctx = LowerCtx(
            node=node, attrs=spec.resolve_attrs(node), opset=self.opset,
            in_shapes=[r.shape if r else None for r in ins], in_dtypes=[compute_dtype(r.dtype) if r else None for r in ins],
            out_shapes=[r.shape if r else None for r in outs],
            out_dtypes=[compute_dtype(r.dtype) if r else None for r in outs],
            consts=[v.const if v is not None else None for v in node.inputs], sched=self.sched, kb=kb,
            data_dependent=[v is not None and id(v) in self.bounds and self.bounds[id(v)].data_dependent
                            for v in node.outputs],
            in_data_dependent=[v is not None and id(v) in self.extent_of for v in node.inputs],
        )
        ctx.inputs = [kb.buffer(f"x{i}", r.dtype, prod(r.shape)) if r else None for i, r in enumerate(ins)]
        ctx.outputs = [kb.buffer(f"y{j}", r.dtype, prod(r.shape), writable=True) if r else None for j, r in enumerate(outs)]
        fn(ctx)
        kernel = kb.build()
        _, touched = used_names(kernel.body)
        bind: dict[str, TensorRef] = {}
        for i, r in enumerate(ins):
            if r is not None and f"x{i}" in touched:
                bind[f"x{i}"] = self.ref(node.inputs[i]) if r.kind == "pending" else r
        for j, r in enumerate(outs):
            if r is not None:
                bind[f"y{j}"] = r
        for name, arr in ctx.new_weights:
            if name in touched:
                bind[name] = self.weight(arr, kernel.buffer(name).dtype)
        at = 0
        for name, dtype, n in ctx.scratches:  # offsets into the shared scratch area
            bind[name] = TensorRef("scratch", 0, at, dtype, (n,))
            at += _align(max(n * itemsize(dtype), 1))
        self.scratch_bytes = max(self.scratch_bytes, at)
        for name, dtype, n in ctx.states:  # a region of its own, which no other value reuses
            if name in touched:
                bind[name] = self.region(dtype, (n,))
        for name, i in ctx.in_extents:  # a data-dependent input's actual dims, as its producer wrote them
            bind[name] = TensorRef("workspace", 0, self.extent_of[id(node.inputs[i])], "i64", (max(len(ins[i].shape), 1),))
        for name, j in ctx.extents:  # the actual dims of a data-dependent output, kept after the run
            bind[name] = self.region("i64", (max(len(outs[j].shape), 1),))
            self.extent_of[id(node.outputs[j])] = bind[name].offset
        for j, wanted in enumerate(ctx.data_dependent):
            if wanted and outs[j] is not None and id(node.outputs[j]) not in self.extent_of:
                raise LoweringDeclined(f"the lowering wrote no extent for the data-dependent output {j}")
        # buffers the kernel never touches (a Pad's pads, a Resize's scales) are not passed
        kernel.buffers = [b for b in kernel.buffers if b.name in bind]
        name = self.add_kernel(kernel, node.op_type)
        self.program.calls.append(KernelCall(name, [bind[b.name] for b in kernel.buffers], node.name, node.op_type))
        for v, r in zip(node.outputs, outs):
            if r is not None:
                self.refs[id(v)] = r

    def add_kernel(self, kernel: Kernel, op_type: str) -> str:
        text = format_kernel(kernel, "_")
        name = self.texts.get(text)
        if name is None:
            name = _kernel_name(op_type, len(self.program.kernels))
            kernel.name = name
            self.texts[text] = name
            self.program.kernels[name] = kernel
        return name

    def finish_outputs(self) -> None:
        """Copy outputs that live elsewhere (an alias of an input, a weight, a view); record
        where data-dependent outputs find their actual dims."""
        for j, v in enumerate(self.graph.outputs):
            if id(v) in self.extent_of:
                self.program.outputs[j] = replace(self.program.outputs[j], extent=self.extent_of[id(v)])
            r = self.ref(v)
            if r.kind == "output" and r.index == j:
                continue
            dtype, shape = self.info(v)
            kb = KernelBuilder("copy")
            n = prod(shape)
            src = kb.buffer("x0", dtype, n)
            dst = kb.buffer("y0", dtype, n, writable=True)
            with kb.loop(n, kind="vector", width=self.sched.lanes if n >= self.sched.lanes else 1) as i:
                dst[i] = src[i]
            name = self.add_kernel(kb.build(), "copy")
            self.program.calls.append(KernelCall(name, [r, TensorRef("output", j, 0, dtype, shape)], v.name, "copy"))


def build_program(graph: Graph, sched: Schedule, store: WeightStore | None = None) -> Program:
    """Lower every node of the optimized ``graph`` (memory plan in ``graph.meta``).

    ``store``: a weights store shared with other programs of the same graph (its blob
    becomes this program's ``weights`` and grows with what this lowering adds)."""
    check_lowerable(graph, data_dependent=True)
    return _Builder(graph, sched, store).build()
