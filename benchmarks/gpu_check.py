"""Check and time the CUDA target on a GPU: ours against onnxruntime (CPU) and PyTorch.

    python3 benchmarks/gpu_check.py                          # GPU_SUITE at batch 1, float32
    python3 benchmarks/gpu_check.py --models mlp,resnet18 --batch64 --fp16 --json r.json

Per model: export ONNX (``models.build_models``), compile it with
``compile_model(..., target="cuda")`` (timed), run the artifact on a seeded input and
compare with onnxruntime on the same file, then time three engines interleaved round by
round in this one process: ours (``run_device``, CUDA graphs on), PyTorch eager and PyTorch
replaying a CUDA graph. Exports and compiles run first, in parallel worker processes (CPU
only); the GPU work runs after them, alone. Exit status: 0 all good, 1 a model failed,
mismatched or was not run, 2 no usable GPU. torsh_gen need not be installed: the repository
root goes on ``sys.path``.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import importlib.util
import inspect
import json
import multiprocessing as mp
import os
import platform
import shlex
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

import models  # noqa: E402  (benchmarks/ is not a package)

FP32_REL, LOW_REL = 1e-3, 2e-2  # TF32 keeps fp16's 10 mantissa bits: the fp16 tolerance
WARMUP = 5
MIN_ROW_S = 5.0  # a row is not started with less time left than this
PREPARE_SHARE = 0.7  # exports and compiles not finished by this share of the budget: not run
WATCHDOG_GRACE_S = 20.0
_write_lock = threading.Lock()
Row = dict[str, Any]


def main(argv: list[str] | None = None) -> int:
    """Check the GPU, prepare every row in parallel, then check and time each on the GPU."""
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    problem = gpu_problem()
    if problem:
        print(f"gpu_check: {problem}", file=sys.stderr, flush=True)
        return 2
    import torch

    torch.backends.cuda.matmul.allow_tf32 = args.tf32
    torch.backends.cudnn.allow_tf32 = args.tf32
    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    start = time.monotonic()
    deadline = start + args.budget_s
    env, tasks, rows = environment(args, argv), plan_tasks(args), []
    env["lt"] = lt_probe(args.workdir)
    say(start, f"cuBLASLt epilogues: {env['lt']}")
    _watchdog(args, env, tasks, rows, start)
    say(start, f"{env['gpu']}: {len(tasks)} rows; preparing in {args.jobs} worker processes")
    prepared = prepare_all(tasks, args, start, start + PREPARE_SHARE * args.budget_s)
    for i, task in enumerate(tasks):
        left = deadline - time.monotonic()
        ready = sum("error" not in prepared[t["key"]] for t in tasks[i:])
        if left < MIN_ROW_S:
            rows.append({**task, "status": "not run", "message": "not run (time budget)"})
        else:
            cap = min(args.model_budget_s, left / max(1, ready))
            rows.append(gpu_row(task, prepared[task["key"]], args, cap, start))
        write_reports(rows, env, args, tasks)
    bad = [r for r in rows if r["status"] != "ok"]
    say(start, f"done: {len(rows) - len(bad)}/{len(rows)} ok; wrote {args.out}")
    if args.profile:
        profile_slowest(rows, prepared, args, start)
    return 1 if bad else 0


def slowest(rows: list[Row]) -> Row | None:
    """The timed row with the highest ours / PyTorch-CUDA-graph ratio."""
    timed = [r for r in rows if r.get("ours_over_graph") is not None]
    return max(timed, key=lambda r: r["ours_over_graph"]) if timed else None


def profile_slowest(rows: list[Row], prepared: dict[str, Row], args: argparse.Namespace, start: float) -> None:
    """Run gpu_profile.py on the slowest row's artifact in a subprocess (its own failure or
    hang cannot touch the results above); its table goes to OUT with ``-profile.txt``."""
    row = slowest(rows)
    if row is None:
        return
    out = args.out.with_name(args.out.stem + "-profile.txt")
    cmd = [sys.executable, str(HERE / "gpu_profile.py"), prepared[row["key"]]["artifact"], "--repeat", "10"]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        text = done.stdout + (done.stderr[-2000:] if done.returncode else "")
    except subprocess.TimeoutExpired:
        text = "gpu_profile.py timed out after 60 s\n"
    _write_atomic(out, f"# {row['key']} (ours / PyTorch CUDA graph {row['ours_over_graph']:.2f})\n\n{text}")
    say(start, f"profile of {row['key']} written to {out}")


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    suite = ", ".join(models.GPU_SUITE)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=",".join(models.GPU_SUITE), help=f"comma-separated subset of {suite}")
    p.add_argument("--batch64", action="store_true", help="also resnet50 at a fixed batch of 64")
    p.add_argument("--repeat", type=int, default=50, help="timed rounds per engine (default 50)")
    p.add_argument("--block", type=int, default=20, help="calls per timed block (default 20)")
    p.add_argument("--out", type=Path, default=HERE / "RESULTS-cuda.md", help="markdown results")
    p.add_argument("--json", type=Path, help="also write the results as JSON")
    p.add_argument("--workdir", type=Path, default=ROOT / "build" / "gpu-check", help="models, artifacts")
    p.add_argument("--tf32", action="store_true", help="allow TF32 (PyTorch; ours where compile_model can)")
    p.add_argument("--fp16", action="store_true", help="also fp16: ours against PyTorch .half()")
    p.add_argument("--cudnn-benchmark", action="store_true", help="let PyTorch autotune cuDNN (default off)")
    p.add_argument("--budget-s", type=float, default=330.0, help="total time budget (default 330 s)")
    p.add_argument("--model-budget-s", type=float, default=60.0, help="GPU time per row (default 60 s)")
    p.add_argument("--jobs", type=int, default=min(12, os.cpu_count() or 1), help="prepare processes (0: none)")
    p.add_argument("--profile", action="store_true",
                   help="then time every step of the row slowest against PyTorch's CUDA graph (gpu_profile.py)")
    args = p.parse_args(argv)
    args.models = tuple(n.strip() for n in args.models.split(",") if n.strip())
    unknown = [n for n in args.models if n not in models.GPU_SUITE]
    if unknown or not args.models:
        p.error(f"unknown model(s) {', '.join(unknown) or '(none given)'}; choose from {suite}")
    if args.repeat < 1 or args.block < 1 or args.jobs < 0:
        p.error("--repeat and --block must be at least 1, --jobs at least 0")
    return args


def gpu_problem() -> str | None:
    """Why this machine cannot run the check (one line), or None."""
    if importlib.util.find_spec("torch") is None:
        return "PyTorch is not installed; the comparison needs it (pip install torch)"
    import torch

    if not torch.cuda.is_available():
        return (f"no CUDA GPU was found (torch {torch.__version__}: torch.cuda.is_available() is "
                "False); run this on a machine with an NVIDIA GPU")
    if importlib.util.find_spec("cupy") is None:
        return "CuPy is not installed; the cuda artifact needs it (pip install cupy-cuda13x)"
    return None


LT_PROBE_S = 120.0


def lt_probe(workdir: Path) -> str:
    """Try the cuBLASLt epilogues in a child process first (a wrong prototype there could
    take the whole check down) on a model of two projections. If that fails they are
    turned off for this run (the runtime's TORSH_GEN_CUDA_LT=0) and the page says why."""
    if os.environ.get("TORSH_GEN_CUDA_LT", "1").strip() == "0":
        return "off (TORSH_GEN_CUDA_LT=0)"
    folder = Path(workdir) / "lt_probe"
    code = (f"import sys; sys.path.insert(0, {str(HERE)!r}); import gpu_check; "
            f"gpu_check.lt_probe_child({str(folder)!r})")
    try:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=LT_PROBE_S)
        out = done.stdout.strip().splitlines()
        verdict = out[-1] if out else ""
        if done.returncode or not verdict.startswith("ok"):
            verdict = "failed: " + (verdict or (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1])
    except subprocess.TimeoutExpired:
        verdict = f"failed: over {LT_PROBE_S:.0f} s"
    if not verdict.startswith("ok"):
        os.environ["TORSH_GEN_CUDA_LT"] = "0"
        return f"off: the probe {verdict[:300]}"
    return f"on (probe {verdict[:300]})"


