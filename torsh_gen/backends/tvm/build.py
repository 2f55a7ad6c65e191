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
        TvmTarget(
            "cpu", "llvm", True, "LLVM for this machine's CPU (its features as LLVM detects them)"
        ),
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


def build(mod: Any, target_name: str, *, schedule: bool = True, tune_dir: str | None = None) -> Any:
    """Compile the Relax module for ``target_name``; the relax executable.

    On the CPU, ``schedule`` (default) moves convolutions to channels-last and gives every
    TIR function a default schedule (schedule_cpu: parallel, SIMD, register tiles) instead
    of the scalar single-threaded loops TVM's default pipeline leaves. ``tune_dir``, a
    MetaSchedule work directory (tune.tune), applies the tuned schedules recorded there;
    functions it has no record for get the default schedule."""
    tvm = require_tvm()
    from tvm import relax

    target = tvm_target(target_name)
    if target_name != "cpu" or not schedule:
        mod = lift_weight_work(mod)
        if target_name == "cpu":
            pipeline = relax.get_default_pipeline(target)
        else:
            from torsh_gen.backends.tvm.gpu_pipeline import gpu_pipeline

            pipeline = gpu_pipeline(target)
        with target:
            return tvm.compile(mod, target=target, relax_pipeline=pipeline)
    mod = cpu_prepare(mod, target)
    return tvm.compile(mod, target=target, relax_pipeline=cpu_pipeline(target, tune_dir))


def cpu_prepare(mod: Any, target: Any) -> Any:
    """The Relax-level part of the CPU build: channels-last layout, then weight-only work
    lifted into ``main_transform_params`` (so the weight transposes run once, at load)."""

    from torsh_gen.backends.tvm.schedule_cpu import channels_last

    with target:
        if _calls(mod, "relax.nn.conv2d"):  # ConvertLayout fails on some ops (stack), so only where it pays
            mod = channels_last()(mod)
        return lift_weight_work(mod)


def lift_weight_work(mod: Any) -> Any:
    """``mod`` with the work that depends on weights alone moved into
    ``main_transform_params`` (run once at load), or ``mod`` unchanged where lifting breaks it.

    TVM 0.27's LiftTransformParams leaves ``main`` returning an undefined variable when a
    model output is computed from weights alone (a constant output, a seeded random draw):
    the VM codegen then fails with "Var gv is not defined". Such a module keeps its weight
    work in ``main``; the package and session run a build with or without the lifted
    function alike."""
    from tvm import relax

    lifted = relax.transform.LiftTransformParams()(mod)
    try:
        return lifted if relax.analysis.well_formed(lifted) else mod
    except ValueError:  # well_formed raises on an undefined variable instead of answering
        return mod


def _calls(mod: Any, op_name: str) -> bool:
    """Whether ``mod``'s ``main`` binds a call of the Relax op ``op_name``."""
    from tvm import relax
    from tvm.ir import Op

    op = Op.get(op_name)
    body = mod["main"].body
    for block in getattr(body, "blocks", []):
        for binding in block.bindings:
            value = getattr(binding, "value", None)
            if isinstance(value, relax.Call) and value.op.same_as(op):
                return True
    return False


def cpu_pipeline(target: Any, tune_dir: str | None = None) -> Any:
    """TVM's CPU pipeline with our default schedules (and, given ``tune_dir``, the tuned
    ones from its MetaSchedule database) between fusion and lowering."""
    tvm = require_tvm()
    from tvm.relax.backend.cpu_generic import pipeline as cpu

    from torsh_gen.backends.tvm.schedule_cpu import default_schedule

    tuned = []
    if tune_dir is not None:
        from torsh_gen.backends.tvm.tune import apply_database

        tuned = [apply_database(tune_dir)]

    @tvm.transform.module_pass(opt_level=0, name="TorshCpuPipeline")
    def pipeline(mod: Any, _ctx: Any) -> Any:
        with target:
            seq = tvm.transform.Sequential(
                cpu.library_dispatch_passes(target)
                + cpu.legalize_passes(target)
                + tuned
                + [default_schedule()]
                + cpu.dataflow_lower_passes(target)
                + cpu.finalize_passes(target)
            )
            return seq(mod)

    return pipeline
