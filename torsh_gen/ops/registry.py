"""The op registry: one ``OpSpec`` class per op (and per behaviour-changing version).

An op is declared once, in the family module that defines it::

    @op("Softmax", since=13)
    class Softmax(OpSpec):
        attrs = {"axis": INT(-1)}

        def run(self, ctx, x):
            ...

Versions: the spec used for a node is the one with the highest ``since`` not above the
model's opset for the op's domain. A later version that changes behaviour subclasses the
earlier one and overrides only what differs, so no body is copied.

Each spec carries:
- ``attrs``: typed attributes with their ONNX defaults (``ctx.attrs.<name>`` in kernels);
- ``run``: the numpy reference kernel; it is at once interpreter, constant folder and oracle;
- ``infer``: the type and shape rule (default: ONNX's own schema inference, which covers
  every standard op; specs override it where they can do better or have no ONNX schema);
- ``cost``: MACs, FLOPs and bytes moved (default: ``flops_per_element`` per output element).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from torsh_gen.errors import UnsupportedOpError
from torsh_gen.ir.graph import AttrKind, Graph, Node
from torsh_gen.ir.types import TensorType, Type


# --------------------------------------------------------------------------- attributes
@dataclass(frozen=True)
class AttrDef:
    """Declaration of one attribute: its kind, default and whether it is required."""

    kind: AttrKind
    default: Any = None
    required: bool = False


def INT(default: int | None = None, required: bool = False) -> AttrDef:  # noqa: N802
    """An integer attribute."""
    return AttrDef(AttrKind.INT, default, required)


def FLOAT(default: float | None = None, required: bool = False) -> AttrDef:  # noqa: N802
    """A float attribute."""
    return AttrDef(AttrKind.FLOAT, default, required)


def STRING(default: str | None = None, required: bool = False) -> AttrDef:  # noqa: N802
    """A string attribute."""
    return AttrDef(AttrKind.STRING, default, required)


def INTS(default: Sequence[int] | None = None, required: bool = False) -> AttrDef:  # noqa: N802
    """A list-of-integers attribute."""
    return AttrDef(AttrKind.INTS, None if default is None else list(default), required)


def FLOATS(default: Sequence[float] | None = None, required: bool = False) -> AttrDef:  # noqa: N802
    """A list-of-floats attribute."""
    return AttrDef(AttrKind.FLOATS, None if default is None else list(default), required)


def STRINGS(default: Sequence[str] | None = None, required: bool = False) -> AttrDef:  # noqa: N802
    """A list-of-strings attribute."""
    return AttrDef(AttrKind.STRINGS, None if default is None else list(default), required)


def TENSOR(required: bool = False) -> AttrDef:  # noqa: N802
    """A tensor attribute (an ``np.ndarray`` in kernels)."""
    return AttrDef(AttrKind.TENSOR, None, required)


def GRAPH(required: bool = True) -> AttrDef:  # noqa: N802
    """A subgraph attribute (a ``Graph`` in kernels; run it with ``ctx.run_graph``)."""
    return AttrDef(AttrKind.GRAPH, None, required)


class Attrs:
    """Attribute values of one node with defaults applied, read as ``attrs.axis``."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.__dict__.update(values)

    def __getattr__(self, name: str) -> Any:  # only called for missing names
        return None

    def get(self, name: str, default: Any = None) -> Any:
        """The value of ``name`` or ``default`` when it is absent or None."""
        v = self.__dict__.get(name)
        return default if v is None else v

    def as_dict(self) -> dict[str, Any]:
        """The attribute values as a plain dict."""
        return dict(self.__dict__)


# --------------------------------------------------------------------------- contexts
@dataclass
class InferContext:
    """What a type/shape rule sees: the node, its attributes, input types and constants."""

    node: Node
    attrs: Attrs
    input_types: list[Type | None]
    input_values: list[Any]  # constant input data where known, else None
    opset: int

    def input_type(self, i: int) -> Type | None:
        """The type of input ``i`` (None when absent or unknown)."""
        return self.input_types[i] if i < len(self.input_types) else None

    def input_value(self, i: int) -> Any:
        """The constant value of input ``i`` when known at compile time, else None."""
        return self.input_values[i] if i < len(self.input_values) else None


@dataclass
class RunContext:
    """What a reference kernel sees besides its inputs."""

    node: Node
    attrs: Attrs
    opset: int
    n_outputs: int
    run_graph: Callable[[Graph, Sequence[Any]], list[Any]]
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(0))


@dataclass
class Cost:
    """Work and traffic of one node: multiply-accumulates, FLOPs, bytes read and written."""

    macs: int = 0
    flops: int = 0
    bytes_read: int = 0
    bytes_written: int = 0

    def __add__(self, other: Cost) -> Cost:
        return Cost(
            self.macs + other.macs,
            self.flops + other.flops,
            self.bytes_read + other.bytes_read,
            self.bytes_written + other.bytes_written,
        )


