"""Packaging of the ``sharedlib`` targets (x86_64-linux, aarch64-linux, host).

The package folder holds what a C, C++ or Python user needs and nothing else::

    lib<name>.so    the model behind a C ABI (libc and pthreads only), exports = the API
    <name>.h        that API, documenting every input and output
    weights.bin     the weights, mmap'ed read-only (absent with --embed-weights)
    __init__.py     ctypes wrapper: run(**inputs) and the reusable Model (numpy + ctypes)
    run_model       INPUT_DIR OUTPUT_DIR: .npy files in, .npy files out
    bench_model     [ITERATIONS] [THREADS]: per-call latency, measured in C
    manifest.json   signature and provenance; README.md: how to use all of the above
    src/            model.o, the generated C and build.sh, to rebuild the binaries

The drivers find the library through the rpath ``$ORIGIN`` and the weights beside
themselves, so the folder can move as a whole.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torsh_gen.backends.kernel.program import Program
from torsh_gen.backends.llvm.artifact import (
    WEIGHTS_FILE,
    ArtifactInfo,
    PackageResult,
    manifest,
    write_json,
)
from torsh_gen.backends.llvm.native_build import (
    CFLAGS,
    LDFLAGS,
    Build,
    Sources,
    api_symbols,
    compile_objects,
    export_map,
    render,
    write_sources,
)
from torsh_gen.backends.llvm.targets import TargetSpec

DRIVERS = ("run_model", "bench_model")
MANIFEST_FILE = "manifest.json"


def write(
    program: Program,
    spec: TargetSpec,
    folder: Path,
    info: ArtifactInfo,
    variants: Sequence[Any] = (),
) -> PackageResult:
    """Generate, compile and link the package of ``program`` for ``spec`` into ``folder``
    (``variants``: further CPU builds of the same graph, picked at create)."""
    from torsh_gen.backends.python.formatting import format_code

    embedded = bool(getattr(info, "embed_weights", False))
    src = folder / "src"
    sources = write_sources(program, spec, info, folder, src, embedded, variants)
    p = sources.prefix
    for driver in DRIVERS:
        (src / f"{driver}.c").write_text(render(f"{driver}.c.j2", **sources.values))
    if not embedded:
        (folder / WEIGHTS_FILE).write_bytes(bytes(program.weights))
    build = Build(src)
    link_library(build, spec.cc, sources)
    for driver in DRIVERS:
        build.add(
            spec.cc,
            *CFLAGS,
            "-I..",
            f"{driver}.c",
            "-o",
            f"../{driver}",
            "-L..",
            f"-l{p}",
            "-Wl,-rpath,$ORIGIN",
            *LDFLAGS,
        )
    build.write_script()
    build.run()
    tidy(src, sources)
    (folder / "__init__.py").write_text(format_code(render("__init__.py.j2", **sources.values)))
    (folder / "README.md").write_text(render("README.md.j2", **sources.values))
    files = {
        "library": f"lib{p}.so",
        "header": f"{p}.h",
        "python": "__init__.py",
        "driver": "run_model",
        "bench": "bench_model",
        "sources": "src",
    }
    if not embedded:
        files["weights"] = WEIGHTS_FILE
    write_manifest(folder, info, spec, program, files, embedded, sources.values["variants"])
    return result(folder, program, sources.values["workspace_bytes"])


def link_library(build: Build, cc: str, sources: Sources) -> None:
    """Queue the compile of the runtime and the link of ``../lib<name>.so`` (glibc)."""
    p = sources.prefix
    compile_objects(build, cc, sources, "..")
    exports = export_map(build.src, api_symbols(p))
    build.add(
        cc,
        "-shared",
        "-o",
        f"../lib{p}.so",
        *sources.objects,
        f"-Wl,--version-script={exports}",
        f"-Wl,-soname,lib{p}.so",
        *LDFLAGS,
        "-lpthread",
    )


def tidy(src: Path, sources: Sources) -> None:
    """Drop the objects build.sh recreates (the model objects stay: they are sources)."""
    kept = {row["object"] for row in sources.values["variants"]}
    for obj in sources.objects:
        if obj not in kept:
            (src / obj).unlink(missing_ok=True)


def write_manifest(
    folder: Path,
    info: ArtifactInfo,
    spec: TargetSpec,
    program: Program,
    files: dict[str, str],
    embedded: bool,
    variants: list[dict[str, Any]],
) -> None:
    """manifest.json: artifact.manifest plus where the weights live and the CPU variants."""
    data = manifest(info, spec, program, files)
    data["cpu_variants"] = [
        {"name": v["name"], "requires": v["requires"], "vector_bits": v["vector_bits"]}
        for v in variants
    ]
    data["weights"] = {
        "file": None if embedded else WEIGHTS_FILE,
        "bytes": len(program.weights),
        "embedded": embedded,
    }
    write_json(folder / MANIFEST_FILE, data)


def result(folder: Path, program: Program, workspace_bytes: int) -> PackageResult:
    """The PackageResult of a finished package folder."""
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    nodes = len({c.node for c in program.calls if c.op_type != "copy"})
    memory = {"workspace_bytes": workspace_bytes, "weights_bytes": len(program.weights)}
    return PackageResult(files, nodes, 0, len(program.kernels), len(program.weights), memory)
