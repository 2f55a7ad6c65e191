"""Data-movement operators: reshape, transpose, concatenation, padding and slicing.

These only move values, so on quantized tensors whose input and output share scale and
zero point they run on the stored integers (exact, no QDQ). Reshape and transpose work
on the model's own layout; concatenation, padding and slicing of rank-4 tensors follow
the layout their input already has.
"""

from __future__ import annotations

import numpy as np

from torsh_gen.frontends.tflite.context import (
    NATIVE,
    NCHW,
    TO_NCHW,
    TO_NHWC,
    Context,
    pick_layout,
    unary_layout,
)
from torsh_gen.frontends.tflite.reader import Model, Operator, Tensor
from torsh_gen.frontends.tflite.registry import (
    activate,
    activation_name,
    check_activation,
    converter,
)
from torsh_gen.ir.graph import Value
from torsh_gen.ir.types import DType

_INT64_MAX = np.iinfo(np.int64).max
_INT64_MIN = np.iinfo(np.int64).min


def exact_move(x: Tensor, out: Tensor) -> bool:
    """True when ``out`` holds ``x``'s stored values rearranged (same dtype and quantization)."""
    if x.dtype != out.dtype:
        return False
    if x.quantized or out.quantized:
        return x.quantized and out.quantized and x.quant.same_as(out.quant)
    return True


def _const_input(k: int, what: str):
    def check(op: Operator, model: Model) -> str | None:
        i = op.inputs[k] if k < len(op.inputs) else -1
        if i >= 0 and not model.tensors[i].is_const:
            return f"{op.opcode} with a computed {what}"
        return None

    return check


def _move(ctx: Context, x: Tensor, out: Tensor, layout: str, build) -> None:
    """Apply ``build(value) -> Value`` on stored values when exact, else on reals."""
    if exact_move(x, out):
        ctx.define(out.index, build(ctx.value(x.index, layout)), layout)
    else:
        ctx.put_real(out.index, build(ctx.real(x.index, layout)), layout)


@converter("RESHAPE")
def reshape(ctx: Context, op: Operator) -> None:
    """RESHAPE → Reshape to the shape input (or the option, or the output's signature)."""
    x, out = ctx.input(0), ctx.output()
    s = ctx.input(1)
    if s is not None and not s.is_const:
        shape: Value = ctx.node1(
            "Cast", [ctx.value(s.index)], f"{out.name}/shape", to=int(DType.INT64)
        )
        zero = False
    else:
        if s is not None:
            dims = [int(d) for d in s.data.reshape(-1)]
        elif op.options is not None and getattr(op.options, "newShape", None) is not None:
            dims = [int(d) for d in op.options.newShape]
        else:
            dims = list(out.signature)
        if dims.count(-1) > 1:
            dims = list(out.signature)
        shape, zero = ctx.ints(f"{out.name}/shape", dims), 0 in dims
    extra = {"allowzero": 1} if zero else {}
    _move(ctx, x, out, NATIVE, lambda v: ctx.node1("Reshape", [v, shape], out.name, **extra))


@converter("SQUEEZE")
def squeeze(ctx: Context, op: Operator) -> None:
    """SQUEEZE → Squeeze of the listed axes (every size-1 axis when none are listed)."""
    x, out = ctx.input(0), ctx.output()
    dims = [int(d) % x.rank for d in (getattr(op.options, "squeezeDims", None) or [])]
    if not dims:
        dims = [i for i, d in enumerate(x.signature) if d == 1]
    axes = ctx.ints(f"{out.name}/axes", sorted(dims))
    _move(ctx, x, out, NATIVE, lambda v: ctx.node1("Squeeze", [v, axes], out.name))


@converter("EXPAND_DIMS", arity=2, check=_const_input(1, "axis"))
def expand_dims(ctx: Context, op: Operator) -> None:
    """EXPAND_DIMS → Unsqueeze."""
    x, out = ctx.input(0), ctx.output()
    axis = int(ctx.input(1).data.reshape(-1)[0])
    axes = ctx.ints(f"{out.name}/axes", [axis % (x.rank + 1)])
    _move(ctx, x, out, NATIVE, lambda v: ctx.node1("Unsqueeze", [v, axes], out.name))


