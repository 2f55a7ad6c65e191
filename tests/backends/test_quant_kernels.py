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
from tests.oracle import ORT_INTEGER_EXACT, reference_outputs
from torsh_gen.tools.artifact import load_artifact
from torsh_gen.tools.compile import compile_model


def _ort(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def _expected(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    """The spec's outputs: onnxruntime where its integer kernels are exact on this CPU, else
    onnx's reference evaluator (tests/oracle.py)."""
    return _ort(model, feeds) if ORT_INTEGER_EXACT else reference_outputs(model, feeds)


def _compile(model: onnx.ModelProto, folder: Path):
    compile_model(model, folder, level="O3")
    return load_artifact(folder)


def _ours(module, feeds: dict) -> list[np.ndarray]:
    return list(module.run(**feeds).values())


def _check_combined(
    tmp_path: Path, cases: list[onnx.ModelProto], feeds: list[dict], marker: str, exact: bool = True
) -> None:
    """Compile the cases as one model (one compile), compare every output with onnxruntime."""
    model = qm.combine(cases)
    mod = _compile(model, tmp_path / "art")
    assert marker in (tmp_path / "art" / "model.py").read_text()
    all_feeds = {f"m{i}_{k}": v for i, f in enumerate(feeds) for k, v in f.items()}
    got = _ours(mod, all_feeds)
    for i, case in enumerate(cases):
        want = _expected(case, feeds[i])[0]
        assert got[i].dtype == want.dtype, i
        if exact:
            np.testing.assert_array_equal(got[i], want, err_msg=f"case {i}")
        else:
            np.testing.assert_allclose(got[i], want, rtol=1e-5, atol=1e-5, err_msg=f"case {i}")


#: (M, K, N, activation type, weight type, per channel, symmetric)
MATMUL_CASES = [
    (1, 7, 5, np.uint8, np.int8, False, True),  # matrix-vector, K and N far from 4 and 64
    (13, 37, 70, np.int8, np.int8, True, False),  # int8 activations (+128 shift), asymmetric
    (64, 256, 130, np.uint8, np.uint8, True, False),  # uint8 weights (-128 shift), tiles + tails
    (6, 4, 64, np.int8, np.int8, True, True),  # exactly one register tile
    (200, 160, 96, np.uint8, np.int8, True, True),  # above the serial limit: the thread pool
    (11, 50, 66, np.uint8, np.int8, True, True),  # five rows past the last full tile
    (203, 160, 96, np.int8, np.int8, True, False),  # thread pool, five-row remainder tile
]


def test_qlinear_matmul_is_exact(tmp_path: Path) -> None:
    cases, feeds = [], []
    for i, (m, k, n, xdt, wdt, per_channel, symmetric) in enumerate(MATMUL_CASES):
        cases.append(
            qm.qlinear_matmul(
                m, k, n, xdt=xdt, wdt=wdt, per_channel=per_channel, symmetric=symmetric, seed=i
            )
        )
        feeds.append({"x": qm.int_input(np.random.default_rng(i), (m, k), xdt)})
    _check_combined(tmp_path, cases, feeds, "_cv.qgemm(")


def test_qdq_products_are_exact(tmp_path: Path) -> None:
    cases, feeds = [], []
    for i, (gemm, relu, xdt) in enumerate(
        [(False, True, np.uint8), (True, False, np.int8), (True, True, np.uint8)]
    ):
        cases.append(
            qm.qdq_matmul(9, 45, 67, xdt=xdt, gemm=gemm, relu=relu, symmetric=False, seed=11 + i)
        )
        feeds.append(
            {"x": np.random.default_rng(i).standard_normal((9, 45)).astype(np.float32) * 2}
        )
    _check_combined(tmp_path, cases, feeds, "_cv.qgemm(")


def test_qdq_float_output_within_float_rounding(tmp_path: Path) -> None:
    # the integer sum times x_scale * w_scale against onnxruntime's float MatMul of the
    # dequantized values: float32 rounding apart, no quantization step involved
    cases = [qm.qdq_matmul(4, 33, 17, bias=True, quantized_output=False, seed=12)]
    feeds = [{"x": np.random.default_rng(5).standard_normal((4, 33)).astype(np.float32)}]
    _check_combined(tmp_path, cases, feeds, "_cv.qgemm(", exact=False)


def test_qlinear_conv_is_exact(tmp_path: Path) -> None:
    shapes = [
        ((2, 3, 9, 7, 8), 3, 1, 1, np.uint8),  # padded 3x3: padding is the zero point
        ((1, 5, 8, 8, 12), 3, 2, 0, np.int8),  # stride 2, K = 45
        ((1, 16, 5, 5, 7), 1, 1, 0, np.uint8),  # 1x1: no column copy
    ]
    cases, feeds = [], []
    for i, ((n, c, h, w, m), kernel, stride, pad, xdt) in enumerate(shapes):
        cases.append(
            qm.qlinear_conv(n, c, h, w, m, kernel, stride=stride, pad=pad, xdt=xdt, seed=i)
        )
        feeds.append({"x": qm.int_input(np.random.default_rng(i), (n, c, h, w), xdt)})
    _check_combined(tmp_path, cases, feeds, "_cv.qconv2d(")


def test_matmul_integer_is_exact(tmp_path: Path) -> None:
    cases, feeds = [], []
    for i, (wdt, per_column) in enumerate([(np.int8, True), (np.uint8, False)]):
        cases.append(qm.matmul_integer(3, 29, 40, wdt=wdt, per_column=per_column, seed=i))
        feeds.append(
            {
                "x": qm.int_input(np.random.default_rng(i), (3, 29), np.uint8),
                "xz": np.asarray(np.uint8(131)),
            }
        )
    _check_combined(tmp_path, cases, feeds, "_cv.matmul_integer(")


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
            self.batches = iter([{"image": train[i : i + 64]} for i in range(0, 512, 64)])

        def get_next(self):  # noqa: ANN201  (onnxruntime's interface)
            return next(self.batches, None)

    quantize_static(
        str(folder / "cnn.onnx"),
        str(folder / "cnn_qdq.onnx"),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
    )
    model = onnx.load(folder / "cnn_qdq.onnx")
    return model, _compile(model, folder / "art"), split


def test_digits_cnn_qdq_matches_onnxruntime_and_keeps_accuracy(digits_int8) -> None:
    from torsh_gen.tools.digits import accuracy, digits_model

    model, mod, split = digits_int8
    x = split.inputs("test")["image"]
    ours = _ours(mod, {"image": x})[0]
    want = _expected(model, {"image": x})[0]
    if ORT_INTEGER_EXACT:  # onnxruntime runs each DQ -> Conv -> Q group as one integer kernel
        np.testing.assert_array_equal(ours, want)
    else:  # the reference convolves in float: a rounding tie may land one step apart
        step = float(np.min(np.diff(np.unique(want))))
        assert float(np.abs(ours - want).max()) <= step * 1.001
        assert np.count_nonzero(ours != want) <= want.size // 1000
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
    subprocess.run(
        [sys.executable, "-c", script, str(art), str(tmp_path / "x.npy"), str(tmp_path / "y.npy")],
        env=env,
        check=True,
        timeout=300,
    )
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), _ours(mod, {"image": x})[0])


@pytest.mark.slow  # its own kernel build (the q4 and float matmul parts): ~40 s cold
def test_int4_weight_only_matmul(tmp_path: Path) -> None:
    # one row (the in-kernel dequantization) and nine (dequantized once, float GEMM)
    cases = [
        qm.int4_matmul(1, 40, 300, seed=1),
        qm.int4_matmul(9, 64, 70, zero_point=False, seed=2),
    ]
    feeds = [
        {"x": np.random.default_rng(i).standard_normal((m, k)).astype(np.float32)}
        for i, (m, k) in enumerate([(1, 40), (9, 64)])
    ]
    model = qm.combine(cases)
    mod = _compile(model, tmp_path / "art")
    assert "_cv.q4_matmul(" in (tmp_path / "art" / "model.py").read_text()
    got = _ours(mod, {f"m{i}_x": f["x"] for i, f in enumerate(feeds)})
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # plain DQ + MatMul
    for i, case in enumerate(cases):
        sess = ort.InferenceSession(
            case.SerializeToString(), opts, providers=["CPUExecutionProvider"]
        )
        np.testing.assert_allclose(got[i], sess.run(None, feeds[i])[0], rtol=1e-5, atol=1e-5)
