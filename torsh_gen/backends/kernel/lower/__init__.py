"""Lowering of graph ops to kernel IR: one module per op family, registered by op type.

A lowering is a function ``(ctx: LowerCtx) -> None`` registered with ``@lowers("Relu",
...)``. It writes one kernel (the fused group's single pass over memory) through
``ctx.kb``, a ``KernelBuilder`` whose buffers ``ctx.x(i)`` (input i) and ``ctx.y(j)``
(output j) are already declared, and may ask for more:

- ``ctx.const(i)``: the value of input i when it is a weight (to specialize on it);
- ``ctx.weight(array)``: a new weight derived at compile time (packed, transposed), read
  as a buffer;
- ``ctx.scratch(dtype, n)``: workspace only this kernel uses;
- ``ctx.state(dtype, n)``: memory of this node that keeps its contents from one call of
  the model to the next (a random op's call counter; not initialized at the first call).
- ``ctx.extent(j)``: where an output whose size depends on the data (NonZero, Unique, ...)
  gets its actual dims written (int64[rank], persistent); ``ctx.out_shape(j)`` is then
  the output's upper bound, its buffer's capacity, and the kernel writes the actual
  tensor densely at the buffer's start.

Shapes are static tuples (``ctx.in_shape(i)``, ``ctx.out_shape(j)``). ``ctx.sched``
carries the target's schedule parameters (vector lanes, whether threads exist) so the
loop kinds chosen here follow the target's data (DESIGN rule 4). The lowering modules
register themselves on import; ``lowering_for`` imports them all once.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from torsh_gen.backends.kernel.builder import BufferRef, KernelBuilder
from torsh_gen.backends.kernel.storage import compute_dtype
from torsh_gen.ir.graph import Node
from torsh_gen.ir.types import DType
from torsh_gen.ops.registry import Attrs

#: graph element type → kernel-IR element type.
KERNEL_DTYPES: dict[DType, str] = {
    DType.FLOAT: "f32", DType.DOUBLE: "f64", DType.INT8: "i8", DType.UINT8: "u8",
    DType.INT16: "i16", DType.UINT16: "u16", DType.INT32: "i32", DType.UINT32: "u32",
    DType.INT64: "i64", DType.UINT64: "u64", DType.BOOL: "bool",
    # storage only: computed as f32 (kernel/storage.py)
    DType.FLOAT16: "f16", DType.BFLOAT16: "bf16", DType.FLOAT8E4M3FN: "f8e4m3fn",
    DType.FLOAT8E4M3FNUZ: "f8e4m3fnuz", DType.FLOAT8E5M2: "f8e5m2", DType.FLOAT8E5M2FNUZ: "f8e5m2fnuz",
    DType.FLOAT4E2M1: "f4e2m1", DType.INT4: "i4", DType.UINT4: "u4", DType.INT2: "i2", DType.UINT2: "u2",
    DType.FLOAT8E8M0: "f8e8m0",
}

_FAMILIES = ("elementwise", "linalg", "conv", "pool", "reduce", "norm", "shape", "indexing", "quant", "conv_transpose", "einsum",
             "recurrent", "sampling", "spectral", "training", "matrix", "attention", "ml", "random", "conv_int",
             "datadep")
_LOWERINGS: dict[str, Callable[[LowerCtx], None]] = {}
_LOADED = False


class LoweringDeclined(Exception):
    """The lowering does not cover this instance (an attribute, a dtype); says why."""


@dataclass(frozen=True)
class Schedule:
    """Target data the lowerings schedule with."""

    lanes: int = 8
    threads: bool = True
    parallel_min: int = 32768
    #: Vector registers a tile may hold as accumulators (0: the lowering's default by width).
    accumulators: int = 0
    #: The same for pointwise (1x1) convolutions, whose tiles also hold a long input row
    #: (0: as ``accumulators``).
    pointwise_accumulators: int = 0
    #: Whether convolutions may run with the vector across output channels
    #: (``conv_channels``); None: where vectors have 16 lanes or more; True (a target's
    #: data): where the row tile would leave lanes idle (``conv.CHANNEL_TILES_MIN_WASTE``).
    channel_tiles: bool | None = None
    #: Accumulator registers of a direct convolution's row tile whose kernel-row taps run
    #: as a rolled loop (``conv_operands.tap_runs``); 0: taps unrolled, the budget as above.
    rolled_tap_accumulators: int = 0
    #: Vector registers a direct convolution's row tile spans along an output row (0: two).
    #: 16-register files (AVX2) keep one, so six channels x two rows of accumulators leave
    #: room for the inputs and the weight broadcast.
    row_vectors: int = 0
    #: Vector registers a tile spans along one long row of positions (pointwise GEMMs, 1-d;
    #: 0: ``conv.LONG_ROW_REGISTERS``).
    long_row_registers: int = 0
    #: A GPU schedule (the CUDA target): lowerings give every independent output its own
    #: iteration of nested ``parallel`` loops (no blocks of work per thread, no vectors),
    #: which ``backends/cuda/schedule.py`` collapses into one grid of threads.
    gpu: bool = False


@dataclass
class LowerCtx:
    """What a lowering sees: the node, its attributes, shapes, dtypes and the builder."""

    node: Node
    attrs: Attrs
    opset: int
    in_shapes: list[tuple[int, ...] | None]
    in_dtypes: list[str | None]
    out_shapes: list[tuple[int, ...] | None]
    out_dtypes: list[str | None]
    consts: list[np.ndarray | None]
    sched: Schedule
    kb: KernelBuilder
    inputs: list[BufferRef | None] = field(default_factory=list)
    outputs: list[BufferRef | None] = field(default_factory=list)
    new_weights: list[tuple[str, np.ndarray]] = field(default_factory=list)
    scratches: list[tuple[str, str, int]] = field(default_factory=list)
    states: list[tuple[str, str, int]] = field(default_factory=list)
    #: per output: whether its actual size depends on the data (``out_shape`` is its bound)
    data_dependent: list[bool] = field(default_factory=list)
    extents: list[tuple[str, int]] = field(default_factory=list)
    #: per input: whether its actual size depends on the data (``in_shape`` is its bound;
    #: only the ops of ``program.BOUND_FOLLOWERS`` see such inputs)
    in_data_dependent: list[bool] = field(default_factory=list)
    in_extents: list[tuple[str, int]] = field(default_factory=list)

    def x(self, i: int) -> BufferRef:
        """Input ``i`` (KeyError-like error when the optional input is absent)."""
        ref = self.inputs[i] if i < len(self.inputs) else None
        if ref is None:
            raise LoweringDeclined(f"input {i} is absent")
        return ref

    def has(self, i: int) -> bool:
        """Whether optional input ``i`` is given."""
        return i < len(self.inputs) and self.inputs[i] is not None

    def y(self, j: int = 0) -> BufferRef:
        """Output ``j`` (LoweringDeclined when the optional output is left out)."""
        ref = self.outputs[j] if j < len(self.outputs) else None
        if ref is None:
            raise LoweringDeclined(f"output {j} is left out")
        return ref

    def wants(self, j: int) -> bool:
        """Whether optional output ``j`` is asked for."""
        return j < len(self.outputs) and self.outputs[j] is not None

    def in_shape(self, i: int) -> tuple[int, ...]:
        """The static shape of input ``i``."""
        s = self.in_shapes[i]
        if s is None:
            raise LoweringDeclined(f"input {i} has no static shape")
        return s

    def out_shape(self, j: int = 0) -> tuple[int, ...]:
        """The static shape of output ``j`` (LoweringDeclined when it is left out)."""
        s = self.out_shapes[j] if j < len(self.out_shapes) else None
        if s is None:
            raise LoweringDeclined(f"output {j} is left out")
        return s

    def const(self, i: int) -> np.ndarray | None:
        """The compile-time value of input ``i``, or None."""
        return self.consts[i] if i < len(self.consts) else None

    def weight(self, array: np.ndarray, dtype: str) -> BufferRef:
        """A derived weight (stored in the weights file), read as a kernel buffer."""
        name = self.kb.fresh("w")
        self.new_weights.append((name, np.ascontiguousarray(array)))
        return self.kb.buffer(name, compute_dtype(dtype), int(np.asarray(array).size))

    def scratch(self, dtype: str, n: int) -> BufferRef:
        """Workspace of ``n`` elements private to this kernel."""
        name = self.kb.fresh("s")
        dtype = compute_dtype(dtype)
        self.scratches.append((name, dtype, int(n)))
        return self.kb.buffer(name, dtype, int(n), writable=True)

    def state(self, dtype: str, n: int) -> BufferRef:
        """Memory of ``n`` elements that only this node uses and that persists across calls
        (its own region of the workspace; its first contents are whatever was there)."""
        name = self.kb.fresh("st")
        self.states.append((name, dtype, int(n)))
        return self.kb.buffer(name, dtype, int(n), writable=True)

    def is_data_dependent(self, j: int) -> bool:
        """Whether output ``j``'s actual shape depends on the data (its buffer holds the bound)."""
        return j < len(self.data_dependent) and self.data_dependent[j]

    def extent(self, j: int) -> BufferRef:
        """int64[rank of output ``j``]: where the kernel writes output ``j``'s actual dims.

        The region persists after the call (the C API's ``output_shape`` reads it), and no
        other value reuses it. Declines for an output whose shape is static."""
        if not self.is_data_dependent(j):
            raise LoweringDeclined(f"output {j} has a static shape; it has no extent")
        name = self.kb.fresh("ext")
        self.extents.append((name, j))
        return self.kb.buffer(name, "i64", max(len(self.out_shape(j)), 1), writable=True)

    def input_is_data_dependent(self, i: int) -> bool:
        """Whether input ``i`` is a data-dependent tensor: the first ``in_extent(i)`` dims
        of its buffer (its bound) hold it densely, the rest is not part of it."""
        return i < len(self.in_data_dependent) and self.in_data_dependent[i]

    def in_extent(self, i: int) -> BufferRef:
        """int64[rank of input ``i``]: the actual dims its producer wrote this run."""
        if not self.input_is_data_dependent(i):
            raise LoweringDeclined(f"input {i} has a static shape; it has no extent")
        name = self.kb.fresh("iext")
        self.in_extents.append((name, i))
        return self.kb.buffer(name, "i64", max(len(self.in_shape(i)), 1))

    def vector_width(self, n: int) -> int:
        """Lanes for a vector loop of trip count ``n`` (1 when too short to pay)."""
        return self.sched.lanes if n >= self.sched.lanes else 1

    def inner_kind(self) -> str:
        """The kind of a loop over contiguous elements: a vector loop on CPUs, a thread per
        element (``parallel``) under a GPU schedule."""
        return "parallel" if self.sched.gpu else "vector"

    def outer_kind(self, work: int) -> str:
        """``parallel`` when the target has threads and ``work`` elements make it worth it."""
        return "parallel" if self.sched.threads and work >= self.sched.parallel_min else "serial"


