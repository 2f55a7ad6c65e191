"""int8 artifact vs float32 artifact vs onnxruntime, written to benchmarks/int8.md.

    .venv/bin/python benchmarks/int8.py                       # all models, 2 threads
    .venv/bin/python benchmarks/int8.py --models gemm_mlp --repeat 30

For each model: the float32 ONNX model and its int8 version from onnxruntime's own
``quantize_static`` (QDQ, per-channel int8 weights, int8 activations, min-max calibration
on seeded random or digits-training inputs) are each benchmarked with ``bench_model``:
our compiled artifact (level O3) and onnxruntime run in separate worker processes,
alternating blocks, medians. Ratios: our int8 / our float32 artifact, and our int8 /
onnxruntime on the same QDQ model. Accuracy: digits top-1 (test split) and, for BERT,
cosine similarity of the embeddings with the float32 model's.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import models  # noqa: E402  (benchmarks/ is not a package)

from torsh_gen.tools.bench import bench_model, cpu_model  # noqa: E402

MODELS = ("gemm_mlp", "bert_encoder", "digits_cnn")


def _gemm_mlp(path: Path) -> tuple[Path, list[dict[str, np.ndarray]], dict[str, int]]:
    """1024 → 4096 → 4096 → 1024 with ReLU: GEMMs are all of its work."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Linear(1024, 4096), nn.ReLU(), nn.Linear(4096, 4096), nn.ReLU(), nn.Linear(4096, 1024)
    ).eval()
    torch.onnx.export(
        net,
        (torch.randn(1, 1024),),
        str(path),
        input_names=["x"],
        output_names=["y"],
        dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}},
        dynamo=False,
    )
    calib = [
        {"x": np.random.default_rng(i).standard_normal((16, 1024)).astype(np.float32)}
        for i in range(4)
    ]
    return path, calib, {}


def _bert(path: Path) -> tuple[Path, list[dict[str, np.ndarray]], dict[str, int]]:
    models.export_onnx("bert_encoder", path)
    calib = [
        {
            "input_ids": np.random.default_rng(i)
            .integers(0, models.VOCAB, (1, models.SEQ))
            .astype(np.int64)
        }
        for i in range(4)
    ]
    return path, calib, {}


def _digits(path: Path) -> tuple[Path, list[dict[str, np.ndarray]], dict[str, int]]:
    from torsh_gen.tools.digits import digits_model, digits_split

    onnx.save(digits_model("cnn"), path)
    train = digits_split().inputs("train")["image"]
    return path, [{"image": train[i : i + 64]} for i in range(0, 512, 64)], {}


BUILDERS = {"gemm_mlp": _gemm_mlp, "bert_encoder": _bert, "digits_cnn": _digits}


