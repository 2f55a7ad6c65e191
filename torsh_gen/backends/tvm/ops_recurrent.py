"""Recurrent ops → Relax: RNN, GRU and LSTM, unrolled over their (static) time steps.

Each direction precomputes the input projection of every step in one matmul
(``X · Wᵀ + Wb``), then runs the recurrence step by step with relax ops. ``sequence_lens``
is applied as a mask, as onnxruntime does: a batch item's state stops changing past its
length and its ``Y`` rows there are zero; the reverse direction walks the steps from the
last one down, so each item starts at its own last valid step.

Unrolling grows the module with the sequence length, so sequences longer than
``MAX_STEPS`` (and sequences of unknown length) are declined. Run-time control flow (If,
Loop) is in ``ops_control``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from torsh_gen.backends.tvm.convert import Ctx, Decline, as_str, converts
from torsh_gen.ir.graph import Node

#: Longest sequence unrolled; longer ones would make very large modules.
MAX_STEPS = 512

#: Activation name (lower case) → (takes alpha, takes beta, default alpha, default beta).
#: ``None`` defaults mean the value must be given.
_ACTS: dict[str, tuple[bool, bool, float | None, float | None]] = {
    "relu": (False, False, None, None),
    "tanh": (False, False, None, None),
    "sigmoid": (False, False, None, None),
    "softsign": (False, False, None, None),
    "softplus": (False, False, None, None),
    "leakyrelu": (True, False, 0.01, None),
    "thresholdedrelu": (True, False, 1.0, None),
    "elu": (True, False, 1.0, None),
    "hardsigmoid": (True, True, 0.2, 0.5),
    "affine": (True, True, None, None),
    "scaledtanh": (True, True, None, None),
}

_DEFAULT_ACTS = {"RNN": ["Tanh"], "GRU": ["Sigmoid", "Tanh"], "LSTM": ["Sigmoid", "Tanh", "Tanh"]}
_GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}


@dataclass
class _Act:
    """One activation with its alpha and beta resolved."""

    name: str
    alpha: float
    beta: float


def _activations(node: Node) -> list[list[_Act]]:
    """The activations of each direction, alphas and betas consumed in order (as ORT
    does: each activation that takes an alpha/beta takes the next one given, else its
    default). One set given for a bidirectional node serves both directions."""
    per_dir = len(_DEFAULT_ACTS[node.op_type])
    names = [as_str(a) for a in (node.attr("activations", None) or _DEFAULT_ACTS[node.op_type])]
    dirs = 2 if as_str(node.attr("direction", "forward")) == "bidirectional" else 1
    if dirs == 2 and len(names) == per_dir:
        names = names * 2
    if len(names) != per_dir * dirs:
        raise Decline(f"{len(names)} activations given, {per_dir * dirs} expected")
    alphas = list(node.attr("activation_alpha", None) or [])
    betas = list(node.attr("activation_beta", None) or [])
    acts: list[_Act] = []
    for name in names:
        spec = _ACTS.get(name.lower())
        if spec is None:
            raise Decline(f"activation {name} is not supported")
        takes_a, takes_b, da, db = spec
        alpha = beta = 0.0
        if takes_a:
            alpha = float(alphas.pop(0)) if alphas else da  # type: ignore[assignment]
        if takes_b:
            beta = float(betas.pop(0)) if betas else db  # type: ignore[assignment]
        if alpha is None or beta is None:
            raise Decline(f"activation {name} needs its alpha and beta given")
        acts.append(_Act(name.lower(), float(alpha), float(beta)))
    return [acts[d * per_dir : (d + 1) * per_dir] for d in range(dirs)]


def _accepts(node: Node) -> bool:
    """Takes nodes whose attributes are supported (the activations, the direction)."""
    if as_str(node.attr("direction", "forward")) not in ("forward", "reverse", "bidirectional"):
        return False
    try:
        _activations(node)
    except Decline:
        return False
    return True


def _apply(ctx: Ctx, act: _Act, x: Any, dtype: str) -> Any:
    """``act`` applied to ``x``, composed from relax ops in ``x``'s dtype."""
    from tvm import relax

    op = relax.op

    def c(v: float) -> Any:
        return relax.const(v, dtype)

    n = act.name
    if n == "tanh":
        return ctx.emit(op.tanh(x))
    if n == "sigmoid":
        return ctx.emit(op.sigmoid(x))
    if n == "relu":
        return ctx.emit(op.maximum(x, c(0.0)))
    if n == "softsign":
        return ctx.emit(op.divide(x, op.add(c(1.0), op.abs(x))))
    if n == "softplus":
        return ctx.emit(op.log(op.add(op.exp(x), c(1.0))))
    if n == "leakyrelu":
        return ctx.emit(op.where(op.greater_equal(x, c(0.0)), x, op.multiply(x, c(act.alpha))))
    if n == "thresholdedrelu":
        return ctx.emit(op.where(op.greater(x, c(act.alpha)), x, c(0.0)))
    if n == "elu":
        neg = op.multiply(c(act.alpha), op.subtract(op.exp(x), c(1.0)))
        return ctx.emit(op.where(op.greater_equal(x, c(0.0)), x, neg))
    if n == "hardsigmoid":
        y = op.add(op.multiply(x, c(act.alpha)), c(act.beta))
        return ctx.emit(op.minimum(op.maximum(y, c(0.0)), c(1.0)))
    if n == "affine":
        return ctx.emit(op.add(op.multiply(x, c(act.alpha)), c(act.beta)))
    if n == "scaledtanh":
        return ctx.emit(op.multiply(c(act.alpha), op.tanh(op.multiply(x, c(act.beta)))))
    raise Decline(f"activation {n} is not supported")


