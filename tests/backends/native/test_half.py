"""float16 and bfloat16 tensors on native targets: held as 16-bit patterns, computed in
float32 (``kernel/storage.py``). The conversions are checked bit for bit against numpy and
ml_dtypes (every half pattern, and float32 patterns around every rounding boundary), then
models through the JIT, the interpreter, the C driver, the ctypes wrapper and Node."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import ml_dtypes
import numpy as np
import onnx
import pytest
from onnx import TensorProto as TP
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from tests.backends.native.helpers import check_native, interpret_program, lower_model, make_model
from torsh_gen.backends.kernel.builder import KernelBuilder
from torsh_gen.backends.kernel.interp import run_kernel
from torsh_gen.backends.llvm.jit import JitKernels, JitProgram
from torsh_gen.tools.artifact import load_artifact
from torsh_gen.tools.compile import compile_model

HALVES = {"f16": np.float16, "bf16": ml_dtypes.bfloat16}
FLOAT8 = {"f8e4m3fn": ml_dtypes.float8_e4m3fn, "f8e4m3fnuz": ml_dtypes.float8_e4m3fnuz,
          "f8e5m2": ml_dtypes.float8_e5m2, "f8e5m2fnuz": ml_dtypes.float8_e5m2fnuz}
NARROW = {**HALVES, **FLOAT8}


def _convert_kernel(src: str, dst: str, n: int):
    kb = KernelBuilder("convert")
    x = kb.buffer("x", src, n)
    y = kb.buffer("y", dst, n, writable=True)
    with kb.loop(n, kind="vector", width=8) as i:
        y[i] = x[i]
    return kb.build()


def _raw(a: np.ndarray) -> np.ndarray:
    if a.dtype.kind in "iub" or a.dtype in (np.float32, np.float64):
        return a
    return a.view(np.uint16 if a.dtype.itemsize == 2 else np.uint8)


def _convert(src: str, dst: str, x: np.ndarray, out_dtype, interpret_every: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """[(input, JIT result), (subsampled input, interpreter result)] of ``src → dst``
    conversion; the slow interpreter sees every ``interpret_every``-th element only."""
    out = []
    for engine, data in (("jit", x), ("interp", np.ascontiguousarray(x[::interpret_every]))):
        kernel = _convert_kernel(src, dst, data.size)
        got = np.zeros(data.size, out_dtype)
        if engine == "jit":
            JitKernels([kernel]).run(kernel.name, {"x": _raw(data), "y": _raw(got)})
        else:
            run_kernel(kernel, {"x": _raw(data), "y": _raw(got)})
        out.append((data, got))
    return out


@pytest.mark.parametrize("half", sorted(NARROW))
def test_every_half_pattern_widens_exactly(half: str) -> None:
    bits = 8 * np.dtype(NARROW[half]).itemsize
    x = np.arange(1 << bits, dtype=np.uint16 if bits == 16 else np.uint8).view(NARROW[half])
    for data, got in _convert(half, "f32", x, np.float32, interpret_every=7):
        expected = data.astype(np.float32)
        nan = np.isnan(expected)
        assert np.array_equal(np.isnan(got), nan)
        assert np.array_equal(got[~nan].view(np.uint32), expected[~nan].view(np.uint32))  # signed zeros too


def _float32_probes(half: str) -> np.ndarray:
    """float32 values at and beside every rounding tie of the half format, random bit
    patterns, and edges (overflow threshold, subnormals, infinities, NaN)."""
    rng = np.random.default_rng(7)
    random_bits = rng.integers(0, 1 << 32, 100_000, dtype=np.uint64).astype(np.uint32)
    dtype = {**NARROW, "f4e2m1": ml_dtypes.float4_e2m1fn}[half]
    bits = 4 if half == "f4e2m1" else 8 * np.dtype(dtype).itemsize
    values = np.arange(1 << bits, dtype=np.uint16 if bits == 16 else np.uint8).view(dtype).astype(np.float32)
    v = np.unique(values[np.isfinite(values)])
    tie = ((v[:-1].astype(np.float64) + v[1:]) / 2).astype(np.float32)
    up, down = np.nextafter(tie, np.float32(np.inf)), np.nextafter(tie, np.float32(-np.inf))
    edges = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 65504, 65519.996, 65520, 1e-8, 6e-8, 3e38,
                      np.finfo(np.float32).tiny / 2, 448, 464, 465, 240, 248, 57344, 61440, 61441, -1e-9], np.float32)
    return np.concatenate([edges, random_bits.view(np.float32), tie, up, down]).astype(np.float32)


@pytest.mark.parametrize("half", sorted(NARROW))
def test_float32_rounds_to_nearest_even_half(half: str) -> None:
    """Non-saturating conversion, as ml_dtypes rounds (overflow: inf, or NaN without one)."""
    for data, got in _convert("f32", half, _float32_probes(half), NARROW[half], interpret_every=41):
        with np.errstate(over="ignore", invalid="ignore"):
            expected = data.astype(NARROW[half])
        nan = np.isnan(expected.astype(np.float32))
        assert np.array_equal(np.isnan(got.astype(np.float32)), nan)
        bad = np.flatnonzero(_raw(got[~nan]) != _raw(expected[~nan]))
        assert bad.size == 0, f"{bad.size} mismatches, first {data[~nan][bad[:5]]}"


@pytest.mark.parametrize("to", [TP.FLOAT8E4M3FN, TP.FLOAT8E4M3FNUZ, TP.FLOAT8E5M2, TP.FLOAT8E5M2FNUZ])
@pytest.mark.parametrize("saturate", [0, 1])
def test_float8_cast_round_trip_matches_the_onnx_reference(to: int, saturate: int) -> None:
    """float32 → float8 (saturating or not) → float32, against onnx's reference Cast."""
    x = np.concatenate([_float32_probes("f8e4m3fn")[:40], np.linspace(-70000, 70000, 300, dtype=np.float32)])
    x = x.astype(np.float32).reshape(1, -1)
    model = make_model(
        [helper.make_node("Cast", ["x"], ["q"], to=to, saturate=saturate), helper.make_node("Cast", ["q"], ["y"], to=TP.FLOAT)],
        [helper.make_tensor_value_info("x", TP.FLOAT, x.shape)],
        [helper.make_tensor_value_info("q", to, x.shape), helper.make_tensor_value_info("y", TP.FLOAT, x.shape)], opset=21)
    program = lower_model(model, level="O0")
    expected = _ref_run(model, {"x": x})
    for got in (JitProgram(program).run({"x": x}).values(), interpret_program(program, {"x": x})):
        for g, e in zip(got, expected):
            assert g.dtype == e.dtype
            np.testing.assert_array_equal(g.astype(np.float32), e.astype(np.float32))


