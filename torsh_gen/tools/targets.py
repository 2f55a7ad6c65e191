"""The targets ``torsh-gen compile --target`` accepts, as rows of plain data.

``cpu`` is the Python (numpy/numba) backend and needs only Python packages; every other
target is a ``targets/<name>.toml`` row of the llvm backend (the CUDA ones: of the cuda
backend), plus ``host`` (this machine's
own CPU, detected through LLVM). Each row says what the target produces, the commands it
needs, the Debian packages that provide them and whether they are installed here, so
users see before compiling what ``make toolchains`` would add.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from torsh_gen.errors import TorshGenError

#: The Python backend's row: it runs wherever torsh-gen itself runs.
CPU_ROW: dict[str, Any] = {
    "name": "cpu",
    "backend": "python",
    "description": "Python package: numpy + numba kernels, runs on any CPU that runs Python",
    "triple": "",
    "cpu": "",
    "vector_bits": None,
    "packaging": "python",
    "needs": [],
    "python_packages": ["numpy", "numba"],
    "apt": [],
    "runs_here": True,
    "emulator": "",
}


def target_rows() -> list[dict[str, Any]]:
    """One row per target: cpu, every ``targets/*.toml`` and host, with what is missing here."""
    from torsh_gen.backends.llvm.targets import target_names

    rows = [_cpu_row()]
    for name in target_names():
        rows.append(target_row(name))
    return rows


def target_row(name: str) -> dict[str, Any]:
    """The row of one llvm-backend target; ``host`` on an unsupported CPU says why."""
    from torsh_gen.backends.llvm.targets import load_target

    try:
        spec = load_target(name)
    except TorshGenError as e:  # host on a machine LLVM's host target does not cover
        return {
            "name": name,
            "backend": "llvm",
            "description": str(e),
            "triple": "",
            "cpu": "",
            "vector_bits": None,
            "packaging": "",
            "needs": [],
            "python_packages": ["llvmlite"],
            "apt": [],
            "runs_here": False,
            "emulator": "",
            "missing": [],
            "installed": False,
        }
    missing = spec.missing_tools() + _missing_python(["llvmlite"])
    return {
        "name": spec.name,
        "backend": spec.backend,
        "description": spec.description,
        "triple": spec.triple,
        "cpu": spec.cpu,
        "vector_bits": spec.vector_bits,
        "packaging": spec.packaging,
        "needs": list(spec.needs),
        "python_packages": ["llvmlite"],
        "apt": list(spec.apt),
        "runs_here": spec.runs_here,
        "emulator": " ".join(spec.emulator),
        "missing": missing,
        "installed": not missing,
    }


def _cpu_row() -> dict[str, Any]:
    missing = _missing_python(CPU_ROW["python_packages"])
    return {**CPU_ROW, "missing": missing, "installed": not missing}


def _missing_python(packages: list[str]) -> list[str]:
    """Packages that cannot be imported here (found without importing them)."""
    return [p for p in packages if importlib.util.find_spec(p) is None]
