"""``torsh-gen scaffold op NAME -o DIR``: a plugin package for a custom operator."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from torsh_gen.cli.common import info


def register(app: typer.Typer) -> None:
    """Add the ``op`` command to the ``scaffold`` group."""

    @app.command("op")
    def scaffold_op(
        name: Annotated[str, typer.Argument(help="The op type models use, e.g. MyGelu.", metavar="NAME")],
        out: Annotated[Path, typer.Option("--output", "-o", help="Folder to write the plugin package into.")],
        domain: Annotated[str, typer.Option("--domain", help="The op's ONNX domain.")] = "com.example",
        force: Annotated[bool, typer.Option("--force", help="Replace DIR if it exists.")] = False,
    ) -> None:
        """Generate a plugin package for custom op NAME: schema, shape rule, numpy and numba kernels, tests."""
        from torsh_gen.scaffold.op import generate_op

        files = generate_op(name, out, domain=domain, force=force)
        info(f"wrote {len(files)} files to {out}; `pip install -e {out}` registers {domain}::{name}")
