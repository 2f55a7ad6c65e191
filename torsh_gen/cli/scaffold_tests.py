"""``torsh-gen scaffold tests MODEL|ARTIFACT -o DIR``: golden tests for users' CI."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from torsh_gen.cli.common import info, status


def register(app: typer.Typer) -> None:
    """Add the ``tests`` command to the ``scaffold`` group."""

    @app.command("tests")
    def scaffold_tests(
        source: Annotated[str, typer.Argument(help="Model file, or a compiled artifact folder.", metavar="MODEL|ARTIFACT")],
        out: Annotated[Path, typer.Option("--output", "-o", help="Folder to write the test suite into.")],
        artifact: Annotated[Path | None, typer.Option("--artifact", help="With a MODEL: test this compiled artifact instead of onnxruntime.")] = None,
        inputs: Annotated[Path | None, typer.Option("--inputs", "-i", help="Record these inputs (.npz keyed by input name). Default: seeded random ones.")] = None,
        rtol: Annotated[float, typer.Option(help="Relative tolerance of the output comparison.")] = 1e-3,
        atol: Annotated[float, typer.Option(help="Absolute tolerance of the output comparison.")] = 1e-4,
        seed: Annotated[int, typer.Option(help="Seed of the random inputs.")] = 0,
        force: Annotated[bool, typer.Option("--force", help="Replace DIR if it exists.")] = False,
    ) -> None:
        """Generate pytest files checking an artifact (or the model under onnxruntime) against goldens."""
        from torsh_gen.scaffold.common import check_destination
        from torsh_gen.scaffold.tests import generate_tests
        from torsh_gen.tools.goldens import compute_goldens

        check_destination(out, force)  # before the (possibly long) golden run
        with status("Recording goldens"):
            goldens = compute_goldens(source, artifact=artifact, inputs=inputs, seed=seed)
        files = generate_tests(goldens, out, rtol=rtol, atol=atol, force=force)
        runs = "the artifact" if goldens.engine == "artifact" else "onnxruntime"
        info(f"wrote {len(files)} files to {out} (goldens by {goldens.computed_by}, tests run {runs}); run `pytest {out}`")