def _ref_run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    return ReferenceEvaluator(model).run(None, feeds)


def _bf16_model() -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    rng = np.random.default_rng(3)
    w = rng.standard_normal((6, 5)).astype(ml_dtypes.bfloat16)
    model = make_model(
        [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Relu", ["m"], ["y"]),
         helper.make_node("Cast", ["y"], ["y32"], to=TP.FLOAT)],
        [helper.make_tensor_value_info("x", TP.BFLOAT16, (4, 6))],
        [helper.make_tensor_value_info("y", TP.BFLOAT16, (4, 5)), helper.make_tensor_value_info("y32", TP.FLOAT, (4, 5))],
        [numpy_helper.from_array(w, "w")], opset=18)
    return model, {"x": rng.standard_normal((4, 6)).astype(ml_dtypes.bfloat16)}


def _close(got: np.ndarray, exp: np.ndarray, rtol: float) -> None:
    assert got.dtype == exp.dtype
    np.testing.assert_allclose(got.astype(np.float32), exp.astype(np.float32), rtol=rtol, atol=rtol)


def test_float16_chain_matches_onnxruntime() -> None:
    rng = np.random.default_rng(1)
    shape = (2, 3, 19)
    model = make_model(
        [helper.make_node("Mul", ["a", "b"], ["m"]), helper.make_node("Sigmoid", ["m"], ["s"]),
         helper.make_node("Add", ["s", "a"], ["y"]), helper.make_node("Softmax", ["y"], ["z"], axis=-1)],
        [helper.make_tensor_value_info("a", TP.FLOAT16, shape), helper.make_tensor_value_info("b", TP.FLOAT16, shape)],
        [helper.make_tensor_value_info("y", TP.FLOAT16, shape), helper.make_tensor_value_info("z", TP.FLOAT16, shape)],
        opset=18)
    feeds = {"a": rng.standard_normal(shape).astype(np.float16), "b": rng.standard_normal(shape).astype(np.float16)}
    check_native(model, feeds, rtol=2e-3, atol=2e-3, interpret=True)


