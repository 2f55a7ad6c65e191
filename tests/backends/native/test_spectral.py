"""Spectral ops (DFT, STFT, MelWeightMatrix) through the JIT and the interpreter, against
onnxruntime: static and run-time axis / lengths, real and complex signals, padding and
truncation, one-sided and inverse transforms."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.backends.native.helpers import check_native, lower_model, make_model, rand
from tests.backends.native.test_training_ops import check_reference
from torsh_gen.backends.kernel.lower.spectral import twiddle_table
from torsh_gen.backends.kernel.printer import format_kernel
from torsh_gen.errors import UnsupportedOpError


def build(
    op: str,
    feeds: dict[str, np.ndarray],
    consts: dict[str, np.ndarray] | None = None,
    inputs: list[str] | None = None,
    out_shape: list[int] | None = None,
    opset: int = 20,
    out_type: int = TensorProto.FLOAT,
    **attrs,
) -> onnx.ModelProto:
    """A one-node model; ``out_shape`` declares the output (a run-time axis or length
    leaves ONNX's shape inference without one), else shape inference types it."""
    consts = consts or {}
    names = inputs if inputs is not None else list(feeds) + list(consts)
    vi = [
        helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
        for k, v in feeds.items()
    ]
    inits = [numpy_helper.from_array(np.asarray(v), k) for k, v in consts.items()]
    out = (
        helper.make_tensor_value_info("y", out_type, out_shape)
        if out_shape is not None
        else onnx.ValueInfoProto(name="y")
    )
    model = make_model([helper.make_node(op, names, ["y"], **attrs)], vi, [out], inits, opset)
    return model if out_shape is not None else onnx.shape_inference.infer_shapes(model)


def check(
    model: onnx.ModelProto, feeds, interpret: bool = False, tol: float = 1e-4, level: str = "O3"
):
    """Compare with onnxruntime (relative and absolute ``tol``) and check a kernel ran."""
    program = check_native(model, feeds, rtol=tol, atol=tol, interpret=interpret, level=level)
    op = model.graph.node[0].op_type
    assert op in [c.op_type for c in program.calls]
    return program


def kernel_text(program, op: str) -> str:
    """The printed kernel of the first call of ``op``."""
    call = next(c for c in program.calls if c.op_type == op)
    return format_kernel(program.kernels[call.kernel], "_")


def i64(v: int) -> np.ndarray:
    """A 0-d int64 scalar."""
    return np.array(v, dtype=np.int64)


# --------------------------------------------------------------------------- twiddles
def test_twiddle_table_is_exact_at_quarter_turns() -> None:
    cos, sin = twiddle_table(8)
    assert cos[[0, 2, 4, 6]].tolist() == [1.0, 0.0, -1.0, 0.0]
    assert sin[[0, 2, 4, 6]].tolist() == [0.0, 1.0, 0.0, -1.0]
    np.testing.assert_allclose(cos, np.cos(2 * np.pi * np.arange(8) / 8), atol=1e-15)
    cos5, sin5 = twiddle_table(5)
    assert cos5[0] == 1.0 and sin5[0] == 0.0


# --------------------------------------------------------------------------- DFT
@pytest.mark.parametrize(
    "inverse, onesided, channels",
    [(0, 0, 1), (0, 0, 2), (1, 0, 1), (1, 0, 2), (0, 1, 1), (1, 1, 2)],
)
def test_dft_opset17_attributes(inverse: int, onesided: int, channels: int) -> None:
    """Every valid mix (one-sided forward transforms take a real signal, inverse ones a
    complex spectrum; the latter give a real signal of 2 * (8 - 1) samples)."""
    x = rand(2, 8, channels)
    shape = [2, 14, 1] if inverse and onesided else [2, 5 if onesided else 8, 2]
    model = build(
        "DFT", {"x": x}, opset=17, out_shape=shape, axis=1, inverse=inverse, onesided=onesided
    )
    check(model, {"x": x}, interpret=True)


@pytest.mark.parametrize("axis", [1, 2, -2, -3])
def test_dft_opset20_constant_axis(axis: int) -> None:
    x = rand(2, 5, 6, 2)
    model = build("DFT", {"x": x}, {"axis": i64(axis)}, ["x", "", "axis"])
    check(model, {"x": x}, interpret=axis == 2)


@pytest.mark.parametrize("axis", [0, 1, 2, -2])
def test_dft_opset20_runtime_axis(axis: int) -> None:
    """The axis is a graph input: each fitting axis gets a loop nest, the value picks one."""
    x = rand(3, 5, 5, 1)
    model = build(
        "DFT", {"x": x, "axis": i64(axis)}, inputs=["x", "", "axis"], out_shape=[3, 5, 5, 2]
    )
    check(model, {"x": x, "axis": i64(axis)}, interpret=axis == 1)


def test_dft_runtime_axis_large_runs_threads_inside_the_choice() -> None:
    x = rand(4, 32, 16, 2)
    feeds = {"x": x, "axis": i64(2)}
    model = build("DFT", feeds, inputs=["x", "", "axis"], out_shape=[4, 32, 16, 2], inverse=1)
    program = check(model, feeds)
    assert "parallel" in kernel_text(program, "DFT")


def test_dft_runtime_axis_onesided_picks_the_shrunk_axis() -> None:
    x = rand(2, 10, 7, 1)
    feeds = {"x": x, "axis": i64(1)}
    model = build("DFT", feeds, inputs=["x", "", "axis"], out_shape=[2, 6, 7, 2], onesided=1)
    check(model, feeds)


@pytest.mark.parametrize("length", [5, 8, 13])
@pytest.mark.parametrize("inverse", [0, 1])
def test_dft_length_pads_and_truncates(length: int, inverse: int) -> None:
    x = rand(2, 8, 2)
    model = build(
        "DFT", {"x": x}, {"n": i64(length)}, ["x", "n"], opset=17, axis=1, inverse=inverse
    )
    check(model, {"x": x}, interpret=length == 5)


@pytest.mark.parametrize("length", [6, 7])
def test_dft_runtime_length_onesided(length: int) -> None:
    """Four one-sided bins come from a length of 6 or 7: the run-time value decides."""
    x = rand(2, 9, 1)
    feeds = {"x": x, "n": i64(length)}
    model = build(
        "DFT", feeds, inputs=["x", "n"], out_shape=[2, 4, 2], opset=17, axis=1, onesided=1
    )
    check(model, feeds, interpret=True)


@pytest.mark.parametrize("length", [None, 9, 10])
def test_dft_inverse_onesided_real_output(length: int | None) -> None:
    """Against onnx's reference (numpy's irfft): for odd lengths onnxruntime reads the last
    bin differently."""
    x = rand(2, 6, 3, 2)
    consts = {} if length is None else {"n": i64(length)}
    inputs = ["x"] if length is None else ["x", "n"]
    model = build("DFT", {"x": x}, consts, inputs, opset=17, axis=1, inverse=1, onesided=1)
    check_reference(model, {"x": x}, tol=1e-4, interpret=length == 9)


def test_dft_double_and_longer_signal() -> None:
    x = rand(3, 64, 2, dtype=np.float64)
    model = build("DFT", {"x": x}, opset=17, axis=1)
    check(model, {"x": x}, tol=1e-9)
    y = rand(4, 200, 1, seed=1)
    check(build("DFT", {"x": y}, opset=17, axis=1, onesided=1), {"x": y}, tol=1e-3)


def test_dft_real_spectrum_is_exactly_real_at_dc_and_nyquist() -> None:
    x = np.arange(16, dtype=np.float32).reshape(1, 16, 1)
    program = lower_model(build("DFT", {"x": x}, opset=17, axis=1))
    from torsh_gen.backends.llvm.jit import JitProgram

    y = JitProgram(program).run({"x": x})["y"]
    assert y[0, 0, 1] == 0.0 and y[0, 8, 1] == 0.0


def test_dft_axis_that_is_not_a_signal_axis_is_declined() -> None:
    x = rand(2, 8, 2)
    model = build("DFT", {"x": x}, {"axis": i64(2)}, ["x", "", "axis"], out_shape=[2, 8, 2])
    with pytest.raises(UnsupportedOpError, match="not a signal axis"):
        lower_model(model)


# --------------------------------------------------------------------------- STFT
def test_stft_runtime_window_and_step() -> None:
    x = rand(2, 64, 1)
    window = np.hanning(16).astype(np.float32)
    feeds = {"x": x, "step": i64(8), "w": window}
    model = build("STFT", feeds, inputs=["x", "step", "w"], out_shape=[2, 7, 9, 2], opset=17)
    check(model, feeds, interpret=True)


@pytest.mark.parametrize("onesided", [0, 1])
def test_stft_constant_length_complex_signal(onesided: int) -> None:
    x = rand(1, 40, 2)
    feeds = {"x": x}
    model = build(
        "STFT",
        feeds,
        {"step": i64(6), "n": i64(10)},
        ["x", "step", "", "n"],
        opset=17,
        onesided=onesided,
    )
    check(model, feeds)


def test_stft_runtime_frame_length_selects_the_variant() -> None:
    """Nine one-sided bins: frame length 16 or 17, read at run time."""
    x = rand(1, 128, 1)
    feeds = {"x": x, "step": i64(8), "n": i64(16)}
    model = build("STFT", feeds, inputs=["x", "step", "", "n"], out_shape=[1, 15, 9, 2], opset=17)
    check(model, feeds)


def test_stft_constant_step_that_does_not_fit_is_declined() -> None:
    x = rand(1, 64, 1)
    model = build(
        "STFT",
        {"x": x},
        {"step": i64(8), "n": i64(16)},
        ["x", "step", "", "n"],
        out_shape=[1, 5, 9, 2],
        opset=17,
    )
    with pytest.raises(UnsupportedOpError, match="does not give 5 frames"):
        lower_model(model)


# --------------------------------------------------------------------------- MelWeightMatrix
def _mel_feeds(n_mel: int, n_dft: int, rate: int, lo: float, hi: float) -> dict[str, np.ndarray]:
    return {
        "m": np.array(n_mel, np.int32),
        "n": np.array(n_dft, np.int32),
        "r": np.array(rate, np.int32),
        "lo": np.array(lo, np.float32),
        "hi": np.array(hi, np.float32),
    }


@pytest.mark.parametrize(
    "args",
    [(8, 16, 8192, 0.0, 4096.0), (10, 64, 16000, 20.0, 7000.0), (5, 33, 8000, 100.0, 3900.0)],
)
def test_mel_weight_matrix_runtime_scalars(args) -> None:
    feeds = _mel_feeds(*args)
    shape = [args[1] // 2 + 1, args[0]]
    model = build("MelWeightMatrix", feeds, out_shape=shape, opset=17)
    check(model, feeds, interpret=args[0] == 8)


def test_mel_weight_matrix_constants_become_a_table() -> None:
    consts = _mel_feeds(6, 32, 8000, 50.0, 3500.0)
    model = build(
        "MelWeightMatrix",
        {},
        consts,
        out_shape=[17, 6],
        opset=17,
        output_datatype=TensorProto.DOUBLE,
        out_type=TensorProto.DOUBLE,
    )
    program = check(model, {}, interpret=True, level="O0")
    assert len(program.weights) > 0


# --------------------------------------------------------------------------- long transforms
@pytest.mark.parametrize(
    "op, inverse, onesided, channels",
    [("DFT", 0, 0, 2), ("DFT", 1, 0, 2), ("DFT", 0, 1, 1), ("STFT", 0, 1, 1)],
)
def test_transforms_past_the_matrix_limit_use_the_indexed_table(
    monkeypatch, op, inverse, onesided, channels
) -> None:
    """Above MATRIX_LIMIT entries a transform reads the length-n table (float64 sums)."""
    from torsh_gen.backends.kernel.lower import spectral

    monkeypatch.setattr(spectral, "MATRIX_LIMIT", 0)
    x = rand(2, 12, channels)
    if op == "STFT":
        feeds = {"x": x, "step": i64(2), "w": np.hanning(6).astype(np.float32)}
        model = build("STFT", feeds, inputs=["x", "step", "w"], out_shape=[2, 4, 4, 2], opset=17)
    else:
        feeds = {"x": x}
        model = build(
            "DFT",
            feeds,
            opset=17,
            out_shape=[2, 7 if onesided else 12, 2],
            axis=1,
            inverse=inverse,
            onesided=onesided,
        )
    program = check(model, feeds, interpret=True)
    assert "vector" not in kernel_text(program, op)


def test_inverse_onesided_past_the_matrix_limit(monkeypatch) -> None:
    from torsh_gen.backends.kernel.lower import spectral

    monkeypatch.setattr(spectral, "MATRIX_LIMIT", 0)
    x = rand(2, 6, 2)
    for n in (9, 10):
        model = build(
            "DFT", {"x": x}, {"n": i64(n)}, ["x", "n"], opset=17, axis=1, inverse=1, onesided=1
        )
        check_reference(model, {"x": x}, tol=1e-5, interpret=True)
