"""The state of one ExportedProgram → Graph lowering: values, names, metadata, report.

Lowering functions (one per ATen op, in the ``ops_*`` modules) receive a ``Lowering``
and the FX node; they read the node's arguments as IR values with ``value``/``ints``
and emit IR nodes with ``emit``. Every IR node emitted for an FX node carries that
node's layer name (its ``nn.Module`` path) and its source location, so inspect shows
the module tree and errors can point at the user's line of Python.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

import numpy as np
import torch
from torch import fx

from torsh_gen.ir.graph import Attribute, AttrKind, Graph, Node, Value
from torsh_gen.ir.types import DType, TensorType

TORCH_DTYPES: dict[torch.dtype, DType] = {
    torch.float32: DType.FLOAT,
    torch.float16: DType.FLOAT16,
    torch.bfloat16: DType.BFLOAT16,
    torch.float64: DType.DOUBLE,
    torch.int8: DType.INT8,
    torch.int16: DType.INT16,
    torch.int32: DType.INT32,
    torch.int64: DType.INT64,
    torch.uint8: DType.UINT8,
    torch.bool: DType.BOOL,
}

_TORCH_DIR = re.compile(r"[/\\](torch|torch_gen|functorch)[/\\]")


class Unsupported(Exception):
    """Raised by a lowering for an op variant it cannot express; collected, not fatal at once."""


def op_name(node: fx.Node) -> str:
    """``aten.convolution.default`` for an OpOverload target, else the callable's name."""
    target = node.target
    if isinstance(target, torch._ops.OpOverload):
        return str(target)
    return getattr(target, "__name__", str(target))


def source_location(node: fx.Node) -> str:
    """The innermost user frame of the node's stack trace (``model.py:12 in forward``)."""
    trace = node.meta.get("stack_trace") or ""
    frames = re.findall(r'File "([^"]+)", line (\d+), in (\S+)', trace)
    if not frames:
        return ""
    user = [f for f in frames if not _TORCH_DIR.search(f[0])]
    path, line, func = (user or frames)[-1]
    return f"{path}:{line} in {func}"


def module_stack(node: fx.Node) -> list[str]:
    """The qualified module paths enclosing the node, outermost first (``layer1``, ``layer1.0``)."""
    stack = node.meta.get("nn_module_stack") or {}
    paths: list[str] = []
    for key, entry in stack.items():
        path = entry[0] if isinstance(entry, tuple) else str(entry)
        if key.startswith("_empty") or not isinstance(path, str):
            continue
        path = re.sub(r"^L\['self'\]\.?", "", path).split("@")[0]
        path = re.sub(r"\[(\d+)\]", r".\1", path).replace("._modules['", ".").replace("']", "")
        if path and (not paths or paths[-1] != path):
            paths.append(path)
    return paths


def attr(value: Any) -> Attribute:
    """An IR attribute from a Python value (int, float, str, list of those, ndarray)."""
    if isinstance(value, bool | int | np.integer):
        return Attribute(AttrKind.INT, int(value))
    if isinstance(value, float | np.floating):
        return Attribute(AttrKind.FLOAT, float(value))
    if isinstance(value, str):
        return Attribute(AttrKind.STRING, value)
    if isinstance(value, np.ndarray):
        return Attribute(AttrKind.TENSOR, value)
    items = list(value)
    if all(isinstance(v, bool | int | np.integer) for v in items):
        return Attribute(AttrKind.INTS, [int(v) for v in items])
    if all(isinstance(v, float | int) for v in items):
        return Attribute(AttrKind.FLOATS, [float(v) for v in items])
    return Attribute(AttrKind.STRINGS, [str(v) for v in items])


