"""Lower an IR graph to the pieces of a readable ``torch.nn.Module``.

The result (``TorchModule``) is data, not text: submodules with their constructor calls and
weights, free parameters and buffers, and the statements of ``forward``. The template
``templates/train/model.py.j2`` turns it into source. Op lowerings live in the
``lower_*`` modules, one family each, and register themselves in ``LOWERINGS``; this
module holds the context they share (names, constants, layers) and the driver.

Names: every local, layer and parameter name is a safe identifier derived from the
model's own names (``scaffold.common.identifier``); original names appear only inside
``ascii()``-escaped comments. A model with ops that have no lowering is refused with all
of them listed in one message.
"""

from __future__ import annotations

import builtins
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from torsh_gen.errors import InputError, UnsupportedOpError
from torsh_gen.ir.graph import Graph, Node, Value
from torsh_gen.ir.types import DType, TensorType
from torsh_gen.scaffold.common import TensorSpec, identifier, py_string, signature

#: Attribute names of ``torch.nn.Module`` (and names the generated code uses) that a layer
#: or parameter must not shadow.
MODULE_ATTRS = frozenset(
    """T_destination add_module apply bfloat16 buffers call_super_init children compile cpu cuda
    double dump_patches eval extra_repr float forward get_buffer get_extra_state get_parameter
    get_submodule half ipu load_state_dict modules mtia named_buffers named_children
    named_modules named_parameters parameters register_backward_hook register_buffer
    register_forward_hook register_forward_pre_hook register_full_backward_hook
    register_full_backward_pre_hook register_load_state_dict_post_hook
    register_load_state_dict_pre_hook register_module register_parameter
    register_state_dict_post_hook register_state_dict_pre_hook requires_grad_
    set_extra_state set_submodule share_memory state_dict to to_empty train training type
    xpu zero_grad output_logits""".split()
)
#: Names the generated module's code refers to; locals must not shadow them.
CODE_NAMES = frozenset({"self", "torch", "nn", "F", "math", *dir(builtins)})

#: Float constants up to this many elements used by functional code become literals.
LITERAL_LIMIT = 16

TORCH_DTYPES = {
    DType.FLOAT: "torch.float32",
    DType.DOUBLE: "torch.float64",
    DType.FLOAT16: "torch.float16",
    DType.BFLOAT16: "torch.bfloat16",
    DType.INT8: "torch.int8",
    DType.UINT8: "torch.uint8",
    DType.INT16: "torch.int16",
    DType.INT32: "torch.int32",
    DType.INT64: "torch.int64",
    DType.BOOL: "torch.bool",
}


class NotLowerable(Exception):
    """Raised by a lowering when a node's attributes or inputs have no torch equivalent here."""


@dataclass
class Layer:
    """A submodule: ``self.<ident> = <ctor>``, its state-dict tensors and the node it came from."""

    ident: str
    ctor: str
    tensors: dict[str, np.ndarray]
    origin: str  # escaped (ascii literal) node name, for a comment


@dataclass
class Tensor:
    """A free parameter or buffer used by functional code."""

    ident: str
    array: np.ndarray
    trainable: bool
    origin: str  # escaped (ascii literal) initializer name


@dataclass
class Stmt:
    """One line of ``forward`` and the escaped name of the node it implements."""

    code: str
    origin: str


@dataclass
class TorchModule:
    """Everything the model template needs to write the module."""

    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    layers: list[Layer]
    tensors: list[Tensor]
    body: list[Stmt]
    results: list[str]
    head: str | None  # "softmax"/"log_softmax" when the single output ends in one
    head_dim: int
    helpers: list[str]

    def state_dict(self) -> dict[str, np.ndarray]:
        """State-dict key → array, as the generated module names its weights."""
        out: dict[str, np.ndarray] = {}
        for layer in self.layers:
            for key, arr in layer.tensors.items():
                out[f"{layer.ident}.{key}"] = arr
        for t in self.tensors:
            out[t.ident] = t.array
        return out


Lowering = Callable[["Ctx", Node], None]
#: op type (default domain) → lowering; filled by the ``lower_*`` modules.
LOWERINGS: dict[str, Lowering] = {}


#: op type → lowering of its shape-arithmetic form (inputs in ``Ctx.dims``); returns False
#: when the node is not pure shape arithmetic, so the ordinary lowering runs.
SHAPE_LOWERINGS: dict[str, Callable[[Ctx, Node], bool]] = {}


