"""Untrusted models and bad inputs: hostile names stay data, the artifact stands alone,
wrong inputs and failing nodes give clear errors, failed compiles leave nothing behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tokenize
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from tests.backends import models
from tests.backends.helpers import available_passes, compile_and_load, ort_outputs
from torsh_gen.errors import InputError, UnsupportedOpError
from torsh_gen.tools.compile import compile_model

_RUN = """
import sys, json
sys.modules["torsh_gen"] = None  # any import of torsh_gen now fails
sys.path.insert(0, {parent!r})
import numpy as np
import {name} as pkg
feeds = dict(np.load({inputs!r}))
out = pkg.run(**feeds)
np.savez({outputs!r}, **{{f"o{{i}}": v for i, v in enumerate(out.values())}})
print(json.dumps({{"keys": list(out), "torsh": [m for m, v in sys.modules.items() if m.startswith("torsh_gen") and v is not None]}}))
"""


def run_isolated(folder: Path, feeds: dict[str, np.ndarray], cwd: Path) -> tuple[dict, list[np.ndarray]]:
    """Run the artifact in a fresh interpreter (-I, torsh_gen blocked) from ``cwd``."""
    np.savez(cwd / "in.npz", **feeds)
    code = _RUN.format(parent=str(folder.parent), name=folder.name, inputs=str(cwd / "in.npz"), outputs=str(cwd / "out.npz"))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    proc = subprocess.run([sys.executable, "-I", "-c", code], cwd=cwd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    data = np.load(cwd / "out.npz")
    return info, [data[f"o{i}"] for i in range(len(data.files))]


def test_hostile_names_compile_run_and_execute_nothing(tmp_path: Path) -> None:
    model = models.hostile_names()
    work = tmp_path / "work"
    work.mkdir()
    old = os.getcwd()
    os.chdir(work)
    try:
        compile_model(model, tmp_path / "hostile", passes=available_passes("O3"), check=True)
        x = np.random.default_rng(0).standard_normal((1, 3, 6, 6)).astype(np.float32)
        feeds = {models.HOSTILE[0]: x}
        info, outs = run_isolated(tmp_path / "hostile", feeds, work)
    finally:
        os.chdir(old)
    assert not list(tmp_path.rglob("PWNED")) and not Path("PWNED").exists()
    assert info["keys"] == [o.name for o in model.graph.output]
    for got, want in zip(outs, ort_outputs(model, feeds)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    for path in (tmp_path / "hostile").glob("*.py"):  # model names are only ever string data
        with open(path, "rb") as f:
            tokens = list(tokenize.tokenize(f.readline))
        names = {t.string for t in tokens if t.type == tokenize.NAME}
        assert not names & {"__import__", "system", "PWNED"}, path
        assert not any("import" in n or "pwned" in n for n in names if n not in ("import",)), path


def test_artifact_runs_without_torsh_gen(tmp_path: Path) -> None:
    model = models.control_flow()  # If/Loop: also exercises the vendored kernels path at O0
    compile_model(model, tmp_path / "flow", level="O0")
    feeds = {"x": np.array([1, 2, 3], np.float32), "flag": np.array(True), "trips": np.array(3, np.int64)}
    info, outs = run_isolated(tmp_path / "flow", feeds, tmp_path)
    assert info["torsh"] == []
    for got, want in zip(outs, ort_outputs(model, feeds)):
        np.testing.assert_allclose(got, want, rtol=1e-5)


def test_vendored_reference_kernels_run_without_torsh_gen(tmp_path: Path) -> None:
    """An op without a fast emitter (TopK) runs from the copy in _ref/, not from torsh_gen."""
    node = helper.make_node("TopK", ["x", "k"], ["values", "indices"], axis=-1)
    graph = helper.make_graph(
        [node], "topk", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 6])],
        [helper.make_tensor_value_info("values", TensorProto.FLOAT, [2, 3]),
         helper.make_tensor_value_info("indices", TensorProto.INT64, [2, 3])],
        [onnx.numpy_helper.from_array(np.array([3], np.int64), "k")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    report = compile_model(model, tmp_path / "topk", passes=available_passes("O3"))
    assert report.reference_nodes == 1
    source = (tmp_path / "topk" / "_ref" / "ops" / "indexing.py").read_text()
    assert "torsh_gen" not in "".join(ln for ln in source.splitlines() if ln.lstrip().startswith(("from", "import")))
    feeds = {"x": np.random.default_rng(3).standard_normal((2, 6)).astype(np.float32)}
    info, outs = run_isolated(tmp_path / "topk", feeds, tmp_path)
    assert info["torsh"] == []
    for got, want in zip(outs, ort_outputs(model, feeds)):
        np.testing.assert_array_equal(got, want)


def test_wrong_inputs_are_clear_errors(tmp_path: Path) -> None:
    module = compile_and_load(models.mlp(), tmp_path / "mlp")
    m = module.Model()
    good = np.zeros((2, 16), np.float32)
    with pytest.raises(TypeError, match=r"missing input 'x' \(float32\[N, 16\]\)"):
        m.run()
    with pytest.raises(TypeError, match="unexpected input 'y'"):
        m.run(x=good, y=good)
    with pytest.raises(TypeError, match=r"input 'x' has dtype float64, expected float32\[N, 16\]"):
        m.run(x=good.astype(np.float64))
    with pytest.raises(ValueError, match=r"input 'x' has shape \[2, 15\], expected float32\[N, 16\] \(axis 1 must be 16\)"):
        m.run(x=np.zeros((2, 15), np.float32))
    with pytest.raises(ValueError, match=r"rank 2"):
        m.run(x=np.zeros(16, np.float32))


def test_symbolic_dims_must_agree_across_inputs(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["c"])], "add",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["N", 3]),
         helper.make_tensor_value_info("b", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, ["N", 3])],
    )
    module = compile_and_load(helper.make_model(graph, opset_imports=models.OPSET), tmp_path / "add")
    with pytest.raises(ValueError, match=r"input 'b' axis 0 \('N'\) is 4, but input 'a' set 'N' to 2"):
        module.run(a=np.zeros((2, 3), np.float32), b=np.zeros((4, 3), np.float32))


def test_a_failing_node_is_named(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "shape"], ["y"], name="my 'reshape'\nnode")], "r",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4])],
        [onnx.numpy_helper.from_array(np.array([-1, 4], np.int64), "shape")],
    )
    module = compile_and_load(helper.make_model(graph, opset_imports=models.OPSET), tmp_path / "r")
    assert module.run(x=np.zeros(8, np.float32))["y"].shape == (2, 4)
    with pytest.raises(RuntimeError, match=r"Reshape node \"my 'reshape'\\nnode\" failed: ValueError"):
        module.run(x=np.zeros(7, np.float32))


def test_every_unsupported_op_is_listed(tmp_path: Path) -> None:
    nodes = [
        helper.make_node("Relu", ["x"], ["a"], name="ok"),
        helper.make_node("FancyOp", ["a"], ["b"], name="first", domain="com.example"),
        helper.make_node("OtherOp", ["b"], ["y"], name="second", domain="com.example"),
    ]
    graph = helper.make_graph(
        nodes, "bad", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )
    model = helper.make_model(graph, opset_imports=models.OPSET + [helper.make_opsetid("com.example", 3)])
    with pytest.raises(UnsupportedOpError) as err:
        compile_model(model, tmp_path / "bad")
    msg = str(err.value)
    assert "2 node(s)" in msg and "'first': FancyOp (domain com.example, opset 3)" in msg and "'second': OtherOp" in msg
    assert not (tmp_path / "bad").exists()


def test_interrupted_compile_leaves_no_folder_and_keeps_the_old_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torsh_gen.backends.python as backend

    out = tmp_path / "pkg"
    real = backend.write_package

    def interrupted(graph, folder, info):  # noqa: ANN001, ANN202
        real(graph, folder, info)  # every file written ...
        raise KeyboardInterrupt  # ... then the user hits Ctrl-C before the rename

    monkeypatch.setattr(backend, "write_package", interrupted)
    with pytest.raises(KeyboardInterrupt):
        compile_model(models.mlp(), out, passes=available_passes("O3"))
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(backend, "write_package", real)
    compile_model(models.mlp(), out, passes=available_passes("O3"))
    before = (out / "manifest.json").read_bytes()
    monkeypatch.setattr(backend, "write_package", interrupted)
    with pytest.raises(KeyboardInterrupt):
        compile_model(models.gelu_chain(), out, passes=available_passes("O3"))
    assert [p.name for p in tmp_path.iterdir()] == ["pkg"] and (out / "manifest.json").read_bytes() == before


def test_refuses_bad_output_folders(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="valid Python package name"):
        compile_model(models.mlp(), tmp_path / "my-model")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "notes.txt").write_text("keep me")
    with pytest.raises(InputError, match="not a torsh-gen artifact"):
        compile_model(models.mlp(), tmp_path / "docs")
    assert (tmp_path / "docs" / "notes.txt").read_text() == "keep me"


def test_unknown_pipeline_pass_fails_clearly(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="unknown pass 'no_such_pass'"):
        compile_model(models.mlp(), tmp_path / "m", passes=["fold_constants", "no_such_pass"])
    assert not (tmp_path / "m").exists()


def test_inputs_named_like_run_parameters(tmp_path: Path) -> None:
    """Inputs called "self" or "inputs" pass through Model.run(**inputs) like any other."""
    x = helper.make_tensor_value_info("self", TensorProto.FLOAT, [2, 3])
    z = helper.make_tensor_value_info("inputs", TensorProto.FLOAT, [2, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])
    graph = helper.make_graph([helper.make_node("Sub", ["self", "inputs"], ["y"])], "g", [x, z], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    module = compile_and_load(model, tmp_path / "pkg")
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    b = np.ones((2, 3), np.float32)
    np.testing.assert_array_equal(module.Model().run(**{"self": a, "inputs": b})["y"], a - b)
    np.testing.assert_array_equal(module.run(**{"self": a, "inputs": b})["y"], a - b)
