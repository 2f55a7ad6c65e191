"""The editing context op quantizers share: new constants and nodes, shared Q/DQ pairs.

One activation tensor read by several quantized nodes is quantized once: the context
caches the QuantizeLinear/DequantizeLinear (or DynamicQuantizeLinear) it made for each
tensor. New nodes are appended and the graph is topologically sorted at the end.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from torsh_gen.ir.graph import Attribute, AttrKind, Graph, Node, Value
from torsh_gen.ir.rewrite import NameGen, add_constant
from torsh_gen.ir.types import DType, TensorType
from torsh_gen.passes.quantize.numeric import ActivationParams, QuantizedWeight, activation_params
from torsh_gen.passes.quantize.options import QuantOptions, TensorRange

#: Ops that only select or move values, so they run on quantized tensors unchanged.
INTEGER_DATA_MOVEMENT = frozenset(
    {"MaxPool", "Flatten", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Identity"}
)


def int_attr(v: int) -> Attribute:
    """An INT attribute."""
    return Attribute(AttrKind.INT, int(v))


def like(v: Value, dtype: DType) -> TensorType | None:
    """``v``'s shape with another element type (None when ``v``'s type is unknown)."""
    t = v.type
    return TensorType(dtype, t.shape) if isinstance(t, TensorType) else None


@dataclass
class QuantContext:
    """State of one quantization rewrite of ``graph``."""

    graph: Graph
    options: QuantOptions
    ranges: Mapping[str, TensorRange]
    names: NameGen = field(init=False)
    _act: dict[int, ActivationParams] = field(default_factory=dict)
    _sz: dict[int, tuple[Value, Value]] = field(default_factory=dict)
    _q: dict[int, Value] = field(default_factory=dict)
    _dq: dict[int, Value] = field(default_factory=dict)
    _dyn: dict[int, tuple[Value, Value, Value]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.names = NameGen(self.graph)

    # ---------------------------------------------------------------- building blocks
    def const(self, hint: str, array: np.ndarray) -> Value:
        """A new initializer."""
        return add_constant(self.graph, self.names, hint, np.asarray(array))

    def node(
        self,
        op_type: str,
        inputs: list[Value | None],
        outputs: list[Value] | None = None,
        types: list[TensorType | None] | None = None,
        hint: str = "",
        **attrs: Any,
    ) -> Node:
        """Append a node; fresh outputs (one per entry of ``types``) unless ``outputs`` is given."""
        base = hint or op_type.lower()
        if outputs is None:
            outputs = [
                Value(self.names.fresh(f"{base}_{i}" if len(types or [None]) > 1 else base), t)
                for i, t in enumerate(types or [None])
            ]
        # new nodes stay unnamed: names are optional in ONNX and cost bytes in small models
        node = Node(op_type, list(inputs), outputs, {k: _attr(v) for k, v in attrs.items()})
        self.graph.nodes.append(node)
        return node

    def has_range(self, v: Value) -> bool:
        """True when calibration gave a range for ``v``."""
        return v.name in self.ranges

    def act_params(self, v: Value) -> ActivationParams:
        """Scale and zero point of activation ``v`` (from its calibrated range)."""
        p = self._act.get(id(v))
        if p is None:
            p = activation_params(self.ranges[v.name], self.options.symmetric)
            self._act[id(v)] = p
        return p

    def act_constants(self, v: Value) -> tuple[Value, Value]:
        """Scale and zero point of ``v`` as initializers (made once per tensor)."""
        pair = self._sz.get(id(v))
        if pair is None:
            p = self.act_params(v)
            pair = (self.const(f"{v.name}_s", p.scale), self.const(f"{v.name}_z", p.zero_point))
            self._sz[id(v)] = pair
        return pair

    def quantized(self, v: Value) -> Value:
        """``v`` through QuantizeLinear with its calibrated parameters (made once)."""
        q = self._q.get(id(v)) or self._through_data_movement(v)
        if q is None:
            q = self._quantize_linear(v, v)
            self._q[id(v)] = q
        return q

    def _quantize_linear(self, x: Value, v: Value) -> Value:
        """QuantizeLinear of ``x`` with the calibrated parameters of ``v`` (often ``x``)."""
        s, z = self.act_constants(v)
        return self.node(
            "QuantizeLinear",
            [x, s, z],
            types=[like(v, DType.from_numpy(z.const.dtype))],
            hint=f"{v.name}_q",
        ).outputs[0]

    def fake_quantized(self, v: Value) -> Value:
        """``v`` through a QuantizeLinear/DequantizeLinear pair (made once)."""
        if id(v) not in self._dq:
            self._through_data_movement(v)
        dq = self._dq.get(id(v))
        if dq is None:
            s, z = self.act_constants(v)
            dq = self.node(
                "DequantizeLinear",
                [self.quantized(v), s, z],
                types=[like(v, DType.FLOAT)],
                hint=f"{v.name}_dq",
            ).outputs[0]
            self._dq[id(v)] = dq
        return dq

    def _through_data_movement(self, v: Value) -> Value | None:
        """Run the data-movement op producing ``v`` on integers when its input is quantized.

        ``MaxPool -> Flatten -> Gemm`` after a quantized Conv: rather than dequantize,
        pool in float and quantize again, the MaxPool and Flatten read the uint8 tensor
        and ``v`` is dequantized with the input's scale and zero point (exact: these ops
        only select and move values). Returns the integer tensor, or None when the
        producer is not such an op or its input has no quantized form.
        """
        p = v.producer
        if (
            p is None
            or p.op_type not in INTEGER_DATA_MOVEMENT
            or p.domain not in ("", "ai.onnx")
            or len(p.outputs) != 1
            or any(o is v for o in self.graph.outputs)
            or (p.op_type == "MaxPool" and p.attr("storage_order", 0))
            or any(i is not None and i.const is None for i in p.inputs[1:])
            or not any(n is p for n in self.graph.nodes)
        ):
            return None
        u = p.inputs[0]
        qu = self._q.get(id(u)) or self._through_data_movement(u)
        if qu is None or id(u) not in self._sz:
            return None
        s, z = self._sz[id(u)]
        qv = Value(self.names.fresh(f"{v.name}_q"), like(v, DType.from_numpy(z.const.dtype)))
        p.inputs[0] = qu
        p.outputs[0] = qv
        qv.producer = p
        self.node("DequantizeLinear", [qv, s, z], outputs=[v], hint=f"{v.name}_dq")
        self._sz[id(v)] = (s, z)
        self._act[id(v)] = self.act_params(u)
        self.mark_quantized(v, qv)
        return qv

    def dynamic(self, v: Value) -> tuple[Value, Value, Value]:
        """``v`` through DynamicQuantizeLinear: (uint8 data, scale, zero point), made once."""
        got = self._dyn.get(id(v))
        if got is None:
            types = [like(v, DType.UINT8), TensorType(DType.FLOAT, ()), TensorType(DType.UINT8, ())]
            xq, xs, xz = self.node(
                "DynamicQuantizeLinear", [v], types=types, hint=f"{v.name}_dyn"
            ).outputs
            got = (xq, xs, xz)
            self._dyn[id(v)] = got
        return got

    def dynamic_fake_quantized(self, v: Value) -> Value:
        """``v`` quantized at run time and dequantized again (the dynamic QDQ form)."""
        dq = self._dq.get(id(v))
        if dq is None:
            xq, xs, xz = self.dynamic(v)
            dq = self.node(
                "DequantizeLinear", [xq, xs, xz], types=[like(v, DType.FLOAT)], hint=f"{v.name}_ddq"
            ).outputs[0]
            self._dq[id(v)] = dq
        return dq

    def release(self, v: Value) -> str | None:
        """Drop initializer ``v`` when one node input is its only use; its name, now free.

        The DequantizeLinear that replaces a float weight then takes the weight's name, so
        the quantized graph reads the same tensor names as the float one.
        """
        if v.const is None or not any(v is i for i in self.graph.initializers):
            return None
        if any(v is o for o in self.graph.outputs):
            return None
        uses = sum(1 for _, n in self.graph.walk() for i in n.inputs if i is v)
        if uses != 1:
            return None
        self.graph.initializers = [i for i in self.graph.initializers if i is not v]
        return v.name

    def weight_dq(
        self,
        hint: str,
        qw: QuantizedWeight,
        *,
        zero_point: bool = False,
        half_scales: bool = False,
        replaces: Value | None = None,
    ) -> Value:
        """A quantized weight stored as an initializer and dequantized by DequantizeLinear.

        ``replaces`` is the float weight this stands for (see ``release``).
        ``zero_point`` writes the (all-zero) zero point explicitly: onnxruntime fuses a
        Gemm/MatMul group into its integer kernel only then. ``half_scales`` stores the
        scales as float16 behind a Cast (onnxruntime folds the Cast when it loads the
        model): int4 blocks of 32 spend a fifth of their bytes on scales otherwise,
        and float16's relative error (5e-4) is far below an int4 step.
        """
        data = self.const(f"{hint}_q", qw.data)
        if half_scales:
            half = self.const(f"{hint}_s16", qw.scale.astype(np.float16))
            scale = self.node(
                "Cast",
                [half],
                types=[TensorType(DType.FLOAT, tuple(qw.scale.shape))],
                hint=f"{hint}_s",
                to=int(DType.FLOAT),
            ).outputs[0]
        else:
            scale = self.const(f"{hint}_s", qw.scale)
        inputs = [data, scale]
        if zero_point:
            inputs.append(self.const(f"{hint}_z", np.zeros(qw.scale.shape, qw.data.dtype)))
        attrs: dict[str, int] = {}
        if qw.axis is not None:
            attrs["axis"] = qw.axis
        if qw.block_size:
            attrs["block_size"] = qw.block_size
        t = TensorType(DType.FLOAT, tuple(qw.data.shape))
        name = self.release(replaces) if replaces is not None else None
        outputs = [Value(name, t)] if name else None
        dq = self.node("DequantizeLinear", inputs, outputs, [t], hint=f"{hint}_dq", **attrs)
        return dq.outputs[0]

    def output_target(self, node: Node) -> tuple[Value, Node | None]:
        """The tensor to quantize after ``node``: its output, or that of a Relu it alone feeds.

        With uint8 activations whose zero point is the range's minimum, saturation at 0
        is exactly a Relu, so a Relu that is the sole reader of the output can be folded
        into the quantization (onnxruntime's quantizer does the same).
        """
        y = node.outputs[0]
        readers = self.readers(y)
        if self.options.symmetric or len(readers) != 1 or readers[0].op_type != "Relu":
            return y, None
        relu = readers[0]
        r = relu.outputs[0]
        if any(o is r or o is y for o in self.graph.outputs) or not self.has_range(r):
            return y, None
        return r, relu

    def readers(self, v: Value) -> list[Node]:
        """Nodes that read ``v`` now."""
        return [n for n in self.graph.nodes if any(i is v for i in n.inputs)]

    def mark_quantized(self, v: Value, q: Value) -> None:
        """Record that ``v`` is the DequantizeLinear of ``q``, so later readers reuse ``q``."""
        self._q[id(v)] = q
        self._dq[id(v)] = v

    def drop(self, node: Node) -> None:
        """Remove ``node`` from the graph."""
        self.graph.nodes = [n for n in self.graph.nodes if n is not node]

    def requantize_output(self, node: Node) -> bool:
        """Put a Q/DQ pair after ``node``'s first output so the next op reads integers.

        The quantized Value (the output, or the output of a folded Relu) keeps its name
        and now comes out of the DequantizeLinear.
        """
        target, relu = self.output_target(node)
        if not self.has_range(target):
            return False
        if relu is not None:
            self.drop(relu)
        raw = Value(self.names.fresh(f"{target.name}_f"), target.type)
        node.outputs[0] = raw
        raw.producer = node
        q = self._quantize_linear(raw, target)
        s, z = self.act_constants(target)
        self.node("DequantizeLinear", [q, s, z], outputs=[target], hint=f"{target.name}_dq")
        self.mark_quantized(target, q)
        return True


def _attr(v: Any) -> Attribute:
    if isinstance(v, Attribute):
        return v
    if isinstance(v, bool | int | np.integer):
        return int_attr(int(v))
    if isinstance(v, float):
        return Attribute(AttrKind.FLOAT, v)
    if isinstance(v, str):
        return Attribute(AttrKind.STRING, v)
    if isinstance(v, list | tuple) and all(isinstance(i, int) for i in v):
        return Attribute(AttrKind.INTS, list(v))
    raise TypeError(f"no attribute kind for {v!r}")
