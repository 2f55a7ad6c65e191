"""Golden inputs and outputs for ``scaffold tests``: pick the engine, make inputs, run once.

Given a model file, the goldens come from onnxruntime running that file (our reference
interpreter when onnxruntime cannot run it), and the generated tests check onnxruntime on
the model, or a compiled artifact when one is given. Given an artifact folder, the artifact
computes the goldens and is what the tests check. Inputs are seeded random arrays built
from the signature (symbolic dims bound to 2, so batch mix-ups show), or the user's .npz.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np

from torsh_gen.errors import InputError, TorshGenError
from torsh_gen.scaffold.common import TensorSpec, identifier, signature
from torsh_gen.scaffold.tests import Goldens
from torsh_gen.tools.artifact import is_artifact, load_artifact, read_manifest
from torsh_gen.tools.run import check_inputs, load_inputs

#: The size symbolic dims get in generated inputs.
SYMBOL_SIZE = 2
#: Golden inputs (and, separately, outputs) above this many bytes are refused: they live in git.
MAX_GOLDEN_BYTES = 64 << 20


def compute_goldens(source: str | os.PathLike, *, artifact: str | os.PathLike | None = None,
                    inputs: str | os.PathLike | None = None, seed: int = 0) -> Goldens:
    """The goldens of a model file or an artifact folder (see the module docstring)."""
    src = Path(source)
    if src.is_dir():
        if artifact is not None:
            raise InputError(f"{src} is an artifact folder; pass --artifact only with a model file")
        return _from_artifact(src, inputs, seed)
    if not src.exists():
        raise InputError(f"{src}: no such model file or artifact folder")
    return _from_model(src, None if artifact is None else Path(artifact), inputs, seed)


def _from_artifact(folder: Path, inputs: Any, seed: int) -> Goldens:
    if not is_artifact(folder):
        raise InputError(f"{folder}: not a model file or a torsh-gen artifact (no manifest.json); compile one with `torsh-gen compile`")
    manifest = read_manifest(folder)
    ins, outs = _manifest_signature(manifest)
    module = load_artifact(folder)
    feeds = _feeds(ins, inputs, seed)
    results = _run(lambda f: module.Model().run(**f), feeds, "the artifact")
    name = str(manifest.get("source", {}).get("name", folder.name))
    return Goldens("artifact", folder, name, "artifact", ins, outs, feeds, _arrays(results, outs))


def _from_model(path: Path, artifact: Path | None, inputs: Any, seed: int) -> Goldens:
    from torsh_gen.tools.loading import load_model
    from torsh_gen.tools.run import run_model

    graph = load_model(path)
    ins, outs = signature(graph)
    feeds = _feeds(ins, inputs, seed)
    if inputs is not None:
        try:
            check_inputs(graph, feeds)  # names, dtypes and shapes, before any engine runs
        except InputError as e:
            one_line = str(e).replace("\r", "\\r").replace("\n", "\\n")  # tensor names may hold newlines
            raise InputError(f"{inputs}: {one_line}") from None
    computed_by = "onnxruntime"
    try:
        results = _onnxruntime(path)(feeds)
    except _OrtUnavailable as e:
        if artifact is None:
            raise InputError(
                f"onnxruntime cannot run {path.name} ({e}); compile it with `torsh-gen compile` and "
                "pass --artifact DIR so the tests check the artifact"
            ) from None
        computed_by = "reference"
        results = _run(lambda f: run_model(graph, f), feeds, "the reference interpreter")
    if artifact is not None:
        _check_artifact_source(artifact, path)
    return Goldens("artifact" if artifact else "onnxruntime", artifact or path, path.name, computed_by,
                   ins, outs, feeds, _arrays(results, outs))


class _OrtUnavailable(Exception):
    pass


def _onnxruntime(path: Path) -> Any:
    """A function running the model file with onnxruntime; _OrtUnavailable when it cannot."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise _OrtUnavailable("onnxruntime is not installed") from None
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    try:
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as e:
        raise _OrtUnavailable(str(e).splitlines()[0] if str(e) else type(e).__name__) from None
    names = [o.name for o in sess.get_outputs()]

    def run(feeds: dict[str, np.ndarray]) -> dict[str, Any]:
        try:
            return dict(zip(names, sess.run(names, feeds)))
        except Exception as e:
            raise _OrtUnavailable(str(e).splitlines()[0] if str(e) else type(e).__name__) from None

    return run