def lt_probe_child(folder: str) -> None:
    """The probe's child: y = relu((x @ W1 + b1) @ W2 + b2 + h) compiled for the CUDA target
    (both products offer cuBLASLt their epilogues), run (eager, graph capture, replay)
    against onnxruntime; prints 'ok ...' or what went wrong."""
    import shutil

    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from torsh_gen.tools.artifact import load_artifact
    from torsh_gen.tools.compile import compile_model

    rng = np.random.default_rng(0)
    n = helper.make_node
    shape = [32, 64]
    arrays = {"w1": (64, 64), "b1": (64,), "w2": (64, 64), "b2": (64,)}
    nodes = [n("MatMul", ["x", "w1"], ["m1"]), n("Add", ["m1", "b1"], ["h"]), n("MatMul", ["h", "w2"], ["m2"]),
             n("Add", ["m2", "b2"], ["a2"]), n("Add", ["a2", "h"], ["s"]), n("Relu", ["s"], ["y"])]
    inits = [numpy_helper.from_array((rng.standard_normal(d) / 4).astype(np.float32), k) for k, d in arrays.items()]
    io = [helper.make_tensor_value_info(k, TensorProto.FLOAT, shape) for k in "xy"]
    model = helper.make_model(helper.make_graph(nodes, "lt_probe", io[:1], io[1:], inits),
                              opset_imports=[helper.make_opsetid("", 17)], ir_version=8)  # for older onnxruntimes
    shutil.rmtree(folder, ignore_errors=True)
    Path(folder).parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, folder + ".onnx")
    compile_model(Path(folder + ".onnx"), Path(folder), target="cuda")
    art = load_artifact(folder).Model(device=0)
    x = rng.standard_normal(shape).astype(np.float32)
    want = ort.InferenceSession(folder + ".onnx", providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    for _ in range(3):  # eager, graph capture, replay
        got = art.run(x=x)["y"]
        err = float(np.abs(got - want).max() / max(1.0, float(np.abs(want).max())))
        if not err < 1e-5:
            print(f"mismatch: max rel err {err:.3g}", flush=True)
            return
    fused, declined = art.fused_epilogues
    if not fused:
        print("no GEMM took a cuBLASLt epilogue: " + "; ".join(declined[:2]), flush=True)
        return
    print(f"ok: {fused} GEMMs fused, max rel err {err:.1e}", flush=True)


def plan_tasks(args: argparse.Namespace) -> list[Row]:
    """One row per (model, batch, dtype): batch 1 for each model, then resnet50 at 64."""
    shapes = [(name, 1) for name in args.models] + ([("resnet50", 64)] if args.batch64 else [])
    dtypes = ("float32", "float16") if args.fp16 else ("float32",)
    return [{"key": f"{n}_b{b}_{d}", "model": n, "batch": b, "dtype": d} for n, b in shapes for d in dtypes]


def say(start: float, message: str) -> None:
    """One progress line, flushed (the GPU machine returns only the output's tail)."""
    print(f"[{time.monotonic() - start:6.1f}s] {message}", flush=True)


def one_line(e: BaseException) -> str:
    """An exception as one line: its type and the first line of its message."""
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


# ------------------------------------------------------------ preparation (CPU, workers)
def prepare_all(tasks: list[Row], args: argparse.Namespace, start: float, deadline: float) -> dict[str, Row]:
    """Export, reference and compile every row in ``args.jobs`` spawned processes (CPU only)."""
    cores = os.cpu_count() or 1
    threads = max(1, cores // max(1, min(args.jobs, len(tasks))))  # batch 64 outlives the others
    jobs = [(t, str(args.workdir), args.tf32, min(cores, threads * (4 if t["batch"] > 1 else 1))) for t in tasks]
    out: dict[str, Row] = {}
    pool = mp.get_context("spawn").Pool(min(args.jobs, len(tasks)), maxtasksperchild=1) if args.jobs else None
    try:
        pending = [(t, pool.apply_async(prepare, job) if pool else job) for t, job in zip(tasks, jobs)]
        for t, job in pending:
            try:
                prep = job.get(timeout=max(0.0, deadline - time.monotonic())) if pool else prepare(*job)
            except mp.TimeoutError:
                prep = {"error": "not run (time budget): export/compile did not finish in time"}
            out[t["key"]] = prep
            what = prep.get("error") or f"compiled in {prep['compile_s']:.1f} s"
            say(start, f"prepared {t['key']}: {what}")
    finally:
        if pool:
            pool.terminate()
    return out


def prepare(task: Row, workdir: str, tf32: bool, threads: int) -> Row:
    """Export the ONNX file, compute onnxruntime's outputs on the seeded input, compile ours."""
    try:
        import onnxruntime as ort
        import torch

        torch.set_num_threads(threads)  # the export traces one forward pass
        folder = Path(workdir) / task["key"]
        t0 = time.perf_counter()
        (m,) = models.build_models(folder, (task["model"],), task["batch"])
        export_s = time.perf_counter() - t0
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        sess = ort.InferenceSession(str(m.onnx_path), opts, providers=["CPUExecutionProvider"])
        (x,) = models.example_inputs(task["model"], task["batch"])
        feeds = {sess.get_inputs()[0].name: x.numpy()}
        refs = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))
        io, artifact = folder / "io.npz", folder / f"ts_{task['key']}"
        np.savez(io, **{f"in:{k}": v for k, v in feeds.items()}, **{f"out:{k}": v for k, v in refs.items()})
        kwargs, method = compile_options(task["dtype"], tf32)
        from torsh_gen.tools.compile import compile_model

        t0 = time.perf_counter()
        compile_model(m.onnx_path, artifact, target="cuda", level="O3", **kwargs)
        compile_s = time.perf_counter() - t0
        return {"artifact": str(artifact), "io": str(io), "export_s": export_s, "compile_s": compile_s, "method": method}
    except Exception as e:  # one row's failure is recorded; the others go on
        return {"error": f"prepare: {one_line(e)}"}


