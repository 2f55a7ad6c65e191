"""Op quantizers: one class per quantizable op, registered by op type.

Each quantizer knows where its op keeps its weight, which weight axis holds output
channels (per-channel scales) and which is reduced over (int4 blocks), and how to write
the op in each mode and format. ``check`` says why a node cannot be quantized (the node
then stays float and the reason is reported); the ``rewrite_*`` methods assume it passed.

Written forms:
- static QDQ: activation → Q → DQ, weight int8 → DQ, bias int32 → DQ, op in float, and a
  Q/DQ pair on the op's output when the next op reads it (onnxruntime then fuses the
  group into an integer kernel);
- static QOperator: QLinearConv / QLinearMatMul between a QuantizeLinear of the input and
  a DequantizeLinear of the output (Gemm is split into MatMul + Add beforehand);
- dynamic QDQ: DynamicQuantizeLinear → DQ on the activation, int8 weight → DQ;
- dynamic QOperator: DynamicQuantizeLinear → MatMulInteger/ConvInteger → Cast → Mul by
  the product of scales → Add bias;
- weight-int4: blocked int4 weight → DequantizeLinear (opset 21), float activations.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from torsh_gen.ir.graph import Node, Value
from torsh_gen.ir.types import DType, TensorType
from torsh_gen.passes.quantize.builder import QuantContext, like
from torsh_gen.passes.quantize.numeric import (
    QuantizedWeight,
    quantize_bias,
    quantize_weight_int4,
    quantize_weight_int8,
)
from torsh_gen.passes.quantize.options import QuantFormat, QuantMode

#: op type → its quantizer (filled by ``@quantizer``).
QUANTIZERS: dict[str, OpQuantizer] = {}


def quantizer(cls: type[OpQuantizer]) -> type[OpQuantizer]:
    """Class decorator registering an op quantizer under its ``op_type``."""
    QUANTIZERS[cls.op_type] = cls()
    return cls


def _float_tensor(v: Value | None) -> bool:
    """float32, or of unknown type (callers infer types first; unknown means not inferable)."""
    return v is not None and (
        v.type is None or isinstance(v.type, TensorType) and v.type.dtype == DType.FLOAT
    )


class OpQuantizer:
    """Base class: the shared QDQ rewrite; subclasses add their op's specifics."""

    op_type: ClassVar[str] = ""
    #: Modes this op can be quantized in.
    modes: ClassVar[tuple[QuantMode, ...]] = (QuantMode.DYNAMIC, QuantMode.STATIC)
    #: QDQ form: write the weight's zero point, and store the bias as int32 (scale
    #: x_scale * w_scale) where onnxruntime needs that to fuse the group into an integer
    #: kernel: for a Gemm/MatMul whose output stays float. It fuses Conv, and Gemms
    #: whose output is quantized again, with a float bias (quantizing it itself), and a
    #: float bias is exact and smaller.
    qdq_weight_zero_point: ClassVar[bool] = True
    qdq_int_bias_if_float_output: ClassVar[bool] = True

    # ---------------------------------------------------------------- op specifics
    def applies(self, node: Node) -> bool:
        """Whether ``node`` is the kind this quantizer is about (others are not even listed)."""
        return True

    def channel_axis(self, node: Node) -> int:
        """Axis of the weight that indexes output channels."""
        raise NotImplementedError

    def reduce_axis(self, node: Node) -> int:
        """Axis of the weight that the op sums over (int4 blocks run along it)."""
        raise NotImplementedError

    def bias_index(self, node: Node) -> int | None:
        """Input index of a bias that can be stored as int32, or None."""
        return None

    # ---------------------------------------------------------------- checks
    def check(self, node: Node, ctx: QuantContext) -> str | None:
        """Why ``node`` cannot be quantized with ``ctx.options``, or None when it can."""
        opts = ctx.options
        if opts.mode not in self.modes:
            return f"{self.op_type} has no {opts.mode.value} form"
        if not _float_tensor(node.inputs[0]):
            return "input is not float32"
        w = node.inputs[1] if len(node.inputs) > 1 else None
        if w is None or w.const is None:
            return "second input is computed, not a constant weight (activation x activation)"
        if w.const.dtype != np.float32:
            return "weight is not float32"
        if opts.mode == QuantMode.STATIC and not ctx.has_range(node.inputs[0]):
            return "no calibrated range for its input"
        if (
            opts.mode == QuantMode.STATIC
            and opts.format == QuantFormat.QOPERATOR
            and not ctx.has_range(ctx.output_target(node)[0])
        ):
            return "no calibrated range for its output"
        return None

    # ---------------------------------------------------------------- rewrites
    def rewrite(self, node: Node, ctx: QuantContext) -> None:
        """Quantize ``node`` in place as ``ctx.options`` asks."""
        opts = ctx.options
        if opts.mode == QuantMode.WEIGHT_INT4:
            self.rewrite_int4(node, ctx)
        elif opts.format == QuantFormat.QOPERATOR:
            if opts.mode == QuantMode.STATIC:
                self.rewrite_static_qoperator(node, ctx)
            else:
                self.rewrite_dynamic_qoperator(node, ctx)
        else:
            self.rewrite_qdq(node, ctx)

    def int8_weight(
        self, node: Node, ctx: QuantContext, w: np.ndarray | None = None, axis: int | None = None
    ) -> QuantizedWeight:
        """The node's weight (or ``w``) as int8, per channel when the options ask."""
        arr = node.inputs[1].const if w is None else w
        per = ctx.options.per_channel
        return quantize_weight_int8(
            arr, (self.channel_axis(node) if axis is None else axis) if per else None
        )

    def rewrite_qdq(self, node: Node, ctx: QuantContext) -> None:
        """Static or dynamic QDQ form (see the module docstring)."""
        static = ctx.options.mode == QuantMode.STATIC
        x = node.inputs[0]
        node.inputs[0] = ctx.fake_quantized(x) if static else ctx.dynamic_fake_quantized(x)
        qw = self.int8_weight(node, ctx)
        hint = node.inputs[1].name
        zp = static and self.qdq_weight_zero_point
        node.inputs[1] = ctx.weight_dq(hint, qw, zero_point=zp, replaces=node.inputs[1])
        requantize = (
            static
            and not any(o is node.outputs[0] for o in ctx.graph.outputs)
            and ctx.has_range(ctx.output_target(node)[0])
        )
        bi = self.bias_index(node)
        b = node.inputs[bi] if bi is not None and bi < len(node.inputs) else None
        int_bias = self.qdq_int_bias_if_float_output and not requantize
        if static and int_bias and b is not None and b.const is not None and b.const.ndim == 1:
            bq, bs = quantize_bias(b.const, ctx.act_params(x).scale, qw.scale)
            qb = QuantizedWeight(bq, bs, 0 if bs.ndim else None)
            node.inputs[bi] = ctx.weight_dq(b.name, qb, replaces=b)
        if requantize:
            ctx.requantize_output(node)

    def rewrite_int4(self, node: Node, ctx: QuantContext) -> None:
        """Blocked int4 weight dequantized in front of the op."""
        w = node.inputs[1]
        qw = quantize_weight_int4(w.const, self.reduce_axis(node), ctx.options.block_size)
        node.inputs[1] = ctx.weight_dq(w.name, qw, half_scales=True, replaces=w)

    def rewrite_static_qoperator(self, node: Node, ctx: QuantContext) -> None:
        """Integer op between Q of the input and DQ of the output (ops that have one)."""
        raise NotImplementedError(f"{self.op_type} has no static QOperator form; check() says so")

    def rewrite_dynamic_qoperator(self, node: Node, ctx: QuantContext) -> None:
        """DynamicQuantizeLinear → integer op → rescale → bias (ops that have one)."""
        raise NotImplementedError(f"{self.op_type} has no dynamic QOperator form")

    # ---------------------------------------------------------------- shared pieces
    def _rescale(
        self,
        node: Node,
        ctx: QuantContext,
        acc: Value,
        xs: Value,
        ws: np.ndarray,
        bias: np.ndarray | None,
        shape: list[int],
    ) -> None:
        """float(acc) * (xs * ws) (+ bias) into the node's original output Value.

        ``shape`` reshapes per-channel scales to broadcast against ``acc``; ``bias`` must
        already broadcast against it.
        """
        y = node.outputs[0]
        f = ctx.node(
            "Cast", [acc], types=[like(y, DType.FLOAT)], hint=f"{y.name}_acc", to=int(DType.FLOAT)
        ).outputs[0]
        wsc = ctx.const(f"{y.name}_ws", ws.reshape(shape) if ws.ndim else ws)
        scale = ctx.node("Mul", [xs, wsc], types=[None], hint=f"{y.name}_scale").outputs[0]
        if bias is None:
            ctx.node("Mul", [f, scale], outputs=[y], hint=f"{y.name}_mul")
            return
        scaled = ctx.node(
            "Mul", [f, scale], types=[like(y, DType.FLOAT)], hint=f"{y.name}_mul"
        ).outputs[0]
        bc = ctx.const(f"{y.name}_b", bias.astype(np.float32))
        ctx.node("Add", [scaled, bc], outputs=[y], hint=f"{y.name}_bias")

    def _requantized_out(
        self, node: Node, ctx: QuantContext, qop: str, inputs: list[Value | None], **attrs: object
    ) -> None:
        """``qop`` writing quantized y, then DequantizeLinear into the original output.

        A Relu reading only y is folded in (see ``QuantContext.output_target``); readers
        that are quantized too reuse the integer output instead of re-quantizing it.
        """
        target, relu = ctx.output_target(node)
        if relu is not None:
            ctx.drop(relu)
        ys, yz = ctx.act_constants(target)
        q = ctx.node(
            qop,
            [*inputs[:6], ys, yz, *inputs[6:]],
            types=[like(target, DType.from_numpy(yz.const.dtype))],
            hint=f"{target.name}_{qop.lower()}",
            **attrs,
        ).outputs[0]
        ctx.node("DequantizeLinear", [q, ys, yz], outputs=[target], hint=f"{target.name}_dq")
        ctx.mark_quantized(target, q)


