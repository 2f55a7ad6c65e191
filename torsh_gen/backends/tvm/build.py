"""Relax module → a TVM executable for one of the targets we drive TVM for.

``TARGETS`` says, per ``--target`` name, which TVM target it becomes and whether this
machine can run what it builds. The CPU target is LLVM for the host's CPU (its name and
features from LLVM, so the library uses the SIMD this machine has); the GPU targets use
TVM's default GPU pipeline, whose dlight rules give every kernel a thread binding.

The weights are parameters of ``main``; ``LiftTransformParams`` moves whatever the model
computes from weights alone (transposes, folds) into ``main_transform_params``, which the
runtime calls once at load, so no call repeats weight-only work.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torsh_gen.errors import InputError


@dataclass(frozen=True)
class TvmTarget:
    """One ``--backend tvm --target`` choice."""

    name: str
    kind: str
    #: Whether this machine can run the build (CPU) or only build it (GPU APIs).
    runs_here: bool
    about: str


TARGETS: dict[str, TvmTarget] = {
    t.name: t
    for t in (
        TvmTarget("cpu", "llvm", True, "LLVM for this machine's CPU (its features as LLVM detects them)"),
        TvmTarget("cuda", "cuda", False, "CUDA kernels for sm_80 and newer (compiled with nvcc)"),
        TvmTarget("vulkan", "vulkan", False, "SPIR-V kernels for Vulkan"),
        TvmTarget("metal", "metal", False, "Metal shading language kernels (Apple GPUs)"),
        TvmTarget("opencl", "opencl", False, "OpenCL C kernels"),
        TvmTarget("rocm", "rocm", False, "AMDGPU kernels for ROCm (gfx90a)"),
    )
}


def require_tvm() -> Any:
    """The ``tvm`` module; one-line InputError naming the extra when it is missing."""
    try:
        import tvm
        from tvm import relax  # noqa: F401
    except ImportError:
        raise InputError(
            "the TVM backend needs Apache TVM: pip install 'torsh-gen[tvm]' (apache-tvm==0.27.0.post1)"
        ) from None
    return tvm


def tvm_target(name: str) -> Any:
    """The ``tvm.target.Target`` for our target ``name``; InputError for unknown names and
    for GPU APIs this TVM build has no code generator for."""
    tvm = require_tvm()
    spec = TARGETS.get(name)
    if spec is None:
        raise InputError(f"unknown TVM target '{name}'; choose one of: {', '.join(TARGETS)}")
    if tvm.get_global_func(f"target.build.{spec.kind}", allow_missing=True) is None:
        raise InputError(
            f"this TVM build (apache-tvm {tvm.__version__}) has no {spec.kind} code generator; "
            f"build TVM with USE_{spec.kind.upper()}=ON to target {name}"
        )
    host = _host_llvm()
    if name == "cpu":
        return tvm.target.Target(host)
    device = {
        "cuda": {"kind": "cuda", "arch": "sm_80"},
        "vulkan": {"kind": "vulkan"},
        "metal": {"kind": "metal"},
        "opencl": {"kind": "opencl"},
        "rocm": {"kind": "rocm", "mcpu": "gfx90a"},
    }[name]
    return tvm.target.Target(device, host=host)


def _host_llvm() -> dict[str, Any]:
    """LLVM target of this machine: its CPU name and core count."""
    import os

    import llvmlite.binding as llvm

    return {"kind": "llvm", "mcpu": llvm.get_host_cpu_name(), "num-cores": os.cpu_count() or 1}


def build(mod: Any, target_name: str) -> Any:
    """Compile the Relax module for ``target_name``; the relax executable."""
    tvm = require_tvm()
    from tvm import relax

    target = tvm_target(target_name)
    mod = relax.transform.LiftTransformParams()(mod)
    with target:
        return tvm.compile(mod, target=target, relax_pipeline=relax.get_default_pipeline(target))
