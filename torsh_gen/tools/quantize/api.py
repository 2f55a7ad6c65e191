"""``torsh-gen quantize``: calibrate, quantize, measure against float32 and onnxruntime, write.

Order of work: every input is checked first (options, model, calibration and evaluation
data, ``--include``/``--exclude`` names), then the model is brought to the opset the
quantized ops need, calibrated (static mode), quantized, measured and, unless the
accuracy guard fails without ``--force``, written to a temporary file next to the
destination and renamed into place.
"""

from __future__ import annotations

import copy
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torsh_gen.errors import InputError, TorshGenError
from torsh_gen.frontends.onnx import load_onnx, to_onnx
from torsh_gen.ir.graph import Graph
from torsh_gen.ir.types import DType, TensorType
from torsh_gen.passes.quantize import (
    QOPERATOR_MODES,
    QuantFormat,
    QuantMode,
    QuantOptions,
    candidates,
    check_selection,
    quantize_graph,
    required_opset,
    split_gemm,
)
from torsh_gen.tools.calibration import load_calibration
from torsh_gen.tools.loading import load_model
from torsh_gen.tools.quantize.calibrators import CALIBRATORS, make_calibrator
from torsh_gen.tools.quantize.collect import calibrate, collect_stats
from torsh_gen.tools.quantize.evaluate import (
    EvalSet,
    artifact_latency,
    class_output,
    compare,
    load_eval,
    ort_latency,
    outputs_of,
)
from torsh_gen.tools.quantize.guard import GuardOutcome, Trial, guard, make_trial
from torsh_gen.tools.quantize.reference import ort_quantize


class AccuracyGuardError(TorshGenError):
    """The quantized model lost more accuracy than allowed, even with float fallbacks."""


@dataclass(frozen=True)
class QuantizeConfig:
    """Everything ``quantize_model`` needs besides the model and destination."""

    options: QuantOptions = field(default_factory=QuantOptions)
    method: str = "minmax"
    calib: str | None = None
    eval: str | None = None
    preprocess: str | None = None
    batch_size: int | None = None
    calib_limit: int | None = None
    max_accuracy_drop: float | None = None
    force: bool = False
    compare_onnxruntime: bool = True
    latency: bool = True
    artifact: bool = True
    repeat: int = 30


def check_config(config: QuantizeConfig, output: str | os.PathLike) -> None:
    """Reject inconsistent options before any work (one line each)."""
    opts = config.options
    if Path(output).suffix.lower() != ".onnx":
        raise InputError(
            f"{output}: the quantized model is ONNX; give an output path ending in .onnx"
        )
    if opts.mode == QuantMode.STATIC and not config.calib:
        raise InputError(
            "--mode static needs calibration data: add --calib DATA "
            "(an .npz, .npy, or a folder of them or of images)"
        )
    if opts.format == QuantFormat.QOPERATOR and opts.mode not in QOPERATOR_MODES:
        raise InputError(
            f"--mode {opts.mode.value} has no QOperator form "
            "(int4 weights exist only as DequantizeLinear); use --format qdq"
        )
    if config.method not in CALIBRATORS:
        raise InputError(
            f"unknown --method {config.method!r}; choose one of {', '.join(CALIBRATORS)}"
        )
    if opts.block_size < 16 or opts.block_size & (opts.block_size - 1):
        raise InputError(
            f"--block-size {opts.block_size}: use a power of two, at least 16 "
            "(onnxruntime's int4 kernels need it)"
        )
    if config.max_accuracy_drop is not None and config.max_accuracy_drop < 0:
        raise InputError("--max-accuracy-drop is in points and cannot be negative")
    if config.max_accuracy_drop is not None and not (config.eval or config.calib):
        raise InputError(
            "--max-accuracy-drop needs data to measure on: add --eval DATA (or --calib DATA)"
        )
    if Path(output).parent and not Path(output).parent.exists():
        raise InputError(f"{Path(output).parent}: the output folder does not exist")


def with_opset(graph: Graph, opset: int) -> Graph:
    """``graph`` converted to ``opset`` by onnx's version converter when it is older."""
    if graph.opset >= opset:
        return graph
    from onnx import version_converter

    try:
        converted = version_converter.convert_version(to_onnx(graph, value_info=False), opset)
    except Exception as e:
        raise InputError(
            f"cannot convert the model from opset {graph.opset} to {opset} "
            f"({str(e).splitlines()[0]}); convert it first"
        ) from None
    return load_onnx(converted)


