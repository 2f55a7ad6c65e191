"""The compiled artifact's integer kernels (``_conv.py``'s qgemm part) against onnxruntime.

QOperator and dynamic models are compared exactly: onnxruntime's QLinearMatMul/QLinearConv/
MatMulInteger compute the same integer sums and requantize with the same float32 multiplier
and rounding (half to even), so any difference is a bug. QDQ models built here are exact
too (onnxruntime turns each DQ → product → Q group into its QLinear kernel); the digits
CNN from onnxruntime's own quantizer is held to the same. Whole QDQ networks with float ops
between the groups (the BERT encoder) may differ by a quantization step where
onnxruntime's float steps round differently; that is measured in benchmarks/int8.md.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from tests.backends import quant_models as qm
from torsh_gen.tools.artifact import load_artifact
from torsh_gen.tools.compile import compile_model


def _ort(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def _compile(model: onnx.ModelProto, folder: Path):
    compile_model(model, folder, level="O3")
    return load_artifact(folder)


def _ours(module, feeds: dict) -> list[np.ndarray]:
    return list(module.run(**feeds).values())


@pytest.mark.parametrize(
    "m,k,n,xdt,wdt,per_channel,symmetric",
    [
        (1, 7, 5, np.uint8, np.int8, False, True),  # matrix-vector, K and N far from 4 and 64
        (13, 37, 70, np.int8, np.int8, True, False),  # int8 activations (+128 shift), asymmetric
        (64, 256, 130, np.uint8, np.uint8, True, False),  # uint8 weights (-128 shift), 2 tiles + tails
        (6, 4, 64, np.int8, np.int8, True, True),  # exactly one register tile
    ],
)
def test_qlinear_matmul_is_exact(tmp_path: Path, m, k, n, xdt, wdt, per_channel, symmetric) -> None:
    model = qm.qlinear_matmul(m, k, n, xdt=xdt, wdt=wdt, per_channel=per_channel, symmetric=symmetric, seed=k)
    mod = _compile(model, tmp_path / "mm")
    assert "_cv.qgemm(" in (tmp_path / "mm" / "model.py").read_text()
    x = qm.int_input(np.random.default_rng(n), (m, k), xdt)
    got, want = _ours(mod, {"x": x})[0], _ort(model, {"x": x})[0]
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("gemm,relu,xdt", [(False, True, np.uint8), (True, False, np.int8), (True, True, np.uint8)])
def test_qdq_product_is_exact(tmp_path: Path, gemm: bool, relu: bool, xdt: type) -> None:
    model = qm.qdq_matmul(9, 45, 67, xdt=xdt, gemm=gemm, relu=relu, symmetric=False, seed=11)
    mod = _compile(model, tmp_path / "qdq")
    x = np.random.default_rng(3).standard_normal((9, 45)).astype(np.float32) * 2
    np.testing.assert_array_equal(_ours(mod, {"x": x})[0], _ort(model, {"x": x})[0])


def test_qdq_float_output_within_float_rounding(tmp_path: Path) -> None:
    model = qm.qdq_matmul(4, 33, 17, bias=True, quantized_output=False, seed=12)
    mod = _compile(model, tmp_path / "qdqf")
    x = np.random.default_rng(5).standard_normal((4, 33)).astype(np.float32)
    # the integer sum times x_scale * w_scale against onnxruntime's float MatMul of the
    # dequantized values: float32 rounding apart, no quantization step involved
    np.testing.assert_allclose(_ours(mod, {"x": x})[0], _ort(model, {"x": x})[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape,kernel,stride,pad,xdt", [
    ((2, 3, 9, 7, 8), 3, 1, 1, np.uint8),  # padded 3x3: padding is the zero point
    ((1, 5, 8, 8, 12), 3, 2, 0, np.int8),  # stride 2, K = 45
    ((1, 16, 5, 5, 7), 1, 1, 0, np.uint8),  # 1x1: no column copy
])
def test_qlinear_conv_is_exact(tmp_path: Path, shape, kernel, stride, pad, xdt) -> None:
    n, c, h, w, m = shape
    model = qm.qlinear_conv(n, c, h, w, m, kernel, stride=stride, pad=pad, xdt=xdt, seed=c)
    mod = _compile(model, tmp_path / "conv")
    assert "_cv.qconv2d(" in (tmp_path / "conv" / "model.py").read_text()
    x = qm.int_input(np.random.default_rng(m), (n, c, h, w), xdt)
    np.testing.assert_array_equal(_ours(mod, {"x": x})[0], _ort(model, {"x": x})[0])


@pytest.mark.parametrize("wdt,per_column", [(np.int8, True), (np.uint8, False)])
def test_matmul_integer_is_exact(tmp_path: Path, wdt: type, per_column: bool) -> None:
    model = qm.matmul_integer(3, 29, 40, wdt=wdt, per_column=per_column, seed=2)
    mod = _compile(model, tmp_path / "mmi")
    assert "_cv.matmul_integer(" in (tmp_path / "mmi" / "model.py").read_text()
    rng = np.random.default_rng(8)
    feeds = {"x": qm.int_input(rng, (3, 29), np.uint8), "xz": np.uint8(131)}
    got = _ours(mod, {"x": feeds["x"], "xz": np.asarray(feeds["xz"])})[0]
    np.testing.assert_array_equal(got, _ort(model, {"x": feeds["x"], "xz": np.asarray(feeds["xz"])})[0])


@pytest.fixture(scope="module")
def digits_int8(tmp_path_factory: pytest.TempPathFactory):
    """The digits CNN quantized by onnxruntime (static, QDQ, per channel) and compiled."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    from torsh_gen.tools.digits import digits_model, digits_split

    folder = tmp_path_factory.mktemp("digits")
    split = digits_split()
    onnx.save(digits_model("cnn"), folder / "cnn.onnx")
    train = split.inputs("train")["image"]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{"image": train[i:i + 64]} for i in range(0, 512, 64)])

        def get_next(self):  # noqa: ANN201  (onnxruntime's interface)
            return next(self.batches, None)

    quantize_static(str(folder / "cnn.onnx"), str(folder / "cnn_qdq.onnx"), Reader(),
                    quant_format=QuantFormat.QDQ, per_channel=True)
    model = onnx.load(folder / "cnn_qdq.onnx")
    return model, _compile(model, folder / "art"), split


