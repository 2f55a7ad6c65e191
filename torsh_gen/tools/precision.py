"""``optimize --precision``: fp16, bf16 and mixed precision, measured against float32.

``convert_precision(graph, precision)`` converts a float32 graph with the
``passes.precision`` rules and measures what it cost: the converted and the float32 model
run on the same calibration feeds (``--calib DATA``, or random inputs from the declared
shapes) and every output gets max abs error, max rel error (``max|a-b| / max|b|``) and
cosine similarity. The converted model is measured as its float32 emulation with one
fp16/bf16 rounding per node (``precision_emulation``), in onnxruntime: that is the
file's ONNX semantics and what our artifact computes, whereas onnxruntime runs bf16 not
at all on CPU and fp16 partly in float32 (see docs/precision.md).

``mixed`` chooses per node between float32 and the low type to meet ``max_rel_error``:

1. the candidates are the nodes the full conversion would lower; if converting all of
   them meets the budget, that is the answer;
2. otherwise each candidate's sensitivity is measured alone (only that node lowered, the
   error of the outputs against float32);
3. candidates are sorted least sensitive first and a binary search finds the longest
   prefix of that order whose joint conversion stays within the budget (errors grow
   with the prefix; the empty prefix is float32 itself);
4. the next candidates after that prefix (up to ``REFINE_TRIALS``) are tried one at a
   time, least sensitive first, each kept when the whole still meets the budget; the rest
   stay float32 with "over budget" as their reason.

Steps 2-4 run on a ``Switchboard`` (one session, each candidate's rounding switched by an
input), then the chosen set is converted for real and measured; should that be over the
budget, the last chosen nodes go back to float32 one by one, so the result always meets it.

``precision_model`` is the file-to-file command: checks everything before any work,
optimizes with a pass level first, converts, guards and writes atomically.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from torsh_gen.errors import InputError, TorshGenError
from torsh_gen.frontends.onnx import load_onnx, save_onnx, to_onnx
from torsh_gen.frontends.onnx.exporter import weight_bytes
from torsh_gen.ir.graph import Graph, Value
from torsh_gen.ir.types import DType, TensorType
from torsh_gen.ir.verify import verify
from torsh_gen.passes import run_passes
from torsh_gen.passes.precision import (
    DEFAULT_MAX_ACCUMULATION,
    convert_float_precision,
    float_nodes,
    name_nodes,
)
from torsh_gen.tools.validate import cosine_similarity

PRECISIONS = ("fp16", "bf16", "mixed")
LOW_TYPES = {"fp16": DType.FLOAT16, "bf16": DType.BFLOAT16}
#: Which low types each target can run: our compiled artifact runs both (bf16 through
#: ml_dtypes and upcasting kernels); onnxruntime's CPU provider lacks bf16 arithmetic.
TARGET_TYPES = {"cpu": ("fp16", "bf16"), "onnxruntime": ("fp16",)}
#: Passes run after the conversion: fold the casts of constants, merge exact cast chains.
CLEANUP = ["fold_constants", "simplify", "eliminate_dead_code"]
RANDOM_BATCHES = 4
#: Candidates after the binary-searched prefix that mixed still tries one by one.
REFINE_TRIALS = 16
RANDOM_BATCH_SIZE = 8


class PrecisionBudgetError(TorshGenError):
    """The converted model is over ``--max-rel-error``; nothing was written (exit code 1)."""


@dataclass
class PrecisionResult:
    """A conversion and its measured cost."""

    graph: Graph
    precision: str
    low: str
    budget: float | None
    outputs: dict[str, dict[str, float | None]]
    converted: list[str]
    kept: list[dict[str, str]]
    engine: str
    data: str
    size_before: int
    size_after: int
    weight_bytes_before: int
    weight_bytes_after: int
    search: list[dict[str, Any]] = field(default_factory=list)
    evaluations: int = 0
    seconds: float = 0.0
    output: str | None = None
    written: bool = False

    @property
    def max_rel_error(self) -> float:
        """The worst max rel error over all outputs (0.0 for a model without float outputs)."""
        errs = [o["max_rel"] for o in self.outputs.values() if o["max_rel"] is not None]
        return max(errs, default=0.0)

    @property
    def within_budget(self) -> bool:
        """True when there is no budget or the error is within it."""
        return self.budget is None or self.max_rel_error <= self.budget

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON/YAML output."""
        return {
            "precision": self.precision,
            "low_type": self.low,
            "max_rel_error_budget": self.budget,
            "max_rel_error": self.max_rel_error,
            "within_budget": self.within_budget,
            "outputs": self.outputs,
            "size_bytes": {"before": self.size_before, "after": self.size_after},
            "weight_bytes": {"before": self.weight_bytes_before, "after": self.weight_bytes_after},
            "converted": self.converted,
            "kept_float32": self.kept,
            "search": self.search,
            "engine": self.engine,
            "data": self.data,
            "evaluations": self.evaluations,
            "seconds": round(self.seconds, 3),
            "output": self.output,
            "written": self.written,
        }


