"""optimize: the written model runs in onnxruntime with the original's outputs; reports; errors.

The light zoo models are used with seeded random weights (their shipped weights are a
constant, which would hide a wrong rewrite).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from tests.cli.test_cli import cli
from tests.conftest import EXAMPLE
from torsh_gen.errors import InputError
from torsh_gen.ops.fused import DOMAIN
from torsh_gen.passes import PIPELINES
from torsh_gen.passes.manager import get_pass
from torsh_gen.tools.optimize import optimize_model, parse_pass_list
from torsh_gen.tools.testmodels import randomized_light_model


def _ort_outputs(path: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """onnxruntime on the file itself (not through our exporter), all graph optimizations off."""
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, {i.name: feeds[i.name] for i in sess.get_inputs() if i.name in feeds})


def _random_feeds(path: Path, batch: int = 2) -> dict[str, np.ndarray]:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    return {i.name: rng.standard_normal([d if isinstance(d, int) else batch for d in i.shape]).astype(np.float32) for i in sess.get_inputs()}


def _assert_same_outputs(original: Path, optimized: Path, rtol: float = 1e-3, atol: float = 1e-4) -> None:
    feeds = _random_feeds(original)
    before, after = _ort_outputs(original, feeds), _ort_outputs(optimized, feeds)
    assert len(before) == len(after)
    for b, a in zip(before, after):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol * max(1.0, float(np.abs(b).max())))


@pytest.mark.parametrize(
    "name",
    ["squeezenet", pytest.param("resnet50", marks=pytest.mark.slow), pytest.param("densenet121", marks=pytest.mark.slow), pytest.param("inception_v1", marks=pytest.mark.slow)],
)
def test_light_models_at_o2_run_in_onnxruntime_with_the_same_outputs(tmp_path: Path, name: str):
    src = tmp_path / f"{name}.onnx"
    onnx.save(randomized_light_model(name), src)
    out = tmp_path / f"{name}.opt.onnx"
    result = optimize_model(src, out, level="O2", verify_each=True)
    assert out.is_file() and result.output == str(out)
    assert result.nodes_after <= result.nodes_before
    assert not any(n.domain == DOMAIN for n in onnx.load(out).graph.node)
    _assert_same_outputs(src, out)


def test_tiny_cnn_at_o2_folds_batchnorm_and_keeps_outputs(tmp_path: Path):
    out = tmp_path / "tiny.onnx"
    result = optimize_model(EXAMPLE, out, level="O2", check=True, bindings={"batch": 3})
    assert result.ops_before["BatchNormalization"] == 1 and "BatchNormalization" not in result.ops_after
    assert result.check is not None and result.check["match"] is True
    assert [r.name for r in result.reports] == PIPELINES["O2"]
    _assert_same_outputs(EXAMPLE, out)


def test_o3_without_custom_ops_skips_fusion_and_stays_standard(tmp_path: Path):
    out = tmp_path / "tiny.onnx"
    result = optimize_model(EXAMPLE, out, level="O3")
    custom = sorted({n for n in PIPELINES["O3"] if get_pass(n).custom_ops})
    assert custom and result.skipped == custom
    assert not set(custom) & set(result.passes)
    model = onnx.load(out)
    assert not any(n.domain == DOMAIN for n in model.graph.node)
    _assert_same_outputs(EXAMPLE, out)


def test_custom_ops_are_kept_and_declared_when_asked(tmp_path: Path):
    out = tmp_path / "fused.onnx"
    result = optimize_model(EXAMPLE, out, level="O3", custom_ops=True, check=True)
    model = onnx.load(out)
    fused = [n.op_type for n in model.graph.node if n.domain == DOMAIN]
    assert fused and result.skipped == []
    assert {o.domain for o in model.opset_import} >= {"", DOMAIN}
    assert result.check["match"] is None and "ai.torsh" in result.check["skipped"]


def test_explicit_pass_list(tmp_path: Path):
    assert parse_pass_list("fold_batchnorm, eliminate_dead_code,") == ["fold_batchnorm", "eliminate_dead_code"]
    assert parse_pass_list(" , ") is None
    result = optimize_model(EXAMPLE, tmp_path / "o.onnx", passes=["fold_batchnorm", "eliminate_dead_code"])
    assert result.level is None and result.passes == ["fold_batchnorm", "eliminate_dead_code"]
    assert result.nodes_after == result.nodes_before - 1


def test_cli_report_json_and_table(capsys, tmp_path: Path):
    out = tmp_path / "o.onnx"
    code, stdout, err = cli(capsys, "optimize", str(EXAMPLE), "-o", str(out), "--level", "O2", "--verify", "--check", "--format", "json")
    assert code == 0, err
    data = json.loads(stdout)
    assert data["nodes"]["before"] == 10 and data["nodes"]["after"] < 10
    assert data["weight_bytes"]["before"] > 0
    rows = {r["op"]: r for r in data["ops"]}
    assert rows["BatchNormalization"] == {"op": "BatchNormalization", "before": 1, "after": 0}
    assert data["pass_reports"][0]["pass"] == "fold_constants" and data["onnxruntime_check"]["match"] is True
    code, stdout, err = cli(capsys, "optimize", str(EXAMPLE), "-o", str(out), "--passes", "fold_batchnorm")
    assert code == 0, err
    assert "fold_batchnorm" in stdout and "BatchNormalization" in stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["--level", "O9"], "unknown optimization level 'O9'"),
        (["--passes", "fold_constants,no_such_pass"], "unknown pass 'no_such_pass'"),
    ],
)
def test_bad_level_or_pass_is_one_clear_error(capsys, tmp_path: Path, args: list[str], message: str):
    out = tmp_path / "o.onnx"
    code, _, err = cli(capsys, "optimize", str(EXAMPLE), "-o", str(out), *args)
    assert code == 2 and message in err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_output_must_be_onnx(tmp_path: Path):
    with pytest.raises(InputError, match="name it with .onnx"):
        optimize_model(EXAMPLE, tmp_path / "o.torsh")