#: Matchers of multi-node blocks (e.g. decomposed attention), run before the node walk: each
#: may absorb nodes (``Ctx.absorbed``) and lower a block at one node (``Ctx.replaced``).
BLOCK_MATCHERS: list[Callable[[Ctx], None]] = []


def lowers(*op_types: str) -> Callable[[Lowering], Lowering]:
    """Register a lowering for one or more ONNX op types."""

    def deco(fn: Lowering) -> Lowering:
        for op in op_types:
            LOWERINGS[op] = fn
        return fn

    return deco


@dataclass
class Ctx:
    """State shared by the lowerings of one graph: names, constants, layers, statements."""

    graph: Graph
    taken: set[str] = field(default_factory=set)
    attr_taken: set[str] = field(default_factory=set)
    names: dict[int, str] = field(default_factory=dict)
    layers: list[Layer] = field(default_factory=list)
    tensors: dict[int, Tensor] = field(default_factory=dict)
    body: list[Stmt] = field(default_factory=list)
    helpers: set[str] = field(default_factory=set)
    absorbed: set[int] = field(default_factory=set)
    replaced: dict[int, Lowering] = field(default_factory=dict)
    consumers: dict[int, list[Node]] = field(default_factory=dict)
    #: Values that are shapes (lists of dim expressions) or single dims (a scalar, is_scalar
    #: True): computed with Python ints from ``x.shape`` instead of tensors.
    dims: dict[int, tuple[list[str], bool]] = field(default_factory=dict)
    node: Node | None = None

    # ------------------------------------------------------------------ values
    def var(self, value: Value | None) -> str:
        """The expression for ``value``: a local, a literal or ``self.<param>``."""
        if value is None:
            raise NotLowerable("an omitted optional input is not supported here")
        if id(value) in self.names:
            return self.names[id(value)]
        if value.const is not None:
            return self.const_expr(value)
        if id(value) in self.dims:  # a shape used as data: make it a tensor once
            elems, scalar = self.dims[id(value)]
            data = elems[0] if scalar else "[" + ", ".join(elems) + "]"
            name = identifier(value.name, self.taken, fallback="v", reserved=CODE_NAMES)
            assert self.node is not None
            origin = py_string(self.node.name or self.node.op_type)
            self.body.append(Stmt(f"{name} = torch.tensor({data}, dtype=torch.int64)", origin))
            self.names[id(value)] = name
            return name
        raise NotLowerable(f"value {py_string(value.name)} is used before it is computed")

    def const(self, value: Value | None) -> np.ndarray | None:
        """The constant array of ``value`` (None when absent or computed at run time)."""
        return None if value is None else value.const

    def ints(self, value: Value | None, what: str) -> list[int]:
        """A constant integer input as a list; NotLowerable when it is computed at run time."""
        arr = self.const(value)
        if arr is None:
            raise NotLowerable(f"{what} must be a constant")
        return [int(v) for v in np.asarray(arr).reshape(-1)]

    def dim_list(self, value: Value | None) -> list[str] | None:
        """A 1-d integer value as dim expressions (constant or computed from shapes), else None."""
        if value is None:
            return None
        if id(value) in self.dims:
            elems, scalar = self.dims[id(value)]
            return None if scalar else elems
        arr = self.const(value)
        if arr is not None and np.asarray(arr).dtype.kind in "iu" and np.asarray(arr).ndim == 1:
            return [str(int(v)) for v in arr]
        return None

    def dim_scalar(self, value: Value | None) -> str | None:
        """A 0-d integer value as a dim expression (constant or computed from shapes), else None."""
        if value is None:
            return None
        if id(value) in self.dims:
            elems, scalar = self.dims[id(value)]
            return elems[0] if scalar else None
        arr = self.const(value)
        if arr is not None and np.asarray(arr).dtype.kind in "iu" and np.asarray(arr).ndim == 0:
            return str(int(arr))
        return None

    def shape_arg(self, value: Value | None, what: str) -> list[str]:
        """A shape operand (Reshape, Expand, Tile) as dim expressions."""
        dims = self.dim_list(value)
        if dims is None:
            raise NotLowerable(f"{what} must be a constant or computed from input shapes")
        return dims

    def const_expr(self, value: Value) -> str:
        """A constant as code: a literal when small, else a parameter or buffer of the module."""
        arr = np.asarray(value.const)
        if arr.ndim == 0 and arr.dtype.kind in "fiub":
            return literal(arr[()])
        if arr.dtype.kind in "iub" and arr.size <= LITERAL_LIMIT:
            dtype = TORCH_DTYPES[DType.from_numpy(arr.dtype)]
            return f"torch.tensor({literal(arr.tolist())}, dtype={dtype})"
        if id(value) not in self.tensors:
            if arr.dtype.kind not in "fiub" or DType.from_numpy(arr.dtype) not in TORCH_DTYPES:
                raise NotLowerable(f"constant of dtype {arr.dtype} has no torch equivalent")
            ident = self.attr_name(value.name, "const")
            self.tensors[id(value)] = Tensor(ident, arr, arr.dtype.kind == "f", py_string(value.name))
        return f"self.{self.tensors[id(value)].ident}"

    def shape(self, value: Value | None) -> tuple | None:
        """The inferred shape of ``value`` (ints and symbols) or None when unknown."""
        t = None if value is None else value.type
        return t.shape if isinstance(t, TensorType) else None

    def rank(self, value: Value | None) -> int:
        """The rank of ``value``; NotLowerable when unknown."""
        shape = self.shape(value)
        if shape is None:
            raise NotLowerable("needs an input of known rank")
        return len(shape)

    # ----------------------------------------------------------------- emitting
    def local(self, value: Value) -> str:
        """A fresh local name for ``value`` (derived from its model name)."""
        name = identifier(value.name, self.taken, fallback="v", reserved=CODE_NAMES)
        self.names[id(value)] = name
        return name

    def attr_name(self, name: str, fallback: str) -> str:
        """A fresh attribute name (layer or parameter) derived from a model name."""
        return identifier(name, self.attr_taken, fallback=fallback, reserved=MODULE_ATTRS | CODE_NAMES)

    def emit(self, expr: str, outputs: list[Value] | None = None) -> None:
        """Assign ``expr`` to the current node's outputs (all of them, as a tuple if several)."""
        assert self.node is not None
        outs = [o for o in (outputs if outputs is not None else self.node.outputs)]
        targets = ", ".join(self.local(o) if o.name else "_" for o in outs)
        self.body.append(Stmt(f"{targets} = {expr}", py_string(self.node.name or self.node.op_type)))

    def layer(self, ctor: str, tensors: dict[str, np.ndarray]) -> str:
        """Add a submodule for the current node and return ``self.<ident>``."""
        assert self.node is not None
        ident = self.attr_name(layer_name(self.node), self.node.op_type.lower())
        origin = py_string(self.node.name or self.node.op_type)
        self.layers.append(Layer(ident, ctor, tensors, origin))
        return f"self.{ident}"

    def helper(self, name: str) -> str:
        """Mark a module-level helper function (templates/train/helpers) as used."""
        self.helpers.add(name)
        return name

    def users(self, value: Value) -> list[Node]:
        """Nodes that read ``value``."""
        return self.consumers.get(id(value), [])


