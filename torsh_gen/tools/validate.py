"""``torsh-gen validate``: a compiled artifact against onnxruntime on the same inputs.

Per output it reports the max absolute and relative error, the cosine similarity and,
where the output looks like class scores (a float ``[N, C>1]`` tensor, possibly
``[N, C, 1, 1]``), the fraction of
rows whose top-1 class agrees. The artifact passes when every output is within
``|ours - ref| <= atol + rtol * |ref|`` (numpy's ``allclose``); the defaults leave room for
the reordered float sums of fused kernels and BLAS, not for wrong results.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from torsh_gen.errors import ExecutionError, InputError
from torsh_gen.ir.graph import Graph
from torsh_gen.tools.artifact import ensure_artifact
from torsh_gen.tools.compare import compare_outputs, run_onnxruntime
from torsh_gen.tools.loading import load_model
from torsh_gen.tools.run import check_inputs, load_inputs, random_inputs

DEFAULT_RTOL = 1e-3
DEFAULT_ATOL = 1e-4


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> float | None:
    """Cosine of the angle between two tensors seen as vectors (1.0 when both are zero)."""
    if a.shape != b.shape or a.dtype.kind not in "biuf" or b.dtype.kind not in "biuf":
        return None
    x, y = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    finite = np.isfinite(x) & np.isfinite(y)
    x, y = x[finite], y[finite]
    nx, ny = float(np.linalg.norm(x)), float(np.linalg.norm(y))
    if nx == 0.0 and ny == 0.0:
        return 1.0
    if nx == 0.0 or ny == 0.0:
        return 0.0
    return float(np.dot(x, y) / (nx * ny))


def looks_like_class_scores(a: Any) -> bool:
    """A float ``[N, C]`` tensor with more than one class (trailing 1s allowed: ``[N, C, 1, 1]``)."""
    if not isinstance(a, np.ndarray) or a.ndim < 2 or a.dtype.kind != "f":
        return False
    return a.shape[1] > 1 and all(d == 1 for d in a.shape[2:])


def top1_agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of rows whose argmax over axis 1 is the same in ``a`` and ``b``."""
    rows_a, rows_b = a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1)
    return float(np.mean(np.argmax(rows_a, axis=1) == np.argmax(rows_b, axis=1)))


def output_metrics(ours: Mapping[str, Any], ref: Mapping[str, Any], rtol: float, atol: float) -> dict[str, dict[str, Any]]:
    """Per reference output: max abs/rel error, cosine similarity, top-1 agreement, match."""
    result = compare_outputs(ours, ref, rtol, atol)
    for name, row in result.items():
        o, r = ours.get(name), ref.get(name)
        both = isinstance(o, np.ndarray) and isinstance(r, np.ndarray) and o.shape == r.shape
        row["cosine"] = cosine_similarity(o, r) if both else None
        row["top1_agreement"] = top1_agreement(o, r) if both and looks_like_class_scores(r) else None
        if isinstance(r, np.ndarray):
            row["shape"] = list(r.shape)
            row["dtype"] = str(r.dtype)
    return result


def validate_artifact(
    graph: Graph,
    module: ModuleType,
    feeds: Mapping[str, Any],
    *,
    rtol: float = DEFAULT_RTOL,
    atol: float = DEFAULT_ATOL,
) -> dict[str, Any]:
    """Run the artifact ``module`` and onnxruntime (on ``graph``) on ``feeds`` and compare."""
    import onnxruntime as ort

    checked = check_inputs(graph, feeds)
    ref = run_onnxruntime(graph, checked)
    try:
        ours = module.run(**checked)
    except Exception as e:
        raise ExecutionError(f"the artifact failed on these inputs: {type(e).__name__}: {e}") from None
    if not isinstance(ours, Mapping):
        raise ExecutionError(f"the artifact's run() returned {type(ours).__name__}, not a dict of outputs; recompile it")
    outputs = output_metrics(ours, ref, rtol, atol)
    return {
        "onnxruntime": ort.__version__,
        "rtol": rtol,
        "atol": atol,
        "inputs": {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in checked.items() if isinstance(v, np.ndarray)},
        "outputs": outputs,
        "match": all(r["match"] for r in outputs.values()),
    }


def validate_model(
    model: str | os.PathLike,
    artifact_dir: str | os.PathLike | None = None,
    *,
    inputs: str | os.PathLike | None = None,
    bindings: Mapping[str, Any] | None = None,
    input_shapes: Sequence[str] | None = None,
    rtol: float = DEFAULT_RTOL,
    atol: float = DEFAULT_ATOL,
    seed: int = 0,
    target: str = "cpu",
    backend: str = "torsh",
) -> dict[str, Any]:
    """Validate the artifact of ``model`` (compiled for ``target`` by ``backend`` into a
    temp folder when none is given; native targets need static shapes, bound by
    ``input_shapes``; the TVM backend runs its cpu builds here).

    Inputs come from an .npz (``inputs``) or are random from the declared shapes, with
    symbolic dims bound by ``bindings``; ``input_shapes`` go to the loader of a format
    that records no input shapes (TorchScript).
    """
    if artifact_dir is None and backend == "tvm":
        _check_tvm_runs_here(target)
    elif artifact_dir is None and target != "cpu":
        _check_runs_here(target)
    graph = load_model(model, input_shapes)
    feeds = load_inputs(inputs) if inputs else random_inputs(graph, bindings, seed)
    module, folder = ensure_artifact(model, artifact_dir, input_shapes=input_shapes, target=target, backend=backend)
    report = validate_artifact(graph, module, feeds, rtol=rtol, atol=atol)
    return {"model": str(model), "artifact": str(Path(folder)), "compiled": artifact_dir is None, **report}


def _check_tvm_runs_here(target: str) -> None:
    """Refuse, before compiling, a TVM build for a device this machine does not have."""
    from torsh_gen.backends.tvm.build import TARGETS

    spec = TARGETS.get(target)
    if spec is not None and not spec.runs_here:
        raise InputError(
            f"a TVM build for {target} needs a {target} device to run; compile it here with "
            f"`torsh-gen compile MODEL --backend tvm --target {target} -o DIR` and validate DIR where the device is"
        )


def _check_runs_here(target: str) -> None:
    """Refuse, before compiling, a native target whose artifact Python cannot run here."""
    from torsh_gen.backends.llvm.targets import host_target, load_target

    spec = load_target(target)
    if spec.packaging == "cuda":
        try:
            import cupy

            cupy.cuda.runtime.getDeviceCount()
            return
        except Exception:
            raise InputError(
                f"target {target} runs on a CUDA GPU with CuPy, and this machine has none usable; compile it here and "
                f"run `torsh-gen validate MODEL --artifact DIR` where a GPU is (docs/cuda.md)"
            ) from None
    if spec.packaging != "sharedlib" or not spec.runs_here:
        raise InputError(
            f"validate runs artifacts through Python: target {target} has none that runs on this machine; "
            f"use cpu, host or x86_64-linux (or run {target}'s own driver, see docs/targets.md)"
        )
    if spec.vector_bits > host_target().vector_bits:
        raise InputError(f"target {target} needs {spec.vector_bits}-bit vectors, which this CPU lacks; use --target host")