def _remove(ctx: QuantContext, node: Node) -> None:
    ctx.drop(node)


def _matmul_integer(node: Node, ctx: QuantContext, qw: QuantizedWeight) -> tuple[Value, Value]:
    """The dynamic QOperator product of ``node``'s input 0 (quantized at run time) and the
    int8 weight ``qw``: MatMulInteger's int32 output and the input's run-time scale."""
    xq, xs, xz = ctx.dynamic(node.inputs[0])
    wq = ctx.const(f"{node.inputs[1].name}_q", qw.data)
    acc = ctx.node(
        "MatMulInteger",
        [xq, wq, xz],
        types=[like(node.outputs[0], DType.INT32)],
        hint=f"{node.outputs[0].name}_mmi",
    ).outputs[0]
    return acc, xs


@quantizer
class MatMulQuantizer(OpQuantizer):
    """MatMul with a constant 2-d weight as its second input (linear layers, projections)."""

    op_type = "MatMul"
    modes = (QuantMode.DYNAMIC, QuantMode.STATIC, QuantMode.WEIGHT_INT4)

    def channel_axis(self, node: Node) -> int:
        return 1

    def reduce_axis(self, node: Node) -> int:
        return 0

    def check(self, node: Node, ctx: QuantContext) -> str | None:
        w = node.inputs[1]
        if w is not None and w.const is not None and w.const.ndim != 2:
            return "weight is not 2-d"
        return super().check(node, ctx)

    def rewrite_static_qoperator(self, node: Node, ctx: QuantContext) -> None:
        x = node.inputs[0]
        xs, xz = ctx.act_constants(x)
        qw = self.int8_weight(node, ctx)
        wq = ctx.const(f"{node.inputs[1].name}_q", qw.data)
        ws = ctx.const(f"{node.inputs[1].name}_s", qw.scale)
        wz = ctx.const(f"{node.inputs[1].name}_z", np.zeros(qw.scale.shape, np.int8))
        _remove(ctx, node)
        self._requantized_out(node, ctx, "QLinearMatMul", [ctx.quantized(x), xs, xz, wq, ws, wz])

    def rewrite_dynamic_qoperator(self, node: Node, ctx: QuantContext) -> None:
        qw = self.int8_weight(node, ctx)
        acc, xs = _matmul_integer(node, ctx, qw)
        _remove(ctx, node)
        self._rescale(node, ctx, acc, xs, qw.scale, None, [-1])


