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


def backend_for(target: str) -> ModuleType:
    """The backend module building ``target``; InputError listing the known targets."""
    module = TARGETS.get(target)
    if module is None:
        from torsh_gen.backends.llvm.targets import ALIASES, load_target, target_names

        native = target_names()
        if target not in native and target not in ALIASES:
            known = ", ".join(sorted(TARGETS) + native + sorted(ALIASES))
            raise InputError(f"unknown target '{target}'; known targets: {known}")
        module = f"torsh_gen.backends.{load_target(target).backend}"
    return importlib.import_module(module)
