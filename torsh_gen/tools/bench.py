"""``torsh-gen bench``: latency, throughput and peak memory of our artifact beside other engines.

Method (also in docs/commands.md and benchmarks/NOTES.md):

- Every engine (``torsh-gen``, ``onnxruntime``, ``torch``) runs in its own worker process,
  started with ``OMP_NUM_THREADS``, ``OPENBLAS_NUM_THREADS``, ``MKL_NUM_THREADS`` and
  ``NUMBA_NUM_THREADS`` set to the thread count in its environment, so the limits hold
  from the first import (setting them later in a process that already loaded numpy has no
  effect on OpenBLAS). onnxruntime gets ``intra_op_num_threads`` = threads and one inter-op
  thread; PyTorch ``torch.set_num_threads(threads)`` and one inter-op thread.
- Each worker loads its engine, runs ``warmup`` untimed calls (the first is timed apart as
  ``first_run_ms``: it includes lazy compilation), then the coordinator asks the workers in
  turn for blocks of timed calls, A B A B ..., so slow drift of the machine (frequency,
  other load) hits every engine alike. Before each block the coordinator pauses
  (``settle_s``) so the previous engine's idle threads stop spin-waiting. Each block then
  makes untimed calls for ``rewarm_s`` (at least one): the pause let the engine's own
  threads fall asleep and the other engine used the caches, and on a virtual machine a
  sleeping thread can take a millisecond to run again, so without them a block of a fast
  model times the wake-up, not the engine. The garbage collector is off while timing.
- Peak memory is the worker's resident-set high-water mark, ``VmHWM`` in
  ``/proc/self/status`` (``peak_rss_mb``, the whole process), and ``model_rss_mb``, its
  growth from the resident set just before the model was loaded (after the engine's
  library was imported) to that peak: weights, buffers and arenas. ``getrusage``'s
  ``ru_maxrss`` is not used on Linux: it survives ``exec``, so a worker would report its
  parent's peak. (Where /proc is missing, ``ru_maxrss`` is the fallback.)
"""

from __future__ import annotations

import datetime
import gc
import inspect
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from torsh_gen import __version__
from torsh_gen.errors import InputError, TorshGenError

ENGINES = ("torsh-gen", "onnxruntime", "torch", "x86_64-linux", "tvm")
#: Engines that are artifacts we compile for the run: engine → (target, backend). The
#: ``torsh-gen`` engine is the artifact given (``--artifact``) or the cpu target's.
COMPILED_ENGINES = {"x86_64-linux": ("x86_64-linux", "torsh"), "tvm": ("cpu", "tvm")}
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "TVM_NUM_THREADS")
#: (done, total, label): the coordinator reports progress through this (total 0: not known yet).
Progress = Callable[[int, int, str], None]


@dataclass(frozen=True)
class TorchFactory:
    """Where a worker finds the PyTorch module: ``function(*args)`` in the Python file ``path``.

    The function must return an ``nn.Module`` whose ``forward`` takes the model's inputs
    positionally, in the ONNX model's input order, with the same weights as the ONNX file.
    """

    path: str
    function: str
    args: tuple[str, ...] = ()

    @classmethod
    def parse(cls, spec: str) -> TorchFactory:
        """``"models.py:build"`` or ``"models.py:build:arg1:arg2"`` → a factory."""
        path, _, rest = spec.partition(":")
        function, *args = rest.split(":") if rest else [""]
        if not path.endswith(".py") or not function.isidentifier():
            raise InputError(f"--torch-module '{spec}': expected FILE.py:FUNCTION[:ARG...]")
        if not Path(path).is_file():
            raise InputError(f"--torch-module '{spec}': no such file {path}")
        return cls(str(Path(path).resolve()), function, tuple(args))


#: CPU flags worth recording beside the model name (names as /proc/cpuinfo spells them).
NOTABLE_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "asimd", "sve")


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (else what ``platform`` knows)."""
    return _cpuinfo().get("model name") or platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    """The notable SIMD flags of this CPU (empty where /proc/cpuinfo is missing)."""
    info = _cpuinfo()
    flags = set((info.get("flags") or info.get("Features") or "").split())
    return [f for f in NOTABLE_FLAGS if f in flags]


def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo."""
    fields: dict[str, str] = {}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return fields
    for line in text.splitlines():
        if not line.strip() and fields:
            break
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip(), value.strip())
    return fields


def machine_info(engines: Sequence[str]) -> dict[str, Any]:
    """CPU, core count and the versions of everything that was measured."""
    import numba
    import onnxruntime

    versions = {"torsh-gen": __version__, "python": platform.python_version(), "numpy": np.__version__, "numba": numba.__version__, "onnxruntime": onnxruntime.__version__}
    if "torch" in engines:
        import torch

        versions["torch"] = torch.__version__
    return {"cpu": cpu_model(), "cpu_flags": cpu_flags(), "cores": os.cpu_count(), "platform": platform.platform(), "versions": versions}


