"""Run ``bench`` over the benchmark model set and write benchmarks/RESULTS.md.

    .venv/bin/python benchmarks/run.py                      # the whole suite, 2 threads
    .venv/bin/python benchmarks/run.py --models mlp,resnet18 --repeat 50

Every model runs at batch 1, float32, with the same thread count for every engine. Our
artifact is compiled into a temporary folder per model (``compile_model``, level O3);
when this torsh-gen cannot compile yet, the ``ours`` column stays empty and the table
says so. PyTorch eager runs for the models built in PyTorch when torch is installed.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import models  # noqa: E402  (benchmarks/ is not a package)

from torsh_gen.errors import TorshGenError  # noqa: E402
from torsh_gen.tools.bench import TorchFactory, bench_model  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    """Build the models, benchmark each, write the results table (and JSON when asked)."""
    args = _parse(argv)
    names = tuple(n.strip() for n in args.models.split(",")) if args.models else models.SUITE
    have_torch = importlib.util.find_spec("torch") is not None
    if not have_torch:
        names = tuple(n for n in names if n not in models.TORCH)
        print("torch is not installed: skipping the PyTorch-built models", file=sys.stderr)
    can_compile = importlib.util.find_spec("torsh_gen.tools.compile") is not None and not args.no_ours
    rows: list[dict[str, Any]] = []
    for m in models.build_models(args.build, names):
        engines = (["torsh-gen"] if can_compile else []) + ["onnxruntime"] + (["torch"] if m.torch_built else [])
        factory = TorchFactory(str(HERE / "models.py"), "torch_module", (m.name,)) if m.torch_built else None
        print(f"{m.name}: {', '.join(engines)}", file=sys.stderr)
        try:
            result = bench_model(m.onnx_path, engines=engines, threads=args.threads, warmup=args.warmup, repeat=args.repeat, blocks=args.blocks, torch_factory=factory)
        except TorshGenError as e:
            print(f"  failed: {e}", file=sys.stderr)
            rows.append({"model": m.name, "error": str(e)})
            continue
        rows.append({**result, "model": m.name})
        print("  " + ", ".join(f"{e} {s['median_ms']:.3f} ms" for e, s in result["engines"].items()), file=sys.stderr)
    args.out.write_text(results_markdown(rows, args, can_compile) + _kept_tail(args.out))
    print(f"wrote {args.out}", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2, default=str))
    return 0


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", help=f"comma-separated subset of: {', '.join(models.SUITE)}")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--repeat", type=int, default=100)
    p.add_argument("--blocks", type=int, default=5)
    p.add_argument("--build", type=Path, default=HERE.parent / "build" / "bench-models", help="where the ONNX files go")
    p.add_argument("--out", type=Path, default=HERE / "RESULTS.md")
    p.add_argument("--json", type=Path, help="also write the raw results as JSON")
    p.add_argument("--no-ours", action="store_true", help="only the other engines (e.g. to record a baseline)")
    return p.parse_args(argv)


#: RESULTS.md from this line on is written by hand (other benchmarks' summaries) and kept.
KEEP_MARKER = "<!-- kept by benchmarks/run.py: the sections below are maintained by hand -->"


def _kept_tail(out: Path) -> str:
    """The hand-written part of an existing RESULTS.md (from KEEP_MARKER on), or ''."""
    old = out.read_text() if out.exists() else ""
    i = old.find(KEEP_MARKER)
    return "" if i < 0 else "\n" + old[i:]


def geometric_mean(values: list[float]) -> float | None:
    """The geometric mean of positive values (None for none)."""
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else None


def results_markdown(rows: list[dict[str, Any]], args: argparse.Namespace, can_compile: bool) -> str:
    """The RESULTS.md text: one row per model, the geometric-mean ratio, machine and versions."""
    done = [r for r in rows if "engines" in r]
    lines = ["# Benchmark results", ""]
    if done:
        first = done[0]
        m = first["machine"]
        versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items())
        torch_v = next((r["machine"]["versions"]["torch"] for r in done if "torch" in r["machine"]["versions"]), None)
        if torch_v and "torch" not in m["versions"]:
            versions += f", torch {torch_v}"
        lines += [
            f"- date: {first['date']}",
            f"- CPU: {m['cpu']} ({m['cores']} cores; {', '.join(m['cpu_flags']) or 'no notable SIMD flags'})",
            f"- versions: {versions}",
            f"- {args.threads} threads, batch 1, float32; median of {args.repeat} runs per engine in {args.blocks} alternating blocks after {args.warmup} warm-up runs",
            f"- 1-minute load average from {_load(done[0], 'before')} (first model) to {_load(done[-1], 'after')} (last): above 0 means other work shared the cores",
            "",
        ]
    if not can_compile:
        lines += ["**The `ours` column is empty: this torsh-gen could not compile models when the table was made.**", ""]
    lines += ["| model | ours ms | onnxruntime ms | torch ms | ratio (ours / onnxruntime) | compile s | peak MB (ours / onnxruntime) |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    ratios = []
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | failed: {r['error']} | | | | | |")
            continue
        e = r["engines"]
        cell = [f"{e[k]['median_ms']:.3f}" if k in e else "" for k in ("torsh-gen", "onnxruntime", "torch")]
        ratio = r.get("ratio")
        if ratio:
            ratios.append(ratio)
        compile_s = "" if r.get("compile_s") is None else f"{r['compile_s']:.1f}"
        peak = " / ".join(f"{e[k]['peak_rss_mb']:.0f}" if k in e else "-" for k in ("torsh-gen", "onnxruntime"))
        lines.append(f"| {r['model']} | {cell[0]} | {cell[1]} | {cell[2]} | {'' if ratio is None else f'{ratio:.2f}'} | {compile_s} | {peak} |")
    gm = geometric_mean(ratios)
    lines += ["", f"Geometric-mean ratio ours / onnxruntime: {'n/a' if gm is None else f'{gm:.2f}'}"
              + (f" over {len(ratios)} models; slowest relative to onnxruntime: {max(ratios):.2f}" if ratios else ""), ""]
    return "\n".join(lines)


def _load(result: dict[str, Any], when: str) -> str:
    value = result.get("load_average", {}).get(when)
    return "?" if value is None else f"{value:.2f}"


if __name__ == "__main__":
    sys.exit(main())
