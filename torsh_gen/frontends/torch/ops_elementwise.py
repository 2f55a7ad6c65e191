"""Lowerings of elementwise ATen ops: arithmetic, comparisons, logic, activations, casts.

Operands are promoted as PyTorch promotes them (``torch.result_type``), so a float tensor
times a Python int stays float32 and int tensors compared with a float compare as floats.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import fx

from torsh_gen.frontends.torch.context import TORCH_DTYPES, Lowering, Unsupported
from torsh_gen.frontends.torch.table import lowers
from torsh_gen.ir.graph import Value
from torsh_gen.ir.types import DType


def _example(ctx: Lowering, arg: Any) -> Any:
    """A tiny real tensor (or the Python number) that promotes like ``arg``."""
    if isinstance(arg, fx.Node):
        val = ctx.fake(arg)
        if isinstance(val, torch.Tensor):
            return torch.empty((1,) * min(val.dim(), 1), dtype=val.dtype)
        return 1 if ctx.dtype(arg) == DType.INT64 else 1.0
    return arg


def promoted(ctx: Lowering, a: Any, b: Any) -> DType:
    """The element type PyTorch computes ``a`` op ``b`` in."""
    ea, eb = _example(ctx, a), _example(ctx, b)
    if not isinstance(ea, torch.Tensor) and not isinstance(eb, torch.Tensor):
        return DType.FLOAT if isinstance(ea, float) or isinstance(eb, float) else DType.INT64
    return TORCH_DTYPES[torch.result_type(ea, eb)]


def operand(ctx: Lowering, arg: Any, dtype: DType) -> Value:
    """``arg`` as an IR value of element type ``dtype`` (numbers become constants)."""
    if isinstance(arg, fx.Node):
        v = ctx.value(arg)
        return v if ctx.dtype(arg) == dtype else ctx.cast(v, dtype)
    return ctx.const(np.array(arg, dtype=dtype.numpy), hint="scalar")


def _binary(ctx: Lowering, op_type: str, a: Any, b: Any, dtype: DType | None = None) -> Value:
    dt = dtype or promoted(ctx, a, b)
    return ctx.emit(op_type, [operand(ctx, a, dt), operand(ctx, b, dt)])


def _scaled(ctx: Lowering, node: fx.Node, b: Any, dt: DType) -> Value:
    alpha = node.kwargs.get("alpha", 1)
    vb = operand(ctx, b, dt)
    if alpha != 1:
        vb = ctx.emit("Mul", [vb, ctx.const(np.array(alpha, dtype=dt.numpy), hint="alpha")])
    return vb


@lowers("aten.add.Tensor", "aten.add.Scalar")
def _add(ctx: Lowering, node: fx.Node) -> Value:
    a, b = node.args[:2]
    dt = promoted(ctx, a, b)
    return ctx.emit("Add", [operand(ctx, a, dt), _scaled(ctx, node, b, dt)])


@lowers("aten.sub.Tensor", "aten.sub.Scalar")
def _sub(ctx: Lowering, node: fx.Node) -> Value:
    a, b = node.args[:2]
    dt = promoted(ctx, a, b)
    return ctx.emit("Sub", [operand(ctx, a, dt), _scaled(ctx, node, b, dt)])


@lowers("aten.rsub.Scalar", "aten.rsub.Tensor")
def _rsub(ctx: Lowering, node: fx.Node) -> Value:
    a, b = node.args[:2]
    dt = promoted(ctx, a, b)
    return ctx.emit("Sub", [operand(ctx, b, dt), _scaled(ctx, node, a, dt)])


@lowers("aten.mul.Tensor", "aten.mul.Scalar")
def _mul(ctx: Lowering, node: fx.Node) -> Value:
    if ctx.dtype(node) == DType.BOOL:
        return _binary(ctx, "And", *node.args[:2], dtype=DType.BOOL)
    return _binary(ctx, "Mul", *node.args[:2])


@lowers("aten.div.Tensor", "aten.div.Scalar", "aten.div.Tensor_mode", "aten.div.Scalar_mode")
def _div(ctx: Lowering, node: fx.Node) -> Value:
    a, b = node.args[:2]
    mode = node.kwargs.get("rounding_mode", node.args[2] if len(node.args) > 2 else None)
    out = ctx.dtype(node)
    work = out if out.is_float else DType.DOUBLE
    q = _binary(ctx, "Div", a, b, dtype=work)
    if mode == "floor":
        q = ctx.emit("Floor", [q])
    elif mode == "trunc":
        q = _trunc(ctx, q)
    return q if work == out else ctx.cast(q, out)


def _trunc(ctx: Lowering, x: Value) -> Value:
    sign = ctx.emit("Sign", [x])
    return ctx.emit("Mul", [sign, ctx.emit("Floor", [ctx.emit("Abs", [x])])])


@lowers("aten.trunc.default")
def _trunc_op(ctx: Lowering, node: fx.Node) -> Value:
    return _trunc(ctx, ctx.value(node.args[0]))


@lowers("aten.remainder.Tensor", "aten.remainder.Scalar", "aten.fmod.Tensor", "aten.fmod.Scalar")
def _remainder(ctx: Lowering, node: fx.Node) -> Value:
    a, b = node.args[:2]
    dt = promoted(ctx, a, b)
    if "fmod" in str(node.target):
        return ctx.emit("Mod", [operand(ctx, a, dt), operand(ctx, b, dt)], fmod=1)
    if dt.is_float:
        return _float_rem(ctx, a, b, dt)
    return ctx.emit("Mod", [operand(ctx, a, dt), operand(ctx, b, dt)], fmod=0)


def _float_rem(ctx: Lowering, a: Any, b: Any, dt: DType) -> Value:
    va, vb = operand(ctx, a, dt), operand(ctx, b, dt)
    floor = ctx.emit("Floor", [ctx.emit("Div", [va, vb])])
    return ctx.emit("Sub", [va, ctx.emit("Mul", [floor, vb])])


@lowers("aten.pow.Tensor_Scalar", "aten.pow.Tensor_Tensor", "aten.pow.Scalar")
def _pow(ctx: Lowering, node: fx.Node) -> Value:
    a, b = node.args[:2]
    dt = ctx.dtype(node)
    return ctx.emit("Pow", [operand(ctx, a, dt), operand(ctx, b, dt)])


@lowers("aten.maximum.default", "aten.minimum.default", "aten.fmax.default", "aten.fmin.default")
def _minmax(ctx: Lowering, node: fx.Node) -> Value:
    op_type = "Max" if "max" in str(node.target) else "Min"
    return _binary(ctx, op_type, *node.args[:2])


_COMPARE = {
    "eq": "Equal",
    "lt": "Less",
    "le": "LessOrEqual",
    "gt": "Greater",
    "ge": "GreaterOrEqual",
}


@lowers(*(f"aten.{k}.{s}" for k in (*_COMPARE, "ne") for s in ("Tensor", "Scalar")))
def _compare(ctx: Lowering, node: fx.Node) -> Value:
    kind = str(node.target).split(".")[1]
    if kind == "ne":
        return ctx.emit("Not", [_binary(ctx, "Equal", *node.args[:2])])
    return _binary(ctx, _COMPARE[kind], *node.args[:2])


_LOGIC = {"logical_and": "And", "logical_or": "Or", "logical_xor": "Xor"}


@lowers(
    *(f"aten.{k}.default" for k in _LOGIC),
    *(f"aten.bitwise_{k}.Tensor" for k in ("and", "or", "xor")),
)
def _logic(ctx: Lowering, node: fx.Node) -> Value:
    name = str(node.target).split(".")[1]
    if name.startswith("bitwise"):
        if ctx.dtype(node) != DType.BOOL:
            raise Unsupported("bitwise ops on integer tensors")
        name = name.replace("bitwise", "logical")
    return _binary(ctx, _LOGIC[name], *node.args[:2], dtype=DType.BOOL)


@lowers("aten.logical_not.default", "aten.bitwise_not.default")
def _not(ctx: Lowering, node: fx.Node) -> Value:
    if "bitwise" in str(node.target) and ctx.dtype(node) != DType.BOOL:
        raise Unsupported("bitwise_not on integer tensors")
    return ctx.emit("Not", [operand(ctx, node.args[0], DType.BOOL)])


_UNARY = {
    "abs": "Abs",
    "neg": "Neg",
    "exp": "Exp",
    "log": "Log",
    "sqrt": "Sqrt",
    "sin": "Sin",
    "cos": "Cos",
    "tan": "Tan",
    "tanh": "Tanh",
    "sigmoid": "Sigmoid",
    "relu": "Relu",
    "erf": "Erf",
    "floor": "Floor",
    "ceil": "Ceil",
    "sign": "Sign",
    "reciprocal": "Reciprocal",
    "isnan": "IsNaN",
    "asin": "Asin",
    "acos": "Acos",
    "atan": "Atan",
    "sinh": "Sinh",
    "cosh": "Cosh",
    "asinh": "Asinh",
    "acosh": "Acosh",
    "atanh": "Atanh",
}


@lowers(*(f"aten.{k}.default" for k in _UNARY))
def _unary(ctx: Lowering, node: fx.Node) -> Value:
    name = str(node.target).split(".")[1]
    x = node.args[0]
    out = ctx.dtype(node)
    return ctx.emit(
        _UNARY[name],
        [operand(ctx, x, out if name not in ("isnan", "sign", "abs", "neg") else ctx.dtype(x))],
    )


@lowers("aten.round.default")
def _round(ctx: Lowering, node: fx.Node) -> Value:
    return ctx.emit("Round", [ctx.value(node.args[0])])


@lowers("aten.rsqrt.default")
def _rsqrt(ctx: Lowering, node: fx.Node) -> Value:
    x = operand(ctx, node.args[0], ctx.dtype(node))
    return ctx.emit("Reciprocal", [ctx.emit("Sqrt", [x])])


@lowers(
    "aten.log1p.default",
    "aten.expm1.default",
    "aten.log2.default",
    "aten.log10.default",
    "aten.exp2.default",
)
def _log_exp(ctx: Lowering, node: fx.Node) -> Value:
    name = str(node.target).split(".")[1]
    dt = ctx.dtype(node)
    x = operand(ctx, node.args[0], dt)
    one = ctx.const(np.array(1, dtype=dt.numpy), hint="one")
    if name == "log1p":
        return ctx.emit("Log", [ctx.emit("Add", [x, one])])
    if name == "expm1":
        return ctx.emit("Sub", [ctx.emit("Exp", [x]), one])
    if name == "exp2":
        return ctx.emit("Pow", [ctx.const(np.array(2, dtype=dt.numpy)), x])
    base = 2.0 if name == "log2" else 10.0
    return ctx.emit(
        "Div", [ctx.emit("Log", [x]), ctx.const(np.array(math.log(base), dtype=dt.numpy))]
    )


@lowers("aten.gelu.default")
def _gelu(ctx: Lowering, node: fx.Node) -> Value:
    x = ctx.value(node.args[0])
    dt = ctx.dtype(node.args[0]).numpy
    approximate = node.kwargs.get("approximate", node.args[1] if len(node.args) > 1 else "none")
    half = ctx.const(np.array(0.5, dtype=dt), hint="half")
    one = ctx.const(np.array(1.0, dtype=dt), hint="one")
    if approximate == "tanh":
        cube = ctx.emit("Mul", [ctx.emit("Mul", [x, x]), x])
        inner = ctx.emit(
            "Add", [x, ctx.emit("Mul", [cube, ctx.const(np.array(0.044715, dtype=dt))])]
        )
        scaled = ctx.emit("Mul", [inner, ctx.const(np.array(math.sqrt(2 / math.pi), dtype=dt))])
        gate = ctx.emit("Add", [ctx.emit("Tanh", [scaled]), one])
    else:
        scaled = ctx.emit("Div", [x, ctx.const(np.array(math.sqrt(2.0), dtype=dt))])
        gate = ctx.emit("Add", [ctx.emit("Erf", [scaled]), one])
    return ctx.emit("Mul", [ctx.emit("Mul", [x, half]), gate])


@lowers("aten.silu.default")
def _silu(ctx: Lowering, node: fx.Node) -> Value:
    x = ctx.value(node.args[0])
    return ctx.emit("Mul", [x, ctx.emit("Sigmoid", [x])])


@lowers("aten.mish.default")
def _mish(ctx: Lowering, node: fx.Node) -> Value:
    x = ctx.value(node.args[0])
    return ctx.emit("Mul", [x, ctx.emit("Tanh", [ctx.emit("Softplus", [x])])])


@lowers("aten.hardswish.default")
def _hardswish(ctx: Lowering, node: fx.Node) -> Value:
    return ctx.emit("HardSwish", [ctx.value(node.args[0])])


@lowers("aten.hardsigmoid.default")
def _hardsigmoid(ctx: Lowering, node: fx.Node) -> Value:
    return ctx.emit("HardSigmoid", [ctx.value(node.args[0])], alpha=1 / 6, beta=0.5)


@lowers("aten.leaky_relu.default")
def _leaky_relu(ctx: Lowering, node: fx.Node) -> Value:
    slope = node.args[1] if len(node.args) > 1 else 0.01
    return ctx.emit("LeakyRelu", [ctx.value(node.args[0])], alpha=float(slope))


@lowers("aten.elu.default")
def _elu(ctx: Lowering, node: fx.Node) -> Value:
    alpha, scale, input_scale = (list(node.args[1:]) + [1.0, 1.0, 1.0])[:3]
    if scale != 1 or input_scale != 1:
        raise Unsupported("elu with scale or input_scale other than 1")
    return ctx.emit("Elu", [ctx.value(node.args[0])], alpha=float(alpha))


@lowers("aten.softplus.default")
def _softplus(ctx: Lowering, node: fx.Node) -> Value:
    x = ctx.value(node.args[0])
    beta, threshold = (list(node.args[1:]) + [1.0, 20.0][len(node.args) - 1 :])[:2]
    dt = ctx.dtype(node.args[0]).numpy
    bx = ctx.emit("Mul", [x, ctx.const(np.array(beta, dtype=dt))]) if beta != 1 else x
    soft = ctx.emit("Softplus", [bx])
    if beta != 1:
        soft = ctx.emit("Div", [soft, ctx.const(np.array(beta, dtype=dt))])
    big = ctx.emit("Greater", [bx, ctx.const(np.array(threshold, dtype=dt))])
    return ctx.emit("Where", [big, x, soft])


@lowers(
    "aten.hardtanh.default",
    "aten.clamp.default",
    "aten.clamp.Tensor",
    "aten.clamp_min.default",
    "aten.clamp_max.default",
)
def _clamp(ctx: Lowering, node: fx.Node) -> Value:
    name = str(node.target)
    x = node.args[0]
    if "hardtanh" in name:
        lo, hi = (list(node.args[1:]) + [-1.0, 1.0][len(node.args) - 1 :])[:2]
    elif "clamp_min" in name:
        lo, hi = node.args[1], None
    elif "clamp_max" in name:
        lo, hi = None, node.args[1]
    else:
        lo = node.kwargs.get("min", node.args[1] if len(node.args) > 1 else None)
        hi = node.kwargs.get("max", node.args[2] if len(node.args) > 2 else None)
    dt = ctx.dtype(node)
    out = operand(ctx, x, dt)
    if isinstance(lo, fx.Node) or isinstance(hi, fx.Node):
        if lo is not None:
            out = ctx.emit("Max", [out, operand(ctx, lo, dt)])
        if hi is not None:
            out = ctx.emit("Min", [out, operand(ctx, hi, dt)])
        return out
    lo_v = None if lo is None else ctx.const(np.array(lo, dtype=dt.numpy), hint="min")
    hi_v = None if hi is None else ctx.const(np.array(hi, dtype=dt.numpy), hint="max")
    return ctx.emit("Clip", [out, lo_v, hi_v])


@lowers("aten.where.self", "aten.where.ScalarSelf", "aten.where.ScalarOther", "aten.where.Scalar")
def _where(ctx: Lowering, node: fx.Node) -> Value:
    cond, a, b = node.args[:3]
    dt = ctx.dtype(node)
    return ctx.emit(
        "Where", [operand(ctx, cond, DType.BOOL), operand(ctx, a, dt), operand(ctx, b, dt)]
    )


@lowers("aten.masked_fill.Scalar", "aten.masked_fill.Tensor")
def _masked_fill(ctx: Lowering, node: fx.Node) -> Value:
    x, mask, value = node.args[:3]
    dt = ctx.dtype(x)
    return ctx.emit(
        "Where", [operand(ctx, mask, DType.BOOL), operand(ctx, value, dt), ctx.value(x)]
    )


@lowers(
    "aten._softmax.default", "aten._log_softmax.default", "aten.softmax.int", "aten.log_softmax.int"
)
def _softmax(ctx: Lowering, node: fx.Node) -> Value:
    op_type = "LogSoftmax" if "log_softmax" in str(node.target) else "Softmax"
    x, dim = node.args[:2]
    dt = ctx.dtype(node)
    return ctx.emit(op_type, [operand(ctx, x, dt)], axis=int(dim))


@lowers("aten._to_copy.default", "aten.to.dtype", "aten.to.dtype_layout", "aten._to_dtype.default")
def _to_copy(ctx: Lowering, node: fx.Node) -> Value:
    x = node.args[0]
    out = ctx.dtype(node)
    v = ctx.value(x)
    return v if ctx.dtype(x) == out else ctx.cast(v, out)


@lowers(
    "aten.clone.default",
    "aten.alias.default",
    "aten.detach.default",
    "aten.contiguous.default",
    "aten.lift_fresh_copy.default",
    "aten.dropout.default",
    "aten.copy.default",
)
def _identity(ctx: Lowering, node: fx.Node) -> Value:
    if "copy.default" == str(node.target).split("aten.")[-1]:
        src = node.args[1]
        return operand(ctx, src, ctx.dtype(node))
    return ctx.value(node.args[0])