def quantize(src: Path, dst: Path, calib: list[dict[str, np.ndarray]]) -> None:
    """onnxruntime's static QDQ quantization, per-channel weights."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(calib)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.it, None)

    logging.disable(logging.WARNING)
    quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True)


def quantize_int4(src: Path, dst: Path) -> None:
    """``torsh-gen quantize --mode weight-int4`` (block-wise int4 weights, block 32)."""
    import subprocess

    cli = "from torsh_gen.cli.main import main; main()"
    subprocess.run(
        [sys.executable, "-c", cli, "quantize", str(src), "-o", str(dst), "--mode", "weight-int4"],
        check=True,
        capture_output=True,
    )


def accuracy_figures(name: str, f32: Path, q: Path, art_q: Path) -> dict[str, Any]:
    """Digits top-1 (float32 model vs our int8 artifact) or BERT cosine similarity."""
    import onnxruntime as ort

    from torsh_gen.tools.artifact import load_artifact
    from torsh_gen.tools.validate import cosine_similarity

    mod = load_artifact(art_q)
    ref = ort.InferenceSession(str(f32), providers=["CPUExecutionProvider"])
    ortq = ort.InferenceSession(str(q), providers=["CPUExecutionProvider"])
    if name == "digits_cnn":
        from torsh_gen.tools.digits import accuracy, digits_split

        split = digits_split()
        x = split.inputs("test")["image"]
        ours = list(mod.run(image=x).values())[0]
        return {
            "float32 top-1 %": accuracy(ref.run(None, {"image": x})[0], split.y_test),
            "ours int8 top-1 %": accuracy(ours, split.y_test),
            "onnxruntime int8 top-1 %": accuracy(ortq.run(None, {"image": x})[0], split.y_test),
            "equal to onnxruntime int8": bool(
                np.array_equal(ours, ortq.run(None, {"image": x})[0])
            ),
        }
    if name == "bert_encoder":
        ids = np.random.default_rng(99).integers(0, models.VOCAB, (1, models.SEQ)).astype(np.int64)
        f = ref.run(None, {"input_ids": ids})[0]
        ours = list(mod.run(input_ids=ids).values())[0]
        return {
            "cosine ours int8 vs float32": cosine_similarity(ours, f),
            "cosine onnxruntime int8 vs float32": cosine_similarity(
                ortq.run(None, {"input_ids": ids})[0], f
            ),
        }
    x = np.random.default_rng(99).standard_normal((8, 1024)).astype(np.float32)
    ours = list(mod.run(x=x).values())[0]
    return {
        "equal to onnxruntime int8": bool(np.array_equal(ours, ortq.run(None, {"x": x})[0])),
        "cosine ours int8 vs float32": cosine_similarity(ours, ref.run(None, {"x": x})[0]),
    }


def run(names: tuple[str, ...], repeat: int, threads: int, folder: Path) -> list[dict[str, Any]]:
    """Benchmark each model in float32 and int8; one row per model and batch size."""
    from torsh_gen.tools.compile import compile_model

    rows = []
    for name in names:
        f32, calib, _ = BUILDERS[name](folder / f"{name}.onnx")
        q = folder / f"{name}_int8.onnx"
        quantize(f32, q, calib)
        art_f, art_q = folder / f"{name}_f32_art", folder / f"{name}_int8_art"
        compile_model(str(f32), art_f)
        compile_model(str(q), art_q)
        extra = accuracy_figures(name, f32, q, art_q)
        art_4 = None
        if name == "gemm_mlp":  # weight-only int4 on the GEMM model too
            q4 = folder / f"{name}_int4.onnx"
            quantize_int4(f32, q4)
            art_4 = folder / f"{name}_int4_art"
            compile_model(str(q4), art_4)
        for batch in ((1, 64) if name == "gemm_mlp" else (1,)):
            bind = {"batch": batch} if name == "gemm_mlp" else None
            rf = bench_model(
                str(f32), artifact_dir=art_f, threads=threads, repeat=repeat, bindings=bind
            )
            rq = bench_model(
                str(q), artifact_dir=art_q, threads=threads, repeat=repeat, bindings=bind
            )
            ours_f, ort_f = (
                rf["engines"]["torsh-gen"]["median_ms"],
                rf["engines"]["onnxruntime"]["median_ms"],
            )
            ours_q, ort_q = (
                rq["engines"]["torsh-gen"]["median_ms"],
                rq["engines"]["onnxruntime"]["median_ms"],
            )
            rows.append(
                {
                    "model": name,
                    "batch": batch,
                    "ours_f32_ms": ours_f,
                    "ort_f32_ms": ort_f,
                    "ours_int8_ms": ours_q,
                    "ort_int8_ms": ort_q,
                    "int8_vs_f32": ours_q / ours_f,
                    "int8_vs_ort_int8": ours_q / ort_q,
                    "size_ratio": q.stat().st_size / f32.stat().st_size,
                    **extra,
                    "load": [rf["load_average"], rq["load_average"]],
                }
            )
            if art_4 is not None:
                r4 = bench_model(
                    str(q4), artifact_dir=art_4, threads=threads, repeat=repeat, bindings=bind
                )
                rows[-1]["ours_int4_ms"] = r4["engines"]["torsh-gen"]["median_ms"]
                rows[-1]["ort_int4_ms"] = r4["engines"]["onnxruntime"]["median_ms"]
                rows[-1]["int4_vs_f32"] = rows[-1]["ours_int4_ms"] / ours_f
            print(json.dumps(rows[-1]), flush=True)
    return rows


def table(rows: list[dict[str, Any]], threads: int) -> str:
    """The markdown table of ``rows``."""
    out = [
        f"CPU: {cpu_model()}, {threads} threads; medians of {'/'.join(sorted({str(r['batch']) for r in rows}))}-batch runs.",
        "",
        "| model | batch | ours f32 ms | ort f32 ms | ours int8 ms | ort int8 (QDQ) ms | ours int8 / ours f32 | ours int8 / ort int8 | int8 file / f32 file |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        out.append(
            f"| {r['model']} | {r['batch']} | {r['ours_f32_ms']:.3f} | {r['ort_f32_ms']:.3f} | {r['ours_int8_ms']:.3f} "
            f"| {r['ort_int8_ms']:.3f} | {r['int8_vs_f32']:.2f} | {r['int8_vs_ort_int8']:.2f} | {r['size_ratio']:.2f} |"
        )
    int4 = [r for r in rows if "ours_int4_ms" in r]
    if int4:
        out += [
            "",
            "Weight-only int4 (`torsh-gen quantize --mode weight-int4`, block 32):",
            "",
            "| model | batch | ours int4 ms | ort int4 ms | ours int4 / ours f32 |",
            "|---|---|---|---|---|",
        ]
        out += [
            f"| {r['model']} | {r['batch']} | {r['ours_int4_ms']:.3f} | {r['ort_int4_ms']:.3f} | {r['int4_vs_f32']:.2f} |"
            for r in int4
        ]
    out += ["", "Accuracy:", ""]
    seen = set()
    for r in rows:
        if r["model"] in seen:
            continue
        seen.add(r["model"])
        skip = ("_ms", "_f32", "ort_int8", "size_ratio")
        figs = {
            k: v
            for k, v in r.items()
            if k not in ("model", "batch", "load") and not k.endswith(skip)
        }
        out.append(
            f"- {r['model']}: "
            + ", ".join(
                f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in figs.items()
            )
        )
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Build, quantize, compile, benchmark; print JSON rows and the markdown table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--repeat", type=int, default=50)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="")
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="torsh-int8-") as tmp:
        rows = run(tuple(a.models.split(",")), a.repeat, a.threads, Path(tmp))
    md = table(rows, a.threads)
    print(md)
    if a.out:
        Path(a.out).write_text(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
