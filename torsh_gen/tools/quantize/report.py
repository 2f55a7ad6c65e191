"""The quantize report's parts: sizes, onnxruntime's own quantizer, latency; and writing.

Every figure is measured, side by side: float32, our quantized model and onnxruntime's
quantized model of the same float graph and data.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from torsh_gen.errors import TorshGenError
from torsh_gen.frontends.onnx import to_onnx
from torsh_gen.ir.graph import Graph
from torsh_gen.ir.types import TensorType
from torsh_gen.passes.quantize import QuantMode, QuantOptions
from torsh_gen.tools.quantize.evaluate import (
    EvalSet,
    artifact_latency,
    compare,
    ort_latency,
    outputs_of,
)
from torsh_gen.tools.quantize.guard import GuardOutcome, Trial
from torsh_gen.tools.quantize.reference import ort_quantize


def weight_bytes(graph: Graph) -> int:
    """Bytes of the initializers as stored in the file (4-bit types packed two per byte)."""
    total = 0
    for v in graph.initializers:
        t = v.type if isinstance(v.type, TensorType) else None
        n = t.nbytes() if t is not None else None
        total += n if n is not None else int(v.const.nbytes)
    return total


def model_bytes(graph: Graph) -> int:
    """Serialized size; beyond protobuf's 2 GB limit, the weight bytes (which dominate)."""
    try:
        return len(to_onnx(graph, value_info=False).SerializeToString())
    except ValueError:
        return weight_bytes(graph)


def size_row(before: Graph, after: Graph) -> dict[str, Any]:
    """File and weight bytes before and after, and their ratios."""
    fb, qb = model_bytes(before), model_bytes(after)
    fw, qw = weight_bytes(before), weight_bytes(after)
    return {
        "float_bytes": fb,
        "quantized_bytes": qb,
        "ratio": qb / fb,
        "float_weight_bytes": fw,
        "quantized_weight_bytes": qw,
        "weight_ratio": qw / fw if fw else None,
    }


def report_head(
    model: str | os.PathLike,
    output: str | os.PathLike,
    config: Any,
    original: Graph,
    graph: Graph,
    trial: Trial,
    outcome: GuardOutcome | None,
    data: EvalSet | None,
    from_eval: bool,
) -> dict[str, Any]:
    """What was asked, what was quantized, sizes, accuracy and the guard's work."""
    opts: QuantOptions = config.options
    static = opts.mode == QuantMode.STATIC
    return {
        "model": str(model),
        "output": str(output),
        "mode": opts.mode.value,
        "format": opts.format.value,
        "method": config.method if static else None,
        "per_channel": opts.per_channel,
        "symmetric": opts.symmetric,
        "block_size": opts.block_size if opts.mode == QuantMode.WEIGHT_INT4 else None,
        "opset": {"model": original.opset, "output": graph.opset},
        "quantized": trial.result.quantized,
        "float_nodes": trial.result.skipped,
        "data": (
            None
            if data is None
            else {
                "source": data.data.source,
                "samples": data.data.samples,
                "labels": data.labels is not None,
                "kind": "eval" if from_eval else "calibration",
            }
        ),
        "size": size_row(graph, trial.graph),
        "ours": trial.metrics or None,
        "guard": (
            None
            if outcome is None
            else {
                "budget": outcome.budget,
                "within_budget": outcome.within_budget,
                "kept_float": outcome.kept_float,
                "sensitivity": outcome.sensitivity,
                "steps": outcome.steps,
            }
        ),
    }


def ort_reference(
    source: Graph,
    graph: Graph,
    opts: QuantOptions,
    method: str,
    calib: Sequence[dict[str, np.ndarray]] | None,
    data: EvalSet | None,
    ref: Mapping[str, np.ndarray] | None,
) -> dict[str, Any]:
    """onnxruntime's quantizer on ``source``: size against ``graph``, metrics, the model.

    The model itself travels under ``_model`` for the latency step; callers pop it.
    """
    proto, why = ort_quantize(to_onnx(source, value_info=False), opts, method, calib)
    if proto is None:
        return {"skipped": why}
    n = len(proto.SerializeToString())
    row: dict[str, Any] = {
        "size": {"quantized_bytes": n, "ratio": n / model_bytes(graph)},
        "_model": proto,
    }
    if data is not None and ref is not None:
        try:
            row["metrics"] = compare(ref, outputs_of(proto, data.feeds), data.labels)
        except TorshGenError as e:
            row["metrics"] = {"skipped": str(e)}
    return row


def latency(
    graph: Graph,
    quantized: Graph,
    ort_model: Any,
    feed: dict[str, Any],
    repeat: int,
    artifact: bool,
) -> dict[str, Any]:
    """Median latencies: onnxruntime float/ours/its quantizer's, and optionally artifacts."""
    res: dict[str, Any] = {
        "inputs": {k: list(v.shape) for k, v in feed.items()},
        "threads": 1,
        "repeat": repeat,
    }
    res["onnxruntime_float_ms"] = ort_latency(graph, feed, repeat)
    res["onnxruntime_quantized_ms"] = ort_latency(quantized, feed, repeat)
    if ort_model is not None:
        res["onnxruntime_reference_ms"] = ort_latency(ort_model, feed, repeat)
    if not artifact:
        return res
    with tempfile.TemporaryDirectory(prefix="torsh-gen-qart-") as tmp:
        try:
            res["artifact_float_ms"], _ = artifact_latency(
                graph, feed, Path(tmp), "float_model", repeat
            )
            res["artifact_quantized_ms"], ours = artifact_latency(
                quantized, feed, Path(tmp), "quant_model", repeat
            )
            ort_out = outputs_of(quantized, [feed])
            diffs = [
                float(np.abs(np.asarray(ours[k], np.float64) - ort_out[k]).max())
                for k in ort_out
                if k in ours
            ]
            res["artifact_vs_onnxruntime_max_abs_diff"] = max(diffs) if diffs else None
        except TorshGenError as e:
            res["artifact"] = f"not compiled: {e}"
    return res


def write_model(graph: Graph, path: Path) -> None:
    """Serialize next to ``path`` and rename into place (no half-written file).

    Models too large for one protobuf message go through ``save_onnx``, which writes an
    external data file the same way.
    """
    from torsh_gen.frontends.onnx.exporter import EXTERNAL_DATA_THRESHOLD, save_onnx

    if weight_bytes(graph) > EXTERNAL_DATA_THRESHOLD:
        save_onnx(graph, path, external_data=True)
        return
    data = to_onnx(graph, value_info=False).SerializeToString()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
