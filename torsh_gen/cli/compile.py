"""``torsh-gen compile``: compile a model into a standalone package for a target."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Column, Table

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


@app.command("compile")
def compile_command(
    model: ModelArg,
    output: Annotated[Path, typer.Option("--output", "-o", help="Package folder to write; its name is the package name.")],
    target: Annotated[str, typer.Option("--target", "-t", help="Target: cpu (Python package) or a native one (see `torsh-gen targets`); with --backend tvm: cpu, cuda, vulkan, metal, opencl or rocm.")] = "cpu",
    backend: Annotated[str, typer.Option("--backend", help="Code generator: torsh (ours) or tvm (Apache TVM, the 'tvm' extra).")] = "torsh",
    tune: Annotated[int, typer.Option("--tune", help="--backend tvm: run MetaSchedule with this many trials (database kept in OUTPUT/tuning).")] = 0,
    level: Annotated[str, typer.Option("--level", "-O", help="Pipeline: O0, O1, O2 or O3.")] = "O3",
    passes: Annotated[str | None, typer.Option("--passes", help="Run exactly these passes, comma-separated (overrides --level).")] = None,
    verify: Annotated[bool, typer.Option("--verify", help="Run the IR verifier after every pass.")] = False,
    input_shape: InputShapeOpt = None,
    embed_weights: Annotated[bool, typer.Option("--embed-weights", help="Native targets: put the weights inside the library instead of weights.bin.")] = False,
    tf32: Annotated[bool, typer.Option("--tf32", help="CUDA targets: float32 GEMMs may use TF32 tensor cores (faster, about 1e-3 relative error).")] = False,
    fmt: FormatOpt = OutputFormat.table,
) -> None:
    """Compile MODEL for a target: a Python package (cpu) or a native artifact (see `targets`)."""
    from torsh_gen.tools.compile import compile_model
    from torsh_gen.tools.optimize import parse_pass_list

    options = dict(target=target, level=level, passes=parse_pass_list(passes), check=verify, input_shapes=input_shape, embed_weights=embed_weights, tf32=tf32, backend=backend, tune=tune)
    if tune > 0:
        with _TuningProgress(tune) as progress:
            report = compile_model(model, output, progress=progress, **options)
    else:
        with status(f"Compiling {model}"):
            report = compile_model(model, output, **options)
    data = report.to_dict()
    if not emit_data(data, fmt):
        render_compile(console, data)


class _TuningProgress:
    """A rich progress bar on stderr over MetaSchedule's measured trials, advanced by the
    tuner's progress lines ("... (measured/total)"); silent with --quiet."""

    def __init__(self, trials: int) -> None:
        self.trials = trials

    def __enter__(self) -> Callable[[str], None]:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        from torsh_gen.cli.common import STATE

        self.bar = None if STATE["quiet"] else Progress(TextColumn("tuning"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=Console(stderr=True), transient=True)
        if self.bar is not None:
            self.bar.start()
            self.task = self.bar.add_task("tuning", total=self.trials)
        return self.update

    def update(self, line: str) -> None:
        match = re.search(r"\((\d+)/(\d+)\)\s*$", line)
        if self.bar is not None and match:
            self.bar.update(self.task, completed=min(int(match.group(1)), self.trials))

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()


def render_compile(con: Console, data: dict[str, Any]) -> None:
    """A few lines: where, passes with node counts, coverage, files, time."""
    n0, n1 = data["nodes"]
    con.print(f"[bold]{escape(data['package'])}[/] → {escape(data['out_dir'])}  (target {escape(data['target'])}, {escape(data['level'])}, {data['seconds']:.2f} s)")
    t = Table(Column("pass", no_wrap=True), Column("nodes", no_wrap=True), "ms", "notes", title="passes", title_justify="left")
    for r in data["passes"]:
        a, b = r["nodes"]
        t.add_row(escape(r["pass"]), f"{a} → {b}", f"{r['seconds'] * 1000:.1f}", escape("; ".join(r["notes"])))
    con.print(t)
    mem = data["memory_plan"]
    if data["target"] == "cpu":
        con.print(
            f"nodes {n0} → {n1}: {data['fast_nodes']} by fast emitters, {data['reference_nodes']} by reference kernels; "
            f"{data['kernels']} numba kernels ({data['kernel_seconds']:.2f} s); weights {data['weight_bytes']:,} B"
        )
    elif data["target"].startswith("tvm-"):
        con.print(f"nodes {n0} → {n1}: built by Apache TVM; weights {data['weight_bytes']:,} B")
    else:
        con.print(f"nodes {n0} → {n1}: {data['kernels']} LLVM kernels for {data['fast_nodes']} nodes; weights {data['weight_bytes']:,} B")
        if mem.get("workspace_bytes") is not None:
            con.print(f"workspace {mem['workspace_bytes']:,} B")
    if mem and "planned_values" in mem:
        con.print(f"memory plan: {mem['planned_values']} values in {mem['slots']} buffers, {mem['planned_bytes']:,} B (naive {mem['naive_bytes']:,} B)")
    con.print(f"files: {escape(', '.join(data['files']))}")
