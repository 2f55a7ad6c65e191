"""bench: structure and sanity of the measurements (never timing thresholds), errors, CLI."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from tests.cli.test_cli import cli
from tests.conftest import EXAMPLE
from tests.tools.test_validate import write_numpy_artifact
from torsh_gen.errors import InputError, TorshGenError
from torsh_gen.tools.bench import TorchFactory, _rewarm, bench_model, cpu_model, latency_stats

REPO = Path(__file__).resolve().parents[2]
has_torch = pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is not installed")
FAST = {"warmup": 1, "repeat": 4, "blocks": 2}


def _check_engine_stats(stats: dict) -> None:
    for key in ("median_ms", "p90_ms", "p99_ms", "mean_ms", "min_ms", "throughput_per_s", "first_run_ms", "peak_rss_mb"):
        assert stats[key] > 0, key
    assert stats["min_ms"] <= stats["median_ms"] <= stats["p90_ms"] <= stats["p99_ms"]
    assert stats["model_rss_mb"] >= 0 and stats["peak_rss_mb"] >= stats["model_rss_mb"]
    assert stats["samples"] == FAST["repeat"]


@pytest.fixture
def mlp_files(tmp_path: Path, mlp_model: onnx.ModelProto) -> tuple[Path, Path]:
    path = tmp_path / "mlp.onnx"
    onnx.save(mlp_model, path)
    return path, write_numpy_artifact(tmp_path / "art", mlp_model)


def test_bench_artifact_beside_onnxruntime(mlp_files):
    model, art = mlp_files
    seen = []
    result = bench_model(model, artifact_dir=art, threads=1, bindings={"batch": 2}, progress=lambda d, t, label: seen.append((d, t, label)), **FAST)
    assert list(result["engines"]) == ["torsh-gen", "onnxruntime"]
    for stats in result["engines"].values():
        _check_engine_stats(stats)
    ours, ort = result["engines"]["torsh-gen"], result["engines"]["onnxruntime"]
    assert result["ratio"] == pytest.approx(ours["median_ms"] / ort["median_ms"])
    assert ort["ratio_vs_onnxruntime"] == 1.0
    assert result["inputs"] == {"x": {"shape": [2, 16], "dtype": "float32"}}
    assert (result["settle_s"], result["rewarm_s"]) == (0.1, 0.005)
    assert result["machine"]["cpu"] == cpu_model() and result["machine"]["cores"] >= 1
    assert {"numpy", "onnxruntime", "torsh-gen"} <= set(result["machine"]["versions"])
    # progress: loading messages, then blocks alternate engines (A B A B) up to the total
    timed = [s for s in seen if not s[2].startswith("loading")]
    assert [s[2] for s in timed] == ["torsh-gen", "onnxruntime"] * 2
    assert timed[-1][0] == timed[-1][1] == 2 * FAST["repeat"]


def test_bench_onnxruntime_only_and_json_cli(capsys, mlp_files):
    result = bench_model(EXAMPLE, engines=["onnxruntime"], **FAST)
    _check_engine_stats(result["engines"]["onnxruntime"])
    assert result["ratio"] is None
    model, art = mlp_files
    code, out, err = cli(capsys, "bench", str(model), "--artifact", str(art), "--threads", "1", "--warmup", "1", "--repeat", "4", "--blocks", "2", "--format", "json")
    assert code == 0, err
    data = json.loads(out)
    assert data["threads"] == 1 and data["ratio"] > 0
    code, out, err = cli(capsys, "bench", str(model), "-a", str(art), "--compare", "none", "--warmup", "1", "--repeat", "2", "--blocks", "1")
    assert code == 0, err
    assert "torsh-gen" in out and "median" in out


def test_bench_errors_are_one_line(capsys, mlp_files, mlp_model, tmp_path: Path):
    model, art = mlp_files
    with pytest.raises(InputError, match="unknown engine"):
        bench_model(model, engines=["tensorrt"])
    with pytest.raises(InputError, match="at least 1"):
        bench_model(model, engines=["onnxruntime"], repeat=0)
    code, _, err = cli(capsys, "bench", str(model), "-a", str(art), "--compare", "onnxruntime,mxnet")
    assert code == 2 and "unknown engine" in err and len(err.strip().splitlines()) == 1
    code, _, err = cli(capsys, "bench", str(model), "-a", str(tmp_path))
    assert code == 2 and "not a torsh-gen artifact" in err
    broken = write_numpy_artifact(tmp_path / "broken", mlp_model, broken=True)
    with pytest.raises(TorshGenError, match="torsh-gen: RuntimeError: kernel crashed"):
        bench_model(model, artifact_dir=broken, **FAST)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("tvm") is None, reason="Apache TVM is not installed (extra tvm)")
def test_our_three_builds_side_by_side(mlp_files):
    """The cpu package, our x86_64 library and the TVM build of one model in one run, each
    compiled for the run with the benchmark's shapes."""
    model, art = mlp_files
    result = bench_model(model, engines=["torsh-gen", "x86_64-linux", "tvm", "onnxruntime"], artifact_dir=art, bindings={"batch": 2}, **FAST)
    assert list(result["engines"]) == ["torsh-gen", "x86_64-linux", "tvm", "onnxruntime"]
    for stats in result["engines"].values():
        _check_engine_stats(stats)
        assert stats["ratio_vs_onnxruntime"] > 0


