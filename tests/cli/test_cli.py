"""The command line: help, version, inspect/run/convert, config file, errors."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.conftest import EXAMPLE
from torsh_gen.cli.main import main


def cli(capsys, *args: str, cwd: Path | None = None) -> tuple[int, str, str]:
    """Run the CLI in-process; returns (exit code, stdout, stderr)."""
    old = Path.cwd()
    if cwd:
        os.chdir(cwd)
    try:
        main(list(args))
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    finally:
        os.chdir(old)
    out, err = capsys.readouterr()
    return code, out, err


def test_help_lists_only_working_commands(capsys):
    code, out, _ = cli(capsys, "--help")
    assert code == 0
    commands = set(re.findall(r"^\W+ ([a-z][\w-]*)  ", out, re.M))
    assert commands == {"inspect", "run", "convert", "ops", "optimize", "validate", "bench", "compile", "prune", "quantize", "scaffold",
                        "system", "targets"}


def test_version(capsys):
    code, out, _ = cli(capsys, "--version")
    assert code == 0 and out.startswith("torsh-gen ")


def test_inspect_json_and_yaml(capsys):
    code, out, _ = cli(capsys, "inspect", str(EXAMPLE), "--format", "json", "--input-shape", "batch=3")
    assert code == 0
    data = json.loads(out)
    assert data["inputs"][0]["shape"] == [3, 1, 28, 28]
    assert data["parameters"] > 0 and data["macs"] > 0
    code, out, _ = cli(capsys, "inspect", str(EXAMPLE), "--format", "yaml")
    assert code == 0 and yaml.safe_load(out)["ops"]["Conv"] == 2


def test_inspect_table_and_ir(capsys):
    code, out, _ = cli(capsys, "inspect", str(EXAMPLE), "--per-layer")
    assert code == 0 and "parameters" in out and "conv1" in out
    code, out, _ = cli(capsys, "inspect", str(EXAMPLE), "--ir")
    assert code == 0 and "= Conv(%image" in out


def test_run_with_inputs_and_check(capsys, tmp_path: Path):
    x = np.random.default_rng(0).standard_normal((2, 1, 28, 28)).astype(np.float32)
    np.savez(tmp_path / "in.npz", image=x)
    code, out, err = cli(capsys, "run", str(EXAMPLE), "--inputs", str(tmp_path / "in.npz"), "-o", str(tmp_path / "out.npz"), "--check", "--format", "json")
    assert code == 0, err
    data = json.loads(out)
    assert data["onnxruntime"]["match"] is True
    with np.load(tmp_path / "out.npz") as z:
        probs = z["probs"]
    assert probs.shape == (2, 10)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


def test_run_random_inputs(capsys):
    code, out, err = cli(capsys, "run", str(EXAMPLE), "--input-shape", "batch=4", "--format", "json")
    assert code == 0, err
    assert json.loads(out)["outputs"]["probs"]["shape"] == [4, 10]


@pytest.mark.parametrize(
    "make_inputs, message",
    [
        (lambda: {"wrong": np.zeros((1, 1, 28, 28), np.float32)}, "unknown input name"),
        (lambda: {"image": np.zeros((1, 1, 27, 28), np.float32)}, "must have shape"),
        (lambda: {"image": np.zeros((1, 1, 28, 28), np.float64)}, "must be float"),
        (lambda: {"image": np.zeros((28, 28), np.float32)}, "rank"),
    ],
)
def test_run_rejects_bad_inputs(capsys, tmp_path: Path, make_inputs, message):
    np.savez(tmp_path / "in.npz", **make_inputs())
    code, _, err = cli(capsys, "run", str(EXAMPLE), "--inputs", str(tmp_path / "in.npz"))
    assert code == 2
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_convert_round_trip(capsys, tmp_path: Path):
    code, _, err = cli(capsys, "convert", str(EXAMPLE), "-o", str(tmp_path / "m.torsh"))
    assert code == 0, err
    code, _, err = cli(capsys, "convert", str(tmp_path / "m.torsh"), "-o", str(tmp_path / "back.onnx"))
    assert code == 0, err
    code, out, err = cli(capsys, "run", str(tmp_path / "back.onnx"), "--check", "--format", "json")
    assert code == 0 and json.loads(out)["onnxruntime"]["match"]
    code, _, err = cli(capsys, "convert", str(EXAMPLE), "-o", str(tmp_path / "m.txt"))
    assert code == 2 and ".onnx or .torsh" in err


def test_bad_model_files_give_one_line(capsys, tmp_path: Path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00\x01garbage" * 10)
    for path in (bad, tmp_path / "missing.onnx"):
        code, _, err = cli(capsys, "inspect", str(path))
        assert code == 2
        assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
    code, _, err = cli(capsys, "--verbose", "inspect", str(bad))
    assert code == 2 and "Traceback" in err


def test_config_file_sets_defaults(capsys, tmp_path: Path):
    (tmp_path / "torsh-gen.toml").write_text('[inspect]\nformat = "json"\n')
    code, out, _ = cli(capsys, "inspect", str(EXAMPLE), cwd=tmp_path)
    assert code == 0 and json.loads(out)["parameters"] > 0
    (tmp_path / "torsh-gen.toml").write_text("[inspect\n")
    code, _, err = cli(capsys, "inspect", str(EXAMPLE), cwd=tmp_path)
    assert code == 2 and "config file" in err


def test_ops_lists_registered_ops(capsys):
    code, out, _ = cli(capsys, "ops", "--format", "json")
    ops = {r["op"] for r in json.loads(out)}
    assert {"Conv", "MatMul", "Add", "Softmax"} <= ops


def test_real_subprocess_entry_point(tmp_path: Path):
    exe = Path(sys.executable).with_name("torsh-gen")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "torsh_gen.cli.main"]
    r = subprocess.run([*cmd, "inspect", str(EXAMPLE), "--format", "json", "-q"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["ops"]["Gemm"] == 1
    r = subprocess.run([*cmd, "run", str(tmp_path / "none.onnx")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "no such file" in r.stderr


def test_absurd_shapes_are_refused_without_allocating(capsys, tmp_path: Path):
    import onnx
    from onnx import helper

    from tests.conftest import make_model, tensor_info

    shape = onnx.numpy_helper.from_array(np.array([100000, 100000, 100000], np.int64), "shape")
    node = helper.make_node("ConstantOfShape", ["shape"], ["big"], name="huge")
    add = helper.make_node("Add", ["big", "x"], ["y"])
    model = make_model([node, add], [tensor_info("x", [1])], [tensor_info("y", None)], [shape])
    path = tmp_path / "absurd.onnx"
    onnx.save_model(model, path)
    code, _, err = cli(capsys, "run", str(path))
    assert code != 0 and "limit" in err and len(err.strip().splitlines()) == 1
    code, out, err = cli(capsys, "inspect", str(path), "--format", "json")
    assert code == 0, err
