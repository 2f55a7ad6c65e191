"""``torsh-gen prune``: prune a model and measure what it cost and what it saved.

The order is fixed so that bad input fails before any work and nothing half-done is
written: options, model, node filter and ``--eval`` data are checked first; then the
model is pruned (``passes/prune``), measured (accuracy, size, MACs, latency) and written
only if the accuracy guard allows it.

Evaluation data (``--eval DATA``) is what ``load_calibration`` reads. Labels: an ``.npz``
(or every ``.npz`` of a folder) may hold an integer array ``labels`` ([N] class indices,
one per sample, in sample order) beside the inputs, unless the model has an input of that
name. With labels the report gives top-1 accuracy before and after; the pruned model's
top-1 agreement with the unpruned one and the cosine similarity of their outputs are
always given (on random inputs when there is no ``--eval``).

Accuracy drop (for ``--max-accuracy-drop``, in percentage points): accuracy before minus
accuracy after when labels are given, else 100 minus the top-1 agreement in percent.

Size: weights are stored dense, so ``weight_bytes`` only falls with structured pruning;
``compressed_bytes`` is the serialized ONNX file through zlib (deflate, level 6), which is
what magnitude pruning's zeros save in a compressed download or archive.

MACs are per call, every symbolic input dim bound to 1 unless ``--input-shape`` binds it,
counted with the ops' cost functions (``inspect``). Magnitude pruning leaves the dense
MAC count unchanged; ``macs_nonzero`` counts only the MACs of the nonzero weights of the
pruned layers (what a sparse kernel would do). Latency is the median of ``bench`` runs
of the unpruned and pruned models, on onnxruntime and on our compiled artifact.
"""

from __future__ import annotations

import copy
import os
import tempfile
import time
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from torsh_gen.errors import InputError, TorshGenError
from torsh_gen.frontends.onnx import save_onnx, to_onnx
from torsh_gen.ir.graph import Graph
from torsh_gen.ir.types import TensorType
from torsh_gen.ir.verify import verify
from torsh_gen.passes.prune import NodeFilter, magnitude_prune, structured_prune
from torsh_gen.passes.prune.magnitude import SCOPES, check_sparsity, weight_input
from torsh_gen.passes.prune.structured import NORMS
from torsh_gen.tools.loading import load_model

METHODS = ("magnitude", "structured")
LABELS_KEY = "labels"


class AccuracyBudgetError(TorshGenError):
    """The pruned model lost more accuracy than ``--max-accuracy-drop`` allows."""


@dataclass
class EvalSet:
    """Checked evaluation feeds, their labels (or None) and where they came from."""

    feeds: list[dict[str, np.ndarray]]
    labels: np.ndarray | None
    source: str
    samples: int


