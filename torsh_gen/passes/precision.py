"""Float precision conversion: run a float32 graph's weights and compute in fp16 or bf16.

Preconditions: value types inferred or inferable (the pass runs type inference first);
nested graphs (If/Loop/Scan bodies) are left in float32. Rules, in one topological sweep:

- a node computes in the low type when its op is on :data:`LOW_PRECISION_OPS`, every float
  tensor it reads or writes is float32, it is not in ``keep_fp32`` and none of the
  checks below keeps it (each kept node gets a reason in the report);
- numerically sensitive ops (:data:`SENSITIVE_OPS`: reductions, Softmax, normalizations,
  Exp/Log/Pow, ...) stay float32, as do products whose accumulation length (the K of a
  GEMM, Cin/group * kernel area of a convolution) exceeds ``max_accumulation``, nodes
  whose float32 weights do not fit the low type's range, and values read by nested graphs;
- float32 initializers read by low nodes are converted once (kept as float32 too when a
  float32 node still reads them); values crossing between the two worlds get one Cast per
  (value, type), so Casts sit only at the boundaries;
- data movement (Reshape, Transpose, Concat, Gather, ...) is exact in any type, so it is
  lowered only when it reads a low value or a constant: between two float32 nodes it
  stays float32 instead of sitting between a Cast pair;
- float32 nodes read float32 values directly (never Cast(Cast(x))), and at the end
  ``remove_cast_pairs`` bypasses every ``Cast(fp32->low) -> Cast(low->fp32)`` and
  ``Cast(low->fp32) -> Cast(low)`` left in the graph, the model's own included (the
  first kind drops a rounding, which only brings the result closer to float32;
  ``simplify`` merges exact chains but rightly keeps lossy ones in general graphs);
- graph inputs and outputs keep their float32 type by default (``keep_io_types``): Casts
  at the edges, so callers feed the same arrays and read float32 results. Without it,
  float32 graph inputs and outputs take the low type.

    %y = Conv(%x, %w)                        %x16 = Cast<to=FLOAT16>(%x)
    %p = MaxPool(%y)              ==>        %y = Conv(%x16, %w16)     # %w16: fp16 initializer
    %s = Softmax(%p)                         %p = MaxPool(%y)
                                             %p32 = Cast<to=FLOAT>(%p)
                                             %s = Softmax(%p32)        # sensitive: float32
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field

import numpy as np

from torsh_gen.ir.graph import Attribute, AttrKind, Graph, Node, Value, outer_reads
from torsh_gen.ir.rewrite import NameGen, bypass
from torsh_gen.ir.types import DType, TensorType
from torsh_gen.ops.inference import infer_types
from torsh_gen.passes.manager import note, register_pass

LOW_TYPES = (DType.FLOAT16, DType.BFLOAT16)

#: Ops that compute well in 16-bit floats: elementwise arithmetic and well-conditioned
#: activations (relative error of the result stays near the type's epsilon), products whose
#: runtimes accumulate in float32 (ORT's MLAS and our upcasting kernels do), selections
#: (max, pooling by max, gathers) and pure data movement, which is exact in any type.
LOW_PRECISION_OPS = frozenset(
    {
        # products
        "Conv", "ConvTranspose", "Gemm", "MatMul",
        # elementwise arithmetic and activations
        "Add", "Sub", "Mul", "Div", "Neg", "Abs", "Relu", "LeakyRelu", "PRelu", "Clip",
        "Sigmoid", "HardSigmoid", "Tanh", "Gelu", "Erf", "Elu", "Selu", "Celu", "HardSwish",
        "Sqrt", "Reciprocal", "Max", "Min", "Where", "Sign", "Floor", "Ceil", "Round",
        # selections and small windows
        "MaxPool", "AveragePool", "ReduceMax", "ReduceMin", "ArgMax", "ArgMin", "TopK",
        # data movement
        "Identity", "Dropout", "Flatten", "Reshape", "Transpose", "Squeeze", "Unsqueeze",
        "Concat", "Split", "Slice", "Gather", "GatherElements", "Expand", "Tile", "Pad",
        "Resize", "DepthToSpace", "SpaceToDepth",
    }
)

#: Exact in any type: lowered only when they read a value already in the low type, so a
#: float32 producer -> Reshape -> float32 consumer never gets a Cast pair around the Reshape.
DATA_MOVEMENT = frozenset(
    {
        "Identity", "Dropout", "Flatten", "Reshape", "Transpose", "Squeeze", "Unsqueeze",
        "Concat", "Split", "Slice", "Gather", "GatherElements", "Expand", "Tile",
        "DepthToSpace", "SpaceToDepth",
    }
)

#: Ops kept in float32 whatever the budget, and why (the report quotes the reason).
SENSITIVE_OPS: dict[str, str] = {
    **dict.fromkeys(
        ("ReduceSum", "ReduceMean", "ReduceProd", "ReduceL1", "ReduceL2", "ReduceSumSquare",
         "ReduceLogSum", "ReduceLogSumExp", "GlobalAveragePool", "GlobalLpPool", "LpPool",
         "CumSum", "Einsum"),
        "reduction: a sum over many terms loses low bits in a 16-bit accumulator",
    ),
    **dict.fromkeys(
        ("Softmax", "LogSoftmax"),
        "softmax: exp of large logits overflows fp16 and the normalizing sum needs float32",
    ),
    **dict.fromkeys(
        ("LayerNormalization", "BatchNormalization", "InstanceNormalization",
         "GroupNormalization", "LpNormalization", "MeanVarianceNormalization",
         "RMSNormalization", "SimplifiedLayerNormalization", "SkipLayerNormalization"),
        "normalization: mean/variance sums and 1/sqrt(var + eps) with a tiny eps",
    ),
    **dict.fromkeys(
        ("Exp", "Log", "Pow", "Softplus", "Softsign"),
        "exp/log/pow: overflow beyond 65504 (fp16) and error amplified by the exponent",
    ),
}

#: Inputs (by position) whose type is fixed whatever T is: Resize's roi and scales.
_FIXED_INPUTS = {"Resize": (1, 2), "Upsample": (1,)}


def fixed_inputs(op_type: str) -> tuple[int, ...]:
    """Input positions of ``op_type`` whose float type is fixed whatever the compute type."""
    return _FIXED_INPUTS.get(op_type, ())


#: Ops whose float input may be of any type without a Cast (they read only its shape/type).
_TYPE_AGNOSTIC = frozenset({"Shape", "Size", "Cast"})

#: Default accumulation length above which a product stays float32.
DEFAULT_MAX_ACCUMULATION = 16384
_FINITE_MAX = {DType.FLOAT16: float(np.finfo(np.float16).max), DType.BFLOAT16: 3.38e38}


@dataclass
class PrecisionChanges:
    """What a conversion did: nodes converted, nodes kept in float32 (with why), casts added."""

    dtype: DType
    converted: list[str] = field(default_factory=list)
    kept: dict[str, str] = field(default_factory=dict)
    casts: int = 0
    weights_converted: int = 0
    roundtrips_removed: int = 0

    @property
    def changed(self) -> bool:
        """True when anything was converted."""
        return bool(self.converted or self.weights_converted)


def name_nodes(graph: Graph) -> None:
    """Give every unnamed node of ``graph`` a fresh unique name (keep_fp32 refers to names)."""
    names = NameGen(graph)
    for n in graph.nodes:
        if not n.name:
            n.name = names.fresh(n.op_type.lower())


def float_nodes(graph: Graph) -> list[Node]:
    """Nodes of ``graph`` (top level) that read or write a float32 tensor, in order."""
    infer_types(graph)
    return [n for n in graph.nodes if _touches_fp32(n)]


def convert_float_precision(
    graph: Graph,
    dtype: DType = DType.FLOAT16,
    *,
    keep_fp32: Collection[str] = (),
    keep_io_types: bool = True,
    max_accumulation: int = DEFAULT_MAX_ACCUMULATION,
) -> PrecisionChanges:
    """Convert ``graph`` in place to compute in ``dtype`` (FLOAT16 or BFLOAT16) where safe.

    ``keep_fp32`` names nodes that must stay float32 (what ``mixed`` chooses). Unnamed
    nodes get names first so the report can refer to every node.
    """
    if dtype not in LOW_TYPES:
        raise ValueError(f"convert_float_precision converts to FLOAT16 or BFLOAT16, not {dtype.name}")
    name_nodes(graph)
    graph.toposort()
    infer_types(graph)
    conv = _Converter(graph, dtype)
    pinned = {id(v) for n in graph.nodes for sg in n.subgraphs() for v in outer_reads(sg)}
    conv.fp32_readers |= pinned
    keep = set(keep_fp32)
    reasons = [(n, _keep_reason(n, dtype, keep, pinned, max_accumulation)) for n in graph.nodes]
    for node, reason in reasons:  # decided on the float32 types, before any edit
        if reason is None and node.op_type in DATA_MOVEMENT and not conv.reads_low(node):
            conv.keep(node)  # exact in any type: follows its float32 input, no Cast pair around it
        elif reason is None:
            conv.lower(node)
            conv.changes.converted.append(node.name)
        else:
            if reason:
                conv.changes.kept[node.name] = reason
            conv.keep(node)
    conv.finish_outputs(keep_io_types)
    if not keep_io_types:
        conv.lower_inputs()
    graph.nodes = conv.order
    graph.initializers = [v for v in graph.initializers if id(v) not in conv.unused_fp32()] + conv.new_inits
    conv.changes.roundtrips_removed = remove_cast_pairs(graph)
    return conv.changes


@register_pass("remove_cast_pairs")
def remove_cast_pairs_pass(graph: Graph) -> bool:
    """Bypass float Cast round trips (fp32 -> fp16 -> fp32 and the exact reverse)."""
    n = remove_cast_pairs(graph)
    if n:
        note(f"{n} Cast round trips removed")
    return bool(n)


def remove_cast_pairs(graph: Graph) -> int:
    """Bypass ``Cast(Cast(x))`` between float types when the outer Cast restores x's type.

    ``x(fp32) -> Cast(fp16) -> Cast(fp32)`` becomes ``x`` (one rounding less: the value is
    what a float32 graph computes) and ``x(fp16) -> Cast(fp32) -> Cast(fp16)`` becomes
    ``x`` (exact). The inner Cast stays while something else reads it; ``simplify``'s
    dead-node cleanup or ``eliminate_dead_code`` drops it otherwise. Returns the count.
    """
    infer_types(graph)
    removed = 0
    producer = {id(o): n for n in graph.nodes for o in n.outputs}
    for node in list(graph.nodes):
        inner = producer.get(id(node.inputs[0])) if node.op_type == "Cast" and node.inputs else None
        if inner is None or inner.op_type != "Cast" or node.domain or inner.domain:
            continue
        src, mid, out = inner.inputs[0], _dtype(inner.outputs[0]), _dtype(node.outputs[0])
        if src is None or mid is None or out is None or _dtype(src) != out:
            continue
        if out.is_float and mid.is_float and bypass(graph, node, src):
            removed += 1
    readers = {id(v) for n in graph.nodes for v in n.inputs if v is not None} | {id(v) for v in graph.outputs}
    graph.nodes = [n for n in graph.nodes if n.op_type != "Cast" or any(id(o) in readers for o in n.outputs)]
    return removed


def _keep_reason(node: Node, dtype: DType, keep: set[str], pinned: set[int], max_acc: int) -> str | None:
    """Why ``node`` stays float32 ('' when it has no float32 tensor at all), else None."""
    if not _touches_fp32(node) or node.op_type in _TYPE_AGNOSTIC:
        return ""
    if node.domain not in ("", "ai.onnx"):
        return f"op {node.qualified_op} is not on the low-precision list"
    if node.name in keep:
        return "kept float32 on request (keep_fp32 / mixed search)"
    if node.op_type in SENSITIVE_OPS:
        return f"sensitive op {node.op_type}: {SENSITIVE_OPS[node.op_type]}"
    if node.op_type not in LOW_PRECISION_OPS or any(node.subgraphs()):
        return f"op {node.op_type} is not on the low-precision list"
    if any(id(o) in pinned for o in node.outputs):
        return "its output is read inside a control-flow body (kept float32)"
    if any(_dtype(v) not in (None, DType.FLOAT) and _dtype(v).is_float for v in _float_io(node)):
        return "mixes float32 with other float types"
    k = _accumulation(node)
    if k is not None and k > max_acc:
        return f"large accumulation: {k} terms per output > {max_acc}"
    limit = _FINITE_MAX[dtype]
    for i, v in enumerate(node.inputs):
        if v is not None and v.const is not None and _dtype(v) == DType.FLOAT and i not in _FIXED_INPUTS.get(node.op_type, ()):
            if v.const.size and float(np.max(np.abs(v.const))) > limit:
                return f"weight {v.name!r} exceeds the {dtype.name.lower()} range"
    return None


class _Converter:
    """Builds the new node order, casts and initializers while the sweep walks the graph."""

    def __init__(self, graph: Graph, dtype: DType) -> None:
        self.graph = graph
        self.dtype = dtype
        self.names = NameGen(graph)
        self.order: list[Node] = []
        self.new_inits: list[Value] = []
        self.casts: dict[tuple[int, DType], Value] = {}
        self.fp32_readers: set[int] = set()  # float32 initializers still read as float32
        self.converted_inits: set[int] = set()
        self.lowered: set[int] = set()  # values this sweep turned into (or created in) the low type
        self.changes = PrecisionChanges(dtype)

    def lower(self, node: Node) -> None:
        """Rewrite ``node`` to compute in the low type."""
        fixed = _FIXED_INPUTS.get(node.op_type, ())
        for i, v in enumerate(node.inputs):
            if v is None or i in fixed or _dtype(v) not in (DType.FLOAT, self.dtype):
                if v is not None and v.const is not None:
                    self.fp32_readers.add(id(v))
                continue
            node.inputs[i] = self._as(v, self.dtype)
        for o in node.outputs:
            if _dtype(o) == DType.FLOAT:
                o.type = TensorType(self.dtype, o.type.shape)
                self.lowered.add(id(o))
        self.order.append(node)

    def reads_low(self, node: Node) -> bool:
        """True when a float input of ``node`` is already low or a constant (converted once)."""
        return any(
            v is not None and (id(v) in self.lowered or (v.const is not None and _dtype(v) == DType.FLOAT))
            for v in node.inputs
        )

    def keep(self, node: Node) -> None:
        """Leave ``node`` in float32; its inputs that turned low are cast back."""
        agnostic = node.op_type in _TYPE_AGNOSTIC
        for i, v in enumerate(node.inputs):
            if v is None:
                continue
            if not agnostic and id(v) in self.lowered:
                node.inputs[i] = self._as(v, DType.FLOAT)
            elif v.const is not None:
                self.fp32_readers.add(id(v))
        self.order.append(node)

    def _as(self, v: Value, to: DType) -> Value:
        """``v`` as type ``to``: itself, a converted initializer, or the output of one Cast."""
        if _dtype(v) == to:
            return v
        key = (id(v), to)
        if key in self.casts:
            return self.casts[key]
        if v.const is not None and not _is_graph_input(self.graph, v):
            new = Value(self.names.fresh(f"{v.name}_{_suffix(to)}"), TensorType(to, v.type.shape), const=v.const.astype(to.numpy))
            self.new_inits.append(new)
            self.converted_inits.add(id(new))
            self.changes.weights_converted += 1
            if to == self.dtype:
                self.lowered.add(id(new))
        else:
            out = Value(self.names.fresh(f"{v.name}_{_suffix(to)}"), TensorType(to, v.type.shape if v.type else None))
            cast = Node("Cast", [v], [out], {"to": Attribute(AttrKind.INT, int(to))}, name=self.names.fresh(f"cast_{_suffix(to)}"))
            self.order.append(cast)
            self.changes.casts += 1
            if to == self.dtype:
                self.lowered.add(id(out))
            new = out
        self.casts[key] = new
        return new

    def finish_outputs(self, keep_io: bool) -> None:
        """Graph outputs that turned low get a Cast back to float32 under their own name."""
        if not keep_io:
            return
        for i, v in enumerate(self.graph.outputs):
            if _dtype(v) != self.dtype or id(v) not in self.lowered:
                continue
            public = v.name
            v.name = self.names.fresh(f"{public}_{_suffix(self.dtype)}")
            out = Value(public, TensorType(DType.FLOAT, v.type.shape))
            cast = Node("Cast", [v], [out], {"to": Attribute(AttrKind.INT, int(DType.FLOAT))}, name=self.names.fresh(f"cast_{public}"))
            self.order.append(cast)
            self.casts[(id(v), DType.FLOAT)] = out
            self.changes.casts += 1
            self.graph.outputs[i] = out

    def lower_inputs(self) -> None:
        """Without keep_io_types: float32 graph inputs read only through one Cast take the low type."""
        for v in self.graph.inputs:
            cast = self.casts.get((id(v), self.dtype))
            if cast is None or _dtype(v) != DType.FLOAT or v.const is not None:
                continue
            readers = [n for n in self.order if any(x is v for x in n.inputs)]
            if len(readers) != 1 or readers[0].outputs[0] is not cast:
                continue  # float32 nodes read it too: keep float32 and the Cast
            v.type = TensorType(self.dtype, v.type.shape)
            self.order = [n for n in self.order if n is not readers[0]]
            for n in self.order:
                n.inputs = [v if x is cast else x for x in n.inputs]
            self.graph.outputs = [v if x is cast else x for x in self.graph.outputs]
            self.changes.casts -= 1

    def unused_fp32(self) -> set[int]:
        """ids of float32 initializers that only low nodes read (their copies replace them)."""
        converted = {k[0] for k, v in self.casts.items() if id(v) in self.converted_inits}
        return converted - self.fp32_readers - {id(v) for v in self.graph.outputs}


def _touches_fp32(node: Node) -> bool:
    return any(_dtype(v) == DType.FLOAT for v in _float_io(node))


def _float_io(node: Node) -> list[Value]:
    return [v for v in (*node.inputs, *node.outputs) if v is not None]


def _dtype(v: Value | None) -> DType | None:
    t = None if v is None else v.type
    return t.dtype if isinstance(t, TensorType) else None


def _is_graph_input(graph: Graph, v: Value) -> bool:
    return any(v is i for i in graph.inputs)


def _suffix(dtype: DType) -> str:
    return {DType.FLOAT16: "fp16", DType.BFLOAT16: "bf16", DType.FLOAT: "fp32"}.get(dtype, dtype.name.lower())


def _accumulation(node: Node) -> int | None:
    """Terms summed per output element of a product (None when unknown or not a product)."""
    if node.op_type in ("MatMul", "Gemm") and node.inputs[0] is not None:
        t = node.inputs[0].type
        if not isinstance(t, TensorType) or not t.shape:
            return None
        k = t.shape[0] if node.op_type == "Gemm" and node.attr("transA", 0) else t.shape[-1]
        return k if isinstance(k, int) else None
    if node.op_type in ("Conv", "ConvTranspose") and len(node.inputs) > 1 and node.inputs[1] is not None:
        w = node.inputs[1].type
        if isinstance(w, TensorType) and w.shape and all(isinstance(d, int) for d in w.shape):
            group = int(node.attr("group", 1) or 1)
            cin = w.shape[0] // group if node.op_type == "ConvTranspose" else w.shape[1]
            return int(cin * np.prod(w.shape[2:], dtype=np.int64))
    return None


@register_pass("convert_fp16")
def convert_fp16(graph: Graph) -> bool:
    """Compute in float16 where safe (sensitive ops stay float32; float32 graph inputs/outputs)."""
    return _run(graph, DType.FLOAT16)


@register_pass("convert_bf16")
def convert_bf16(graph: Graph) -> bool:
    """Compute in bfloat16 where safe (sensitive ops stay float32; float32 graph inputs/outputs)."""
    return _run(graph, DType.BFLOAT16)


def _run(graph: Graph, dtype: DType) -> bool:
    changes = convert_float_precision(graph, dtype)
    note(f"{len(changes.converted)} nodes in {dtype.name.lower()}, {len(changes.kept)} kept float32, "
         f"{changes.weights_converted} weights converted, {changes.casts} casts")
    for name, why in sorted(changes.kept.items()):
        note(f"float32 {name}: {why}")
    return changes.changed
