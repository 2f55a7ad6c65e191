"""``torsh-gen run``: execute a model with the reference kernels."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

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


@app.command("run")
def run_command(
    model: ModelArg,
    inputs: Annotated[Path | None, typer.Option("--inputs", "-i", help="An .npz keyed by input name (or .npy for one input). Default: random inputs.")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write the outputs to this .npz.")] = None,
    input_shape: InputShapeOpt = None,
    seed: Annotated[int, typer.Option(help="Seed for random inputs and random ops.")] = 0,
    check: Annotated[bool, typer.Option("--check", help="Also run onnxruntime on the same inputs and compare.")] = False,
    fmt: FormatOpt = OutputFormat.table,
) -> None:
    """Run MODEL on inputs from a file (or random ones) and print or save the outputs."""
    from torsh_gen.cli.render import render_outputs
    from torsh_gen.tools.compare import compare_with_onnxruntime
    from torsh_gen.tools.inspect import parse_input_shapes
    from torsh_gen.tools.loading import load_model
    from torsh_gen.tools.run import load_inputs, random_inputs, run_model, save_outputs

    with status(f"Loading {model}"):
        graph = load_model(model, input_shape)
    feeds = load_inputs(inputs) if inputs else random_inputs(graph, parse_input_shapes(input_shape or []), seed)
    with status("Running"):
        outputs = run_model(graph, feeds, seed=seed)
    comparison = compare_with_onnxruntime(graph, feeds, outputs) if check else None
    if output:
        save_outputs(outputs, output)
        info(f"wrote {output}")
    data = {"outputs": {k: _summary(v) for k, v in outputs.items()}}
    if comparison is not None:
        data["onnxruntime"] = comparison
    if not emit_data(data, fmt):
        render_outputs(console, data)
    if comparison is not None and not comparison["match"]:
        raise typer.Exit(1)


def _summary(v: object) -> dict:
    import numpy as np

    if isinstance(v, np.ndarray):
        d = {"dtype": str(v.dtype), "shape": list(v.shape)}
        if v.size and v.dtype.kind in "biuf":
            f = v.astype(np.float64)
            d.update(min=float(f.min()), max=float(f.max()), mean=float(f.mean()))
        return d
    if isinstance(v, list):
        return {"sequence": len(v)}
    return {"value": None if v is None else str(type(v).__name__)}
