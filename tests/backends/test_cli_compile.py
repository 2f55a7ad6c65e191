"""``torsh-gen compile`` and the compiled ONNX backend / conformance mode."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tests.backends import models
from tests.backends.helpers import available_passes, ort_outputs
from torsh_gen.cli.main import app

ROOT = Path(__file__).resolve().parents[2]


def test_compile_command_prints_a_report(tmp_path: Path) -> None:
    out = tmp_path / "tiny"
    args = ["compile", str(ROOT / "examples" / "tiny_cnn.onnx"), "--target", "cpu", "-o", str(out), "--verify"]
    args += ["--passes", ",".join(available_passes("O3"))]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "tiny" in result.output and "plan_memory" in result.output and "model.py" in result.output
    assert "fast emitters" in result.output
    assert (out / "__init__.py").is_file() and (out / "weights.bin").is_file()


def test_compile_command_json(tmp_path: Path) -> None:
    out = tmp_path / "tiny"
    result = CliRunner().invoke(app, ["compile", str(ROOT / "examples" / "tiny_cnn.onnx"), "-o", str(out), "--level", "O1", "--format", "json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["package"] == "tiny" and data["level"] == "O1"
    assert [p["pass"] for p in data["passes"]] == ["fold_constants", "eliminate_dead_code", "plan_memory"]
    assert data["nodes"][0] == 10 and "manifest.json" in data["files"]


def test_compile_command_bad_target_and_folder(tmp_path: Path) -> None:
    from torsh_gen.cli.main import main

    with pytest.raises(SystemExit) as e:
        main(["compile", str(ROOT / "examples" / "tiny_cnn.onnx"), "-o", str(tmp_path / "x"), "--target", "tpu"])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        main(["compile", str(ROOT / "examples" / "tiny_cnn.onnx"), "-o", str(tmp_path / "1x")])
    assert e.value.code == 2
    assert not (tmp_path / "x").exists() and not (tmp_path / "1x").exists()


def test_backend_prepare_compiled_mode() -> None:
    from torsh_gen.backend import prepare

    model = models.mlp()
    rep = prepare(model, device="CPU", mode="compiled", level="O1")
    x = np.random.default_rng(0).standard_normal((3, 16)).astype(np.float32)
    outs = rep.run([x])
    for got, want in zip(outs, ort_outputs(model, {"x": x})):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    folder = rep.folder
    del rep
    import gc

    gc.collect()
    assert not folder.exists()


@pytest.mark.slow  # the conformance tool's CLI (19 s); tests/conformance covers the pass counts
def test_conformance_compiled_mode_on_a_sample(capsys) -> None:  # noqa: ANN001
    from torsh_gen.tools.conformance import main

    rc = main(["--mode", "compiled", "--filter", r"^test_(relu|gemm_default_no_bias|maxpool_2d_pads|if|loop11|softmax_axis_1|layer_normalization_2d_axis0)$"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "conformance (compiled): 7 passed, 0 failed of 7" in out