def lowers(*op_types: str) -> Callable:
    """Register a lowering for the given op types."""

    def deco(fn: Callable[[LowerCtx], None]) -> Callable[[LowerCtx], None]:
        for t in op_types:
            _LOWERINGS[t] = fn
        return fn

    return deco


def _load() -> None:
    global _LOADED
    if not _LOADED:
        _LOADED = True
        for fam in _FAMILIES:
            try:
                importlib.import_module(f"torsh_gen.backends.kernel.lower.{fam}")
            except ModuleNotFoundError as exc:
                if exc.name != f"torsh_gen.backends.kernel.lower.{fam}":
                    raise


def lowering_for(op_type: str) -> Callable[[LowerCtx], None] | None:
    """The lowering of ``op_type``, or None."""
    _load()
    return _LOWERINGS.get(op_type)


def supported_ops() -> list[str]:
    """Op types with a lowering."""
    _load()
    return sorted(_LOWERINGS)


def row_major_strides(shape: tuple[int, ...]) -> list[int]:
    """Element strides of a contiguous row-major array."""
    out = [1] * len(shape)
    for d in range(len(shape) - 2, -1, -1):
        out[d] = out[d + 1] * shape[d + 1]
    return out


def broadcast_strides(shape: tuple[int, ...], out_shape: tuple[int, ...]) -> list[int]:
    """Strides to read an input of ``shape`` broadcast (numpy rules) to ``out_shape``."""
    pad = (1,) * (len(out_shape) - len(shape)) + tuple(shape)
    st = row_major_strides(pad)
    return [0 if pad[d] == 1 and out_shape[d] != 1 else st[d] for d in range(len(out_shape))]


def norm_axis(axis: int, rank: int) -> int:
    """``axis`` in ``[0, rank)`` (negative counts from the end); declines when out of range."""
    if not -rank <= axis < max(rank, 1):
        raise LoweringDeclined(f"axis {axis} out of range for rank {rank}")
    return axis + rank if axis < 0 else axis


def prod(shape: tuple[int, ...] | list[int]) -> int:
    """Product of the dims (1 for a scalar)."""
    n = 1
    for d in shape:
        n *= int(d)
    return n
