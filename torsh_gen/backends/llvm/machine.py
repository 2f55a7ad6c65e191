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


def optimize(module: ir.Module | str, spec: TargetSpec):
    """Parse, verify and optimize ``module`` (or its IR text) at O3 (loop and SLP
    vectorization on)."""
    import llvmlite.binding as llvm

    tm = target_machine(spec)
    if isinstance(module, ir.Module):
        module.triple = spec.triple
        module.data_layout = str(tm.target_data)
        text = str(module)
    else:
        text = module
    parsed = llvm.parse_assembly(text)
    parsed.triple = spec.triple
    parsed.data_layout = str(tm.target_data)
    parsed.verify()
    pto = llvm.create_pipeline_tuning_options(speed_level=3)
    pto.loop_vectorization = True
    pto.slp_vectorization = True
    pb = llvm.create_pass_builder(tm, pto)
    pb.getModulePassManager().run(parsed, pb)
    return parsed, tm


def object_code(module: ir.Module | str, spec: TargetSpec) -> bytes:
    """The optimized object file of ``module`` (or its IR text) for ``spec``."""
    parsed, tm = optimize(module, spec)
    return tm.emit_object(parsed)


def assembly(module: ir.Module | str, spec: TargetSpec) -> str:
    """The optimized assembly text (for inspection and tests)."""
    parsed, tm = optimize(module, spec)
    return tm.emit_assembly(parsed)


#: IR text above which several objects are built side by side in worker processes
#: (llvmlite holds one lock around every LLVM call, so threads do not help; a worker costs
#: about half a second to start).
PARALLEL_IR_BYTES = 4 << 20


def object_codes(jobs: list[tuple[str, TargetSpec]]) -> list[bytes]:
    """The objects of several (IR text, target) pairs. When there are several, they are
    large and there are cores to spare, all but the first build in ``python -m
    torsh_gen.backends.llvm.machine`` workers while this process builds the first
    (x86_64-linux's two builds of inception_v1: 55 s one after the other); otherwise one
    after the other here. A worker is a plain subprocess, so nothing depends on how the
    caller's ``__main__`` or threads would fare under multiprocessing."""
    from torsh_gen.backends.llvm.targets import cpu_count

    if len(jobs) < 2 or cpu_count() < 2 or sum(len(t) for t, _ in jobs) < PARALLEL_IR_BYTES:
        return [object_code(text, spec) for text, spec in jobs]
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory(prefix="torsh-gen-llvm-") as tmp:
        procs = []
        for k, (text, spec) in enumerate(jobs[1:], start=1):
            ir_path, obj_path = Path(tmp) / f"{k}.ll", Path(tmp) / f"{k}.o"
            ir_path.write_text(text)
            argv = [sys.executable, "-m", __name__, str(ir_path), str(obj_path)]
            argv += [spec.triple, spec.cpu, spec.features]
            procs.append((subprocess.Popen(argv, stderr=subprocess.PIPE, text=True), obj_path))
        first = object_code(*jobs[0])
        codes = [first]
        for proc, obj_path in procs:
            _, err = proc.communicate()
            if proc.returncode != 0:
                from torsh_gen.backends.llvm.native_build import NativeBuildError

                raise NativeBuildError(f"LLVM worker failed (exit {proc.returncode}): {err.strip()[-500:]}")
            codes.append(obj_path.read_bytes())
    return codes


def _worker(argv: list[str]) -> None:
    """``IR_FILE OBJECT_FILE TRIPLE CPU FEATURES``: one object of ``object_codes``."""
    from pathlib import Path

    from torsh_gen.backends.llvm.targets import TargetSpec

    ir_file, obj_file, triple, cpu, features = argv
    spec = TargetSpec(
        name="worker", description="", triple=triple, cpu=cpu, features=features,
        vector_bits=0, threads=0, dtypes=(), packaging="", runs_here=False,
    )
    Path(obj_file).write_bytes(object_code(Path(ir_file).read_text(), spec))


if __name__ == "__main__":
    import sys

    _worker(sys.argv[1:])
