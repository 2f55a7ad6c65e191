"""MetaSchedule tuning of the TIR functions of a CPU build (``--tune N``, ``--tune-dir DIR``).

``tune`` runs MetaSchedule over the functions the CPU build will compile, as the build
sees them (channels-last, weights lifted, legalized and fused: ``build.cpu_prepare`` and
TVM's legalization passes), and keeps the best schedule found for each function in
``work_dir/tuning.json``: the function's structural hash and the schedule's trace (TVM's
own JSON form of a trace), with its measured time. ``build(..., tune_dir=work_dir)``
replays those traces (``apply_database``) and gives every function without a record our
default schedule. A later ``tune`` into the same directory merges its records, keeping the
faster schedule per function, so rebuilds and further tuning reuse earlier work.

Why not MetaSchedule's own JSON database and builder: in apache-tvm 0.27.0.post1
serializing any TIR module (``tvm.ir.save_json``, which both the JSON database and the
process-pool builder's pickling use) segfaults. Traces serialize fine, so we store
traces keyed by structural hash, keep candidates in a MemoryDatabase during the search, and
build candidates in this process (``_InProcessBuilder``); the runner still measures them
in a worker process (it gets a file path and argument shapes, no TIR).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from torsh_gen.errors import InputError

#: Our record of the best schedules, in the work directory.
DATABASE_FILE = "tuning.json"


@dataclass
class TuneReport:
    """What one ``tune`` call did."""

    tasks: int
    trials: int
    seconds: float
    work_dir: str


def tune(
    mod: Any,
    target: Any,
    trials: int,
    work_dir: str,
    progress: Callable[[str], None] | None = None,
    max_trials_per_task: int | None = None,
) -> TuneReport:
    """Tune the TIR functions of Relax module ``mod`` (as ``to_relax`` gives it) for
    ``target`` (a ``tvm.target.Target`` or our target name, e.g. ``"cpu"``) with at most
    ``trials`` measured candidates in all, recording the best schedules in ``work_dir``.

    ``max_trials_per_task`` defaults to an even share of ``trials`` (at least 8), so a
    small budget is spread over every function instead of spent on the first ones.
    ``progress`` receives one line per measured batch."""
    from tvm.s_tir import meta_schedule as ms

    from torsh_gen.backends.tvm.build import require_tvm, tvm_target

    require_tvm()
    problem = serialization_problem()
    if problem:
        raise InputError(problem)
    if isinstance(target, str):
        target = tvm_target(target)
    say = progress or (lambda _msg: None)
    os.makedirs(work_dir, exist_ok=True)
    fused = tuning_module(mod, target)
    tasks = ms.relax_integration.extract_tasks(fused, target)
    if not tasks or trials <= 0:
        return TuneReport(len(tasks), 0, 0.0, work_dir)
    per_task = max_trials_per_task or max(8, -(-trials // len(tasks)))
    say(f"tuning {len(tasks)} functions, {trials} trials ({per_task} at most each) into {work_dir}")
    counter = _progress_callback(say, trials)
    database = ms.database.MemoryDatabase()
    start = time.perf_counter()
    with _quiet_console():
        ms.relax_integration.tune_relax(
            mod=fused,
            params={},
            target=target,
            work_dir=work_dir,
            max_trials_global=trials,
            max_trials_per_task=per_task,
            num_trials_per_iter=min(64, per_task),
            builder=_in_process_builder(),
            database=database,
            measure_callbacks=[*ms.measure_callback.MeasureCallback.create("default"), counter],
            cost_model=_cost_model(),
        )
    seconds = time.perf_counter() - start
    kept = _save_records(database, work_dir)
    say(f"tuned in {seconds:.0f} s; {kept} functions have a tuned schedule in {work_dir}")
    return TuneReport(len(tasks), counter.measured, seconds, work_dir)


@contextlib.contextmanager
def _quiet_console() -> Iterator[None]:
    """Keep MetaSchedule's INFO lines off the console while it tunes.

    MetaSchedule gives its global logger a console handler at the logger's own level
    (DEBUG when unset), so every search round prints to stdout, interleaved with our
    progress bar. At ERROR the console stays quiet (and so does the warning it prints
    about that level); each task's own log file under ``work_dir/logs`` keeps the detail.
    """
    logger = logging.getLogger("tvm.s_tir.meta_schedule")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _workload_hash(mod: Any) -> str:
    import tvm_ffi

    return str(tvm_ffi.structural_hash(mod))


def _func_hash(func: Any) -> str:
    """Structural hash of a PrimFunc without its symbol name (tasks may add one)."""
    import tvm_ffi

    if func.attrs is not None and "global_symbol" in func.attrs:
        func = func.without_attr("global_symbol")
    return str(tvm_ffi.structural_hash(func))


def _to_python(x: Any) -> Any:
    """A trace's JSON form (TVM containers) as plain Python lists, dicts and scalars."""
    if x is None or isinstance(x, (bool, int, float, str)):
        return x
    if hasattr(x, "items"):
        return {str(k): _to_python(v) for k, v in x.items()}
    if hasattr(x, "value"):
        return x.value
    return [_to_python(e) for e in x]


def _load_records(work_dir: str) -> dict[str, Any]:
    path = os.path.join(work_dir, DATABASE_FILE)
    if not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as f:
        return dict(json.load(f).get("records", {}))