def _check_float(graph: Graph) -> None:
    for v in graph.inputs:
        if (
            v.const is None
            and isinstance(v.type, TensorType)
            and v.type.dtype not in (DType.FLOAT,)
            and v.type.dtype.is_float
        ):
            raise InputError(
                f"input {v.name!r} is {v.type.dtype.name.lower()}; quantize the float32 model"
            )
    if not candidates(graph):
        raise InputError("the model has no Conv, MatMul, Gemm or Gather to quantize")


def _infer(graph: Graph) -> None:
    """Annotate value types in place (quantizers skip non-float tensors)."""
    from torsh_gen.ops.inference import infer_types

    try:
        infer_types(graph)
    except TorshGenError:
        pass  # types stay as the model declared them


def observed_tensors(graph: Graph) -> list[str]:
    """Tensors static quantization may need ranges of: ins/outs of candidates and Relus."""
    names: list[str] = []
    for n in graph.nodes:
        if n.op_type in ("Conv", "MatMul", "Gemm", "Relu") and n.inputs and n.inputs[0] is not None:
            names += [n.inputs[0].name, n.outputs[0].name]
    return [n for n in dict.fromkeys(names) if n]


def _bytes(graph: Graph) -> int:
    return len(to_onnx(graph, value_info=False).SerializeToString())


