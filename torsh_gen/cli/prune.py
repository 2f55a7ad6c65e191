"""``torsh-gen prune``: magnitude or structured pruning, with accuracy/size/MACs/latency."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from torsh_gen.cli.common import (
    FormatOpt,
    InputShapeOpt,
    ModelArg,
    OutputFormat,
    console,
    emit_data,
    info,
    status,
)

app = typer.Typer()


@app.command("prune")
def prune_command(
    model: ModelArg,
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Where to write the pruned model (.onnx).")
    ],
    method: Annotated[
        str,
        typer.Option(
            "--method", "-m", help="magnitude (zero small weights) or structured (remove channels)."
        ),
    ] = "magnitude",
    sparsity: Annotated[
        float,
        typer.Option(
            "--sparsity",
            "-s",
            help="Fraction of weights (magnitude) or channels (structured) to remove, in [0, 1).",
        ),
    ] = 0.5,
    scope: Annotated[
        str,
        typer.Option(
            "--scope", help="layer: every layer/group at SPARSITY; global: one threshold over all."
        ),
    ] = "layer",
    norm: Annotated[
        str, typer.Option("--norm", help="Structured: rank filters by their l1 or l2 norm.")
    ] = "l1",
    channel_multiple: Annotated[
        int,
        typer.Option(
            "--channel-multiple",
            help="Structured: round kept channels up to a multiple of this "
            "(16 or 8 suit onnxruntime's kernels).",
        ),
    ] = 1,
    eval_data: Annotated[
        Path | None,
        typer.Option(
            "--eval",
            help="DATA to measure on: .npz/.npy, a folder of them, or images; "
            "an .npz key 'labels' gives accuracy.",
        ),
    ] = None,
    preprocess: Annotated[
        str | None,
        typer.Option(
            "--preprocess",
            help="Image folders: size=H,W;mean=..;std=..;scale=S;layout=nchw|nhwc;color=rgb|gray.",
        ),
    ] = None,
    include: Annotated[
        list[str] | None,
        typer.Option(
            "--include",
            help="Prune only these nodes (names or shell patterns; comma-separated or repeated).",
        ),
    ] = None,
    exclude: Annotated[
        list[str] | None,
        typer.Option("--exclude", help="Never prune these nodes (names or shell patterns)."),
    ] = None,
    max_accuracy_drop: Annotated[
        float | None,
        typer.Option(
            "--max-accuracy-drop",
            help="Refuse to write when accuracy falls by more than X points (needs --eval).",
        ),
    ] = None,
    force: Annotated[
        bool,
        typer.Option("--force", help="Write the model even when --max-accuracy-drop is exceeded."),
    ] = False,
    latency: Annotated[
        bool,
        typer.Option(
            "--latency/--no-latency",
            help="Compile and time both models (onnxruntime and our artifact).",
        ),
    ] = True,
    threads: Annotated[
        int, typer.Option("--threads", "-t", help="Threads for the latency runs.")
    ] = 2,
    repeat: Annotated[
        int, typer.Option("--repeat", "-r", help="Timed calls per engine and model.")
    ] = 50,
    batch_size: Annotated[
        int | None,
        typer.Option(
            "--batch-size", help="Samples per evaluation run when the batch dim is symbolic."
        ),
    ] = None,
    input_shape: InputShapeOpt = None,
    fmt: FormatOpt = OutputFormat.table,
) -> None:
    """Prune MODEL's Conv/Gemm/MatMul weights and report accuracy, size, MACs and latency."""
    from torsh_gen.tools.inspect import parse_input_shapes
    from torsh_gen.tools.prune import AccuracyBudgetError, prune_model

    with status(f"Pruning {model}"):
        result = prune_model(
            model,
            output,
            method=method,
            sparsity=sparsity,
            scope=scope,
            norm=norm,
            channel_multiple=channel_multiple,
            eval_data=eval_data,
            preprocess=preprocess,
            include=_names(include),
            exclude=_names(exclude),
            max_accuracy_drop=max_accuracy_drop,
            force=force,
            latency=latency,
            bindings=parse_input_shapes(input_shape or []),
            input_shapes=input_shape,
            threads=threads,
            repeat=repeat,
            batch_size=batch_size,
        )
    data = result.to_dict()
    if not emit_data(data, fmt):
        render_prune(console, data)
    guard = data["guard"]
    if not result.written:
        raise AccuracyBudgetError(
            f"accuracy fell by {guard['accuracy_drop']:.2f} points, "
            f"over --max-accuracy-drop {guard['max_accuracy_drop']}; "
            f"nothing written (lower --sparsity, or add --force to write it anyway)"
        )
    info(f"wrote {output}")


