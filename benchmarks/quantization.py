"""Quantization figures: size, accuracy, error and latency, ours beside onnxruntime's quantizer.

Run: ``.venv/bin/python benchmarks/quantization.py [--artifact]``; it prints the table of
``benchmarks/quantization.md`` and writes every report to ``benchmarks/quantization.json``.

Models: the digits CNN and MLP (trained, with a held-out labelled test split; calibration
on 256 training images) and the BERT-style encoder of ``benchmarks/models.py`` (random
weights, so only embedding cosine similarity means anything). Latency is the median of
repeated single-thread onnxruntime runs on the whole test split (449 images; one
sequence for BERT); ``--artifact`` also compiles float and quantized models with
torsh-gen and times the artifacts (slow: numba compiles every kernel).
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from torsh_gen.passes.quantize import QuantFormat, QuantMode, QuantOptions  # noqa: E402
from torsh_gen.tools.bench import cpu_model  # noqa: E402
from torsh_gen.tools.digits import digits_model, digits_split  # noqa: E402
from torsh_gen.tools.quantize import QuantizeConfig, quantize_model  # noqa: E402

RUNS = [
    ("static per-channel minmax", QuantOptions(QuantMode.STATIC, per_channel=True), "minmax"),
    ("static per-channel entropy", QuantOptions(QuantMode.STATIC, per_channel=True), "entropy"),
    (
        "static per-channel percentile",
        QuantOptions(QuantMode.STATIC, per_channel=True),
        "percentile",
    ),
    ("static per-tensor minmax", QuantOptions(QuantMode.STATIC), "minmax"),
    (
        "static qoperator per-channel",
        QuantOptions(QuantMode.STATIC, QuantFormat.QOPERATOR, per_channel=True),
        "minmax",
    ),
    ("dynamic per-channel", QuantOptions(QuantMode.DYNAMIC, per_channel=True), "minmax"),
    ("dynamic qoperator", QuantOptions(QuantMode.DYNAMIC, QuantFormat.QOPERATOR), "minmax"),
    ("weight-int4 block 32", QuantOptions(QuantMode.WEIGHT_INT4), "minmax"),
]


def _fmt(x: float | None, spec: str = ".2f") -> str:
    return "" if x is None else format(x, spec)


def run(folder: Path, artifact: bool) -> list[dict]:
    split = digits_split()
    np.savez(folder / "calib.npz", image=split.x_train[:256])
    np.savez(folder / "eval.npz", image=split.x_test, labels=split.y_test)
    rows = []
    for kind in ("cnn", "mlp"):
        src = folder / f"digits_{kind}.onnx"
        onnx.save(digits_model(kind), src)
        for label, opts, method in RUNS:
            if kind == "cnn" and opts.mode == QuantMode.WEIGHT_INT4:
                continue  # int4 covers MatMul/Gemm only; the CNN is conv-heavy
            cfg = QuantizeConfig(
                opts,
                method,
                calib=str(folder / "calib.npz"),
                eval=str(folder / "eval.npz"),
                artifact=artifact and label == "static per-channel minmax",
            )
            r = quantize_model(src, folder / f"{kind}_{label.replace(' ', '_')}.onnx", cfg)
            rows.append({**r, "model": f"digits {kind}", "run": label})
            print(
                f"digits {kind} {label}: drop {r['ours']['drop']:.2f}, size {100 * r['size']['ratio']:.1f}%",
                flush=True,
            )
    rows += run_bert(folder, artifact)
    return rows


def run_bert(folder: Path, artifact: bool) -> list[dict]:
    try:
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from models import SEQ, VOCAB, export_onnx
    except Exception as e:  # torch missing
        print(f"bert_encoder skipped: {e}")
        return []
    src = export_onnx("bert_encoder", folder / "bert_encoder.onnx")
    ids = np.random.default_rng(0).integers(0, VOCAB, size=(8, SEQ)).astype(np.int64)
    np.savez(folder / "bert_calib.npz", input_ids=ids)
    rows = []
    runs = (
        (
            "dynamic qoperator per-channel",
            QuantOptions(QuantMode.DYNAMIC, QuantFormat.QOPERATOR, per_channel=True),
        ),
        ("static per-channel minmax", QuantOptions(QuantMode.STATIC, per_channel=True)),
        ("weight-int4 block 32", QuantOptions(QuantMode.WEIGHT_INT4)),
        ("weight-int4, embeddings float", QuantOptions(QuantMode.WEIGHT_INT4, exclude=("Gather",))),
    )
    for label, opts in runs:
        cfg = QuantizeConfig(
            opts, "minmax", calib=str(folder / "bert_calib.npz"), artifact=False, repeat=10
        )
        r = quantize_model(
            src, folder / f"bert_{label.replace(' ', '_').replace(',', '')}.onnx", cfg
        )
        rows.append({**r, "model": "bert_encoder", "run": label})
        print(f"bert {label}: size {100 * r['size']['ratio']:.1f}%", flush=True)
    return rows


def _min_cosine(m: dict) -> float | None:
    outs = (m.get("outputs") or {}).values()
    return min((o["cosine"] for o in outs if o.get("cosine") is not None), default=None)


def table(rows: list[dict]) -> str:
    head = (
        "| model | run | size % of fp32 (ours / ORT) | accuracy fp32 → ours / ORT | drop, points (ours / ORT) | "
        "min cosine (ours / ORT) | ORT latency ms fp32 → ours / ORT-quantized | artifact ms fp32 → ours |\n"
        "|---|---|---|---|---|---|---|---|\n"
    )
    out = []
    for r in rows:
        ours, ort = r.get("ours") or {}, (r.get("onnxruntime") or {})
        om = ort.get("metrics") or {}
        lat = r.get("latency") or {}
        acc = (
            ""
            if ours.get("accuracy_float") is None
            else f"{ours['accuracy_float']:.2f} → {ours['accuracy_quantized']:.2f} / {_fmt(om.get('accuracy_quantized'))}"
        )
        art = (
            f"{lat['artifact_float_ms']:.2f} → {lat['artifact_quantized_ms']:.2f}"
            if "artifact_quantized_ms" in lat
            else ""
        )
        ort_size = (
            f"{100 * ort['size']['ratio']:.1f}"
            if ort.get("size")
            else ort.get("skipped", "n/a")[:40]
        )
        out.append(
            f"| {r['model']} | {r['run']} | {100 * r['size']['ratio']:.1f} / {ort_size} | {acc} | {_fmt(ours.get('drop'))} / {_fmt(om.get('drop'))} | "
            f"{_fmt(_min_cosine(ours), '.5f')} / {_fmt(_min_cosine(om), '.5f')} | {lat.get('onnxruntime_float_ms', 0):.3f} → {lat.get('onnxruntime_quantized_ms', 0):.3f} / {_fmt(lat.get('onnxruntime_reference_ms'), '.3f')} | {art} |"
        )
    return head + "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--artifact", action="store_true", help="also time compiled artifacts (slow)")
    ap.add_argument(
        "--json",
        type=Path,
        default=ROOT / "benchmarks" / "quantization.json",
        help="where to write every report",
    )
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="torsh-gen-qbench-") as tmp:
        rows = run(Path(tmp), args.artifact)
    stamp = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    text = (
        f"<!-- generated by benchmarks/quantization.py on {stamp}, CPU: {cpu_model()} -->\n"
        + table(rows)
    )
    print(text)  # the table in benchmarks/quantization.md is this output
    args.json.write_text(json.dumps(rows, indent=1, default=str))


if __name__ == "__main__":
    main()
