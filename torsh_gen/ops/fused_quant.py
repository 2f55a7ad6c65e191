"""Fused integer ops of the ``ai.torsh`` domain, produced by ``fuse_quant`` (pipeline O3).

A quantized model stores ``DequantizeLinear → MatMul/Gemm/Conv → QuantizeLinear`` (QDQ) or
``QLinearMatMul``/``QLinearConv`` (QOperator); both mean one integer product followed by a
requantization. These ops say exactly that, so a backend can run int8 x int8 → int32
kernels and requantize in their epilogue:

- ``QGemm(X, x_scale, x_zp, W, w_scale, w_zp, bias?, y_scale?, y_zp?)``: X (..., K) uint8
  or int8, W (K, N) int8 or uint8 (constant), w_scale/w_zp per tensor or per column (N);
- ``QConv(...)``: the same inputs with X (N, C, H...) and W (M, C/group, kH...), scales per
  tensor or per output channel, and Conv's attributes.

``com.microsoft::QGemm`` (onnxruntime's contrib op, written by its QOperator quantizer for
Gemm) is declared here too, so such models load, run in the interpreter and fuse.

Semantics (the oracle of the integer kernels, as onnxruntime's QLinear kernels compute):
``acc = sum (x - x_zp) * (w - w_zp)`` exactly in integers. With ``y_scale`` given, ``bias``
is int32 in units of ``x_scale * w_scale`` and ``y = saturate(rint(float32(acc + bias) *
m) + y_zp)`` with the float32 multiplier ``m = x_scale * w_scale / y_scale`` (rounding half
to even; the output type is y_zp's, uint8 without one); ``activation="Relu"`` raises the
lower bound to y_zp (Relu before quantization is exactly that). Without ``y_scale`` the
output is float32: ``float32(acc) * (x_scale * w_scale) + bias`` (bias float32), then Relu.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from torsh_gen.ir.graph import Node, Value
from torsh_gen.ir.types import DType, TensorType, Type
from torsh_gen.ops.fused import DOMAIN
from torsh_gen.ops.nn import _CONV_ATTRS, Conv
from torsh_gen.ops.registry import (
    FLOAT,
    INT,
    STRING,
    Cost,
    InferContext,
    OpSpec,
    RunContext,
    lookup,
    op,
)

#: Activations the integer ops apply: none or Relu.
QUANT_ACTIVATIONS = ("", "Relu")


def finish(
    acc: np.ndarray,
    axis: int,
    x_scale: np.ndarray,
    w_scale: np.ndarray,
    bias: np.ndarray | None,
    y_scale: np.ndarray | None,
    y_zp: np.ndarray | None,
    relu: bool,
) -> np.ndarray:
    """Requantize (or dequantize) the exact integer sums ``acc`` whose channel axis is
    ``axis`` (per-channel scales and bias broadcast along it)."""

    def along(v: np.ndarray) -> np.ndarray:
        v = np.asarray(v).reshape(-1)
        if v.size == 1:
            return v.reshape(())
        shape = [1] * acc.ndim
        shape[axis] = v.size
        return v.reshape(shape)

    scale = np.float32(np.asarray(x_scale).reshape(())) * np.asarray(w_scale, np.float32)
    scale = along(scale.astype(np.float32))
    if y_scale is None:
        y = acc.astype(np.float32) * scale
        if bias is not None:
            y = y + along(np.asarray(bias, np.float32))
        return np.maximum(y, np.float32(0)) if relu else y.astype(np.float32)
    if bias is not None:
        acc = acc + along(np.asarray(bias, np.int64))
    mult = (scale / np.float32(np.asarray(y_scale).reshape(()))).astype(np.float32)
    dt = np.dtype(np.uint8) if y_zp is None else np.asarray(y_zp).dtype
    zp = 0 if y_zp is None else int(np.asarray(y_zp).reshape(()))
    info = np.iinfo(dt)
    q = np.rint(acc.astype(np.float32) * mult).astype(np.int64) + zp
    return np.clip(q, max(int(info.min), zp) if relu else int(info.min), int(info.max)).astype(dt)


def _out_type(ctx: InferContext, shape: tuple | None) -> list[Type | None]:
    if len(ctx.input_types) > 7 and ctx.input_types[7] is not None:
        zt = ctx.input_type(8)
        dt = zt.dtype if isinstance(zt, TensorType) else DType.UINT8
    else:
        dt = DType.FLOAT
    return [TensorType(dt, shape)]


def _zp(v: Any) -> np.ndarray:
    return np.zeros((), np.int64) if v is None else np.asarray(v).astype(np.int64)


@op("QGemm", since=1, domain=DOMAIN)
class QGemm(OpSpec):
    """Integer product of quantized X (..., K) and W (K, N), requantized or dequantized."""

    attrs = {"activation": STRING("")}

    def run(
        self,
        ctx: RunContext,
        x: np.ndarray,
        xs: np.ndarray,
        xz: Any,
        w: np.ndarray,
        ws: np.ndarray,
        wz: Any,
        bias: Any = None,
        ys: Any = None,
        yz: Any = None,
    ) -> np.ndarray:
        acc = np.matmul(
            x.astype(np.int64) - _zp(xz).reshape(()), w.astype(np.int64) - _zp(wz).reshape(-1)
        )
        return finish(acc, acc.ndim - 1, xs, ws, bias, ys, yz, ctx.attrs.activation == "Relu")

    def infer(self, ctx: InferContext) -> list[Type | None]:
        xt, wt = ctx.input_type(0), ctx.input_type(3)
        shape = None
        if isinstance(xt, TensorType) and isinstance(wt, TensorType) and xt.shape and wt.shape:
            shape = tuple(xt.shape[:-1]) + (wt.shape[-1],)
        return _out_type(ctx, shape)

    def cost(self, ctx: InferContext, output_types: list[Type | None]) -> Cost:
        base = super().cost(ctx, output_types)
        wt, yt = ctx.input_type(3), output_types[0] if output_types else None
        if isinstance(wt, TensorType) and isinstance(yt, TensorType) and wt.shape:
            n = yt.numel()
            k = wt.shape[0]
            if n is not None and isinstance(k, int):
                base.macs = n * k
                base.flops = 2 * n * k
        return base


def _conv_view(node: Node) -> Node:
    """A look-alike ConvInteger node (X, W) carrying the convolution attributes."""
    attrs = {k: a for k, a in node.attrs.items() if k != "activation"}
    ins = [node.inputs[0], node.inputs[3]]
    return Node(
        "ConvInteger", ins, [Value(o.name, o.type) for o in node.outputs], attrs, "", node.name
    )


def _conv_context(ctx: InferContext) -> tuple[OpSpec, InferContext]:
    """ConvInteger's spec and an inference context for the look-alike node: QConv's shape
    and cost are ConvInteger's over (X, W)."""
    conv = lookup("ConvInteger", "", 10)
    node = _conv_view(ctx.node)
    types_ = [ctx.input_type(0), ctx.input_type(3)]
    return conv, InferContext(node, conv.resolve_attrs(node), types_, [None, ctx.input_value(3)], 10)


