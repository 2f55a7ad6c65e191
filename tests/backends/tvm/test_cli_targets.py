"""The TVM backend from the command line: compile for every TVM target (GPU APIs are built
and their kernels kept, not run), validate, and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
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


def test_a_gpu_build_says_what_its_runtime_lacks(capsys, model_path: Path, tmp_path: Path) -> None:
    """Loading a cuda build names the real obstacle: a TVM runtime without CUDA (PyPI's
    apache-tvm wheel) or, with one, a machine without the device."""
    import tvm

    out = tmp_path / "conv_cuda"
    code, _, err = cli(capsys, "compile", str(model_path), "--backend", "tvm", "--target", "cuda", "-o", str(out))
    assert code == 0, err
    done = subprocess.run(
        [sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[1]); __import__(sys.argv[2]).Model()", str(tmp_path), out.name],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    if tvm.get_global_func("device_api.cuda", allow_missing=True) is None:
        assert "this TVM runtime was built without cuda support" in last and "USE_CUDA=ON" in last, last
    else:
        assert "no cuda device 0 on this machine" in last, last


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
