"""Where a native program spends its time: every kernel call timed separately (one thread).

The model is lowered for a target's schedule (host by default), its kernels are JIT
compiled in this process, and the calls of ``<prefix>_graph_run`` are replayed one by one
from Python with the same pointers, each timed over repeated runs (medians). Only the
relative figures matter; the Python call overhead (~1 us) is included in each. Weights,
workspace, inputs and outputs are 64-byte aligned, as in the library.

    .venv/bin/python benchmarks/native_profile.py MODEL.onnx [--target host] [--repeat 20] [--top 25]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from torsh_gen.backends.kernel.interp import call_buffers, numpy_dtype
from torsh_gen.backends.llvm import lower_graph
from torsh_gen.backends.llvm.jit import JitKernels, aligned_copy
from torsh_gen.backends.llvm.targets import load_target
from torsh_gen.passes import pipeline, run_passes
from torsh_gen.tools.loading import load_model

import torsh_gen.passes.memplan  # noqa: F401  (registers plan_memory)


def main(argv: list[str] | None = None) -> int:
    """Lower, JIT, time every call, print the table sorted by time."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", type=Path)
    p.add_argument("--target", default="host")
    p.add_argument("--schedule-of", help="lower with this target's schedule data (e.g. wasm32: 4 lanes, one thread) but run on the host")
    p.add_argument("--repeat", type=int, default=20)
    p.add_argument("--top", type=int, default=25)
    args = p.parse_args(argv)
    spec = load_target(args.target)
    graph = load_model(args.model)
    run_passes(graph, pipeline("O3") + ["plan_memory"])
    t0 = time.perf_counter()
    program = lower_graph(graph, load_target(args.schedule_of) if args.schedule_of else spec)
    jit = JitKernels(list(program.kernels.values()))
    print(f"lowered and JIT-compiled {len(program.kernels)} kernels in {time.perf_counter() - t0:.1f} s")
    mem = {
        "weights": aligned_copy(bytes(program.weights) or b"\0"),
        "workspace": aligned_copy(np.zeros(program.workspace_bytes + 64, dtype=np.uint8)),
    }
    rng = np.random.default_rng(0)
    ins = [aligned_copy(rng.standard_normal(s.shape).astype(numpy_dtype(s.dtype))) for s in program.inputs]
    outs = [aligned_copy(np.zeros(s.shape, numpy_dtype(s.dtype))) for s in program.outputs]

    calls = [(c, call_buffers(program.kernels[c.kernel], c.args, ins, outs, mem)) for c in program.calls]
    times = defaultdict(list)
    for _ in range(args.repeat):
        for k, (call, bufs) in enumerate(calls):
            t = time.perf_counter()
            jit.run(call.kernel, bufs)
            times[k].append(time.perf_counter() - t)
    rows = [(float(np.median(times[k])) * 1e3, call) for k, (call, _) in enumerate(calls)]
    total = sum(t for t, _ in rows)
    by_op = defaultdict(float)
    for t, call in rows:
        by_op[call.op_type] += t
    print(f"total {total:.3f} ms over {len(rows)} calls")
    for op, t in sorted(by_op.items(), key=lambda x: -x[1]):
        print(f"  {op:22s} {t:8.3f} ms {100 * t / total:5.1f} %")
    print("slowest calls:")
    for t, call in sorted(rows, key=lambda x: -x[0])[: args.top]:
        shapes = " ".join("x".join(map(str, r.shape)) for r in call.args)
        print(f"  {t:8.3f} ms  {call.op_type:16s} {call.kernel:28s} {shapes}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
