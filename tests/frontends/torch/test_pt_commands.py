"""TorchScript ``.pt`` files taken directly by inspect, run, compile, validate and optimize.

A ``.pt`` records no input shapes, so each command passes its ``--input-shape`` specs to the
TorchScript loader; without them the command stops with one line naming that option.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import onnxruntime as ort  # noqa: E402
from torch import nn  # noqa: E402

from tests.frontends.torch import models  # noqa: E402
from tests.frontends.torch.helpers import assert_close, torch_outputs  # noqa: E402
from torsh_gen.cli.main import main  # noqa: E402

REPO = Path(__file__).resolve().parents[3]


class SmallCNN(nn.Module):
    """Conv, BatchNorm, ReLU, pooling and a classifier: small enough to compile in seconds."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, 1, 1)
        self.bn = nn.BatchNorm2d(8)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.conv(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


class TokenHead(nn.Module):
    """An integer input (token ids) through an embedding: exercises ``:int64`` specs."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(20, 8)
        self.fc = nn.Linear(8, 3)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.fc(self.embed(ids))


def cli(capsys, *args: str) -> tuple[int, str, str]:
    """Run the CLI in-process from the repository root; (exit code, stdout, stderr)."""
    old = Path.cwd()
    os.chdir(REPO)
    try:
        main(list(args))
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    finally:
        os.chdir(old)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def cnn_pt(tmp_path_factory) -> tuple[nn.Module, Path]:
    """A scripted SmallCNN saved with torch.jit.save, and the loaded TorchScript module."""
    path = tmp_path_factory.mktemp("pt") / "cnn.pt"
    torch.jit.script(models.seeded(SmallCNN)).save(str(path))
    return torch.jit.load(str(path)), path


def test_inspect_takes_pt_with_input_shape(cnn_pt, capsys):
    _, path = cnn_pt
    code, out, err = cli(
        capsys, "inspect", str(path), "--input-shape", "x=2x3x16x16", "--format", "json"
    )
    assert code == 0, err
    report = json.loads(out)
    assert report["inputs"] == [{"name": "x", "dtype": "float", "shape": [2, 3, 16, 16]}]
    assert report["outputs"][0]["shape"] == [2, 5]
    layers = {c["name"]: c["params"] for c in report["layers"]["children"]}
    assert layers["conv"] == 8 * 3 * 3 * 3 + 8 and layers["fc"] == 8 * 5 + 5
    assert report["macs"] >= 2 * 8 * 16 * 16 * 27


def test_run_check_takes_pt(cnn_pt, tmp_path, capsys):
    module, path = cnn_pt
    out_npz = tmp_path / "out.npz"
    x = torch.randn(2, 3, 16, 16)
    np.savez(tmp_path / "in.npz", x=x.numpy())
    code, _, err = cli(
        capsys, "run", str(path), "--input-shape", "x=2x3x16x16", "--check",
        "--inputs", str(tmp_path / "in.npz"), "-o", str(out_npz), "--format", "json",
    )
    assert code == 0, err
    got = list(np.load(out_npz).values())
    assert_close(got, torch_outputs(module, (x,)))


def test_run_random_inputs_from_int64_spec(tmp_path, capsys):
    path = tmp_path / "tokens.pt"
    torch.jit.trace(models.seeded(TokenHead), (torch.zeros(2, 6, dtype=torch.int64),)).save(
        str(path)
    )
    code, out, err = cli(
        capsys, "run", str(path), "--input-shape", "ids=2x6:int64", "--check", "--format", "json"
    )
    assert code == 0, err
    data = json.loads(out)
    assert data["onnxruntime"]["match"] is True
    (summary,) = data["outputs"].values()
    assert summary["shape"] == [2, 6, 3]


def test_compile_takes_pt_and_matches_torch(cnn_pt, tmp_path, capsys):
    from torsh_gen.tools.artifact import load_artifact

    module, path = cnn_pt
    out = tmp_path / "build" / "cnn_pkg"
    code, _, err = cli(
        capsys, "compile", str(path), "--input-shape", "x=1x3x16x16", "-o", str(out),
        "--format", "json",
    )
    assert code == 0, err
    artifact = load_artifact(out)
    for seed in (1, 2):
        x = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(seed))
        got = list(artifact.run(x=x.numpy()).values())
        assert_close(got, torch_outputs(module, (x,)))


def test_validate_takes_pt(cnn_pt, capsys):
    _, path = cnn_pt
    code, out, err = cli(
        capsys, "validate", str(path), "--input-shape", "x=1x3x16x16", "--format", "json"
    )
    assert code == 0, err
    report = json.loads(out)
    assert report["match"] is True and report["compiled"] is True


def test_optimize_takes_pt(cnn_pt, tmp_path, capsys):
    module, path = cnn_pt
    out = tmp_path / "cnn_opt.onnx"
    code, _, err = cli(
        capsys, "optimize", str(path), "--input-shape", "x=1x3x16x16", "-o", str(out),
        "--check", "--format", "json",
    )
    assert code == 0, err
    x = torch.randn(1, 3, 16, 16)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    assert_close(session.run(None, {name: x.numpy()}), torch_outputs(module, (x,)))


def test_bench_onnxruntime_source_from_pt(cnn_pt):
    """bench's onnxruntime worker converts the .pt with the same specs."""
    from torsh_gen.tools.bench import _onnx_source

    module, path = cnn_pt
    session = ort.InferenceSession(
        _onnx_source(str(path), ["x=1x3x16x16"]), providers=["CPUExecutionProvider"]
    )
    assert [i.name for i in session.get_inputs()] == ["x"]
    x = torch.randn(1, 3, 16, 16)
    assert_close(session.run(None, {"x": x.numpy()}), torch_outputs(module, (x,)))


OUTPUT_ARGS = {"compile": ["-o", "pkg"], "optimize": ["-o", "pkg.onnx"]}


@pytest.mark.parametrize("command", ["inspect", "run", "compile", "validate", "optimize", "bench"])
def test_pt_without_shapes_names_input_shape(command, cnn_pt, tmp_path, capsys):
    _, path = cnn_pt
    extra = [str(tmp_path / a) if a.startswith("pkg") else a for a in OUTPUT_ARGS.get(command, [])]
    code, out, err = cli(capsys, command, str(path), *extra)
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "records no input shapes" in lines[0] and "--input-shape x=" in lines[0]
    assert "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_pt_with_wrong_input_name_says_which(cnn_pt, capsys):
    _, path = cnn_pt
    code, _, err = cli(capsys, "inspect", str(path), "--input-shape", "y=1x3x16x16")
    assert code == 2
    assert "must name each input (x)" in err and len(err.strip().splitlines()) == 1
