"""Native targets against onnxruntime: the CPU compiler's model set compiled for a native
target (x86_64-linux by default, or host), timed from Python and from C.

For each model: compile with ``compile_model(target=...)``; then one ``bench_model`` run
(torsh_gen.tools.bench: our ctypes wrapper and onnxruntime in worker processes,
alternating blocks, medians) gives the Python-side ratio, and the artifact's own C driver
(``DIR/bench_model ITERATIONS THREADS``) gives the latency measured from C. The ratio
that matters is ours / onnxruntime in the same run; absolute times drift with the host.

    .venv/bin/python benchmarks/native.py [--target x86_64-linux] [--models a,b] [--repeat 50]

It writes benchmarks/native.md and replaces the native section of RESULTS.md (kept by
run.py: it lives below run.py's KEEP_MARKER).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import models  # noqa: E402  (benchmarks/ is not a package)
from run import KEEP_MARKER  # noqa: E402

from torsh_gen.tools.bench import bench_model, cpu_model  # noqa: E402
from torsh_gen.tools.compile import compile_model  # noqa: E402

def markers(target: str) -> tuple[str, str]:
    """The comment lines around one target's section of RESULTS.md."""
    return f"<!-- native target {target}: written by benchmarks/native.py -->", f"<!-- end of native target {target} -->"


def c_latency(folder: Path, iterations: int, threads: int, variant: str | None = None) -> dict[str, Any]:
    """The C driver's figures (``median_us`` etc. and the CPU ``variant`` it ran) for the
    artifact in ``folder``; ``variant`` names the library's build to run (default: its pick)."""
    env = {**os.environ, "TORSH_GEN_CPU_VARIANT": variant} if variant else None
    out = subprocess.run([str(folder / "bench_model"), str(iterations), str(threads)], capture_output=True, text=True, check=True, timeout=600, env=env)
    fields = dict(kv.split("=", 1) for kv in out.stdout.split() if "=" in kv)
    got: dict[str, Any] = {k: float(v) for k, v in fields.items() if k.endswith("_us")}
    got["variant"] = fields.get("variant", "")
    return got


def other_variant_ms(folder: Path, iterations: int, threads: int, variant: str) -> float | None:
    """The C median of another build of the library in ms, or None where this CPU cannot
    run it (an AVX-512 build on an AVX2 machine: the library refuses it at create)."""
    try:
        return c_latency(folder, iterations, threads, variant)["median_us"] / 1000.0
    except subprocess.CalledProcessError as exc:
        if "cannot run" in (exc.stderr or ""):
            return None
        raise