def _check_artifact_source(artifact: Path, model: Path) -> None:
    """Refuse an artifact compiled from another model: its tests would fail for no bug."""
    if not is_artifact(artifact):
        raise InputError(f"{artifact}: not a torsh-gen artifact; compile one with `torsh-gen compile MODEL -o DIR`")
    recorded = read_manifest(artifact).get("source", {}).get("sha256")
    digest = hashlib.sha256(model.read_bytes()).hexdigest()
    if recorded and recorded != digest:
        raise InputError(f"{artifact} was compiled from another model than {model}; recompile it from {model}")


def _manifest_signature(manifest: dict) -> tuple[list[TensorSpec], list[TensorSpec]]:
    taken: set[str] = set()

    def spec(entry: Any) -> TensorSpec:
        if not isinstance(entry, dict) or entry.get("kind") != "tensor" or not entry.get("dtype"):
            raise InputError(f"artifact signature entry {entry!r} is not a tensor of known type; scaffold tests supports tensors only")
        shape = entry.get("shape")
        dims = None if shape is None else tuple(d if isinstance(d, (int, str)) else None for d in shape)
        name = str(entry.get("name"))
        return TensorSpec(name, identifier(name, taken), str(entry["dtype"]), dims)

    return [spec(e) for e in manifest.get("inputs", [])], [spec(e) for e in manifest.get("outputs", [])]


def _feeds(ins: list[TensorSpec], inputs: Any, seed: int) -> dict[str, np.ndarray]:
    for s in ins:
        if s.dtype == "object":
            raise InputError(f"input {s.name!r} is a string tensor; scaffold tests supports numeric tensors only")
    if inputs is not None:
        feeds = load_inputs(inputs)
        if set(feeds) == {""} and len(ins) == 1:
            feeds = {ins[0].name: feeds[""]}
        names = [s.name for s in ins]
        unknown = sorted(set(feeds) - set(names))
        missing = [n for n in names if n not in feeds]
        if unknown or missing:
            raise InputError(f"{inputs}: inputs must be exactly {names}; unknown {unknown}, missing {missing}")
        return {s.name: np.asarray(feeds[s.name]) for s in ins}
    rng = np.random.default_rng(seed)
    feeds, total = {}, 0
    for s in ins:
        if s.shape is None:
            raise InputError(f"input {s.name!r} has no declared shape; pass --inputs FILE.npz")
        shape = tuple(d if isinstance(d, int) else SYMBOL_SIZE if isinstance(d, str) else 1 for d in s.shape)
        dt = np.dtype(s.dtype)
        total += int(np.prod(shape, dtype=np.int64)) * dt.itemsize
        if total > MAX_GOLDEN_BYTES:
            raise InputError(f"input {s.name!r} of shape {list(shape)} is too large for golden files; pass smaller --inputs FILE.npz")
        if dt == np.bool_:
            feeds[s.name] = rng.random(shape) < 0.5
        elif dt.kind in "iu":
            feeds[s.name] = rng.integers(0, 8, size=shape).astype(dt)
        elif dt.kind == "c":
            feeds[s.name] = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dt)
        else:
            feeds[s.name] = rng.standard_normal(shape).astype(np.float32).astype(dt)
    return feeds


def _run(fn: Any, feeds: dict[str, np.ndarray], what: str) -> dict[str, Any]:
    try:
        return fn({k: v.copy() for k, v in feeds.items()})
    except TorshGenError:
        raise
    except Exception as e:
        first = str(e).splitlines()[0] if str(e) else ""
        raise InputError(f"running {what} on the golden inputs failed ({type(e).__name__}: {first}); pass valid inputs with --inputs FILE.npz") from None


def _arrays(results: dict[str, Any], outs: list[TensorSpec]) -> dict[str, np.ndarray]:
    arrays, total = {}, 0
    for s in outs:
        v = results.get(s.name)
        if not isinstance(v, (np.ndarray, np.generic)) or np.asarray(v).dtype.kind in "OUSV":
            raise InputError(f"output {s.name!r} is not a numeric tensor ({type(v).__name__}); scaffold tests supports numeric tensors only")
        arrays[s.name] = np.asarray(v)
        total += arrays[s.name].nbytes
        if total > MAX_GOLDEN_BYTES:
            raise InputError(f"the outputs exceed {MAX_GOLDEN_BYTES >> 20} MiB, too large for golden files; pass smaller --inputs FILE.npz")
    return arrays
