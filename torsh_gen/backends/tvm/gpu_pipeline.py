"""TVM's generic GPU pipeline, with one change for Metal.

For every GPU API we use TVM's own pipeline (dlight's default rules give each kernel a
thread binding). On Metal, dlight's matmul rule first tries a schedule tensorized with
simdgroup matrix intrinsics, and in apache-tvm 0.27 that attempt crashes the process
(a segmentation fault inside ``Tensorize``, on a plain float32 MatMul; the rule's own
``try/except`` cannot catch it). ``MetalSafeMatmul`` schedules Metal matmuls with the
generic tiled GPU schedule instead: dlight picks that schedule's tile configuration from
the target kind, so it is asked as for OpenCL, with Metal's thread limits.
"""

from __future__ import annotations

from typing import Any


def gpu_pipeline(target: Any) -> Any:
    """The Relax pipeline for a GPU ``target``: TVM's default, with Metal's matmul rule
    replaced (see the module docstring)."""
    import tvm
    from tvm import relax

    if target.kind.name != "metal":
        return relax.get_default_pipeline(target)
    from tvm.relax.backend.gpu_generic import pipeline as generic
    from tvm.s_tir import dlight as dl

    legalize = [p for p in generic.legalize_passes(target) if not _is_default_schedule(p)]
    schedule = dl.ApplyDefaultSchedule(_metal_safe_matmul(), dl.gpu.GEMV(), dl.gpu.Reduction(), dl.gpu.GeneralReduction(), dl.gpu.Fallback())

    @tvm.transform.module_pass(opt_level=0, name="TorshMetalPipeline")
    def pipeline(mod: Any, _ctx: Any) -> Any:
        with target:
            seq = tvm.transform.Sequential(
                generic.library_dispatch_passes(target)
                + legalize
                + [schedule]
                + generic.dataflow_lower_passes(target)
                + generic.finalize_passes(target)
            )
            return seq(mod)

    return pipeline


def _is_default_schedule(p: Any) -> bool:
    return "ApplyDefaultSchedule" in str(getattr(p, "info", "")) or type(p).__name__ == "ApplyDefaultSchedule"


def _metal_safe_matmul() -> Any:
    from tvm.s_tir import dlight as dl
    from tvm.target import Target

    class MetalSafeMatmul(dl.gpu.Matmul):
        """dlight's Matmul rule, asked as for OpenCL when the target is Metal."""

        def apply(self, func: Any, target: Any, tunable: bool) -> Any:
            if target.kind.name == "metal":
                target = Target({"kind": "opencl", "max_num_threads": int(target.attrs["max_num_threads"])}, host=target.host)
            return super().apply(func, target, tunable)

    return MetalSafeMatmul()