@quantizer
class GemmQuantizer(OpQuantizer):
    """Gemm with a constant weight B (fully connected layers as exporters write them)."""

    op_type = "Gemm"
    modes = (QuantMode.DYNAMIC, QuantMode.STATIC, QuantMode.WEIGHT_INT4)

    def channel_axis(self, node: Node) -> int:
        return 0 if node.attr("transB", 0) else 1

    def reduce_axis(self, node: Node) -> int:
        return 1 if node.attr("transB", 0) else 0

    def bias_index(self, node: Node) -> int | None:
        plain = float(node.attr("alpha", 1.0)) == 1.0 and float(node.attr("beta", 1.0)) == 1.0
        return 2 if plain else None

    def check(self, node: Node, ctx: QuantContext) -> str | None:
        if ctx.options.format == QuantFormat.QOPERATOR and ctx.options.mode == QuantMode.STATIC:
            return "Gemm has no standard QOperator form (split into MatMul + Add first)"
        if ctx.options.format == QuantFormat.QOPERATOR and node.attr("transA", 0):
            return "transposed input A"
        c = node.inputs[2] if len(node.inputs) > 2 else None
        if c is not None and c.const is None:
            return "bias C is not a constant"
        return super().check(node, ctx)

    def rewrite_dynamic_qoperator(self, node: Node, ctx: QuantContext) -> None:
        w = node.inputs[1].const.astype(np.float32) * np.float32(node.attr("alpha", 1.0))
        if node.attr("transB", 0):
            w = w.T
        qw = self.int8_weight(node, ctx, np.ascontiguousarray(w), axis=1)
        acc, xs = _matmul_integer(node, ctx, qw)
        c = node.inputs[2] if len(node.inputs) > 2 else None
        # C broadcasts against [M, N] whatever its shape (scalar, [N], [M, N]): add it as it is
        bias = (
            None if c is None else c.const.astype(np.float32) * np.float32(node.attr("beta", 1.0))
        )
        _remove(ctx, node)
        self._rescale(node, ctx, acc, xs, qw.scale, bias, [-1])


