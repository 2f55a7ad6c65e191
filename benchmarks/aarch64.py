"""aarch64-linux: the model set compiled, run once under qemu-aarch64, checked against
onnxruntime, with the library's code size (timings under emulation mean nothing).

    .venv/bin/python benchmarks/aarch64.py [--models a,b]   → benchmarks/aarch64.md
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import models  # noqa: E402  (benchmarks/ is not a package)

from torsh_gen.backends.llvm.targets import load_target  # noqa: E402
from torsh_gen.tools.compile import compile_model  # noqa: E402


def check(name: str, path: Path, out: Path) -> dict:
    """Compile, run under qemu, compare; the row of the table."""
    import onnxruntime as ort

    folder = out / name
    t0 = time.perf_counter()
    compile_model(path, folder, target="aarch64-linux")
    compile_s = time.perf_counter() - t0
    manifest = json.loads((folder / "manifest.json").read_text())
    rng = np.random.default_rng(0)
    feeds = {e["name"]: rng.standard_normal(e["shape"]).astype(e["dtype"]) for e in manifest["inputs"]}
    with tempfile.TemporaryDirectory() as tmp:
        ind, outd = Path(tmp) / "in", Path(tmp) / "out"
        ind.mkdir()
        outd.mkdir()
        for e in manifest["inputs"]:
            np.save(ind / e["file"], feeds[e["name"]])
        cmd = list(load_target("aarch64-linux").emulator) + [str(folder / "run_model"), str(ind), str(outd)]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, timeout=900)
        qemu_s = time.perf_counter() - t0
        got = [np.load(outd / e["file"]) for e in manifest["outputs"]]
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    want = sess.run(None, feeds)
    err = max(float(np.max(np.abs(g - w) / (np.abs(w) + 1e-3))) for g, w in zip(got, want))
    lib = next(folder.glob("lib*.so"))
    return {"model": name, "max_rel_err": err, "ok": all(np.allclose(g, w, rtol=1e-4, atol=1e-4) for g, w in zip(got, want)),
            "library_kb": lib.stat().st_size / 1024, "compile_s": compile_s, "qemu_s": qemu_s}


def main(argv: list[str] | None = None) -> int:
    """Run the set and write benchmarks/aarch64.md."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", help=f"comma-separated subset of: {', '.join(models.SUITE)}")
    p.add_argument("--build", type=Path, default=HERE.parent / "build")
    args = p.parse_args(argv)
    names = tuple(args.models.split(",")) if args.models else models.SUITE
    rows = []
    for m in models.build_models(args.build / "bench-models", names):
        try:
            rows.append(check(m.name, m.onnx_path, args.build / "native" / "aarch64-linux"))
        except Exception as exc:  # reported in its row
            rows.append({"model": m.name, "error": f"{type(exc).__name__}: {exc}"[:200]})
        print(json.dumps(rows[-1]), flush=True)
    lines = ["# aarch64-linux: correctness under qemu and code size", "",
             f"Written by `benchmarks/aarch64.py` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: each model "
             "compiled for aarch64-linux (generic + NEON), run once by its `run_model` driver under "
             "`qemu-aarch64 -L /usr/aarch64-linux-gnu` on seeded random input and compared with onnxruntime on x86_64 "
             "(rtol/atol 1e-4). Timings under emulation are not reported.", "",
             "| model | matches onnxruntime | max rel error | library KB | compile s |", "|---|---|---:|---:|---:|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | failed: {r['error']} | | | |")
        else:
            lines.append(f"| {r['model']} | {'yes' if r['ok'] else 'no'} | {r['max_rel_err']:.1e} | {r['library_kb']:.0f} | {r['compile_s']:.1f} |")
    (HERE / "aarch64.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