def _slice(ctx: Ctx, x: Any, axis: int, begin: int, end: int) -> Any:
    from tvm import relax

    return ctx.emit(relax.op.strided_slice(x, axes=[axis], begin=[begin], end=[end]))


def _pick(ctx: Ctx, x: Any, index: int) -> Any:
    """``x[index]`` along axis 0, that axis dropped."""
    from tvm import relax

    return ctx.emit(relax.op.squeeze(_slice(ctx, x, 0, index, index + 1), axis=[0]))


def _gates(ctx: Ctx, x: Any, count: int, hidden: int) -> list[Any]:
    """The ``count`` gate blocks of width ``hidden`` along the last axis of ``x``."""
    return [
        _slice(ctx, x, -1 % len(ctx.shape_of(x)), k * hidden, (k + 1) * hidden)
        for k in range(count)
    ]


@dataclass
class _Dir:
    """The operands of one direction: weights transposed for ``h · Rᵀ``, biases split."""

    xw: list[Any]  # per step: X_t · Wᵀ + Wb  [batch, G*hidden]
    rt: Any  # Rᵀ  [hidden, G*hidden]
    rb: Any | None  # Rb  [G*hidden]
    peep: list[Any] | None  # LSTM: Pi, Po, Pf  [hidden] each
    acts: list[_Act]
    cache: dict[str, Any] = field(default_factory=dict)  # per-op operands derived once


