"""Backends: optimized Graph → artifact, one folder per backend.

``backend_for(target)`` names the backend that builds a target; a backend module exposes
``write_package(graph, folder, info)``. Only the Python (numpy/numba) backend exists so
far; it builds the ``cpu`` target.
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
        raise InputError(f"unknown target '{target}'; known targets: {', '.join(sorted(TARGETS))}")
    return importlib.import_module(module)