def test_digits_cnn_qdq_matches_onnxruntime_and_keeps_accuracy(digits_int8) -> None:
    from torsh_gen.tools.digits import accuracy, digits_model

    model, mod, split = digits_int8
    x = split.inputs("test")["image"]
    ours = _ours(mod, {"image": x})[0]
    np.testing.assert_array_equal(ours, _ort(model, {"image": x})[0])
    float_acc = accuracy(_ort(digits_model("cnn"), {"image": x})[0], split.y_test)
    assert accuracy(ours, split.y_test) >= float_acc - 0.5  # issue 4: drop <= 0.5 points


def test_vnni_detection_and_forced_fallback(digits_int8, tmp_path: Path) -> None:
    model, mod, split = digits_int8
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    assert mod._conv.VNNI == (" avx512_vnni" in flags and not os.environ.get("TORSH_GEN_NO_VNNI"))
    x = split.inputs("test")["image"][:50]
    np.save(tmp_path / "x.npy", x)
    script = (
        "import sys, numpy as np\n"
        "from torsh_gen.tools.artifact import load_artifact\n"
        "m = load_artifact(sys.argv[1])\n"
        "assert not m._conv.VNNI\n"
        "np.save(sys.argv[3], list(m.run(image=np.load(sys.argv[2])).values())[0])\n"
    )
    env = dict(os.environ, TORSH_GEN_NO_VNNI="1")
    art = Path(mod.__file__).parent
    subprocess.run([sys.executable, "-c", script, str(art), str(tmp_path / "x.npy"), str(tmp_path / "y.npy")],
                   env=env, check=True, timeout=300)
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), _ours(mod, {"image": x})[0])
