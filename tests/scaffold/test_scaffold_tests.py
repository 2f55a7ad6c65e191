"""``scaffold tests``: generated golden suites pass as generated, fail on real regressions,
survive hostile tensor names, are deterministic, and bad input gets one clear line.

Generated suites are run as users run them: pytest in a subprocess, in the suite's folder.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.conftest import EXAMPLE, make_model, tensor_info
from torsh_gen.errors import InputError
from torsh_gen.scaffold.common import npz_bytes
from torsh_gen.scaffold.tests import generate_tests
from torsh_gen.tools.compile import compile_model
from torsh_gen.tools.goldens import compute_goldens

CLI = [sys.executable, "-m", "torsh_gen.cli.main"]
HOSTILE_IN = 'x"; __import__(\'os\').system("echo pwned") #\n'
HOSTILE_OUT = "y'''\"\"\"\n`rm -rf`|<b>"


def _pytest(folder: Path, **env: str) -> subprocess.CompletedProcess:
    """Run a generated suite the way a user's CI does."""
    environ = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", **env}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "."], cwd=folder,
                          capture_output=True, text=True, env=environ, timeout=240)


def _hostile_model(path: Path, bias: float = 0.5) -> Path:
    """Two inputs with hostile or keyword names, a symbolic dim with quotes, two outputs
    whose names collide once sanitised; one int64 output compared exactly."""
    b = numpy_helper.from_array(np.full(3, bias, np.float32), "b")
    nodes = [
        helper.make_node("Add", [HOSTILE_IN, "class"], ["s"]),
        helper.make_node("Add", ["s", "b"], ["t"]),
        helper.make_node("Relu", ["t"], [HOSTILE_OUT]),
        helper.make_node("ArgMax", ["t"], [HOSTILE_OUT.upper()], axis=1, keepdims=0),
    ]
    sym = "n'\""
    model = make_model(nodes, [tensor_info(HOSTILE_IN, [sym, 3]), tensor_info("class", [sym, 3])],
                       [tensor_info(HOSTILE_OUT, [sym, 3]), tensor_info(HOSTILE_OUT.upper(), [sym], TensorProto.INT64)], [b])
    onnx.save(model, path)
    return path


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_model_suite_under_onnxruntime_passes_and_catches_a_changed_model(tmp_path):
    model = _hostile_model(tmp_path / "m.onnx")
    out = tmp_path / "suite"
    generate_tests(compute_goldens(model), out)
    assert sorted(_files(out)) == ["README.md", "golden.npz", "test_m_golden.py"]
    r = _pytest(out)
    assert r.returncode == 0, r.stdout[-3000:]
    assert "10 passed" in r.stdout  # 3 always + unknown name + 2 x (missing, shape, dtype)
    _hostile_model(model, bias=0.75)  # a real regression: the model's results move
    r = _pytest(out)
    assert r.returncode == 1 and "1 failed" in r.stdout and "differs from the golden recorded by onnxruntime" in r.stdout


def test_artifact_suite_checks_names_in_errors_and_catches_a_changed_artifact(tmp_path):
    model = _hostile_model(tmp_path / "m.onnx")
    compile_model(model, tmp_path / "art")
    out = tmp_path / "suite"
    goldens = compute_goldens(model, artifact=tmp_path / "art")
    assert (goldens.engine, goldens.computed_by) == ("artifact", "onnxruntime")
    generate_tests(goldens, out)
    text = (out / "test_m_golden.py").read_text()
    assert 'TORSH_GEN_TEST_TARGET", "../art")' in text and "REJECTIONS = (TypeError, ValueError)" in text
    r = _pytest(out)
    assert r.returncode == 0, r.stdout[-3000:]
    assert "10 passed" in r.stdout
    # point the suite at an artifact of a different model: the golden comparison fails
    compile_model(_hostile_model(tmp_path / "other.onnx", bias=-3.0), tmp_path / "other")
    r = _pytest(out, TORSH_GEN_TEST_TARGET=str(tmp_path / "other"))
    assert r.returncode == 1 and "1 failed" in r.stdout, r.stdout[-3000:]


def test_artifact_source_records_goldens_with_the_artifact(tmp_path):
    compile_model(_hostile_model(tmp_path / "m.onnx"), tmp_path / "art")
    goldens = compute_goldens(tmp_path / "art")
    assert (goldens.engine, goldens.computed_by, goldens.source_name) == ("artifact", "artifact", "m.onnx")
    generate_tests(goldens, tmp_path / "suite")
    r = _pytest(tmp_path / "suite")
    assert r.returncode == 0 and "10 passed" in r.stdout, r.stdout[-3000:]


def test_reference_goldens_when_onnxruntime_cannot_read_the_model(tmp_path):
    """A .torsh model: onnxruntime cannot load it, our interpreter records the goldens."""
    from torsh_gen.tools.loading import load_model, save_model

    torsh = save_model(load_model(EXAMPLE), tmp_path / "tiny.torsh")
    with pytest.raises(InputError, match="onnxruntime cannot run tiny.torsh .*pass --artifact DIR"):
        compute_goldens(torsh)
    compile_model(torsh, tmp_path / "tiny")
    goldens = compute_goldens(torsh, artifact=tmp_path / "tiny")
    assert goldens.computed_by == "reference"
    import onnxruntime as ort

    x = goldens.feeds["image"]
    assert x.shape == (2, 1, 28, 28)  # the symbolic batch dim is bound to 2
    ref = ort.InferenceSession(str(EXAMPLE), providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]
    np.testing.assert_allclose(goldens.results["probs"], ref, rtol=1e-4, atol=1e-6)


