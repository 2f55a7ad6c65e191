"""torsh-gen's wasm32 artifact vs onnxruntime-web (WASM backend), written to benchmarks/wasm.md.

    .venv/bin/python benchmarks/wasm_bench.py                              # default models
    .venv/bin/python benchmarks/wasm_bench.py --models mlp light_resnet50 --runs 50

For each model: ``compile_model(..., target="wasm32")`` builds the artifact (weights
embedded in model.wasm), then ``benchmarks/wasm/bench.mjs`` runs our ``model.js`` and
onnxruntime-web's WASM backend (one thread, SIMD, all graph optimizations) in one Node
process on the same seeded input, in alternating blocks, and reports medians, their ratio
(ours / onnxruntime-web) and the largest difference between the two engines' outputs.
onnxruntime-web is pinned in ``benchmarks/wasm/package.json``; ``npm ci`` runs here the
first time (never in tests). Models: a 784-256-10 MLP with seeded weights and the
``light_*`` models shipped in the onnx package (``onnx/backend/test/data/light``: the
reference architectures with constant weights; latency does not depend on the values).
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = Path(__file__).resolve().parent
NODE_DIR = HERE / "wasm"
sys.path.insert(0, str(HERE.parent))

from torsh_gen.errors import TorshGenError  # noqa: E402
from torsh_gen.tools.compile import compile_model  # noqa: E402

DEFAULT_MODELS = ("mlp", "light_squeezenet", "light_shufflenet")
ORT_WEB_MAX_IR = 10  # onnxruntime-web 1.30 reads IR versions up to 13; 10 suits every opset we use


def mlp(path: Path) -> Path:
    """784 → 256 → 10 with ReLU (Gemm, Relu, Gemm), seeded weights, batch 1."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array((rng.standard_normal((784, 256)) * 0.05).astype(np.float32), "w1"),
        numpy_helper.from_array((rng.standard_normal(256) * 0.1).astype(np.float32), "b1"),
        numpy_helper.from_array((rng.standard_normal((256, 10)) * 0.1).astype(np.float32), "w2"),
        numpy_helper.from_array((rng.standard_normal(10) * 0.1).astype(np.float32), "b2"),
    ]
    nodes = [
        helper.make_node("Gemm", ["x", "w1", "b1"], ["h"]),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("Gemm", ["r", "w2", "b2"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, (1, 784))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, (1, 10))],
        inits,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def model_file(name: str, work: Path) -> Path:
    """The ONNX file of ``name``, with an IR version onnxruntime-web reads."""
    if name == "mlp":
        src = mlp(work / "mlp_src.onnx")
    else:
        src = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light" / f"{name}.onnx"
        if not src.is_file():
            raise SystemExit(
                f"unknown model {name!r}: not 'mlp' and no {src.name} in the onnx package"
            )
    model = onnx.load(src)
    model.ir_version = min(model.ir_version, ORT_WEB_MAX_IR)
    out = work / f"{name}.onnx"
    onnx.save(model, out)
    return out


def ensure_node_modules() -> None:
    """Install the pinned onnxruntime-web once (``npm ci`` from the lock file)."""
    if (NODE_DIR / "node_modules" / "onnxruntime-web").is_dir():
        return
    npm = shutil.which("npm")
    if npm is None:
        raise SystemExit("npm is not installed: it installs onnxruntime-web for this benchmark")
    command = [
        npm,
        "ci" if (NODE_DIR / "package-lock.json").is_file() else "install",
        "--no-audit",
        "--no-fund",
    ]
    subprocess.run(command, cwd=NODE_DIR, check=True)


