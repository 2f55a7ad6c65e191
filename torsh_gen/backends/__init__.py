"""Backends: optimized Graph → artifact, one folder per backend.

``backend_for(target)`` names the backend that builds a target; a backend module exposes
``write_package(graph, folder, info)``. The Python (numpy/numba) backend builds ``cpu``;
the llvm backend builds every target described in ``targets/*.toml`` and ``host``, except
those whose file names another backend (``backend = "cuda"``: the CUDA targets).
"""

from __future__ import annotations

import importlib
from types import ModuleType

from torsh_gen.errors import InputError

#: target name → module of the backend that builds it.
TARGETS: dict[str, str] = {"cpu": "torsh_gen.backends.python"}


def backend_for(target: str, backend: str = "torsh") -> ModuleType:
    """The backend module building ``target``; InputError listing the known targets.

    ``backend="tvm"`` picks the TVM backend, whose targets (cpu, cuda, vulkan, metal,
    opencl, rocm) are TVM's code generators rather than ours."""
    if backend == "tvm":
        from torsh_gen.backends.tvm.build import TARGETS as TVM_TARGETS

        if target not in TVM_TARGETS:
            raise InputError(f"unknown target '{target}' for --backend tvm; known: {', '.join(TVM_TARGETS)}")
        return importlib.import_module("torsh_gen.backends.tvm")
    if backend != "torsh":
        raise InputError(f"unknown backend '{backend}'; choose torsh (our code generators) or tvm")
    module = TARGETS.get(target)
    if module is None:
        from torsh_gen.backends.llvm.targets import ALIASES, load_target, target_names

        native = target_names()
        if target not in native and target not in ALIASES:
            known = ", ".join(sorted(TARGETS) + native + sorted(ALIASES))
            raise InputError(f"unknown target '{target}'; known targets: {known}")
        module = f"torsh_gen.backends.{load_target(target).backend}"
    return importlib.import_module(module)
