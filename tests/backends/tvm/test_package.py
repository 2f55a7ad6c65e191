"""``compile --backend tvm``: the artifact (library, weights, manifest, Python package)
runs without torsh-gen, matches onnxruntime, checks its inputs and is deterministic."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.backends.native.helpers import ort_run
from torsh_gen.backends.python.formatting import format_code
from torsh_gen.errors import InputError
from torsh_gen.tools.compile import compile_model


def _conv_model() -> onnx.ModelProto:
    rng = np.random.default_rng(1)
    w = numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "b")
    fc = numpy_helper.from_array(rng.standard_normal((8, 5)).astype(np.float32), "fc")
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], name="conv \"quoted\"\n__import__('os').system('false')"),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("MatMul", ["f", "fc"], ["y'\\n"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 8, 8])],
        [helper.make_tensor_value_info("y'\\n", TensorProto.FLOAT, ["batch", 5])],
        [w, b, fc],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


_RUN = """
import sys, builtins, json
import numpy as np
real_import = builtins.__import__
def guard(name, *a, **k):
    if name.split(".")[0] == "torsh_gen":
        raise ImportError("the artifact imported torsh_gen")
    return real_import(name, *a, **k)
builtins.__import__ = guard
sys.path.insert(0, sys.argv[1])
pkg = __import__(sys.argv[2])
x = np.load(sys.argv[3])
out = pkg.run(**{pkg.INPUTS[0][0]: x})
np.save(sys.argv[4], list(out.values())[0])
print(json.dumps([name for name, _, _ in pkg.OUTPUTS]))
"""


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tvm") / "conv_tvm"
    compile_model(_conv_model(), folder, backend="tvm", target="cpu")
    return folder


def test_artifact_runs_without_torsh_gen_and_matches_onnxruntime(artifact: Path, tmp_path: Path) -> None:
    model = _conv_model()
    for batch in (1, 3):
        x = np.random.default_rng(batch).standard_normal((batch, 3, 8, 8)).astype(np.float32)
        np.save(tmp_path / "x.npy", x)
        done = subprocess.run(
            [sys.executable, "-c", _RUN, str(artifact.parent), artifact.name, str(tmp_path / "x.npy"), str(tmp_path / "y.npy")],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        assert json.loads(done.stdout.strip().splitlines()[-1]) == ["y'\\n"]
        np.testing.assert_allclose(np.load(tmp_path / "y.npy"), ort_run(model, {"x": x})[0], rtol=1e-5, atol=1e-5)


def test_manifest_and_files(artifact: Path) -> None:
    data = json.loads((artifact / "manifest.json").read_text())
    assert data["format"] == "torsh-gen-tvm/1" and data["backend"] == "tvm" and data["device"] == "cpu"
    assert data["inputs"] == [{"name": "x", "dtype": "float32", "shape": ["batch", 3, 8, 8], "file": "x.npy"}]
    assert data["outputs"][0]["name"] == "y'\\n" and data["outputs"][0]["shape"] == ["batch", 5]
    assert data["tvm"]["target"]["kind"] == "llvm"
    total = sum(int(np.prod(t["shape"])) * 4 for t in data["weights"]["tensors"])
    assert total <= data["weights"]["bytes"] == (artifact / "weights.bin").stat().st_size
    assert {"__init__.py", "manifest.json", "model.so", "weights.bin"} <= {p.name for p in artifact.iterdir()}


def test_model_strings_stay_out_of_the_code(artifact: Path) -> None:
    code = (artifact / "__init__.py").read_text()
    assert "__import__('os')" not in code and "quoted" not in code and "y'" not in code
    assert format_code(code) == code


def test_wrong_inputs_are_named(artifact: Path) -> None:
    sys.path.insert(0, str(artifact.parent))
    try:
        pkg = __import__(artifact.name)
        with pytest.raises(ValueError, match="missing input"):
            pkg.run()
        with pytest.raises(ValueError, match="unknown input"):
            pkg.run(x=np.zeros((1, 3, 8, 8), np.float32), z=1)
        with pytest.raises(ValueError, match="dtype float64, expected float32"):
            pkg.run(x=np.zeros((1, 3, 8, 8)))
        with pytest.raises(ValueError, match="rank 3, expected 4"):
            pkg.run(x=np.zeros((3, 8, 8), np.float32))
        with pytest.raises(ValueError, match="axis 2 is 9, expected 8"):
            pkg.run(x=np.zeros((1, 3, 9, 8), np.float32))
    finally:
        sys.path.remove(str(artifact.parent))
        sys.modules.pop(artifact.name, None)


def test_compiling_twice_gives_identical_files(artifact: Path, tmp_path: Path) -> None:
    again = tmp_path / "conv_tvm"
    compile_model(_conv_model(), again, backend="tvm", target="cpu")
    for name in ("__init__.py", "manifest.json", "weights.bin", "model.so"):
        assert (again / name).read_bytes() == (artifact / name).read_bytes(), name


def test_option_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="unknown target 'tpu' for --backend tvm"):
        compile_model(_conv_model(), tmp_path / "a", backend="tvm", target="tpu")
    with pytest.raises(InputError, match="--tune applies to --backend tvm"):
        compile_model(_conv_model(), tmp_path / "b", target="cpu", tune=4)
    with pytest.raises(InputError, match="--embed-weights applies to native targets"):
        compile_model(_conv_model(), tmp_path / "c", backend="tvm", target="cpu", embed_weights=True)
    with pytest.raises(InputError, match="unknown backend 'xla'"):
        compile_model(_conv_model(), tmp_path / "d", backend="xla", target="cpu")
    assert not any(tmp_path.iterdir())
