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
    input_shape: InputShapeOpt = None,
    fmt: FormatOpt = OutputFormat.table,
) -> None:
    """Optimize MODEL with a pass pipeline and write standard ONNX that any runtime runs."""
    from torsh_gen.tools.inspect import parse_input_shapes
    from torsh_gen.tools.optimize import optimize_model, parse_pass_list

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
