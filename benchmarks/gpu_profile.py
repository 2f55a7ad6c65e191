"""Where a CUDA artifact's time goes: every step timed on its own with CUDA events.

    python3 benchmarks/gpu_profile.py ARTIFACT_DIR [--repeat 30] [--top 15]

Runs the artifact's steps one at a time (no graph) on its stream, each between two
events, ``repeat`` times, and prints the median per step grouped by kind (a GEMM by its
shape, a launch by its kernel's op), the sum, and the whole forward replayed as a CUDA
graph beside it: the difference is what launch gaps and event overhead cost. Needs a GPU
and CuPy; reads plan.json for the step list.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # torsh_gen need not be installed


def _label(step: dict) -> str:
    if step["op"] == "gemm":
        return f"gemm {step['dtype']} m{step['m']} n{step['n']} k{step['k']} b{step['batch']}"
    return re.sub(r"^k\d+_", "", step["kernel"]).rsplit("_", 1)[0]


def main(argv: list[str] | None = None) -> int:
    """Profile one artifact; prints a table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("artifact", type=Path)
    p.add_argument("--repeat", type=int, default=30)
    p.add_argument("--top", type=int, default=15)
    args = p.parse_args(argv)
    import cupy as cp
    import numpy as np

    from torsh_gen.tools.artifact import load_artifact

    module = load_artifact(args.artifact)
    plan = json.loads((args.artifact / "plan.json").read_text())
    model = module.Model(graphs=False)
    ex = model._executor
    rng = np.random.default_rng(0)
    feeds = {}
    for s in module.INPUTS:
        dt = np.dtype(s["dtype"])
        feeds[s["name"]] = rng.integers(0, 100, s["shape"]).astype(dt) if dt.kind in "iu" else rng.standard_normal(s["shape"]).astype(dt)
    model.run(**feeds)
    events = [(cp.cuda.Event(), cp.cuda.Event()) for _ in ex._steps]
    times = defaultdict(list)
    with cp.cuda.Device(ex.device):
        for _ in range(args.repeat):
            for k, step in enumerate(ex._steps):
                events[k][0].record(ex.stream)
                step()
                events[k][1].record(ex.stream)
            ex.stream.synchronize()
            for k, (a, b) in enumerate(events):
                times[k].append(cp.cuda.get_elapsed_time(a, b))
    per_step = [statistics.median(times[k]) for k in range(len(ex._steps))]
    groups: dict[str, list[float]] = defaultdict(list)
    for step, t in zip(plan["steps"], per_step):
        groups[_label(step)].append(t)
    total = sum(per_step)
    graphed = module.Model()
    for _ in range(3):
        graphed.run(**feeds)
    start, end = cp.cuda.Event(), cp.cuda.Event()
    dev = {k: cp.asarray(v) for k, v in feeds.items()}
    reps = []
    for _ in range(args.repeat):
        start.record(graphed.stream)
        for _ in range(10):
            graphed.run_device(**dev)
        end.record(graphed.stream)
        end.synchronize()
        reps.append(cp.cuda.get_elapsed_time(start, end) / 10)
    print(f"{args.artifact.name}: {len(per_step)} steps, sum of steps {total:.3f} ms, graph replay {statistics.median(reps):.3f} ms")
    rows = sorted(groups.items(), key=lambda kv: -sum(kv[1]))
    for label, ts in rows[: args.top]:
        print(f"  {sum(ts):8.3f} ms {100 * sum(ts) / total:5.1f}%  x{len(ts):<3d} {label}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
