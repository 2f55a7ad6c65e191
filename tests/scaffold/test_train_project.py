"""The generated training project trains: digits, resume, DDP under torchrun, AMP, QAT, export.

Runs use scikit-learn's digits (8x8 images, flattened to 64 features for the MLP model) and
the project's own ``train.py``; in-process runs import the generated package under a unique
name, the end-to-end ones start ``python train.py`` / ``torchrun`` as real subprocesses.
"""

from __future__ import annotations

import importlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import EXAMPLE
from tests.scaffold import train_models as tm

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")
datasets = pytest.importorskip("sklearn.datasets")


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> Path:
    d = datasets.load_digits()
    path = tmp_path_factory.mktemp("data") / "digits.npz"
    np.savez(path, x=(d.data / 16.0).astype(np.float32), y=d.target)
    return path


def _metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _train_in_process(project: Path, package: str, argv: list[str]) -> None:
    """Run the generated ``package.train.main`` in this process."""
    sys.path.insert(0, str(project))
    try:
        train = importlib.import_module(f"{package}.train")
        assert train.main(argv) == 0
    finally:
        sys.path.remove(str(project))


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}


def test_digits_loss_falls_and_export_matches(tmp_path: Path, digits: Path):
    tm.generate(tm.mlp(), tmp_path / "proj", name="digits_mlp")
    out = tmp_path / "run"
    cmd = [sys.executable, "train.py", "--data", str(digits), "--steps", "40", "--lr", "0.01",
           "--schedule", "constant", "--warmup-steps", "0", "--workers", "2", "--log-every", "1",
           "--checkpoint-every", "20", "--out-dir", str(out)]
    done = subprocess.run(cmd, cwd=tmp_path / "proj", capture_output=True, text=True, timeout=240, env=_env())
    assert done.returncode == 0, done.stderr[-3000:]
    losses = [m["loss"] for m in _metrics(out)]
    assert len(losses) == 40
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5]), losses
    assert {p.name for p in (out / "checkpoints").iterdir()} == {"step_20.pt", "step_40.pt", "last.pt"}
    assert any((out / "tensorboard").iterdir())
    # the exported ONNX file computes what the trained module computes
    gen = tm.import_model(tmp_path / "proj", "digits_mlp")
    trained = gen.load_pretrained(out / "weights.safetensors").eval()
    x = np.load(digits)["x"][:17]
    with torch.no_grad():
        expected = trained(torch.from_numpy(x)).numpy()
    session = ort.InferenceSession(str(out / "model.onnx"))
    assert [i.name for i in session.get_inputs()] == ["x"]
    np.testing.assert_allclose(session.run(None, {"x": x})[0], expected, rtol=1e-5, atol=1e-5)
    # and the trained weights differ from the source model's
    assert not np.allclose(expected, gen.load_pretrained().eval()(torch.from_numpy(x)).detach().numpy())


def test_resume_continues_with_same_step_and_lr(tmp_path: Path, digits: Path):
    tm.generate(tm.mlp(), tmp_path / "proj", name="resume_mlp")
    common = ["--data", str(digits), "--lr", "0.01", "--schedule", "cosine",
              "--warmup-steps", "2", "--grad-accum", "2", "--batch-size", "16", "--workers", "0",
              "--log-every", "1", "--checkpoint-every", "3", "--no-export-onnx", "--optimizer", "adam"]
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    _train_in_process(tmp_path / "proj", "resume_mlp", common + ["--steps", "6", "--out-dir", str(full)])
    ckpt = full / "checkpoints" / "step_3.pt"
    _train_in_process(tmp_path / "proj", "resume_mlp", common + ["--steps", "6", "--out-dir", str(resumed), "--resume", str(ckpt)])
    a, b = _metrics(full), _metrics(resumed)
    assert [m["step"] for m in b] == [4, 5, 6]
    assert len({m["lr"] for m in a}) > 3  # the schedule really moves
    for x, y in zip(a[3:], b):
        assert x["step"] == y["step"] and x["lr"] == y["lr"]
        assert x["loss"] == pytest.approx(y["loss"], rel=1e-6)
    state = torch.load(ckpt, weights_only=True)
    assert state["progress"][0] == 3 and set(state) >= {"model", "optimizer", "scheduler", "rng"}
    # --resume auto picks up OUT_DIR/checkpoints/last.pt (step 6) and trains on to step 8
    _train_in_process(tmp_path / "proj", "resume_mlp", common + ["--steps", "8", "--out-dir", str(full), "--resume", "auto"])
    assert [m["step"] for m in _metrics(full)][-3:] == [6, 7, 8]


