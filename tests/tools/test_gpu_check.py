"""benchmarks/gpu_check.py without a GPU: arguments, tolerances, timing loop, reports, the
ResNet-50 it runs, and the clear exit where no CUDA GPU is found."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "gpu_check.py"
has_torch = pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is not installed")


@pytest.fixture(scope="module")
def gc():
    """The script as a module (it puts the repository and benchmarks/ on sys.path: undone)."""
    saved = list(sys.path)
    spec = importlib.util.spec_from_file_location("gpu_check_for_test", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path[:] = saved
    return module


def _env() -> dict:
    return {
        "gpu": "NVIDIA Test GPU", "capability": "sm_90", "driver": "580.1", "cuda_driver_api": "13.0",
        "torch_cuda": "13.0", "cupy_runtime": "13.0", "torch": "2.11.0", "cupy": "14.2", "onnxruntime": "1.30",
        "numpy": "2.5", "python": "3.12", "cpu": "Test CPU", "cores": 16, "commit": "abc1234",
        "date": "2030-01-01T00:00:00+00:00", "tf32": False, "cudnn_benchmark": False, "jobs": 12,
        "command": "python3 benchmarks/gpu_check.py --batch64",
    }


def _rows() -> list[dict]:
    """Fabricated rows (formatting only): ok, ok at batch 64, mismatch, compile failure."""
    timed = {"ours_ms": 1.0, "eager_ms": 2.0, "graph_ms": 0.5, "ours_over_eager": 0.5, "ours_over_graph": 2.0,
             "rounds": 50, "truncated": False, "method": ""}
    return [
        {"key": "mlp_b1_float32", "model": "mlp", "batch": 1, "dtype": "float32", "status": "ok", "message": "",
         "compile_s": 1.25, "max_rel_err": 1.5e-7, **timed},
        {"key": "resnet50_b64_float32", "model": "resnet50", "batch": 64, "dtype": "float32", "status": "ok",
         "message": "", "compile_s": 30.0, "max_rel_err": 2e-6, **timed, "rounds": 7, "truncated": True,
         "images_per_s": {"ours": 64000.0, "eager": 32000.0, "graph": 128000.0}},
        {"key": "resnet18_b1_float16", "model": "resnet18", "batch": 1, "dtype": "float16", "status": "mismatch",
         "message": "mismatch: 'output' max abs err 0.1 over 0.01 (max rel err 0.2)", "compile_s": 9.0,
         "max_rel_err": 0.2, "torch_max_rel_err": 0.004, **timed, "method": "O3 with the convert_fp16 pass"},
        {"key": "bert_encoder_b1_float32", "model": "bert_encoder", "batch": 1, "dtype": "float32",
         "status": "failed", "message": "prepare: InputError: unknown target 'cuda'", "compile_s": None},
    ]


def test_tolerance(gc):
    assert gc.tolerance(0.5, "float32") == pytest.approx(1e-3)  # floor of 1
    assert gc.tolerance(20.0, "float32") == pytest.approx(2e-2)
    assert gc.tolerance(0.5, "float16") == pytest.approx(1e-2)  # relative to max|ref| only
    assert gc.tolerance(0.5, "float32", tf32=True) == pytest.approx(1e-2)


def test_compare_errors_and_mismatches(gc):
    ref = {"output": np.array([[1.0, -4.0, 2.0]], dtype=np.float32)}
    ok = gc.compare({"output": ref["output"] + np.float32(2e-3)}, ref, "float32")
    assert ok["status"] == "ok" and ok["message"] == ""
    assert ok["max_abs_err"] == pytest.approx(2e-3, rel=1e-3) and ok["max_rel_err"] == pytest.approx(5e-4, rel=1e-3)
    bad = gc.compare({"output": ref["output"] + np.float32(5e-3)}, ref, "float32")
    assert bad["status"] == "mismatch" and "'output' max abs err" in bad["message"]
    nan = gc.compare({"output": np.full((1, 3), np.nan, np.float32)}, ref, "float32")
    assert nan["status"] == "mismatch" and nan["max_abs_err"] == float("inf")
    assert gc.compare({"output": ref["output"].astype(np.float16)}, ref, "float16")["status"] == "ok"
    with pytest.raises(ValueError, match="shape"):
        gc.compare({"output": ref["output"][0]}, ref, "float32")
    with pytest.raises(KeyError, match="missing"):
        gc.compare({"y": ref["output"]}, ref, "float32")


def test_arguments_and_rows(gc):
    args = gc.parse_args([])
    assert args.models == gc.models.GPU_SUITE and (args.repeat, args.block, args.budget_s) == (50, 20, 330.0)
    assert args.out == REPO / "benchmarks" / "RESULTS-cuda.md"
    assert not (args.fp16 or args.tf32 or args.batch64 or args.cudnn_benchmark)
    args = gc.parse_args(["--models", "mlp, resnet50", "--batch64", "--fp16", "--repeat", "3", "--json", "r.json"])
    assert [t["key"] for t in gc.plan_tasks(args)] == [
        "mlp_b1_float32", "mlp_b1_float16", "resnet50_b1_float32", "resnet50_b1_float16",
        "resnet50_b64_float32", "resnet50_b64_float16",
    ]
    assert args.json == Path("r.json") and args.repeat == 3
    for bad in (["--models", "vgg"], ["--repeat", "0"], ["--models", ","]):
        with pytest.raises(SystemExit) as e:
            gc.parse_args(bad)
        assert e.value.code == 2


def test_compile_options(gc):
    from torsh_gen.passes import pipeline

    assert gc.compile_options("float32", False) == ({}, "")
    kwargs, method = gc.compile_options("float16", False)
    if "passes" in kwargs:  # no precision option in compile_model: the convert_fp16 pass in O3
        assert "convert_fp16" in kwargs["passes"] and pipeline("O3", kwargs["passes"]) == kwargs["passes"]
        assert kwargs["passes"].index("convert_fp16") < kwargs["passes"].index("fuse_epilogues")
    else:
        assert kwargs["precision"] == "fp16"
    assert method


def test_time_interleaved_rounds_alternate_and_stop_at_the_deadline(gc):
    import time

    calls: list[str] = []
    engines = {k: (lambda k=k: calls.append(k)) for k in ("ours", "eager", "graph")}
    out = gc.time_interleaved(engines, repeat=3, block=2, until=time.monotonic() + 60, sync=lambda: None)
    timed = calls[3 * gc.WARMUP:]
    assert timed == ["ours", "ours", "eager", "eager", "graph", "graph"] * 3
    assert out["rounds"] == 3 and not out["truncated"]
    assert all(0 <= out[f"{k}_min_ms"] <= out[f"{k}_ms"] for k in engines)
    out = gc.time_interleaved(engines, repeat=50, block=1, until=time.monotonic() - 1, sync=lambda: None)
    assert out["rounds"] == 1 and out["truncated"]


def test_reports_on_fabricated_rows(gc, tmp_path: Path):
    args = gc.parse_args(["--out", str(tmp_path / "R.md"), "--json", str(tmp_path / "r.json")])
    pending = [{"key": "mobilenetv2_b1_float32", "model": "mobilenetv2", "batch": 1, "dtype": "float32"}]
    gc.write_reports(_rows(), _env(), args, _rows() + pending)
    text = (tmp_path / "R.md").read_text()
    assert text.startswith("# torsh-gen CUDA target on NVIDIA Test GPU\n")
    assert "`python3 benchmarks/gpu_check.py --batch64`" in text and "Test CPU (16 cores)" in text
    assert "TF32 off, cuDNN benchmark mode off" in text
    assert "| model | batch | dtype | compile s | max rel err vs ORT | ours ms | PyTorch eager ms | PyTorch CUDA graph ms | ours/eager | ours/graph |" in text
    assert "| mlp | 1 | float32 | 1.2 | 1.50e-07 | 1.000 | 2.000 | 0.500 | 0.50 | 2.00 |" in text
    assert "| resnet18 | 1 | float16 | 9.0 | 2.00e-01 (over) |" in text
    assert "| bert_encoder | 1 | float32 | - | - | - | - | - | - | - |" in text
    assert "ours 64,000 images/s, eager 32,000 images/s, graph 128,000 images/s" in text
    assert "- resnet50_b64_float32: 7 of the requested rounds (time budget)" in text
    failures = text.split("## Failures")[1]
    assert "resnet18_b1_float16: mismatch: 'output' max abs err 0.1 over 0.01 (max rel err 0.2) (PyTorch on the GPU: 4.00e-03)" in failures
    assert "- bert_encoder_b1_float32: prepare: InputError: unknown target 'cuda'" in failures
    assert "- mobilenetv2_b1_float32: not run (time budget)" in failures and "mlp_b1" not in failures
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["ok"] is False and data["environment"]["gpu"] == "NVIDIA Test GPU"
    assert [r["status"] for r in data["rows"]] == ["ok", "ok", "mismatch", "failed", "not run"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["R.md", "r.json"]  # no temporary files left
    gc.write_reports(_rows()[:1], _env(), args)
    assert "## Failures\n\nnone\n" in (tmp_path / "R.md").read_text()


def test_prepare_records_a_failure_as_one_line(gc, tmp_path: Path):
    """The mlp row: ONNX and onnxruntime's outputs written; compiled, or one line saying why not."""
    task = gc.plan_tasks(gc.parse_args(["--models", "mlp"]))[0]
    prep = gc.prepare(task, str(tmp_path), False, 1)
    io = np.load(tmp_path / "mlp_b1_float32" / "io.npz")
    assert io["in:input"].shape == (1, 784) and io["out:output"].shape == (1, 10)
    if "error" in prep:
        assert prep["error"].startswith("prepare: ") and "\n" not in prep["error"]
    else:
        assert (Path(prep["artifact"]) / "__init__.py").is_file() and prep["compile_s"] > 0


