"""Emitters for elementwise ops: numpy ufuncs writing into planned buffers (``out=``).

Each emitter computes what the op's reference kernel computes; where the reference
widens (float64 sigmoid) the fast path stays in the input's float type, which agrees
to well within the conformance tolerances. Emitters decline (the reference kernel
runs) for types they do not cover: 16-bit and ml_dtypes floats, integer division,
legacy (pre-opset-7) broadcasting. Multi-step emitters never read an input after
writing their output buffer, since the memory plan may place the output in place.
"""

from __future__ import annotations

from torsh_gen.backends.python.context import NodeCtx
from torsh_gen.backends.python.emitters import emits
from torsh_gen.ir.types import DType

FLOATS = (DType.FLOAT, DType.DOUBLE)
PLAIN = FLOATS + (DType.INT8, DType.INT16, DType.INT32, DType.INT64, DType.UINT8, DType.UINT16,
                  DType.UINT32, DType.UINT64, DType.BOOL)


def dtypes(ctx: NodeCtx, n: int | None = None) -> list[DType] | None:
    """The element types of the first ``n`` inputs (all given ones), None if any is unknown."""
    count = ctx.n_in() if n is None else n
    out = []
    for i in range(count):
        t = ctx.in_tensor(i)
        if t is None or ctx.x(i) is None:
            return None
        out.append(t.dtype)
    return out


def same_float(ctx: NodeCtx, n: int | None = None) -> DType | None:
    """The common float type (float32/float64) of the inputs, else None."""
    ds = dtypes(ctx, n)
    if not ds or any(d != ds[0] for d in ds) or ds[0] not in FLOATS:
        return None
    return ds[0]


def legacy(ctx: NodeCtx) -> bool:
    """True for pre-opset-7 nodes that use the ``broadcast``/``axis`` attributes."""
    return ctx.opset < 7 and ("broadcast" in ctx.node.attrs or "axis" in ctx.node.attrs)


_UFUNC1 = {
    "Abs": "np.abs", "Neg": "np.negative", "Exp": "np.exp", "Log": "np.log", "Sqrt": "np.sqrt",
    "Reciprocal": "np.reciprocal", "Floor": "np.floor", "Ceil": "np.ceil", "Round": "np.rint",
    "Sign": "np.sign", "Sin": "np.sin", "Cos": "np.cos", "Tan": "np.tan", "Asin": "np.arcsin",
    "Acos": "np.arccos", "Atan": "np.arctan", "Sinh": "np.sinh", "Cosh": "np.cosh",
    "Asinh": "np.arcsinh", "Acosh": "np.arccosh", "Atanh": "np.arctanh", "Tanh": "np.tanh",
}


@emits(*_UFUNC1)
def unary(ctx: NodeCtx) -> bool:
    """One float ufunc."""
    if same_float(ctx, 1) is None:
        return False
    ctx.emit(f"{ctx.y()} = {_UFUNC1[ctx.node.op_type]}({ctx.x(0)}{ctx.out_kw()})")
    return True


@emits("Relu")
def relu(ctx: NodeCtx) -> bool:
    """max(x, 0)."""
    if same_float(ctx, 1) is None:
        return False
    ctx.emit(f"{ctx.y()} = np.maximum({ctx.x(0)}, 0{ctx.out_kw()})")
    return True


@emits("Sigmoid")
def sigmoid(ctx: NodeCtx) -> bool:
    """1 / (1 + exp(-x)) in the input's float type, in one buffer."""
    if same_float(ctx, 1) is None:
        return False
    y = ctx.y()
    ctx.emit(f"{y} = {ctx.arr(f'np.negative({ctx.x(0)}{ctx.out_kw()})')}\nnp.exp({y}, out={y})\nnp.add({y}, 1, out={y})\nnp.reciprocal({y}, out={y})")
    return True


@emits("Softsign")
def softsign(ctx: NodeCtx) -> bool:
    """x / (1 + |x|)."""
    if same_float(ctx, 1) is None:
        return False
    t = ctx.tmp("den")
    ctx.emit(f"{t} = np.asarray(np.abs({ctx.x(0)}))\nnp.add({t}, 1, out={t})\n{ctx.y()} = np.divide({ctx.x(0)}, {t}{ctx.out_kw()})\ndel {t}")
    return True


