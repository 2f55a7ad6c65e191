"""The conversion context: TFLite tensors → IR Values, with layouts and quantization.

TFLite keeps images NHWC; ONNX's Conv and pooling read NCHW. Each rank-4 tensor may be
held in either layout: ``NATIVE`` (the model's own, what users see at the graph boundary)
and ``NCHW`` (what conv-like ops read and write). A converter asks for the layout it
needs and the context emits a Transpose only when that form does not exist yet, so a
chain conv → add → hard-swish → conv stays NCHW and needs no Transpose at all; graph
outputs and layout-sensitive ops (reshape, transpose, slicing) get the native form.

Quantized tensors (int8/uint8/int16 with scale and zero point) stay integer Values.
``real`` gives the float view of an input (DequantizeLinear, or Cast for float16) and
``put_real`` stores a float result, quantizing it (QuantizeLinear) when the TFLite tensor
is quantized: float ops between QDQ pairs, as ONNX's QDQ format represents int8 models.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from torsh_gen.errors import ModelLoadError, UnsupportedOpError
from torsh_gen.frontends.tflite.reader import Model, Operator, Quant, Tensor
from torsh_gen.ir.graph import Attribute, AttrKind, Graph, Value
from torsh_gen.ir.types import DType, TensorType

NATIVE = "native"
NCHW = "nchw"
TO_NCHW = [0, 3, 1, 2]  # native NHWC → NCHW
TO_NHWC = [0, 2, 3, 1]  # NCHW → native NHWC


class Unsupported(UnsupportedOpError):
    """A TFLite operator (or an option of one) the frontend cannot map."""


def attr(value: Any) -> Attribute:
    """An IR attribute with its kind taken from the Python value."""
    if isinstance(value, bool):
        return Attribute(AttrKind.INT, int(value))
    if isinstance(value, (int, np.integer)):
        return Attribute(AttrKind.INT, int(value))
    if isinstance(value, float):
        return Attribute(AttrKind.FLOAT, value)
    if isinstance(value, str):
        return Attribute(AttrKind.STRING, value)
    if isinstance(value, (list, tuple)) and all(isinstance(v, (int, np.integer)) for v in value):
        return Attribute(AttrKind.INTS, [int(v) for v in value])
    if isinstance(value, (list, tuple)):
        return Attribute(AttrKind.FLOATS, [float(v) for v in value])
    raise TypeError(f"no attribute kind for {value!r}")


class Context:
    """Builds one Graph from a TFLite ``Model``; converters call its helpers."""

    def __init__(self, model: Model) -> None:
        self.model = model
        self.graph = Graph("main")
        self.forms: dict[int, dict[str, Value]] = {}
        self.reals: dict[tuple[int, str], Value] = {}
        self.used_names: set[str] = set()
        self.op: Operator | None = None
        self.emitted: Counter[str] = Counter()  # IR ops the current operator's converter emitted
        self.glue: Counter[str] = Counter()  # layout and quantization nodes the context added

    # ------------------------------------------------------------------ naming
    def name(self, hint: str) -> str:
        """A value/node name unique in the graph, close to ``hint`` (printable, bounded)."""
        base = "".join(c if c.isprintable() else "_" for c in hint[:120]) or "v"
        name, k = base, 0
        while name in self.used_names:
            k += 1
            name = f"{base}_{k}"
        self.used_names.add(name)
        return name

    def tensor(self, index: int) -> Tensor:
        """The TFLite tensor record at ``index``."""
        return self.model.tensors[index]

    def input(self, k: int) -> Tensor | None:
        """The current operator's ``k``-th input tensor (None when omitted)."""
        assert self.op is not None
        ins = self.op.inputs
        if k >= len(ins) or ins[k] < 0:
            return None
        return self.tensor(ins[k])

    def output(self, k: int = 0) -> Tensor:
        """The current operator's ``k``-th output tensor."""
        assert self.op is not None
        return self.tensor(self.op.outputs[k])

    # ------------------------------------------------------------------ building
    def const(self, hint: str, array: np.ndarray) -> Value:
        """A new initializer."""
        array = np.asarray(array)
        if not array.flags.c_contiguous:  # (np.ascontiguousarray would turn 0-d into 1-d)
            array = array.copy(order="C")
        return self.graph.add_initializer(self.name(hint), array)

    def ints(self, hint: str, values: Sequence[int]) -> Value:
        """An int64 1-D initializer (shapes, axes, pads)."""
        return self.const(hint, np.asarray(list(values), dtype=np.int64))

    def node(
        self,
        op_type: str,
        inputs: Sequence[Value | None],
        hint: str,
        n_out: int = 1,
        *,
        glue: bool = False,
        **attrs: Any,
    ) -> list[Value]:
        """Append an ONNX node; returns its outputs. ``glue``: a layout/quantization node."""
        base = self.name(hint)
        names = [base] + [self.name(f"{base}_{i}") for i in range(1, n_out)]
        node = self.graph.add_node(
            op_type,
            list(inputs),
            n_out,
            {k: attr(v) for k, v in attrs.items() if v is not None},
            name=base,
            output_names=names,
        )
        if self.op is not None:
            node.metadata["tflite_op"] = f"{self.op.opcode}#{self.op.index}"
            (self.glue if glue else self.emitted)[op_type] += 1
        else:
            node.metadata["tflite_op"] = "graph boundary"
        return node.outputs

    def node1(
        self,
        op_type: str,
        inputs: Sequence[Value | None],
        hint: str,
        *,
        glue: bool = False,
        **attrs: Any,
    ) -> Value:
        """Append a one-output node and return its output."""
        return self.node(op_type, inputs, hint, 1, glue=glue, **attrs)[0]

    # ------------------------------------------------------------------ layouts
    def define(self, index: int, value: Value, layout: str = NATIVE) -> None:
        """Record ``value`` as tensor ``index`` in ``layout``."""
        self.forms.setdefault(index, {})[layout] = value

    def defined(self, index: int) -> bool:
        """True when tensor ``index`` has a Value (or is a constant)."""
        return index in self.forms or self.tensor(index).is_const

    def home(self, index: int) -> str:
        """The layout tensor ``index`` was produced in (NATIVE for constants)."""
        forms = self.forms.get(index, {})
        return NATIVE if NATIVE in forms or not forms else NCHW

    def has(self, index: int, layout: str) -> bool:
        """True when tensor ``index`` already exists in ``layout``."""
        return layout in self.forms.get(index, {})

    def value(self, index: int, layout: str = NATIVE) -> Value:
        """Tensor ``index`` as stored (integer stays integer) in ``layout``."""
        forms = self.forms.get(index)
        t = self.tensor(index)
        if forms is None:
            if not t.is_const:
                raise ModelLoadError(
                    f"tensor '{t.name}' is read before any operator writes it; "
                    "the TFLite model is corrupted"
                )
            forms = self.forms.setdefault(index, {})
        if layout in forms:
            return forms[layout]
        if t.is_const:
            data = t.data if layout == NATIVE else _to_nchw(t.data)
            v = self.const(f"{t.name}{'' if layout == NATIVE else '.nchw'}", data)
        elif t.rank != 4:
            v = self._broadcast_nchw(t, forms[NATIVE])
        else:
            src_layout = NCHW if layout == NATIVE else NATIVE
            perm = TO_NHWC if layout == NATIVE else TO_NCHW
            hint = t.name if layout == NATIVE else f"{t.name}.nchw"
            v = self._permute(
                forms[src_layout],
                t.signature if layout == NCHW else _nchw_shape(t.signature),
                perm,
                hint,
            )
        forms[layout] = v
        return v

    def _permute(self, src: Value, shape: tuple[int, ...], perm: list[int], hint: str) -> Value:
        """``src`` (of ``shape``) transposed by ``perm``; a Reshape when only unit axes move."""
        moved = [p for p in perm if shape[p] != 1]  # source axes of the non-unit dims, in new order
        # Dynamic dims must stay in place (Reshape copies them as 0); so would a static 0.
        dynamic_in_place = all(shape[p] >= 0 or p == j for j, p in enumerate(perm))
        if moved == sorted(moved) and dynamic_in_place and 0 not in shape:
            target = [0 if shape[p] < 0 else shape[p] for p in perm]
            return self.node1("Reshape", [src, self.ints(f"{hint}.shape", target)], hint, glue=True)
        return self.node1("Transpose", [src], hint, glue=True, perm=perm)

    def _broadcast_nchw(self, t: Tensor, src: Value) -> Value:
        """A rank < 4 tensor that broadcasts against NHWC, made to broadcast against NCHW."""
        if all(d == 1 for d in t.signature):
            return src  # a scalar broadcasts the same way in every layout
        shape4 = (1,) * (4 - t.rank) + t.signature
        if all(d >= 0 for d in shape4):
            v = self.node1(
                "Reshape", [src, self.ints(f"{t.name}.4d", shape4)], f"{t.name}.4d", glue=True
            )
        else:
            axes = self.ints(f"{t.name}.4d_axes", range(4 - t.rank))
            v = self.node1("Unsqueeze", [src, axes], f"{t.name}.4d", glue=True)
        return self._permute(v, shape4, TO_NCHW, f"{t.name}.nchw")

    # ------------------------------------------------------------------ quantization
    def real(self, index: int, layout: str = NATIVE) -> Value:
        """Tensor ``index`` as float32 in ``layout``: dequantized or widened as needed."""
        key = (index, layout)
        if key in self.reals:
            return self.reals[key]
        t = self.tensor(index)
        v = self.value(index, layout)
        if t.quantized:
            axis, rank = t.quant.axis, t.rank
            if layout == NCHW and t.quant.per_channel:  # lower ranks are padded to 4 on the left
                axis, rank = TO_NCHW.index(axis + 4 - t.rank), 4
            v = self.dequantize(v, t.quant, t.dtype, f"{t.name}.real", axis, rank)
        elif t.dtype in (DType.FLOAT16, DType.BFLOAT16, DType.DOUBLE):
            v = self.node1("Cast", [v], f"{t.name}.f32", glue=True, to=int(DType.FLOAT))
        elif t.dtype != DType.FLOAT:
            return v  # integer data (indices, shapes): not a real number
        self.reals[key] = v
        return v

    def dequantize(
        self, v: Value, q: Quant, dtype: DType, hint: str, axis: int, rank: int
    ) -> Value:
        """DequantizeLinear of ``v`` (stored as ``dtype``) with ``q``'s parameters."""
        scale, zp = self.qparams(q, dtype, hint)
        per_axis = axis if q.per_channel and rank > 0 else None
        return self.node1("DequantizeLinear", [v, scale, zp], hint, glue=True, axis=per_axis)

    def qparams(self, q: Quant, dtype: DType, hint: str) -> tuple[Value, Value]:
        """Scale and zero-point initializers in ONNX's layout (scalars when per-tensor)."""
        scale = q.scale if q.per_channel else q.scale.reshape(())
        zp = q.zero_point if q.per_channel else q.zero_point.reshape(())
        return self.const(f"{hint}.scale", scale.astype(np.float32)), self.const(
            f"{hint}.zero_point", zp.astype(dtype.numpy)
        )

    def put_real(self, index: int, value: Value, layout: str = NATIVE) -> None:
        """Store float ``value`` as tensor ``index``: quantize it when that tensor is quantized."""
        t = self.tensor(index)
        if t.quantized:
            if t.quant.per_channel:
                raise Unsupported(f"output tensor '{t.name}' is quantized per channel")
            scale, zp = self.qparams(t.quant, t.dtype, t.name)
            q = self.node1(
                "QuantizeLinear",
                [value, scale, zp],
                t.name if layout == NATIVE else f"{t.name}.nchw",
                glue=True,
            )
            self.define(index, q, layout)
            return
        if t.dtype in (DType.FLOAT16, DType.BFLOAT16, DType.DOUBLE):
            value = self.node1("Cast", [value], f"{t.name}.cast", glue=True, to=int(t.dtype))
        self.define(index, value, layout)
        if t.dtype == DType.FLOAT:
            self.reals[(index, layout)] = value

    # ------------------------------------------------------------------ finishing
    def graph_input(self, index: int, symbols: dict[tuple[int, int], str]) -> Value:
        """Declare tensor ``index`` as a graph input (dynamic dims become symbols)."""
        t = self.tensor(index)
        dims: list[int | str] = [
            symbols.get((index, k), f"input{index}_dim{k}") if d < 0 else d
            for k, d in enumerate(t.signature)
        ]
        v = Value(self.name(t.name), TensorType(t.dtype, tuple(dims)))
        self.graph.inputs.append(v)
        self.define(index, v)
        if t.dtype == DType.FLOAT:
            self.reals[(index, NATIVE)] = v
        return v


