"""Load a compiled artifact (a standalone package folder) and compile one on demand.

An artifact is the folder ``torsh-gen compile`` writes: ``__init__.py`` exposing
``run(**inputs)``, a ``Model`` class and ``INPUTS``/``OUTPUTS``, beside ``manifest.json``.
``load_artifact`` imports it from its path under a fresh module name, so two artifacts
with the same folder name (or the same artifact loaded twice) never collide in
``sys.modules`` and nothing needs to be on ``sys.path``.
"""

from __future__ import annotations

import atexit
import hashlib
import importlib.util
import itertools
import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from torsh_gen.errors import InputError, TorshGenError

MANIFEST = "manifest.json"
_counter = itertools.count()


class ArtifactError(InputError):
    """A folder that is not a usable compiled artifact."""


def is_artifact(folder: str | os.PathLike) -> bool:
    """True when ``folder`` holds an ``__init__.py`` and a ``manifest.json``."""
    p = Path(folder)
    return (p / "__init__.py").is_file() and (p / MANIFEST).is_file()


def read_manifest(folder: str | os.PathLike) -> dict[str, Any]:
    """The artifact's manifest (source model hash, target, passes, signature)."""
    p = Path(folder) / MANIFEST
    try:
        data = json.loads(p.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ArtifactError(f"{p}: cannot read the artifact manifest ({e}); recompile with `torsh-gen compile`") from None
    if not isinstance(data, dict):
        raise ArtifactError(f"{p}: the manifest is not a JSON object; recompile with `torsh-gen compile`")
    return data


def load_artifact(folder: str | os.PathLike) -> ModuleType:
    """Import the compiled package in ``folder`` and return its module."""
    p = Path(folder).resolve()
    if not p.is_dir():
        raise ArtifactError(f"{folder}: no such artifact folder; compile one with `torsh-gen compile MODEL -o DIR`")
    if not is_artifact(p):
        raise ArtifactError(f"{folder}: not a torsh-gen artifact (expected __init__.py and {MANIFEST}); compile one with `torsh-gen compile MODEL -o DIR`")
    name = _module_name(p)
    spec = importlib.util.spec_from_file_location(name, p / "__init__.py", submodule_search_locations=[str(p)])
    if spec is None or spec.loader is None:
        raise ArtifactError(f"{folder}: cannot import the artifact package")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # relative imports inside the package resolve through this
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        sys.modules.pop(name, None)
        raise ArtifactError(f"{folder}: importing the artifact failed ({type(e).__name__}: {e}); recompile it") from None
    if not callable(getattr(module, "run", None)):
        sys.modules.pop(name, None)
        raise ArtifactError(f"{folder}: the artifact has no run() function; recompile it with this torsh-gen")
    return module


def _module_name(folder: Path) -> str:
    stem = re.sub(r"[^0-9A-Za-z_]", "_", folder.name) or "artifact"
    digest = hashlib.sha1(str(folder).encode()).hexdigest()[:8]
    return f"_torsh_artifact_{stem}_{digest}_{next(_counter)}"


def package_name(stem: str) -> str:
    """A valid Python package name made from a model file's stem."""
    name = re.sub(r"[^0-9A-Za-z_]", "_", stem)
    return name if name and not name[0].isdigit() else f"model_{name}"


def compile_to_temp(
    model: str | os.PathLike, *, level: str = "O3", input_shapes: Sequence[str] | None = None, target: str = "cpu",
    backend: str = "torsh",
) -> Path:
    """Compile ``model`` for ``target`` (cpu, or a native target whose artifact has the same
    Python interface; with ``backend="tvm"`` a TVM build) into a temporary folder removed
    when the process exits."""
    try:
        from torsh_gen.tools.compile import compile_model
    except ModuleNotFoundError as e:
        if e.name != "torsh_gen.tools.compile":
            raise
        raise TorshGenError("this torsh-gen cannot compile models yet; pass --artifact DIR") from None
    tmp = Path(tempfile.mkdtemp(prefix="torsh-gen-artifact-"))
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    out = tmp / package_name(Path(model).stem)
    compile_model(model, out, target=target, level=level, input_shapes=input_shapes, backend=backend)
    return out


def ensure_artifact(
    model: str | os.PathLike,
    artifact_dir: str | os.PathLike | None = None,
    *,
    level: str = "O3",
    input_shapes: Sequence[str] | None = None,
    target: str = "cpu",
    backend: str = "torsh",
) -> tuple[ModuleType, Path]:
    """The artifact of ``model``: loaded from ``artifact_dir``, or compiled for ``target``
    (by ``backend``) into a temp folder."""
    folder = (
        Path(artifact_dir)
        if artifact_dir is not None
        else compile_to_temp(model, level=level, input_shapes=input_shapes, target=target, backend=backend)
    )
    return load_artifact(folder), folder
