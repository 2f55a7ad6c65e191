"""The CPU code generator end to end: compile, import, run, compare with onnxruntime."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.backends import models
from tests.backends.helpers import (
    artifact_files,
    assert_matches_ort,
    available_passes,
    compile_and_load,
)
from torsh_gen.tools.compile import compile_model

ROOT = Path(__file__).resolve().parents[2]


def test_tiny_cnn_matches_onnxruntime_for_several_batches(tmp_path: Path) -> None:
    import onnx

    model = onnx.load(ROOT / "examples" / "tiny_cnn.onnx")
    module = compile_and_load(ROOT / "examples" / "tiny_cnn.onnx", tmp_path / "tiny")
    rng = np.random.default_rng(0)
    m = module.Model()
    for batch in (1, 3, 1):
        x = rng.standard_normal((batch, 1, 28, 28)).astype(np.float32)
        assert_matches_ort(m, model, {"image": x})
    spec = module.INPUTS[0]
    assert spec["name"] == "image" and spec["shape"] == ("batch", 1, 28, 28) and spec["dtype"] == "float32"


def test_mlp_with_symbolic_batch(tmp_path: Path) -> None:
    model = models.mlp()
    module = compile_and_load(model, tmp_path / "mlp")
    rng = np.random.default_rng(1)
    m = module.Model()
    for n in (1, 7, 2):
        assert_matches_ort(m, model, {"x": rng.standard_normal((n, 16)).astype(np.float32)})
    assert [o["name"] for o in module.OUTPUTS] == ["probs", "gates"]


def test_fused_elementwise_chain_becomes_a_numba_kernel(tmp_path: Path) -> None:
    model = models.gelu_chain()
    module = compile_and_load(model, tmp_path / "gelu")
    kernels = (tmp_path / "gelu" / "kernels.py").read_text()
    assert "@nb.njit" in kernels and "math.erf" in kernels
    rng = np.random.default_rng(2)
    for n in (1, 3):
        x = rng.standard_normal((n, 4, 5, 6)).astype(np.float32) * 3
        assert_matches_ort(module, model, {"x": x}, rtol=1e-5, atol=1e-6)
    x = rng.standard_normal((2, 4, 5, 6)).astype(np.float32)
    assert_matches_ort(module, model, {"x": np.ascontiguousarray(x[:, :, :, ::-1])})


@pytest.mark.parametrize("level", ["O0", "O3"])
def test_if_and_loop(tmp_path: Path, level: str) -> None:
    model = models.control_flow()
    module = compile_and_load(model, tmp_path / f"flow_{level}", level=level)
    src = (tmp_path / f"flow_{level}" / "model.py").read_text()
    assert "while " in src and "if _rt.truth(" in src
    x = np.array([1.0, -2.0, 3.5], np.float32)
    for flag in (True, False):
        for trips in (0, 1, 4):
            feeds = {"x": x, "flag": np.array(flag), "trips": np.array(trips, np.int64)}
            assert_matches_ort(module, model, feeds)


def test_compiling_twice_gives_identical_files(tmp_path: Path) -> None:
    model = models.mlp()
    compile_model(model, tmp_path / "a" / "pkg", passes=available_passes("O3"))
    compile_model(model, tmp_path / "b" / "pkg", passes=available_passes("O3"))
    a, b = artifact_files(tmp_path / "a" / "pkg"), artifact_files(tmp_path / "b" / "pkg")
    assert a.keys() == b.keys() and "weights.bin" in a and "model.py" in a
    assert a == b


def test_generated_code_is_black_formatted(tmp_path: Path) -> None:
    import black

    compile_model(models.control_flow(), tmp_path / "flow", passes=available_passes("O3"))
    compile_model(models.gelu_chain(), tmp_path / "gelu", passes=available_passes("O3"))
    mode = black.Mode(line_length=100, target_versions={black.TargetVersion.PY311})
    files = list((tmp_path / "flow").rglob("*.py")) + list((tmp_path / "gelu").glob("*.py"))
    for path in files:
        if path.parent.name in ("ops", "ir") or path.name in ("errors.py",):
            continue  # vendored copies keep torsh-gen's own formatting
        src = path.read_text()
        assert black.format_str(src, mode=mode) == src, path


def test_manifest_describes_the_artifact(tmp_path: Path) -> None:
    import json

    report = compile_model(ROOT / "examples" / "tiny_cnn.onnx", tmp_path / "tiny", passes=available_passes("O3"))
    manifest = json.loads((tmp_path / "tiny" / "manifest.json").read_text())
    import hashlib

    assert manifest["source"]["sha256"] == hashlib.sha256((ROOT / "examples" / "tiny_cnn.onnx").read_bytes()).hexdigest()
    assert manifest["target"] == "cpu" and manifest["package"] == "tiny"
    assert manifest["passes"] == report.passes and manifest["passes"][-1] == "plan_memory"
    assert manifest["inputs"] == [{"name": "image", "kind": "tensor", "dtype": "float32", "shape": ["batch", 1, 28, 28]}]
    data = (tmp_path / "tiny" / "weights.bin").read_bytes()
    for row in manifest["weights"]["tensors"]:
        assert row["offset"] % 64 == 0 and row["offset"] + row["nbytes"] <= len(data)


def test_weights_are_memory_mapped_read_only(tmp_path: Path) -> None:
    module = compile_and_load(models.mlp(), tmp_path / "mlp")
    m = module.Model()
    weights = [v for k, v in vars(m).items() if k.startswith("w_")]
    assert weights
    for w in weights:
        assert not w.flags.writeable
        assert isinstance(w.base, np.memmap) or isinstance(getattr(w.base, "base", None), np.memmap)


def test_kernels_compile_at_build_time_and_are_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORSH_GEN_CACHE_DIR", str(tmp_path / "cache"))
    first = compile_model(models.gelu_chain(), tmp_path / "a" / "gelu", passes=available_passes("O3"))
    assert first.kernels >= 1 and first.kernel_seconds > 0
    assert list((tmp_path / "a" / "gelu" / "__pycache__").glob("kernels.*.nbi"))
    assert list((tmp_path / "cache").rglob("kernels.*.nbc"))
    second = compile_model(models.gelu_chain(), tmp_path / "b" / "gelu", passes=available_passes("O3"))
    assert list((tmp_path / "b" / "gelu" / "__pycache__").glob("kernels.*.nbi"))
    assert second.kernels == first.kernels
    # the copied machine code is valid for the new artifact: importing it compiles nothing
    probe = (
        "import sys; sys.path.insert(0, sys.argv[1]); import gelu.kernels as k\n"
        "from numba.core.registry import CPUDispatcher\n"
        "ds = [v for v in vars(k).values() if isinstance(v, CPUDispatcher)]\n"
        "print(sum(sum(d.stats.cache_hits.values()) for d in ds),"
        " sum(sum(d.stats.cache_misses.values()) for d in ds))"
    )
    done = subprocess.run([sys.executable, "-c", probe, str(tmp_path / "b")], capture_output=True, text=True, check=True)
    hits, misses = map(int, done.stdout.split())
    assert hits >= 1 and misses == 0
