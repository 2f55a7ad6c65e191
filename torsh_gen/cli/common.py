"""Options, output formatting and console helpers shared by every command."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from typing import Annotated, Any

import typer
from rich.console import Console

#: Global state set by the top-level callback.
STATE: dict[str, bool] = {"verbose": False, "quiet": False}

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


class OutputFormat(StrEnum):
    """How commands that return data print it."""

    table = "table"
    json = "json"
    yaml = "yaml"


FormatOpt = Annotated[OutputFormat, typer.Option("--format", "-f", help="Output format.")]
InputShapeOpt = Annotated[
    list[str] | None,
    typer.Option("--input-shape", help=(
            "Bind shapes: NAME=1x3x224x224 for an input, SYMBOL=N for a symbolic dim. "
            "A TorchScript .pt needs every input (add :int64 for integer inputs). Repeatable."
        ),),
]
ModelArg = Annotated[
    str,
    typer.Argument(
        help="Model file: .onnx, .torsh, .pt2, .pt (TorchScript), .tflite, or a TensorFlow SavedModel folder.",
        metavar="MODEL",
    ),
]


def emit_data(data: Any, fmt: OutputFormat) -> bool:
    """Print ``data`` as JSON or YAML; False when the caller should render a table."""
    if fmt == OutputFormat.json:
        typer.echo(json.dumps(data, indent=2, default=_jsonable))
        return True
    if fmt == OutputFormat.yaml:
        import yaml

        typer.echo(yaml.safe_dump(json.loads(json.dumps(data, default=_jsonable)), sort_keys=False))
        return True
    return False


def _jsonable(x: Any) -> Any:
    if hasattr(x, "tolist"):
        return x.tolist()
    return str(x)


def info(message: str) -> None:
    """A progress or status line on stderr, unless --quiet."""
    if not STATE["quiet"]:
        err_console.print(message)


@contextmanager
def status(message: str) -> Iterator[None]:
    """A spinner for work that can take more than a second (silent when --quiet or not a TTY)."""
    if STATE["quiet"] or not err_console.is_terminal:
        yield
        return
    with err_console.status(message):
        yield
