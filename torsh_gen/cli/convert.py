"""``torsh-gen convert``: between .onnx and .torsh, chosen by extension."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from torsh_gen.cli.common import ModelArg, info, status

app = typer.Typer()


@app.command("convert")
def convert_command(
    model: ModelArg,
    output: Annotated[Path, typer.Option("--output", "-o", help="Output file: .onnx or .torsh.")],
) -> None:
    """Convert MODEL to the format of OUTPUT's extension (.onnx or .torsh)."""
    from torsh_gen.tools.loading import load_model, save_model

    with status(f"Loading {model}"):
        graph = load_model(model)
    with status(f"Writing {output}"):
        save_model(graph, output)
    info(f"wrote {output}")