def compile_options(dtype: str, tf32: bool) -> tuple[Row, str]:
    """``compile_model`` keyword arguments for ``dtype`` (and TF32), and how fp16 is reached:
    its ``precision`` argument where it has one, else the O3 pipeline with the project's
    ``convert_fp16`` pass (``passes/precision.py``) before the fusions."""
    from torsh_gen.passes.pipelines import PIPELINES
    from torsh_gen.tools.compile import compile_model

    params = inspect.signature(compile_model).parameters
    kwargs: Row = {"tf32": True} if tf32 and "tf32" in params else {}
    method = "" if not tf32 or "tf32" in params else "compile_model has no tf32 option: ours in float32"
    if dtype == "float16" and "precision" in params:
        return {**kwargs, "precision": "fp16"}, "compile_model(precision='fp16')"
    if dtype == "float16":
        o3 = list(PIPELINES["O3"])
        cut = o3.index("fuse_epilogues")
        return {**kwargs, "passes": o3[:cut] + ["convert_fp16"] + o3[cut:]}, "O3 with the convert_fp16 pass"
    return kwargs, method


# ------------------------------------------------------------------ GPU check and timing
def gpu_row(task: Row, prep: Row, args: argparse.Namespace, cap: float, start: float) -> Row:
    """Check one prepared row against onnxruntime and time it beside PyTorch; never raises."""
    row: Row = {**task, "compile_s": prep.get("compile_s"), "method": prep.get("method", "")}
    if "error" in prep:
        status = "not run" if prep["error"].startswith("not run") else "failed"
        return {**row, "status": status, "message": prep["error"]}
    t0 = time.monotonic()
    say(start, f"{task['key']}: checking (at most {cap:.0f} s)")
    try:
        row.update(_check_and_time(task, prep, args, t0 + cap))
    except Exception as e:
        row.update(status="failed", message=f"gpu: {one_line(e)}")
    finally:  # what this row held goes back before the next one
        import cupy
        import torch

        gc.collect()
        torch.cuda.empty_cache()
        cupy.get_default_memory_pool().free_all_blocks()
    row["gpu_s"] = time.monotonic() - t0
    say(start, f"{task['key']}: {row['status']} {_summary(row)}")
    return row


