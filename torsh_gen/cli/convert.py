"""``torsh-gen convert``: any input format to .onnx or .torsh, with a report of what it mapped."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from torsh_gen.cli.common import ModelArg, info, status

app = typer.Typer()

_TORCH = (".pt2", ".pt", ".pth", ".bin", ".safetensors")


@app.command("convert")
def convert_command(
    model: ModelArg,
    output: Annotated[Path, typer.Option("--output", "-o", help="Output file: .onnx or .torsh.")],
    module: Annotated[
        str | None,
        typer.Option(
            "--module",
            help="For a state-dict checkpoint: pkg.module:factory that builds the nn.Module.",
        ),
    ] = None,
    input_shape: Annotated[
        list[str] | None,
        typer.Option(
            "--input-shape",
            help="For TorchScript and checkpoints: NAME=1x3x224x224 "
            "(add :int64 for integer inputs). Repeatable.",
        ),
    ] = None,
) -> None:
    """Convert MODEL (.onnx .torsh .pt2 .pt .pth .bin .safetensors ...) to OUTPUT's format."""
    from torsh_gen.ir.verify import verify
    from torsh_gen.tools.loading import load_model, save_model

    suffix = Path(model).suffix.lower()
    with status(f"Loading {model}"):
        if module or (suffix in _TORCH and suffix != ".pt2" and input_shape):
            from torsh_gen.frontends.torch.files import load_torch_file

            graph = load_torch_file(model, module, input_shape)
            verify(graph)
        else:
            graph = load_model(model)
    with status(f"Writing {output}"):
        save_model(graph, output)
    report = graph.meta.get("conversion")
    if report:
        typer.echo(format_report(report))
    info(f"wrote {output}")


def format_report(report: dict[str, Any]) -> str:
    """The conversion report as lines: source, mapped ops, compositions, precision changes."""
    mapped = report.get("mapped") or {}
    lines = [f"source: {report.get('source', '?')}", f"mapped {sum(mapped.values())} ops:"]
    lines += [f"  {op:<40} {count}" for op, count in mapped.items()]
    compositions = report.get("compositions") or {}
    if compositions:
        lines.append("compositions:")
        lines += [f"  {op:<40} -> {', '.join(ops)}" for op, ops in compositions.items()]
    precision = report.get("precision") or []
    lines.append("precision: " + ("; ".join(precision) if precision else "unchanged"))
    return "\n".join(lines)
