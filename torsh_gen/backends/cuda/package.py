"""Packaging of the CUDA targets: PTX modules, plan.json, weights.bin and the runtime.

    __init__.py, _runtime.py   the CuPy runtime (templates/cuda), model-independent code
    plan.json                  launches and GEMMs in order, tensor refs (docs/cuda.md)
    manifest.json              signature and provenance, as for every native target
    weights.bin                the weights, uploaded to the GPU once
    kernels/model.ptx          every kernel of the model, PTX text for the target's sm_XX

Model-derived strings (tensor and node names) go into the JSON files only.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torsh_gen.backends.cuda.program import GemmCall, build_cuda_program
from torsh_gen.backends.cuda.schedule import GpuPiece, split_for_gpu
from torsh_gen.backends.kernel.program import KernelCall, Program, TensorRef
from torsh_gen.backends.llvm.artifact import (
    WEIGHTS_FILE,
    ArtifactInfo,
    PackageResult,
    io_entries,
    manifest,
    write_json,
)
from torsh_gen.backends.llvm.targets import TargetSpec, load_target
from torsh_gen.ir.graph import Graph

PLAN_FORMAT = "torsh-gen-cuda-plan/1"
PTX_FILE = "kernels/model.ptx"
RUNTIME_FILES = ("__init__.py", "_runtime.py")


@dataclass
class CudaPlan:
    """A program made ready for the GPU: its launches and GEMMs, and the kernels to emit."""

    program: Program
    steps: list[dict[str, Any]]
    kernels: list[Any]  # GPU pieces' kernels, in first-use order


def ref_json(ref: TensorRef) -> dict[str, Any]:
    """A plan ref: which memory, which input/output, byte offset."""
    if ref.kind not in ("input", "output", "weights", "workspace"):
        raise ValueError(f"unplaced tensor ref {ref.kind}")
    return {"mem": ref.kind, "index": ref.index, "offset": ref.offset}


def plan_program(program: Program) -> CudaPlan:
    """Turn the program's calls into plan steps (kernels split into GPU launches)."""
    pieces: dict[str, list[GpuPiece]] = {}
    kernels: list[Any] = []
    steps: list[dict[str, Any]] = []
    optional: set[int] = set()  # epilogue calls cuBLASLt may do instead
    for call in program.calls:
        if isinstance(call, GemmCall):
            steps.append(_gemm_step(call))
            if call.lt is not None:
                optional.add(id(call.lt["epilogue"]))
            continue
        assert isinstance(call, KernelCall)
        kernel = program.kernels[call.kernel]
        if call.kernel not in pieces:
            pieces[call.kernel] = split_for_gpu(kernel)
            kernels.extend(p.kernel for p in pieces[call.kernel])
        by_name = {b.name: r for b, r in zip(kernel.buffers, call.args)}
        for piece in pieces[call.kernel]:
            steps.append({
                "op": "launch", "module": 0, "kernel": piece.kernel.name, "grid": piece.grid, "block": piece.block,
                "args": [ref_json(by_name[b.name]) for b in piece.kernel.buffers], "node": call.node,
                **({"optional": True} if id(call) in optional else {}),
            })
    return CudaPlan(program, steps, kernels)


def _gemm_step(call: GemmCall) -> dict[str, Any]:
    a, b, c = call.args
    return {
        "op": "gemm", "dtype": call.dtype, "m": call.m, "n": call.n, "k": call.k, "batch": call.batch,
        "trans_a": call.trans_a, "trans_b": call.trans_b,
        "a": ref_json(a), "lda": call.lda, "stride_a": call.stride_a,
        "b": ref_json(b), "ldb": call.ldb, "stride_b": call.stride_b,
        "c": ref_json(c), "ldc": call.ldc, "stride_c": call.stride_c,
        "alpha": call.alpha, "beta": call.beta, "node": call.node,
        **({"lt": _lt_json(call.lt)} if call.lt is not None else {}),
    }


def _lt_json(lt: dict[str, Any]) -> dict[str, Any]:
    """A GEMM's cuBLASLt epilogue offer; the launch after the GEMM is marked optional."""
    return {
        "bias": ref_json(lt["bias"]) if lt["bias"] is not None else None,
        "residual": ref_json(lt["residual"]) if lt["residual"] is not None else None,
        "beta": lt["beta"], "relu": lt["relu"],
    }


def plan_json(plan: CudaPlan, spec: TargetSpec, tf32: bool = False) -> dict[str, Any]:
    """The contents of plan.json."""
    p = plan.program
    return {
        "format": PLAN_FORMAT,
        "arch": spec.cpu,
        "tf32": tf32,
        "inputs": [{k: e[k] for k in ("name", "dtype", "shape")} for e in io_entries(p.inputs, "input")],
        "outputs": [{k: e[k] for k in ("name", "dtype", "shape")} for e in io_entries(p.outputs, "output")],
        "weights_bytes": len(p.weights),
        "workspace_bytes": p.workspace_bytes,
        "modules": [PTX_FILE],
        "steps": plan.steps,
    }


@functools.cache
def _environment():
    import jinja2

    try:
        loader: jinja2.BaseLoader = jinja2.PackageLoader("torsh_gen.templates", "cuda")
    except (ModuleNotFoundError, ValueError):
        loader = jinja2.FileSystemLoader(Path(__file__).resolve().parents[3] / "templates" / "cuda")
    return jinja2.Environment(loader=loader, undefined=jinja2.StrictUndefined, keep_trailing_newline=True)


def render_runtime(folder: Path, package: str, version: str, target: str) -> None:
    """Write the runtime files into ``folder``. The templates are written black-formatted
    and render the same for every model (only the package name and versions vary), which
    tests/backends/cuda/test_runtime_nogpu.py checks; so compiling for CUDA does not need
    black, which GPU build machines often lack."""
    env = _environment()
    for name in RUNTIME_FILES:
        (folder / name).write_text(env.get_template(f"{name}.j2").render(P=package, version=version, target=target))


def write_package(graph: Graph, folder: Path, info: ArtifactInfo) -> PackageResult:
    """Build the CUDA artifact of ``graph`` for ``info.target`` into the empty ``folder``."""
    from torsh_gen.backends.llvm.nvptx import ptx_module

    spec = load_target(info.target)
    folder = Path(folder)
    program = build_cuda_program(graph)
    plan = plan_program(program)
    (folder / "kernels").mkdir(parents=True, exist_ok=True)
    (folder / PTX_FILE).write_text(ptx_module(plan.kernels, spec.cpu))
    (folder / WEIGHTS_FILE).write_bytes(bytes(program.weights))
    write_json(folder / "plan.json", plan_json(plan, spec, tf32=bool(getattr(info, "tf32", False))))
    files = {"plan": "plan.json", "weights": WEIGHTS_FILE, "ptx": PTX_FILE}
    data = manifest(info, spec, program, files)
    data["kernels"] = len(plan.kernels)
    data["steps"] = len(plan.steps)
    data["gemms"] = sum(1 for s in plan.steps if s["op"] == "gemm")
    write_json(folder / "manifest.json", data)
    render_runtime(folder, info.package, info.version, spec.name)
    listed = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    nodes = len({c.node for c in program.calls if c.op_type != "copy"})
    memory = {"workspace_bytes": program.workspace_bytes, "weights_bytes": len(program.weights)}
    return PackageResult(listed, nodes, 0, len(plan.kernels), len(program.weights), memory)