def pick_layout(ctx: Context, tensors: list[Tensor], out: Tensor) -> str:
    """NCHW when the output is rank 4 and most of its rank-4 computed inputs exist as NCHW.

    Lower-rank inputs broadcast against NHWC; the context reshapes them to match NCHW.
    """
    if out.rank != 4:
        return NATIVE
    computed = [t for t in tensors if not t.is_const and t.rank == 4]
    if not computed or any(t.rank > 4 for t in tensors):
        return NATIVE
    nchw = sum(ctx.has(t.index, NCHW) for t in computed)
    native = sum(ctx.has(t.index, NATIVE) for t in computed)
    return NCHW if nchw and nchw >= native else NATIVE


def unary_layout(ctx: Context, t: Tensor) -> str:
    """The layout a unary op on ``t`` runs in: the one ``t`` was produced in."""
    return ctx.home(t.index) if t.rank == 4 else NATIVE


def _nchw_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(shape[p] for p in TO_NCHW)


def _to_nchw(data: np.ndarray) -> np.ndarray:
    """A constant broadcastable against NHWC, rearranged to broadcast against NCHW."""
    arr = data.reshape((1,) * (4 - data.ndim) + data.shape) if data.ndim < 4 else data
    return np.ascontiguousarray(arr.transpose(TO_NCHW))