def _names(values: list[str] | None) -> list[str]:
    return [p.strip() for v in values or [] for p in v.split(",") if p.strip()]


def render_prune(con: Console, d: dict[str, Any]) -> None:
    """Per-layer or per-group rows, then accuracy, size, MACs and latency before/after."""
    from torsh_gen.tools.inspect import human, human_bytes

    con.print(
        f"[bold]{escape(d['model'])}[/] → {escape(d['output'])}  "
        f"({d['method']}, sparsity {d['sparsity']}, {d['scope']} scope)"
    )
    if d["layers"]:
        t = Table("node", "op", "weight", "size", "sparsity", title="layers", title_justify="left")
        for r in d["layers"]:
            t.add_row(
                escape(r["node"]),
                r["op"],
                escape(r["weight"]),
                f"{r['size']:,}",
                f"{r['sparsity']:.1%}",
            )
        con.print(t)
    if d["groups"]:
        t = Table(
            "group",
            "producers",
            "channels",
            "kept",
            "note",
            title="channel groups",
            title_justify="left",
        )
        for g in d["groups"]:
            note = f"left alone: {g['left_alone']}" if g["left_alone"] else ""
            t.add_row(
                escape(g["group"]),
                escape(", ".join(g["producers"])),
                str(g["channels"]),
                str(g["kept"]),
                escape(note),
            )
        con.print(t)
    t = Table("measure", "before", "after", "after/before", title="report", title_justify="left")
    ev = d["evaluation"]
    if ev["accuracy_before"] is not None:
        t.add_row(
            "top-1 accuracy",
            f"{ev['accuracy_before']:.2f}%",
            f"{ev['accuracy_after']:.2f}%",
            f"{-ev['accuracy_drop']:+.2f} pts",
        )
    for name, m in ev["outputs"].items():
        if m["top1_agreement"] is not None:
            t.add_row(f"top-1 agreement {escape(name)}", "", f"{m['top1_agreement']:.2%}", "")
        if m["cosine"] is not None:
            t.add_row(f"cosine {escape(name)}", "", f"{m['cosine']:.5f}", "")
    m = d["macs"]
    t.add_row("MACs per call", human(m["before"]), human(m["after"]), _r(m["ratio"]))
    if "after_nonzero" in m:
        t.add_row(
            "MACs of nonzero weights",
            human(m["before"]),
            human(m["after_nonzero"]),
            _r(m["ratio_nonzero"]),
        )
    s = d["size"]
    t.add_row(
        "weight bytes (dense)",
        human_bytes(s["weight_bytes"]["before"]),
        human_bytes(s["weight_bytes"]["after"]),
        _r(s["weight_bytes"]["ratio"]),
    )
    t.add_row(
        "file, zlib-compressed",
        human_bytes(s["compressed_bytes"]["before"]),
        human_bytes(s["compressed_bytes"]["after"]),
        _r(s["compressed_bytes"]["ratio"]),
    )
    lat = d["latency"]
    if lat:
        for engine in ("onnxruntime", "torsh-gen"):
            e = lat[engine]
            t.add_row(
                f"latency {engine} (median)",
                f"{e['before_ms']:.3f} ms",
                f"{e['after_ms']:.3f} ms",
                _r(e["ratio"]),
            )
    con.print(t)
    con.print(
        f"evaluated on {escape(str(ev['data']))}"
        + (f" ({ev['samples']} samples)" if ev["samples"] else "")
    )
    if d["guard"]:
        g = d["guard"]
        verdict = (
            "within budget"
            if g["passed"]
            else (
                "[red]over budget[/], written because of --force"
                if g["forced"]
                else "[red]over budget[/]"
            )
        )
        con.print(
            f"accuracy drop {g['accuracy_drop']:.2f} points, "
            f"budget {g['max_accuracy_drop']}: {verdict}"
        )


def _r(x: float | None) -> str:
    return "" if x is None else f"{x:.3f}"