class Lowering:
    """Builds one Graph from one FX graph; the ``ops_*`` lowerings call its helpers."""

    def __init__(self, graph: Graph, symbols: dict[str, str]) -> None:
        self.graph = graph
        self.symbols = symbols  # sympy symbol name → user dim name
        self.env: dict[fx.Node, Any] = {}
        self.param_module: dict[fx.Node, str] = {}
        self.node: fx.Node | None = None
        self.mapped: Counter[str] = Counter()
        self.compositions: dict[str, list[str]] = {}
        self._emitted: list[str] = []
        self._node_names: Counter[str] = Counter()
        self._value_names: set[str] = set()
        self._tmp = 0
        self._quiet = 0  # > 0 while emitting shape plumbing (not reported as compositions)

    # ------------------------------------------------------------------ names
    def fresh(self, hint: str) -> str:
        """A value name not used yet in the graph, derived from ``hint``."""
        name = hint
        while name in self._value_names:
            self._tmp += 1
            name = f"{hint}_{self._tmp}"
        self._value_names.add(name)
        return name

    def claim(self, name: str) -> bool:
        """Reserve ``name`` for a value if it is still free; False when it is taken."""
        if name in self._value_names:
            return False
        self._value_names.add(name)
        return True

    def layer(self, node: fx.Node) -> str:
        """The module path of ``node``, or of the first parameter it reads."""
        stack = module_stack(node)
        if stack:
            return stack[-1]
        for arg in node.all_input_nodes:
            if arg in self.param_module:
                return self.param_module[arg]
        return ""

    def _node_name(self, op_type: str) -> str:
        node = self.node
        parts = module_stack(node) if node is not None else []
        if node is not None and not parts and self.layer(node):
            path = self.layer(node).split(".")
            parts = [".".join(path[: i + 1]) for i in range(len(path))]
        base = "/" + "/".join([*parts, op_type])
        self._node_names[base] += 1
        n = self._node_names[base]
        return base if n == 1 else f"{base}_{n - 1}"

    # ------------------------------------------------------------------ emitting
    def emit(
        self, op_type: str, inputs: list[Value | None], n_outputs: int = 1, **attrs: Any
    ) -> Any:
        """Append an IR node for the current FX node; its output Value (or list of them)."""
        fx_name = self.node.name if self.node is not None else "node"
        outs = [Value(self.fresh(f"{fx_name}_{op_type.lower()}")) for _ in range(n_outputs)]
        node = Node(
            op_type,
            list(inputs),
            outs,
            {k: attr(v) for k, v in attrs.items() if v is not None},
            name=self._node_name(op_type),
        )
        if self.node is not None:
            node.metadata = self._metadata(self.node)
        self.graph.nodes.append(node)
        if not self._quiet:
            self._emitted.append(op_type)
        return outs if n_outputs != 1 else outs[0]

    def _metadata(self, node: fx.Node) -> dict[str, str]:
        meta = {"torch.op": op_name(node)}
        layer = self.layer(node)
        if layer:
            meta["torch.module"] = layer
        where = source_location(node)
        if where:
            meta["torch.source"] = where
        return meta

    def const(self, array: Any, dtype: Any = None, hint: str = "const") -> Value:
        """An initializer holding ``array`` (converted to ``dtype`` when given)."""
        arr = np.asarray(array, dtype=dtype)
        if arr.dtype == np.float64 and dtype is None:
            arr = arr.astype(np.float32)
        fx_name = self.node.name if self.node is not None else ""
        return self.graph.add_initializer(self.fresh(f"{fx_name}_{hint}" if fx_name else hint), arr)

    def scalar_like(self, value: Any, like: fx.Node | Any) -> Value:
        """A rank-0 constant with the element type of the tensor ``like``."""
        return self.const(np.array(value, dtype=self.dtype(like).numpy), hint="scalar")

    # ------------------------------------------------------------------ reading arguments
    def value(self, arg: Any, like: Any = None) -> Value:
        """The IR value of an FX argument; Python numbers become constants (typed like ``like``)."""
        if isinstance(arg, fx.Node):
            v = self.env[arg]
            if isinstance(v, list):
                raise Unsupported(f"'{arg.name}' is a tuple, not a tensor")
            return v
        if like is not None:
            return self.scalar_like(arg, like)
        if isinstance(arg, bool):
            return self.const(np.array(arg))
        if isinstance(arg, int):
            return self.const(np.array(arg, dtype=np.int64))
        return self.const(np.array(arg, dtype=np.float32))

    def fake(self, arg: fx.Node) -> Any:
        """The example (fake) tensor or SymInt recorded for an FX node."""
        return arg.meta.get("val")

    def dtype(self, arg: Any) -> DType:
        """The element type of an FX tensor argument (Python numbers: int64/float32/bool)."""
        if isinstance(arg, fx.Node):
            val = self.fake(arg)
            if isinstance(val, torch.Tensor):
                return TORCH_DTYPES[val.dtype]
            if isinstance(val, torch.SymFloat | float):
                return DType.FLOAT
            if isinstance(val, torch.SymBool | bool):
                return DType.BOOL
            return DType.INT64
        if isinstance(arg, bool):
            return DType.BOOL
        return DType.INT64 if isinstance(arg, int) else DType.FLOAT

    def rank(self, arg: fx.Node) -> int:
        """The rank of an FX tensor argument."""
        return len(self.fake(arg).shape)

    def static_shape(self, arg: fx.Node) -> list[int | None]:
        """The shape of an FX tensor argument with symbolic dims as None."""
        return [d if isinstance(d, int) else None for d in self.fake(arg).shape]

    def is_symbolic(self, arg: Any) -> bool:
        """True for FX nodes that carry a SymInt (a shape value computed at run time)."""
        return isinstance(arg, fx.Node) and not isinstance(self.fake(arg), torch.Tensor)

    def ints(self, items: Any) -> Value:
        """A 1-D int64 tensor from a list of ints and SymInt nodes (Concat when any is symbolic)."""
        items = list(items) if isinstance(items, list | tuple) else [items]
        if not any(isinstance(i, fx.Node) for i in items):
            return self.const(np.array([int(i) for i in items], dtype=np.int64), hint="ints")
        pieces: list[Value] = []
        run: list[int] = []
        for item in items:
            if isinstance(item, fx.Node):
                if run:
                    pieces.append(self.const(np.array(run, dtype=np.int64), hint="ints"))
                    run = []
                pieces.append(self.sym_vector(item))
            else:
                run.append(int(item))
        if run:
            pieces.append(self.const(np.array(run, dtype=np.int64), hint="ints"))
        self._quiet += 1
        try:
            return self.emit("Concat", pieces, axis=0)
        finally:
            self._quiet -= 1

    def sym_vector(self, arg: fx.Node) -> Value:
        """A SymInt node as a 1-element int64 tensor."""
        v = self.env[arg]
        if self.is_symbolic(arg):
            return v
        # a 0-d tensor used as a size: make it 1-element int64
        v = self.cast(v, DType.INT64) if self.dtype(arg) != DType.INT64 else v
        return self.emit("Reshape", [v, self.const(np.array([1], dtype=np.int64), hint="ints")])

    def cast(self, v: Value, to: DType) -> Value:
        """Cast ``v`` to element type ``to``."""
        return self.emit("Cast", [v], to=int(to))

    # ------------------------------------------------------------------ types and report
    def tensor_type(self, val: Any) -> TensorType | None:
        """The IR type of a fake tensor: symbolic dims named after the user's Dims."""
        if isinstance(val, torch.Tensor):
            dims: list[int | str | None] = []
            for d in val.shape:
                if isinstance(d, int):
                    dims.append(d)
                else:
                    expr = d.node.expr
                    name = str(expr)
                    dims.append(
                        self.symbols.get(name, name) if getattr(expr, "is_Symbol", False) else None
                    )
            dt = TORCH_DTYPES.get(val.dtype)
            return None if dt is None else TensorType(dt, tuple(dims))
        if isinstance(val, torch.SymInt | int):
            return TensorType(DType.INT64, (1,))
        return None

    def begin(self, node: fx.Node) -> None:
        """Start lowering ``node``: emitted IR ops are attributed to it."""
        self.node = node
        self._emitted = []

    def finish(self, node: fx.Node, key: str) -> None:
        """Record what ``node`` became for the conversion report."""
        self.mapped[key] += 1
        ops = [o for o in self._emitted]
        if len(ops) > 1 and key not in self.compositions:
            self.compositions[key] = list(dict.fromkeys(ops))
        self.node = None