def measure(name: str, path: Path, target: str, build: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Compile and time one model."""
    folder = build / f"{name.replace('-', '_')}"
    t0 = time.perf_counter()
    compile_model(path, folder, target=target)
    compile_s = time.perf_counter() - t0
    res = bench_model(path, artifact_dir=folder, threads=args.threads, warmup=args.warmup, repeat=args.repeat, blocks=args.blocks)
    eng = res["engines"]
    iters = max(int(args.c_seconds * 1000 / max(eng["torsh-gen"]["median_ms"], 1e-3)), 20)
    c = c_latency(folder, iters, args.threads)
    manifest = json.loads((folder / "manifest.json").read_text())
    others = {
        v["name"]: other_variant_ms(folder, iters, args.threads, v["name"])
        for v in manifest.get("cpu_variants", [])
        if len(manifest["cpu_variants"]) > 1 and v["name"] != c["variant"]
    }
    lib = next(folder.glob("lib*.so"))
    return {
        "model": name,
        "variant": c["variant"],
        "other_variants_c_ms": others,
        "compile_s": compile_s,
        "python_ms": eng["torsh-gen"]["median_ms"],
        "c_ms": c["median_us"] / 1000.0,
        "ort_ms": eng["onnxruntime"]["median_ms"],
        "ratio_python": eng["torsh-gen"]["median_ms"] / eng["onnxruntime"]["median_ms"],
        "ratio_c": c["median_us"] / 1000.0 / eng["onnxruntime"]["median_ms"],
        "code_bytes": lib.stat().st_size,
    }


def geomean(xs: list[float]) -> float:
    """Geometric mean of positive numbers."""
    return math.exp(sum(math.log(x) for x in xs) / len(xs))


def table(rows: list[dict[str, Any]], target: str, args: argparse.Namespace) -> str:
    """The markdown section."""
    start, end = markers(target)
    lines = [
        start,
        f"## Native target {target} against onnxruntime",
        "",
        f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; CPU: {cpu_model()}",
        f"- {args.threads} threads, batch 1, float32; Python: median of {args.repeat} runs in {args.blocks} alternating "
        f"blocks beside onnxruntime (torsh_gen.tools.bench); C: the artifact's bench_model driver, median",
        "- reproduce: `.venv/bin/python benchmarks/native.py --target " + target + "`",
        "",
        "- build: the CPU variant the library picked here; other builds: the C driver's median with "
        "`TORSH_GEN_CPU_VARIANT` naming each of the library's other builds, and its ratio",
        "",
        "| model | build | ours from C ms | ours from Python ms | onnxruntime ms | ratio C | ratio Python | other builds from C | library KB | compile s |",
        "|---|---|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | failed: {r['error']} | | | | | | | | |")
            continue
        others = ", ".join(
            f"{name} {ms:.3f} ms ({ms / r['ort_ms']:.2f})" if ms is not None else f"{name} not runnable on this CPU"
            for name, ms in r["other_variants_c_ms"].items()
        ) or "-"
        lines.append(
            f"| {r['model']} | {r['variant']} | {r['c_ms']:.3f} | {r['python_ms']:.3f} | {r['ort_ms']:.3f} | {r['ratio_c']:.2f} | "
            f"{r['ratio_python']:.2f} | {others} | {r['code_bytes'] / 1024:.0f} | {r['compile_s']:.1f} |"
        )
    ok = [r for r in rows if "error" not in r]
    if ok:
        lines += ["", f"Geometric mean ours / onnxruntime: {geomean([r['ratio_c'] for r in ok]):.2f} from C, "
                  f"{geomean([r['ratio_python'] for r in ok]):.2f} from Python, over {len(ok)} models."]
        for name in sorted({n for r in ok for n, ms in r["other_variants_c_ms"].items() if ms is not None}):
            ratios = [r["other_variants_c_ms"][name] / r["ort_ms"] for r in ok if r["other_variants_c_ms"].get(name) is not None]
            lines.append(f"The {name} build from C: geometric mean {geomean(ratios):.2f} over {len(ratios)} models.")
    lines += [end, ""]
    return "\n".join(lines)


def update_results(section: str, results: Path, target: str) -> None:
    """Put ``section`` into RESULTS.md's hand-kept tail, replacing an earlier one."""
    start, end = markers(target)
    text = results.read_text() if results.exists() else "# Benchmark results\n"
    if start in text and end in text:
        a, b = text.index(start), text.index(end) + len(end) + 1
        text = text[:a] + section + text[b:]
    else:
        if KEEP_MARKER not in text:
            text = text.rstrip("\n") + "\n\n" + KEEP_MARKER + "\n"
        text = text.rstrip("\n") + "\n\n" + section
    results.write_text(text)


def main(argv: list[str] | None = None) -> int:
    """Build the models, compile, measure, write the tables."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--target", default="x86_64-linux")
    p.add_argument("--models", help=f"comma-separated subset of: {', '.join(models.SUITE)}")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--repeat", type=int, default=50)
    p.add_argument("--blocks", type=int, default=5)
    p.add_argument("--c-seconds", type=float, default=3.0, help="time budget of the C driver per model")
    p.add_argument("--build", type=Path, default=HERE.parent / "build")
    p.add_argument("--no-results", action="store_true", help="do not touch RESULTS.md")
    args = p.parse_args(argv)
    names = tuple(args.models.split(",")) if args.models else models.SUITE
    built = models.build_models(args.build / "bench-models", names)
    out = args.build / "native" / args.target
    rows = []
    for m in built:
        try:
            rows.append(measure(m.name, m.onnx_path, args.target, out, args))
        except Exception as exc:  # a failing model is reported in its row
            rows.append({"model": m.name, "error": f"{type(exc).__name__}: {exc}"[:200]})
        print(json.dumps(rows[-1]), flush=True)
    section = table(rows, args.target, args)
    start, end = markers(args.target)
    (HERE / f"native-{args.target}.md").write_text(section.replace(start + "\n", "").replace(end + "\n", ""))
    (HERE / f"native-{args.target}.json").write_text(json.dumps(rows, indent=2) + "\n")
    if not args.no_results:
        update_results(section, HERE / "RESULTS.md", args.target)
    print(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
