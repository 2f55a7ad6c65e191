"""``torsh-gen inspect``: what is in a model."""

from __future__ import annotations

from typing import Annotated

import typer

from torsh_gen.cli.common import (
    FormatOpt,
    InputShapeOpt,
    ModelArg,
    OutputFormat,
    console,
    emit_data,
    status,
)

app = typer.Typer()


@app.command("inspect")
def inspect_command(
    model: ModelArg,
    fmt: FormatOpt = OutputFormat.table,
    per_layer: Annotated[bool, typer.Option("--per-layer", help="Show every layer with its parameters and MACs.")] = False,
    input_shape: InputShapeOpt = None,
    ir: Annotated[bool, typer.Option("--ir", help="Print the graph IR as text instead.")] = False,
) -> None:
    """Parameters, weight bytes, peak memory, MACs/FLOPs, shapes, op histogram and layer tree."""
    from torsh_gen.cli.render import render_inspect
    from torsh_gen.ir.printer import format_graph
    from torsh_gen.tools.inspect import inspect_graph, parse_input_shapes
    from torsh_gen.tools.loading import load_model

    with status(f"Loading {model}"):
        graph = load_model(model, input_shape)
    bindings = parse_input_shapes(input_shape or [])
    with status("Inferring shapes and costs"):
        report = inspect_graph(graph, bindings)
    if ir:
        typer.echo(format_graph(graph), nl=False)
        return
    if not emit_data(report, fmt):
        render_inspect(console, report, per_layer)