class _Rnn:
    """What all three ops share: operand shapes, per-direction operands, the mask, the
    time loop and the outputs' layout."""

    def __init__(self, ctx: Ctx, node: Node) -> None:
        from tvm import relax

        self.ctx, self.node = ctx, node
        self.kind = node.op_type
        if ctx.opset < 7:
            raise Decline(
                f"{self.kind} before opset 7 (output_sequence attribute) is not supported"
            )
        self.g = _GATES[self.kind]
        self.layout = int(node.attr("layout", 0)) if ctx.opset >= 14 else 0
        if self.layout not in (0, 1):
            raise Decline(f"layout {self.layout} is not supported")
        direction = as_str(node.attr("direction", "forward"))
        self.reverse_only = direction == "reverse"
        self.acts = _activations(node)
        self.dirs = len(self.acts)
        clip = node.attr("clip", None)
        self.clip = None if clip is None else float(clip)
        x = ctx.x(node.inputs[0])
        self.dtype = ctx.dtype(node.inputs[0])
        if self.dtype not in ("float32", "float64", "float16"):
            raise Decline(f"{self.kind} on {self.dtype} is not supported")
        dims = ctx.shape_of(x)
        if len(dims) != 3 or not all(isinstance(d, int) for d in dims):
            raise Decline(f"{self.kind} needs an input of static shape [seq, batch, input]")
        if self.layout == 1:
            x = ctx.emit(relax.op.permute_dims(x, [1, 0, 2]))
            dims = [dims[1], dims[0], dims[2]]
        self.steps, self.batch, _ = dims
        if self.steps > MAX_STEPS:
            raise Decline(
                f"sequence of {self.steps} steps is longer than the {MAX_STEPS} the TVM backend unrolls"
            )
        if self.steps == 0:
            raise Decline("an empty sequence is not supported")
        self.x = x
        w_dims = ctx.shape(node.inputs[1])
        if len(w_dims) != 3 or not isinstance(w_dims[1], int) or w_dims[1] % self.g:
            raise Decline("W needs a static shape [directions, gates*hidden, input]")
        self.hidden = w_dims[1] // self.g
        hs = node.attr("hidden_size", None)
        if hs is not None and int(hs) != self.hidden:
            raise Decline(f"hidden_size {hs} does not match W's shape")
        if w_dims[0] != self.dirs:
            raise Decline(f"W has {w_dims[0]} directions, {self.dirs} expected")
        self.mask = self._mask()

    # -- operands ---------------------------------------------------------------------
    def _opt(self, index: int) -> Any | None:
        return self.ctx.x(self.node.inputs[index]) if self.ctx.has(self.node, index) else None

    def _mask(self) -> list[Any] | None:
        """Per step, a [batch, 1] bool: whether the step lies within each item's length
        (None when sequence_lens is absent or constant and covers every step)."""
        from tvm import relax

        ctx, node = self.ctx, self.node
        if not ctx.has(node, 4):
            return None
        lens = ctx.const(node.inputs[4])
        if lens is not None and (lens.reshape(-1) >= self.steps).all():
            return None
        lens_e = ctx.emit(
            relax.op.reshape(relax.op.astype(ctx.x(node.inputs[4]), "int64"), [self.batch, 1])
        )
        steps = relax.const(np.arange(self.steps, dtype=np.int64).reshape(-1, 1, 1))
        mask = ctx.emit(relax.op.less(steps, lens_e))  # [T, batch, 1]: one kernel for all steps
        return [
            ctx.emit(relax.op.take(mask, relax.const(t, "int64"), axis=0))
            for t in range(self.steps)
        ]

    def direction(self, d: int) -> _Dir:
        """Direction ``d``'s operands; the input projection of every step at once."""
        from tvm import relax

        ctx, gh, op = self.ctx, self.g * self.hidden, relax.op
        w = _pick(ctx, ctx.x(self.node.inputs[1]), d)
        r = _pick(ctx, ctx.x(self.node.inputs[2]), d)
        xw = ctx.emit(op.matmul(self.x, op.permute_dims(w, [1, 0])))  # [T, B, G*H]
        b = self._opt(3)
        rb = None
        if b is not None:
            bd = _pick(ctx, b, d)
            xw = ctx.emit(op.add(xw, _slice(ctx, bd, 0, 0, gh)))
            rb = _slice(ctx, bd, 0, gh, 2 * gh)
        peep = None
        p = self._opt(7) if self.kind == "LSTM" else None
        if p is not None:
            pd = _pick(ctx, p, d)
            peep = _gates(ctx, pd, 3, self.hidden)
        # take with the step as an operand (not strided_slice with it as an attribute): one
        # kernel serves every step, where per-step slices would compile a kernel each
        steps = [ctx.emit(op.take(xw, relax.const(t, "int64"), axis=0)) for t in range(self.steps)]
        return _Dir(steps, ctx.emit(op.permute_dims(r, [1, 0])), rb, peep, self.acts[d])

    def initial(self, index: int, d: int) -> Any:
        """initial_h / initial_c of direction ``d`` ([batch, hidden]), zeros when absent."""
        from tvm import relax

        v = self._opt(index)
        if v is None:
            return relax.op.zeros([self.batch, self.hidden], self.dtype)
        return _pick(
            self.ctx,
            self.ctx.emit(relax.op.permute_dims(v, [1, 0, 2])) if self.layout == 1 else v,
            d,
        )

    def clipped(self, x: Any) -> Any:
        from tvm import relax

        if self.clip is None:
            return x
        c = self.clip
        return self.ctx.emit(relax.op.clip(x, relax.prim_value(-c), relax.prim_value(c)))

    def recur(self, h: Any, dd: _Dir, t: int) -> list[Any]:
        """Gates of step ``t``: X_t·Wᵀ + Wb + H·Rᵀ + Rb, split per gate."""
        from tvm import relax

        ctx = self.ctx
        hr = relax.op.matmul(h, dd.rt)
        if dd.rb is not None:
            hr = relax.op.add(hr, dd.rb)
        return _gates(ctx, ctx.emit(relax.op.add(dd.xw[t], hr)), self.g, self.hidden)

    # -- the time loop ----------------------------------------------------------------
    def run(self, step: Callable[[_Dir, list[Any], int], list[Any]], states: int) -> list[Any]:
        """Run ``step`` (state list, step index → new state list, H first) over the steps
        of every direction; return Y, Y_h (and Y_c when ``states`` is 2) in ONNX layout."""
        from tvm import relax

        ctx, op = self.ctx, relax.op
        ys: list[list[Any]] = []
        finals: list[list[Any]] = []
        for d in range(self.dirs):
            dd = self.direction(d)
            st = [self.initial(5, d)] + ([self.initial(6, d)] if states == 2 else [])
            st = [ctx.emit(s) for s in st]
            backward = self.reverse_only or d == 1
            order = range(self.steps - 1, -1, -1) if backward else range(self.steps)
            y = [None] * self.steps
            zero = relax.const(0.0, self.dtype)
            for t in order:
                new = step(dd, st, t)
                if self.mask is not None:
                    m = self.mask[t]
                    y[t] = ctx.emit(op.where(m, new[0], zero))
                    new = [ctx.emit(op.where(m, n, s)) for n, s in zip(new, st)]
                else:
                    y[t] = new[0]
                st = new
            # an item of length 0 ends in zeros (as in ORT), not in its initial state
            if self.mask is not None:
                st = [ctx.emit(op.where(self.mask[0], s, zero)) for s in st]
            ys.append(y)  # type: ignore[arg-type]
            finals.append(st)
        return self._outputs(ys, finals, states)

    def _outputs(self, ys: list[list[Any]], finals: list[list[Any]], states: int) -> list[Any]:
        from tvm import relax

        ctx, op = self.ctx, relax.op
        wanted = [o is not None and bool(o.name) for o in self.node.outputs]
        outs: list[Any] = [None] * len(self.node.outputs)
        if wanted and wanted[0]:
            y = _stack(
                ctx, [_stack(ctx, [ys[d][t] for d in range(self.dirs)]) for t in range(self.steps)]
            )  # [T, D, B, H]
            outs[0] = ctx.emit(op.permute_dims(y, [2, 0, 1, 3])) if self.layout == 1 else y
        for k in range(1, 1 + states):
            if k < len(outs) and wanted[k]:
                s = _stack(ctx, [finals[d][k - 1] for d in range(self.dirs)])  # [D, B, H]
                outs[k] = ctx.emit(op.permute_dims(s, [1, 0, 2])) if self.layout == 1 else s
        return outs


