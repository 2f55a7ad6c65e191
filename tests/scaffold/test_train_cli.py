"""``torsh-gen scaffold train`` on the command line: output, one-line errors, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest

from tests.conftest import EXAMPLE
from tests.scaffold import train_models as tm
from torsh_gen.cli.main import main

pytest.importorskip("safetensors")


class Result:
    def __init__(self, exit_code: int, output: str) -> None:
        self.exit_code, self.output = exit_code, output


@pytest.fixture
def _run(capsys):
    """Run the CLI in-process as the console script does; (exit code, stdout + stderr)."""

    def run(*args: str) -> Result:
        try:
            main(["-q", *args])
            code = 0
        except SystemExit as e:
            code = int(e.code or 0)
        out, err = capsys.readouterr()
        return Result(code, out + err)

    return run


def test_generates_project_and_reports_json(tmp_path: Path, _run):
    out = tmp_path / "proj"
    result = _run("scaffold", "train", str(EXAMPLE), "-o", str(out), "--name", "cnn", "--format", "json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["package"] == "cnn" and data["layers"] == ["conv1", "bn1", "conv2", "fc"]
    assert (out / "cnn" / "model.py").is_file() and (out / "train.py").is_file()
    assert "scaffold_train" in __import__("torsh_gen.cli.scaffold", fromlist=["GENERATORS"]).GENERATORS


def test_existing_folder_is_refused_in_one_line(tmp_path: Path, _run):
    out = tmp_path / "proj"
    out.mkdir()
    result = _run("scaffold", "train", str(EXAMPLE), "-o", str(out))
    assert result.exit_code == 2
    assert "already exists" in result.output and "--force" in result.output
    assert "Traceback" not in result.output and result.output.strip().count("\n") == 0


def test_unsupported_ops_listed_with_exit_code_3(tmp_path: Path, _run):
    model = tmp_path / "bad.onnx"
    onnx.save_model(tm.unsupported(), model)
    result = _run("scaffold", "train", str(model), "-o", str(tmp_path / "out"))
    assert result.exit_code == 3
    line = result.output.strip()
    assert "\n" not in line and "CumSum" in line and "TopK x2" in line
    assert not (tmp_path / "out").exists()


def test_bad_package_name(tmp_path: Path, _run):
    result = _run("scaffold", "train", str(EXAMPLE), "-o", str(tmp_path / "p"), "--name", "no good")
    assert result.exit_code == 2 and "no_good" in result.output
