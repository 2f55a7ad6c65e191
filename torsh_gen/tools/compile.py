"""Compile a model into a standalone artifact: load, check ops, optimize, generate, swap in.

``compile_model(model, out_dir)`` is what ``torsh-gen compile`` and the compiled ONNX
backend call. It lists every unsupported op at once, runs the pass pipeline (plus the
memory planner the backend needs), lets the target's backend write the package into a
temporary folder beside ``out_dir``, compiles its numba kernels, and only then renames it
into place: an interrupted compile leaves no half-written folder, and an existing
artifact is replaced only on success.
"""

from __future__ import annotations

import hashlib
import keyword
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torsh_gen import __version__
from torsh_gen.errors import InputError, TorshGenError, UnsupportedOpError
from torsh_gen.ir.graph import Graph
from torsh_gen.passes import PassReport, pipeline, run_measured, run_passes
from torsh_gen.passes.manager import get_pass, note

MANIFEST = "manifest.json"
PLAN_PASS = "plan_memory"


@dataclass
class CompileReport:
    """What a compile did: passes, node counts, files, coverage and time."""

    out_dir: Path
    package: str
    target: str
    level: str
    passes: list[str]
    pass_reports: list[PassReport]
    nodes_before: int
    nodes_after: int
    files: list[str]
    fast_nodes: int
    reference_nodes: int
    kernels: int
    weight_bytes: int
    memory: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    kernel_seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON/YAML output."""
        return {
            "out_dir": str(self.out_dir),
            "package": self.package,
            "target": self.target,
            "level": self.level,
            "passes": [r.to_dict() for r in self.pass_reports],
            "nodes": [self.nodes_before, self.nodes_after],
            "fast_nodes": self.fast_nodes,
            "reference_nodes": self.reference_nodes,
            "kernels": self.kernels,
            "weight_bytes": self.weight_bytes,
            "memory_plan": self.memory,
            "files": self.files,
            "seconds": round(self.seconds, 3),
            "kernel_seconds": round(self.kernel_seconds, 3),
        }


def compile_model(
    model: str | os.PathLike | Graph | bytes | Any,
    out_dir: str | os.PathLike,
    *,
    target: str = "cpu",
    level: str = "O3",
    passes: list[str] | None = None,
    check: bool = False,
    precompile: bool = True,
    input_shapes: Sequence[str] | None = None,
    embed_weights: bool = False,
    tf32: bool = False,
    backend: str = "torsh",
    tune: int = 0,
    progress: Callable[[str], None] | None = None,
) -> CompileReport:
    """Compile ``model`` (path, Graph, ModelProto or bytes) into the package ``out_dir``.

    A Graph is optimized in place. ``passes`` replaces the level's pipeline; ``check``
    runs the IR verifier after every pass; ``precompile`` compiles numba kernels now
    rather than at the artifact's first import. ``backend="tvm"`` builds ``target`` with
    Apache TVM instead of our code generators; ``tune`` runs that many MetaSchedule trials
    (the database stays in ``out_dir/tuning`` for the next build; ``progress`` gets a line
    per tuning step). ``tf32`` lets a CUDA artifact's float32
    GEMMs use TF32 tensor cores. ``input_shapes`` (``--input-shape`` specs)
    reach the loader of a path whose format records no input shapes (TorchScript) and then
    bind the graph's symbolic dims (any format), as native targets need static shapes.
    """
    from torsh_gen.backends import backend_for

    start = time.perf_counter()
    out = Path(out_dir)
    package = _package_name(out)
    backend_module = backend_for(target, backend)
    _check_options(target, backend, backend_module, embed_weights, tf32, tune)
    _check_destination(out)
    names = _pipeline(level, passes, backend_module)
    graph, source_name, sha, nodes_before, reports = _optimize(model, backend_module, names, input_shapes, check)
    info = backend_module.ArtifactInfo(package, source_name, sha, __version__, target, level if not passes else "custom", [r.name for r in reports])
    info.embed_weights = embed_weights
    info.tf32 = tf32  # read by the cuda backend's package writer
    info.precompile = precompile  # the python backend compiles while its conv kernels build
    if backend == "tvm":
        info.tune = tune
        info.previous_dir = out if out.is_dir() else None
        info.progress = progress
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{package}.tmp-", dir=out.parent))
    try:
        result = backend_module.write_package(graph, tmp, info)
        kernel_seconds = getattr(result, "kernel_seconds", None)
        if kernel_seconds is None:
            kernel_seconds = backend_module.precompile(tmp) if precompile else 0.0
        _swap_in(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return CompileReport(
        out, package, target if backend == "torsh" else f"{backend}-{target}", info.level, info.passes, reports, nodes_before, _count(graph), result.files,
        result.fast_nodes, result.reference_nodes, result.kernels, result.weight_bytes, result.memory,
        time.perf_counter() - start, kernel_seconds,
    )


def _check_options(target: str, backend: str, module: Any, embed_weights: bool, tf32: bool, tune: int) -> None:
    """Refuse options that do not apply to this target or backend (``module``: the one
    building it), before any work."""
    native = backend == "torsh" and target != "cpu" and hasattr(module, "lowers")
    if embed_weights and not (native and not target.startswith("cuda")):
        raise InputError(f"--embed-weights applies to native targets, not to target {target}")
    if tf32 and not (backend == "torsh" and target.startswith("cuda")):
        raise InputError(f"--tf32 applies to the CUDA targets, not to target {target}")
    if tune and backend != "tvm":
        raise InputError("--tune applies to --backend tvm (MetaSchedule); our own targets are not tuned")
    if tune < 0:
        raise InputError(f"--tune takes a number of trials >= 0, not {tune}")
    if tune and target != "cpu":
        raise InputError(f"--tune measures candidates on the device: tune the cpu target here, not {target}")


def optimized_graph(
    model: Any, target: str, level: str = "O3", input_shapes: Sequence[str] | None = None,
    passes: list[str] | None = None, backend: str = "torsh",
) -> Graph:
    """``model`` loaded and optimized for ``target`` exactly as ``compile_model`` does it
    (function expansion, the level's pipeline or ``passes``, the memory plan), without
    packaging: for tools that lower the graph themselves (the CUDA plan run on the host)."""
    from torsh_gen.backends import backend_for

    module = backend_for(target, backend)
    return _optimize(model, module, _pipeline(level, passes, module), input_shapes, False)[0]


def _optimize(
    model: Any, backend: Any, names: list[str], input_shapes: Sequence[str] | None, check: bool
) -> tuple[Graph, str, str, int, list[PassReport]]:
    """Load, bind shapes, check, expand the functions ``backend`` lacks and run the passes
    ``names``: the graph, its source name and sha256, its node count before the passes,
    and the pass reports."""
    graph, source_name, sha = _load(model, input_shapes)
    bind_input_shapes(graph, input_shapes)
    check_supported(graph)
    nodes_before = _count(graph)
    reports = _expand_functions(graph, backend, check) + run_passes(graph, names, check=check)
    return graph, source_name, sha, nodes_before, reports


def _expand_functions(graph: Graph, backend: Any, check: bool) -> list[PassReport]:
    """For a backend that lacks some ops (the native targets), replace those that ONNX
    defines as functions (SoftmaxCrossEntropyLoss, NegativeLogLikelihoodLoss, Attention...)
    by their bodies and unroll the control flow (Scan, Loop, If) it cannot run, alternately
    until neither changes anything: a function body may hold a Scan (LinearAttention), an
    unrolled body may hold function ops. Each step that changed something, or left control
    flow with a reason, is reported like a pass."""
    lowers = getattr(backend, "lowers", None)
    if lowers is None:
        return []
    from torsh_gen.frontends.onnx.functions import expand_functions

    def wanted(node: Any) -> bool:
        return not lowers(node)

    def expand(g: Graph) -> bool:
        expanded = expand_functions(g, wanted)
        if expanded:
            note(f"expanded into their ONNX function bodies: {', '.join(expanded)}")
        return bool(expanded)

    unroll = _unroll_control_flow(wanted)
    reports: list[PassReport] = []
    for _ in range(_EXPANSION_ROUNDS):
        fresh = [
            run_measured("expand_functions", graph, expand, check=check),
            run_measured("unroll_control_flow", graph, unroll, check=check),
        ]
        reports += [r for r in fresh if r.changed]
        if not any(r.changed for r in fresh):
            break
    if not fresh[-1].changed and fresh[-1].notes:  # control flow left: say why
        reports.append(fresh[-1])
    return reports


#: Rounds of function expansion and unrolling, each exposing work for the other.
_EXPANSION_ROUNDS = 8


def _unroll_control_flow(wanted: Callable[[Any], bool]) -> Callable[[Graph], bool]:
    """The unroll pass for ``wanted`` nodes: one node budget over all rounds of a compile;
    notes say what was unrolled and why a node was left (the backend's own error then names
    it; the reasons also stay in ``graph.meta['not_lowered']`` by node)."""
    from torsh_gen.passes.control_flow import UnrollBudget, unroll_control_flow

    budget = UnrollBudget()

    def unroll(g: Graph) -> bool:
        result = unroll_control_flow(g, wanted, budget)
        for what in result.unrolled:
            note(f"unrolled {what}")
        for node, reason in result.declined.items():
            note(f"left {node.op_type} '{node.name or '?'}': {reason}")
        g.meta["not_lowered"] = {id(n): r for n, r in result.declined.items()}
        return bool(result.unrolled)

    return unroll


def _package_name(out: Path) -> str:
    name = out.name
    if not name.isidentifier() or keyword.iskeyword(name) or not name.isascii():
        raise InputError(
            f"output folder '{out}' must end in a valid Python package name (letters, digits, "
            f"underscores, not starting with a digit), since the artifact is imported as '{name}'"
        )
    return name


def _check_destination(out: Path) -> None:
    """Refuse to replace anything but an empty folder or an earlier artifact."""
    if not out.exists():
        return
    if not out.is_dir():
        raise InputError(f"{out} exists and is not a folder; choose another output folder")
    if any(out.iterdir()) and not (out / MANIFEST).is_file():
        raise InputError(f"{out} exists and is not a torsh-gen artifact; choose another output folder or empty it")


def _pipeline(level: str, passes: list[str] | None, backend: Any = None) -> list[str]:
    """The level's passes (or ``passes``), less those the backend skips when the level
    chose them (``SKIP_PASSES``: the TVM backend fuses by itself), plus the memory plan."""
    names = pipeline(level, passes)
    skip = getattr(backend, "SKIP_PASSES", frozenset())
    if passes is None:
        names = [n for n in names if n not in skip]
    for name in names:
        get_pass(name)  # fail before any work when a pass is unknown
    import torsh_gen.passes.memplan  # noqa: F401  (registers plan_memory)

    if PLAN_PASS not in names and PLAN_PASS not in skip:
        names = names + [PLAN_PASS]
    return names


def _load(model: Any, input_shapes: Sequence[str] | None = None) -> tuple[Graph, str, str]:
    """The graph, a display name of the source and its sha256."""
    from torsh_gen.ir.verify import verify

    if isinstance(model, Graph):
        from torsh_gen.ir.serialize import dumps_header

        verify(model)
        header, blobs, _ = dumps_header(model)
        h = hashlib.sha256(header)
        for b in blobs:
            h.update(b.tobytes())
        return model, model.name, h.hexdigest()
    if isinstance(model, (str, os.PathLike)):
        from torsh_gen.tools.loading import load_model

        path = Path(model)
        graph = load_model(path, input_shapes)
        return graph, path.name, _file_sha256(path)
    from torsh_gen.frontends.onnx import load_onnx

    data = model if isinstance(model, (bytes, bytearray)) else model.SerializeToString()
    graph = load_onnx(bytes(data))  # as the reference backend: the ONNX checker's rules, not ours
    return graph, graph.name or "<model>", hashlib.sha256(data).hexdigest()


def bind_input_shapes(graph: Graph, input_shapes: Sequence[str] | None) -> None:
    """Fix the dims ``--input-shape`` specs name and infer types so every value turns static.

    ``batch=2`` binds a symbolic dim wherever it appears, ``x=1x3x8x8`` an input's whole
    shape (as ``run`` and ``inspect`` read them). Native targets need static shapes; the cpu
    target keeps its dims dynamic unless specs are given. Names that are neither an input
    nor a symbol of the model are ignored, as in the other commands.
    """
    if not input_shapes:
        return
    from torsh_gen.ir.types import TensorType
    from torsh_gen.ops.inference import infer_types
    from torsh_gen.tools.inspect import parse_input_shapes

    bindings = parse_input_shapes(list(input_shapes))
    for v in graph.inputs:  # a static dim is the weights' contract: rebinding it cannot work
        shape, t = bindings.get(v.name), v.type
        if not (isinstance(shape, tuple) and isinstance(t, TensorType) and t.shape):
            continue
        for axis, (have, want) in enumerate(zip(t.shape, shape)):
            if isinstance(have, int) and have != want and len(t.shape) == len(shape):
                raise InputError(
                    f"--input-shape {v.name}={'x'.join(map(str, shape))}: axis {axis} "
                    f"of input '{v.name}' is fixed at {have} by the model"
                )
    infer_types(graph, bindings)


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check_supported(graph: Graph) -> None:
    """Raise one UnsupportedOpError listing every node whose op (or opset) is not supported."""
    from torsh_gen.ops.registry import lookup

    opsets = graph.info.opset_imports if graph.info else {"": 0}
    missing = []
    for _, node in graph.walk():
        opset = opsets.get(node.domain, opsets.get("", 0))
        try:
            lookup(node.op_type, node.domain, opset)
        except TorshGenError:
            domain = node.domain or "ai.onnx"
            missing.append(f"{node.name or '<unnamed>'!r}: {node.op_type} (domain {domain}, opset {opset})")
    if missing:
        shown = "; ".join(missing[:50]) + (f"; and {len(missing) - 50} more" if len(missing) > 50 else "")
        raise UnsupportedOpError(
            f"{len(missing)} node(s) use ops torsh-gen does not support: {shown}. "
            "Check `torsh-gen ops` for the supported ops and opsets"
        )


def _count(graph: Graph) -> int:
    return sum(1 for _ in graph.walk())


def _swap_in(tmp: Path, out: Path) -> None:
    """Rename the finished package into place, replacing an earlier artifact."""
    if not out.exists():
        os.rename(tmp, out)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    os.rename(out, old / "artifact")
    try:
        os.rename(tmp, out)
    except BaseException:
        os.rename(old / "artifact", out)
        raise
    finally:
        shutil.rmtree(old, ignore_errors=True)
