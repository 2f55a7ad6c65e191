"""The llvm backend: kernel IR → LLVM IR → objects, packaged per target.

It builds every target described in ``targets/*.toml`` (x86_64-linux, aarch64-linux,
android-arm64, wasm32) and ``host``: the same lowering, the target's schedule data
(vector lanes, threads), LLVM for the target's triple, then the packaging named by the
target (``package_sharedlib``, ``package_android``, ``package_wasm``). ``write_package``
is the entry point ``compile_model`` calls.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

from torsh_gen.backends.kernel.lower import Schedule
from torsh_gen.backends.kernel.program import Program, WeightStore, build_program, lowerable
from torsh_gen.backends.llvm.artifact import ArtifactInfo, PackageResult
from torsh_gen.backends.llvm.targets import TargetSpec, load_target
from torsh_gen.ir.graph import Graph, Node


@dataclass(frozen=True)
class VariantProgram:
    """One CPU variant of a library: its target data (named by ``spec.variant_name``) and
    its program."""

    spec: TargetSpec
    program: Program


__all__ = [
    "ArtifactInfo",
    "PackageResult",
    "VariantProgram",
    "lower_graph",
    "lower_variants",
    "lowers",
    "precompile",
    "schedule_for",
    "write_package",
]


def schedule_for(spec: TargetSpec) -> Schedule:
    """Schedule parameters from the target's data."""
    return Schedule(
        lanes=spec.vector_lanes,
        threads=spec.threads != 1,
        accumulators=spec.accumulators,
        pointwise_accumulators=spec.pointwise_accumulators,
        channel_tiles=spec.channel_tiles,
        rolled_tap_accumulators=spec.rolled_tap_accumulators,
        row_vectors=spec.row_vectors,
        long_row_registers=spec.long_row_registers,
    )


def lower_graph(graph: Graph, spec: TargetSpec, store: WeightStore | None = None) -> Program:
    """Type-check and lower the optimized ``graph`` (memory plan attached) for ``spec``
    (``store``: a weights store shared with the other variants' programs)."""
    from torsh_gen.ops.inference import infer_types

    infer_types(graph)
    return build_program(graph, schedule_for(spec), store)


def lower_variants(graph: Graph, spec: TargetSpec) -> list[VariantProgram]:
    """The baseline program of ``spec`` and one per CPU variant, sharing one weights blob."""
    store = WeightStore()
    specs = [spec] + [spec.for_variant(variant) for variant in spec.variants]
    return [VariantProgram(s, lower_graph(graph, s, store)) for s in specs]


def write_package(graph: Graph, folder: Path, info: ArtifactInfo) -> PackageResult:
    """Build the artifact of ``graph`` for ``info.target`` into the empty ``folder``."""
    spec = load_target(info.target)
    spec.require_toolchain()
    packaging = importlib.import_module(f"torsh_gen.backends.llvm.package_{spec.packaging}")
    if spec.variants:
        built = lower_variants(graph, spec)
        return packaging.write(built[0].program, spec, Path(folder), info, variants=built[1:])
    return packaging.write(lower_graph(graph, spec), spec, Path(folder), info)


def lowers(node: Node) -> bool:
    """Whether the native targets have a lowering for ``node`` (the compile step expands
    ONNX function ops they lack into their bodies first)."""
    return lowerable(node)


def precompile(folder: Path) -> float:
    """Nothing left to compile: objects are built and linked by ``write_package``."""
    return 0.0