def test_float16_conv_with_half_weights_matches_onnxruntime() -> None:
    rng = np.random.default_rng(2)
    w = (rng.standard_normal((8, 3, 3, 3)) * 0.3).astype(np.float16)
    b = rng.standard_normal(8).astype(np.float16)
    model = make_model(
        [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["y"])],
        [helper.make_tensor_value_info("x", TP.FLOAT16, (1, 3, 9, 10))],
        [helper.make_tensor_value_info("y", TP.FLOAT16, (1, 8, 9, 10))],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")], opset=18)
    check_native(model, {"x": rng.standard_normal((1, 3, 9, 10)).astype(np.float16)}, rtol=3e-3, atol=3e-3)


def test_cast_to_float16_inside_a_fused_chain_rounds() -> None:
    """float32 → float16 → float32 in the middle of a chain keeps the half's precision."""
    x = np.array([1.0009765625 + 2**-12, 3.14159265, 1e-6, 70000.0, -2.5e-8, 0.1], np.float32).reshape(1, 6)
    model = make_model(
        [helper.make_node("Mul", ["x", "x"], ["a"]), helper.make_node("Cast", ["a"], ["h"], to=TP.FLOAT16),
         helper.make_node("Cast", ["h"], ["b"], to=TP.FLOAT), helper.make_node("Sub", ["b", "a"], ["y"])],
        [helper.make_tensor_value_info("x", TP.FLOAT, (1, 6))], [helper.make_tensor_value_info("y", TP.FLOAT, (1, 6))],
        opset=18)
    program = lower_model(model)
    expected = _ref_run(model, {"x": x})[0]
    got = interpret_program(program, {"x": x})[0]
    np.testing.assert_array_equal(got, expected)


def test_bfloat16_model_matches_the_onnx_reference() -> None:
    model, feeds = _bf16_model()
    program = lower_model(model)
    expected = _ref_run(model, feeds)
    got = JitProgram(program).run(feeds)
    for spec, exp, interp in zip(program.outputs, expected, interpret_program(program, feeds)):
        _close(got[spec.name], exp, 1e-2)
        _close(interp, exp, 1e-2)