def bench_one(name: str, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Compile ``name`` for wasm32 and run bench.mjs on it; a row of the table."""
    row: dict[str, Any] = {"model": name}
    onnx_path = model_file(name, work)
    artifact = work / f"{name}_wasm"
    start = time.perf_counter()
    try:
        compile_model(onnx_path, artifact, target="wasm32")
    except TorshGenError as exc:
        row["error"] = f"not compiled: {str(exc).splitlines()[0][:300]}"
        return row
    row["compile_s"] = time.perf_counter() - start
    manifest = json.loads((artifact / "manifest.json").read_text())
    row["inputs"] = ", ".join(
        f"{e['dtype']}[{'x'.join(map(str, e['shape']))}]" for e in manifest["inputs"]
    )
    row["code_kb"] = manifest["wasm"]["code_bytes"] / 1024
    row["weights_kb"] = manifest["weights"]["bytes"] / 1024
    command = [
        "node",
        str(NODE_DIR / "bench.mjs"),
        "--artifact",
        str(artifact),
        "--onnx",
        str(onnx_path),
        "--runs",
        str(args.runs),
        "--warmup",
        str(args.warmup),
        "--blocks",
        str(args.blocks),
        "--json",
    ]
    proc = subprocess.run(command, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        row["error"] = f"bench.mjs failed: {proc.stderr.strip()[-300:]}"
        return row
    row.update(json.loads(proc.stdout.strip().splitlines()[-1]))
    return row


def cpu_name() -> str:
    """The CPU's model name (Linux), for the record."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def markdown(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    """The results table and how it was measured."""
    versions = next((r for r in rows if "node" in r), {})
    header = ["model", "input", "ours (ms)", "onnxruntime-web (ms)", "ratio", "max abs diff"]
    header += ["code (KB)", "weights (KB)", "compile (s)"]
    lines = [
        "# wasm32: torsh-gen model.wasm vs onnxruntime-web (WASM backend)",
        "",
        f"Written by `benchmarks/wasm_bench.py` on {time.strftime('%Y-%m-%d')}: {cpu_name()}, "
        f"Node {versions.get('node', '?')}, "
        f"onnxruntime-web {versions.get('onnxruntime_web', '?')}, "
        "one thread, SIMD128 on both. Batch 1, seeded random input; median of "
        f"{args.runs} runs per engine after {args.warmup} warm-up calls, in {args.blocks} "
        "alternating blocks; ratio = ours / onnxruntime-web (below 1: we are faster). The "
        "light_* models carry constant weights (their outputs are uniform), so their max abs "
        "diff checks little; tests/backends/native compares the numerics with onnxruntime.",
        "",
        "| " + " | ".join(header) + " |",
        "|---|---|" + "---:|" * (len(header) - 2),
    ]
    for r in rows:
        if "error" in r:
            error = r["error"].replace("|", "\\|")
            lines.append(f"| {r['model']} | {r.get('inputs', '')} | {error} |" + " |" * 6)
            continue
        cells = [r["model"], r["inputs"], f"{r['ours_ms']:.3f}", f"{r['ort_ms']:.3f}"]
        cells += [f"{r['ratio']:.2f}", f"{r['max_abs_diff']:.1e}", f"{r['code_kb']:.1f}"]
        cells += [f"{r['weights_kb']:.0f}", f"{r['compile_s']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    ratios = [r["ratio"] for r in rows if "ratio" in r]
    if ratios:
        geo = float(np.exp(np.mean(np.log(ratios))))
        lines += ["", f"Geometric mean of the ratios over {len(ratios)} model(s): {geo:.2f}."]
    return "\n".join(lines) + "\n"


def main() -> None:
    """Parse arguments, benchmark each model, write the markdown (and JSON) results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS))
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--blocks", type=int, default=5)
    parser.add_argument("--out", type=Path, default=HERE / "wasm.md")
    parser.add_argument("--json", type=Path, default=None, help="also write the raw rows here")
    args = parser.parse_args()
    if shutil.which("node") is None or shutil.which("wasm-ld") is None:
        raise SystemExit("this benchmark needs node and wasm-ld (run `make toolchains`)")
    ensure_node_modules()
    rows = []
    with tempfile.TemporaryDirectory(prefix="torsh-wasm-bench-") as tmp:
        for name in args.models:
            row = bench_one(name, Path(tmp), args)
            rows.append(row)
            shown = (
                row.get("error")
                or f"ours {row['ours_ms']:.3f} ms, ort-web {row['ort_ms']:.3f} ms, "
                f"ratio {row['ratio']:.2f}"
            )
            print(f"{name}: {shown}", flush=True)
    args.out.write_text(markdown(rows, args))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
