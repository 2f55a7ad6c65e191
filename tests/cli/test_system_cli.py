"""``torsh-gen system``, ``torsh-gen targets`` and the missing-toolchain error of ``compile``."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
import yaml
from onnx import TensorProto, helper
from typer.testing import CliRunner

from torsh_gen.backends.llvm.targets import target_names
from torsh_gen.cli.main import app, main
from torsh_gen.errors import InputError

SYSTEM_KEYS = {"cpu", "simd", "memory", "cuda", "toolchains", "targets", "suggestions"}


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def one_line_error(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str]:
    """Run the real entry point; (exit code, stderr), checking stderr is one line, no traceback."""
    with pytest.raises(SystemExit) as e:
        main(list(args))
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err
    return int(e.value.code), err


def test_system_json_and_yaml() -> None:
    out = invoke("system", "--format", "json")
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert set(data) == SYSTEM_KEYS and data["cpu"]["cores"] >= 1
    out = invoke("system", "-f", "yaml")
    assert out.exit_code == 0, out.output
    assert set(yaml.safe_load(out.output)) == SYSTEM_KEYS


def test_system_table() -> None:
    out = invoke("system")
    assert out.exit_code == 0, out.output
    for word in (
        "machine",
        "cores",
        "simd",
        "memory",
        "cuda",
        "toolchains",
        "llvmlite",
        "wasm-ld",
        "threads:",
    ):
        assert word in out.output


def test_system_with_empty_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    out = invoke("system")
    assert out.exit_code == 0, out.output
    assert "missing" in out.output and "make toolchains" in out.output
    data = json.loads(invoke("system", "-f", "json").output)
    assert not any(t["installed"] for t in data["toolchains"] if t["kind"] == "command")


def test_targets_lists_every_target() -> None:
    out = invoke("targets", "--format", "json")
    assert out.exit_code == 0, out.output
    rows = json.loads(out.output)
    assert [r["name"] for r in rows] == ["cpu", *target_names()]
    assert len(target_names()) >= 5  # four toml rows and host
    table = invoke("targets").output
    for name in ["cpu", *target_names()]:
        assert name in table
    assert "needs" in table and yaml.safe_load(invoke("targets", "-f", "yaml").output) == rows


def test_targets_with_empty_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    out = invoke("targets")
    assert out.exit_code == 0 and "missing wasm-ld, node" in out.output


def _symbolic_model(path: Path) -> Path:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def test_compile_without_toolchain_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    model = _symbolic_model(tmp_path / "m.onnx")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    args = [
        "compile",
        str(model),
        "-o",
        str(tmp_path / "pkg"),
        "--target",
        "wasm32",
        "--input-shape",
        "batch=2",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code != 0 and isinstance(result.exception, InputError)
    code, err = one_line_error(capsys, *args)
    assert code == 2
    assert err == (
        "error: target wasm32 needs wasm-ld, node (Debian packages: lld); "
        "run `make toolchains` to install them\n"
    )
    assert not (tmp_path / "pkg").exists()


def test_compile_native_without_bound_dims_says_input_shape(tmp_path: Path, capsys) -> None:
    from torsh_gen.backends.llvm.targets import load_target

    if load_target("x86_64-linux").missing_tools():
        pytest.skip("gcc not installed")
    model = _symbolic_model(tmp_path / "m.onnx")
    code, err = one_line_error(
        capsys, "compile", str(model), "-o", str(tmp_path / "pkg"), "--target", "x86_64-linux"
    )
    assert code == 2 and "native targets need static shapes" in err and "--input-shape" in err
    assert not (tmp_path / "pkg").exists()
