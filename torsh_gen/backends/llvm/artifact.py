"""What every llvm-built artifact shares: the manifest, safe file names, atomic writes.

The manifest lists ``inputs`` and ``outputs`` with ``name`` (as in the model), ``dtype``
(numpy name), ``shape`` and ``file``: the ``.npy`` file the command-line drivers read or
write for that tensor. File names are derived from tensor names with everything but
letters, digits, ``_`` and ``-`` replaced, so a model-chosen name never becomes a path.
An output whose size depends on the data (NonZero, Unique, ...) names its varying dims in
``shape`` (strings) and gives the buffer it needs as ``max_shape``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torsh_gen.backends.kernel.program import IOSpec, Program
from torsh_gen.backends.llvm.targets import TargetSpec

FORMAT = "torsh-gen-native/1"
WEIGHTS_FILE = "weights.bin"


@dataclass
class ArtifactInfo:
    """What the manifest records about where the artifact came from."""

    package: str
    source_name: str
    source_sha256: str
    version: str
    target: str = ""
    level: str = ""
    passes: list[str] = field(default_factory=list)
    #: Weights inside the library (``--embed-weights``) instead of the file weights.bin.
    embed_weights: bool = False
    #: CUDA targets: float32 GEMMs may use TF32 tensor cores (``--tf32``).
    tf32: bool = False


@dataclass
class PackageResult:
    """What was written and how the graph was covered (``CompileReport`` fields)."""

    files: list[str]
    fast_nodes: int
    reference_nodes: int
    kernels: int
    weight_bytes: int
    memory: dict[str, int]
    vendored: list[str] = field(default_factory=list)


def npy_file_names(names: list[str], prefix: str) -> list[str]:
    """One safe, unique ``.npy`` file name per tensor name."""
    out: list[str] = []
    seen: set[str] = set()
    for k, name in enumerate(names):
        base = re.sub(r"[^A-Za-z0-9_-]", "_", name)[:64].strip("_-") or f"{prefix}{k}"
        cand = base
        n = 1
        while cand.lower() in seen:
            n += 1
            cand = f"{base}_{n}"
        seen.add(cand.lower())
        out.append(cand + ".npy")
    return out


def io_entries(specs: list[IOSpec], prefix: str) -> list[dict[str, Any]]:
    """Manifest entries for the model's inputs or outputs. An output whose size depends on
    the data has its varying dims as names in ``shape`` and its upper bound (the buffer
    it needs) as ``max_shape``."""
    files = npy_file_names([s.name for s in specs], prefix)
    out = []
    for s, f in zip(specs, files):
        entry: dict[str, Any] = {"name": s.name, "dtype": s.numpy_dtype, "shape": list(s.shape), "file": f}
        if s.dims is not None:
            entry["shape"] = list(s.dims)
            entry["max_shape"] = list(s.max_shape)
        out.append(entry)
    return out


def manifest(info: ArtifactInfo, spec: TargetSpec, program: Program, files: dict[str, str]) -> dict[str, Any]:
    """The manifest of a native artifact (``files``: role → file name)."""
    return {
        "format": FORMAT,
        "package": info.package,
        "torsh_gen_version": info.version,
        "target": spec.name,
        "triple": spec.triple,
        "cpu": spec.cpu,
        "source": {"name": info.source_name, "sha256": info.source_sha256},
        "level": info.level,
        "passes": list(info.passes),
        "inputs": io_entries(program.inputs, "input"),
        "outputs": io_entries(program.outputs, "output"),
        "kernels": len(program.kernels),
        "kernel_calls": len(program.calls),
        "workspace_bytes": program.workspace_bytes,
        "weights": {"file": WEIGHTS_FILE, "bytes": len(program.weights)},
        "files": files,
    }


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Deterministic JSON (sorted keys would reorder inputs: insertion order is kept)."""
    path.write_text(json.dumps(data, indent=2) + "\n")