def test_mixed_precision_qat_csv_and_image_folder(tmp_path: Path, digits: Path):
    tm.generate(tm.mlp(), tmp_path / "proj", name="opts_mlp")
    base = ["--steps", "3", "--batch-size", "32", "--workers", "0", "--log-every", "1"]
    _train_in_process(tmp_path / "proj", "opts_mlp", base + ["--data", str(digits), "--precision", "bf16",
                                                              "--no-export-onnx", "--out-dir", str(tmp_path / "bf16")])
    assert len(_metrics(tmp_path / "bf16")) == 3
    _train_in_process(tmp_path / "proj", "opts_mlp", base + ["--data", str(digits), "--precision", "fp16", "--mlflow",
                                                              "--no-export-onnx", "--out-dir", str(tmp_path / "fp16")])
    assert all(np.isfinite(m["loss"]) for m in _metrics(tmp_path / "fp16"))
    _train_in_process(tmp_path / "proj", "opts_mlp", base + ["--data", str(digits), "--qat", "--optimizer", "sgd",
                                                              "--schedule", "one_cycle", "--out-dir", str(tmp_path / "qat")])
    model = onnx_ops(tmp_path / "qat" / "model.onnx")
    assert "QuantizeLinear" in model and "DequantizeLinear" in model
    x = np.load(digits)["x"][:4]
    assert ort.InferenceSession(str(tmp_path / "qat" / "model.onnx")).run(None, {"x": x})[0].shape == (4, 10)
    table = np.load(digits)
    csv = tmp_path / "digits.csv"
    np.savetxt(csv, np.column_stack([table["x"][:100], table["y"][:100]]), delimiter=",", header="features and label")
    _train_in_process(tmp_path / "proj", "opts_mlp", base + ["--data", str(csv), "--no-export-onnx", "--out-dir", str(tmp_path / "csv")])
    assert len(_metrics(tmp_path / "csv")) == 3


def test_image_folder_feeds_the_cnn(tmp_path: Path):
    from PIL import Image

    d = datasets.load_digits()
    root = tmp_path / "images"
    for i in range(24):
        folder = root / f"digit_{d.target[i]}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((d.images[i] * 15).astype(np.uint8)).save(folder / f"{i}.png")
    tm.generate(EXAMPLE, tmp_path / "proj", name="folder_cnn")
    out = tmp_path / "run"
    _train_in_process(tmp_path / "proj", "folder_cnn", ["--data", str(root), "--val-data", str(root), "--steps", "2",
                                                         "--batch-size", "8", "--workers", "0", "--log-every", "1",
                                                         "--no-export-onnx", "--out-dir", str(out)])
    metrics = _metrics(out)
    assert [m["step"] for m in metrics] == [1, 2, 2] and 0.0 <= metrics[-1]["val_accuracy"] <= 1.0


def onnx_ops(path: Path) -> set[str]:
    import onnx

    return {n.op_type for n in onnx.load(str(path)).graph.node}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_torchrun_two_processes_on_cpu(tmp_path: Path, digits: Path):
    tm.generate(tm.mlp(), tmp_path / "proj", name="ddp_mlp")
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
           "--master-addr", "127.0.0.1", "--master-port", str(_free_port()), "train.py", "--data", str(digits),
           "--steps", "4", "--batch-size", "16", "--workers", "0", "--log-every", "1", "--out-dir", str(out),
           "--no-export-onnx"]
    done = subprocess.run(cmd, cwd=tmp_path / "proj", capture_output=True, text=True, timeout=300, env=_env())
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = _metrics(out)
    assert [m["step"] for m in metrics] == [1, 2, 3, 4]  # rank 0 only
    assert all(m["world_size"] == 2 for m in metrics)
    assert (out / "checkpoints" / "last.pt").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("key, passed", [("tiny_cnn", 4), ("sequence", 3), ("exported_style", 3)])
def test_generated_project_tests_pass(tmp_path: Path, key: str, passed: int):
    model = {"tiny_cnn": EXAMPLE, "sequence": tm.sequence_model(), "exported_style": tm.exported_style()}[key]
    tm.generate(model, tmp_path / "proj", name=f"own_{key}")
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=tmp_path / "proj",
                          capture_output=True, text=True, timeout=400, env=_env())
    assert done.returncode == 0, done.stdout[-3000:]
    assert f"{passed} passed" in done.stdout
