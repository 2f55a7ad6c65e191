"""Code generation state: the artifact-wide ``Module`` and the per-node ``NodeCtx``.

``Module`` owns everything shared across the generated package: the namespace, the
weights, planned buffers, numba kernels, reference-kernel objects and the line labels
that map generated code back to graph nodes. ``NodeCtx`` is what an emitter sees: its
node, resolved attributes, expressions for the inputs, identifiers for the outputs,
compile-time input values, planned output buffers, and methods to write code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from torsh_gen.backends.python.literals import literal
from torsh_gen.backends.python.names import Namespace
from torsh_gen.backends.python.weights import WeightStore
from torsh_gen.ir.graph import Graph, Node, Value
from torsh_gen.ir.types import DType, TensorType, Type
from torsh_gen.ops.registry import Attrs, OpSpec
from torsh_gen.passes.memplan import MemoryPlan

#: numpy expressions for element types the generated code names directly.
NP_DTYPES: dict[DType, str] = {
    DType.FLOAT: "np.float32",
    DType.DOUBLE: "np.float64",
    DType.FLOAT16: "np.float16",
    DType.INT8: "np.int8",
    DType.INT16: "np.int16",
    DType.INT32: "np.int32",
    DType.INT64: "np.int64",
    DType.UINT8: "np.uint8",
    DType.UINT16: "np.uint16",
    DType.UINT32: "np.uint32",
    DType.UINT64: "np.uint64",
    DType.BOOL: "np.bool_",
    DType.COMPLEX64: "np.complex64",
    DType.COMPLEX128: "np.complex128",
}


def np_dtype(dtype: DType) -> str:
    """The numpy expression for ``dtype`` in generated code (ml_dtypes via the runtime)."""
    expr = NP_DTYPES.get(dtype)
    if expr is not None:
        return expr
    if dtype == DType.STRING:
        return "np.object_"
    return f"_rt.dtype({dtype.numpy.name!r})"


@dataclass
class Buffer:
    """A planned output buffer: a view of arena ``slot`` (from byte ``offset``: a block of a
    Concat's arena) with a static dtype and shape."""

    attr: str
    slot: int
    dtype: str
    shape: tuple[int, ...]
    offset: int = 0


@dataclass
class RefKernel:
    """A reference-kernel object the Model builds at init (vendored op spec + attributes)."""

    attr: str
    op_type: str
    domain: str
    opset: int
    ctx_opset: int
    attrs_src: str
    n_outputs: int
    graph_attrs: list[str]


@dataclass
class Module:
    """Artifact-wide generation state."""

    opsets: dict[str, int]
    plan: MemoryPlan | None
    known: dict[int, np.ndarray]
    names: Namespace = field(default_factory=Namespace)
    weights: WeightStore | None = None
    expr: dict[int, str] = field(default_factory=dict)
    buffers: list[Buffer] = field(default_factory=list)
    #: value id -> attribute of its planned buffer (Concat finds its blocks' buffers here)
    buffer_of: dict[int, str] = field(default_factory=dict)
    kernels: dict[str, str] = field(default_factory=dict)  # source body → kernel name
    kernel_sources: list[str] = field(default_factory=list)
    ref_kernels: list[RefKernel] = field(default_factory=list)
    ref_modules: set[str] = field(default_factory=set)
    plugin_kernels: dict[str, str] = field(default_factory=dict)  # "module:function" → alias
    labels: list[str] = field(default_factory=list)
    uses_ml_dtypes: bool = False
    fast_nodes: int = 0
    ref_nodes: int = 0
    #: some node's code may raise numpy floating-point warnings (numpy arithmetic, casts,
    #: reference kernels): the forward then runs under ``np.errstate`` (1 us a call)
    may_warn: bool = False

    def __post_init__(self) -> None:
        if self.weights is None:
            self.weights = WeightStore(self.names)

    def weight(self, array: np.ndarray, hint: str) -> str:
        """An expression for constant ``array`` (stored in the weights file)."""
        if np.asarray(array).dtype.kind == "V":  # bfloat16, float8, int4: ml_dtypes types
            self.uses_ml_dtypes = True
        return f"self.{self.weights.add(array, hint)}"

    def value_expr(self, v: Value) -> str:
        """The expression reading ``v`` (constants become weights on first use)."""
        e = self.expr.get(id(v))
        if e is None:
            if v.const is None:
                raise KeyError(v.name)
            e = self.weight(v.const, v.name)
            self.expr[id(v)] = e
        return e

    def add_kernel(self, body: str, hint: str) -> str:
        """The name of a numba kernel with source ``body`` (identical bodies are shared).

        ``body`` is the kernel's source with ``{name}`` where the function name goes.
        """
        name = self.kernels.get(body)
        if name is None:
            name = self.names.name(hint, prefix="k")
            self.kernels[body] = name
            self.kernel_sources.append(body.replace("{name}", name))
        return f"_k.{name}"

    def label(self, node: Node) -> int:
        """Number a node for the generated line → node map; returns its index."""
        self.labels.append(f"{node.qualified_op} node {node.name!r}" if node.name else f"{node.qualified_op} node")
        return len(self.labels) - 1


class Lines:
    """Indented source lines of one function body."""

    def __init__(self, indent: int) -> None:
        self.indent = indent
        self.lines: list[str] = []

    def add(self, text: str, extra: int = 0) -> None:
        """Append ``text`` (may hold several lines) at the current indentation + ``extra``."""
        pad = "    " * (self.indent + extra)
        for ln in text.splitlines():
            self.lines.append(pad + ln if ln else "")


@dataclass
class NodeCtx:
    """What an emitter sees for one node."""

    module: Module
    node: Node
    spec: OpSpec
    attrs: Attrs
    opset: int
    ins: list[str | None]
    outs: list[str]
    out_bufs: list[str | None]
    lines: Lines
    pre: Lines  # nested function definitions, written before the node's own lines
    emit_subgraph: Any  # (graph, hint, params, lines) -> function name
    emit_inline: Any  # (graph, input expressions, lines) -> output expressions
    #: set by an emitter whose code only calls numba kernels (no numpy arithmetic): it
    #: raises no floating-point warnings
    silent: bool = False

    # ------------------------------------------------------------------ inputs
    def x(self, i: int) -> str | None:
        """Expression of input ``i`` (None when absent)."""
        return self.ins[i] if i < len(self.ins) else None

    def n_in(self) -> int:
        """Number of inputs given, trailing absent ones excluded."""
        n = len(self.ins)
        while n and self.ins[n - 1] is None:
            n -= 1
        return n

    def in_type(self, i: int) -> Type | None:
        """The type of input ``i``."""
        v = self.node.inputs[i] if i < len(self.node.inputs) else None
        return None if v is None else v.type

    def in_tensor(self, i: int) -> TensorType | None:
        """The tensor type of input ``i`` when it is a tensor with a known element type."""
        t = self.in_type(i)
        return t if isinstance(t, TensorType) and t.dtype != DType.UNDEFINED else None

    def const(self, i: int) -> np.ndarray | None:
        """The compile-time value of input ``i`` (a non-overridable constant), else None."""
        v = self.node.inputs[i] if i < len(self.node.inputs) else None
        if v is None:
            return None
        val = self.module.known.get(id(v))
        return None if val is None else np.asarray(val)

    def const_ints(self, i: int) -> list[int] | None:
        """Input ``i`` as a list of Python ints when known at compile time."""
        c = self.const(i)
        if c is None or c.dtype.kind not in "iub":
            return None
        return [int(d) for d in c.reshape(-1)]

    # ------------------------------------------------------------------ outputs
    def y(self, i: int = 0) -> str:
        """The identifier output ``i`` is assigned to."""
        return self.outs[i]

    def out_type(self, i: int = 0) -> TensorType | None:
        """The tensor type of output ``i`` when known."""
        t = self.node.outputs[i].type if i < len(self.node.outputs) else None
        return t if isinstance(t, TensorType) and t.dtype != DType.UNDEFINED else None

    def buf(self, i: int = 0) -> str | None:
        """A preallocated buffer expression for output ``i`` (static shape), or None."""
        return self.out_bufs[i] if i < len(self.out_bufs) else None

    def arr(self, expr: str, i: int = 0) -> str:
        """``expr`` made an array when output ``i`` may be 0-d (numpy returns 0-d results
        as scalars, which later ``out=`` updates cannot write into)."""
        t = self.out_type(i)
        return expr if t is not None and t.shape else f"np.asarray({expr})"

    def out_kw(self, i: int = 0) -> str:
        """``, out=BUF`` when output ``i`` has a planned buffer, else an empty string."""
        b = self.buf(i)
        return f", out={b}" if b else ""

    # ------------------------------------------------------------------ writing
    def emit(self, code: str, extra: int = 0) -> None:
        """Write ``code`` (one or more lines) into the node's block."""
        self.lines.add(code, extra)

    def lit(self, value: Any) -> str:
        """A source literal for plain data."""
        return literal(value)

    def weight(self, array: np.ndarray, hint: str = "const") -> str:
        """An expression for a constant array computed at compile time."""
        return self.module.weight(array, hint)

    def tmp(self, hint: str) -> str:
        """A fresh identifier for a temporary."""
        return self.module.names.name(hint)

    def dtype(self, dtype: DType) -> str:
        """The numpy dtype expression for ``dtype``."""
        if dtype not in NP_DTYPES and dtype != DType.STRING:
            self.module.uses_ml_dtypes = True
        return np_dtype(dtype)

    def kernel(self, body: str, hint: str) -> str:
        """Register a numba kernel (``{name}`` placeholder in ``body``); returns its expression."""
        return self.module.add_kernel(body, hint)

    def inline(self, graph: Graph, args: list[str]) -> list[str]:
        """Emit ``graph``'s nodes here with inputs bound to ``args``; its output expressions."""
        return self.emit_inline(graph, args, self.lines)

    def subgraph(self, graph: Graph, hint: str, params: list[str] | None = None) -> str:
        """Emit ``graph`` as a nested function before this node; returns its name."""
        return self.emit_subgraph(graph, hint, params, self.pre)