def quantize_model(
    model: str | os.PathLike,
    output: str | os.PathLike,
    config: QuantizeConfig,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Quantize ``model`` into ``output`` as ``config`` says; the report as plain data."""
    say = progress or (lambda _m: None)
    start = time.perf_counter()
    check_config(config, output)
    opts = config.options
    original = load_model(model)
    _check_float(original)
    check_selection(original, opts.include, "--include")
    check_selection(original, opts.exclude, "--exclude")
    calib = (
        load_calibration(
            config.calib,
            original,
            preprocess=config.preprocess,
            batch_size=config.batch_size,
            limit=config.calib_limit,
        )
        if config.calib
        else None
    )
    evalset = (
        load_eval(config.eval, original, preprocess=config.preprocess, batch_size=config.batch_size)
        if config.eval
        else None
    )
    data = evalset or (EvalSet(calib, None) if calib else None)

    graph = with_opset(original, required_opset(opts))
    _infer(graph)
    prepared = copy.deepcopy(graph)
    if (
        opts.format == QuantFormat.QOPERATOR
        and opts.mode == QuantMode.STATIC
        or opts.mode == QuantMode.WEIGHT_INT4
    ):
        # no integer Gemm in QOperator form; onnxruntime fuses int4 weights only into MatMul
        split_gemm(prepared)
    ranges = {}
    if opts.mode == QuantMode.STATIC:
        say(f"calibrating ({config.method}) on {calib.samples} samples")
        ranges = calibrate(
            collect_stats(prepared, calib.feeds, observed_tensors(prepared)),
            make_calibrator(config.method),
        )

    ref = outputs_of(graph, data.feeds) if data else None
    if config.max_accuracy_drop is not None and ref is not None and class_output(ref) is None:
        raise InputError(
            "--max-accuracy-drop needs a model output of class scores ([N, C]) "
            "to measure top-1 on; this model has none"
        )
    outcome: GuardOutcome | None = None
    if config.max_accuracy_drop is not None and data is not None and ref is not None:
        trial, outcome = guard(prepared, opts, ranges, data, ref, config.max_accuracy_drop, say)
    elif data is not None and ref is not None:
        trial = make_trial(prepared, opts, ranges, data, ref)
    else:  # no data: quantize without measuring (the report then has sizes only)
        g = copy.deepcopy(prepared)
        trial = Trial(g, quantize_graph(g, opts, ranges), {})
    if not trial.result.quantized:
        raise InputError(
            "no node could be quantized: "
            + "; ".join(f"{k}: {v}" for k, v in trial.result.skipped.items())
        )

    report: dict[str, Any] = {
        "model": str(model),
        "output": str(output),
        "mode": opts.mode.value,
        "format": opts.format.value,
        "method": config.method if opts.mode == QuantMode.STATIC else None,
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
                "kind": "eval" if evalset else "calibration",
            }
        ),
        "size": _size(graph, trial.graph),
        "ours": trial.metrics or None,
        "guard": None if outcome is None else _guard_dict(outcome),
    }
    if config.compare_onnxruntime:
        say("running onnxruntime's quantizer on the same model and data")
        # int4: onnxruntime's quantizer, like its kernels, handles MatMul only: give it the
        # same Gemm-free graph
        anchor = prepared if opts.mode == QuantMode.WEIGHT_INT4 else graph
        report["onnxruntime"] = _ort_reference(anchor, graph, opts, config.method, calib, data, ref)
    if config.latency and data is not None:
        say("measuring latency")
        report["latency"] = _latency(
            graph, trial.graph, report.get("onnxruntime", {}).get("_model"), data.feeds[0], config
        )
    report.get("onnxruntime", {}).pop("_model", None)

    failed = outcome is not None and not outcome.within_budget
    report["written"] = not failed or config.force
    if report["written"]:
        _write(trial.graph, Path(output))
    report["seconds"] = round(time.perf_counter() - start, 2)
    if failed and not config.force:
        raise AccuracyGuardError(
            f"accuracy drop {trial.drop:.2f} points exceeds --max-accuracy-drop "
            f"{config.max_accuracy_drop}, and only keeping every layer float would meet it; "
            "nothing written (use --force to write the quantized model anyway)"
        )
    return report


def weight_bytes(graph: Graph) -> int:
    """Bytes of the initializers as stored in the file (4-bit types packed two per byte)."""
    total = 0
    for v in graph.initializers:
        t = v.type if isinstance(v.type, TensorType) else None
        n = t.nbytes() if t is not None else None
        total += n if n is not None else int(v.const.nbytes)
    return total


def _size(before: Graph, after: Graph) -> dict[str, Any]:
    fb, qb = _bytes(before), _bytes(after)
    fw, qw = weight_bytes(before), weight_bytes(after)
    return {
        "float_bytes": fb,
        "quantized_bytes": qb,
        "ratio": qb / fb,
        "float_weight_bytes": fw,
        "quantized_weight_bytes": qw,
        "weight_ratio": qw / fw if fw else None,
    }


def _guard_dict(o: GuardOutcome) -> dict[str, Any]:
    return {
        "budget": o.budget,
        "within_budget": o.within_budget,
        "kept_float": o.kept_float,
        "sensitivity": o.sensitivity,
        "steps": o.steps,
    }


def _ort_reference(
    source: Graph,
    graph: Graph,
    opts: QuantOptions,
    method: str,
    calib: Any,
    data: EvalSet | None,
    ref: Any,
) -> dict[str, Any]:
    proto, why = ort_quantize(
        to_onnx(source, value_info=False), opts, method, list(calib.feeds) if calib else None
    )
    if proto is None:
        return {"skipped": why}
    fb = _bytes(graph)
    row: dict[str, Any] = {
        "size": {
            "quantized_bytes": len(proto.SerializeToString()),
            "ratio": len(proto.SerializeToString()) / fb,
        },
        "_model": proto,
    }
    if data is not None:
        try:
            row["metrics"] = compare(ref, outputs_of(proto, data.feeds), data.labels)
        except TorshGenError as e:
            row["metrics"] = {"skipped": str(e)}
    return row


def _latency(
    graph: Graph, quantized: Graph, ort_model: Any, feed: dict[str, Any], config: QuantizeConfig
) -> dict[str, Any]:
    import numpy as np

    res: dict[str, Any] = {
        "inputs": {k: list(v.shape) for k, v in feed.items()},
        "threads": 1,
        "repeat": config.repeat,
    }
    res["onnxruntime_float_ms"] = ort_latency(graph, feed, config.repeat)
    res["onnxruntime_quantized_ms"] = ort_latency(quantized, feed, config.repeat)
    if ort_model is not None:
        res["onnxruntime_reference_ms"] = ort_latency(ort_model, feed, config.repeat)
    if not config.artifact:
        return res
    with tempfile.TemporaryDirectory(prefix="torsh-gen-qart-") as tmp:
        try:
            res["artifact_float_ms"], _ = artifact_latency(
                graph, feed, Path(tmp), "float_model", config.repeat
            )
            res["artifact_quantized_ms"], ours = artifact_latency(
                quantized, feed, Path(tmp), "quant_model", config.repeat
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


def _write(graph: Graph, path: Path) -> None:
    """Serialize next to ``path`` and rename into place (no half-written file)."""
    data = to_onnx(graph, value_info=False).SerializeToString()
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=".tmp", dir=path.parent if str(path.parent) else "."
    )
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