@has_torch
def test_resnet50_matches_its_onnx_export(gc, tmp_path: Path):
    import onnxruntime as ort
    import torch

    models = gc.models
    assert "resnet50" in models.GPU_SUITE and "resnet50" not in models.SUITE
    module = models.torch_module("resnet50")
    assert sum(p.numel() for p in module.parameters()) == 25_557_032  # torchvision's ResNet-50
    (m,) = models.build_models(tmp_path, ("resnet50",))
    (x,) = models.example_inputs("resnet50")
    with torch.inference_mode():
        ref = module(x).numpy()
    sess = ort.InferenceSession(str(m.onnx_path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"input": x.numpy()})[0]
    assert got.shape == (1, 1000) and np.max(np.abs(got - ref)) <= 1e-4 * max(1.0, np.max(np.abs(ref)))
    assert models.example_inputs("resnet50", 4)[0].shape == (4, 3, 224, 224)
    with pytest.raises(ValueError, match="batch 1"):
        models.example_inputs("bert_encoder", 2)


@has_torch
def test_without_a_cuda_gpu_the_script_says_so_and_exits_2():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    proc = subprocess.run([sys.executable, str(SCRIPT), "--models", "mlp"], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "no CUDA GPU was found" in lines[0] and "Traceback" not in proc.stderr
    assert proc.stdout == ""


def test_slowest_row_is_the_worst_ratio_against_the_cuda_graph(gc):
    gpu_check = gc
    rows = [
        {"key": "a", "ours_over_graph": 0.4},
        {"key": "b", "ours_over_graph": 4.3},
        {"key": "c", "status": "failed"},
    ]
    assert gpu_check.slowest(rows)["key"] == "b"
    assert gpu_check.slowest([{"key": "c", "status": "failed"}]) is None
    assert gpu_check.parse_args(["--profile"]).profile is True