def _check_and_time(task: Row, prep: Row, args: argparse.Namespace, until: float) -> Row:
    """Ours against the stored onnxruntime outputs, PyTorch's error too, then the timings."""
    import cupy
    import torch

    data = np.load(prep["io"])
    refs = {k[4:]: data[k] for k in data.files if k.startswith("out:")}
    from torsh_gen.tools.artifact import load_artifact

    package = load_artifact(prep["artifact"])
    specs = {s["name"]: s["dtype"] for s in getattr(package, "INPUTS", ())}
    feeds = {k[3:]: data[k].astype(specs.get(k[3:], data[k].dtype)) for k in data.files if k.startswith("in:")}
    art = package.Model(device=0)
    result = compare(art.run(**feeds), refs, task["dtype"], args.tf32)
    if hasattr(type(art), "fused_epilogues"):
        result["lt_fused"], result["lt_declined"] = art.fused_epilogues
    dev = {k: cupy.asarray(v) for k, v in feeds.items()}
    low = task["dtype"] == "float16"
    module = models.torch_module(task["model"]).cuda().eval()
    module = module.half() if low else module
    (x,) = (torch.from_numpy(data[k]).cuda() for k in data.files if k.startswith("in:"))
    x = x.half() if low and x.is_floating_point() else x
    with torch.inference_mode():
        theirs = {next(iter(refs)): module(x).float().cpu().numpy()}  # one output each
        result["torch_max_rel_err"] = compare(theirs, refs, task["dtype"], args.tf32)["max_rel_err"]
        engines = {"ours": lambda: art.run_device(**dev), "eager": lambda: module(x), "graph": torch_graph(module, x)}
        times = time_interleaved(engines, args.repeat, args.block, until, torch.cuda.synchronize)
    replay = {k: cupy.asnumpy(v) for k, v in art.run_device(**dev).items()}  # the recorded graph's result
    after = compare(replay, refs, task["dtype"], args.tf32)
    result["replay_max_rel_err"] = after["max_rel_err"]
    if after["status"] != "ok" and result["status"] == "ok":
        result.update(status="mismatch", message=f"run_device after the timing (graph replay): {after['message']}")
    result.update(times, ours_over_eager=times["ours_ms"] / times["eager_ms"])
    result["ours_over_graph"] = times["ours_ms"] / times["graph_ms"]
    if task["batch"] > 1:
        result["images_per_s"] = {k: task["batch"] * 1000.0 / times[f"{k}_ms"] for k in engines}
    return result


