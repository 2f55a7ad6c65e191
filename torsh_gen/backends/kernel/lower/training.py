"""Optimizer steps of the ``ai.onnx.preview.training`` domain: Adagrad, Adam, Momentum.

A node updates any number of tensors: inputs ``R, T`` then groups of equal length
(``X_1..X_n, G_1..G_n, ...``), outputs the new state groups in the same order. The kernel
computes the step's scalar rate once, in float64 from the run-time ``R`` and ``T`` (as the
reference does in Python floats), then runs one elementwise pass per tensor in the
tensors' own type, the attributes rounded to it as numpy rounds a Python float.

Adam's bias correction needs ``alpha**T`` and ``beta**T`` for an integer ``T`` that may be
known only at run time: the kernel raises to the power by repeated squaring (64 steps
over the bits of ``T``, float64), so no ``exp``/``log`` approximation enters the rate.
"""

from __future__ import annotations

from collections.abc import Callable

from torsh_gen.backends.kernel.builder import KernelBuilder
from torsh_gen.backends.kernel.ir import Bin, Cast, Const, Expr, Select, call, idx, is_float
from torsh_gen.backends.kernel.lower import LowerCtx, LoweringDeclined, lowers, prod
from torsh_gen.backends.kernel.lower.elementwise import elementwise_nest
from torsh_gen.backends.kernel.lower.shape import scalar_value

DOMAIN = "ai.onnx.preview.training"
F64 = "f64"
#: Per-tensor update: (builder, state values X, G, ... as loaded, rate, dtype) -> new states.
Update = Callable[[KernelBuilder, list[Expr], Expr, str], list[Expr]]


def _as(e: Expr, dtype: str) -> Expr:
    return e if e.dtype == dtype else Cast(e, dtype)


def _c(value: float, dtype: str) -> Const:
    return Const(float(value), dtype)


def _check(ctx: LowerCtx, groups: int, outs: int) -> int:
    """The number of tensors the node updates; declines a malformed node."""
    if ctx.node.domain != DOMAIN:
        raise LoweringDeclined(f"{ctx.node.op_type} of domain {ctx.node.domain!r}")
    n_state = len(ctx.inputs) - 2
    if n_state < groups or n_state % groups:
        raise LoweringDeclined(f"expected 2 + {groups} * n inputs, got {len(ctx.inputs)}")
    n = n_state // groups
    if len(ctx.outputs) != outs * n:
        raise LoweringDeclined(f"expected {outs * n} outputs, got {len(ctx.outputs)}")
    for i in range(n):
        shapes = [ctx.in_shape(2 + g * n + i) for g in range(groups)]
        shapes += [ctx.out_shape(g * n + i) for g in range(outs)]
        if any(prod(s) != prod(shapes[0]) for s in shapes):
            raise LoweringDeclined(f"tensor {i}: state shapes differ {shapes}")
        if not all(is_float(ctx.x(2 + g * n + i).dtype) for g in range(groups)):
            raise LoweringDeclined("optimizer state must be float32/float64")
    return n


def _step(ctx: LowerCtx, groups: int, outs: int, rate: Expr, update: Update) -> None:
    """One elementwise pass per tensor: load its group, write the new states."""
    n = _check(ctx, groups, outs)
    kb = ctx.kb
    for i in range(n):
        size = prod(ctx.in_shape(2 + i))
        if size == 0:
            continue
        dtype = ctx.y(i).dtype
        r = kb.let(_as(rate, dtype), "rate")
        srcs = [ctx.x(2 + g * n + i) for g in range(groups)]
        dsts = [ctx.y(g * n + i) for g in range(outs)]

        def body(ix: list[Expr], srcs=srcs, dsts=dsts, r=r, dtype=dtype) -> None:
            vals = [kb.let(_as(s[ix[0]], dtype), "v") for s in srcs]
            for d, v in zip(dsts, update(kb, vals, r, dtype)):
                d[ix[0]] = _as(v, d.dtype)

        elementwise_nest(ctx, (size,), [[1]], body)


def _int_power(kb: KernelBuilder, base: float, t: Expr) -> Expr:
    """``base ** t`` (float64) for an i64 ``t >= 0`` by squaring over its 64 bits."""
    acc = kb.local(F64, _c(1.0, F64), "pw")
    sq = kb.local(F64, _c(base, F64), "sq")
    e = kb.local("i64", t, "ex")
    with kb.loop(64, kind="rolled", hint="bit"):
        odd = Bin("and", e, idx(1))
        kb.assign(acc, Select(Bin("eq", odd, idx(1)), acc * sq, acc))
        kb.assign(sq, sq * sq)
        kb.assign(e, Bin("shr", e, idx(1)))
    return kb.let(acc, "pow")


