"""The TVM backend from the command line: compile for every TVM target (GPU APIs are built
and their kernels kept, not run), validate, and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest

from tests.backends.tvm.test_package import _conv_model
from tests.cli.test_cli import cli


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("m") / "conv.onnx"
    onnx.save(_conv_model(), path)
    return path


@pytest.mark.parametrize(
    ("target", "kernel", "marker"),
    [
        ("cuda", "kernels/cuda.cu", "__global__"),
        pytest.param("opencl", "kernels/opencl.cl", "__kernel", marks=pytest.mark.slow),
        pytest.param("metal", "kernels/metal.metal", "kernel void", marks=pytest.mark.slow),
    ],
)
def test_gpu_targets_are_built_with_their_kernels(capsys, model_path: Path, tmp_path: Path, target: str, kernel: str, marker: str) -> None:
    out = tmp_path / f"conv_{target}"
    code, stdout, err = cli(capsys, "compile", str(model_path), "--backend", "tvm", "--target", target, "-o", str(out), "--format", "json")
    assert code == 0, err
    data = json.loads(stdout)
    assert data["target"] == f"tvm-{target}" and kernel in data["files"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["device"] == target and manifest["tvm"]["target"]["kind"] == target
    assert marker in (out / kernel).read_text()
    assert (out / "model.so").stat().st_size > 0


def test_vulkan_is_refused_with_the_reason(capsys, model_path: Path, tmp_path: Path) -> None:
    code, _, err = cli(capsys, "compile", str(model_path), "--backend", "tvm", "--target", "vulkan", "-o", str(tmp_path / "v"))
    assert code == 2 and "has no vulkan code generator" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "v").exists()


def test_validate_builds_and_compares(capsys, model_path: Path) -> None:
    code, out, err = cli(capsys, "validate", str(model_path), "--backend", "tvm", "--input-shape", "batch=2")
    assert code == 0, err
    assert "PASS" in out


def test_validate_refuses_a_device_this_machine_lacks(capsys, model_path: Path) -> None:
    code, _, err = cli(capsys, "validate", str(model_path), "--backend", "tvm", "--target", "cuda")
    assert code == 2 and "needs a cuda device" in err