def torch_graph(module: Any, x: Any) -> Callable[[], Any]:
    """Capture ``module(x)`` in a CUDA graph (warmed up on a side stream); its replay."""
    import torch

    static = x.clone()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            module(static)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        module(static)
    return graph.replay


def time_interleaved(engines: dict[str, Callable[[], Any]], repeat: int, block: int, until: float,
                     sync: Callable[[], Any]) -> Row:
    """Median (and min) ms per call of each engine: rounds of one block of ``block`` calls per
    engine in turn, a device sync around each block; no round starts that would pass ``until``."""
    for fn in engines.values():
        for _ in range(WARMUP):
            fn()
    sync()
    samples: dict[str, list[float]] = {k: [] for k in engines}
    for _ in range(repeat):
        r0 = time.monotonic()
        for name, fn in engines.items():
            sync()
            t0 = time.perf_counter()
            for _ in range(block):
                fn()
            sync()
            samples[name].append((time.perf_counter() - t0) * 1000.0 / block)
        if time.monotonic() + (time.monotonic() - r0) > until:
            break
    out: Row = {f"{k}_ms": statistics.median(v) for k, v in samples.items()}
    out.update({f"{k}_min_ms": min(v) for k, v in samples.items()})
    out["rounds"] = min(len(v) for v in samples.values())
    out["truncated"] = out["rounds"] < repeat
    return out


def tolerance(ref_max: float, dtype: str, tf32: bool = False) -> float:
    """The largest max|ours - ref| accepted: 1e-3 x max(1, max|ref|) in float32, 2e-2 x
    max|ref| in fp16 (and with TF32, which keeps fp16's 10 mantissa bits)."""
    if dtype == "float16" or tf32:
        return LOW_REL * ref_max
    return FP32_REL * max(1.0, ref_max)


