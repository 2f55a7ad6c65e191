"""``scaffold tests``: a pytest suite that checks a model's engine against recorded goldens.

The suite (``test_golden.py``, ``golden.npz``, ``README.md``) is for users' CI: it runs
the engine under test (a compiled artifact, or onnxruntime on the model file) on inputs
recorded at generation time and checks the outputs against the recorded outputs within a
tolerance, the output names, dtypes and shapes, that wrong input names, shapes and dtypes
are refused with errors naming the input, and that repeated runs give identical bytes.

Model-derived names reach the generated module only as ASCII string literals; the golden
archive keys are ``input_<i>``/``output_<i>``. The archive is written byte-for-byte
deterministically (see ``common.npz_bytes``), so regenerating unchanged goldens shows no diff.
This module renders; computing goldens (loading models, running engines) is the caller's
job (``torsh_gen.tools.goldens``), so scaffold stays below tools in the layering.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from torsh_gen.errors import InputError
from torsh_gen.scaffold.common import (
    TensorSpec,
    atomic_folder,
    default_folder_mode,
    identifier,
    npz_bytes,
    py_string,
    render,
    write_tree,
)

GENERATOR = "scaffold_tests"
ENGINES = ("artifact", "onnxruntime")
#: Default tolerances: those of `torsh-gen validate` (room for reordered float sums only).
DEFAULT_RTOL = 1e-3
DEFAULT_ATOL = 1e-4


@dataclass
class Goldens:
    """The engine under test, the model's signature and the recorded inputs/outputs."""

    engine: str  # what the generated tests run: "artifact" or "onnxruntime"
    target: Path  # the artifact folder or the model file they run
    source_name: str  # the model's file name (untrusted text)
    computed_by: str  # what computed the goldens: "onnxruntime", "reference" or "artifact"
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    feeds: dict[str, np.ndarray]
    results: dict[str, np.ndarray]


def generate_tests(goldens: Goldens, out: str | Path, *, rtol: float = DEFAULT_RTOL,
                   atol: float = DEFAULT_ATOL, force: bool = False) -> list[str]:
    """Write the golden test suite for ``goldens`` into ``out``; returns the files written."""
    out = Path(out)
    files = render_tests(goldens, out, rtol=rtol, atol=atol)
    with atomic_folder(out, force) as tmp:
        write_tree(tmp, files)
        default_folder_mode(tmp)
    return sorted(files)


def render_tests(goldens: Goldens, out: Path, *, rtol: float, atol: float) -> dict[str, str | bytes]:
    """The suite's files (relative path → text or bytes) for an output folder ``out``."""
    if goldens.engine not in ENGINES:
        raise ValueError(f"unknown engine {goldens.engine!r}")
    if not (rtol >= 0 and atol >= 0 and np.isfinite(rtol) and np.isfinite(atol)):
        raise InputError(f"--rtol and --atol must be finite and not negative, got {rtol} and {atol}")
    if not goldens.outputs:
        raise InputError("the model has no outputs to check")
    arrays = {f"input_{i}": goldens.feeds[s.name] for i, s in enumerate(goldens.inputs)}
    arrays.update({f"output_{i}": goldens.results[s.name] for i, s in enumerate(goldens.outputs)})
    values: dict[str, Any] = {
        "engine": goldens.engine,
        "target_src": py_string(_relative(goldens.target, out)),
        "target_text": _relative(goldens.target, out),
        "source_src": py_string(goldens.source_name),
        "source_name": goldens.source_name,
        "computed_by": goldens.computed_by,
        "inputs": [_view(s, f"input_{i}", goldens.feeds[s.name]) for i, s in enumerate(goldens.inputs)],
        "outputs": [_view(s, f"output_{i}", goldens.results[s.name]) for i, s in enumerate(goldens.outputs)],
        "rtol": repr(float(rtol)),
        "atol": repr(float(atol)),
    }
    stem = identifier(Path(goldens.source_name).stem.lower(), fallback="model")
    values["test_file"] = f"test_{stem}_golden.py"
    return {
        values["test_file"]: render(GENERATOR, "test_golden.py.j2", **values),
        "golden.npz": npz_bytes(arrays),
        "README.md": render(GENERATOR, "README.md.j2", **values),
    }


def _relative(target: Path, out: Path) -> str:
    """``target`` as seen from ``out`` (POSIX separators), so the suite moves with the repo."""
    try:
        return Path(os.path.relpath(Path(target).resolve(), Path(out).resolve())).as_posix()
    except ValueError:  # another drive on Windows
        return Path(target).resolve().as_posix()


def _view(s: TensorSpec, key: str, array: np.ndarray) -> dict[str, Any]:
    """What the templates need of one input or output; every model string as a literal."""
    if s.shape is None:
        shape_src = "None"
    else:
        dims = [py_string(d) if isinstance(d, str) else repr(d) for d in s.shape]
        shape_src = "(" + ", ".join(dims) + ("," if len(dims) == 1 else "") + ")"
    return {
        "name_src": py_string(s.name),
        "name": s.name,
        "ident": s.ident,
        "key": key,
        "dtype": np.dtype(s.dtype).name if s.dtype != "object" else "object",
        "shape_src": shape_src,
        "golden_shape": list(array.shape),
    }
