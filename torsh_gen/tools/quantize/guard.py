"""The accuracy guard: measure each layer's sensitivity, fall back to float until in budget.

Sensitivity of a layer is the accuracy drop (see ``evaluate``) when that layer alone is
quantized, ties broken by the loss of cosine similarity of the outputs. The guard starts
from the fully quantized model and returns layers to float one at a time, most sensitive
first, re-measuring after each, until the drop is at most the budget. When only
sending every layer back would meet the budget, the guard fails: the caller then writes
nothing, or (``--force``) the fully quantized model.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from torsh_gen.ir.graph import Graph
from torsh_gen.passes.quantize import QuantizeResult, QuantOptions, TensorRange, quantize_graph
from torsh_gen.tools.quantize.evaluate import EvalSet, compare, outputs_of


@dataclass
class Trial:
    """One quantized variant and what it cost."""

    graph: Graph
    result: QuantizeResult
    metrics: dict[str, Any]

    @property
    def drop(self) -> float:
        """The accuracy drop in points (0 when the model has no class output)."""
        d = self.metrics.get("drop")
        return 0.0 if d is None else float(d)

    @property
    def cosine_loss(self) -> float:
        """1 - the smallest cosine similarity over the outputs."""
        cos = [m["cosine"] for m in self.metrics["outputs"].values() if m.get("cosine") is not None]
        return 1.0 - min(cos) if cos else 0.0


@dataclass
class GuardOutcome:
    """What the guard did: sensitivities, the layers it kept float, the final trial."""

    budget: float
    sensitivity: list[dict[str, Any]] = field(default_factory=list)
    kept_float: list[str] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)
    within_budget: bool = False


def make_trial(
    prepared: Graph,
    options: QuantOptions,
    ranges: Mapping[str, TensorRange],
    data: EvalSet,
    ref: Mapping[str, np.ndarray],
) -> Trial:
    """Quantize a copy of ``prepared`` with ``options`` and measure it against ``ref``."""
    g = copy.deepcopy(prepared)
    result = quantize_graph(g, options, ranges)
    return Trial(g, result, compare(ref, outputs_of(g, data.feeds), data.labels))


def layer_sensitivity(
    prepared: Graph,
    options: QuantOptions,
    ranges: Mapping[str, TensorRange],
    data: EvalSet,
    ref: Mapping[str, np.ndarray],
    layers: list[str],
) -> list[dict[str, Any]]:
    """Each layer quantized alone: its drop and cosine loss, most sensitive first."""
    rows = []
    for key in layers:
        t = make_trial(prepared, replace(options, include=(key,), exclude=()), ranges, data, ref)
        rows.append({"layer": key, "drop": t.drop, "cosine_loss": t.cosine_loss})
    rows.sort(key=lambda r: (-r["drop"], -r["cosine_loss"], r["layer"]))
    return rows


def guard(
    prepared: Graph,
    options: QuantOptions,
    ranges: Mapping[str, TensorRange],
    data: EvalSet,
    ref: Mapping[str, np.ndarray],
    budget: float,
    progress: Callable[[str], None] | None = None,
) -> tuple[Trial, GuardOutcome]:
    """The fully quantized trial, or the one with the fewest float layers within ``budget``."""
    trial = make_trial(prepared, options, ranges, data, ref)
    outcome = GuardOutcome(budget)
    outcome.steps.append({"kept_float": [], "drop": trial.drop})
    if trial.drop <= budget:
        outcome.within_budget = True
        return trial, outcome
    if progress:
        progress(
            f"drop {trial.drop:.2f} > {budget}: measuring the sensitivity of "
            f"{len(trial.result.quantized)} layers"
        )
    outcome.sensitivity = layer_sensitivity(
        prepared, options, ranges, data, ref, list(trial.result.quantized)
    )
    full = trial
    keep: list[str] = []
    for row in outcome.sensitivity[:-1]:  # keeping every layer float is no quantization at all
        keep.append(row["layer"])
        trial = make_trial(prepared, options.with_keep_float(set(keep)), ranges, data, ref)
        outcome.steps.append({"kept_float": list(keep), "drop": trial.drop})
        if trial.drop <= budget:
            outcome.within_budget = True
            outcome.kept_float = keep
            return trial, outcome
    return full, outcome