def compare(ours: Row, refs: dict[str, np.ndarray], dtype: str, tf32: bool = False) -> Row:
    """Max abs and relative (to max|ref|) errors over the outputs; each output within its
    :func:`tolerance`, else a mismatch (NaN or inf count as infinitely far)."""
    worst_abs, ref_max, over = 0.0, 0.0, []
    for name, ref in refs.items():
        if name not in ours:
            raise KeyError(f"output '{name}' is missing (have {', '.join(ours)})")
        a, r = np.asarray(ours[name], dtype=np.float64), ref.astype(np.float64)
        if a.shape != r.shape:
            raise ValueError(f"output '{name}' has shape {a.shape}, onnxruntime gives {r.shape}")
        err = float(np.max(np.abs(a - r))) if a.size else 0.0
        err = err if np.isfinite(err) else float("inf")
        scale = float(np.max(np.abs(r))) if r.size else 0.0
        if not err <= tolerance(scale, dtype, tf32):
            over.append(f"'{name}' max abs err {err:.3g} over {tolerance(scale, dtype, tf32):.3g}")
        worst_abs, ref_max = max(worst_abs, err), max(ref_max, scale)
    rel_err = worst_abs / ref_max if ref_max > 0 else worst_abs
    message = f"mismatch: {'; '.join(over)} (max rel err {rel_err:.3g})" if over else ""
    return {"status": "mismatch" if over else "ok", "max_abs_err": worst_abs, "max_rel_err": rel_err,
            "ref_max": ref_max, "message": message}


def _summary(row: Row) -> str:
    if "ours_ms" not in row:
        return row.get("message", "")
    return (f"err {row['max_rel_err']:.2e}; ours {row['ours_ms']:.3f} ms, eager {row['eager_ms']:.3f}, "
            f"graph {row['graph_ms']:.3f} ({row['rounds']} rounds) {row.get('message', '')}").rstrip()


# ------------------------------------------------------------------------------ reports
def environment(args: argparse.Namespace, argv: list[str]) -> Row:
    """The GPU, driver and library versions, the reference CPU and the reproducing command."""
    import cupy
    import onnxruntime
    import torch

    from torsh_gen.tools.bench import cpu_model

    def version(v: int) -> str:
        return f"{v // 1000}.{v % 1000 // 10}"

    return {
        "gpu": torch.cuda.get_device_name(0), "capability": "sm_{}{}".format(*torch.cuda.get_device_capability(0)),
        "driver": _run_quiet(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]),
        "cuda_driver_api": version(cupy.cuda.runtime.driverGetVersion()), "torch_cuda": torch.version.cuda,
        "cupy_runtime": version(cupy.cuda.runtime.runtimeGetVersion()), "torch": torch.__version__,
        "cupy": cupy.__version__, "onnxruntime": onnxruntime.__version__, "numpy": np.__version__,
        "python": platform.python_version(), "cpu": cpu_model(), "cores": os.cpu_count(),
        "commit": _run_quiet(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"]),
        "source": source_digest(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"), "tf32": args.tf32,
        "cudnn_benchmark": args.cudnn_benchmark, "jobs": args.jobs,
        "command": shlex.join(["python3", "benchmarks/gpu_check.py", *argv]),
    }


def source_digest() -> str:
    """sha256 (12 hex digits) of the compiler's sources and templates as they are on disk:
    what was measured, also where the checkout's git metadata is stale or the tree has
    uncommitted changes (a copied working tree)."""
    import hashlib

    h = hashlib.sha256()
    files = sorted((ROOT / "torsh_gen").rglob("*.py")) + sorted((ROOT / "templates").rglob("*.j2"))
    for path in files:
        h.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:12]


