"""``torsh-gen prune``: the report on the trained digits CNN, the accuracy guard, CLI errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper

from tests.cli.test_cli import cli
from tests.conftest import make_model, tensor_info
from torsh_gen.tools.digits import accuracy, digits_model, digits_split
from torsh_gen.tools.prune import prune_model


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> dict[str, Path]:
    """The digits CNN, its test split with labels, and the same inputs without labels."""
    folder = tmp_path_factory.mktemp("prune_digits")
    onnx.save(digits_model("cnn"), folder / "cnn.onnx")
    split = digits_split()
    np.savez(folder / "test.npz", image=split.x_test, labels=split.y_test)
    np.savez(folder / "nolabels.npz", image=split.x_test[:100])
    return {
        "model": folder / "cnn.onnx",
        "eval": folder / "test.npz",
        "nolabels": folder / "nolabels.npz",
        "dir": folder,
    }


def _ort(path: Path, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {"image": x})[0]


def test_structured_half_of_the_channels_on_digits(digits, tmp_path):
    out = tmp_path / "pruned.onnx"
    r = prune_model(
        digits["model"],
        out,
        method="structured",
        sparsity=0.5,
        eval_data=digits["eval"],
        latency=False,
    )
    assert r.written and out.is_file()
    assert r.macs["ratio"] <= 0.55  # the target: at most 55 % of the MACs
    assert r.size["weight_bytes"]["ratio"] < 0.5
    ev = r.evaluation
    split = digits_split()
    logits = _ort(
        out, split.x_test
    )  # the written file runs in onnxruntime, and its accuracy is the reported one
    assert ev["accuracy_after"] == pytest.approx(accuracy(logits, split.y_test))
    assert ev["accuracy_before"] == pytest.approx(
        accuracy(_ort(digits["model"], split.x_test), split.y_test)
    )
    assert ev["accuracy_drop"] == pytest.approx(ev["accuracy_before"] - ev["accuracy_after"])
    assert 0.5 < ev["outputs"]["logits"]["top1_agreement"] <= 1.0 and ev["samples"] == len(
        split.y_test
    )
    kept = {g["group"]: g["kept"] for g in r.groups}
    assert kept == {"conv0": 8, "conv2": 16, "conv5": 32, "fc9": 32, "fc11": 10}


@pytest.mark.slow  # compiles the model twice to time it (26 s)
def test_magnitude_report_and_latency(digits, tmp_path):
    out = tmp_path / "sparse.onnx"
    r = prune_model(
        digits["model"],
        out,
        method="magnitude",
        sparsity=0.5,
        scope="global",
        eval_data=digits["nolabels"],
        repeat=10,
    )
    assert r.written and r.macs["ratio"] == 1.0 and r.macs["ratio_nonzero"] < 0.7
    assert r.size["weight_bytes"]["ratio"] == 1.0  # dense storage: zeros still take their bytes
    assert r.size["compressed_bytes"]["ratio"] < 0.8  # ... but they compress
    zeros = sum(round(row["sparsity"] * row["size"]) for row in r.layers)
    assert zeros == round(0.5 * sum(row["size"] for row in r.layers))
    assert (
        r.evaluation["accuracy_before"] is None and r.evaluation["samples"] == 100
    )  # no labels: agreement only
    assert r.evaluation["accuracy_drop"] == pytest.approx(
        100 * (1 - r.evaluation["outputs"]["logits"]["top1_agreement"])
    )
    for engine in ("onnxruntime", "torsh-gen"):
        assert r.latency[engine]["before_ms"] > 0 and r.latency[engine]["after_ms"] > 0


def test_guard_refuses_and_writes_nothing_unless_forced(digits, tmp_path, capsys):
    out = tmp_path / "over.onnx"
    args = [
        "prune",
        str(digits["model"]),
        "-o",
        str(out),
        "--method",
        "structured",
        "--sparsity",
        "0.9",
        "--eval",
        str(digits["eval"]),
        "--max-accuracy-drop",
        "0.1",
        "--no-latency",
    ]
    code, stdout, err = cli(capsys, *args)
    assert code != 0 and not out.exists() and not list(tmp_path.iterdir())
    assert err.count("\n") == 1 and "over --max-accuracy-drop 0.1; nothing written" in err
    assert "over budget" in stdout
    code, stdout, err = cli(capsys, *args, "--force")
    assert code == 0 and out.is_file()
    code, stdout, _ = cli(
        capsys, *args[:-3], "--max-accuracy-drop", "100", "--no-latency", "-f", "json"
    )
    data = json.loads(stdout)
    assert code == 0 and data["guard"]["passed"] and data["written"]


def test_cli_table_output(digits, tmp_path, capsys):
    out = tmp_path / "p.onnx"
    code, stdout, _ = cli(
        capsys,
        "prune",
        str(digits["model"]),
        "-o",
        str(out),
        "--method",
        "structured",
        "--sparsity",
        "0.25",
        "--eval",
        str(digits["eval"]),
        "--no-latency",
        "--exclude",
        "conv5",
    )
    assert code == 0 and out.is_file()
    assert "top-1 accuracy" in stdout and "MACs per call" in stdout and "excluded" in stdout


def _nothing_prunable(folder: Path) -> Path:
    path = folder / "relu.onnx"
    onnx.save(
        make_model(
            [helper.make_node("Relu", ["x"], ["y"])],
            [tensor_info("x", [1, 4])],
            [tensor_info("y", [1, 4])],
        ),
        path,
    )
    return path


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--sparsity", "1.0"], "sparsity must be in [0, 1)"),
        (["--sparsity", "-0.5"], "sparsity must be in [0, 1)"),
        (["--method", "random"], "unknown method 'random'"),
        (["--scope", "model"], "unknown scope 'model'"),
        (["--norm", "l3"], "unknown norm 'l3'"),
        (["--channel-multiple", "0"], "--channel-multiple must be a positive integer"),
        (["--max-accuracy-drop", "1"], "--max-accuracy-drop needs --eval"),
        (["--include", "nope*"], "--include 'nope*' matches no node name"),
        (["--eval", "EVAL_BAD_NAME"], "unknown input name(s) ['pixels']"),
        (["--eval", "EVAL_BAD_SHAPE"], "must have shape"),
        (["--eval", "EVAL_BAD_LABELS"], "3 labels for 5 samples"),
        (["--eval", "EVAL_FLOAT_LABELS"], "'labels' must be integer class indices"),
        (["--eval", "EVAL_NAN"], "NaN or infinity"),
        (["--eval", "missing.npz"], "no such calibration data"),
        (["MODEL=relu"], "nothing to prune"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(digits, tmp_path, capsys, extra, message):
    x = np.zeros((5, 1, 8, 8), np.float32)
    bad = {
        "EVAL_BAD_NAME": {"pixels": x},
        "EVAL_BAD_SHAPE": {"image": np.zeros((5, 1, 4, 4), np.float32)},
        "EVAL_BAD_LABELS": {"image": x, "labels": np.arange(3)},
        "EVAL_FLOAT_LABELS": {"image": x, "labels": np.zeros(5, np.float32)},
        "EVAL_NAN": {"image": np.full_like(x, np.nan)},
    }
    model = str(digits["model"])
    args = []
    for a in extra:
        if a in bad:
            np.savez(tmp_path / f"{a}.npz", **bad[a])
            a = str(tmp_path / f"{a}.npz")
        elif a == "missing.npz":
            a = str(tmp_path / a)
        elif a == "MODEL=relu":
            model = str(_nothing_prunable(tmp_path))
            continue
        args.append(a)
    out = tmp_path / "out.onnx"
    code, stdout, err = cli(capsys, "prune", model, "-o", str(out), "--no-latency", *args)
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err
    assert not out.exists() and stdout == ""


def test_output_must_be_onnx(digits, tmp_path, capsys):
    code, _, err = cli(
        capsys, "prune", str(digits["model"]), "-o", str(tmp_path / "x.torsh"), "--no-latency"
    )
    assert code == 2 and "name it with .onnx" in err


def test_folder_of_npz_with_labels(digits, tmp_path):
    split = digits_split()
    folder = tmp_path / "evalset"
    folder.mkdir()
    np.savez(folder / "a.npz", image=split.x_test[:200], labels=split.y_test[:200])
    np.savez(folder / "b.npz", image=split.x_test[200:], labels=split.y_test[200:])
    r = prune_model(
        digits["model"],
        tmp_path / "p.onnx",
        method="magnitude",
        sparsity=0.3,
        eval_data=folder,
        latency=False,
    )
    assert r.evaluation["samples"] == len(split.y_test)
    assert r.evaluation["accuracy_before"] == pytest.approx(
        accuracy(_ort(digits["model"], split.x_test), split.y_test)
    )


def test_structured_pruned_model_compiles_and_matches_onnxruntime(digits, tmp_path):
    from torsh_gen.tools.validate import validate_model

    out = tmp_path / "pruned.onnx"
    prune_model(
        digits["model"], out, method="structured", sparsity=0.5, scope="global", latency=False
    )
    np.savez(tmp_path / "x.npz", image=digits_split().x_test[:32])
    report = validate_model(out, inputs=tmp_path / "x.npz")
    assert report["match"], report["outputs"]


def test_labels_in_some_files_only_is_refused(digits, tmp_path):
    from torsh_gen.errors import InputError

    split = digits_split()
    np.savez(tmp_path / "a.npz", image=split.x_test[:10], labels=split.y_test[:10])
    np.savez(tmp_path / "b.npz", image=split.x_test[10:20])
    with pytest.raises(InputError, match="give labels in every .npz file or in none"):
        prune_model(
            digits["model"],
            tmp_path / "p.onnx",
            method="magnitude",
            sparsity=0.3,
            eval_data=tmp_path,
            latency=False,
        )
    assert not (tmp_path / "p.onnx").exists()
