"""Our graph IR → a TVM Relax module, built with ``relax.BlockBuilder`` and ``relax.op``.

This is our own converter, not TVM's ONNX frontend: it starts from the graph our frontends
and passes produced (types inferred, constants folded), so it sees every value's dtype and
shape and every constant operand. One converter per op, registered with ``@converts``;
the modules ``ops_*.py`` beside this one hold them, one op family each.

A converter gets a ``Ctx`` and the node and returns one Relax expression per node output
(``None`` for an output nobody reads). Where Relax lacks an op, the converter composes it
from ``relax.op`` or writes it in TE (``ctx.bb.emit_te``). A converter that cannot take a
particular node (an attribute value, a run-time operand it needs constant, a dtype) raises
``Decline`` with the reason; ``to_relax`` collects every declined node before failing, so
the error lists them all.

Weights become parameters of ``main`` after its inputs (attribute ``num_input``), so the
library holds code only and the weights travel in their own file; constants small enough
to be shape arithmetic or indices are inlined. Symbolic dims of the inputs become
``tirx.Var``s, shared by name.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from torsh_gen.backends.tvm.narrow import STORAGE, is_narrow
from torsh_gen.errors import UnsupportedOpError
from torsh_gen.ir.graph import Graph, Node, Value
from torsh_gen.ir.types import DType, TensorType

#: Constants with more elements than this become parameters of ``main`` (the weights file);
#: smaller ones are inlined into the module.
PARAM_MIN_ELEMENTS = 64

#: Our element types → TVM dtype strings. The narrow ones (float8, float4, 4- and 2-bit
#: integers) are held as uint8 (``narrow.py``); others (strings, complex) decline.
DTYPES: dict[DType, str] = {
    DType.FLOAT: "float32",
    DType.DOUBLE: "float64",
    DType.FLOAT16: "float16",
    DType.BFLOAT16: "bfloat16",
    DType.INT8: "int8",
    DType.INT16: "int16",
    DType.INT32: "int32",
    DType.INT64: "int64",
    DType.UINT8: "uint8",
    DType.UINT16: "uint16",
    DType.UINT32: "uint32",
    DType.UINT64: "uint64",
    DType.BOOL: "bool",
}

Converter = Callable[["Ctx", Node], Sequence[Any]]
CONVERTERS: dict[str, Converter] = {}
#: Per op, an optional test of whether its converter takes a node, asked before conversion:
#: a node it does not take counts as having no converter, so an op ONNX defines as a
#: function is expanded into its body instead of being refused.
ACCEPTS: dict[str, Callable[[Node], bool]] = {}


class Decline(Exception):
    """This converter cannot take this node; the message says why."""


def converts(*op_types: str, accepts: Callable[[Node], bool] | None = None) -> Callable[[Converter], Converter]:
    """Register the decorated function as the converter of ``op_types`` (standard ONNX
    domain, or our ``ai.torsh`` one: op names do not collide). ``accepts`` tells, from the
    node alone, whether the converter takes it (see ``ACCEPTS``)."""

    def register(fn: Converter) -> Converter:
        for op in op_types:
            if op in CONVERTERS:
                raise ValueError(f"two TVM converters for {op}")
            CONVERTERS[op] = fn
            if accepts is not None:
                ACCEPTS[op] = accepts
        return fn

    return register


def _load_converters() -> None:
    """Import every ``ops_*`` module of this package (each registers its converters)."""
    import importlib
    import pkgutil

    import torsh_gen.backends.tvm as package

    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        if info.name.startswith("ops_"):
            importlib.import_module(f"{package.__name__}.{info.name}")


def has_converter(node: Node) -> bool:
    """Whether a converter is registered for ``node``'s op and accepts it (it may still
    decline during conversion, for reasons only the Relax operands show)."""
    if not CONVERTERS:
        _load_converters()
    accepts = ACCEPTS.get(node.op_type)
    return node.op_type in CONVERTERS and (accepts is None or accepts(node))


def as_str(value: Any) -> str:
    """A string attribute value as ``str`` (the IR may hold bytes)."""
    return value.decode() if isinstance(value, bytes) else str(value)


def str_attr(node: Node, name: str, default: str) -> str:
    """String attribute ``name`` of ``node`` as ``str``, ``default`` when absent."""
    return as_str(node.attr(name, default))


def tvm_dtype(dtype: DType) -> str:
    """The TVM dtype of our element type: the narrow types (float8, float4, 4- and 2-bit
    integers) are held as their bytes (``narrow.STORAGE``); Decline for types TVM cannot
    hold (strings, complex)."""
    if is_narrow(dtype):
        return STORAGE
    try:
        return DTYPES[dtype]
    except KeyError:
        raise Decline(f"element type {dtype.name} is not supported by the TVM backend") from None


@dataclass
class Ctx:
    """What a converter works with: the block builder, the expression of every value
    converted so far, and helpers to read types, shapes and constant operands."""

    bb: Any
    graph: Graph
    opset: int
    env: dict[int, Any] = field(default_factory=dict)
    symbols: dict[str, Any] = field(default_factory=dict)
    params: list[tuple[Any, np.ndarray]] = field(default_factory=list)
    #: MatchCasts that bind symbolic dims in the current dataflow block (``fence`` keeps
    #: them: nothing reads their results, and a block drops unread bindings)
    binders: list[Any] = field(default_factory=list)

    # -- operands ---------------------------------------------------------------------
    def x(self, value: Value | None) -> Any:
        """The Relax expression of ``value`` (a constant is inlined or made a parameter)."""
        if value is None:
            raise Decline("a required input is missing")
        got = self.env.get(id(value))
        if got is not None:
            return got
        if value.const is not None:
            return self._constant(value)
        raise Decline(f"value '{value.name}' is not available")

    def has(self, node: Node, index: int) -> bool:
        """Whether optional input ``index`` of ``node`` is given."""
        return index < len(node.inputs) and node.inputs[index] is not None

    def const(self, value: Value | None) -> np.ndarray | None:
        """The constant array of ``value``, or None when it is computed at run time."""
        return None if value is None else value.const

    def need_const(self, value: Value | None, what: str) -> np.ndarray:
        """The constant array of ``value``; Decline naming ``what`` when it is not constant."""
        arr = self.const(value)
        if arr is None:
            raise Decline(f"{what} must be a constant for the TVM backend (it is computed at run time)")
        return arr

    def ints(self, value: Value | None, what: str) -> list[int]:
        """A constant integer operand as a list of Python ints."""
        return [int(v) for v in np.asarray(self.need_const(value, what)).reshape(-1)]

    def dtype(self, value: Value) -> str:
        """``value``'s TVM dtype string, for converters that compute on its values: Decline
        for the narrow types, whose bytes are not their values (Cast, QuantizeLinear and
        DequantizeLinear decode them with ``narrow``; data movement never asks)."""
        dtype = self.tensor_type(value).dtype
        if is_narrow(dtype):
            raise Decline(
                f"element type {dtype.name} is supported by the TVM backend only in Cast, "
                "CastLike, QuantizeLinear, DequantizeLinear and ops that move it unread"
            )
        return tvm_dtype(dtype)

    def tensor_type(self, value: Value) -> TensorType:
        t = value.type
        if not isinstance(t, TensorType):
            raise Decline(f"value '{value.name}' is not a tensor ({t})")
        return t

    def rank(self, value: Value) -> int:
        """``value``'s rank (from inferred types, or from its Relax struct info)."""
        t = value.type
        if isinstance(t, TensorType) and t.shape is not None:
            return len(t.shape)
        return len(self.shape(value))

    def shape(self, value: Value) -> list[Any]:
        """``value``'s shape as Relax sees it: ints where static, PrimExprs otherwise."""
        return self.shape_of(self.x(value))

    @staticmethod
    def shape_of(expr: Any) -> list[Any]:
        from tvm.ir.prim.expr import IntImm

        info = expr.ty
        shape = getattr(info, "shape", None)
        if shape is None or not hasattr(shape, "values"):
            raise Decline("an operand's shape is unknown")
        return [int(d.value) if isinstance(d, IntImm) else d for d in shape.values]

    def static_shape(self, value: Value, what: str = "the operand") -> list[int]:
        dims = self.shape(value)
        if not all(isinstance(d, int) for d in dims):
            raise Decline(f"{what} needs a static shape for the TVM backend")
        return dims

    def emit(self, expr: Any) -> Any:
        """Bind ``expr`` in the current dataflow block and return its variable."""
        return self.bb.emit(expr)

    def emit_te(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return self.bb.emit_te(fn, *args, **kwargs)

    def axis(self, axis: int, rank: int) -> int:
        """An ONNX axis (negative counts from the end) normalized against ``rank``."""
        if not -rank <= axis < max(rank, 1):
            raise Decline(f"axis {axis} is out of range for rank {rank}")
        return axis + rank if axis < 0 else axis

    # -- constants ----------------------------------------------------------------------
    def constant(self, array: np.ndarray, dtype: str | None = None) -> Any:
        """An inline Relax constant of ``array`` (converted to ``dtype`` when given)."""
        from tvm import relax

        arr = np.asarray(array)
        if dtype is not None and arr.dtype != np.dtype(numpy_dtype(dtype)):
            arr = arr.astype(numpy_dtype(dtype))
        return relax.const(arr, dtype or _tvm_of_numpy(arr.dtype))

    def weight(self, array: np.ndarray) -> Any:
        """``array`` as an operand: inlined when small, else a new parameter of ``main``
        (the weights file). Converters use it for weights they rearrange at compile time."""
        from tvm import relax

        arr = np.asarray(array, order="C")  # (ascontiguousarray would make a 0-d array 1-d)
        dtype = _tvm_of_numpy(arr.dtype)
        if arr.size == 0:  # TVM cannot serialize an empty constant into the library
            return relax.op.zeros(arr.shape, dtype)
        if arr.size <= PARAM_MIN_ELEMENTS:
            return relax.const(arr, dtype)
        var = relax.Var(f"w{len(self.params)}", relax.TensorType(list(arr.shape), dtype))
        self.params.append((var, arr))
        return var

    def fence(self) -> None:
        """End the current dataflow block and begin a new one, the values converted so far
        passed on as the block's outputs.

        FuseOps orders the kernels of a block by their tensor operands only. A kernel that
        makes a tensor of a freshly bound symbolic size out of operands known earlier
        (Range's values after the MatchCast that binds their count) was fused with earlier
        work and moved above the MatchCast, and the VM then met its size before the dim
        had a value ("4 * n0 has not been computed"). Kernels do not move across blocks."""
        from tvm import relax
        from tvm.ir.expr import Constant
        from tvm.relax.block_builder import DataflowScope

        for key, expr in list(self.env.items()):
            if isinstance(expr, Constant) or (isinstance(expr, relax.Var) and not isinstance(expr, relax.DataflowVar)):
                continue
            self.env[key] = self.bb.emit_output(expr)
        for binder in self.binders:
            self.bb.emit_output(binder)
        self.binders.clear()
        scope = DataflowScope(self.bb)  # what ``with bb.dataflow()`` does at its end, then start
        scope.__exit__(None, None, None)
        scope.__enter__()

    # -- run-time checks ------------------------------------------------------------
    def check(self, cond: Any, message: str, args: Sequence[Any] = ()) -> None:
        """Make the model fail at run time with ``message`` (one line; each ``{}`` shows
        the matching Relax value of ``args``) where the boolean scalar ``cond`` is false.

        For converters that build statically from the model's declared output shape
        something a run-time operand decides (TopK's k, reduction axes, a window's size):
        the declaration comes from an untrusted file, so a model that lies stops with a
        message instead of computing silently with the declared value. ``message`` must be
        our own text, never a string taken from the model."""
        from tvm import relax

        self.emit(relax.op.assert_op(cond, list(args), message))

    def check_one_int(self, value: Value, expected: int, message: str) -> None:
        """``check`` that the one-element integer operand ``value`` equals ``expected``;
        ``message``'s ``{}`` shows the run-time value."""
        self.check_ints(value, [expected], message)

    def check_ints(self, value: Value, expected: list[int], message: str) -> None:
        """``check`` that the integer operand ``value`` (any shape, read flat) holds exactly
        ``expected``; ``message``'s ``{}`` shows the run-time values."""
        from tvm import relax

        v = self.emit(relax.op.reshape(self.emit(relax.op.astype(self.x(value), "int64")), [-1]))
        if self.shape_of(v) != [len(expected)]:
            raise Decline(f"'{value.name}' must hold {len(expected)} element(s)")
        differ = self.emit(relax.op.not_equal(v, relax.const(np.array(expected, np.int64))))
        count = self.emit(relax.op.sum(self.emit(relax.op.astype(differ, "int64"))))
        self.check(self.emit(relax.op.equal(count, relax.const(np.int64(0)))), message, [v])

    def scalar(self, value: float | int | bool, dtype: str) -> Any:
        """A 0-d Relax constant of ``dtype``."""
        return self.constant(np.array(value), dtype)

    def _constant(self, value: Value) -> Any:
        expr = self.weight(np.asarray(value.const))
        self.env[id(value)] = expr
        return expr


def numpy_dtype(dtype: str) -> Any:
    """The numpy dtype holding TVM dtype ``dtype`` (bfloat16 through ml_dtypes)."""
    if dtype == "bfloat16":
        import ml_dtypes

        return ml_dtypes.bfloat16
    return np.dtype(dtype)


def _tvm_of_numpy(dtype: np.dtype) -> str:
    if dtype == np.bool_:
        return "bool"
    name = np.dtype(dtype).name
    if name not in {v for v in DTYPES.values()}:
        raise Decline(f"constants of dtype {name} are not supported by the TVM backend")
    return name


@dataclass
class RelaxModule:
    """The converted model: the IRModule, its weights in parameter order, and the graph's
    input and output values in order."""

    mod: Any
    params: list[np.ndarray]
    inputs: list[Value]
    outputs: list[Value]


def to_relax(graph: Graph) -> RelaxModule:
    """Convert ``graph`` (types inferred) into a Relax module with one function ``main``.

    Raises UnsupportedOpError listing every node that has no converter or whose converter
    declined, with the node's name, op and reason.
    """
    from tvm import relax

    if not CONVERTERS:
        _load_converters()
    opset = graph.info.opset("") if graph.info else graph.opset
    bb = relax.BlockBuilder()
    ctx = Ctx(bb, graph, opset)
    inputs = [v for v in graph.inputs if v.const is None]
    missing: list[str] = []
    args = []
    for v in inputs:
        try:
            args.append(relax.Var(_var_name(v.name, len(args)), _tensor_type(ctx, v)))
        except Decline as e:
            missing.append(f"graph input '{v.name}': {e}")
    if missing:
        raise UnsupportedOpError(_listing(missing))
    for v, a in zip(inputs, args):
        ctx.env[id(v)] = a
    with bb.function("main", attrs={"num_input": len(args)}, pure=True):
        with bb.dataflow():
            for node in graph.nodes:
                _convert_node(ctx, node, missing)
            # On failure the function is still closed properly (TVM warns about open
            # blocks otherwise); the error is raised once the builder is done.
            outs = [bb.emit_output(ctx.x(v)) for v in graph.outputs] if not missing else [bb.emit_output(relax.const(0))]
        bb.emit_func_output(relax.Tuple(outs), params=args + [p for p, _ in ctx.params])
    if missing:
        raise UnsupportedOpError(_listing(missing))
    mod = bb.get()
    return RelaxModule(mod, [a for _, a in ctx.params], inputs, list(graph.outputs))


#: Ops whose ``accepts`` only says whether the passes should try to remove them first
#: (control flow the pass unrolls when trip counts and conditions are known at compile
#: time): a node of these still there at conversion is one the passes left, so its
#: converter takes it. ``ops_control`` registers them.
SECOND_CHANCE: set[str] = set()


#: Ops that may take or make the narrow types (held as their bytes, ``narrow.py``): those
#: that decode and encode them, and those that only move, select or describe elements, so
#: the bytes stand for the values. Zero-filling ops (Pad, ConstantOfShape, Trilu, OneHot)
#: are not here: byte 0 is not zero in every narrow type (float8e8m0's 0x00 is 2^-127).
#: Any other op on a narrow tensor would compute on bytes, so it is refused instead.
NARROW_OPS = frozenset(
    {
        "Cast", "CastLike", "QuantizeLinear", "DequantizeLinear",
        "Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Concat",
        "Split", "Slice", "Gather", "GatherElements", "GatherND", "Expand", "Tile", "Shape",
        "Size", "DepthToSpace", "SpaceToDepth", "Compress", "ReverseSequence", "Where",
        "ScatterND", "ScatterElements", "Scatter", "Constant", "Dropout", "If", "Loop", "Scan",
    }
)  # fmt: skip


def _narrow_operand(node: Node) -> Value | None:
    """The first input or output of ``node`` of a narrow element type, if any."""
    for v in [*node.inputs, *node.outputs]:
        t = v.type if v is not None else None
        if isinstance(t, TensorType) and is_narrow(t.dtype):
            return v
    return None


def _convert_node(ctx: Ctx, node: Node, missing: list[str]) -> None:
    """Convert ``node`` into ``ctx`` (binding its outputs in ``ctx.env``), or append to
    ``missing`` why it cannot be; once something is missing, only list the rest."""
    fn = CONVERTERS.get(node.op_type)
    label = f"'{node.name or '<unnamed>'}' ({node.op_type})"
    if fn is None:
        missing.append(f"{label}: no TVM converter for {node.op_type}")
        return
    narrow = _narrow_operand(node) if node.op_type not in NARROW_OPS else None
    if narrow is not None:
        missing.append(
            f"{label}: '{narrow.name}' has element type {narrow.type.dtype.name}, which the TVM "
            "backend holds as bytes: only Cast, CastLike, QuantizeLinear, DequantizeLinear and "
            "ops that move elements take it; cast it to float first"
        )
        return
    accepts = ACCEPTS.get(node.op_type)
    if accepts is not None and not accepts(node) and node.op_type not in SECOND_CHANCE:
        missing.append(f"{label}: the TVM converter of {node.op_type} does not take this node and it has no function body")
        return
    if missing:  # keep listing ops without converters, but stop building
        return
    try:
        results = list(fn(ctx, node))
    except Decline as e:
        missing.append(f"{label}: {e}")
        return
    except Exception as e:  # TVM's own checks (struct info, attributes) explain themselves
        missing.append(f"{label}: TVM rejected it: {_first_line(e)}")
        return
    for value, expr in zip(node.outputs, results):
        if expr is not None:
            ctx.env[id(value)] = expr


def _tensor_type(ctx: Ctx, value: Value) -> Any:
    from tvm import relax, tirx

    t = ctx.tensor_type(value)
    if t.shape is None:
        raise Decline("its rank is unknown; give --input-shape")
    dims: list[Any] = []
    for k, d in enumerate(t.shape):
        if isinstance(d, int):
            dims.append(d)
            continue
        name = str(d) if d else f"{value.name}_dim{k}"
        if name not in ctx.symbols:
            ctx.symbols[name] = tirx.Var(_var_name(name, len(ctx.symbols)), "int64")
        dims.append(ctx.symbols[name])
    return relax.TensorType(dims, tvm_dtype(t.dtype))


def _var_name(name: str, k: int) -> str:
    """A Relax-safe variable name: the model's name is never parsed, but printed IR and
    symbol tables read better with identifiers."""
    import re

    clean = re.sub(r"[^A-Za-z0-9_]", "_", name)[:48]
    return clean if clean and not clean[0].isdigit() else f"v{k}_{clean}"


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    for line in reversed(text):  # TVM puts the message last, after its traceback
        if line.strip():
            return line.strip()[:300]
    return type(e).__name__


def _listing(missing: list[str]) -> str:
    shown = "; ".join(missing[:50]) + (f"; and {len(missing) - 50} more" if len(missing) > 50 else "")
    return f"{len(missing)} node(s) cannot be built by the TVM backend: {shown}"