def check_precision(precision: str, target: str = "cpu", low: str = "fp16") -> str:
    """The low type ('fp16' or 'bf16') ``precision`` converts to; InputError when ``target`` cannot run it."""
    if precision not in PRECISIONS:
        raise InputError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    if low not in LOW_TYPES:
        raise InputError(f"unknown low-precision type {low!r} for mixed; use fp16 or bf16")
    if target not in TARGET_TYPES:
        raise InputError(f"unknown precision target {target!r}; use one of {', '.join(TARGET_TYPES)}")
    chosen = low if precision == "mixed" else precision
    if chosen not in TARGET_TYPES[target]:
        raise InputError(
            f"target {target} cannot run {chosen} arithmetic (onnxruntime's CPU provider has no bf16 kernels "
            f"for Conv, MatMul, Add, ...); use fp16, or --target cpu for torsh-gen's compiled artifact"
        )
    return chosen


def calibration_feeds(
    graph: Graph,
    calib: str | os.PathLike | None = None,
    *,
    preprocess: str | None = None,
    bindings: Mapping[str, Any] | None = None,
    limit: int | None = 512,
    seed: int = 0,
) -> tuple[list[dict[str, np.ndarray]], str]:
    """Checked feeds from ``calib`` (npz/npy/folders/images), or seeded random batches; and a description."""
    from torsh_gen.tools.calibration import load_calibration
    from torsh_gen.tools.run import model_inputs, random_inputs

    if calib is not None:
        data = load_calibration(calib, graph, preprocess=preprocess, batch_size=64, limit=limit)
        return list(data.feeds), f"{data.source} ({data.samples} samples)"
    binds = dict(bindings or {})
    for v in model_inputs(graph):
        t = v.type
        if isinstance(t, TensorType) and t.shape and isinstance(t.shape[0], str):
            binds.setdefault(t.shape[0], RANDOM_BATCH_SIZE)
    # np.asarray: a 0-d bool comes back from random_inputs as a numpy scalar, which onnxruntime refuses
    feeds = [{k: np.asarray(v) for k, v in random_inputs(graph, binds, seed + i).items()} for i in range(RANDOM_BATCHES)]
    return feeds, f"random inputs from the declared shapes ({RANDOM_BATCHES} batches, seed {seed})"


def run_feeds(graph: Graph, feeds: Sequence[Mapping[str, Any]], *, emulate: bool = False) -> tuple[dict[str, np.ndarray], str]:
    """Outputs of ``graph`` on every feed, concatenated along axis 0, and the engine that ran them.

    With ``emulate``, a graph with fp16/bf16 values runs as its float32 emulation (see
    :func:`emulate_low_precision`) in onnxruntime when its edges are float32.
    """
    runner, engine = None, ""
    if emulate and _has_low_values(graph) and not _low_edges(graph):
        from torsh_gen.tools.precision_emulation import emulate_low_precision

        runner, engine = _runner(emulate_low_precision(graph))
        engine += " (fp16/bf16 rounding emulated in float32)"
    if runner is None:
        runner, engine = _runner(graph)
    from torsh_gen.tools.precision_emulation import stack_outputs

    return stack_outputs([runner(feed) for feed in feeds]), engine


def _is_low(v: Value) -> bool:
    return isinstance(v.type, TensorType) and v.type.dtype in (DType.FLOAT16, DType.BFLOAT16)


def _has_low_values(graph: Graph) -> bool:
    return any(_is_low(v) for v in graph.values())


def _low_edges(graph: Graph) -> bool:
    return any(_is_low(v) for v in (*graph.inputs, *graph.outputs))


