"""Shared helpers of the backend tests: compile into tmp_path, run, compare with onnxruntime."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from torsh_gen.passes import pipeline
from torsh_gen.passes.manager import get_pass
from torsh_gen.tools.artifact import load_artifact
from torsh_gen.tools.compile import compile_model


def available_passes(level: str) -> list[str]:
    """The level's pipeline, every pass looked up first, so a pass missing from the
    registry fails the test with its name instead of being left out."""
    names = list(pipeline(level))
    for name in names:
        get_pass(name)
    return names


def compile_and_load(model: Any, folder: Path, level: str = "O3") -> Any:
    """Compile ``model`` into ``folder`` and import the package."""
    compile_model(model, folder, level=level, passes=available_passes(level) or None, check=True)
    return load_artifact(folder)


def ort_outputs(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """onnxruntime's outputs for ``feeds`` (one thread, deterministic)."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def assert_matches_ort(module: Any, model: onnx.ModelProto, feeds: dict[str, np.ndarray], rtol: float = 1e-4, atol: float = 1e-5) -> None:
    """The artifact's outputs equal onnxruntime's, in graph order."""
    ours = module.run(**feeds)
    ref = ort_outputs(model, feeds)
    assert list(ours) == [o.name for o in model.graph.output]
    for (name, got), want in zip(ours.items(), ref):
        assert got.shape == want.shape, name
        assert got.dtype == want.dtype, name
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, err_msg=name)


def artifact_files(folder: Path) -> dict[str, bytes]:
    """Every file of an artifact except caches, by relative path."""
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }
