"""The cuda backend: kernel IR scheduled for the GPU → PTX, cuBLAS for matrix products,
packaged with a CuPy runtime that replays the whole forward as a CUDA graph.

``write_package`` is the entry point ``compile_model`` calls for ``--target cuda``
(``cuda-sm80``) and ``cuda-sm90``. It needs llvmlite only: no GPU, no CUDA toolkit.
The artifact's layout and ``plan.json`` are described in docs/cuda.md.
"""

from __future__ import annotations

from pathlib import Path

from torsh_gen.backends.cuda.package import write_package
from torsh_gen.backends.kernel.program import lowerable
from torsh_gen.backends.llvm.artifact import ArtifactInfo, PackageResult
from torsh_gen.ir.graph import Node

__all__ = ["ArtifactInfo", "PackageResult", "lowers", "precompile", "write_package"]


def lowers(node: Node) -> bool:
    """Whether the CUDA target has a lowering for ``node`` (the native targets' set)."""
    return lowerable(node)


def precompile(folder: Path) -> float:
    """Nothing left to compile: the driver JIT-compiles the PTX when the model loads."""
    return 0.0