def literal(v: object) -> str:
    """A Python literal for a number or nested list (float32 in its shortest exact form)."""
    if isinstance(v, list):
        return "[" + ", ".join(literal(x) for x in v) + "]"
    if isinstance(v, np.float32 | np.float16):
        # the shortest text that reads back as the same float32: torch casts the Python
        # scalar to the tensor's dtype, so the result is bit-identical and easier to read
        v = float(str(v)) if np.isfinite(v) else float(v)
    elif isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, bool):
        return repr(v)
    if isinstance(v, float):
        if np.isnan(v):
            return 'float("nan")'
        if np.isinf(v):
            return 'float("inf")' if v > 0 else 'float("-inf")'
        return repr(float(v))
    if isinstance(v, int):
        return repr(int(v))
    raise NotLowerable(f"constant {type(v).__name__} has no literal form")


def layer_name(node: Node) -> str:
    """A readable layer name from a node name: ``/layer1/layer1.0/conv1/Conv`` → ``layer1.0_conv1``.

    The trailing op-type segment exporters add is dropped, and so is a segment repeated as
    the prefix of the next one; the result still goes through ``identifier``.
    """
    segs = [s for s in re.split(r"/+", node.name or "") if s]
    if segs and re.fullmatch(rf"{re.escape(node.op_type)}(_\d+)?", segs[-1], re.IGNORECASE) and len(segs) > 1:
        segs.pop()
    segs = [s for i, s in enumerate(segs) if not (i + 1 < len(segs) and segs[i + 1].startswith(s + "."))]
    return "_".join(segs) or node.op_type.lower()