def latency_stats(times_ns: Sequence[int]) -> dict[str, float]:
    """Median, p90, p99, mean, min (ms) and throughput (inferences per second)."""
    ms = np.asarray(times_ns, dtype=np.float64) / 1e6
    mean = float(ms.mean())
    return {
        "median_ms": float(np.median(ms)),
        "p90_ms": float(np.percentile(ms, 90)),
        "p99_ms": float(np.percentile(ms, 99)),
        "mean_ms": mean,
        "min_ms": float(ms.min()),
        "throughput_per_s": 1000.0 / mean if mean > 0 else math.inf,
        "samples": int(ms.size),
    }


def bench_model(
    model: str | os.PathLike,
    *,
    engines: Sequence[str] = ("torsh-gen", "onnxruntime"),
    artifact_dir: str | os.PathLike | None = None,
    threads: int = 2,
    warmup: int = 10,
    repeat: int = 100,
    blocks: int = 5,
    inputs: str | os.PathLike | None = None,
    bindings: Mapping[str, Any] | None = None,
    input_shapes: Sequence[str] | None = None,
    seed: int = 0,
    torch_factory: TorchFactory | None = None,
    settle_s: float = 0.1,
    rewarm_s: float = 0.005,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Benchmark ``model`` on each engine in ``engines`` (see the module docstring).

    Without ``artifact_dir`` the model is compiled into a temporary folder first
    (``compile_s`` in the result). ``settle_s`` is the pause before each block, ``rewarm_s``
    how long each block calls untimed after it.
    """
    from torsh_gen.tools.loading import load_model
    from torsh_gen.tools.run import check_inputs, load_inputs, model_inputs, random_inputs

    engines = _check_engines(engines, threads, warmup, repeat, blocks, torch_factory)
    graph = load_model(model, input_shapes)
    feeds = check_inputs(graph, load_inputs(inputs) if inputs else random_inputs(graph, bindings, seed))
    order = [v.name for v in model_inputs(graph) if v.name in feeds]
    if progress and "torsh-gen" in engines and artifact_dir is None:
        progress(0, 0, "compiling")
    t0 = time.perf_counter()
    folder = _artifact_folder(model, artifact_dir, input_shapes) if "torsh-gen" in engines else None
    compile_s = time.perf_counter() - t0 if folder is not None and artifact_dir is None else None
    compiled = {e: _compiled_engine(model, e, feeds, order, progress) for e in engines if e in COMPILED_ENGINES}
    load_before = _load_average()
    with tempfile.TemporaryDirectory(prefix="torsh-gen-bench-") as tmp:
        feeds_path = Path(tmp) / "inputs.npz"
        np.savez(feeds_path, **{f"i{k}": feeds[name] for k, name in enumerate(order)})
        base = {"model": str(Path(model).resolve()), "inputs": str(feeds_path), "names": order, "threads": threads, "warmup": warmup, "rewarm_s": rewarm_s, "input_shapes": list(input_shapes or [])}
        artifacts = {"torsh-gen": str(folder) if folder else None, **{e: str(f) for e, f in compiled.items()}}
        specs = {e: {**base, "engine": e, "artifact": artifacts.get(e), "torch": _factory_dict(torch_factory)} for e in engines}
        results = _measure(specs, repeat, blocks, settle_s, progress)
    for stats in results.values():
        ref = results.get("onnxruntime")
        stats["ratio_vs_onnxruntime"] = stats["median_ms"] / ref["median_ms"] if ref else None
    ratio = results["torsh-gen"]["ratio_vs_onnxruntime"] if "torsh-gen" in results else None
    return {
        "model": str(model),
        "artifact": str(folder) if folder else None,
        "compile_s": compile_s,
        "threads": threads,
        "warmup": warmup,
        "repeat": repeat,
        "blocks": blocks,
        "settle_s": settle_s,
        "rewarm_s": rewarm_s,
        "inputs": {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in feeds.items()},
        "engines": results,
        "ratio": ratio,
        "machine": machine_info(engines),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "memory": "peak resident set (VmHWM) of each engine's worker process",
        "load_average": {"before": load_before, "after": _load_average()},
    }


def _load_average() -> float | None:
    """The 1-minute load average: other work on the machine shows up here (None if unknown)."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def _check_engines(engines: Sequence[str], threads: int, warmup: int, repeat: int, blocks: int, factory: TorchFactory | None) -> list[str]:
    chosen = list(dict.fromkeys(e.strip() for e in engines if e.strip()))
    unknown = [e for e in chosen if e not in ENGINES]
    if unknown or not chosen:
        raise InputError(f"unknown engine(s) {unknown}; choose from {', '.join(ENGINES)}")
    if threads < 1 or warmup < 1 or repeat < 1 or blocks < 1:
        raise InputError("--threads, --warmup, --repeat and the block count must be at least 1")
    if "torch" in chosen:
        import importlib.util

        if importlib.util.find_spec("torch") is None:
            raise InputError("PyTorch is not installed; install the extra (pip install 'torsh-gen[torch]') or drop torch from --compare")
        if factory is None:
            raise InputError("an ONNX file has no PyTorch module to compare with; pass --torch-module FILE.py:FUNCTION or drop torch from --compare")
    return chosen


def _artifact_folder(model: str | os.PathLike, artifact_dir: str | os.PathLike | None, input_shapes: Sequence[str] | None = None) -> Path:
    from torsh_gen.tools.artifact import ArtifactError, compile_to_temp, is_artifact

    if artifact_dir is None:
        return compile_to_temp(model, input_shapes=input_shapes)
    if not is_artifact(artifact_dir):
        raise ArtifactError(f"{artifact_dir}: not a torsh-gen artifact; compile one with `torsh-gen compile MODEL -o DIR`")
    return Path(artifact_dir).resolve()


def _compiled_engine(model: str | os.PathLike, engine: str, feeds: dict[str, np.ndarray], order: list[str], progress: Progress | None) -> Path:
    """Compile ``model`` for a compiled engine (our x86_64 library, the TVM build) into a
    temporary folder, its inputs bound to the benchmark's shapes (native targets need
    static shapes)."""
    from torsh_gen.tools.artifact import compile_to_temp

    if progress:
        progress(0, 0, f"compiling for {engine}")
    target, backend = COMPILED_ENGINES[engine]
    shapes = [f"{name}={'x'.join(map(str, feeds[name].shape))}" for name in order if feeds[name].ndim]
    return compile_to_temp(model, input_shapes=shapes, target=target, backend=backend)


def _factory_dict(factory: TorchFactory | None) -> dict[str, Any] | None:
    return None if factory is None else {"path": factory.path, "function": factory.function, "args": list(factory.args)}


# ----------------------------------------------------------------------- coordinator
class _Worker:
    """One engine in its own process, driven by JSON lines over its stdin/stdout."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.engine = spec["engine"]
        env = dict(os.environ, **{k: str(spec["threads"]) for k in THREAD_VARIABLES})
        self.log = tempfile.TemporaryFile("w+")  # a file, not a pipe: a chatty engine never blocks
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "torsh_gen.tools.bench", "--worker"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, env=env, text=True,
        )
        self.ready = self.ask(spec)

    def ask(self, message: dict[str, Any]) -> dict[str, Any]:
        """Send one request and wait for its answer; TorshGenError when the worker failed."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        try:
            self.proc.stdin.write(json.dumps(message) + "\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
        except BrokenPipeError:
            line = ""
        answer = json.loads(line) if line.strip() else {"error": self._stderr_tail()}
        if "error" in answer:
            self.close()
            raise TorshGenError(f"{self.engine}: {answer['error']}")
        return answer

    def _stderr_tail(self) -> str:
        self.proc.kill()
        self.proc.wait()
        self.log.seek(0)
        lines = [ln for ln in self.log.read().splitlines() if ln.strip()]
        return lines[-1] if lines else f"worker exited with code {self.proc.wait()}"

    def close(self) -> None:
        """Stop the worker process."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout, self.log):
            if stream:
                stream.close()


def _measure(specs: dict[str, dict[str, Any]], repeat: int, blocks: int, settle_s: float, progress: Progress | None) -> dict[str, dict[str, Any]]:
    """Start one worker per engine, time them in alternating blocks, gather statistics."""
    per_block = max(1, math.ceil(repeat / blocks))
    total = per_block * blocks * len(specs)
    workers: dict[str, _Worker] = {}
    times: dict[str, list[int]] = {e: [] for e in specs}
    try:
        for engine, spec in specs.items():
            if progress:
                progress(0, total, f"loading {engine}")
            workers[engine] = _Worker(spec)
        done = 0
        for _ in range(blocks):
            for engine, w in workers.items():
                time.sleep(settle_s)  # the last engine's idle threads stop spinning meanwhile
                times[engine] += w.ask({"run": per_block})["times_ns"]
                done += per_block
                if progress:
                    progress(done, total, engine)
        final = {e: w.ask({"done": True}) for e, w in workers.items()}
    finally:
        for w in workers.values():
            w.close()
    results = {}
    for engine, w in workers.items():
        peak, before = final[engine]["peak_rss_kb"], w.ready["rss_before_kb"]
        results[engine] = {
            **latency_stats(times[engine]),
            "first_run_ms": w.ready["first_ms"],
            "load_s": w.ready["load_s"],
            "peak_rss_mb": peak / 1024,
            "model_rss_mb": max(peak - before, 0) / 1024,
        }
    return results


# ---------------------------------------------------------------------------- worker
def _load_engine(spec: dict[str, Any], feeds: dict[str, np.ndarray]) -> Callable[[], Any]:
    """The engine's library imported, its model loaded: a no-argument call that runs it once."""
    engine, threads = spec["engine"], spec["threads"]
    if engine == "onnxruntime":
        import onnxruntime as ort

        source = _onnx_source(spec["model"], spec.get("input_shapes"))
        _mark_rss(spec)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.log_severity_level = 3
        sess = ort.InferenceSession(source, opts, providers=["CPUExecutionProvider"])
        return lambda: sess.run(None, feeds)
    if engine == "torch":
        import torch

        torch.set_num_threads(threads)
        torch.set_num_interop_threads(1)
        _mark_rss(spec)
        module = _torch_module(spec["torch"]).eval()
        args = [torch.from_numpy(feeds[n]) for n in spec["names"]]

        def call() -> Any:
            with torch.inference_mode():
                return module(*args)

        return call
    import numba  # noqa: F401  (imported before the mark, as the other engines' libraries are)

    from torsh_gen.tools.artifact import load_artifact

    _mark_rss(spec)
    artifact = load_artifact(spec["artifact"])
    runner = artifact
    if hasattr(artifact, "Model"):  # a native library takes its thread count at load
        takes_threads = "threads" in inspect.signature(artifact.Model).parameters
        runner = artifact.Model(threads=threads) if takes_threads else artifact.Model()
    return lambda: runner.run(**feeds)


def _onnx_source(model: str, input_shapes: Sequence[str] | None = None) -> str | bytes:
    if model.lower().endswith(".onnx"):
        return model
    from torsh_gen.frontends.onnx import to_onnx
    from torsh_gen.tools.loading import load_model

    return to_onnx(load_model(model, input_shapes)).SerializeToString()


def _torch_module(factory: dict[str, Any]) -> Any:
    import importlib.util

    path = Path(factory["path"])
    sys.path.insert(0, str(path.parent))
    name = f"_torsh_bench_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise InputError(f"cannot import {path}")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses and pickling look the module up by name
    spec.loader.exec_module(mod)
    return getattr(mod, factory["function"])(*factory["args"])


def _mark_rss(spec: dict[str, Any]) -> None:
    spec["rss_before_kb"] = _memory_kb("VmRSS")


def _memory_kb(field: str) -> int:
    """``VmRSS`` or ``VmHWM`` of this process in KiB (ru_maxrss where /proc is missing)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _rewarm(call: Callable[[], Any], seconds: float) -> None:
    """Untimed calls for at least ``seconds``, and at least one."""
    end = time.perf_counter() + seconds
    call()
    while time.perf_counter() < end:
        call()


def _timed(call: Callable[[], Any], n: int) -> list[int]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        call()
        out.append(time.perf_counter_ns() - t0)
    return out


def worker_main() -> None:
    """Serve one engine: load it, answer ``{"run": k}`` with k timed calls after ``rewarm_s``
    of untimed ones."""
    proto = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # whatever the engines print goes to stderr, never into the protocol
    spec = json.loads(sys.stdin.readline())
    try:
        with np.load(spec["inputs"]) as z:
            feeds = {name: z[f"i{k}"] for k, name in enumerate(spec["names"])}
        t0 = time.perf_counter()
        call = _load_engine(spec, feeds)
        load_s = time.perf_counter() - t0
        first = _timed(call, 1)[0]
        _timed(call, spec["warmup"] - 1)
        ready = {"rss_before_kb": spec["rss_before_kb"], "load_s": load_s, "first_ms": first / 1e6}
    except Exception as e:  # reported to the coordinator as one line
        ready = {"error": f"{type(e).__name__}: {e}"}
    _send(proto, ready)
    if "error" in ready:
        return
    gc.disable()
    for line in sys.stdin:
        request = json.loads(line)
        if "run" not in request:
            _send(proto, {"peak_rss_kb": _memory_kb("VmHWM")})
            return
        try:
            _rewarm(call, float(spec.get("rewarm_s", 0.0)))
            _send(proto, {"times_ns": _timed(call, int(request["run"]))})
        except Exception as e:
            _send(proto, {"error": f"{type(e).__name__}: {e}"})
            return


def _send(proto: Any, message: dict[str, Any]) -> None:
    proto.write(json.dumps(message) + "\n")
    proto.flush()


if __name__ == "__main__" and sys.argv[1:] == ["--worker"]:
    worker_main()
