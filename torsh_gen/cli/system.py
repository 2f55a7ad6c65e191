"""``torsh-gen system``: this machine's CPU, SIMD, memory, GPUs, toolchains and advice."""

from __future__ import annotations

from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from torsh_gen.cli.common import FormatOpt, OutputFormat, console, emit_data

app = typer.Typer()


@app.command("system")
def system_command(fmt: FormatOpt = OutputFormat.table) -> None:
    """Show what this machine offers: CPU features, memory, CUDA, toolchains per target, advice."""
    from torsh_gen.tools.system import system_report

    data = system_report()
    if not emit_data(data, fmt):
        render_system(console, data)


def render_system(con: Console, data: dict[str, Any]) -> None:
    """The report as a machine table, a toolchain table, target readiness and suggestions."""
    cpu, mem, cuda = data["cpu"], data["memory"], data["cuda"]
    t = Table("machine", "", show_header=False, title="machine", title_justify="left")
    t.add_row("cpu", escape(f"{cpu['model']} ({cpu['arch']})"))
    t.add_row("llvm", escape(f"{cpu['llvm_cpu'] or '?'} ({cpu['triple'] or '?'})"))
    t.add_row("cores", f"{cpu['cores']} usable of {cpu['logical_cpus']}")
    t.add_row(
        "simd", escape(" ".join(k if v else f"-{k}" for k, v in data["simd"].items()) or "unknown")
    )
    t.add_row("memory", _memory(mem))
    gpus = [
        f"{d['name']} (sm {d['compute_capability']}, driver {d['driver']})" for d in cuda["devices"]
    ]
    t.add_row("cuda", escape("; ".join(gpus) or cuda["status"]))
    con.print(t)
    tools = Table("tool", "kind", "version", "used for", title="toolchains", title_justify="left")
    for r in data["toolchains"]:
        version = escape(r["version"] or "installed") if r["installed"] else "[red]missing[/]"
        tools.add_row(escape(r["name"]), r["kind"], version, escape(r["used_for"]))
    con.print(tools)
    ready = [escape(r["name"]) for r in data["targets"] if r["installed"]]
    missing = [escape(r["name"]) for r in data["targets"] if not r["installed"]]
    con.print("targets ready here: [green]" + (", ".join(ready) or "none") + "[/]")
    if missing:
        con.print("targets missing tools: [red]" + ", ".join(missing) + "[/]")
    for s in data["suggestions"]:
        con.print(f"• {escape(s)}")


def _memory(mem: dict[str, int]) -> str:
    gib = 1 << 30
    total, avail = mem.get("total_bytes"), mem.get("available_bytes")
    if total is None:
        return "unknown"
    return f"{total / gib:.1f} GiB" + (
        f" ({avail / gib:.1f} GiB available)" if avail is not None else ""
    )
