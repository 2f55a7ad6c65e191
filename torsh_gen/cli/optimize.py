"""``torsh-gen optimize``: run a pass pipeline and write the optimized ONNX model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Column, Table

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


@app.command("optimize")
def optimize_command(
    model: ModelArg,
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the optimized model (.onnx).")],
    level: Annotated[str, typer.Option("--level", "-O", help="Pipeline: O0, O1, O2 or O3.")] = "O2",
    passes: Annotated[str | None, typer.Option("--passes", help="Run exactly these passes, comma-separated (overrides --level).")] = None,
    custom_ops: Annotated[bool, typer.Option("--custom-ops", help="Keep fused ai.torsh ops (onnxruntime cannot run them).")] = False,
    verify: Annotated[bool, typer.Option("--verify", help="Run the IR verifier after every pass.")] = False,
    check: Annotated[bool, typer.Option("--check", help="Run original and optimized model in onnxruntime on random inputs and compare.")] = False,
    precision: Annotated[str | None, typer.Option("--precision", help="Convert weights and compute: fp16, bf16 or mixed (per node, within --max-rel-error).")] = None,
    max_rel_error: Annotated[float | None, typer.Option("--max-rel-error", help="Budget for max|a-b|/max|b| of every output against float32; mixed needs it, fp16/bf16 refuse to write above it.")] = None,
    calib: Annotated[Path | None, typer.Option("--calib", help="Inputs to measure the error on: .npz/.npy, a folder of them or of images (default: random inputs from the declared shapes).")] = None,
    preprocess: Annotated[str | None, typer.Option("--preprocess", help="For image folders: size=H,W;mean=..;std=..;scale=S;layout=nchw|nhwc;color=rgb|gray.")] = None,
    mixed_type: Annotated[str, typer.Option("--mixed-type", help="Low-precision type that mixed chooses against float32: fp16 or bf16.")] = "fp16",
    keep_fp32: Annotated[str | None, typer.Option("--keep-fp32", help="Node names to keep in float32, comma-separated.")] = None,
    target: Annotated[str, typer.Option("--target", help="Where the converted model will run: cpu (torsh-gen's compiled artifact) or onnxruntime (CPU; no bf16).")] = "cpu",
    force: Annotated[bool, typer.Option("--force", help="Write the converted model even when it is over --max-rel-error.")] = False,
    input_shape: InputShapeOpt = None,
    fmt: FormatOpt = OutputFormat.table,
) -> None:
    """Optimize MODEL with a pass pipeline and write standard ONNX that any runtime runs."""
    from torsh_gen.tools.inspect import parse_input_shapes
    from torsh_gen.tools.optimize import optimize_model, parse_pass_list

    _check_precision_options(precision, max_rel_error, calib, preprocess, mixed_type, keep_fp32, target, force, custom_ops, check)
    if precision is not None:
        _precision_command(model, output, level, parse_pass_list(passes), precision, max_rel_error, calib, preprocess,
                           mixed_type, parse_pass_list(keep_fp32) or [], target, force, input_shape, fmt)
        return
    with status(f"Optimizing {model}"):
        result = optimize_model(
            model, output, level=level, passes=parse_pass_list(passes), custom_ops=custom_ops,
            verify_each=verify, check=check, bindings=parse_input_shapes(input_shape or []), input_shapes=input_shape,
        )
    data = result.to_dict()
    if not emit_data(data, fmt):
        render_optimize(console, data)
    info(f"wrote {output}")
    if check and data["onnxruntime_check"] and data["onnxruntime_check"]["match"] is False:
        raise typer.Exit(1)


def _check_precision_options(precision: str | None, max_rel_error: float | None, calib: Path | None, preprocess: str | None,
                             mixed_type: str, keep_fp32: str | None, target: str, force: bool, custom_ops: bool, check: bool) -> None:
    """Precision options only make sense with --precision; --custom-ops/--check do not combine with it."""
    from torsh_gen.errors import InputError

    if precision is None:
        given = [name for name, on in (("--max-rel-error", max_rel_error is not None), ("--calib", calib is not None),
                                       ("--preprocess", preprocess is not None), ("--mixed-type", mixed_type != "fp16"),
                                       ("--keep-fp32", keep_fp32 is not None), ("--target", target != "cpu"), ("--force", force)) if on]
        if given:
            raise InputError(f"{', '.join(given)} only apply with --precision fp16|bf16|mixed")
    elif custom_ops or check:
        raise InputError("--precision writes plain ONNX and measures its own error; drop --custom-ops and --check")


def _precision_command(model: Path, output: Path, level: str, passes: list[str] | None, precision: str, max_rel_error: float | None,
                       calib: Path | None, preprocess: str | None, mixed_type: str, keep_fp32: list[str], target: str, force: bool,
                       input_shape: list[str] | None, fmt: OutputFormat) -> None:
    """``optimize --precision``: pipeline, conversion, error guard, report."""
    from torsh_gen.tools.inspect import parse_input_shapes
    from torsh_gen.tools.precision import precision_model

    with status(f"Converting {model} to {precision}"):
        result, opt = precision_model(
            model, output, precision, low=mixed_type, target=target, calib=calib, preprocess=preprocess,
            max_rel_error=max_rel_error, force=force, level=level, passes=passes, keep_fp32=keep_fp32,
            input_shapes=input_shape, bindings=parse_input_shapes(input_shape or []),
        )
    data = {"optimize": opt.to_dict(), "precision": result.to_dict()}
    if not emit_data(data, fmt):
        render_precision(console, data["precision"])
    info(f"wrote {output}" + ("" if result.within_budget else " (over --max-rel-error, written because of --force)"))


def render_precision(con: Console, data: dict[str, Any]) -> None:
    """Size, per-output error, and the nodes that stayed float32 with their reasons."""
    from torsh_gen.tools.inspect import human_bytes

    size, budget = data["size_bytes"], data["max_rel_error_budget"]
    kind = data["precision"] + (f" ({data['low_type']} / float32)" if data["precision"] == "mixed" else "")
    con.print(f"[bold]{kind}[/]: {len(data['converted'])} nodes converted, {len(data['kept_float32'])} kept float32, "
              f"size {human_bytes(size['before'])} → {human_bytes(size['after'])} ({size['after'] / max(size['before'], 1):.0%})")
    verdict = "" if budget is None else (f", budget {budget:g}: " + ("[green]within[/]" if data["within_budget"] else "[red]OVER[/]"))
    con.print(f"measured on {escape(data['data'])} with {escape(data['engine'])}{verdict}")
    t = Table("output", "max abs", "max rel", "cosine", title="error against float32", title_justify="left")
    for name, e in data["outputs"].items():
        t.add_row(escape(name), *(("-" if e[k] is None else f"{e[k]:.3g}" if k != "cosine" else f"{e[k]:.6f}") for k in ("max_abs", "max_rel", "cosine")))
    con.print(t)
    if data["kept_float32"]:
        k = Table("node", "op", "why float32", title="kept in float32", title_justify="left")
        for row in data["kept_float32"]:
            k.add_row(escape(row["node"]), escape(row["op"]), escape(row["reason"]))
        con.print(k)


def render_optimize(con: Console, data: dict[str, Any]) -> None:
    """Node counts per op before/after, weight bytes and one row per pass."""
    from torsh_gen.tools.inspect import human_bytes

    nodes, wb = data["nodes"], data["weight_bytes"]
    con.print(f"[bold]{escape(data['model'])}[/] → {escape(str(data['output']))}  ({data['level'] or 'explicit passes'}, {data['seconds']:.2f} s)")
    con.print(f"nodes {nodes['before']} → {nodes['after']}, weights {human_bytes(wb['before'])} → {human_bytes(wb['after'])}")
    ops = Table("op", "before", "after", title="nodes per op", title_justify="left")
    for row in data["ops"]:
        mark = "" if row["before"] == row["after"] else "[yellow]"
        ops.add_row(escape(row["op"]), str(row["before"]), f"{mark}{row['after']}")
    con.print(ops)
    t = Table(Column("pass", no_wrap=True), "changed", Column("nodes", no_wrap=True), Column("Δ weights", no_wrap=True), "ms", title="passes", title_justify="left")
    notes = []
    for i, r in enumerate(data["pass_reports"], 1):
        (n0, n1), (w0, w1) = r["nodes"], r["weight_bytes"]
        t.add_row(f"{i}. {escape(r['pass'])}", "yes" if r["changed"] else "", f"{n0} → {n1}", f"{w1 - w0:+,d} B" if w1 != w0 else "", f"{r['seconds'] * 1000:.1f}")
        notes += [f"  {i}. {escape(r['pass'])}: {escape(n)}" for n in r["notes"]]
    con.print(t)
    for line in notes:
        con.print(line)
    if data["skipped_custom_op_passes"]:
        con.print(f"skipped (they add ai.torsh ops; use --custom-ops): {escape(', '.join(data['skipped_custom_op_passes']))}")
    chk = data["onnxruntime_check"]
    if chk:
        verdict = "skipped: " + chk["skipped"] if chk.get("skipped") else ("outputs match" if chk["match"] else "[red]outputs DIFFER[/]")
        con.print(f"onnxruntime {chk['version']}, original vs optimized: {verdict}")