def test_torch_needs_a_module(capsys, mlp_files):
    model, art = mlp_files
    code, _, err = cli(capsys, "bench", str(model), "-a", str(art), "--compare", "torch")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "--torch-module" in err or "PyTorch is not installed" in err
    with pytest.raises(InputError, match="FILE.py:FUNCTION"):
        TorchFactory.parse("models:build")


def test_memory_is_the_worker_own_peak(mlp_files):
    """A big coordinator must not leak its peak into the workers' numbers (ru_maxrss does)."""
    import resource

    model, art = mlp_files
    ballast = np.ones(400 << 20, np.uint8)  # 400 MiB resident in this process
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss > 400 << 10
    result = bench_model(model, artifact_dir=art, bindings={"batch": 2}, **FAST)
    del ballast
    for stats in result["engines"].values():
        assert 0 < stats["peak_rss_mb"] < 350


def test_latency_stats():
    s = latency_stats([1_000_000, 2_000_000, 3_000_000, 4_000_000])
    assert s["median_ms"] == 2.5 and s["min_ms"] == 1.0 and s["mean_ms"] == 2.5
    assert s["throughput_per_s"] == pytest.approx(400.0) and s["samples"] == 4


def _bench_models_module():
    import sys

    spec = importlib.util.spec_from_file_location("bench_models_for_test", REPO / "benchmarks" / "models.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


@has_torch
def test_torch_engine_on_the_benchmark_mlp(tmp_path: Path):
    """The suite's PyTorch MLP: its ONNX export agrees with eager mode, and bench runs both."""
    import onnxruntime as ort
    import torch

    models = _bench_models_module()
    (m,) = models.build_models(tmp_path, ("mlp",))
    x = models.example_inputs("mlp")[0]
    with torch.inference_mode():
        ref = models.torch_module("mlp")(x).numpy()
    sess = ort.InferenceSession(str(m.onnx_path), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(sess.run(None, {"input": x.numpy()})[0], ref, rtol=1e-5, atol=1e-6)
    factory = TorchFactory(str(REPO / "benchmarks" / "models.py"), "torch_module", ("mlp",))
    result = bench_model(m.onnx_path, engines=["onnxruntime", "torch"], torch_factory=factory, **FAST)
    _check_engine_stats(result["engines"]["torch"])
    assert "torch" in result["machine"]["versions"]
    assert result["engines"]["torch"]["ratio_vs_onnxruntime"] > 0


def test_bench_compiles_when_no_artifact_is_given():
    result = bench_model(EXAMPLE, **FAST)
    _check_engine_stats(result["engines"]["torsh-gen"])
    assert result["ratio"] > 0 and Path(result["artifact"]).is_dir()


def test_results_rewrite_keeps_the_hand_written_tail(tmp_path: Path):
    spec = importlib.util.spec_from_file_location("bench_run_for_test", REPO / "benchmarks" / "run.py")
    run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run)
    out = tmp_path / "RESULTS.md"
    assert run._kept_tail(out) == ""  # no file yet
    out.write_text("# old table\n\n| a |\n")
    assert run._kept_tail(out) == ""  # no marker: the whole file is the generated table
    out.write_text(f"# old table\n\n{run.KEEP_MARKER}\n## Compression\n| x |\n")
    assert run._kept_tail(out) == f"\n{run.KEEP_MARKER}\n## Compression\n| x |\n"


def test_rewarm_calls_at_least_once_and_for_the_whole_window():
    """After each settle pause a block calls untimed for ``rewarm_s`` (at least once), so a
    fast model's timed calls find its threads awake."""
    import time

    calls: list[float] = []
    _rewarm(lambda: calls.append(time.perf_counter()), 0.0)
    assert len(calls) == 1
    calls.clear()
    t0 = time.perf_counter()
    _rewarm(lambda: calls.append(time.perf_counter()), 0.02)
    assert len(calls) > 1 and time.perf_counter() - t0 >= 0.02
