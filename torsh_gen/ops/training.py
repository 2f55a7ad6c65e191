"""Optimizer update ops of the ``ai.onnx.preview.training`` domain: Adagrad, Adam, Momentum.

Each op updates any number of tensors at once. The inputs are ``R, T`` followed by groups
of equal length (``X_1..X_n, G_1..G_n, ...``) and the outputs are the new state groups in
the same order; every tensor is updated independently with the same scalar rate.
"""

from __future__ import annotations

import numpy as np

from torsh_gen.ops.registry import FLOAT, STRING, OpSpec, RunContext, op

_DOMAIN = "ai.onnx.preview.training"


def _groups(tensors: tuple[np.ndarray, ...], n_groups: int) -> list[tuple[np.ndarray, ...]]:
    """Split ``X_1..X_n, G_1..G_n, ...`` into per-tensor tuples ``(X_i, G_i, ...)``."""
    if len(tensors) % n_groups:
        raise ValueError(f"expected a multiple of {n_groups} state tensors, got {len(tensors)}")
    n = len(tensors) // n_groups
    return [tuple(tensors[g * n + i] for g in range(n_groups)) for i in range(n)]


def _regroup(results: list[tuple[np.ndarray, ...]]) -> tuple[np.ndarray, ...]:
    """Per-tensor result tuples back into grouped output order."""
    return tuple(r[k] for k in range(len(results[0])) for r in results) if results else ()


@op("Adagrad", since=1, domain=_DOMAIN)
class Adagrad(OpSpec):
    """ADAGRAD step: inputs R, T, X..., G..., H...; outputs X_new..., H_new..."""

    attrs = {"decay_factor": FLOAT(0.0), "epsilon": FLOAT(0.0), "norm_coefficient": FLOAT(0.0)}
    flops_per_element = 6

    def run(self, ctx: RunContext, r: np.ndarray, t: np.ndarray, *state: np.ndarray) -> tuple:
        a = ctx.attrs
        rate = float(r) / (1.0 + float(t) * a.decay_factor)
        out = []
        for x, g, h in _groups(state, 3):
            g_reg = a.norm_coefficient * x + g
            h_new = h + g_reg * g_reg
            x_new = x - rate * g_reg / (np.sqrt(h_new) + a.epsilon)
            out.append((x_new.astype(x.dtype), h_new.astype(h.dtype)))
        return _regroup(out)


@op("Adam", since=1, domain=_DOMAIN)
class Adam(OpSpec):
    """Adam step with bias correction when T > 0: outputs X_new..., V_new..., H_new..."""

    attrs = {
        "alpha": FLOAT(0.9),
        "beta": FLOAT(0.999),
        "epsilon": FLOAT(0.0),
        "norm_coefficient": FLOAT(0.0),
        "norm_coefficient_post": FLOAT(0.0),
    }
    flops_per_element = 10

    def run(self, ctx: RunContext, r: np.ndarray, t: np.ndarray, *state: np.ndarray) -> tuple:
        a = ctx.attrs
        step = float(t)
        rate = float(r)
        if step > 0:
            rate = rate * np.sqrt(1 - a.beta**step) / (1 - a.alpha**step)
        out = []
        for x, g, v, h in _groups(state, 4):
            g_reg = a.norm_coefficient * x + g
            v_new = a.alpha * v + (1 - a.alpha) * g_reg
            h_new = a.beta * h + (1 - a.beta) * g_reg * g_reg
            x_new = x - rate * v_new / (np.sqrt(h_new) + a.epsilon)
            x_new = (1 - a.norm_coefficient_post) * x_new
            out.append((x_new.astype(x.dtype), v_new.astype(v.dtype), h_new.astype(h.dtype)))
        return _regroup(out)


@op("Momentum", since=1, domain=_DOMAIN)
class Momentum(OpSpec):
    """SGD with standard or Nesterov momentum; beta is taken as 1 on the first step (T = 0)."""

    attrs = {
        "alpha": FLOAT(required=True),
        "beta": FLOAT(required=True),
        "mode": STRING(required=True),
        "norm_coefficient": FLOAT(required=True),
    }
    flops_per_element = 5

    def run(self, ctx: RunContext, r: np.ndarray, t: np.ndarray, *state: np.ndarray) -> tuple:
        a = ctx.attrs
        rate = float(r)
        beta = a.beta if float(t) > 0 else 1.0
        nesterov = a.mode == "nesterov"
        out = []
        for x, g, v in _groups(state, 3):
            g_reg = a.norm_coefficient * x + g
            v_new = a.alpha * v + beta * g_reg
            step = g_reg + a.alpha * v_new if nesterov else v_new
            x_new = x - rate * step
            out.append((x_new.astype(x.dtype), v_new.astype(v.dtype)))
        return _regroup(out)
