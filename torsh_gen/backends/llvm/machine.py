"""LLVM module → optimized object code for a ``TargetSpec`` (llvmlite.binding)."""

from __future__ import annotations

from llvmlite import ir

from torsh_gen.backends.llvm.targets import TargetSpec, init_llvm


def target_machine(spec: TargetSpec, pic: bool = True):
    """An llvmlite TargetMachine for the spec's triple, CPU and features."""
    import llvmlite.binding as llvm

    init_llvm()
    target = llvm.Target.from_triple(spec.triple)
    reloc = "pic" if pic and not spec.triple.startswith("wasm") else "default"
    return target.create_target_machine(cpu=spec.cpu, features=spec.features, opt=3, reloc=reloc, codemodel="default")


def optimize(module: ir.Module, spec: TargetSpec):
    """Parse, verify and optimize ``module`` at O3 (loop and SLP vectorization on)."""
    import llvmlite.binding as llvm

    tm = target_machine(spec)
    module.triple = spec.triple
    module.data_layout = str(tm.target_data)
    parsed = llvm.parse_assembly(str(module))
    parsed.verify()
    pto = llvm.create_pipeline_tuning_options(speed_level=3)
    pto.loop_vectorization = True
    pto.slp_vectorization = True
    pb = llvm.create_pass_builder(tm, pto)
    pb.getModulePassManager().run(parsed, pb)
    return parsed, tm


def object_code(module: ir.Module, spec: TargetSpec) -> bytes:
    """The optimized object file of ``module`` for ``spec``."""
    parsed, tm = optimize(module, spec)
    return tm.emit_object(parsed)


def assembly(module: ir.Module, spec: TargetSpec) -> str:
    """The optimized assembly text (for inspection and tests)."""
    parsed, tm = optimize(module, spec)
    return tm.emit_assembly(parsed)