@op("QConv", since=1, domain=DOMAIN)
class QConv(OpSpec):
    """Integer convolution of quantized X and W, requantized or dequantized per channel."""

    attrs = dict(_CONV_ATTRS, activation=STRING(""))

    def run(
        self,
        ctx: RunContext,
        x: np.ndarray,
        xs: np.ndarray,
        xz: Any,
        w: np.ndarray,
        ws: np.ndarray,
        wz: Any,
        bias: Any = None,
        ys: Any = None,
        yz: Any = None,
    ) -> np.ndarray:
        conv = lookup("ConvInteger", "", 10)
        node = _conv_view(ctx.node)
        sub = RunContext(node, conv.resolve_attrs(node), 10, 1, ctx.run_graph, ctx.rng)
        xf = x.astype(np.float64) - _zp(xz).reshape(())
        wzp = _zp(wz).reshape(-1)
        wf = w.astype(np.float64) - (
            wzp.reshape((-1,) + (1,) * (w.ndim - 1)) if wzp.size > 1 else wzp[0]
        )
        acc = np.rint(Conv.conv(conv, sub, xf, wf)).astype(np.int64)
        return finish(acc, 1, xs, ws, bias, ys, yz, ctx.attrs.activation == "Relu")

    def infer(self, ctx: InferContext) -> list[Type | None]:
        conv, sub = _conv_context(ctx)
        out = conv.infer(sub)
        t = out[0] if out else None
        return _out_type(ctx, t.shape if isinstance(t, TensorType) else None)

    def cost(self, ctx: InferContext, output_types: list[Type | None]) -> Cost:
        conv, sub = _conv_context(ctx)
        return conv.cost(sub, output_types)