def _save_records(database: Any, work_dir: str) -> int:
    """Merge the best valid record per workload of ``database`` into ``tuning.json``;
    how many functions the file has a schedule for."""
    records = _load_records(work_dir)
    for rec in database.get_all_tuning_records():
        secs = [float(t) for t in (rec.run_secs or [])]
        if not secs or any(t >= 1e9 for t in secs):  # failed builds/runs are recorded as 1e10
            continue
        key = _workload_hash(rec.workload.mod)
        ms_ = 1e3 * sum(secs) / len(secs)
        if key not in records or ms_ < records[key]["run_ms"]:
            records[key] = {
                "run_ms": ms_,
                "trace": _to_python(rec.trace.as_json(remove_postproc=False)),
            }
    with open(os.path.join(work_dir, DATABASE_FILE), "w", encoding="utf-8") as f:
        json.dump({"version": 1, "records": records}, f)
    return len(records)


def _in_process_builder() -> Any:
    """A MetaSchedule builder compiling candidates in this process (see module docstring)."""
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.builder import BuilderResult, PyBuilder
    from tvm.s_tir.meta_schedule.builder.local_builder import default_build, default_export

    @derived_object
    class InProcessBuilder(PyBuilder):  # type: ignore[misc]
        def build(self, build_inputs: list[Any]) -> list[Any]:
            results = []
            for inp in build_inputs:
                try:
                    results.append(
                        BuilderResult(
                            default_export(default_build(inp.mod, inp.target, None)), None
                        )
                    )
                except Exception as exc:  # noqa: BLE001 - a candidate that fails to build is a result
                    results.append(BuilderResult(None, f"in-process build failed: {exc}"))
            return results

    return InProcessBuilder()


def serialization_problem() -> str | None:
    """Why MetaSchedule cannot run with this TVM, or None. MetaSchedule deep-copies every
    module it tunes through TVM's JSON serializer, which in apache-tvm 0.27.0.post1 with
    apache-tvm-ffi 0.1.15 segfaults on any node carrying a dtype; probed in a child
    process so the crash cannot take this one down."""
    import subprocess
    import sys

    probe = "import tvm; tvm.ir.save_json(tvm.tirx.IntImm('int32', 1))"
    try:
        done = subprocess.run([sys.executable, "-c", probe], capture_output=True, timeout=120)
    except subprocess.TimeoutExpired:
        return "MetaSchedule tuning unavailable: probing TVM's JSON serializer timed out"
    if done.returncode == 0:
        return None
    import tvm

    return (
        f"MetaSchedule tuning is unavailable with this TVM (apache-tvm {tvm.__version__}): its JSON "
        "serializer, which MetaSchedule uses to copy every module it tunes, crashes "
        f"(exit {done.returncode}) on TIR; build without --tune"
    )


def _cost_model() -> str:
    """MetaSchedule's XGBoost cost model where xgboost is installed, else random picks
    among the candidates the evolutionary search proposes (tuning still measures them)."""
    try:
        import xgboost  # noqa: F401
    except ImportError:
        return "random"
    return "xgb"


def tuning_module(mod: Any, target: Any) -> Any:
    """``mod`` as the CPU build has it when it schedules: prepared, legalized, fused."""
    import tvm
    from tvm.relax.backend.cpu_generic import pipeline as cpu

    from torsh_gen.backends.tvm.build import cpu_prepare

    mod = cpu_prepare(mod, target)
    with target:
        return tvm.transform.Sequential(
            cpu.library_dispatch_passes(target) + cpu.legalize_passes(target)
        )(mod)


def apply_database(work_dir: str) -> Any:
    """Module pass replaying, for each TIR function with a record in ``work_dir``, its
    tuned schedule (marked scheduled, so our default rules leave it alone); a no-op for the
    functions without one and when the directory has no records yet."""
    import tvm

    records = _load_records(work_dir)

    @tvm.transform.module_pass(opt_level=0, name="TorshApplyTuning")
    def apply(mod: Any, _ctx: Any) -> Any:
        if not records:
            return mod
        from tvm import s_tir, tirx
        from tvm.s_tir import meta_schedule as ms
        from tvm.s_tir.schedule import Trace

        target = tvm.target.Target.current(allow_none=False)
        # Tasks merge structurally equal functions: map each task's function back to
        # every global function equal to it.
        tuned: dict[str, Any] = {}
        for task in ms.relax_integration.extract_tasks(mod, target):
            workload = task.dispatched[0]
            rec = records.get(_workload_hash(workload))
            if rec is not None:
                tuned[_func_hash(workload["main"])] = (workload, rec)
        for gv, func in list(mod.functions_items()):
            hit = tuned.get(_func_hash(func)) if isinstance(func, tirx.PrimFunc) else None
            if hit is None:
                continue
            sch = s_tir.Schedule(hit[0])
            Trace.apply_json_to_schedule(hit[1]["trace"], sch)
            new = sch.mod["main"].with_attr("tirx.is_scheduled", True)
            if func.attrs is None or "global_symbol" not in func.attrs:
                new = new.without_attr("global_symbol")
            mod[gv] = new
        return mod

    return apply


def _progress_callback(say: Callable[[str], None], total: int) -> Any:
    """A MetaSchedule measure callback counting measured candidates for ``say``."""
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.measure_callback import PyMeasureCallback

    @derived_object
    class Progress(PyMeasureCallback):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.measured = 0

        def apply(
            self, task_scheduler: Any, task_id: int, candidates: Any, builds: Any, runs: Any
        ) -> None:
            self.measured += len(candidates)
            ok = [r.run_secs for r in runs if r.error_msg is None and r.run_secs]
            best = min((float(sum(s) / len(s)) for s in ok), default=float("nan"))
            say(
                f"  task {task_id}: {len(candidates)} measured, best of batch {best * 1e3:.3f} ms ({self.measured}/{total})"
            )

    return Progress()