def test_user_inputs_are_recorded(tmp_path):
    model = _hostile_model(tmp_path / "m.onnx")
    x = np.arange(12, dtype=np.float32).reshape(4, 3) - 6
    np.savez(tmp_path / "in.npz", **{HOSTILE_IN: x, "class": x * 2})
    goldens = compute_goldens(model, inputs=tmp_path / "in.npz")
    np.testing.assert_array_equal(goldens.results[HOSTILE_OUT], np.maximum(x * 3 + 0.5, 0))
    np.savez(tmp_path / "bad.npz", x=x)
    with pytest.raises(InputError, match=r"inputs must be exactly .*unknown \['x'\]"):
        compute_goldens(model, inputs=tmp_path / "bad.npz")
    np.savez(tmp_path / "f64.npz", **{HOSTILE_IN: x.astype(np.float64), "class": x})
    with pytest.raises(InputError, match=r"f64.npz: input 'x\"; .*#\\n' must be float \(float32\), got float64$"):
        compute_goldens(model, inputs=tmp_path / "f64.npz")


def test_output_is_byte_identical_across_runs(tmp_path, monkeypatch):
    model = _hostile_model(tmp_path / "m.onnx")
    generate_tests(compute_goldens(model), tmp_path / "a")
    monkeypatch.setattr(time, "time", lambda: 2_000_000_000.0)  # np.savez would stamp this
    generate_tests(compute_goldens(model), tmp_path / "b")
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    with zipfile.ZipFile(tmp_path / "a" / "golden.npz") as z:
        assert {i.date_time for i in z.infolist()} == {(1980, 1, 1, 0, 0, 0)}
        assert z.namelist() == ["input_0.npy", "input_1.npy", "output_0.npy", "output_1.npy"]


def test_npz_bytes_round_trips_and_refuses_objects():
    arrays = {"b": np.arange(5, dtype=np.int64), "a": np.ones((2, 3), np.float16)}
    data = npz_bytes(arrays)
    assert data == npz_bytes(dict(reversed(list(arrays.items()))))
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        assert z.files == ["a", "b"]
        np.testing.assert_array_equal(z["b"], arrays["b"])
    with pytest.raises(ValueError):
        npz_bytes({"s": np.array(["x", None], dtype=object)})


def test_generated_module_is_formatted_and_lint_clean(tmp_path):
    generate_tests(compute_goldens(_hostile_model(tmp_path / "m.onnx")), tmp_path / "suite")
    ruff = Path(sys.executable).with_name("ruff")
    r = subprocess.run([str(ruff), "check", "--no-cache", "--select", "E,F,W,B", "--line-length", "120", "."],
                       cwd=tmp_path / "suite", capture_output=True, text=True)
    assert r.returncode == 0, r.stdout
    compile((tmp_path / "suite" / "test_m_golden.py").read_text(), "suite", "exec")


@pytest.mark.parametrize("args, message", [
    (["{missing}"], "no such model file or artifact folder"),
    (["{folder}"], "not a model file or a torsh-gen artifact"),
    (["{model}", "--rtol", "-1"], "--rtol and --atol must be finite and not negative"),
    (["{model}", "--artifact", "{folder}"], "not a torsh-gen artifact"),
    (["{model}", "--inputs", "{missing}"], "no such inputs file"),
])
def test_bad_input_is_one_line(tmp_path, capsys, args, message):
    from torsh_gen.cli.main import main

    model = _hostile_model(tmp_path / "m.onnx")
    (tmp_path / "plain").mkdir()
    subs = {"{missing}": str(tmp_path / "nope.onnx"), "{folder}": str(tmp_path / "plain"), "{model}": str(model)}
    argv = [subs.get(a, a) for a in args]
    with pytest.raises(SystemExit) as exit_info:
        main(["-q", "scaffold", "tests", *argv, "-o", str(tmp_path / "suite")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err
    assert not (tmp_path / "suite").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_existing_folder_and_foreign_artifact_are_refused(tmp_path):
    model = _hostile_model(tmp_path / "m.onnx")
    (tmp_path / "suite").mkdir()
    r = subprocess.run([*CLI, "scaffold", "tests", str(model), "-o", str(tmp_path / "suite")], capture_output=True, text=True)
    assert r.returncode == 2 and "already exists; choose another folder or pass --force" in r.stderr
    compile_model(_hostile_model(tmp_path / "other.onnx", bias=2.0), tmp_path / "other")
    with pytest.raises(InputError, match="was compiled from another model"):
        compute_goldens(model, artifact=tmp_path / "other")


def test_checked_in_suite_passes_against_a_fresh_compile(tmp_path):
    """generated/tests_tiny_cnn (onnxruntime goldens) passes against the compiler's output, as
    in users' CI. A fresh compile stands for generated/tiny_cnn (the drift test keeps the two
    identical) and reuses the compiled-kernel caches, which the checked-in copy cannot."""
    from tests.conftest import REPO

    compile_model(EXAMPLE, tmp_path / "tiny_cnn")
    r = _pytest(REPO / "generated" / "tests_tiny_cnn", TORSH_GEN_TEST_TARGET=str(tmp_path / "tiny_cnn"))
    assert r.returncode == 0, r.stdout[-3000:]
    assert "7 passed" in r.stdout
