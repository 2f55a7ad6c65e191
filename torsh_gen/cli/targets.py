"""``torsh-gen targets``: every target ``compile --target`` accepts and whether it builds here."""

from __future__ import annotations

from typing import Any

import typer
from rich.console import Console
from rich.markup import escape

from torsh_gen.cli.common import FormatOpt, OutputFormat, console, emit_data

app = typer.Typer()


@app.command("targets")
def targets_command(fmt: FormatOpt = OutputFormat.table) -> None:
    """List the targets: what each produces, its triple, vectors, toolchain and readiness here."""
    from torsh_gen.tools.targets import target_rows

    rows = target_rows()
    if not emit_data(rows, fmt):
        render_targets(console, rows)


def render_targets(con: Console, rows: list[dict[str, Any]]) -> None:
    """Three lines per target: name, readiness and what it produces; triple and vectors; needs."""
    for r in rows:
        here = (
            "[green]ready[/]"
            if r["installed"]
            else "[red]missing " + escape(", ".join(r["missing"]) or "?") + "[/]"
        )
        con.print(f"[bold]{escape(r['name'])}[/]  {here}  {escape(r['description'])}")
        if r["triple"]:
            con.print(
                f"    {escape(r['triple'])}, cpu {escape(r['cpu'])}, "
                f"{r['vector_bits']}-bit vectors, packaging {escape(r['packaging'])}"
                + (f", runs under {escape(r['emulator'])}" if r["emulator"] else "")
            )
        needs = ", ".join(r["needs"] + r["python_packages"])
        apt = f" (Debian: {' '.join(r['apt'])})" if r["apt"] else ""
        con.print(f"    needs {escape(needs)}{escape(apt)}")