def _stack(ctx: Ctx, items: list[Any]) -> Any:
    """``items`` stacked along a new axis 0, as a concat of expand_dims: TVM 0.27's
    ConvertLayout (the CPU build's channels-last pass) fails on ``relax.op.stack``."""
    from tvm import relax

    return ctx.emit(relax.op.concat([relax.op.expand_dims(i, [0]) for i in items], axis=0))


def _one(dtype: str) -> Any:
    from tvm import relax

    return relax.const(1.0, dtype)


@converts("RNN", accepts=_accepts)
def _rnn(ctx: Ctx, node: Node) -> Sequence[Any]:
    """H_t = f(X_t·Wᵀ + H_{t-1}·Rᵀ + Wb + Rb)."""
    rnn = _Rnn(ctx, node)

    def step(dd: _Dir, st: list[Any], t: int) -> list[Any]:
        (gate,) = rnn.recur(st[0], dd, t)
        return [_apply(ctx, dd.acts[0], rnn.clipped(gate), rnn.dtype)]

    return rnn.run(step, 1)


@converts("GRU", accepts=_accepts)
def _gru(ctx: Ctx, node: Node) -> Sequence[Any]:
    """Gates z, r, h; ``linear_before_reset`` applies r after (H·Rhᵀ + Rbh) instead of before
    the product."""
    from tvm import relax

    op = relax.op
    rnn = _Rnn(ctx, node)
    lbr = int(node.attr("linear_before_reset", 0)) != 0
    hid = rnn.hidden

    def split(dd: _Dir) -> tuple[Any, Any, Any, Any]:
        """Rᵀ and Rb split into their z,r and h parts, once per direction."""
        if "split" not in dd.cache:
            rb = (
                [None, None]
                if dd.rb is None
                else [_slice(ctx, dd.rb, 0, 0, 2 * hid), _slice(ctx, dd.rb, 0, 2 * hid, 3 * hid)]
            )
            dd.cache["split"] = (
                _slice(ctx, dd.rt, 1, 0, 2 * hid),
                _slice(ctx, dd.rt, 1, 2 * hid, 3 * hid),
                *rb,
            )
        return dd.cache["split"]

    def step(dd: _Dir, st: list[Any], t: int) -> list[Any]:
        h = st[0]
        f, g = dd.acts
        xz, xr, xh = _gates(ctx, dd.xw[t], 3, hid)
        rt_zr, rt_h, rb_zr, rbh = split(dd)
        hzr = op.matmul(h, rt_zr)
        if dd.rb is not None:
            hzr = op.add(hzr, rb_zr)
        hz, hr = _gates(ctx, ctx.emit(hzr), 2, hid)
        z = _apply(ctx, f, rnn.clipped(ctx.emit(op.add(xz, hz))), rnn.dtype)
        r = _apply(ctx, f, rnn.clipped(ctx.emit(op.add(xr, hr))), rnn.dtype)
        if lbr:
            hh = op.matmul(h, rt_h)
            if rbh is not None:
                hh = op.add(hh, rbh)
            pre = op.add(xh, op.multiply(r, hh))
        else:
            hh = op.matmul(op.multiply(r, h), rt_h)
            if rbh is not None:
                hh = op.add(hh, rbh)
            pre = op.add(xh, hh)
        cand = _apply(ctx, g, rnn.clipped(ctx.emit(pre)), rnn.dtype)
        new = op.add(op.multiply(op.subtract(_one(rnn.dtype), z), cand), op.multiply(z, h))
        return [ctx.emit(new)]

    return rnn.run(step, 1)


