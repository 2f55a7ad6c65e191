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
    TensorRange,
    candidates,
    check_selection,
    quantize_graph,
    required_opset,
    split_gemm,
)
from torsh_gen.tools.calibration import CalibrationData, load_calibration
from torsh_gen.tools.loading import load_model
from torsh_gen.tools.quantize.calibrators import CALIBRATORS, make_calibrator
from torsh_gen.tools.quantize.collect import calibrate, collect_stats
from torsh_gen.tools.quantize.evaluate import EvalSet, class_output, load_eval, outputs_of
from torsh_gen.tools.quantize.guard import GuardOutcome, Trial, guard, make_trial
from torsh_gen.tools.quantize.report import latency, ort_reference, report_head, write_model


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
    if opts.symmetric and opts.mode != QuantMode.STATIC:
        raise InputError(
            "--symmetric sets static activations to int8; dynamic mode quantizes them to uint8 "
            "at run time and weight-int4 keeps them float: drop --symmetric or use --mode static"
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


@dataclass(frozen=True)
class _Data:
    """The checked model and data a run works on."""

    original: Graph
    calib: CalibrationData | None
    evalset: EvalSet | None

    @property
    def measure(self) -> EvalSet | None:
        """What accuracy is measured on: --eval, else the calibration data."""
        return self.evalset or (EvalSet(self.calib, None) if self.calib else None)


def _load_checked(model: str | os.PathLike, config: QuantizeConfig) -> _Data:
    """Model and data, every check done (before any work)."""
    opts = config.options
    original = load_model(model)
    _check_float(original)
    check_selection(original, opts.include, "--include")
    check_selection(original, opts.exclude, "--exclude")
    pre, batch = config.preprocess, config.batch_size
    calib = None
    if config.calib:
        calib = load_calibration(
            config.calib, original, preprocess=pre, batch_size=batch, limit=config.calib_limit
        )
    evalset = (
        load_eval(config.eval, original, preprocess=pre, batch_size=batch) if config.eval else None
    )
    return _Data(original, calib, evalset)


def _prepared(graph: Graph, opts: QuantOptions) -> Graph:
    """A copy of ``graph`` in the form the rewrite wants (Gemm split where needed)."""
    prepared = copy.deepcopy(graph)
    qop_static = opts.format == QuantFormat.QOPERATOR and opts.mode == QuantMode.STATIC
    if qop_static or opts.mode == QuantMode.WEIGHT_INT4:
        # no integer Gemm in QOperator form; onnxruntime fuses int4 weights only into MatMul
        split_gemm(prepared)
    return prepared


def _quantized(
    prepared: Graph,
    opts: QuantOptions,
    ranges: dict[str, TensorRange],
    data: EvalSet | None,
    ref: Any,
    config: QuantizeConfig,
    say: Callable[[str], None],
) -> tuple[Trial, GuardOutcome | None]:
    """The quantized graph, measured, through the guard when a budget is set."""
    if data is None or ref is None:  # no data: quantize without measuring (sizes only)
        g = copy.deepcopy(prepared)
        return Trial(g, quantize_graph(g, opts, ranges), {}), None
    if config.max_accuracy_drop is None:
        return make_trial(prepared, opts, ranges, data, ref), None
    if class_output(ref) is None:
        raise InputError(
            "--max-accuracy-drop needs a model output of class scores ([N, C]) "
            "to measure top-1 on; this model has none"
        )
    return guard(prepared, opts, ranges, data, ref, config.max_accuracy_drop, say)


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
    inputs = _load_checked(model, config)
    data = inputs.measure

    graph = with_opset(inputs.original, required_opset(opts))
    _infer(graph)
    prepared = _prepared(graph, opts)
    ranges: dict[str, TensorRange] = {}
    if opts.mode == QuantMode.STATIC and inputs.calib is not None:
        say(f"calibrating ({config.method}) on {inputs.calib.samples} samples")
        stats = collect_stats(prepared, inputs.calib.feeds, observed_tensors(prepared))
        ranges = calibrate(stats, make_calibrator(config.method))
    ref = outputs_of(graph, data.feeds) if data else None
    trial, outcome = _quantized(prepared, opts, ranges, data, ref, config, say)
    if not trial.result.quantized:
        reasons = "; ".join(f"{k}: {v}" for k, v in trial.result.skipped.items())
        raise InputError(f"no node could be quantized: {reasons}")

    report = report_head(
        model,
        output,
        config,
        inputs.original,
        graph,
        trial,
        outcome,
        data,
        inputs.evalset is not None,
    )
    if config.compare_onnxruntime:
        say("running onnxruntime's quantizer on the same model and data")
        # int4: onnxruntime's quantizer, like its kernels, handles MatMul only: give it the
        # same Gemm-free graph
        anchor = prepared if opts.mode == QuantMode.WEIGHT_INT4 else graph
        calib_feeds = list(inputs.calib.feeds) if inputs.calib else None
        report["onnxruntime"] = ort_reference(
            anchor, graph, opts, config.method, calib_feeds, data, ref
        )
    ort_model = report.get("onnxruntime", {}).pop("_model", None)
    if config.latency and data is not None:
        say("measuring latency")
        report["latency"] = latency(
            graph, trial.graph, ort_model, data.feeds[0], config.repeat, config.artifact
        )

    failed = outcome is not None and not outcome.within_budget
    report["written"] = not failed or config.force
    if report["written"]:
        write_model(trial.graph, Path(output))
    report["seconds"] = round(time.perf_counter() - start, 2)
    if failed and not config.force:
        raise AccuracyGuardError(
            f"accuracy drop {trial.drop:.2f} points exceeds --max-accuracy-drop "
            f"{config.max_accuracy_drop}, and only keeping every layer float would meet it; "
            "nothing written (use --force to write the quantized model anyway)"
        )
    return report