@converter("TRANSPOSE", arity=2, check=_const_input(1, "permutation"))
def transpose(ctx: Context, op: Operator) -> None:
    """TRANSPOSE → Transpose."""
    x, out = ctx.input(0), ctx.output()
    perm = [int(p) % x.rank for p in ctx.input(1).data.reshape(-1)]
    _move(ctx, x, out, NATIVE, lambda v: ctx.node1("Transpose", [v], out.name, perm=perm))


@converter("CONCATENATION", check=check_activation)
def concatenation(ctx: Context, op: Operator) -> None:
    """CONCATENATION → Concat (on stored integers when all inputs share the output's scale)."""
    out = ctx.output()
    ins = [ctx.tensor(i) for i in op.inputs]
    axis = int(getattr(op.options, "axis", 0)) % out.rank
    layout = pick_layout(ctx, ins, out)
    ax = axis if layout == NATIVE else TO_NCHW.index(axis)
    name = out.name if layout == NATIVE else f"{out.name}.nchw"
    if activation_name(op) == "NONE" and all(exact_move(t, out) for t in ins):
        ctx.define(
            out.index,
            ctx.node1("Concat", [ctx.value(t.index, layout) for t in ins], name, axis=ax),
            layout,
        )
        return
    y = ctx.node1("Concat", [ctx.real(t.index, layout) for t in ins], f"{out.name}/concat", axis=ax)
    ctx.put_real(out.index, activate(ctx, y, op, out.name), layout)


def _pads(ctx: Context, op: Operator, x: Tensor, layout: str) -> list[int]:
    p = ctx.input(1).data.reshape(x.rank, 2).astype(np.int64)
    if layout == NCHW:
        p = p[TO_NCHW]
    return [int(v) for v in p[:, 0]] + [int(v) for v in p[:, 1]]


@converter("PAD", "PADV2", arity=2, check=_const_input(1, "padding"))
def pad(ctx: Context, op: Operator) -> None:
    """PAD/PADV2 → Pad with a constant (the zero point for quantized tensors: exact)."""
    x, out = ctx.input(0), ctx.output()
    layout = unary_layout(ctx, x)
    pads = ctx.ints(f"{out.name}/pads", _pads(ctx, op, x, layout))
    fill = ctx.input(2)
    name = out.name if layout == NATIVE else f"{out.name}.nchw"
    if exact_move(x, out) and (fill is None or fill.is_const):
        if fill is not None:
            c = fill.data.reshape(()).astype(x.dtype.numpy)
        else:
            zp = x.quant.zero_point[0] if x.quantized else 0
            c = np.array(zp, dtype=x.dtype.numpy)
        value = ctx.const(f"{out.name}/value", c)
        ctx.define(
            out.index, ctx.node1("Pad", [ctx.value(x.index, layout), pads, value], name), layout
        )
        return
    value = (
        ctx.real(fill.index) if fill is not None else ctx.const(f"{out.name}/value", np.float32(0))
    )
    ctx.put_real(
        out.index,
        ctx.node1("Pad", [ctx.real(x.index, layout), pads, value], f"{out.name}/pad"),
        layout,
    )


def _check_strided(op: Operator, model: Model) -> str | None:
    for k, what in ((1, "begin"), (2, "end"), (3, "strides")):
        if not model.tensors[op.inputs[k]].is_const:
            return f"STRIDED_SLICE with a computed {what}"
    o = op.options
    if o is not None and (int(o.ellipsisMask) or int(o.newAxisMask)):
        return "STRIDED_SLICE with ellipsis or new-axis masks"
    return None


