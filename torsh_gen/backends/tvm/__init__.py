"""The TVM backend: our IR → TVM Relax → TVM's code generators (``--backend tvm``).

``torsh-gen compile MODEL --backend tvm --target cpu|cuda|vulkan|metal|opencl|rocm``.
Our frontends and passes produce the graph; ``convert`` builds Relax from it with our own
converters (not TVM's ONNX frontend); ``build`` compiles it with TVM for the target;
``package`` writes the exported library, the weights, the manifest and a Python package
importing only TVM's runtime and numpy. Apache TVM is the optional extra ``tvm``; nothing
here imports it until a build needs it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from torsh_gen.backends.llvm.artifact import ArtifactInfo as _NativeInfo
from torsh_gen.backends.llvm.artifact import PackageResult
from torsh_gen.backends.tvm.convert import has_converter
from torsh_gen.ir.graph import Node

__all__ = ["SKIP_PASSES", "ArtifactInfo", "PackageResult", "lowers", "precompile", "write_package"]

@dataclass
class ArtifactInfo(_NativeInfo):
    """The manifest's provenance, plus what a TVM build may be asked for."""

    #: MetaSchedule trials (``--tune N``); 0 builds with the default schedules only.
    tune: int = 0
    #: The artifact being replaced, whose tuning database a rebuild reuses.
    previous_dir: Path | None = None
    #: Called with one line per step of tuning (the CLI's progress display).
    progress: Callable[[str], None] | None = None


#: Our passes that make ops of our own domain (fused kernels, fused quantized ops) which TVM
#: would only have to take apart again: TVM fuses by itself (relax FuseOps / FuseTIR), and
#: plans memory by itself (StaticPlanBlockMemory).
SKIP_PASSES = frozenset({"fuse_quant", "fuse_epilogues", "fuse_elementwise", "plan_memory"})


def lowers(node: Node) -> bool:
    """Whether a converter exists for ``node``; ops without one that ONNX defines as
    functions are expanded into their bodies before conversion."""
    return has_converter(node)


def write_package(graph, folder: Path, info: ArtifactInfo) -> PackageResult:  # noqa: ANN001
    from torsh_gen.backends.tvm.package import write_package as write

    return write(graph, folder, info)


def precompile(folder: Path) -> float:
    """Nothing left to compile: the library was built and exported by write_package."""
    return 0.0
