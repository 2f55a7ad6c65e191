"""``torsh-gen ops``: the ops torsh-gen implements, with their versions."""

from __future__ import annotations

import typer

from torsh_gen.cli.common import FormatOpt, OutputFormat, console, emit_data

app = typer.Typer()


@app.command("ops")
def ops_command(fmt: FormatOpt = OutputFormat.table) -> None:
    """List every supported op (domain, name, opset versions with distinct behaviour)."""
    from rich.table import Table

    import torsh_gen.ops
    from torsh_gen.ops.registry import registered_ops

    del torsh_gen.ops
    rows = [{"domain": d or "ai.onnx", "op": o, "since": v} for d, o, v in registered_ops()]
    if emit_data(rows, fmt):
        return
    table = Table("domain", "op", "versions", title=f"{len(rows)} ops")
    for r in rows:
        table.add_row(r["domain"], r["op"], ", ".join(map(str, r["since"])))
    console.print(table)
