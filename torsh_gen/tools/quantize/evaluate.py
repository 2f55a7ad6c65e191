"""Evaluation of a quantized model against its float original: data, accuracy, latency.

``--eval DATA`` is read like calibration data; an ``.npz`` may also hold a ``labels``
array (class indices, one per sample), which makes top-1 *accuracy* measurable. The
accuracy drop is then ``accuracy(float) - accuracy(quantized)`` in points; without
labels it is the top-1 *agreement loss* against float32, ``100 * (1 - agreement)``,
the share of samples whose predicted class changed (an upper bound on the accuracy
drop, since a changed prediction can at most turn a right answer wrong).
"""

from __future__ import annotations

import functools
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from torsh_gen.errors import InputError
from torsh_gen.ir.graph import Graph
from torsh_gen.tools.calibration import CalibrationData, load_calibration
from torsh_gen.tools.quantize.collect import concat_batches, ort_session, run_all
from torsh_gen.tools.validate import looks_like_class_scores, output_metrics, top1_agreement

LABELS_KEY = "labels"


@dataclass(frozen=True)
class EvalSet:
    """Feeds to evaluate on, their source, and labels when the data had them."""

    data: CalibrationData
    labels: np.ndarray | None

    @property
    def feeds(self) -> tuple[dict[str, np.ndarray], ...]:
        """The checked input feeds."""
        return self.data.feeds


def load_eval(
    source: str | Path,
    graph: Graph,
    *,
    preprocess: str | None = None,
    batch_size: int | None = None,
    limit: int | None = None,
) -> EvalSet:
    """Read evaluation DATA (labels split off an .npz's ``labels`` array) and check it."""
    path = Path(source)
    labels = None
    if path.is_file() and path.suffix.lower() == ".npz":
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except (ValueError, OSError) as e:
            raise InputError(f"{path}: cannot read evaluation data ({e})") from None
        if LABELS_KEY in arrays:
            labels = arrays.pop(LABELS_KEY)
            if labels.ndim != 1 or labels.dtype.kind not in "iu":
                raise InputError(
                    f"{path}: '{LABELS_KEY}' must be a 1-d array of integer class indices"
                )
            with tempfile.TemporaryDirectory(prefix="torsh-gen-eval-") as tmp:
                stripped = Path(tmp) / "inputs.npz"
                np.savez(stripped, **arrays)
                data = load_calibration(
                    stripped, graph, preprocess=preprocess, batch_size=batch_size, limit=limit
                )
            if labels.shape[0] < data.samples:
                raise InputError(
                    f"{path}: {labels.shape[0]} labels for {data.samples} samples; "
                    "give one label per sample"
                )
            return EvalSet(
                CalibrationData(data.feeds, data.samples, str(path)), labels[: data.samples]
            )
    return EvalSet(
        load_calibration(path, graph, preprocess=preprocess, batch_size=batch_size, limit=limit),
        None,
    )


#: Ops whose products onnxruntime computes in 8-bit integers (a DequantizeLinear starts
#: the QDQ groups it fuses into integer kernels).
_INTEGER_PRODUCTS = {"MatMulInteger", "ConvInteger", "QLinearMatMul", "QLinearConv", "DequantizeLinear"}


@functools.cache
def ort_integer_products_exact() -> bool:
    """Whether onnxruntime's uint8 x int8 products are exact on this CPU.

    On x86 CPUs without VNNI (AVX2 only: AMD Zen 3, Intel before Cascade Lake) its kernels
    multiply with ``vpmaddubsw``, which adds each pair of products in int16 with
    saturation: on a Zen 3 a digits CNN's int8 logits moved by up to 6.1 and its
    agreement with float dropped, an error of the engine, not of the quantization."""
    import platform

    if platform.machine() not in ("x86_64", "AMD64"):
        return True
    try:
        import llvmlite.binding as llvm

        feats = llvm.get_host_cpu_features()
    except Exception:  # noqa: BLE001  (no feature string: assume the common case)
        return True
    return any(feats.get(f, False) for f in ("avx512vnni", "avxvnni", "amx-int8"))


def outputs_of(
    model: Graph | Any, feeds: Sequence[Mapping[str, np.ndarray]]
) -> dict[str, np.ndarray]:
    """Outputs of ``model`` (Graph or ModelProto) over all feeds: in onnxruntime, or, for a
    quantized model on a CPU where onnxruntime's integer products saturate, in torsh-gen's
    reference executor (exact integer arithmetic, as the spec and our artifacts)."""
    graph = model if isinstance(model, Graph) else None
    ops = {n.op_type for n in graph.nodes} if graph else {n.op_type for n in model.graph.node}
    if ops & _INTEGER_PRODUCTS and not ort_integer_products_exact():
        return _reference_outputs(graph or _load(model), feeds)
    return run_all(ort_session(model), feeds)