def _run_quiet(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        return out.splitlines()[0] if out else "?"
    except (OSError, subprocess.SubprocessError):
        return "?"


def _num(v: Any, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


HEADER = ("| model | batch | dtype | compile s | max rel err vs ORT | ours ms | PyTorch eager ms | "
          "PyTorch CUDA graph ms | ours/eager | ours/graph |\n|---|---:|---|---:|---:|---:|---:|---:|---:|---:|")


def markdown(rows: list[Row], env: Row) -> str:
    """The results page: header (GPU, versions, command), the table, notes, failures."""
    lines = [
        f"# torsh-gen CUDA target on {env['gpu']}", "",
        f"Written by `{env['command']}` on {env['date']} (git HEAD {env['commit']}, "
        f"sources {env.get('source', '?')}: `source_digest()`); every figure below "
        "was measured by that run.", "",
        f"- GPU: {env['gpu']} ({env['capability']}), driver {env['driver']}, CUDA driver API {env['cuda_driver_api']}",
        f"- PyTorch {env['torch']} (CUDA {env['torch_cuda']}), CuPy {env['cupy']} (runtime {env['cupy_runtime']}), "
        f"numpy {env['numpy']}, Python {env['python']}; TF32 {'on' if env['tf32'] else 'off'}, "
        f"cuDNN benchmark mode {'on' if env.get('cudnn_benchmark') else 'off'}",
        f"- reference: onnxruntime {env['onnxruntime']} on the CPU, {env['cpu']} ({env['cores']} cores), "
        "on the same ONNX file and seeded input",
        "- error: max|ours - ORT| / max|ORT| of `run` (first call); `run_device` after the timing (CUDA graph "
        "replay) is held to the same tolerance: 1e-3 x max(1, max|ORT|) in float32, 2e-2 x max|ORT| in fp16 "
        "or with TF32",
        "- times: median ms per call over rounds of back-to-back calls (a device sync around each block), the "
        "three engines interleaved round by round; ours = `run_device` with CUDA graphs; eager under "
        "`torch.inference_mode()`; CUDA graph = `torch.cuda.CUDAGraph` replay",
        f"- compile s: `compile_model` wall time, in one of {env['jobs']} parallel worker processes",
        f"- cuBLASLt epilogues (bias, residual, ReLU in the GEMM): {env.get('lt', 'not probed')}", "", HEADER,
    ]
    for r in rows:
        err = "-" if r.get("max_rel_err") is None else f"{r['max_rel_err']:.2e}" + ("" if r["status"] == "ok" else " (over)")
        cells = [_num(r.get(k)) for k in ("ours_ms", "eager_ms", "graph_ms")]
        cells += [_num(r.get(k), 2) for k in ("ours_over_eager", "ours_over_graph")]
        lines.append(f"| {r['model']} | {r['batch']} | {r['dtype']} | {_num(r.get('compile_s'), 1)} | {err} | "
                     + " | ".join(cells) + " |")
    lines.append("")
    for r in rows:
        if r.get("images_per_s"):
            rates = ", ".join(f"{k} {v:,.0f} images/s" for k, v in r["images_per_s"].items())
            lines.append(f"- throughput, {r['model']} batch {r['batch']} {r['dtype']}: {rates}")
        if r.get("truncated"):
            lines.append(f"- {r['key']}: {r['rounds']} of the requested rounds (time budget)")
        if r.get("method"):
            lines.append(f"- {r['key']}: " + (f"fp16 by {r['method']}" if r["dtype"] == "float16" else r["method"]))
        if r.get("lt_fused") or r.get("lt_declined"):
            declined = r.get("lt_declined") or []
            lines.append(f"- {r['key']}: {r['lt_fused']} GEMMs with cuBLASLt epilogues"
                         + (f"; {len(declined)} offered ones declined ({declined[0]})" if declined else ""))
    lines += ["", "## Failures", ""]
    for r in (r for r in rows if r["status"] != "ok"):
        theirs = r.get("torch_max_rel_err") if r["status"] == "mismatch" else None
        lines.append(f"- {r['key']}: {r.get('message') or r['status']}"
                     + ("" if theirs is None else f" (PyTorch on the GPU: {theirs:.2e})"))
    lines += [] if any(r["status"] != "ok" for r in rows) else ["none"]
    return "\n".join(lines) + "\n"


def write_reports(rows: list[Row], env: Row, args: argparse.Namespace, tasks: list[Row] | None = None) -> None:
    """Write the markdown (and JSON) atomically; rows of ``tasks`` not done yet show as not run."""
    done = {r["key"] for r in rows}
    rows = rows + [{**t, "status": "not run", "message": "not run (time budget)"}
                   for t in tasks or () if t["key"] not in done]
    with _write_lock:
        _write_atomic(args.out, markdown(rows, env))
        if args.json:
            payload = {"environment": env, "ok": all(r["status"] == "ok" for r in rows), "rows": rows}
            _write_atomic(args.json, json.dumps(payload, indent=2, default=str) + "\n")


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def _watchdog(args: argparse.Namespace, env: Row, tasks: list[Row], rows: list[Row], start: float) -> None:
    """After the budget and some grace (a hung call), write what there is and exit 1."""
    def fire() -> None:
        say(start, "watchdog: over the time budget; writing the results so far and exiting")
        write_reports(list(rows), env, args, tasks)
        os._exit(1)

    timer = threading.Timer(args.budget_s + WATCHDOG_GRACE_S, fire)
    timer.daemon = True
    timer.start()


if __name__ == "__main__":
    sys.exit(main())
