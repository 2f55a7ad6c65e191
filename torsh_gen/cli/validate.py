"""``torsh-gen validate``: a compiled artifact against onnxruntime."""

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
    status,
)

app = typer.Typer()

#: Same values as torsh_gen.tools.validate's defaults (not imported: it loads numpy and onnx,
#: and `torsh-gen --help` must start fast); a test keeps them equal.
DEFAULT_RTOL = 1e-3
DEFAULT_ATOL = 1e-4


@app.command("validate")
def validate_command(
    model: ModelArg,
    artifact: Annotated[Path | None, typer.Option("--artifact", "-a", help="A compiled artifact folder. Default: compile MODEL into a temp folder.")] = None,
    inputs: Annotated[Path | None, typer.Option("--inputs", "-i", help="An .npz keyed by input name. Default: random inputs.")] = None,
    rtol: Annotated[float, typer.Option("--rtol", help="Relative tolerance.")] = DEFAULT_RTOL,
    atol: Annotated[float, typer.Option("--atol", help="Absolute tolerance.")] = DEFAULT_ATOL,
    input_shape: InputShapeOpt = None,
    seed: Annotated[int, typer.Option(help="Seed for random inputs.")] = 0,
    target: Annotated[str, typer.Option("--target", "-t", help="Without --artifact: the target to compile for (cpu or a native one runnable here).")] = "cpu",
    backend: Annotated[str, typer.Option("--backend", help="Without --artifact: the code generator, torsh (ours) or tvm (Apache TVM).")] = "torsh",
    fmt: FormatOpt = OutputFormat.table,
) -> None:
    """Run the artifact of MODEL and onnxruntime on the same inputs; exit 1 outside tolerance."""
    from torsh_gen.tools.inspect import parse_input_shapes
    from torsh_gen.tools.validate import validate_model

    with status("Validating" if artifact else f"Compiling and validating {model}"):
        report = validate_model(model, artifact, inputs=inputs, bindings=parse_input_shapes(input_shape or []), input_shapes=input_shape, rtol=rtol, atol=atol, seed=seed, target=target, backend=backend)
    if not emit_data(report, fmt):
        render_validate(console, report)
    if not report["match"]:
        raise typer.Exit(1)


def render_validate(con: Console, report: dict[str, Any]) -> None:
    """One row per output: errors, cosine similarity, top-1 agreement, verdict."""
    t = Table("output", "shape", "max abs err", "max rel err", "cosine", "top-1", "within tolerance",
              title=f"artifact vs onnxruntime {report['onnxruntime']} (rtol {report['rtol']:g}, atol {report['atol']:g})", title_justify="left")
    for name, r in report["outputs"].items():
        top1 = "" if r.get("top1_agreement") is None else f"{r['top1_agreement']:.1%}"
        shape = "" if r.get("shape") is None else "[" + ",".join(map(str, r["shape"])) + "]"
        t.add_row(escape(name), shape, _num(r["max_abs_diff"]), _num(r["max_rel_diff"]), _num(r.get("cosine"), ".8f"), top1,
                  "yes" if r["match"] else f"[red]NO[/] {escape(r.get('error', ''))}")
    con.print(t)
    con.print("[green]PASS[/]" if report["match"] else "[red]FAIL[/]: outside tolerance")


def _num(x: Any, spec: str = ".3g") -> str:
    return "" if x is None else format(x, spec)
