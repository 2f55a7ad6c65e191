"""``torsh-gen scaffold train MODEL -o DIR``: a standalone PyTorch training project."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from torsh_gen.cli.common import FormatOpt, ModelArg, OutputFormat, console, emit_data, status


def register(app: typer.Typer) -> None:
    """Add the ``train`` command to the ``scaffold`` group."""

    @app.command("train")
    def scaffold_train_command(
        model: ModelArg,
        out: Annotated[Path, typer.Option("--output", "-o", help="Folder to write the project into.")],
        name: Annotated[str | None, typer.Option("--name", help="Python package name (default: the model file's stem).")] = None,
        force: Annotated[bool, typer.Option("--force", help="Replace DIR if it exists.")] = False,
        fmt: FormatOpt = OutputFormat.table,
    ) -> None:
        """Generate a PyTorch training project: the model as nn.Module source, train.py, tests."""
        from rich.markup import escape

        from torsh_gen.scaffold.common import check_destination
        from torsh_gen.scaffold.train import scaffold_train
        from torsh_gen.tools.loading import load_model

        check_destination(out, force)
        with status(f"Generating a training project for {model}"):
            report = scaffold_train(load_model(model), out, name=name, source=Path(model).name, force=force)
        data = report.to_dict()
        if emit_data(data, fmt):
            return
        console.print(f"[bold]{escape(report.package)}[/] → {escape(report.out_dir)}")
        console.print(
            f"layers: {escape(', '.join(report.layers)) or '(none)'}; {report.functional_lines} functional lines; "
            f"{report.parameters:,} weights"
        )
        console.print(f"next: cd {escape(report.out_dir)} && pytest -q && python train.py --data DATA")
