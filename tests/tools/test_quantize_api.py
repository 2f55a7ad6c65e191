"""The quantize tool and command: digits accuracy, the guard, errors, the compiled artifact."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.oracle import ORT_INTEGER_EXACT
from tests.passes.test_quantize import _model, _ort, _quantized, _run_quantized
from torsh_gen.cli.main import main
from torsh_gen.errors import InputError
from torsh_gen.frontends.onnx import load_onnx, to_onnx
from torsh_gen.ops.inference import infer_types
from torsh_gen.passes.quantize import QuantFormat, QuantMode, QuantOptions
from torsh_gen.tools.calibration import CalibrationData
from torsh_gen.tools.digits import digits_model, digits_split
from torsh_gen.tools.quantize import AccuracyGuardError, QuantizeConfig, quantize_model
from torsh_gen.tools.quantize.evaluate import EvalSet, artifact_latency, outputs_of
from torsh_gen.tools.quantize.guard import guard


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """The digits CNN and MLP on disk, calibration (train) and labelled test data."""
    d = tmp_path_factory.mktemp("qdigits")
    split = digits_split()
    for kind in ("cnn", "mlp"):
        onnx.save(digits_model(kind), d / f"{kind}.onnx")
    np.savez(d / "calib.npz", image=split.x_train[:256])
    np.savez(d / "eval.npz", image=split.x_test, labels=split.y_test)
    return d


def _quick(**kw) -> QuantizeConfig:
    return QuantizeConfig(latency=False, artifact=False, **kw)


def test_static_per_channel_digits_cnn_meets_the_accuracy_target(digits):
    cfg = _quick(
        options=QuantOptions(QuantMode.STATIC, per_channel=True),
        calib=str(digits / "calib.npz"),
        eval=str(digits / "eval.npz"),
    )
    r = quantize_model(digits / "cnn.onnx", digits / "cnn_int8.onnx", cfg)
    assert r["written"] and (digits / "cnn_int8.onnx").is_file()
    assert r["ours"]["drop_kind"] == "accuracy" and r["ours"]["drop"] <= 0.5
    assert r["quantized"] == ["conv0", "conv2", "conv5", "fc9", "fc11"]
    # int8 weights plus per-channel scales: 27.0 % of the file, 25.9 % of the weight bytes
    assert r["size"]["ratio"] < 0.275 and r["size"]["weight_ratio"] < 0.265
    assert r["ours"]["outputs"]["logits"]["cosine"] > 0.999
    ort_row = r["onnxruntime"]
    assert ort_row["metrics"]["drop"] <= 1.0 and 0.2 < ort_row["size"]["ratio"] < 0.4
    # the written file is the model that was measured
    out = outputs_of(onnx.load(digits / "cnn_int8.onnx"), [{"image": digits_split().x_test}])[
        "logits"
    ]
    acc = float(np.mean(out.argmax(1) == digits_split().y_test) * 100)
    assert acc == pytest.approx(r["ours"]["accuracy_quantized"])


def test_weight_int4_digits_mlp(digits):
    cfg = _quick(options=QuantOptions(QuantMode.WEIGHT_INT4), eval=str(digits / "eval.npz"))
    r = quantize_model(digits / "mlp.onnx", digits / "mlp_int4.onnx", cfg)
    assert r["ours"]["drop"] <= 2.0
    # 4-bit weights and float16 block scales: 15.1 % of the weight bytes, 16.4 % of the file
    assert r["size"]["ratio"] < 0.17 and r["size"]["weight_ratio"] < 0.155
    assert r["opset"] == {"model": 17, "output": 21}  # blocked DequantizeLinear is opset 21


def _sensitive_model() -> onnx.ModelProto:
    """Two MatMuls; the first has one huge weight, so one shared int8 scale zeroes the rest."""
    rng = np.random.default_rng(7)
    w1 = rng.standard_normal((16, 32)).astype(np.float32) * 0.1
    w1[0, 0] = 500.0
    w2 = rng.standard_normal((32, 10)).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="touchy"),
        helper.make_node("MatMul", ["h", "w2"], ["y"], name="calm"),
    ]
    g = helper.make_graph(
        nodes,
        "s",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def _sensitive_data() -> dict[str, np.ndarray]:
    x = np.random.default_rng(8).standard_normal((400, 16)).astype(np.float32)
    x[:, 0] *= 0.001  # the huge weight's input is tiny: the other weights carry the signal
    return {"x": x}


def test_guard_keeps_the_most_sensitive_layer_float():
    g = load_onnx(_sensitive_model())
    infer_types(g)
    feeds = _sensitive_data()
    data = EvalSet(CalibrationData((feeds,), 400, "mem"), None)
    ref = outputs_of(g, data.feeds)
    trial, outcome = guard(g, QuantOptions(QuantMode.DYNAMIC), {}, data, ref, budget=2.0)
    assert outcome.sensitivity[0]["layer"] == "touchy" and outcome.sensitivity[0]["drop"] > 10
    assert outcome.within_budget and outcome.kept_float == ["touchy"]
    assert trial.result.quantized == ["calm"] and trial.result.skipped == {
        "touchy": "kept float by the accuracy guard"
    }
    assert trial.drop <= 2.0


def test_guard_failure_writes_nothing_unless_forced(tmp_path):
    m = _sensitive_model()
    m.graph.node.pop()  # only the touchy layer: no fallback short of all-float meets the budget
    m.graph.output[0].CopyFrom(helper.make_tensor_value_info("h", TensorProto.FLOAT, ["N", 32]))
    onnx.save(m, tmp_path / "m.onnx")
    np.savez(tmp_path / "data.npz", **_sensitive_data())
    cfg = _quick(
        options=QuantOptions(QuantMode.DYNAMIC),
        eval=str(tmp_path / "data.npz"),
        max_accuracy_drop=0.5,
    )
    with pytest.raises(AccuracyGuardError, match="nothing written"):
        quantize_model(tmp_path / "m.onnx", tmp_path / "q.onnx", cfg)
    assert sorted(os.listdir(tmp_path)) == ["data.npz", "m.onnx"]  # no output, no temp file
    forced = QuantizeConfig(**{**cfg.__dict__, "force": True})
    r = quantize_model(tmp_path / "m.onnx", tmp_path / "q.onnx", forced)
    assert r["written"] and not r["guard"]["within_budget"] and (tmp_path / "q.onnx").is_file()


def cli(capsys, *args: str) -> tuple[int, str, str]:
    try:
        main(list(args))
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    d = tmp_path_factory.mktemp("qsmall")
    onnx.save(_model(), d / "m.onnx")
    x = np.random.default_rng(0).standard_normal((32, 2, 4, 4)).astype(np.float32)
    np.savez(d / "calib.npz", x=x)
    bad = x.copy()
    bad[3, 0, 0, 0] = np.nan
    np.savez(d / "nan.npz", x=bad)
    np.savez(d / "wrong.npz", image=x)
    np.savez(d / "empty.npz", x=x[:0])
    return d


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--mode", "static"], "--mode static needs calibration data"),
        (["--mode", "weight-int4", "--format", "qoperator"], "has no QOperator form"),
        (["--mode", "int3"], "--mode 'int3'"),
        (["--include", "Softmax"], "--include 'Softmax': neither an op type nor a node"),
        (["--exclude", "relu1"], "node is a Relu"),
        (["--mode", "static", "--calib", "{d}/nan.npz"], "contains NaN or infinity"),
        (["--mode", "static", "--calib", "{d}/wrong.npz"], "unknown input name(s) ['image']"),
        (["--mode", "static", "--calib", "{d}/empty.npz"], "holds no samples"),
        (["--method", "mse"], "unknown --method"),
        (["--mode", "dynamic", "--symmetric"], "--symmetric sets static activations"),
        (["--block-size", "24", "--mode", "weight-int4"], "power of two"),
    ],
)
def test_bad_input_is_one_line_before_any_work(capsys, small, extra, message):
    out = small / "never.onnx"
    code, _, err = cli(
        capsys,
        "quantize",
        str(small / "m.onnx"),
        "-o",
        str(out),
        *[e.format(d=small) for e in extra],
    )
    assert code == 2, err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not out.exists()


def test_cli_writes_a_model_and_a_json_report(capsys, small):
    out = small / "q.onnx"
    code, stdout, err = cli(
        capsys,
        "quantize",
        str(small / "m.onnx"),
        "-o",
        str(out),
        "--mode",
        "static",
        "--calib",
        str(small / "calib.npz"),
        "--per-channel",
        "--method",
        "percentile",
        "--no-latency",
        "--report",
        "json",
    )
    assert code == 0, err
    r = json.loads(
        stdout
    )  # nothing else on stdout (onnxruntime's calibrator prints are kept off it)
    assert r["quantized"] == ["conv", "fc", "mm"] and r["method"] == "percentile"
    assert r["ours"]["outputs"]["y"]["cosine"] > 0.999 and r["data"]["kind"] == "calibration"
    onnx.checker.check_model(onnx.load(out))


def test_compiled_artifact_runs_a_qdq_model_like_onnxruntime():
    """In the default suite on purpose: 10 s with numba's cache warm, about a minute cold."""
    feeds = {"x": np.random.default_rng(0).standard_normal((8, 2, 4, 4)).astype(np.float32)}
    g, _ = _quantized(_model(), feeds, mode=QuantMode.STATIC, per_channel=True)
    ref = _run_quantized(to_onnx(g, value_info=False), feeds)
    with tempfile.TemporaryDirectory() as tmp:
        _, ours = artifact_latency(g, feeds, Path(tmp), "qdq_model", repeat=1)
    # onnx's reference (the oracle where onnxruntime's u8 x s8 products saturate) convolves
    # the dequantized values in float, so a rounding tie may requantize one step apart
    atol = 1e-5 if ORT_INTEGER_EXACT else 0.02 * float(np.abs(ref).max())
    np.testing.assert_allclose(ours["y"], ref, rtol=1e-5, atol=atol)