@quantizer
class ConvQuantizer(OpQuantizer):
    """Conv with a constant weight (any rank, groups, pads, strides, dilations)."""

    op_type = "Conv"
    qdq_weight_zero_point = False
    qdq_int_bias_if_float_output = False

    def channel_axis(self, node: Node) -> int:
        return 0

    def reduce_axis(self, node: Node) -> int:
        return 1

    def bias_index(self, node: Node) -> int | None:
        return 2

    def _conv_attrs(self, node: Node) -> dict[str, object]:
        return {
            k: a
            for k, a in node.attrs.items()
            if k in ("auto_pad", "dilations", "group", "kernel_shape", "pads", "strides")
        }

    def rewrite_static_qoperator(self, node: Node, ctx: QuantContext) -> None:
        x = node.inputs[0]
        xs, xz = ctx.act_constants(x)
        qw = self.int8_weight(node, ctx)
        hint = node.inputs[1].name
        wq, ws = ctx.const(f"{hint}_q", qw.data), ctx.const(f"{hint}_s", qw.scale)
        wz = ctx.const(f"{hint}_z", np.zeros(qw.scale.shape, np.int8))
        inputs: list[Value | None] = [ctx.quantized(x), xs, xz, wq, ws, wz]
        b = node.inputs[2] if len(node.inputs) > 2 else None
        if b is not None:
            bq, _ = quantize_bias(b.const, ctx.act_params(x).scale, qw.scale)
            inputs.append(ctx.const(f"{b.name}_q", bq))
        _remove(ctx, node)
        self._requantized_out(node, ctx, "QLinearConv", inputs, **self._conv_attrs(node))

    def rewrite_dynamic_qoperator(self, node: Node, ctx: QuantContext) -> None:
        xq, xs, xz = ctx.dynamic(node.inputs[0])
        qw = self.int8_weight(node, ctx)
        wq = ctx.const(f"{node.inputs[1].name}_q", qw.data)
        y = node.outputs[0]
        acc = ctx.node(
            "ConvInteger",
            [xq, wq, xz],
            types=[like(y, DType.INT32)],
            hint=f"{y.name}_convi",
            **self._conv_attrs(node),
        ).outputs[0]
        b = node.inputs[2] if len(node.inputs) > 2 else None
        shape = [1, -1] + [1] * (qw.data.ndim - 2)
        _remove(ctx, node)
        bias = None if b is None else b.const.reshape(shape)
        self._rescale(node, ctx, acc, xs, qw.scale, bias, shape)

    def check(self, node: Node, ctx: QuantContext) -> str | None:
        b = node.inputs[2] if len(node.inputs) > 2 else None
        if b is not None and b.const is None:
            return "bias is not a constant"
        return super().check(node, ctx)


