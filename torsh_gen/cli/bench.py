"""``torsh-gen bench``: latency, throughput and memory, side by side with other engines."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Column, Table

from torsh_gen.cli.common import (
    STATE,
    FormatOpt,
    InputShapeOpt,
    ModelArg,
    OutputFormat,
    console,
    emit_data,
    err_console,
)

app = typer.Typer()


@app.command("bench")
def bench_command(
    model: ModelArg,
    artifact: Annotated[Path | None, typer.Option("--artifact", "-a", help="A compiled artifact folder. Default: compile MODEL into a temp folder.")] = None,
    threads: Annotated[int, typer.Option("--threads", "-t", help="Threads for every engine.")] = 2,
    compare: Annotated[str, typer.Option("--compare", help="Engines beside ours, comma-separated: onnxruntime, torch, x86_64-linux (our native library), tvm (the TVM backend's build), or 'none'.")] = "onnxruntime",
    warmup: Annotated[int, typer.Option("--warmup", help="Untimed calls per engine before timing.")] = 10,
    repeat: Annotated[int, typer.Option("--repeat", "-r", help="Timed calls per engine.")] = 100,
    blocks: Annotated[int, typer.Option("--blocks", help="Alternate the engines in this many blocks.")] = 5,
    inputs: Annotated[Path | None, typer.Option("--inputs", "-i", help="An .npz keyed by input name. Default: random inputs.")] = None,
    torch_module: Annotated[str | None, typer.Option("--torch-module", help="FILE.py:FUNCTION returning the PyTorch module for --compare torch.")] = None,
    input_shape: InputShapeOpt = None,
    fmt: FormatOpt = OutputFormat.table,
) -> None:
    """Benchmark the artifact of MODEL beside onnxruntime (and PyTorch eager) in one run."""
    from torsh_gen.tools.bench import TorchFactory, bench_model
    from torsh_gen.tools.inspect import parse_input_shapes

    others = [] if compare.strip().lower() == "none" else [c.strip() for c in compare.split(",") if c.strip()]
    factory = TorchFactory.parse(torch_module) if torch_module else None
    with _progress() as report:
        result = bench_model(
            model, engines=["torsh-gen", *others], artifact_dir=artifact, threads=threads, warmup=warmup,
            repeat=repeat, blocks=blocks, inputs=inputs, bindings=parse_input_shapes(input_shape or []), input_shapes=input_shape,
            torch_factory=factory, progress=report,
        )
    if not emit_data(result, fmt):
        render_bench(console, result)


class _progress:
    """A rich progress bar on stderr fed by bench_model's callback (silent when --quiet)."""

    def __enter__(self) -> Any:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        if STATE["quiet"]:
            self.bar = None
            return None
        self.bar = Progress(TextColumn("{task.description:<22}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err_console, transient=True)
        self.bar.start()
        self.task = self.bar.add_task("starting", total=None)
        return self.update

    def update(self, done: int, total: int, label: str) -> None:
        assert self.bar is not None
        self.bar.update(self.task, completed=done, total=total or None, description=label)

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()


def render_bench(con: Console, result: dict[str, Any]) -> None:
    """One row per engine: latency percentiles, throughput, memory, ratio to onnxruntime."""
    m = result["machine"]
    con.print(f"[bold]{escape(result['model'])}[/]  {result['threads']} threads, {m['cpu']} ({m['cores']} cores), {result['repeat']} runs in {result['blocks']} alternating blocks")
    t = Table("median ms", "p90 ms", "p99 ms", "runs/s", "first ms", "peak MB", "vs ORT")
    t.columns.insert(0, Column("engine", no_wrap=True))
    for engine, s in result["engines"].items():
        ratio = "" if s["ratio_vs_onnxruntime"] is None else f"{s['ratio_vs_onnxruntime']:.2f}x"
        t.add_row(engine, f"{s['median_ms']:.3f}", f"{s['p90_ms']:.3f}", f"{s['p99_ms']:.3f}", f"{s['throughput_per_s']:.4g}",
                  f"{s['first_run_ms']:.1f}", f"{s['peak_rss_mb']:.0f}", ratio)
    con.print(t)