@dataclass
class PruneResult:
    """Everything ``prune`` measured; ``written`` is False when the accuracy guard refused."""

    model: str
    output: str
    method: str
    sparsity: float
    scope: str
    norm: str
    layers: list[dict[str, Any]]
    groups: list[dict[str, Any]]
    size: dict[str, Any]
    macs: dict[str, Any]
    evaluation: dict[str, Any]
    latency: dict[str, Any] | None
    guard: dict[str, Any] | None
    written: bool = False
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON/YAML output."""
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def prune_model(
    model: str | os.PathLike,
    output: str | os.PathLike,
    *,
    method: str,
    sparsity: float,
    scope: str = "layer",
    norm: str = "l1",
    channel_multiple: int = 1,
    eval_data: str | os.PathLike | None = None,
    preprocess: str | None = None,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    max_accuracy_drop: float | None = None,
    force: bool = False,
    latency: bool = True,
    bindings: Mapping[str, Any] | None = None,
    input_shapes: Sequence[str] | None = None,
    threads: int = 2,
    repeat: int = 50,
    rounds: int = 1,
    batch_size: int | None = None,
) -> PruneResult:
    """Prune ``model`` into ``output`` (.onnx) and report accuracy, size, MACs and latency.

    Nothing is written when ``max_accuracy_drop`` is exceeded unless ``force``; the
    result then has ``written`` False (the CLI turns that into an error).
    """
    start = time.perf_counter()
    out = Path(output)
    check_options(method, sparsity, scope, norm, out, eval_data, max_accuracy_drop)
    if channel_multiple < 1:
        raise InputError(f"--channel-multiple must be a positive integer, got {channel_multiple}")
    graph = load_model(model, input_shapes)
    node_filter = NodeFilter(tuple(include), tuple(exclude))
    node_filter.check(graph)
    if not any(weight_input(n) is not None for n in graph.nodes):
        raise InputError(
            f"{model}: nothing to prune: the model has no Conv, Gemm or MatMul with a constant "
            "float weight"
        )
    evalset = load_eval_set(eval_data, graph, preprocess, batch_size) if eval_data else None
    scores_output = class_scores_output(graph)
    if (
        max_accuracy_drop is not None
        and (evalset is None or evalset.labels is None)
        and scores_output is None
    ):
        raise InputError(
            "--max-accuracy-drop needs labels in --eval DATA or a class-score output [N, C] "
            "to compare top-1"
        )

    pruned = copy.deepcopy(graph)
    layers: list[dict[str, Any]] = []
    groups: list[dict[str, Any]] = []
    if method == "magnitude":
        layers = [r.to_dict() for r in magnitude_prune(pruned, sparsity, scope, node_filter)]
    else:
        groups = [
            r.to_dict()
            for r in structured_prune(pruned, sparsity, scope, norm, node_filter, channel_multiple)
        ]
    verify(pruned)

    symbols = _bindings(graph, bindings)
    macs_before, macs_after = count_macs(graph, symbols), count_macs(pruned, symbols)
    macs = {
        "before": macs_before["macs"],
        "after": macs_after["macs"],
        "ratio": _ratio(macs_after["macs"], macs_before["macs"]),
        "per": "call, symbolic dims bound to 1 unless --input-shape binds them",
    }
    if method == "magnitude":
        macs["after_nonzero"] = nonzero_macs(pruned, macs_after["nodes"])
        macs["ratio_nonzero"] = _ratio(macs["after_nonzero"], macs_before["macs"])
    size = size_report(graph, pruned, macs_before["weight_bytes"], macs_after["weight_bytes"])
    evaluation = evaluate(graph, pruned, evalset, scores_output, symbols)
    guard = None
    if max_accuracy_drop is not None:
        drop = evaluation["accuracy_drop"]
        guard = {
            "max_accuracy_drop": max_accuracy_drop,
            "accuracy_drop": drop,
            "passed": drop <= max_accuracy_drop,
            "forced": force,
        }
    timing = measure_latency(graph, pruned, bindings, threads, repeat, rounds) if latency else None
    result = PruneResult(
        str(model),
        str(out),
        method,
        sparsity,
        scope,
        norm,
        layers,
        groups,
        size,
        macs,
        evaluation,
        timing,
        guard,
    )
    if guard is None or guard["passed"] or force:
        save_onnx(pruned, out)  # written beside the destination and renamed at the end
        result.written = True
    result.seconds = time.perf_counter() - start
    return result


def check_options(
    method: str,
    sparsity: float,
    scope: str,
    norm: str,
    out: Path,
    eval_data: str | os.PathLike | None,
    max_accuracy_drop: float | None,
) -> None:
    """Raise InputError for any bad option, before the model is even read."""
    if method not in METHODS:
        raise InputError(f"unknown method {method!r}; use magnitude or structured")
    check_sparsity(sparsity)
    if scope not in SCOPES:
        raise InputError(f"unknown scope {scope!r}; use layer or global")
    if norm not in NORMS:
        raise InputError(f"unknown norm {norm!r}; use l1 or l2")
    if out.suffix.lower() != ".onnx":
        raise InputError(f"{out}: the pruned model is written as ONNX; name it with .onnx")
    if max_accuracy_drop is not None:
        if not max_accuracy_drop >= 0:
            raise InputError(
                "--max-accuracy-drop must be a number of percentage points >= 0, "
                f"got {max_accuracy_drop}"
            )
        if eval_data is None:
            raise InputError("--max-accuracy-drop needs --eval DATA to measure the accuracy on")


# ----------------------------------------------------------------------------- evaluation data
def load_eval_set(
    source: str | os.PathLike, graph: Graph, preprocess: str | None, batch_size: int | None
) -> EvalSet:
    """Read and check ``--eval`` DATA and its optional ``labels`` (see the module docstring)."""
    from torsh_gen.tools.calibration import load_calibration

    path = Path(source)
    input_names = {v.name for v in graph.inputs}
    files = (
        sorted(p for p in path.iterdir() if p.suffix.lower() == ".npz") if path.is_dir() else [path]
    )
    files = [f for f in files if f.suffix.lower() == ".npz" and f.is_file()]
    with_labels = [f for f in files if LABELS_KEY not in input_names and LABELS_KEY in _npz_keys(f)]
    if not with_labels:
        data = load_calibration(path, graph, preprocess=preprocess, batch_size=batch_size)
        return EvalSet(list(data.feeds), None, str(path), data.samples)
    others = (
        [
            p
            for p in path.iterdir()
            if p.is_file() and p.suffix.lower() in (".npy", ".png", ".jpg", ".jpeg", ".bmp")
        ]
        if path.is_dir()
        else []
    )
    if len(with_labels) != len(files) or others:
        raise InputError(
            f"{path}: some files hold '{LABELS_KEY}' and some do not; "
            "give labels in every .npz file or in none"
        )
    labels = []
    with tempfile.TemporaryDirectory(prefix="torsh-gen-eval-") as tmp:
        for f in files:
            with np.load(f, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
            labels.append(_check_labels(arrays.pop(LABELS_KEY), f))
            np.savez(Path(tmp) / f.name, **arrays)
        stripped = Path(tmp) / path.name if not path.is_dir() else Path(tmp)
        data = load_calibration(stripped, graph, preprocess=preprocess, batch_size=batch_size)
    all_labels = np.concatenate(labels)
    if len(all_labels) != data.samples:
        raise InputError(
            f"{path}: '{LABELS_KEY}' holds {len(all_labels)} labels for {data.samples} samples; "
            "give one label per sample"
        )
    return EvalSet(list(data.feeds), all_labels, str(path), data.samples)


def _npz_keys(path: Path) -> list[str]:
    try:
        with np.load(path, allow_pickle=False) as z:
            return list(z.files)
    except Exception:
        return []  # load_calibration reports unreadable files with its own message


def _check_labels(labels: np.ndarray, path: Path) -> np.ndarray:
    if (
        labels.dtype.kind not in "iu"
        or labels.ndim not in (1, 2)
        or (labels.ndim == 2 and labels.shape[1] != 1)
    ):
        raise InputError(
            f"{path}: '{LABELS_KEY}' must be integer class indices of shape [N], "
            f"got {labels.dtype} {list(labels.shape)}"
        )
    if labels.size and labels.min() < 0:
        raise InputError(f"{path}: '{LABELS_KEY}' holds negative class indices")
    return labels.reshape(-1).astype(np.int64)


def class_scores_output(graph: Graph) -> str | None:
    """The first output declared as float [N, C, (1...)], the one top-1 metrics read."""
    for v in graph.outputs:
        t = v.type
        if (
            isinstance(t, TensorType)
            and t.dtype.is_float
            and t.shape is not None
            and len(t.shape) >= 2
        ):
            if all(d == 1 for d in t.shape[2:]) and t.shape[1] != 1:
                return v.name
    return None


# ----------------------------------------------------------------------------- measurements
def evaluate(
    graph: Graph,
    pruned: Graph,
    evalset: EvalSet | None,
    scores: str | None,
    symbols: Mapping[str, Any],
) -> dict[str, Any]:
    """onnxruntime outputs of both models on the eval set (or random inputs), compared."""
    from torsh_gen.tools.compare import run_onnxruntime
    from torsh_gen.tools.run import random_inputs
    from torsh_gen.tools.validate import output_metrics

    feeds = evalset.feeds if evalset else [random_inputs(graph, symbols, seed=0)]
    ref = _concat([run_onnxruntime(graph, f) for f in feeds])
    ours = _concat([run_onnxruntime(pruned, f) for f in feeds])
    metrics = output_metrics(ours, ref, 1e-3, 1e-4)
    result: dict[str, Any] = {
        "data": evalset.source if evalset else "random inputs (no --eval)",
        "samples": evalset.samples if evalset else None,
        "outputs": {
            k: {
                "cosine": m["cosine"],
                "top1_agreement": m["top1_agreement"],
                "max_abs_diff": m["max_abs_diff"],
            }
            for k, m in metrics.items()
        },
        "accuracy_before": None,
        "accuracy_after": None,
        "accuracy_drop": None,
    }
    if evalset is not None and evalset.labels is not None:
        if scores is None:
            raise InputError(
                "--eval DATA holds labels, but no model output is float class scores [N, C]"
            )
        n_classes = ref[scores].shape[1]
        if evalset.labels.max(initial=0) >= n_classes:
            raise InputError(
                f"{evalset.source}: labels go up to {int(evalset.labels.max())}, "
                f"the model has {n_classes} classes"
            )
        before, after = _top1(ref[scores], evalset.labels), _top1(ours[scores], evalset.labels)
        result.update(
            accuracy_before=before,
            accuracy_after=after,
            accuracy_drop=before - after,
            metric="top-1 accuracy (%)",
        )
    elif scores is not None and metrics[scores]["top1_agreement"] is not None:
        result.update(
            accuracy_drop=100.0 * (1.0 - metrics[scores]["top1_agreement"]),
            metric="100 - top-1 agreement with the unpruned model (%)",
        )
    return result


def _top1(scores: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.argmax(scores.reshape(scores.shape[0], -1), axis=1) == labels) * 100.0)


def _concat(runs: list[dict[str, Any]]) -> dict[str, Any]:
    if len(runs) == 1:
        return runs[0]
    return {
        k: (
            np.concatenate([r[k] for r in runs])
            if isinstance(runs[0][k], np.ndarray) and runs[0][k].ndim
            else runs[0][k]
        )
        for k in runs[0]
    }


def _bindings(graph: Graph, bindings: Mapping[str, Any] | None) -> dict[str, Any]:
    """The user's bindings plus every remaining symbolic input dim bound to 1."""
    out = dict(bindings or {})
    for v in graph.inputs:
        if isinstance(v.type, TensorType) and v.type.shape and v.name not in out:
            for d in v.type.shape:
                if isinstance(d, str):
                    out.setdefault(d, 1)
    return out