@converts("LSTM", accepts=_accepts)
def _lstm(ctx: Ctx, node: Node) -> Sequence[Any]:
    """Gates i, o, f, c with optional peepholes (P: i, o, f); ``input_forget`` couples the
    forget gate to the input gate (f = 1 - i)."""
    from tvm import relax

    op = relax.op
    rnn = _Rnn(ctx, node)
    coupled = int(node.attr("input_forget", 0)) != 0

    def step(dd: _Dir, st: list[Any], t: int) -> list[Any]:
        h, c = st
        f_act, g_act, h_act = dd.acts
        gi, go, gf, gc = rnn.recur(h, dd, t)
        if dd.peep is not None:
            pi, po, pf = dd.peep
            gi = ctx.emit(op.add(gi, op.multiply(pi, c)))
            gf = ctx.emit(op.add(gf, op.multiply(pf, c)))
        i = _apply(ctx, f_act, rnn.clipped(gi), rnn.dtype)
        if coupled:
            f = ctx.emit(op.subtract(_one(rnn.dtype), i))
        else:
            f = _apply(ctx, f_act, rnn.clipped(gf), rnn.dtype)
        cand = _apply(ctx, g_act, rnn.clipped(gc), rnn.dtype)
        c_new = ctx.emit(op.add(op.multiply(f, c), op.multiply(i, cand)))
        if dd.peep is not None:
            go = ctx.emit(op.add(go, op.multiply(dd.peep[1], c_new)))
        o = _apply(ctx, f_act, rnn.clipped(go), rnn.dtype)
        h_new = ctx.emit(op.multiply(o, _apply(ctx, h_act, c_new, rnn.dtype)))
        return [h_new, c_new]

    return rnn.run(step, 2)
