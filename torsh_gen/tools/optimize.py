"""``torsh-gen optimize``: run a pass pipeline over a model and write the optimized ONNX.

The output stays plain ONNX that any runtime executes, unless custom ops are asked for:
without ``custom_ops`` the passes that introduce ``ai.torsh`` fused ops are skipped (they
are listed in the report), so onnxruntime still runs the result. With ``check`` the
original and the optimized model both run in onnxruntime on the same random inputs and
the report says whether their outputs agree.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torsh_gen.errors import InputError
from torsh_gen.frontends.onnx import save_onnx
from torsh_gen.frontends.onnx.exporter import weight_bytes
from torsh_gen.ir.graph import Graph
from torsh_gen.ir.verify import verify
from torsh_gen.ops.fused import DOMAIN as CUSTOM_DOMAIN
from torsh_gen.passes import pipeline, run_passes
from torsh_gen.passes.manager import PassReport, get_pass
from torsh_gen.tools.loading import load_model

#: opset version written for the ai.torsh domain when fused ops are kept.
CUSTOM_DOMAIN_VERSION = 1


@dataclass
class OptimizeResult:
    """What an optimization run did: per-op node counts, weight bytes, each pass's report."""

    model: str
    output: str | None
    level: str | None
    passes: list[str]
    skipped: list[str]
    custom_ops: bool
    ops_before: dict[str, int]
    ops_after: dict[str, int]
    weight_bytes_before: int
    weight_bytes_after: int
    seconds: float
    reports: list[PassReport] = field(default_factory=list)
    check: dict[str, Any] | None = None

    @property
    def nodes_before(self) -> int:
        """Node count of the input graph (nested graphs included)."""
        return sum(self.ops_before.values())

    @property
    def nodes_after(self) -> int:
        """Node count of the optimized graph (nested graphs included)."""
        return sum(self.ops_after.values())

    def op_rows(self) -> list[dict[str, Any]]:
        """One row per op type present before or after: ``{op, before, after}``."""
        names = sorted(set(self.ops_before) | set(self.ops_after))
        rows = [{"op": n, "before": self.ops_before.get(n, 0), "after": self.ops_after.get(n, 0)} for n in names]
        return sorted(rows, key=lambda r: (-max(r["before"], r["after"]), r["op"]))

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON/YAML output."""
        return {
            "model": self.model,
            "output": self.output,
            "level": self.level,
            "passes": self.passes,
            "skipped_custom_op_passes": self.skipped,
            "custom_ops": self.custom_ops,
            "nodes": {"before": self.nodes_before, "after": self.nodes_after},
            "weight_bytes": {"before": self.weight_bytes_before, "after": self.weight_bytes_after},
            "ops": self.op_rows(),
            "seconds": round(self.seconds, 4),
            "pass_reports": [r.to_dict() for r in self.reports],
            "onnxruntime_check": self.check,
        }


def op_histogram(graph: Graph) -> dict[str, int]:
    """Node count per (domain-qualified) op type, nested graphs included."""
    return dict(Counter(n.qualified_op for _, n in graph.walk()))


def parse_pass_list(spec: str | Sequence[str] | None) -> list[str] | None:
    """``"a,b,c"`` (or a list of such strings) → ``["a", "b", "c"]``; None when empty."""
    if spec is None:
        return None
    parts = [spec] if isinstance(spec, str) else list(spec)
    names = [p.strip() for part in parts for p in part.split(",") if p.strip()]
    return names or None


def optimize_graph(
    graph: Graph,
    level: str = "O2",
    passes: Sequence[str] | None = None,
    *,
    custom_ops: bool = False,
    verify_each: bool = False,
    model_name: str = "<graph>",
) -> OptimizeResult:
    """Optimize ``graph`` in place with the pipeline ``level`` (or the explicit ``passes``)."""
    names = pipeline(level, passes)
    skipped = [] if custom_ops else [n for n in names if get_pass(n).custom_ops]
    ops0, w0 = op_histogram(graph), weight_bytes(graph)
    start = time.perf_counter()
    reports = run_passes(graph, names, check=verify_each, allow_custom_ops=custom_ops)
    seconds = time.perf_counter() - start
    verify(graph)  # whatever the passes did, never write a graph the verifier refuses
    _declare_custom_domain(graph)
    return OptimizeResult(
        model=model_name,
        output=None,
        level=None if passes else level.upper(),
        passes=[r.name for r in reports],
        skipped=sorted(set(skipped)),
        custom_ops=custom_ops,
        ops_before=ops0,
        ops_after=op_histogram(graph),
        weight_bytes_before=w0,
        weight_bytes_after=weight_bytes(graph),
        seconds=seconds,
        reports=reports,
    )


def _declare_custom_domain(graph: Graph) -> None:
    """Add the ai.torsh opset import when fused ops remain, so the ONNX file is well-formed."""
    if graph.info is None:
        return
    if any(n.domain == CUSTOM_DOMAIN for _, n in graph.walk()):
        graph.info.opset_imports.setdefault(CUSTOM_DOMAIN, CUSTOM_DOMAIN_VERSION)


def optimize_model(
    model: str | os.PathLike,
    output: str | os.PathLike,
    *,
    level: str = "O2",
    passes: Sequence[str] | None = None,
    custom_ops: bool = False,
    verify_each: bool = False,
    check: bool = False,
    bindings: Mapping[str, Any] | None = None,
    input_shapes: Sequence[str] | None = None,
    seed: int = 0,
    rtol: float = 1e-3,
    atol: float = 1e-4,
) -> OptimizeResult:
    """Load ``model``, optimize it and write ``output`` (.onnx, written atomically).

    With ``check``, the original and the optimized model run in onnxruntime on the same
    random inputs (shapes bound by ``bindings``) and ``result.check`` holds the comparison
    (within ``rtol``/``atol``: passes such as BatchNorm folding reorder float arithmetic).
    """
    out = Path(output)
    if out.suffix.lower() != ".onnx":
        raise InputError(f"{out}: the optimized model is written as ONNX; name it with .onnx")
    graph = load_model(model, input_shapes)
    pipeline(level, passes)  # bad level or pass names fail before any work
    reference = _reference_run(graph, bindings, seed) if check else None
    result = optimize_graph(graph, level, passes, custom_ops=custom_ops, verify_each=verify_each, model_name=str(model))
    save_onnx(graph, out)
    result.output = str(out)
    if reference is not None:
        result.check = _check_against(graph, *reference, rtol=rtol, atol=atol)
    return result


def _reference_run(graph: Graph, bindings: Mapping[str, Any] | None, seed: int) -> tuple[dict, dict]:
    from torsh_gen.tools.compare import run_onnxruntime
    from torsh_gen.tools.run import random_inputs

    feeds = random_inputs(graph, bindings, seed)
    return feeds, run_onnxruntime(graph, feeds)


def _check_against(graph: Graph, feeds: dict, reference: dict, rtol: float, atol: float) -> dict[str, Any]:
    """onnxruntime on the optimized graph against onnxruntime on the original."""
    import onnxruntime as ort

    from torsh_gen.tools.compare import compare_outputs, run_onnxruntime

    if any(n.domain == CUSTOM_DOMAIN for _, n in graph.walk()):
        return {"version": ort.__version__, "match": None, "skipped": "the model keeps ai.torsh ops, which onnxruntime cannot run"}
    kept = {k: v for k, v in feeds.items() if any(i.name == k for i in graph.inputs)}
    outputs = compare_outputs(run_onnxruntime(graph, kept), reference, rtol, atol)
    return {"version": ort.__version__, "rtol": rtol, "atol": atol, "outputs": outputs, "match": all(r["match"] for r in outputs.values())}
