"""``torsh-gen scaffold serve``: generate a REST or gRPC service project around a model."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from torsh_gen.cli.common import FormatOpt, ModelArg, OutputFormat, console, emit_data, status
from torsh_gen.errors import InputError


class Engine(StrEnum):
    """What runs the model inside the service."""

    compiled = "compiled"
    onnxruntime = "onnxruntime"


def serve_command(
    model: ModelArg,
    output: Annotated[Path, typer.Option("--output", "-o", help="Project folder to write.")],
    rest: Annotated[
        bool, typer.Option("--rest", help="A REST service (FastAPI + uvicorn).")
    ] = False,
    grpc: Annotated[
        bool, typer.Option("--grpc", help="A gRPC service (stubs compiled now).")
    ] = False,
    engine: Annotated[
        Engine,
        typer.Option(
            "--engine", help="compiled: torsh-gen's CPU package; onnxruntime: the ONNX file."
        ),
    ] = Engine.compiled,
    name: Annotated[
        str | None, typer.Option("--name", help="Package name (default: the model file's stem).")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace the output folder if it exists.")
    ] = False,
    fmt: FormatOpt = OutputFormat.table,
) -> None:
    """Generate a service project for MODEL: server, client, Dockerfile, README, tests."""
    from torsh_gen.scaffold.serve import generate_service
    from torsh_gen.tools.serve_model import serve_model

    if rest == grpc:
        raise InputError("choose exactly one of --rest or --grpc")
    with status(f"Generating a service for {model}"):
        report = generate_service(
            serve_model(model),
            output,
            kind="rest" if rest else "grpc",
            engine=engine.value,
            name=name,
            force=force,
        )
    data = report.to_dict()
    if emit_data(data, fmt):
        return
    batching = (
        f"batch dim {data['batch_dim']!r}: --max-batch enables micro-batching"
        if data["batch_dim"]
        else "no batch dim"
    )
    console.print(
        f"[bold]{escape(data['name'])}[/] ({data['kind']}, {data['engine']} engine, {escape(batching)}) → {escape(data['out_dir'])}"
    )
    console.print(
        f"{len(data['files'])} files; start it with: cd {escape(data['out_dir'])} && python -m {data['name']} --host 127.0.0.1 --port {8000 if rest else 50051}"
    )


def register(app: typer.Typer) -> None:
    """Add the ``serve`` command to the ``scaffold`` group."""
    app.command("serve")(serve_command)
