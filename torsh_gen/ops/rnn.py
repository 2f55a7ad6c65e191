"""Recurrent layers: RNN, GRU and LSTM as in ONNX (gate orders: GRU zrh, LSTM iofc).

The three share one driver (``_run_layer``): layout handling, directions (forward, reverse,
bidirectional), ``sequence_lens`` (steps past a batch item's length leave its state alone
and write zeros to ``Y``), initial states, and the activation list with its alpha/beta
values, which are consumed in order by the activations that take them. Each op supplies
only its per-step cell. Arithmetic is done in float64 and cast back to the input dtype.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from torsh_gen.ir.types import TensorType, Type
from torsh_gen.ops.registry import (
    FLOAT,
    FLOATS,
    INT,
    STRING,
    STRINGS,
    Cost,
    InferContext,
    OpSpec,
    RunContext,
    op,
)

Act = Callable[[np.ndarray], np.ndarray]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


#: name -> (default alpha, default beta, maker(alpha, beta)); None default = not used.
_ACTIVATIONS: dict[str, tuple[float | None, float | None, Callable[[float, float], Act]]] = {
    "relu": (None, None, lambda a, b: lambda x: np.maximum(x, 0.0)),
    "tanh": (None, None, lambda a, b: np.tanh),
    "sigmoid": (None, None, lambda a, b: _sigmoid),
    "affine": (1.0, 0.0, lambda a, b: lambda x: a * x + b),
    "leakyrelu": (0.01, None, lambda a, b: lambda x: np.where(x >= 0, x, a * x)),
    "thresholdedrelu": (1.0, None, lambda a, b: lambda x: np.where(x > a, x, 0.0)),
    "scaledtanh": (1.0, 1.0, lambda a, b: lambda x: a * np.tanh(b * x)),
    "hardsigmoid": (0.2, 0.5, lambda a, b: lambda x: np.clip(a * x + b, 0.0, 1.0)),
    "elu": (1.0, None, lambda a, b: lambda x: np.where(x >= 0, x, a * (np.exp(x) - 1.0))),
    "softsign": (None, None, lambda a, b: lambda x: x / (1.0 + np.abs(x))),
    "softplus": (None, None, lambda a, b: lambda x: np.logaddexp(0.0, x)),
}


def _activations(ctx: RunContext, defaults: list[str], n_dirs: int) -> list[list[Act]]:
    """Per direction, the activation functions named by the attributes (or the defaults)."""
    names = ctx.attrs.get("activations") or defaults * n_dirs
    if len(names) == len(defaults) and n_dirs == 2:
        names = list(names) * 2
    alphas = list(ctx.attrs.get("activation_alpha", []))
    betas = list(ctx.attrs.get("activation_beta", []))
    fns: list[Act] = []
    for name in names:
        key = name.lower()
        if key not in _ACTIVATIONS:
            raise ValueError(f"unsupported RNN activation '{name}'")
        da, db, make = _ACTIVATIONS[key]
        a = alphas.pop(0) if da is not None and alphas else (da or 0.0)
        b = betas.pop(0) if db is not None and betas else (db or 0.0)
        fns.append(make(a, b))
    k = len(defaults)
    return [fns[d * k : (d + 1) * k] for d in range(n_dirs)]


#: One step: (x_t, state tuple, direction weights, activations, clip) -> new state tuple.
Cell = Callable[[np.ndarray, tuple[np.ndarray, ...], dict[str, Any], list[Act], Any], tuple]


def _clip(x: np.ndarray, clip: float | None) -> np.ndarray:
    return x if clip is None else np.clip(x, -clip, clip)


def _run_direction(
    cell: Cell,
    x: np.ndarray,
    init: tuple[np.ndarray, ...],
    lens: np.ndarray,
    weights: dict[str, Any],
    acts: list[Act],
    clip: Any,
    reverse: bool,
) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
    """Run one direction over x [seq, batch, in]; returns Y [seq, batch, hidden] and states."""
    seq, batch = x.shape[0], x.shape[1]
    hidden = init[0].shape[-1]
    y = np.zeros((seq, batch, hidden))
    state = tuple(s.copy() for s in init)
    for step in range(seq):
        # Reverse: batch item b runs over t = len_b - 1 .. 0, so its step k reads len_b - 1 - k.
        t = (lens - 1 - step) if reverse else np.full(batch, step)
        active = step < lens
        if not active.any():
            break
        xt = x[np.clip(t, 0, seq - 1), np.arange(batch)]
        new = cell(xt, state, weights, acts, clip)
        mask = active[:, None]
        state = tuple(np.where(mask, n, s) for n, s in zip(new, state))
        rows = np.nonzero(active)[0]
        y[t[rows], rows] = state[0][rows]
    return y, state


def _run_layer(
    ctx: RunContext,
    cell: Cell,
    n_gates: int,
    defaults: list[str],
    n_states: int,
    inputs: list[Any],
) -> tuple[np.ndarray, ...]:
    """Shared driver. ``inputs`` is X, W, R, B, sequence_lens, initial_h[, initial_c, P]."""
    x, w, r, b, lens, init_h = inputs[:6]
    extra = inputs[6:]
    dtype = x.dtype
    layout = ctx.attrs.get("layout", 0)
    if layout:
        x = np.swapaxes(x, 0, 1)
    x = x.astype(np.float64)
    seq, batch = x.shape[0], x.shape[1]
    n_dirs = w.shape[0]
    hidden = r.shape[-1]
    direction = ctx.attrs.get("direction", "forward")
    lens = np.full(batch, seq, np.int64) if lens is None else np.asarray(lens, np.int64)
    if b is None:
        b = np.zeros((n_dirs, 2 * n_gates * hidden))
    inits = [init_h] + list(extra[: n_states - 1])
    states0 = []
    for s in inits:
        if s is None:
            s = np.zeros((n_dirs, batch, hidden))
        elif layout:
            s = np.swapaxes(s, 0, 1)
        states0.append(s.astype(np.float64))
    peep = extra[n_states - 1] if len(extra) >= n_states else None
    acts = _activations(ctx, defaults, n_dirs)
    clip = ctx.attrs.get("clip")
    ys, finals = [], []
    for d in range(n_dirs):
        weights = {
            "w": w[d].astype(np.float64),
            "r": r[d].astype(np.float64),
            "wb": b[d][: n_gates * hidden].astype(np.float64),
            "rb": b[d][n_gates * hidden :].astype(np.float64),
            "p": None if peep is None else peep[d].astype(np.float64),
            "hidden": hidden,
        }
        reverse = direction == "reverse" or (direction == "bidirectional" and d == 1)
        init = tuple(s[d] for s in states0)
        y, fin = _run_direction(cell, x, init, lens, weights, acts[d], clip, reverse)
        ys.append(y)
        finals.append(fin)
    y = np.stack(ys, axis=1)  # [seq, dirs, batch, hidden]
    outs = [np.stack([f[i] for f in finals]) for i in range(n_states)]  # [dirs, batch, hidden]
    if layout:
        y = np.transpose(y, (2, 0, 1, 3))
        outs = [np.swapaxes(o, 0, 1) for o in outs]
    result = tuple(np.ascontiguousarray(o).astype(dtype) for o in [y, *outs])
    return result[: max(ctx.n_outputs, 1)]


class _Recurrent(OpSpec):
    """Common attributes, input unpacking and cost of the recurrent layers."""

    n_gates: int = 1
    n_states: int = 1
    default_acts: list[str] = []
    attrs = {
        "activation_alpha": FLOATS(),
        "activation_beta": FLOATS(),
        "activations": STRINGS(),
        "clip": FLOAT(),
        "direction": STRING("forward"),
        "hidden_size": INT(),
        "layout": INT(0),
    }

    def cell(self, xt: np.ndarray, state: tuple, wt: dict, acts: list[Act], clip: Any) -> tuple:
        """One time step for a batch: the new state tuple (h first)."""
        raise NotImplementedError

    def run(self, ctx: RunContext, *inputs: Any) -> tuple[np.ndarray, ...]:
        padded = list(inputs) + [None] * (6 + self.n_states - len(inputs))
        return _run_layer(ctx, self.cell, self.n_gates, self.default_acts, self.n_states, padded)

    def cost(self, ctx: InferContext, output_types: list[Type | None]) -> Cost:
        x, w = ctx.input_type(0), ctx.input_type(1)
        if not (isinstance(x, TensorType) and isinstance(w, TensorType)):
            return super().cost(ctx, output_types)
        if not (x.is_static and w.is_static):
            return super().cost(ctx, output_types)
        n_dirs, gh, in_size = w.shape
        hidden = gh // self.n_gates
        seq, batch = (x.shape[1], x.shape[0]) if ctx.attrs.get("layout", 0) else x.shape[:2]
        macs = seq * batch * n_dirs * gh * (in_size + hidden)
        base = super().cost(ctx, output_types)
        flops = 2 * macs + seq * batch * n_dirs * gh * 4
        return Cost(macs, flops, base.bytes_read, base.bytes_written)


@op("RNN", since=7)
class RNN(_Recurrent):
    """Elman RNN: H = f(X W^T + H R^T + Wb + Rb)."""

    default_acts = ["Tanh"]

    def cell(self, xt: np.ndarray, state: tuple, wt: dict, acts: list[Act], clip: Any) -> tuple:
        (h,) = state
        pre = xt @ wt["w"].T + h @ wt["r"].T + wt["wb"] + wt["rb"]
        return (acts[0](_clip(pre, clip)),)


@op("GRU", since=7)
class GRU(_Recurrent):
    """GRU (gates z, r, h); ``linear_before_reset`` applies R_h before the reset gate."""

    n_gates = 3
    default_acts = ["Sigmoid", "Tanh"]
    attrs = {**_Recurrent.attrs, "linear_before_reset": INT(0)}

    def run(self, ctx: RunContext, *inputs: Any) -> tuple[np.ndarray, ...]:
        lbr = bool(ctx.attrs.linear_before_reset)
        padded = list(inputs) + [None] * (7 - len(inputs))

        def cell(xt: np.ndarray, state: tuple, wt: dict, acts: list[Act], clip: Any) -> tuple:
            return self.step(xt, state, wt, acts, clip, lbr)

        return _run_layer(ctx, cell, 3, self.default_acts, 1, padded)

    def step(
        self, xt: np.ndarray, state: tuple, wt: dict, acts: list[Act], clip: Any, lbr: bool
    ) -> tuple:
        """One GRU step."""
        (h,) = state
        n = wt["hidden"]
        w, r, wb, rb = wt["w"], wt["r"], wt["wb"], wt["rb"]
        xw = xt @ w.T + wb
        hr = h @ r[: 2 * n].T + rb[: 2 * n]
        z = acts[0](_clip(xw[:, :n] + hr[:, :n], clip))
        rg = acts[0](_clip(xw[:, n : 2 * n] + hr[:, n:], clip))
        if lbr:
            cand = xw[:, 2 * n :] + rg * (h @ r[2 * n :].T + rb[2 * n :])
        else:
            cand = xw[:, 2 * n :] + (rg * h) @ r[2 * n :].T + rb[2 * n :]
        hh = acts[1](_clip(cand, clip))
        return ((1.0 - z) * hh + z * h,)


@op("LSTM", since=7)
class LSTM(_Recurrent):
    """LSTM (gates i, o, f, c) with optional peepholes P (i, o, f) and coupled input/forget."""

    n_gates = 4
    n_states = 2
    default_acts = ["Sigmoid", "Tanh", "Tanh"]
    attrs = {**_Recurrent.attrs, "input_forget": INT(0)}

    def run(self, ctx: RunContext, *inputs: Any) -> tuple[np.ndarray, ...]:
        coupled = bool(ctx.attrs.input_forget)
        padded = list(inputs) + [None] * (8 - len(inputs))

        def cell(xt: np.ndarray, state: tuple, wt: dict, acts: list[Act], clip: Any) -> tuple:
            return self.step(xt, state, wt, acts, clip, coupled)

        return _run_layer(ctx, cell, 4, self.default_acts, 2, padded)

    def step(
        self, xt: np.ndarray, state: tuple, wt: dict, acts: list[Act], clip: Any, coupled: bool
    ) -> tuple:
        """One LSTM step."""
        h, c = state
        n = wt["hidden"]
        g = xt @ wt["w"].T + h @ wt["r"].T + wt["wb"] + wt["rb"]
        p = wt["p"]
        pi, po, pf = (p[:n], p[n : 2 * n], p[2 * n :]) if p is not None else (0.0, 0.0, 0.0)
        f_act, g_act, h_act = acts
        i = f_act(_clip(g[:, :n] + pi * c, clip))
        f = 1.0 - i if coupled else f_act(_clip(g[:, 2 * n : 3 * n] + pf * c, clip))
        cand = g_act(_clip(g[:, 3 * n :], clip))
        c_new = f * c + i * cand
        o = f_act(_clip(g[:, n : 2 * n] + po * c_new, clip))
        return (o * h_act(c_new), c_new)
