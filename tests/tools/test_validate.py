"""validate and artifact loading: an artifact against onnxruntime, wrong ones caught.

Most cases use a small artifact written by hand here (a numpy MLP in the artifact's package
shape: ``__init__.py`` with ``run``/``Model``, a submodule imported relatively, weights in a
file, ``manifest.json``), so they run without the code generator. The cases that compile
a model skip while ``torsh_gen.tools.compile`` does not exist.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from tests.cli.test_cli import cli
from tests.conftest import EXAMPLE
from torsh_gen.cli import validate as validate_cli
from torsh_gen.frontends.onnx import load_onnx
from torsh_gen.tools import validate as validate_lib
from torsh_gen.tools.artifact import ArtifactError, is_artifact, load_artifact, read_manifest
from torsh_gen.tools.run import random_inputs
from torsh_gen.tools.validate import (
    cosine_similarity,
    looks_like_class_scores,
    top1_agreement,
    validate_artifact,
    validate_model,
)

_INIT = '''"""A hand-written artifact: y = relu(x @ w1 + b1) @ w2."""
import os

import numpy as np

from . import kernels

_W = dict(np.load(os.path.join(os.path.dirname(__file__), "weights.npz")))
INPUTS = {"x": ("float32", ("batch", 16))}
OUTPUTS = {"y": ("float32", ("batch", 4))}


class Model:
    def run(self, **inputs):
        return {"y": kernels.mlp(inputs["x"], _W["w1"], _W["b1"], _W["w2"])}


def run(**inputs):
    return Model().run(**inputs)
'''
_KERNELS = '''import numpy as np


def mlp(x, w1, b1, w2):
    return np.maximum(x @ w1 + b1, 0) @ w2
'''


def write_numpy_artifact(folder: Path, model: onnx.ModelProto, *, broken: bool = False) -> Path:
    """Write the hand-written MLP artifact with ``model``'s weights into ``folder``."""
    folder.mkdir(parents=True)
    weights = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    np.savez(folder / "weights.npz", **weights)
    (folder / "__init__.py").write_text(_INIT.replace("return {", "raise RuntimeError('kernel crashed')\n        return {") if broken else _INIT)
    (folder / "kernels.py").write_text(_KERNELS)
    (folder / "manifest.json").write_text(json.dumps({"target": "cpu", "inputs": ["x"], "outputs": ["y"]}))
    return folder


def perturbed(model: onnx.ModelProto, scale: float = 1.01) -> onnx.ModelProto:
    """A copy of ``model`` whose first weight is scaled: a slightly different model."""
    other = onnx.ModelProto()
    other.CopyFrom(model)
    w = other.graph.initializer[0]
    w.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(w) * np.float32(scale), w.name))
    return other


@pytest.fixture
def mlp_artifact(tmp_path: Path, mlp_model: onnx.ModelProto) -> tuple[Path, Path]:
    """(model file, artifact folder) of the conftest MLP."""
    model_path = tmp_path / "mlp.onnx"
    onnx.save(mlp_model, model_path)
    return model_path, write_numpy_artifact(tmp_path / "mlp_art", mlp_model)


def test_load_artifact_imports_by_path_under_unique_names(mlp_artifact):
    _, folder = mlp_artifact
    a, b = load_artifact(folder), load_artifact(folder)
    assert a is not b and a.__name__ != b.__name__
    x = np.ones((2, 16), np.float32)
    np.testing.assert_array_equal(a.run(x=x)["y"], b.Model().run(x=x)["y"])
    assert is_artifact(folder) and read_manifest(folder)["target"] == "cpu"


def test_load_artifact_refuses_non_artifacts(tmp_path: Path, mlp_model):
    with pytest.raises(ArtifactError, match="no such artifact folder"):
        load_artifact(tmp_path / "missing")
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "__init__.py").write_text("x = 1\n")
    with pytest.raises(ArtifactError, match="not a torsh-gen artifact"):
        load_artifact(tmp_path / "plain")
    (tmp_path / "plain" / "manifest.json").write_text("{}")
    with pytest.raises(ArtifactError, match="no run"):
        load_artifact(tmp_path / "plain")
    (tmp_path / "plain" / "__init__.py").write_text("import no_such_module_here\n")
    with pytest.raises(ArtifactError, match="importing the artifact failed"):
        load_artifact(tmp_path / "plain")


def test_validate_artifact_matches_onnxruntime(mlp_artifact):
    model_path, folder = mlp_artifact
    report = validate_model(model_path, folder, bindings={"batch": 5})
    assert report["match"] is True and not report["compiled"]
    y = report["outputs"]["y"]
    assert y["shape"] == [5, 4] and y["max_abs_diff"] < 1e-4
    assert y["cosine"] == pytest.approx(1.0, abs=1e-9)
    assert y["top1_agreement"] == 1.0