# --------------------------------------------------------------------------- Adagrad
@lowers("Adagrad")
def lower_adagrad(ctx: LowerCtx) -> None:
    """X, H -> X - r * g / (sqrt(H + g^2) + eps), r = R / (1 + T * decay), g = G + c * X."""
    a = ctx.attrs
    kb = ctx.kb
    r = kb.let(scalar_value(ctx, 0, F64), "r")
    t = kb.let(scalar_value(ctx, 1, F64), "t")
    rate = kb.let(r / (t * float(a.decay_factor) + 1.0), "lr")
    coef, eps = float(a.norm_coefficient), float(a.epsilon)

    def update(kb: KernelBuilder, v: list[Expr], r: Expr, dt: str) -> list[Expr]:
        x, g, h = v
        g_reg = kb.let(_c(coef, dt) * x + g, "g")
        h_new = kb.let(h + g_reg * g_reg, "h")
        x_new = x - r * g_reg / (call("sqrt", h_new) + _c(eps, dt))
        return [x_new, h_new]

    _step(ctx, 3, 2, rate, update)


# --------------------------------------------------------------------------- Adam
def _adam_rate(ctx: LowerCtx) -> Expr:
    """R, times sqrt(1 - beta^T) / (1 - alpha^T) when T > 0 (bias correction)."""
    a, kb = ctx.attrs, ctx.kb
    r = kb.let(scalar_value(ctx, 0, F64), "r")
    t = kb.let(scalar_value(ctx, 1, "i64"), "t")
    pa = _int_power(kb, float(a.alpha), t)
    pb = _int_power(kb, float(a.beta), t)
    corrected = r * call("sqrt", 1.0 - pb) / (1.0 - pa)
    return kb.let(Select(t > 0, corrected, r), "lr")


@lowers("Adam")
def lower_adam(ctx: LowerCtx) -> None:
    """X, V, H -> Adam's step with L2 terms before (norm_coefficient) and after the update."""
    a = ctx.attrs
    rate = _adam_rate(ctx)
    alpha, beta, eps = float(a.alpha), float(a.beta), float(a.epsilon)
    coef, post = float(a.norm_coefficient), float(a.norm_coefficient_post)

    def update(kb: KernelBuilder, v: list[Expr], r: Expr, dt: str) -> list[Expr]:
        x, g, m, h = v
        g_reg = kb.let(_c(coef, dt) * x + g, "g")
        v_new = kb.let(_c(alpha, dt) * m + _c(1.0 - alpha, dt) * g_reg, "m")
        h_new = kb.let(_c(beta, dt) * h + _c(1.0 - beta, dt) * (g_reg * g_reg), "h")
        x_new = x - r * (v_new / (call("sqrt", h_new) + _c(eps, dt)))
        return [_c(1.0 - post, dt) * x_new, v_new, h_new]

    _step(ctx, 4, 3, rate, update)


# --------------------------------------------------------------------------- Momentum
@lowers("Momentum")
def lower_momentum(ctx: LowerCtx) -> None:
    """X, V -> SGD with standard or Nesterov momentum; the gradient's coefficient is 1 on
    the first step (T = 0) and ``beta`` after it."""
    a, kb = ctx.attrs, ctx.kb
    mode = a.mode.decode() if isinstance(a.mode, bytes) else str(a.mode)
    if mode not in ("standard", "nesterov"):
        raise LoweringDeclined(f"Momentum mode {mode!r}")
    rate = kb.let(scalar_value(ctx, 0, F64), "lr")
    t = kb.let(scalar_value(ctx, 1, "i64"), "t")
    beta_t = kb.let(Select(t > 0, _c(float(a.beta), F64), _c(1.0, F64)), "bt")
    alpha, coef = float(a.alpha), float(a.norm_coefficient)

    def update(kb: KernelBuilder, v: list[Expr], r: Expr, dt: str) -> list[Expr]:
        x, g, m = v
        g_reg = kb.let(_c(coef, dt) * x + g, "g")
        v_new = kb.let(_c(alpha, dt) * m + _as(beta_t, dt) * g_reg, "m")
        step = g_reg + _c(alpha, dt) * v_new if mode == "nesterov" else v_new
        return [x - r * step, v_new]

    _step(ctx, 3, 2, rate, update)