@quantizer
class GatherQuantizer(OpQuantizer):
    """Gather from a constant 2-d table (token embeddings), weight only.

    Embedding tables dominate transformer encoders' size (BERT-base: a third of the
    weights). int8 modes store the table as int8 with one scale and dequantize only the
    gathered rows (Gather → DequantizeLinear, the same in both formats). Gather cannot
    read int4, so weight-int4 dequantizes the whole table in front of the Gather (blocks
    along each row): smallest file, but onnxruntime then dequantizes the table on every
    run (``--exclude Gather`` keeps it float).
    """

    op_type = "Gather"
    modes = (QuantMode.DYNAMIC, QuantMode.STATIC, QuantMode.WEIGHT_INT4)

    def reduce_axis(self, node: Node) -> int:
        return 1

    def applies(self, node: Node) -> bool:
        t = node.inputs[0] if node.inputs else None
        return (
            t is not None
            and t.const is not None
            and t.const.dtype == np.float32
            and t.const.ndim == 2
        )

    def check(self, node: Node, ctx: QuantContext) -> str | None:
        if not self.applies(node):
            return "data is not a constant 2-d float32 table"
        if node.attr("axis", 0) != 0:
            return "gathers along axis 1"
        return None

    def rewrite(self, node: Node, ctx: QuantContext) -> None:
        t = node.inputs[0]
        if ctx.options.mode == QuantMode.WEIGHT_INT4:
            qw = quantize_weight_int4(t.const, 1, ctx.options.block_size)
            node.inputs[0] = ctx.weight_dq(t.name, qw, half_scales=True, replaces=t)
            return
        qw = quantize_weight_int8(t.const, None)
        node.inputs[0] = ctx.const(f"{t.name}_q", qw.data)
        y = node.outputs[0]
        rows = Value(ctx.names.fresh(f"{y.name}_q"), like(y, DType.INT8))
        node.outputs[0] = rows
        rows.producer = node
        ctx.node(
            "DequantizeLinear",
            [rows, ctx.const(f"{t.name}_s", qw.scale)],
            outputs=[y],
            hint=f"{y.name}_dq",
        )