def test_validate_catches_a_slightly_different_model(mlp_artifact, mlp_model):
    """Our artifact of model A against onnxruntime running model B (one weight x1.01)."""
    _, folder = mlp_artifact
    graph_b = load_onnx(perturbed(mlp_model))
    feeds = random_inputs(graph_b, {"batch": 64}, seed=3)
    report = validate_artifact(graph_b, load_artifact(folder), feeds)
    y = report["outputs"]["y"]
    assert report["match"] is False and y["match"] is False
    assert y["max_abs_diff"] > 1e-3
    assert 0.99 < y["cosine"] < 1.0  # close, yet outside tolerance: the check is not a cosine threshold
    # a loose enough tolerance accepts the same outputs
    assert validate_artifact(graph_b, load_artifact(folder), feeds, rtol=0.2, atol=0.2)["match"] is True


def test_validate_cli_exit_codes(capsys, mlp_artifact, mlp_model, tmp_path: Path):
    model_path, folder = mlp_artifact
    code, out, err = cli(capsys, "validate", str(model_path), "--artifact", str(folder), "--input-shape", "batch=3", "--format", "json")
    assert code == 0, err
    assert json.loads(out)["outputs"]["y"]["top1_agreement"] == 1.0
    code, out, _ = cli(capsys, "validate", str(model_path), "--artifact", str(folder))
    assert code == 0 and "PASS" in out and "cosine" in out
    other = tmp_path / "other.onnx"
    onnx.save(perturbed(mlp_model, 1.05), other)
    code, out, _ = cli(capsys, "validate", str(other), "--artifact", str(folder), "--input-shape", "batch=8")
    assert code == 1 and "FAIL" in out


def test_validate_cli_inputs_file_and_bad_input(capsys, mlp_artifact, tmp_path: Path):
    model_path, folder = mlp_artifact
    np.savez(tmp_path / "in.npz", x=np.random.default_rng(1).standard_normal((7, 16)).astype(np.float32))
    code, out, err = cli(capsys, "validate", str(model_path), "-a", str(folder), "-i", str(tmp_path / "in.npz"), "-f", "json")
    assert code == 0, err
    assert json.loads(out)["inputs"]["x"]["shape"] == [7, 16]
    np.savez(tmp_path / "bad.npz", x=np.zeros((7, 15), np.float32))
    code, _, err = cli(capsys, "validate", str(model_path), "-a", str(folder), "-i", str(tmp_path / "bad.npz"))
    assert code == 2 and "must have shape" in err and len(err.strip().splitlines()) == 1
    code, _, err = cli(capsys, "validate", str(model_path), "-a", str(tmp_path / "nothing"))
    assert code == 2 and "no such artifact folder" in err and len(err.strip().splitlines()) == 1


def test_validate_reports_a_crashing_artifact(mlp_model, tmp_path: Path):
    folder = write_numpy_artifact(tmp_path / "broken", mlp_model, broken=True)
    model_path = tmp_path / "mlp.onnx"
    onnx.save(mlp_model, model_path)
    with pytest.raises(Exception, match="the artifact failed on these inputs: RuntimeError: kernel crashed"):
        validate_model(model_path, folder)


def test_metrics():
    a = np.array([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]], np.float32)
    assert cosine_similarity(a, a) == pytest.approx(1.0)
    assert cosine_similarity(a, -a) == pytest.approx(-1.0)
    assert cosine_similarity(np.zeros(3), np.zeros(3)) == 1.0
    assert cosine_similarity(np.zeros(3), np.ones(3)) == 0.0
    assert top1_agreement(a, a[::-1]) == 0.0 and top1_agreement(a, a * 2) == 1.0
    assert looks_like_class_scores(a) and looks_like_class_scores(a.reshape(2, 3, 1, 1))
    assert not looks_like_class_scores(a.reshape(2, 1, 3)) and not looks_like_class_scores(a[:, :1])
    assert not looks_like_class_scores(a.astype(np.int64)) and not looks_like_class_scores(a.ravel())
    assert top1_agreement(a.reshape(2, 3, 1, 1), a[::-1].reshape(2, 3, 1, 1)) == 0.0


def test_cli_defaults_equal_library_defaults():
    assert (validate_cli.DEFAULT_RTOL, validate_cli.DEFAULT_ATOL) == (validate_lib.DEFAULT_RTOL, validate_lib.DEFAULT_ATOL)


def test_validate_compiles_when_no_artifact_is_given(capsys):
    code, out, err = cli(capsys, "validate", str(EXAMPLE), "--input-shape", "batch=3", "--format", "json")
    assert code == 0, err
    report = json.loads(out)
    assert report["compiled"] is True and report["match"] is True
    assert report["outputs"]["probs"]["top1_agreement"] == 1.0


def test_validate_light_model_artifact(tmp_path: Path):
    from torsh_gen.tools.artifact import ensure_artifact
    from torsh_gen.tools.testmodels import randomized_light_model

    path = tmp_path / "squeezenet.onnx"
    onnx.save(randomized_light_model("squeezenet"), path)
    module, folder = ensure_artifact(path)
    assert is_artifact(folder) and callable(module.run)
    report = validate_model(path, folder)
    assert report["match"] is True, report["outputs"]