def count_macs(graph: Graph, symbols: Mapping[str, Any]) -> dict[str, Any]:
    """``inspect``'s MACs, weight bytes and per-node rows for ``graph`` (a copy is bound)."""
    from torsh_gen.tools.inspect import inspect_graph

    report = inspect_graph(copy.deepcopy(graph), symbols)
    return {
        "macs": int(report["macs"]),
        "weight_bytes": int(report["weight_bytes"]),
        "nodes": report["nodes"],
    }


def nonzero_macs(graph: Graph, rows: list[dict[str, Any]]) -> int:
    """MACs with each weight-carrying node scaled by its weight's nonzero fraction."""
    density = {}
    for n in graph.nodes:
        i = weight_input(n)
        if i is not None:
            w = n.inputs[i].const
            density[n.name] = float(np.count_nonzero(w)) / w.size if w.size else 1.0
    return int(sum(r["macs"] * density.get(r["name"], 1.0) for r in rows))


def size_report(
    graph: Graph, pruned: Graph, weights_before: int, weights_after: int
) -> dict[str, Any]:
    """Dense weight bytes, ONNX file bytes and zlib-compressed file bytes, before and after."""
    before, after = to_onnx(graph).SerializeToString(), to_onnx(pruned).SerializeToString()
    zb, za = len(zlib.compress(before, 6)), len(zlib.compress(after, 6))
    return {
        "weight_bytes": {
            "before": weights_before,
            "after": weights_after,
            "ratio": _ratio(weights_after, weights_before),
        },
        "file_bytes": {
            "before": len(before),
            "after": len(after),
            "ratio": _ratio(len(after), len(before)),
        },
        "compressed_bytes": {
            "before": zb,
            "after": za,
            "ratio": _ratio(za, zb),
            "codec": "zlib level 6 of the ONNX file",
        },
        "nonzero_parameters": {"before": _nonzeros(graph), "after": _nonzeros(pruned)},
    }