@converter("STRIDED_SLICE", arity=4, check=_check_strided)
def strided_slice(ctx: Context, op: Operator) -> None:
    """STRIDED_SLICE → Slice (+ Squeeze of shrunk axes), masks resolved to explicit bounds."""
    x, out = ctx.input(0), ctx.output()
    begin, end, steps = (ctx.input(k).data.reshape(-1).astype(np.int64) for k in (1, 2, 3))
    o = op.options
    bmask, emask, shrink = (
        int(getattr(o, f, 0) or 0) for f in ("beginMask", "endMask", "shrinkAxisMask")
    )
    offset = bool(getattr(o, "offset", False))
    starts, ends, strides, squeeze = [], [], [], []
    for i in range(len(begin)):
        b, e, s = int(begin[i]), int(end[i]), int(steps[i])
        if offset:
            e = b + e
        if shrink >> i & 1:
            starts.append(b)
            ends.append(_INT64_MAX if b == -1 else b + 1)
            strides.append(1)
            squeeze.append(i)
            continue
        if bmask >> i & 1:
            b = 0 if s > 0 else _INT64_MAX
        if emask >> i & 1:
            e = _INT64_MAX if s > 0 else _INT64_MIN
        starts.append(b)
        ends.append(e)
        strides.append(s)
    axes = list(range(len(starts)))
    layout = unary_layout(ctx, x) if not squeeze else NATIVE
    if layout == NCHW:
        axes = [TO_NCHW.index(a) for a in axes]
    args = [
        ctx.ints(f"{out.name}/{k}", v)
        for k, v in (("starts", starts), ("ends", ends), ("axes", axes), ("steps", strides))
    ]
    name = out.name if layout == NATIVE and not squeeze else f"{out.name}/slice"
    if layout == NCHW:
        name = f"{out.name}.nchw"

    def build(v: Value) -> Value:
        y = ctx.node1("Slice", [v, *args], name)
        if squeeze:
            y = ctx.node1("Squeeze", [y, ctx.ints(f"{out.name}/squeeze_axes", squeeze)], out.name)
        return y

    _move(ctx, x, out, layout, build)


@converter(
    "SLICE",
    arity=3,
    check=lambda op, m: _const_input(1, "begin")(op, m) or _const_input(2, "size")(op, m),
)
def slice_(ctx: Context, op: Operator) -> None:
    """SLICE (begin, size) → Slice; a size of -1 runs to the end."""
    x, out = ctx.input(0), ctx.output()
    begin = [int(v) for v in ctx.input(1).data.reshape(-1)]
    size = [int(v) for v in ctx.input(2).data.reshape(-1)]
    ends = [_INT64_MAX if n < 0 else b + n for b, n in zip(begin, size)]
    starts_v, ends_v = ctx.ints(f"{out.name}/starts", begin), ctx.ints(f"{out.name}/ends", ends)
    axes_v = ctx.ints(f"{out.name}/axes", range(len(begin)))
    _move(
        ctx, x, out, NATIVE, lambda v: ctx.node1("Slice", [v, starts_v, ends_v, axes_v], out.name)
    )


@converter("PACK")
def pack(ctx: Context, op: Operator) -> None:
    """PACK → Unsqueeze each input, Concat."""
    out = ctx.output()
    ins = [ctx.tensor(i) for i in op.inputs]
    axis = int(getattr(op.options, "axis", 0)) % out.rank
    axes = ctx.ints(f"{out.name}/axes", [axis])
    if all(exact_move(t, out) for t in ins):
        parts = [
            ctx.node1("Unsqueeze", [ctx.value(t.index), axes], f"{out.name}/part") for t in ins
        ]
        ctx.define(out.index, ctx.node1("Concat", parts, out.name, axis=axis))
        return
    parts = [ctx.node1("Unsqueeze", [ctx.real(t.index), axes], f"{out.name}/part") for t in ins]
    ctx.put_real(out.index, ctx.node1("Concat", parts, f"{out.name}/concat", axis=axis))


@converter("SHAPE")
def shape(ctx: Context, op: Operator) -> None:
    """SHAPE → a constant when the input's shape is static, else Shape + Cast."""
    x, out = ctx.input(0), ctx.output()
    if all(d >= 0 for d in x.signature):
        ctx.define(out.index, ctx.const(out.name, np.asarray(x.signature, dtype=out.dtype.numpy)))
        return
    if x.rank == 4 and ctx.home(x.index) == NCHW:  # the native shape, read off the NCHW form
        s = ctx.node1("Shape", [ctx.value(x.index, NCHW)], f"{out.name}/shape")
        s = ctx.node1("Gather", [s, ctx.ints(f"{out.name}/nhwc", TO_NHWC)], f"{out.name}/nhwc")
    else:
        s = ctx.node1("Shape", [ctx.value(x.index)], f"{out.name}/shape")
    ctx.define(out.index, ctx.node1("Cast", [s], out.name, to=int(out.dtype)))