@emits("Softplus")
def softplus(ctx: NodeCtx) -> bool:
    """log(1 + exp(x)) without overflow."""
    if same_float(ctx, 1) is None:
        return False
    ctx.emit(f"{ctx.y()} = np.logaddexp(0, {ctx.x(0)}{ctx.out_kw()})")
    return True


@emits("LeakyRelu")
def leaky_relu(ctx: NodeCtx) -> bool:
    """x where x >= 0, alpha * x elsewhere."""
    dt = same_float(ctx, 1)
    if dt is None:
        return False
    x = ctx.x(0)
    alpha = f"{ctx.dtype(dt)}({ctx.lit(float(ctx.attrs.alpha))})"
    ctx.emit(f"{ctx.y()} = np.where({x} >= 0, {x}, {x} * {alpha})")
    return True


@emits("HardSigmoid")
def hard_sigmoid(ctx: NodeCtx) -> bool:
    """clip(alpha * x + beta, 0, 1)."""
    dt = same_float(ctx, 1)
    if dt is None:
        return False
    y, d = ctx.y(), ctx.dtype(dt)
    a, b = ctx.lit(float(ctx.attrs.alpha)), ctx.lit(float(ctx.attrs.beta))
    ctx.emit(f"{y} = {ctx.arr(f'np.multiply({ctx.x(0)}, {d}({a}){ctx.out_kw()})')}\nnp.add({y}, {d}({b}), out={y})\nnp.clip({y}, 0, 1, out={y})")
    return True


@emits("HardSwish")
def hard_swish(ctx: NodeCtx) -> bool:
    """x * clip(x / 6 + 1/2, 0, 1)."""
    dt = same_float(ctx, 1)
    if dt is None:
        return False
    x, t, d = ctx.x(0), ctx.tmp("gate"), ctx.dtype(dt)
    ctx.emit(f"{t} = np.asarray(np.divide({x}, {d}(6)))\nnp.add({t}, {d}(0.5), out={t})\nnp.clip({t}, 0, 1, out={t})")
    ctx.emit(f"{ctx.y()} = np.multiply({x}, {t}{ctx.out_kw()})\ndel {t}")
    return True


@emits("PRelu")
def prelu(ctx: NodeCtx) -> bool:
    """x where x >= 0, slope * x elsewhere (opset 7 broadcasting)."""
    if ctx.node.domain or ctx.opset < 7 or same_float(ctx, 2) is None:
        return False
    x, s = ctx.x(0), ctx.x(1)
    ctx.emit(f"{ctx.y()} = np.where({x} >= 0, {x}, {x} * {s})")
    return True


_UFUNC2 = {"Add": "np.add", "Sub": "np.subtract", "Mul": "np.multiply", "Div": "np.divide", "Pow": "np.power"}


@emits(*_UFUNC2)
def arithmetic(ctx: NodeCtx) -> bool:
    """Binary arithmetic on two inputs of one type (integers too, except Div and Pow)."""
    ds = dtypes(ctx, 2)
    if not ds or ds[0] != ds[1] or legacy(ctx):
        return False
    op = ctx.node.op_type
    if ds[0] not in (FLOATS if op in ("Div", "Pow") else PLAIN) or ds[0] == DType.BOOL:
        return False
    ctx.emit(f"{ctx.y()} = {_UFUNC2[op]}({ctx.x(0)}, {ctx.x(1)}{ctx.out_kw()})")
    return True


_LOGIC = {
    "And": "np.logical_and", "Or": "np.logical_or", "Xor": "np.logical_xor", "Equal": "np.equal",
    "Less": "np.less", "LessOrEqual": "np.less_equal", "Greater": "np.greater",
    "GreaterOrEqual": "np.greater_equal", "BitwiseAnd": "np.bitwise_and",
    "BitwiseOr": "np.bitwise_or", "BitwiseXor": "np.bitwise_xor",
}