def _consumers(graph: Graph) -> dict[int, list[Node]]:
    out: dict[int, list[Node]] = {}
    for n in graph.nodes:
        for v in n.inputs:
            if v is not None:
                out.setdefault(id(v), []).append(n)
    return out


def _head(graph: Graph) -> tuple[Node | None, int]:
    """The trailing Softmax/LogSoftmax over the last axis of a single-output graph."""
    if len(graph.outputs) != 1:
        return None, -1
    node = graph.outputs[0].producer
    if node is None or node.op_type not in ("Softmax", "LogSoftmax") or node not in graph.nodes:
        return None, -1
    shape = None if node.inputs[0] is None else getattr(node.inputs[0].type, "shape", None)
    if shape is None:
        return None, -1
    default = -1 if graph.opset >= 13 else 1
    axis = int(node.attr("axis", default))
    if axis < 0:
        axis += len(shape)
    if axis != len(shape) - 1 or (graph.opset < 13 and len(shape) != 2):
        return None, -1
    return node, axis


def _poison(ctx: Ctx, node: Node) -> None:
    """Give a node that cannot be lowered placeholder outputs, so only its own problem is reported."""
    for out in node.outputs:
        ctx.names.setdefault(id(out), "_unlowered")


def lower_graph(graph: Graph) -> TorchModule:
    """Lower ``graph`` (types inferred, constants folded) to a ``TorchModule``.

    Raises UnsupportedOpError listing every op (and op variant) without a lowering.
    """
    from torsh_gen.scaffold.train import (  # noqa: F401
        lower_attention,
        lower_elementwise,
        lower_nn,
        lower_shape,
        lower_tensor,
    )

    nested = sorted({n.op_type for n in graph.nodes if next(n.subgraphs(), None) is not None})
    if nested:
        ops = nested
        raise UnsupportedOpError(
            f"cannot generate a torch module: control flow has no lowering here: {', '.join(ops)}"
        )
    inputs, outputs = signature(graph)
    ctx = Ctx(graph)
    ctx.taken.update({s.ident for s in inputs})
    ctx.consumers = _consumers(graph)
    runtime_inputs = [v for v in graph.inputs if not v.is_const]
    for v, spec in zip(runtime_inputs, inputs):
        ctx.names[id(v)] = spec.ident
    head, head_dim = _head(graph)
    for matcher in BLOCK_MATCHERS:
        matcher(ctx)
    problems: dict[str, int] = {}
    for node in graph.nodes:
        if id(node) in ctx.absorbed:
            continue
        ctx.node = node
        key = node.op_type if node.domain in ("", "ai.onnx") else node.qualified_op
        fn = ctx.replaced.get(id(node)) or (
            LOWERINGS.get(node.op_type) if node.domain in ("", "ai.onnx") else None
        )
        if fn is None:
            problems[key] = problems.get(key, 0) + 1
            _poison(ctx, node)
            continue
        if node is head:
            ctx.names[id(node.outputs[0])] = ctx.var(node.inputs[0])  # logits; head applied later
            continue
        try:
            shape_fn = SHAPE_LOWERINGS.get(node.op_type)
            if shape_fn is not None and any(v is not None and id(v) in ctx.dims for v in node.inputs):
                if shape_fn(ctx, node):
                    continue
            fn(ctx, node)
        except NotLowerable as e:
            k = f"{key} ({e})"
            problems[k] = problems.get(k, 0) + 1
            _poison(ctx, node)
    if problems:
        listing = ", ".join(f"{k} x{n}" if n > 1 else k for k, n in sorted(problems.items()))
        raise UnsupportedOpError(
            f"cannot generate a torch module; no torch lowering for: {listing}. "
            "Rewrite these ops in the model (or extend torsh_gen/scaffold/train) and retry"
        )
    results = []
    for v in graph.outputs:
        if id(v) not in ctx.names and v.const is None:
            raise InputError(f"output {py_string(v.name)} is not computed by any node")
        results.append(ctx.var(v))
    return TorchModule(
        inputs=inputs,
        outputs=outputs,
        layers=ctx.layers,
        tensors=list(ctx.tensors.values()),
        body=ctx.body,
        results=results,
        head=None if head is None else ("softmax" if head.op_type == "Softmax" else "log_softmax"),
        head_dim=head_dim,
        helpers=sorted(ctx.helpers),
    )