def _load(proto: Any) -> Graph:
    from torsh_gen.frontends.onnx import load_onnx

    return load_onnx(proto)


def _reference_outputs(graph: Graph, feeds: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Every output of ``graph`` in the reference executor over all feeds, concatenated
    along the batch axis (as ``run_all``)."""
    from torsh_gen.ops.execute import run_graph

    names = [v.name for v in graph.outputs]
    return concat_batches(names, (run_graph(graph, dict(feed)) for feed in feeds))


def class_output(outputs: Mapping[str, np.ndarray]) -> str | None:
    """The first output that looks like class scores (top-1 is measured on it)."""
    return next((k for k, v in outputs.items() if looks_like_class_scores(v)), None)


def accuracy_summary(
    ref: Mapping[str, np.ndarray], ours: Mapping[str, np.ndarray], labels: np.ndarray | None
) -> dict[str, Any]:
    """Top-1 agreement with float32 and, with labels, accuracy of both, and the drop."""
    name = class_output(ref)
    if name is None:
        return {
            "output": None,
            "top1_agreement": None,
            "accuracy_float": None,
            "accuracy_quantized": None,
            "drop": None,
            "drop_kind": None,
        }
    agree = top1_agreement(ours[name], ref[name])
    if labels is not None:
        acc_f = float(np.mean(np.argmax(ref[name].reshape(len(labels), -1), 1) == labels) * 100)
        acc_q = float(np.mean(np.argmax(ours[name].reshape(len(labels), -1), 1) == labels) * 100)
        return {
            "output": name,
            "top1_agreement": agree,
            "accuracy_float": acc_f,
            "accuracy_quantized": acc_q,
            "drop": acc_f - acc_q,
            "drop_kind": "accuracy",
        }
    return {
        "output": name,
        "top1_agreement": agree,
        "accuracy_float": None,
        "accuracy_quantized": None,
        "drop": 100.0 * (1.0 - agree),
        "drop_kind": "top1-agreement-loss",
    }


def compare(
    ref: Mapping[str, np.ndarray], ours: Mapping[str, np.ndarray], labels: np.ndarray | None
) -> dict[str, Any]:
    """Per-output error and cosine similarity, plus the accuracy summary."""
    metrics = output_metrics(ours, ref, rtol=0.0, atol=0.0)
    per_output = {
        k: {
            "max_abs_error": m["max_abs_diff"],
            "mean_abs_error": _mean_abs(ours.get(k), ref[k]),
            "cosine": m["cosine"],
        }
        for k, m in metrics.items()
    }
    return {"outputs": per_output, **accuracy_summary(ref, ours, labels)}


def _mean_abs(a: Any, b: np.ndarray) -> float | None:
    if not isinstance(a, np.ndarray) or a.shape != b.shape or b.dtype.kind != "f":
        return None
    return float(np.mean(np.abs(a.astype(np.float64) - b.astype(np.float64))))


def median_ms(call: Callable[[], Any], repeat: int = 50, warmup: int = 5) -> float:
    """Median wall time of ``call`` in milliseconds."""
    for _ in range(warmup):
        call()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter_ns()
        call()
        times.append(time.perf_counter_ns() - t0)
    return float(np.median(times)) / 1e6


def ort_latency(model: Graph | Any, feed: Mapping[str, np.ndarray], repeat: int = 50) -> float:
    """Median onnxruntime latency (one thread) of ``model`` on ``feed``."""
    sess = ort_session(model)
    names = [o.name for o in sess.get_outputs()]
    return median_ms(lambda: sess.run(names, dict(feed)), repeat)


def artifact_latency(
    graph: Graph, feed: Mapping[str, np.ndarray], folder: Path, name: str, repeat: int = 50
) -> tuple[float, dict[str, np.ndarray]]:
    """Compile ``graph`` into ``folder/name``, and its median latency and outputs on ``feed``."""
    import copy

    from torsh_gen.tools.artifact import load_artifact
    from torsh_gen.tools.compile import compile_model

    out = folder / name
    compile_model(copy.deepcopy(graph), out, target="cpu", level="O3")
    module = load_artifact(out)
    outputs = module.run(**feed)
    return median_ms(lambda: module.run(**feed), repeat), dict(outputs)
