"""inspect, run and convert accept .tflite directly (the loader table)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.cli.test_cli import cli
from tests.frontends.tflite.helpers import fixture, litert_run

pytest.importorskip("ai_edge_litert")


def test_inspect_tflite(capsys):
    code, out, err = cli(capsys, "inspect", str(fixture("mobilenet_float")), "--format", "json")
    assert code == 0, err
    report = json.loads(out)
    text = json.dumps(report)
    assert "serving_default_image:0" in text
    assert "Conv" in text


def test_run_tflite_checks_against_onnxruntime(capsys, tmp_path):
    x = np.random.default_rng(0).uniform(-1, 1, size=(2, 16)).astype(np.float32)
    np.savez(tmp_path / "in.npz", **{"serving_default_features:0": x})
    out = tmp_path / "out.npz"
    code, _, err = cli(
        capsys,
        "run",
        str(fixture("mlp")),
        "--inputs",
        str(tmp_path / "in.npz"),
        "--output",
        str(out),
        "--check",
    )
    assert code == 0, err
    got = np.load(out)
    (want,) = litert_run(fixture("mlp"), [x])
    np.testing.assert_allclose(got[got.files[0]], want, rtol=0, atol=1e-5)


def test_convert_tflite_to_onnx_runs_in_onnxruntime(capsys, tmp_path):
    import onnxruntime as ort

    out = tmp_path / "block.onnx"
    code, _, err = cli(capsys, "convert", str(fixture("transformer_block")), "-o", str(out))
    assert code == 0, err
    x = np.random.default_rng(1).uniform(-1, 1, size=(1, 8, 32)).astype(np.float32)
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (got,) = sess.run(None, {sess.get_inputs()[0].name: x})
    (want,) = litert_run(fixture("transformer_block"), [x])
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


@pytest.mark.slow  # a fresh kernel cache costs about a minute of numba compilation
@pytest.mark.parametrize("name", ["mlp", "mobilenet_float", "mobilenet_int8"])
def test_compiled_tflite_model_matches_litert(tmp_path, name):
    """compile accepts .tflite; the standalone package agrees with the LiteRT interpreter."""
    from tests.backends.helpers import compile_and_load
    from tests.frontends.tflite.helpers import random_feeds

    module = compile_and_load(fixture(name), tmp_path / "pkg")
    (x,) = random_feeds(fixture(name), seed=4)
    got = np.asarray(next(iter(module.run(**{module.INPUTS[0]["name"]: x}).values())))
    (want,) = litert_run(fixture(name), [x])
    if name.endswith("int8"):
        assert got.dtype == np.int8
        assert np.abs(got.astype(int) - want.astype(int)).max() <= 1
    else:
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