@pytest.mark.slow
@pytest.mark.parametrize(
    "kw",
    [
        dict(mode=QuantMode.WEIGHT_INT4, block_size=16),
        dict(mode=QuantMode.DYNAMIC, format=QuantFormat.QOPERATOR, per_channel=True),
        dict(mode=QuantMode.STATIC, format=QuantFormat.QOPERATOR, per_channel=True),
    ],
)
def test_compiled_artifact_runs_every_form(kw):
    feeds = {"x": np.random.default_rng(0).standard_normal((8, 2, 4, 4)).astype(np.float32)}
    g, _ = _quantized(_model(), feeds, **kw)
    proto = to_onnx(g, value_info=False)
    int4 = kw["mode"] == QuantMode.WEIGHT_INT4  # float products: onnxruntime is exact
    ref = _ort(proto, feeds, exact_int4=True) if int4 else _run_quantized(proto, feeds)
    with tempfile.TemporaryDirectory() as tmp:
        _, ours = artifact_latency(g, feeds, Path(tmp), "q_model", repeat=1)
    np.testing.assert_allclose(ours["y"], ref, rtol=1e-4, atol=1e-4)


def test_guard_needs_a_class_output(tmp_path):
    m = _sensitive_model()
    m.graph.output[0].CopyFrom(helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10]))
    m.graph.node.append(helper.make_node("ReduceSum", ["y"], ["total"], keepdims=0))
    del m.graph.output[:]
    m.graph.output.append(helper.make_tensor_value_info("total", TensorProto.FLOAT, ["N"]))
    onnx.save(m, tmp_path / "m.onnx")
    np.savez(tmp_path / "data.npz", **_sensitive_data())
    cfg = _quick(
        options=QuantOptions(QuantMode.DYNAMIC),
        eval=str(tmp_path / "data.npz"),
        max_accuracy_drop=1.0,
    )
    with pytest.raises(InputError, match="needs a model output of class scores"):
        quantize_model(tmp_path / "m.onnx", tmp_path / "q.onnx", cfg)
    assert not (tmp_path / "q.onnx").exists()


def test_image_folder_calibration_with_preprocessing(capsys, digits, tmp_path):
    from PIL import Image

    images = tmp_path / "images"
    images.mkdir()
    for i, img in enumerate(digits_split().x_train[:40]):
        Image.fromarray((img[0] * 255).round().astype(np.uint8), "L").save(images / f"{i:03d}.png")
    out = tmp_path / "q.onnx"
    code, stdout, err = cli(
        capsys, "quantize", str(digits / "cnn.onnx"), "-o", str(out), "--mode", "static",
        "--calib", str(images), "--preprocess", "scale=255", "--calib-limit", "32",
        "--eval", str(digits / "eval.npz"), "--per-channel", "--no-latency", "--no-compare-ort",
        "--report", "json",
    )  # fmt: skip
    assert code == 0, err
    r = json.loads(stdout)
    assert r["ours"]["drop"] <= 0.5 and out.is_file()
