"""CPU variants of one library: x86_64-linux holds an AVX2 (x86-64-v3) and an AVX-512
(x86-64-v4) build of the graph, shares one weights file between them and picks one at
create; TORSH_GEN_CPU_VARIANT names one instead. Both run here against onnxruntime when
this CPU has AVX-512."""

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

from tests.backends.native.helpers import make_model, ort_run, rand
from tests.oracle import cpu_flags
from torsh_gen.backends.kernel.program import WeightStore
from torsh_gen.backends.llvm.targets import load_target
from torsh_gen.errors import InputError
from torsh_gen.tools.artifact import load_artifact
from torsh_gen.tools.compile import compile_model

AVX512 = ("avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512cd")


HAS_AVX512 = all(f in cpu_flags() for f in AVX512)
needs_gcc = pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is not installed (apt install gcc)")


def _conv_model() -> onnx.ModelProto:
    """Conv → Relu → Gemm: packed weights whose layout depends on the vector width."""
    rng = np.random.default_rng(5)
    inits = [
        numpy_helper.from_array(rng.standard_normal((16, 3, 3, 3)).astype(np.float32) * 0.3, "w"),
        numpy_helper.from_array(rng.standard_normal(16).astype(np.float32), "b"),
        numpy_helper.from_array(rng.standard_normal((16 * 6 * 6, 10)).astype(np.float32) * 0.1, "fc"),
        numpy_helper.from_array(np.array([1, -1], dtype=np.int64), "shape"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Reshape", ["r", "shape"], ["f"]),
        helper.make_node("MatMul", ["f", "fc"], ["y"]),
    ]
    return make_model(
        nodes,
        [helper.make_tensor_value_info("x", TP.FLOAT, (1, 3, 12, 12))],
        [helper.make_tensor_value_info("y", TP.FLOAT, (1, 10))],
        inits,
    )


@pytest.fixture(scope="module")
def pkg(tmp_path_factory) -> Path:
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed (apt install gcc)")
    out = tmp_path_factory.mktemp("variants") / "convnet"
    compile_model(_conv_model(), out, target="x86_64-linux")
    return out


def test_weight_store_keeps_each_tensor_once() -> None:
    store = WeightStore()
    a = np.arange(10, dtype=np.float32)
    first = store.add(a, "f32")
    assert store.add(a.copy(), "f32") == first
    other = store.add(a.reshape(2, 5), "f32")  # same bytes, other shape: stored again
    assert (first, other) == (0, 64)
    assert store.add(np.arange(10, dtype=np.int32), "i32") == 128
    assert len(store.blob) == 128 + 40
    assert bytes(store.blob[64:104]) == a.tobytes()


def test_target_data_lists_the_variants() -> None:
    spec = load_target("x86_64-linux")
    assert spec.requires == ("x86-64-v3",)
    assert [(v.name, v.vector_bits, v.requires) for v in spec.variants] == [
        ("x86-64-v4", 512, ("x86-64-v4",))
    ]
    wide = spec.for_variant(spec.variants[0])
    assert (wide.cpu, wide.vector_lanes, wide.variants) == ("x86-64-v4", 16, ())
    assert load_target("x86_64-avx512-linux").requires == ("x86-64-v4",)
    assert load_target("aarch64-linux").variants == ()


def test_bad_variant_data_is_refused() -> None:
    from torsh_gen.backends.llvm import targets

    with pytest.raises(InputError, match="lowercase GCC names"):
        targets._requires(['avx2"); system("id'], "target t")


@needs_gcc
def test_library_holds_both_builds(pkg: Path) -> None:
    manifest = json.loads((pkg / "manifest.json").read_text())
    assert [v["name"] for v in manifest["cpu_variants"]] == ["x86-64-v3", "x86-64-v4"]
    assert [v["vector_bits"] for v in manifest["cpu_variants"]] == [256, 512]
    assert (pkg / "src" / "model.o").is_file() and (pkg / "src" / "model_x86_64_v4.o").is_file()
    assert manifest["weights"]["bytes"] == (pkg / "weights.bin").stat().st_size
    header = (pkg / "convnet.h").read_text()
    assert "convnet_cpu_variant" in header and "CONVNET_ERR_CPU" in header


@needs_gcc
def test_each_variant_matches_onnxruntime(pkg: Path, monkeypatch) -> None:
    model, feeds = _conv_model(), {"x": rand(1, 3, 12, 12, seed=2)}
    expected = ort_run(model, feeds)[0]
    mod = load_artifact(pkg)
    with mod.Model(threads=2) as m:
        assert m.cpu_variant == ("x86-64-v4" if HAS_AVX512 else "x86-64-v3")
        np.testing.assert_allclose(m.run(**feeds)["y"], expected, rtol=1e-4, atol=1e-4)
    for name in ["x86-64-v3"] + (["x86-64-v4"] if HAS_AVX512 else []):
        monkeypatch.setenv("TORSH_GEN_CPU_VARIANT", name)
        with mod.Model(threads=2) as m:
            assert m.cpu_variant == name
            np.testing.assert_allclose(m.run(**feeds)["y"], expected, rtol=1e-4, atol=1e-4, err_msg=name)
        bench = subprocess.run(
            [str(pkg / "bench_model"), "20", "1"], capture_output=True, text=True, timeout=60
        )
        assert bench.returncode == 0 and f"variant={name} " in bench.stdout, bench.stderr


@needs_gcc
def test_unknown_or_unrunnable_variant_is_a_clear_error(pkg: Path, monkeypatch) -> None:
    mod = load_artifact(pkg)
    monkeypatch.setenv("TORSH_GEN_CPU_VARIANT", "x86-64-v9")
    with pytest.raises(RuntimeError, match="TORSH_GEN_CPU_VARIANT is x86-64-v9; this library has x86-64-v3, x86-64-v4"):
        mod.Model()
    env = {**os.environ, "TORSH_GEN_CPU_VARIANT": "x86-64-v9"}
    proc = subprocess.run([str(pkg / "bench_model"), "5"], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode != 0 and "x86-64-v9" in proc.stderr and "Traceback" not in proc.stderr
    if not HAS_AVX512:
        monkeypatch.setenv("TORSH_GEN_CPU_VARIANT", "x86-64-v4")
        with pytest.raises(RuntimeError, match="which this CPU cannot run"):
            mod.Model()


@needs_gcc
def test_worker_processes_build_the_same_objects(tmp_path: Path, monkeypatch) -> None:
    """Large multi-build libraries compile their objects in worker processes; the bytes
    are those of the in-process build, and a worker's failure is one clear error."""
    from torsh_gen.backends.llvm import machine
    from torsh_gen.backends.llvm.native_build import NativeBuildError

    monkeypatch.setattr(machine, "PARALLEL_IR_BYTES", 1 << 40)
    compile_model(_conv_model(), tmp_path / "a" / "net", target="x86_64-linux")
    monkeypatch.setattr(machine, "PARALLEL_IR_BYTES", 0)
    monkeypatch.setattr("torsh_gen.backends.llvm.targets.cpu_count", lambda: 2)
    compile_model(_conv_model(), tmp_path / "b" / "net", target="x86_64-linux")
    for name in ("src/model.o", "src/model_x86_64_v4.o", "libnet.so"):
        assert (tmp_path / "a" / "net" / name).read_bytes() == (tmp_path / "b" / "net" / name).read_bytes()
    spec = load_target("x86_64-linux")
    with pytest.raises(NativeBuildError, match="LLVM worker failed"):
        machine.object_codes([("define void @f() { ret void }", spec), ("not LLVM IR", spec)])


@needs_gcc
def test_src_keeps_only_the_model_objects(tmp_path: Path) -> None:
    """src/ keeps the model objects (sources of build.sh), never the runtime's object,
    even for a package whose name starts with "model"."""
    compile_model(_conv_model(), tmp_path / "model_net", target="x86_64-linux")
    objects = sorted(p.name for p in (tmp_path / "model_net" / "src").glob("*.o"))
    assert objects == ["model.o", "model_x86_64_v4.o"]
