"""``torsh-gen scaffold``: generators of projects around a model (servers, training, tests, ops).

Each generator lives in its own module ``torsh_gen/cli/scaffold_<kind>.py`` exposing
``register(app)``; the group lists only the generators that are built.
"""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="scaffold",
    help="Generate projects around a model: servers, training scripts, tests, custom ops.",
    no_args_is_help=True,
)

# Generator modules under torsh_gen.cli, one per `scaffold` subcommand.
GENERATORS: list[str] = ["scaffold_op", "scaffold_tests", "scaffold_serve", "scaffold_train"]

for _name in GENERATORS:
    importlib.import_module(f"torsh_gen.cli.{_name}").register(app)
