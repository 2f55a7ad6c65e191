"""The TVM backend on the CPU against onnxruntime: each benchmark model converted by our
own converter (``optimized_graph(..., backend="tvm")``), built by TVM for this CPU
(``TvmSession``: channels-last, our default schedules, optionally a MetaSchedule database)
and timed side by side with onnxruntime in one process, both on ``--threads`` threads.

    .venv/bin/python benchmarks/tvm_cpu.py [--models a,b] [--repeat 20] [--blocks 5]
        [--baseline] [--tune N --tune-dir DIR] [--out benchmarks/tvm_cpu]

The two engines run in alternating blocks (``--blocks`` blocks of ``--repeat`` runs each,
after a warm-up) and each reports the median of all its runs, so a neighbour's load on a
shared machine hits both alike: the ratio (TVM / onnxruntime) is the figure to compare,
absolute times drift with the host. onnxruntime's thread pool does not spin between runs,
so it does not steal the cores TVM's threads need (and TVM's pool does not spin either:
TVM_THREAD_POOL_SPIN_COUNT=0). Every timed model's outputs are checked against
onnxruntime's first. ``--baseline`` also times TVM's default pipeline without our
schedules (scalar, one thread: slow, so fewer runs). ``--tune N`` tunes each model with
MetaSchedule (N trials in all) into ``--tune-dir``/MODEL first and times that build too.

Writes OUT.md and OUT.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
MODELS = (
    "light_resnet50",
    "light_squeezenet",
    "light_densenet121",
    "light_inception_v1",
    "mobilenetv2",
    "resnet18",
    "bert_encoder",
    "mlp",
)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", help=f"comma-separated subset of: {', '.join(MODELS)}")
    p.add_argument("--model-dir", type=Path, default=HERE.parent / "build" / "bench-models")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeat", type=int, default=10, help="runs per block")
    p.add_argument("--blocks", type=int, default=5)
    p.add_argument(
        "--baseline", action="store_true", help="also time TVM's default pipeline (unscheduled)"
    )
    p.add_argument(
        "--tune", type=int, default=0, metavar="N", help="MetaSchedule trials per model (0: none)"
    )
    p.add_argument("--tune-dir", type=Path, default=HERE.parent / "build" / "tvm-tune")
    p.add_argument("--out", type=Path, default=HERE / "tvm_cpu")
    args = p.parse_args(argv)
    # Before TVM starts its thread pool.
    os.environ["TVM_NUM_THREADS"] = str(args.threads)
    os.environ.setdefault("TVM_THREAD_POOL_SPIN_COUNT", "0")
    names = args.models.split(",") if args.models else list(MODELS)
    rows = []
    for name in names:
        path = args.model_dir / f"{name}.onnx"
        try:
            rows.append(measure(name, path, args))
        except Exception as exc:  # noqa: BLE001 - one model's failure is a row, not the end
            rows.append(
                {"model": name, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"}
            )
        print(json.dumps(rows[-1]), flush=True)
    write(rows, args)
    return 0


def measure(name: str, path: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Build one model every way asked for, check it, time it against onnxruntime."""
    from torsh_gen.tools.compile import optimized_graph

    graph = optimized_graph(str(path), "cpu", "O3", backend="tvm")
    ort = _ort_session(path, args.threads)
    feeds = _feeds(ort)
    want = ort.run(None, feeds)
    row: dict[str, Any] = {"model": name}
    engines: dict[str, Any] = {}
    t0 = time.perf_counter()
    engines["tvm"] = _tvm_runner(graph, feeds, want, row, "tvm")
    row["build_s"] = time.perf_counter() - t0
    if args.tune:
        work = args.tune_dir / name
        row["tune"] = _tune(graph, args.tune, work)
        engines["tvm_tuned"] = _tvm_runner(graph, feeds, want, row, "tvm_tuned", tune_dir=str(work))
    engines["ort"] = lambda: ort.run(None, feeds)
    times = _interleaved(engines, args.warmup, args.repeat, args.blocks)
    if args.baseline:
        base = _tvm_runner(graph, feeds, want, row, "tvm_default", schedule=False)
        times.update(
            _interleaved({"tvm_default": base, "ort": engines["ort"]}, 1, 2, 2, keep="tvm_default")
        )
    ort_ms = times["ort"]
    row["ort_ms"] = ort_ms
    for key, ms in times.items():
        if key != "ort":
            row[f"{key}_ms"] = ms
            row[f"{key}_ratio"] = ms / ort_ms
    return row


def _tvm_runner(
    graph: Any,
    feeds: dict[str, Any],
    want: list[Any],
    row: dict[str, Any],
    key: str,
    **build_kw: Any,
) -> Any:
    """A TvmSession for ``graph`` built with ``build_kw``; records its largest deviation
    from onnxruntime's outputs in ``row`` (relative to each output's scale) and returns a
    zero-argument function running it on ``feeds`` (inputs converted once, as a serving
    loop would)."""
    import numpy as np
    import tvm

    sess = _session(graph, **build_kw)
    got = list(sess.run(feeds).values())
    err = 0.0
    for g, w in zip(got, want):
        w = np.asarray(w)
        if g.shape != w.shape:
            raise AssertionError(f"{key}: output shape {g.shape} != onnxruntime's {w.shape}")
        if w.dtype.kind in "fc":
            scale = max(float(np.max(np.abs(w))), 1e-6) if w.size else 1.0
            err = max(
                err, float(np.max(np.abs(g.astype(np.float64) - w))) / scale if w.size else 0.0
            )
        elif not np.array_equal(g, w):
            raise AssertionError(f"{key}: integer output differs from onnxruntime's")
    row[f"{key}_max_rel_err"] = err
    if err > 1e-3:
        raise AssertionError(
            f"{key}: outputs differ from onnxruntime's by {err:.2e} of their scale"
        )
    args = [tvm.runtime.tensor(np.ascontiguousarray(feeds[n])) for n in sess.input_names]
    main = sess.vm["main"]
    params = sess.params
    return lambda: main(*args, *params)