# --------------------------------------------------------------------------- spec base
class OpSpec:
    """Base class of op specs. Subclasses are registered with ``@op``."""

    op_type: ClassVar[str] = ""
    domain: ClassVar[str] = ""
    since: ClassVar[int] = 1
    attrs: ClassVar[dict[str, AttrDef]] = {}
    #: FLOPs per output element for the default cost rule (0 for pure data movement).
    flops_per_element: ClassVar[float] = 1.0
    #: False for ops whose output differs between runs (random ops): never constant-folded.
    deterministic: ClassVar[bool] = True
    #: ``"module:function"`` that compiled artifacts import and call as ``fn(*inputs, **attrs)``
    #: instead of vendoring ``run``: set by plugin ops, whose spec modules import torsh_gen.
    artifact_kernel: ClassVar[str] = ""

    def run(self, ctx: RunContext, *inputs: Any) -> Any:
        """The numpy reference kernel: one output, or a tuple of outputs (a list is a sequence)."""
        raise NotImplementedError(f"{self.op_type} has no reference kernel")

    def infer(self, ctx: InferContext) -> list[Type | None]:
        """Output types; the default asks ONNX's schema inference."""
        from torsh_gen.ops.onnx_infer import infer_with_onnx_schema

        return infer_with_onnx_schema(self, ctx)

    def cost(self, ctx: InferContext, output_types: list[Type | None]) -> Cost:
        """MACs, FLOPs and bytes of one execution; default: elementwise over the outputs."""
        read = sum(_nbytes(t) for t in ctx.input_types)
        written = sum(_nbytes(t) for t in output_types)
        out_elems = sum(_numel(t) for t in output_types)
        return Cost(0, int(out_elems * self.flops_per_element), read, written)

    def resolve_attrs(self, node: Node) -> Attrs:
        """Attribute values of ``node`` with this spec's defaults filled in."""
        values: dict[str, Any] = {}
        for name, decl in self.attrs.items():
            a = node.attrs.get(name)
            values[name] = decl.default if a is None else a.value
        for name, a in node.attrs.items():
            values.setdefault(name, a.value)
        return Attrs(values)


def _numel(t: Type | None) -> int:
    if isinstance(t, TensorType):
        n = t.numel()
        return n or 0
    return 0


def _nbytes(t: Type | None) -> int:
    return (t.nbytes() or 0) if isinstance(t, TensorType) else 0


# --------------------------------------------------------------------------- registry
_REGISTRY: dict[tuple[str, str], list[OpSpec]] = {}
_DOMAIN_ALIASES = {"ai.onnx": ""}
#: Loads op plugins (entry points) the first time the registry is consulted; set by
#: ``torsh_gen.ops`` and left unset in the copies vendored into artifacts.
plugin_loader: Callable[[], None] | None = None


def _load_plugins() -> None:
    global plugin_loader
    loader, plugin_loader = plugin_loader, None  # once, and not again while it runs
    if loader is not None:
        loader()


def op(op_type: str, since: int = 1, domain: str = "") -> Callable[[type[OpSpec]], type[OpSpec]]:
    """Class decorator registering an OpSpec for ``domain::op_type`` from opset ``since`` on."""
    domain = _DOMAIN_ALIASES.get(domain, domain)

    def register(cls: type[OpSpec]) -> type[OpSpec]:
        cls.op_type = op_type
        cls.domain = domain
        cls.since = since
        specs = _REGISTRY.setdefault((domain, op_type), [])
        if any(s.since == since for s in specs):
            raise ValueError(f"{domain}::{op_type} since {since} registered twice")
        specs.append(cls())
        specs.sort(key=lambda s: s.since)
        return cls

    return register


def lookup(op_type: str, domain: str = "", opset: int = 0) -> OpSpec:
    """The spec for ``op_type`` at ``opset`` (0 = newest). Raises UnsupportedOpError."""
    _load_plugins()
    domain = _DOMAIN_ALIASES.get(domain, domain)
    specs = _REGISTRY.get((domain, op_type))
    if not specs:
        where = f" in domain '{domain}'" if domain else ""
        raise UnsupportedOpError(f"op '{op_type}'{where} is not supported by torsh-gen")
    if opset <= 0:
        return specs[-1]
    chosen = None
    for s in specs:
        if s.since <= opset:
            chosen = s
    return chosen if chosen is not None else specs[0]


def is_supported(op_type: str, domain: str = "") -> bool:
    """True when some version of the op is registered."""
    _load_plugins()
    return (_DOMAIN_ALIASES.get(domain, domain), op_type) in _REGISTRY


def registered_ops() -> list[tuple[str, str, list[int]]]:
    """(domain, op_type, versions) for every registered op, sorted."""
    _load_plugins()
    return sorted((d, o, [s.since for s in specs]) for (d, o), specs in _REGISTRY.items())