@op("QGemm", since=1, domain="com.microsoft")
class MsQGemm(OpSpec):
    """onnxruntime's contrib QGemm, which ``quantize_static`` writes for Gemm in QOperator
    format: ``alpha * (A' - a_zp) @ (B' - b_zp) + C`` in int32 (C int32 in units of
    a_scale * b_scale), then requantized with (y_scale, y_zp) or dequantized to float32."""

    attrs = {"alpha": FLOAT(1.0), "transA": INT(0), "transB": INT(0)}

    def run(
        self,
        ctx: RunContext,
        a: np.ndarray,
        a_s: np.ndarray,
        a_zp: Any,
        b: np.ndarray,
        b_s: np.ndarray,
        b_zp: Any,
        c: Any = None,
        ys: Any = None,
        yz: Any = None,
    ) -> np.ndarray:
        at = a.T if ctx.attrs.transA else a
        bt = b.T if ctx.attrs.transB else b
        acc = np.matmul(
            at.astype(np.int64) - _zp(a_zp).reshape(()), bt.astype(np.int64) - _zp(b_zp).reshape(-1)
        )
        if c is not None:
            acc = acc + c.astype(np.int64)
        ws = np.asarray(b_s, np.float32) * np.float32(ctx.attrs.alpha)
        return finish(acc, 1, a_s, ws, None, ys, yz, False)

    def infer(self, ctx: InferContext) -> list[Type | None]:
        at, bt = ctx.input_type(0), ctx.input_type(3)
        shape = None
        if (
            isinstance(at, TensorType)
            and isinstance(bt, TensorType)
            and at.rank == 2
            and bt.rank == 2
        ):
            shape = (at.shape[1 if ctx.attrs.transA else 0], bt.shape[0 if ctx.attrs.transB else 1])
        return _out_type(ctx, shape)


@op("Q4MatMul", since=1, domain=DOMAIN)
class Q4MatMul(OpSpec):
    """``A @ dequantize(W)`` for float32 A (..., K) and block-quantized 4-bit weights W
    (K, N) held as int8 values, with float32 scales (K / block_size, N) and optional int8
    zero points of the same shape (blocks along K, as DequantizeLinear with
    ``block_size``): the weight-only int4 form of ``torsh-gen quantize --mode weight-int4``."""

    attrs = {"block_size": INT(32)}

    def run(
        self, ctx: RunContext, a: np.ndarray, w: np.ndarray, s: np.ndarray, z: Any = None
    ) -> np.ndarray:
        bs = int(ctx.attrs.block_size)
        rows = np.arange(w.shape[0]) // bs
        q = w.astype(np.float32)
        if z is not None:
            q = q - z.astype(np.float32)[rows]
        return np.matmul(a.astype(np.float32), q * s.astype(np.float32)[rows])

    def infer(self, ctx: InferContext) -> list[Type | None]:
        at, wt = ctx.input_type(0), ctx.input_type(1)
        shape = None
        if isinstance(at, TensorType) and isinstance(wt, TensorType) and at.shape and wt.shape:
            shape = tuple(at.shape[:-1]) + (wt.shape[-1],)
        return [TensorType(DType.FLOAT, shape)]