def test_bfloat16_library_through_wrapper_driver_and_header(tmp_path: Path) -> None:
    model, feeds = _bf16_model()
    pkg = tmp_path / "bfm"
    compile_model(model, pkg, target="x86_64-linux")
    expected = _ref_run(model, feeds)
    header = (pkg / "bfm.h").read_text()
    assert "#define BFM_BF16 13" in header and "#define BFM_F16 12" in header
    res = load_artifact(pkg).run(**feeds)
    for got, exp in zip(res.values(), expected):
        _close(got, exp, 1e-2)
    manifest = json.loads((pkg / "manifest.json").read_text())
    assert [e["dtype"] for e in manifest["outputs"]] == ["bfloat16", "float32"]
    (tmp_path / "in").mkdir()
    np.save(tmp_path / "in" / manifest["inputs"][0]["file"], feeds["x"])
    (tmp_path / "out").mkdir()
    proc = subprocess.run([str(pkg / "run_model"), str(tmp_path / "in"), str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    y = np.load(tmp_path / "out" / manifest["outputs"][0]["file"])
    assert y.dtype == np.dtype("V2")  # numpy saves ml_dtypes' bfloat16 as two opaque bytes
    _close(y.view(ml_dtypes.bfloat16), expected[0], 1e-2)
    # a float32 file where bfloat16 is expected: one clear line
    np.save(tmp_path / "in" / manifest["inputs"][0]["file"], feeds["x"].astype(np.float32))
    bad = subprocess.run([str(pkg / "run_model"), str(tmp_path / "in"), str(tmp_path / "out")],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "element type '<f4', the model expects '<V2'" in bad.stderr


@pytest.mark.skipif(shutil.which("node") is None or shutil.which("wasm-ld") is None, reason="needs node and wasm-ld (make toolchains)")
def test_bfloat16_on_wasm32_through_run_mjs(tmp_path: Path) -> None:
    model, feeds = _bf16_model()
    pkg = tmp_path / "bfw"
    compile_model(model, pkg, target="wasm32")
    expected = _ref_run(model, feeds)
    manifest = json.loads((pkg / "manifest.json").read_text())
    (tmp_path / "in").mkdir()
    np.save(tmp_path / "in" / manifest["inputs"][0]["file"], feeds["x"])
    (tmp_path / "out").mkdir()
    proc = subprocess.run(["node", str(pkg / "run.mjs"), str(tmp_path / "in"), str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    y = np.load(tmp_path / "out" / manifest["outputs"][0]["file"])
    _close(y.view(ml_dtypes.bfloat16), expected[0], 1e-2)
    _close(np.load(tmp_path / "out" / manifest["outputs"][1]["file"]), expected[1], 1e-2)


@pytest.mark.parametrize("to", [TP.FLOAT8E4M3FN, TP.FLOAT8E5M2FNUZ])
@pytest.mark.parametrize("saturate", [0, 1])
def test_float8_quantize_dequantize_matches_the_onnx_reference(to: int, saturate: int) -> None:
    """QuantizeLinear to float8 (per-axis scale, NaN and out-of-range values) and back."""
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((2, 3, 8)) * 300).astype(np.float32)
    x[0, 0, :3] = [np.nan, 1e9, -1e9]
    scale = np.array([0.5, 2.0, 1.25], np.float32)
    zp = onnx.helper.make_tensor("zp", to, [3], [0.0, 0.0, 0.0])  # float8 zero points must be 0
    model = make_model(
        [helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["q"], axis=1, saturate=saturate),
         helper.make_node("DequantizeLinear", ["q", "s", "zp"], ["y"], axis=1)],
        [helper.make_tensor_value_info("x", TP.FLOAT, x.shape)],
        [helper.make_tensor_value_info("q", to, x.shape), helper.make_tensor_value_info("y", TP.FLOAT, x.shape)],
        [numpy_helper.from_array(scale, "s"), zp], opset=21)
    program = lower_model(model, level="O0")
    expected = _ref_run(model, {"x": x})
    for got in (JitProgram(program).run({"x": x}).values(), interpret_program(program, {"x": x})):
        for g, e in zip(got, expected):
            assert g.dtype == e.dtype
            np.testing.assert_array_equal(g.astype(np.float32), e.astype(np.float32))


SMALL = {"i4": ml_dtypes.int4, "u4": ml_dtypes.uint4, "i2": ml_dtypes.int2, "u2": ml_dtypes.uint2}


@pytest.mark.parametrize("small", sorted(SMALL))
def test_sub_byte_integers_load_and_wrap_like_ml_dtypes(small: str) -> None:
    """One element per byte in the low bits: loads sign-extend, stores keep the low bits."""
    bits = {"i4": 4, "u4": 4, "i2": 2, "u2": 2}[small]
    x = np.arange(1 << bits, dtype=np.uint8).view(SMALL[small])
    for data, got in _convert(small, "i32", x, np.int32, interpret_every=1):
        np.testing.assert_array_equal(got, data.astype(np.int32))
    wide = np.arange(-300, 300, dtype=np.int32)
    for data, got in _convert("i32", small, wide, SMALL[small], interpret_every=3):
        np.testing.assert_array_equal(_raw(got), _raw(data.astype(SMALL[small])))


def test_float4_patterns_and_rounding_match_ml_dtypes() -> None:
    x = np.arange(16, dtype=np.uint8).view(ml_dtypes.float4_e2m1fn)
    for data, got in _convert("f4e2m1", "f32", x, np.float32, interpret_every=1):
        np.testing.assert_array_equal(got.view(np.uint32), data.astype(np.float32).view(np.uint32))
    probes = _float32_probes("f4e2m1")
    for data, got in _convert("f32", "f4e2m1", probes, ml_dtypes.float4_e2m1fn, interpret_every=41):
        with np.errstate(over="ignore", invalid="ignore"):
            np.testing.assert_array_equal(_raw(got), _raw(data.astype(ml_dtypes.float4_e2m1fn)))


@pytest.mark.parametrize("to", [TP.INT4, TP.UINT4, TP.INT2, TP.UINT2, TP.FLOAT4E2M1])
def test_narrow_cast_and_quantize_match_the_onnx_reference(to: int) -> None:
    """Cast to the type and back, and QuantizeLinear to it (saturating) and back."""
    x = np.linspace(-20, 20, 57, dtype=np.float32).reshape(1, -1)
    quantize = to != TP.FLOAT4E2M1
    nodes = [helper.make_node("Cast", ["x"], ["c"], to=to), helper.make_node("Cast", ["c"], ["y"], to=TP.FLOAT)]
    outs = [helper.make_tensor_value_info("c", to, x.shape), helper.make_tensor_value_info("y", TP.FLOAT, x.shape)]
    inits = []
    if quantize:
        nodes += [helper.make_node("QuantizeLinear", ["x", "s"], ["q"], output_dtype=to),
                  helper.make_node("DequantizeLinear", ["q", "s"], ["d"])]
        outs += [helper.make_tensor_value_info("q", to, x.shape), helper.make_tensor_value_info("d", TP.FLOAT, x.shape)]
        inits.append(numpy_helper.from_array(np.array(1.7, np.float32), "s"))
    model = make_model(nodes, [helper.make_tensor_value_info("x", TP.FLOAT, x.shape)], outs, inits, opset=23)
    program = lower_model(model, level="O0")
    expected = _ref_run(model, {"x": x})
    for got in (JitProgram(program).run({"x": x}).values(), interpret_program(program, {"x": x})):
        for g, e in zip(got, expected):
            assert g.dtype == e.dtype
            np.testing.assert_array_equal(_raw(g), _raw(e))


@pytest.mark.skipif(shutil.which("node") is None or shutil.which("wasm-ld") is None, reason="needs node and wasm-ld (make toolchains)")
def test_int4_and_float8_files_through_run_mjs_and_run_model(tmp_path: Path) -> None:
    """numpy saves ml_dtypes' one-byte types as '<V1': both drivers read and write them."""
    model = make_model(
        [helper.make_node("Cast", ["a"], ["af"], to=TP.FLOAT), helper.make_node("Cast", ["b"], ["bf"], to=TP.FLOAT),
         helper.make_node("Add", ["af", "bf"], ["s"]), helper.make_node("Cast", ["s"], ["y"], to=TP.FLOAT8E4M3FN)],
        [helper.make_tensor_value_info("a", TP.INT4, (2, 5)), helper.make_tensor_value_info("b", TP.FLOAT8E4M3FN, (2, 5))],
        [helper.make_tensor_value_info("y", TP.FLOAT8E4M3FN, (2, 5))], opset=21)
    feeds = {"a": np.arange(-5, 5).reshape(2, 5).astype(ml_dtypes.int4),
             "b": np.linspace(-3, 3, 10, dtype=np.float32).reshape(2, 5).astype(ml_dtypes.float8_e4m3fn)}
    expected = _ref_run(model, feeds)[0]
    for target, cmd in (("wasm32", ["node", "run.mjs"]), ("x86_64-linux", ["./run_model"])):
        pkg = tmp_path / f"m_{target.replace('-', '_')}"
        compile_model(model, pkg, target=target)
        manifest = json.loads((pkg / "manifest.json").read_text())
        inp, out = tmp_path / f"in_{target}", tmp_path / f"out_{target}"
        inp.mkdir()
        out.mkdir()
        for entry in manifest["inputs"]:
            np.save(inp / entry["file"], feeds[entry["name"]])
        proc = subprocess.run(cmd + [str(inp), str(out)], cwd=pkg, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        got = np.load(out / manifest["outputs"][0]["file"]).view(ml_dtypes.float8_e4m3fn)
        np.testing.assert_array_equal(got.astype(np.float32), expected.astype(np.float32))