def _nonzeros(graph: Graph) -> int:
    return int(
        sum(
            np.count_nonzero(v.const)
            for v in graph.initializers
            if v.const is not None and v.const.dtype.kind == "f"
        )
    )


def measure_latency(
    graph: Graph,
    pruned: Graph,
    bindings: Mapping[str, Any] | None,
    threads: int,
    repeat: int,
    rounds: int,
) -> dict[str, Any]:
    """Median latency of both models on onnxruntime and our artifact (compiled once each).

    ``rounds`` alternates unpruned and pruned runs so slow drift of a busy machine hits
    both alike; each round's median is kept and the median of those is reported.
    """
    from torsh_gen.tools.bench import bench_model, cpu_model
    from torsh_gen.tools.compile import compile_model

    engines = ("torsh-gen", "onnxruntime")
    medians: dict[str, dict[str, list[float]]] = {e: {"before": [], "after": []} for e in engines}
    with tempfile.TemporaryDirectory(prefix="torsh-gen-prune-") as tmp:
        paths = {}
        for key, g in (("before", graph), ("after", pruned)):
            paths[key] = save_onnx(g, Path(tmp) / f"{key}.onnx")
            compile_model(paths[key], Path(tmp) / f"art_{key}")
        for _ in range(max(1, rounds)):
            for key in ("before", "after"):
                r = bench_model(
                    paths[key],
                    engines=engines,
                    artifact_dir=Path(tmp) / f"art_{key}",
                    threads=threads,
                    warmup=5,
                    repeat=repeat,
                    blocks=3,
                    bindings=bindings,
                )
                for e in engines:
                    medians[e][key].append(r["engines"][e]["median_ms"])
    out: dict[str, Any] = {"threads": threads, "rounds": max(1, rounds), "cpu": cpu_model()}
    for e in engines:
        b, a = float(np.median(medians[e]["before"])), float(np.median(medians[e]["after"]))
        out[e] = {"before_ms": b, "after_ms": a, "ratio": _ratio(a, b)}
    return out


def _ratio(a: float, b: float) -> float | None:
    return a / b if b else None
