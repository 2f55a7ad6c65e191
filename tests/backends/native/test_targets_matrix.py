"""Every op family through every native target, compared with onnxruntime.

One small model per family (elementwise, linalg, conv + pool, reduce + softmax, norm,
shape, indexing) is compiled for each target and run the way users run it: x86_64-linux
(each of its CPU variants this CPU can run) and x86_64-avx512-linux (where the CPU has
AVX-512) through the ctypes wrapper and its ``run_model`` driver, aarch64-linux and android-arm64's
code through ``run_model`` under qemu-aarch64, wasm32 through ``node run.mjs``. A target
whose toolchain is missing is skipped with the reason (``make toolchains`` installs it).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto as TP
from onnx import helper, numpy_helper

from tests.backends.native.helpers import ort_run
from torsh_gen.backends.llvm.targets import load_target
from torsh_gen.tools.artifact import load_artifact
from torsh_gen.tools.compile import compile_model

RNG = np.random.default_rng(7)


def _w(name: str, *shape: int, scale: float = 0.3) -> onnx.TensorProto:
    return numpy_helper.from_array((RNG.standard_normal(shape) * scale).astype(np.float32), name)


def _vi(name: str, shape: tuple[int, ...], dtype: int = TP.FLOAT) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, dtype, shape)


def _model(nodes, inputs, outputs, inits, opset: int = 17) -> onnx.ModelProto:
    g = helper.make_graph(nodes, "family", inputs, outputs, inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def family_models() -> dict[str, tuple[onnx.ModelProto, dict[str, np.ndarray]]]:
    """name → (model, feeds), one per op family."""
    x4 = RNG.standard_normal((1, 3, 10, 9)).astype(np.float32)
    m = {}
    m["elementwise"] = (_model(
        [helper.make_node("Mul", ["x", "x"], ["a"]), helper.make_node("Sigmoid", ["a"], ["b"]),
         helper.make_node("Sub", ["b", "x"], ["c"]), helper.make_node("Tanh", ["c"], ["y"])],
        [_vi("x", (4, 37))], [_vi("y", (4, 37))], []), {"x": RNG.standard_normal((4, 37)).astype(np.float32)})
    m["linalg"] = (_model(
        [helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], transB=1), helper.make_node("Relu", ["h"], ["r"]),
         helper.make_node("MatMul", ["r", "w2"], ["y"])],
        [_vi("x", (3, 20))], [_vi("y", (3, 7))], [_w("w1", 33, 20), _w("b1", 33), _w("w2", 33, 7)]),
        {"x": RNG.standard_normal((3, 20)).astype(np.float32)})
    m["conv_pool"] = (_model(
        [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["r"]),
         helper.make_node("Conv", ["r", "dw"], ["d"], group=8, pads=[1, 1, 1, 1]),
         helper.make_node("MaxPool", ["d"], ["p"], kernel_shape=[3, 3], strides=[2, 2]),
         helper.make_node("GlobalAveragePool", ["p"], ["y"])],
        [_vi("x", (1, 3, 10, 9))], [_vi("y", (1, 8, 1, 1))], [_w("w", 8, 3, 3, 3), _w("b", 8), _w("dw", 8, 1, 3, 3)]),
        {"x": x4})
    m["reduce"] = (_model(
        [helper.make_node("ReduceMean", ["x"], ["m"], axes=[1], keepdims=1), helper.make_node("Sub", ["x", "m"], ["d"]),
         helper.make_node("Softmax", ["d"], ["y"], axis=-1), helper.make_node("ArgMax", ["x"], ["k"], axis=1)],
        [_vi("x", (5, 19))], [_vi("y", (5, 19)), _vi("k", (5, 1), TP.INT64)], []),
        {"x": RNG.standard_normal((5, 19)).astype(np.float32)})
    m["norm"] = (_model(
        [helper.make_node("LayerNormalization", ["x", "g", "b"], ["y"], axis=-1, epsilon=1e-5)],
        [_vi("x", (2, 6, 24))], [_vi("y", (2, 6, 24))], [_w("g", 24), _w("b", 24)]),
        {"x": RNG.standard_normal((2, 6, 24)).astype(np.float32)})
    m["shape"] = (_model(
        [helper.make_node("Transpose", ["x"], ["t"], perm=[0, 2, 1, 3]), helper.make_node("Concat", ["t", "t"], ["c"], axis=3),
         helper.make_node("Slice", ["c", "st", "en", "ax"], ["s"]), helper.make_node("Pad", ["s", "pads"], ["y"], mode="reflect")],
        [_vi("x", (1, 3, 10, 9))], [_vi("y", (1, 10, 3, 10))],
        [numpy_helper.from_array(np.array([2], np.int64), "st"), numpy_helper.from_array(np.array([10], np.int64), "en"),
         numpy_helper.from_array(np.array([3], np.int64), "ax"),
         numpy_helper.from_array(np.array([0, 0, 0, 1, 0, 0, 0, 1], np.int64), "pads")]),
        {"x": x4})
    m["indexing"] = (_model(
        [helper.make_node("Gather", ["emb", "ids"], ["y"], axis=0)],
        [_vi("ids", (2, 5), TP.INT64)], [_vi("y", (2, 5, 16))], [_w("emb", 50, 16)]),
        {"ids": RNG.integers(-50, 50, (2, 5)).astype(np.int64)})
    w16 = (RNG.standard_normal((12, 20)) * 0.3).astype(np.float16)
    m["half"] = (_model(
        [helper.make_node("Gemm", ["x", "w"], ["h"], transB=1), helper.make_node("Relu", ["h"], ["r"]),
         helper.make_node("Softmax", ["r"], ["y"], axis=-1), helper.make_node("Cast", ["y"], ["y32"], to=TP.FLOAT)],
        [_vi("x", (3, 20), TP.FLOAT16)], [_vi("y", (3, 12), TP.FLOAT16), _vi("y32", (3, 12))],
        [numpy_helper.from_array(w16, "w")]),
        {"x": RNG.standard_normal((3, 20)).astype(np.float16)})
    m.update(_newer_families())
    return m


def _newer_families() -> dict[str, tuple[onnx.ModelProto, dict[str, np.ndarray]]]:
    """Recurrent, sampling, spectral, control flow, math and run-time-parameter ops."""
    m = {}
    h = 8
    m["recurrent"] = (_model(
        [helper.make_node("LSTM", ["x", "w", "r", "b"], ["y", "yh"], hidden_size=h, direction="bidirectional")],
        [_vi("x", (5, 2, 6))], [_vi("y", (5, 2, 2, h)), _vi("yh", (2, 2, h))],
        [_w("w", 2, 4 * h, 6), _w("r", 2, 4 * h, h), _w("b", 2, 8 * h)], 20),
        {"x": RNG.standard_normal((5, 2, 6)).astype(np.float32)})
    m["sampling"] = (_model(
        [helper.make_node("GridSample", ["x", "g"], ["y"], mode="linear", padding_mode="reflection")],
        [_vi("x", (1, 2, 7, 6)), _vi("g", (1, 5, 4, 2))], [_vi("y", (1, 2, 5, 4))], [], 20),
        {"x": RNG.standard_normal((1, 2, 7, 6)).astype(np.float32),
         "g": (RNG.standard_normal((1, 5, 4, 2)) * 1.3).astype(np.float32)})
    m["spectral"] = (_model(
        [helper.make_node("DFT", ["x"], ["y"], axis=1, onesided=1)],
        [_vi("x", (2, 12, 1))], [_vi("y", (2, 7, 2))], [], 17),
        {"x": RNG.standard_normal((2, 12, 1)).astype(np.float32)})
    body = helper.make_graph(
        [helper.make_node("Add", ["s_in", "x_t"], ["s_out"]), helper.make_node("Tanh", ["s_out"], ["y_t"])], "body",
        [_vi("s_in", (3,)), _vi("x_t", (3,))], [_vi("s_out", (3,)), _vi("y_t", (3,))])
    m["control_flow"] = (_model(
        [helper.make_node("Scan", ["s0", "xs"], ["s", "ys"], body=body, num_scan_inputs=1)],
        [_vi("s0", (3,)), _vi("xs", (4, 3))], [_vi("s", (3,)), _vi("ys", (4, 3))], [], 20),
        {"s0": RNG.standard_normal(3).astype(np.float32), "xs": RNG.standard_normal((4, 3)).astype(np.float32)})
    m["math"] = (_model(
        [helper.make_node("Tan", ["x"], ["t"]), helper.make_node("Asinh", ["t"], ["a"]),
         helper.make_node("Mod", ["a", "d"], ["y"], fmod=1)],
        [_vi("x", (3, 9))], [_vi("y", (3, 9))], [numpy_helper.from_array(np.array(0.7, np.float32), "d")], 20),
        {"x": RNG.uniform(-1.4, 1.4, (3, 9)).astype(np.float32)})
    m["runtime_params"] = (_model(
        [helper.make_node("Resize", ["x", "", "sc"], ["y"], mode="linear")],
        [_vi("x", (1, 2, 4, 5)), _vi("sc", (4,))], [_vi("y", (1, 2, 8, 10))], [], 20),
        {"x": RNG.standard_normal((1, 2, 4, 5)).astype(np.float32), "sc": np.array([1, 1, 2, 2], np.float32)})
    return m


MODELS = family_models()
#: float16 rounds at every op boundary: onnxruntime and the native code may differ by an ulp
TOLERANCE = {"half": 2e-3}
TARGETS = ["x86_64-linux", "x86_64-avx512-linux", "aarch64-linux", "wasm32"]


def _host_has(flag: str) -> bool:
    try:
        return f" {flag}" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def _runner(target: str) -> list[str]:
    spec = load_target(target)
    missing = spec.missing_tools()
    if missing:
        pytest.skip(f"target {target} needs {', '.join(missing)} (make toolchains)")
    if target == "x86_64-avx512-linux" and not _host_has("avx512f"):
        pytest.skip("this CPU has no AVX-512; the x86_64-avx512-linux library cannot run here")
    if target == "wasm32":
        return ["node"]
    return list(spec.emulator)


def _write_inputs(folder: Path, pkg: Path, feeds: dict[str, np.ndarray]) -> None:
    folder.mkdir()
    for entry in json.loads((pkg / "manifest.json").read_text())["inputs"]:
        np.save(folder / entry["file"], feeds[entry["name"]])


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("family", sorted(MODELS))
def test_family_on_target(family: str, target: str, tmp_path: Path) -> None:
    prefix = _runner(target)
    model, feeds = MODELS[family]
    tol = TOLERANCE.get(family, 1e-4)
    pkg = tmp_path / f"fam_{family}"
    compile_model(model, pkg, target=target)
    expected = ort_run(model, feeds)
    _write_inputs(tmp_path / "in", pkg, feeds)
    out = tmp_path / "out"
    out.mkdir()
    if target == "wasm32":
        cmd = prefix + [str(pkg / "run.mjs"), str(tmp_path / "in"), str(out)]
    else:
        cmd = prefix + [str(pkg / "run_model"), str(tmp_path / "in"), str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((pkg / "manifest.json").read_text())
    for entry, exp in zip(manifest["outputs"], expected):
        got = np.load(out / entry["file"])
        assert got.dtype == exp.dtype, f"{family} on {target}: {entry['name']} is {got.dtype}"
        np.testing.assert_allclose(got, exp, rtol=tol, atol=tol, err_msg=f"{family} on {target}: {entry['name']}")
    for variant in manifest["cpu_variants"] if target == "x86_64-linux" else []:
        # the library runs the newest variant the CPU has; each runs when named
        vout = tmp_path / f"out_{variant['name']}"
        vout.mkdir()
        env = {**os.environ, "TORSH_GEN_CPU_VARIANT": variant["name"]}
        proc = subprocess.run(cmd[:-1] + [str(vout)], capture_output=True, text=True, timeout=120, env=env)
        if proc.returncode != 0 and "which this CPU cannot run" in proc.stderr and not _host_has("avx512f"):
            continue  # only the AVX-512 variant may be out of this CPU's reach
        assert proc.returncode == 0, proc.stderr
        for entry, exp in zip(manifest["outputs"], expected):
            np.testing.assert_allclose(np.load(vout / entry["file"]), exp, rtol=tol, atol=tol,
                                       err_msg=f"{family} on {target} ({variant['name']}): {entry['name']}")
    if target.startswith("x86_64"):
        art = load_artifact(pkg)
        res = art.run(**feeds)
        for got, exp in zip(res.values(), expected):
            np.testing.assert_allclose(got, exp, rtol=tol, atol=tol)


@pytest.mark.skipif(shutil.which("qemu-aarch64") is None, reason="needs qemu-aarch64 (make toolchains)")
def test_unsupported_ops_listed_before_any_work(tmp_path: Path) -> None:
    """Every node that cannot be lowered (here: data-dependent outputs fed to other nodes)
    is named in one error, and nothing is written."""
    from torsh_gen.errors import UnsupportedOpError

    model = _model(
        [helper.make_node("NonZero", ["x"], ["nz"], name="first_nonzero"), helper.make_node("Relu", ["x"], ["r"]),
         helper.make_node("NonZero", ["r"], ["nz2"], name="second_nonzero"),
         helper.make_node("Cast", ["nz"], ["f"], to=TP.FLOAT), helper.make_node("Cast", ["nz2"], ["f2"], to=TP.FLOAT)],
        [_vi("x", (3, 4))], [_vi("f", (2, 3)), _vi("f2", (2, 3))], [])
    with pytest.raises(UnsupportedOpError) as err:
        compile_model(model, tmp_path / "nz", target="aarch64-linux")
    assert "first_nonzero" in str(err.value) and "second_nonzero" in str(err.value)
    assert not (tmp_path / "nz").exists()


def test_validate_compiles_for_a_native_target_and_refuses_others(tmp_path: Path) -> None:
    """``validate --target``: a library runnable here is compiled and checked against
    onnxruntime; a target without a Python interface here is refused before any work."""
    from torsh_gen.errors import InputError
    from torsh_gen.tools.validate import validate_model

    model, _ = MODELS["linalg"]
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    if not load_target("x86_64-linux").missing_tools():
        report = validate_model(path, target="x86_64-linux")
        assert report["match"] and report["compiled"]
    with pytest.raises(InputError, match="wasm32"):
        validate_model(path, target="wasm32")
