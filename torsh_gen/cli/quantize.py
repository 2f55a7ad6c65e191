"""``torsh-gen quantize``: int8 / int4 quantization of an ONNX model with a measured report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from torsh_gen.cli.common import ModelArg, OutputFormat, console, emit_data, info, status

app = typer.Typer()


def _items(values: list[str] | None) -> tuple[str, ...]:
    return tuple(i.strip() for v in values or [] for i in v.split(",") if i.strip())


@app.command("quantize")
def quantize_command(
    model: ModelArg,
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Where to write the quantized model (.onnx).")
    ],
    mode: Annotated[
        str, typer.Option("--mode", help="dynamic, static or weight-int4.")
    ] = "dynamic",
    calib: Annotated[
        str | None,
        typer.Option(
            "--calib", help="Calibration DATA: .npz/.npy, a folder of them, or an image folder."
        ),
    ] = None,
    preprocess: Annotated[
        str | None,
        typer.Option(
            "--preprocess", help="Image preprocessing, e.g. 'size=224,224;mean=..;std=..'."
        ),
    ] = None,
    method: Annotated[
        str, typer.Option("--method", help="Calibration: minmax, percentile or entropy.")
    ] = "minmax",
    per_channel: Annotated[
        bool, typer.Option("--per-channel", help="One weight scale per output channel.")
    ] = False,
    symmetric: Annotated[
        bool,
        typer.Option(
            "--symmetric",
            help="int8 activations around zero (static) instead of uint8 with a zero point.",
        ),
    ] = False,
    include: Annotated[
        list[str] | None,
        typer.Option(
            "--include",
            help="Quantize only these op types or node names (comma-separated, repeatable).",
        ),
    ] = None,
    exclude: Annotated[
        list[str] | None, typer.Option("--exclude", help="Keep these op types or node names float.")
    ] = None,
    qformat: Annotated[
        str | None,
        typer.Option(
            "--format",
            help=(
                "qdq (Q/DQ pairs) or qoperator (QLinearConv, MatMulInteger, ...); default: "
                "qoperator for dynamic (what onnxruntime runs as integer kernels), qdq otherwise."
            ),
        ),
    ] = None,
    block_size: Annotated[
        int, typer.Option("--block-size", help="int4 block size along the reduction axis.")
    ] = 32,
    eval_data: Annotated[
        str | None,
        typer.Option("--eval", help="Evaluation DATA (an .npz may add 'labels' for accuracy)."),
    ] = None,
    calib_limit: Annotated[
        int | None,
        typer.Option("--calib-limit", min=1, help="Use at most N calibration samples."),
    ] = None,
    batch_size: Annotated[
        int | None,
        typer.Option(
            "--batch-size", min=1, help="Samples per run for models with a free batch dim."
        ),
    ] = None,
    max_accuracy_drop: Annotated[
        float | None,
        typer.Option(
            "--max-accuracy-drop", help="Budget in points; layers fall back to float until met."
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Write the model even when the accuracy guard fails.")
    ] = False,
    compare_ort: Annotated[
        bool,
        typer.Option(
            "--compare-ort/--no-compare-ort",
            help="Also run onnxruntime's quantizer on the same model and data.",
        ),
    ] = True,
    latency: Annotated[
        bool,
        typer.Option("--latency/--no-latency", help="Measure latency before/after in onnxruntime."),
    ] = True,
    artifact: Annotated[
        bool,
        typer.Option(
            "--artifact",
            help="Also compile float and quantized models and time the artifacts (minutes).",
        ),
    ] = False,
    report: Annotated[
        OutputFormat, typer.Option("--report", help="How to print the report.")
    ] = OutputFormat.table,
) -> None:
    """Quantize MODEL to int8 (dynamic, static) or int4 weights and report what it cost."""
    from torsh_gen.errors import InputError
    from torsh_gen.passes.quantize import QuantFormat, QuantMode, QuantOptions
    from torsh_gen.tools.quantize import QuantizeConfig, quantize_model

    try:
        qmode = QuantMode(mode)
        fmt = (
            QuantFormat(qformat)
            if qformat
            else (QuantFormat.QOPERATOR if qmode == QuantMode.DYNAMIC else QuantFormat.QDQ)
        )
        opts = QuantOptions(
            qmode, fmt, per_channel, symmetric, block_size, _items(include), _items(exclude)
        )
    except ValueError:
        bad = (
            f"--mode {mode!r}: choose dynamic, static or weight-int4"
            if mode not in {m.value for m in QuantMode}
            else f"--format {qformat!r}: choose qdq or qoperator"
        )
        raise InputError(bad) from None
    config = QuantizeConfig(
        opts,
        method,
        calib,
        eval_data,
        preprocess,
        batch_size=batch_size,
        calib_limit=calib_limit,
        max_accuracy_drop=max_accuracy_drop,
        force=force,
        compare_onnxruntime=compare_ort,
        latency=latency,
        artifact=artifact,
    )
    with status(f"Quantizing {model}"):
        data = quantize_model(model, output, config, progress=info)
    if not emit_data(data, report):
        render_quantize(console, data)
    if data["written"]:
        info(f"wrote {output}")


def _pct(x: float | None) -> str:
    return "" if x is None else f"{x:.2f}"


def render_quantize(con: Console, d: dict[str, Any]) -> None:
    """Size, accuracy and latency side by side with onnxruntime's quantizer; float layers."""
    from torsh_gen.tools.inspect import human_bytes

    con.print(
        f"[bold]{escape(d['model'])}[/] → {escape(d['output'])}  ({d['mode']}, {d['format']}"
        + (f", {d['method']}" if d["method"] else "")
        + (", per-channel" if d["per_channel"] else "")
        + ")"
    )
    ort = d.get("onnxruntime") or {}
    t = Table(
        "", "torsh-gen", "onnxruntime quantizer", title="quantized vs float32", title_justify="left"
    )
    s, os_ = d["size"], ort.get("size") or {}
    t.add_row(
        "size",
        f"{human_bytes(s['quantized_bytes'])} ({100 * s['ratio']:.1f}% of {human_bytes(s['float_bytes'])})",
        (
            f"{human_bytes(os_['quantized_bytes'])} ({100 * os_['ratio']:.1f}%)"
            if os_
            else escape(ort.get("skipped", ""))
        ),
    )
    ours, theirs = d.get("ours") or {}, ort.get("metrics") or {}
    for name, m in (ours.get("outputs") or {}).items():
        o = (theirs.get("outputs") or {}).get(name, {})
        t.add_row(
            f"{escape(name)} max |err|",
            f"{m['max_abs_error']:.4g}",
            f"{o['max_abs_error']:.4g}" if o else "",
        )
        t.add_row(f"{escape(name)} cosine", f"{m['cosine']:.6f}", f"{o['cosine']:.6f}" if o else "")
    if ours.get("top1_agreement") is not None:
        t.add_row(
            "top-1 agreement",
            f"{100 * ours['top1_agreement']:.2f}%",
            (
                f"{100 * theirs['top1_agreement']:.2f}%"
                if theirs.get("top1_agreement") is not None
                else ""
            ),
        )
    if ours.get("accuracy_quantized") is not None:
        t.add_row(
            "accuracy (float → quantized)",
            f"{ours['accuracy_float']:.2f} → {ours['accuracy_quantized']:.2f}",
            (
                f"→ {theirs['accuracy_quantized']:.2f}"
                if theirs.get("accuracy_quantized") is not None
                else ""
            ),
        )
    if ours.get("drop") is not None:
        t.add_row(
            f"drop ({ours['drop_kind']}), points", _pct(ours["drop"]), _pct(theirs.get("drop"))
        )
    lat = d.get("latency") or {}
    if lat:
        t.add_row(
            "onnxruntime latency, ms (float → quantized)",
            f"{lat['onnxruntime_float_ms']:.3f} → {lat['onnxruntime_quantized_ms']:.3f}",
            f"→ {lat['onnxruntime_reference_ms']:.3f}" if "onnxruntime_reference_ms" in lat else "",
        )
        if "artifact_quantized_ms" in lat:
            t.add_row(
                "compiled artifact latency, ms",
                f"{lat['artifact_float_ms']:.3f} → {lat['artifact_quantized_ms']:.3f}",
                "",
            )
        elif "artifact" in lat:
            t.add_row("compiled artifact", escape(lat["artifact"]), "")
    con.print(t)
    con.print(
        f"quantized {len(d['quantized'])} node(s)"
        + (f": {escape(', '.join(d['quantized']))}" if len(d["quantized"]) <= 12 else "")
    )
    for name, why in d["float_nodes"].items():
        con.print(f"  stayed float: {escape(name)} ({escape(why)})")
    g = d.get("guard")
    if g:
        verdict = "within budget" if g["within_budget"] else "[red]over budget[/]"
        kept = ", ".join(g["kept_float"]) or "none"
        con.print(
            f"accuracy guard ({g['budget']} points): {verdict}; layers kept float: {escape(kept)}"
        )
    if not d["written"]:
        con.print("[red]nothing written[/]")
