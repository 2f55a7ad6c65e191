"""Run a graph in onnxruntime and compare its outputs with ours."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from torsh_gen.errors import TorshGenError
from torsh_gen.frontends.onnx import to_onnx
from torsh_gen.ir.graph import Graph


def run_onnxruntime(graph: Graph, feeds: Mapping[str, Any]) -> dict[str, Any]:
    """Outputs of onnxruntime (CPU) on ``feeds``, keyed by output name."""
    import onnxruntime as ort

    model = to_onnx(graph)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    try:
        sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    except Exception as e:
        raise TorshGenError(f"onnxruntime cannot load this model: {str(e).splitlines()[0]}") from None
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, dict(feeds))))


def compare_outputs(ours: Mapping[str, Any], ref: Mapping[str, Any], rtol: float = 1e-4, atol: float = 1e-5) -> dict[str, Any]:
    """Per-output max abs/rel difference and whether it is within rtol/atol."""
    result: dict[str, Any] = {}
    for name, r in ref.items():
        o = ours.get(name)
        if not isinstance(r, np.ndarray) or not isinstance(o, np.ndarray):
            result[name] = {"max_abs_diff": None, "max_rel_diff": None, "match": _equal_nonarray(o, r)}
            continue
        if o.shape != r.shape:
            result[name] = {"max_abs_diff": None, "max_rel_diff": None, "match": False, "error": f"shape {o.shape} vs {r.shape}"}
            continue
        if r.dtype.kind in "OUSb" or r.size == 0:
            result[name] = {"max_abs_diff": 0.0, "max_rel_diff": 0.0, "match": bool(np.array_equal(o, r))}
            continue
        a, b = o.astype(np.float64), r.astype(np.float64)
        diff = np.abs(a - b)
        finite = np.isfinite(diff)
        abs_d = float(diff[finite].max()) if finite.any() else 0.0
        rel_d = float((diff[finite] / np.maximum(np.abs(b[finite]), 1e-12)).max()) if finite.any() else 0.0
        same_nonfinite = bool(np.array_equal(np.isnan(a), np.isnan(b)))
        result[name] = {"max_abs_diff": abs_d, "max_rel_diff": rel_d, "match": bool(np.allclose(a, b, rtol=rtol, atol=atol, equal_nan=True)) and same_nonfinite}
    return result


def _equal_nonarray(o: Any, r: Any) -> bool:
    if isinstance(r, list) and isinstance(o, list):
        return len(r) == len(o) and all(np.allclose(x, y) for x, y in zip(o, r))
    return o is None and r is None


def compare_with_onnxruntime(graph: Graph, feeds: Mapping[str, Any], ours: Mapping[str, Any], rtol: float = 1e-4, atol: float = 1e-5) -> dict[str, Any]:
    """Run onnxruntime on ``feeds`` and compare with ``ours``; a report with ``match``."""
    import onnxruntime as ort

    ref = run_onnxruntime(graph, feeds)
    outputs = compare_outputs(ours, ref, rtol, atol)
    return {"version": ort.__version__, "rtol": rtol, "atol": atol, "outputs": outputs, "match": all(r["match"] for r in outputs.values())}