@emits(*_LOGIC)
def logic(ctx: NodeCtx) -> bool:
    """Comparisons and logic: the reference's own ufunc (bool results)."""
    ds = dtypes(ctx, 2)
    if not ds or legacy(ctx) or any(d not in PLAIN for d in ds):
        return False
    ctx.emit(f"{ctx.y()} = {_LOGIC[ctx.node.op_type]}({ctx.x(0)}, {ctx.x(1)}{ctx.out_kw()})")
    return True


@emits("Not", "IsNaN", "BitwiseNot")
def logic1(ctx: NodeCtx) -> bool:
    """Unary logic and NaN tests."""
    ds = dtypes(ctx, 1)
    if not ds or ds[0] not in PLAIN:
        return False
    fn = {"Not": "np.logical_not", "IsNaN": "np.isnan", "BitwiseNot": "np.invert"}[ctx.node.op_type]
    ctx.emit(f"{ctx.y()} = {fn}({ctx.x(0)}{ctx.out_kw()})")
    return True


@emits("Where")
def where(ctx: NodeCtx) -> bool:
    """np.where with broadcasting."""
    ds = dtypes(ctx, 3)
    if not ds or any(d not in PLAIN for d in ds):
        return False
    ctx.emit(f"{ctx.y()} = np.where({ctx.x(0)}, {ctx.x(1)}, {ctx.x(2)})")
    return True


@emits("Max", "Min", "Sum", "Mean")
def variadic(ctx: NodeCtx) -> bool:
    """A fold of np.maximum/minimum/add over the inputs (Mean divides at the end)."""
    ds = dtypes(ctx)
    if not ds or any(d != ds[0] for d in ds) or ds[0] not in PLAIN or ds[0] == DType.BOOL:
        return False
    op = ctx.node.op_type
    if op == "Mean" and ds[0] not in FLOATS:
        return False
    fn = {"Max": "np.maximum", "Min": "np.minimum", "Sum": "np.add", "Mean": "np.add"}[op]
    xs = [ctx.x(i) for i in range(ctx.n_in())]
    y = ctx.y()
    if len(xs) == 1:
        ctx.emit(f"{y} = np.array({xs[0]}, copy=True)")
    else:
        out = ctx.out_kw() if len(xs) == 2 else ""
        ctx.emit(f"{y} = {ctx.arr(f'{fn}({xs[0]}, {xs[1]}{out})')}")
        for x in xs[2:]:
            ctx.emit(f"{y} = {fn}({y}, {x})")
    if op == "Mean":
        ctx.emit(f"{y} = np.divide({y}, {ctx.dtype(ds[0])}({len(xs)}){', out=' + y if len(xs) == 2 else ''})")
    return True


@emits("Clip")
def clip(ctx: NodeCtx) -> bool:
    """max(x, lo) then min(., hi): bounds as inputs (opset 11) or attributes (before)."""
    dt = same_float(ctx, 1)
    if dt is None:
        return False
    x, y = ctx.x(0), ctx.y()
    if ctx.opset < 11:
        lo, hi = ctx.lit(float(ctx.attrs.min)), ctx.lit(float(ctx.attrs.max))
        ctx.emit(f"{y} = np.clip({x}, {ctx.dtype(dt)}({lo}), {ctx.dtype(dt)}({hi}){ctx.out_kw()})")
        return True
    lo, hi = ctx.x(1), ctx.x(2)
    for i in (1, 2):
        if ctx.x(i) is not None and (ctx.in_tensor(i) is None or ctx.in_tensor(i).dtype != dt):
            return False
    if lo is None and hi is None:
        ctx.emit(f"{y} = np.array({x}, copy=True)")
        return True
    if lo is not None:
        ctx.emit(f"{y} = {ctx.arr(f'np.maximum({x}, {lo}{ctx.out_kw()})')}")
        if hi is not None:
            ctx.emit(f"np.minimum({y}, {hi}, out={y})")
    else:
        ctx.emit(f"{y} = np.minimum({x}, {hi}{ctx.out_kw()})")
    return True
