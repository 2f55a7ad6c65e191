"""A short training run on synthetic data: it trains, checkpoints, resumes and exports."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tiny_cnn.model import OUTPUTS, example_inputs, load_pretrained
from tiny_cnn.train import main

CLASSES = 10


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    inputs = example_inputs(batch=24)
    with torch.no_grad():
        reference = load_pretrained(output_logits=True).eval()(*inputs)
    reference = reference[0] if isinstance(reference, tuple) else reference
    # one target row per sample (models whose outputs fold other dims into rows get theirs)
    samples = len(inputs[0])
    if CLASSES:
        targets = reference.argmax(-1).reshape(samples, -1).squeeze(1).numpy()
    else:
        targets = (reference * 0.5).reshape(samples, -1).numpy()
    arrays = {"y": targets}
    from tiny_cnn.model import INPUTS

    if len(INPUTS) == 1:
        arrays["x"] = inputs[0].numpy()
    else:
        arrays.update({key: x.numpy() for key, x in zip(INPUTS, inputs)})
    path = tmp_path / "train.npz"
    np.savez(path, **arrays)
    return path


def _metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_train_resume_continues(dataset: Path, tmp_path: Path):
    common = [
        "--data",
        str(dataset),
        "--batch-size",
        "8",
        "--workers",
        "0",
        "--log-every",
        "1",
        "--no-export-onnx",
        "--config",
        str(Path(__file__).parents[1] / "config.toml"),
    ]
    full = tmp_path / "full"
    assert main(common + ["--steps", "4", "--checkpoint-every", "2", "--out-dir", str(full)]) == 0
    resumed = tmp_path / "resumed"
    start = full / "checkpoints" / "step_2.pt"
    assert main(common + ["--steps", "4", "--out-dir", str(resumed), "--resume", str(start)]) == 0
    a, b = _metrics(full)[2:], _metrics(resumed)
    assert [m["step"] for m in b] == [3, 4]
    for x, y in zip(a, b):
        assert x["lr"] == pytest.approx(y["lr"], rel=1e-9)
        assert x["loss"] == pytest.approx(y["loss"], rel=1e-4, abs=1e-6)
    assert (full / "weights.safetensors").is_file()


def test_export_matches_module(tmp_path: Path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from tiny_cnn.export import export_onnx

    model = load_pretrained().eval()
    path = export_onnx(model, tmp_path / "model.onnx")
    session = ort.InferenceSession(str(path))
    inputs = example_inputs(batch=3)
    feeds = {i.name: x.numpy() for i, x in zip(session.get_inputs(), inputs)}
    expected = model(*inputs)
    expected = expected if isinstance(expected, tuple) else (expected,)
    got = session.run(None, feeds)
    assert [o.name for o in session.get_outputs()] == list(OUTPUTS)
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e.detach().numpy(), rtol=1e-4, atol=1e-5)