def _runner(graph: Graph) -> tuple[Any, str]:
    """onnxruntime when it loads the model (it has kernels for every type used), else the reference interpreter."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    try:
        sess = ort.InferenceSession(to_onnx(graph).SerializeToString(), opts, providers=["CPUExecutionProvider"])
    except Exception:
        from torsh_gen.ops.execute import run_graph

        names = [o.name for o in graph.outputs]
        return (lambda feed: dict(zip(names, run_graph(graph, feed)))), "reference interpreter"
    names = [o.name for o in sess.get_outputs()]
    return (lambda feed: dict(zip(names, sess.run(names, dict(feed))))), f"onnxruntime {ort.__version__}"


def output_errors(ours: Mapping[str, Any], ref: Mapping[str, Any]) -> dict[str, dict[str, float | None]]:
    """Per output: max abs error, max rel error (max|a-b| / max|b|) and cosine similarity."""
    result: dict[str, dict[str, float | None]] = {}
    for name, r in ref.items():
        r = np.asarray(r)
        o = np.asarray(ours[name])
        if r.dtype.kind != "f" or o.shape != r.shape:
            equal = o.shape == r.shape and bool(np.array_equal(o, r))
            result[name] = {"max_abs": 0.0 if equal else None, "max_rel": 0.0 if equal else None, "cosine": None}
            continue
        a, b = o.astype(np.float64), r.astype(np.float64)
        diff = float(np.max(np.abs(a - b))) if a.size else 0.0
        scale = float(np.max(np.abs(b))) if b.size else 0.0
        rel = diff / scale if scale > 0 else (0.0 if diff == 0 else float("inf"))
        result[name] = {"max_abs": diff, "max_rel": rel, "cosine": cosine_similarity(a, b)}
    return result


def _worst(errors: Mapping[str, Mapping[str, float | None]]) -> float:
    vals = [e["max_rel"] for e in errors.values()]
    return max((float("inf") if v is None else v for v in vals), default=0.0)


class _Trial:
    """Converts fresh copies of the float32 graph with a given keep set and measures them."""

    def __init__(self, graph: Graph, low: DType, feeds: list[dict[str, np.ndarray]], max_accumulation: int) -> None:
        self.base = load_onnx(to_onnx(graph).SerializeToString())
        name_nodes(self.base)  # copies then agree on the names keep lists refer to
        self.proto = to_onnx(self.base).SerializeToString()
        self.low = low
        self.feeds = feeds
        self.max_accumulation = max_accumulation
        self.reference, _ = run_feeds(graph, feeds)
        self.evaluations = 0

    def convert(self, keep: Sequence[str] = ()) -> tuple[Graph, Any]:
        """A converted copy of the float32 graph (cleanup passes applied) and its changes."""
        g = load_onnx(self.proto)
        changes = convert_float_precision(g, self.low, keep_fp32=keep, max_accumulation=self.max_accumulation)
        run_passes(g, CLEANUP)
        verify(g)
        return g, changes

    def measure(self, keep: Sequence[str] = ()) -> tuple[Graph, Any, dict, str]:
        """Convert with ``keep`` and measure the outputs against float32."""
        g, changes = self.convert(keep)
        outs, engine = run_feeds(g, self.feeds, emulate=True)
        self.evaluations += 1
        return g, changes, output_errors(outs, self.reference), engine


def convert_precision(
    graph: Graph,
    precision: str,
    *,
    low: str = "fp16",
    feeds: Sequence[Mapping[str, np.ndarray]] | None = None,
    data: str = "random inputs",
    max_rel_error: float | None = None,
    keep_fp32: Sequence[str] = (),
    max_accumulation: int = DEFAULT_MAX_ACCUMULATION,
) -> PrecisionResult:
    """Convert float32 ``graph`` (left unchanged) to ``precision`` and measure it on ``feeds``.

    ``mixed`` needs ``max_rel_error``; for fp16/bf16 the budget only marks the result as
    within it or not (the caller decides whether to write).
    """
    start = time.perf_counter()
    chosen = check_precision(precision, "cpu", low)
    if precision == "mixed" and max_rel_error is None:
        raise InputError("--precision mixed needs a budget: give --max-rel-error (e.g. 1e-3)")
    if max_rel_error is not None and not max_rel_error >= 0:
        raise InputError(f"--max-rel-error must be a non-negative number, not {max_rel_error}")
    if not float_nodes(graph):
        raise InputError("the model has no float32 computation to convert")
    if feeds is None:
        feeds, data = calibration_feeds(graph)
    trial = _Trial(graph, LOW_TYPES[chosen], [dict(f) for f in feeds], max_accumulation)
    keep = list(keep_fp32)
    g, changes, errors, engine = trial.measure(keep)
    search: list[dict[str, Any]] = []
    if precision == "mixed" and _worst(errors) > max_rel_error:
        g, changes, errors, engine, search = _mixed_search(trial, changes.converted, keep, max_rel_error)
    over = {s["node"] for s in search if not s["converted"]}
    kept = [{"node": n, "op": _op(trial.base, n), "reason": "over budget: lowering it exceeded --max-rel-error" if n in over else why}
            for n, why in changes.kept.items()]
    return PrecisionResult(
        graph=g, precision=precision, low=chosen, budget=max_rel_error, outputs=errors,
        converted=list(changes.converted), kept=kept, engine=engine, data=data,
        size_before=len(trial.proto), size_after=to_onnx(g).ByteSize(),
        weight_bytes_before=weight_bytes(graph), weight_bytes_after=weight_bytes(g),
        search=search, evaluations=trial.evaluations, seconds=time.perf_counter() - start,
    )


def _mixed_search(trial: _Trial, candidates: list[str], keep: list[str], budget: float) -> tuple:
    """Sensitivity per candidate, then the longest least-sensitive-first prefix within budget.

    Trials run on a :class:`Switchboard` (one session, the rounding of each candidate
    switched on or off); the chosen set is then converted for real and measured, and while
    that is over budget the last chosen nodes go back to float32.
    """
    from torsh_gen.tools.precision_emulation import Switchboard

    board = Switchboard(trial.base, candidates, trial.low)

    def error(lowered: set[str]) -> float:
        trial.evaluations += 1
        return _worst(output_errors(board.run(lowered, trial.feeds), trial.reference))

    sensitivity = {name: error({name}) for name in candidates}
    order = sorted(candidates, key=lambda n: (sensitivity[n], candidates.index(n)))
    lo, hi = 0, len(order)  # invariant: prefix lo is within budget (the empty one is float32)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if error(set(order[:mid])) <= budget:
            lo = mid
        else:
            hi = mid - 1
    chosen = list(order[:lo])
    for name in order[lo : lo + REFINE_TRIALS]:  # the prefix assumption is a heuristic: try the next ones alone
        if error({*chosen, name}) <= budget:
            chosen.append(name)
    while True:
        result = trial.measure(keep + [n for n in order if n not in chosen])
        if _worst(result[2]) <= budget or not chosen:
            break
        chosen.pop()  # the real graph disagrees with the switchboard: back off
    search = [{"node": n, "sensitivity": sensitivity[n], "converted": n in chosen} for n in order]
    return (*result, search)


def _op(graph: Graph, name: str) -> str:
    for n in graph.nodes:
        if n.name == name:
            return n.op_type
    return "?"


def precision_model(
    model: str | os.PathLike,
    output: str | os.PathLike,
    precision: str,
    *,
    low: str = "fp16",
    target: str = "cpu",
    calib: str | os.PathLike | None = None,
    preprocess: str | None = None,
    max_rel_error: float | None = None,
    force: bool = False,
    level: str = "O2",
    passes: Sequence[str] | None = None,
    keep_fp32: Sequence[str] = (),
    input_shapes: Sequence[str] | None = None,
    bindings: Mapping[str, Any] | None = None,
    limit: int | None = 512,
) -> tuple[PrecisionResult, Any]:
    """Load ``model``, optimize it (``level``), convert it, guard the error and write ``output``.

    Every input (precision, target, budget, calibration data) is checked before any work.
    When the error is over ``max_rel_error`` nothing is written and PrecisionBudgetError is
    raised, unless ``force``. Returns the conversion result and the optimization result.
    """
    from torsh_gen.passes import pipeline
    from torsh_gen.tools.loading import load_model
    from torsh_gen.tools.optimize import optimize_graph

    out = Path(output)
    if out.suffix.lower() != ".onnx":
        raise InputError(f"{out}: the converted model is written as ONNX; name it with .onnx")
    check_precision(precision, target, low)
    if max_rel_error is not None and not max_rel_error >= 0:
        raise InputError(f"--max-rel-error must be a non-negative number, not {max_rel_error}")
    if precision == "mixed" and max_rel_error is None:
        raise InputError("--precision mixed needs a budget: give --max-rel-error (e.g. 1e-3)")
    pipeline(level, passes)  # bad level or pass names fail before any work
    graph = load_model(model, input_shapes)
    if not float_nodes(graph):
        raise InputError(f"{model}: the model has no float32 computation to convert")
    feeds, data = calibration_feeds(graph, calib, preprocess=preprocess, bindings=bindings, limit=limit)
    opt = optimize_graph(graph, level, passes, custom_ops=False, model_name=str(model))
    result = convert_precision(
        graph, precision, low=low, feeds=feeds, data=data, max_rel_error=max_rel_error, keep_fp32=keep_fp32
    )
    if not result.within_budget and not force:
        raise PrecisionBudgetError(
            f"{precision} conversion: max rel error {result.max_rel_error:.3g} is over --max-rel-error "
            f"{max_rel_error:g}; nothing written (use --precision mixed, a larger budget, or --force)"
        )
    save_onnx(result.graph, out)
    result.output, result.written = str(out), True
    opt.output = str(out)
    return result, opt