def _session(graph: Any, **build_kw: Any) -> Any:
    """A TvmSession whose build takes ``build_kw`` (schedule=False, tune_dir=...)."""
    from torsh_gen.backends.tvm import build as tvm_build
    from torsh_gen.backends.tvm import session as tvm_session

    if not build_kw:
        return tvm_session.TvmSession(graph, "cpu")
    original = tvm_session.build
    tvm_session.build = lambda mod, target: tvm_build.build(mod, target, **build_kw)
    try:
        return tvm_session.TvmSession(graph, "cpu")
    finally:
        tvm_session.build = original


def _tune(graph: Any, trials: int, work: Path) -> dict[str, Any]:
    from torsh_gen.backends.tvm.convert import to_relax
    from torsh_gen.backends.tvm.tune import tune

    report = tune(
        to_relax(graph).mod,
        "cpu",
        trials,
        str(work),
        progress=lambda m: print(m, file=sys.stderr, flush=True),
    )
    return {
        "tasks": report.tasks,
        "trials": report.trials,
        "seconds": report.seconds,
        "work_dir": str(work),
    }


def _ort_session(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _feeds(sess: Any) -> dict[str, Any]:
    """Seeded inputs for every graph input (symbolic dims as 1; integer inputs small)."""
    import numpy as np

    rng = np.random.default_rng(0)
    feeds = {}
    for inp in sess.get_inputs():
        shape = [d if isinstance(d, int) else 1 for d in inp.shape]
        if "float" in inp.type:
            feeds[inp.name] = rng.standard_normal(shape).astype(np.float32)
        elif "int64" in inp.type:
            feeds[inp.name] = rng.integers(0, 2, shape).astype(np.int64)
        else:
            feeds[inp.name] = rng.integers(0, 2, shape).astype(np.int32)
    return feeds


def _interleaved(
    engines: dict[str, Any], warmup: int, repeat: int, blocks: int, keep: str | None = None
) -> dict[str, float]:
    """Median ms per engine over ``blocks`` alternating blocks of ``repeat`` runs."""
    runs: dict[str, list[float]] = {k: [] for k in engines}
    for fn in engines.values():
        for _ in range(warmup):
            fn()
    for _ in range(blocks):
        for key, fn in engines.items():
            for _ in range(repeat):
                t = time.perf_counter()
                fn()
                runs[key].append(time.perf_counter() - t)
    got = {k: statistics.median(v) * 1e3 for k, v in runs.items()}
    return {keep: got[keep]} if keep else got


def write(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    from torsh_gen.tools.bench import cpu_flags, cpu_model

    meta = {
        "cpu": cpu_model(),
        "cpu_flags": cpu_flags(),
        "threads": args.threads,
        "batch": 1,
        "repeat": args.repeat,
        "blocks": args.blocks,
        "tune_trials": args.tune,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    args.out.with_suffix(".json").write_text(
        json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n"
    )
    args.out.with_suffix(".md").write_text(table(rows, meta) + "\n")


def table(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    """Markdown: per model, ms and ratio to onnxruntime for each TVM build timed."""
    keys = [k for k in ("tvm_default", "tvm", "tvm_tuned") if any(f"{k}_ms" in r for r in rows)]
    label = {
        "tvm_default": "TVM default pipeline",
        "tvm": "TVM + our schedules",
        "tvm_tuned": "TVM tuned",
    }
    lines = [
        f"# TVM backend on the CPU vs onnxruntime ({meta['cpu']}, {meta['threads']} threads, batch 1, float32)",
        "",
        f"{meta['date']}; median of {meta['blocks']} alternating blocks x {meta['repeat']} runs; "
        "ratio = TVM / onnxruntime (lower is better). Outputs checked against onnxruntime.",
        "",
        "| model | onnxruntime ms | "
        + " | ".join(f"{label[k]} ms (ratio)" for k in keys)
        + " | build s |",
        "|---|---|" + "---|" * len(keys) + "---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['error']} |" + " |" * (len(keys) + 1))
            continue
        cells = [
            f"{r[f'{k}_ms']:.2f} ({r[f'{k}_ratio']:.2f}x)" if f"{k}_ms" in r else "-" for k in keys
        ]
        lines.append(
            f"| {r['model']} | {r['ort_ms']:.2f} | "
            + " | ".join(cells)
            + f" | {r['build_s']:.0f} |"
        )
    for k in keys:
        ratios = [r[f"{k}_ratio"] for r in rows if f"{k}_ratio" in r]
        if ratios:
            geo = math.exp(sum(math.log(x) for x in ratios) / len(ratios))
            lines.append(
                f"\nGeometric mean ratio, {label[k]}: {geo:.2f}x over {len(ratios)} models."
            )
    tuned = [r for r in rows if "tune" in r]
    for r in tuned:
        t = r["tune"]
        lines.append(
            f"\n{r['model']}: tuned {t['trials']} trials over {t['tasks']} functions in {t['seconds']:.0f} s."
        )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
