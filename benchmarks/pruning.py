"""Pruning benchmark: accuracy, MACs, size and latency of ``torsh-gen prune``.

Reproduces the table in ``benchmarks/pruning.md``:

    .venv/bin/python benchmarks/pruning.py [--out FILE.json] [--rounds 5] [--models digits,resnet18]

- digits: the trained digits CNN (``digits_model("cnn")``), evaluated on its held-out test
  split with labels (top-1 accuracy); structured pruning at 25 % and 50 % of the channels
  (layer and global scope, kept channels also rounded up to multiples of 16), magnitude
  pruning at 50 % and 80 % (latency timed once: dense kernels do the same work), and
  structured 50 % followed by a short fine-tune (5 epochs on the training split in
  PyTorch, the pruned widths rebuilt from the pruned ONNX weights; a benchmark-only step,
  ``prune`` itself does not train). Latency at batch 64 (batch 1 of this 8x8 model is all
  call overhead).
- resnet18, mobilenetv2: ``benchmarks/models.py``'s ResNet-18 and MobileNetV2 with seeded
  random weights at batch 1, 224x224; structured pruning at 50 % (residual groups pruned
  consistently, depthwise convs sliced with their group). No labels: cosine against the
  unpruned model on one random input (top-1 agreement of one sample says little).

Latency: medians of ``bench`` runs, onnxruntime and our compiled artifact, 2 threads,
unpruned and pruned alternated ``--rounds`` times (at most 3 for the 224x224 CNNs); the
median of the round medians is reported.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from torsh_gen.tools.bench import cpu_flags, cpu_model  # noqa: E402
from torsh_gen.tools.digits import accuracy, digits_model, digits_split  # noqa: E402
from torsh_gen.tools.prune import prune_model  # noqa: E402
from torsh_gen.tools.validate import cosine_similarity, top1_agreement  # noqa: E402

DIGITS_CASES = [  # method, sparsity, scope, channel multiple, measure latency
    ("structured", 0.25, "layer", 1, True),
    ("structured", 0.25, "layer", 16, True),
    ("structured", 0.5, "layer", 1, True),
    ("structured", 0.5, "global", 1, True),
    ("structured", 0.5, "global", 16, True),
    ("magnitude", 0.5, "layer", 1, False),
    ("magnitude", 0.5, "global", 1, True),  # dense kernels: same compute, latency unchanged
    ("magnitude", 0.8, "global", 1, False),
]


def run_digits(tmp: Path, rounds: int) -> list[dict[str, Any]]:
    """Every digits case, plus structured 50 % with a short fine-tune."""
    model = tmp / "digits_cnn.onnx"
    onnx.save(digits_model("cnn"), model)
    split = digits_split()
    data = tmp / "digits_test.npz"
    np.savez(data, image=split.x_test, labels=split.y_test)
    rows = []
    for method, sparsity, scope, multiple, timed in DIGITS_CASES:
        out = tmp / f"digits_{method}_{sparsity}_{scope}_{multiple}.onnx"
        r = prune_model(
            model,
            out,
            method=method,
            sparsity=sparsity,
            scope=scope,
            channel_multiple=multiple,
            eval_data=data,
            bindings={"N": 64},
            latency=timed,
            rounds=rounds,
            repeat=50,
        )
        rows.append(_row("digits CNN", r.to_dict(), multiple))
        if (method, sparsity, scope, multiple) == ("structured", 0.5, "layer", 1):
            base, tuned = _ort(model, split.x_test), _ort(fine_tune(out, split), split.x_test)
            acc = accuracy(tuned, split.y_test)
            rows.append(
                {
                    **rows[-1],
                    "case": rows[-1]["case"] + " + 5-epoch fine-tune",
                    "accuracy_after": acc,
                    "accuracy_drop": rows[-1]["accuracy_before"] - acc,
                    "top1_agreement": top1_agreement(tuned, base),
                    "cosine": cosine_similarity(tuned, base),
                    "latency": None,
                }
            )
    return rows


def run_cnn(name: str, tmp: Path, rounds: int) -> list[dict[str, Any]]:
    """A ``benchmarks/models.py`` CNN (random weights) at 50 % of the channels."""
    from benchmarks.models import build_models

    (m,) = build_models(tmp, (name,))
    out = tmp / f"{name}_pruned.onnx"
    r = prune_model(
        m.onnx_path, out, method="structured", sparsity=0.5, rounds=min(rounds, 3), repeat=20
    )
    return [_row(f"{LABELS[name]} (random weights)", r.to_dict())]


LABELS = {"resnet18": "ResNet-18", "mobilenetv2": "MobileNetV2"}


def _row(model: str, d: dict[str, Any], multiple: int = 1) -> dict[str, Any]:
    ev, lat = d["evaluation"], d["latency"]
    agreement = next(iter(ev["outputs"].values()))
    return {
        "model": model,
        "case": f"{d['method']} {d['sparsity']:.0%} ({d['scope']}"
        + (f", channels ×{multiple})" if multiple > 1 else ")"),
        "kept_channels": [g["kept"] for g in d["groups"]],
        "accuracy_before": ev["accuracy_before"],
        "accuracy_after": ev["accuracy_after"],
        "accuracy_drop": ev["accuracy_drop"] if ev["accuracy_before"] is not None else None,
        "top1_agreement": agreement["top1_agreement"],
        "cosine": agreement["cosine"],
        "macs_ratio": d["macs"]["ratio"],
        "macs_nonzero_ratio": d["macs"].get("ratio_nonzero"),
        "weight_bytes_ratio": d["size"]["weight_bytes"]["ratio"],
        "compressed_ratio": d["size"]["compressed_bytes"]["ratio"],
        "latency": lat,
        "groups_left_alone": [g["group"] for g in d["groups"] if g["left_alone"]],
    }


def fine_tune(pruned: Path, split: Any, epochs: int = 5) -> Path:
    """Train the pruned digits CNN for a few epochs and write the weights back (benchmark only)."""
    import torch
    from onnx import numpy_helper

    model = onnx.load(pruned)
    w = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    nn = torch.nn
    c0, c2, c5, f9 = (
        w["0.weight"].shape[0],
        w["2.weight"].shape[0],
        w["5.weight"].shape[0],
        w["9.weight"].shape[0],
    )
    net = nn.Sequential(
        nn.Conv2d(1, c0, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(c0, c2, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(c2, c5, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(c5 * 4, f9),
        nn.ReLU(),
        nn.Linear(f9, 10),
    )
    net.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in w.items()})
    torch.manual_seed(0)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    x, y = torch.from_numpy(split.x_train), torch.from_numpy(split.y_train)
    gen = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=gen).split(64):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(x[idx]), y[idx]).backward()
            opt.step()
    state = {k: v.detach().numpy() for k, v in net.state_dict().items()}
    for t in model.graph.initializer:
        t.CopyFrom(numpy_helper.from_array(state[t.name].astype(np.float32), t.name))
    out = pruned.with_name(pruned.stem + "_tuned.onnx")
    onnx.save(model, out)
    return out


def _ort(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {"image": x}
    )[0]


def markdown(rows: list[dict[str, Any]]) -> str:
    """The results as a markdown table."""
    columns = [
        "model",
        "case",
        "top-1 before → after (drop)",
        "top-1 agreement",
        "cosine",
        "MACs",
        "weights (dense)",
        "zlib size",
        "ORT ms before → after",
        "ours ms before → after",
    ]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        acc = (
            "–"
            if r["accuracy_before"] is None
            else f"{r['accuracy_before']:.2f} → {r['accuracy_after']:.2f} "
            f"({r['accuracy_drop']:+.2f})"
        )
        macs = f"{r['macs_ratio']:.1%}" + (
            f" (nonzero {r['macs_nonzero_ratio']:.1%})"
            if r["macs_nonzero_ratio"] is not None
            else ""
        )
        ort, ours = _ms(r["latency"], "onnxruntime"), _ms(r["latency"], "torsh-gen")
        cells = [
            r["model"],
            r["case"],
            acc,
            f"{r['top1_agreement']:.1%}",
            f"{r['cosine']:.4f}",
            macs,
            f"{r['weight_bytes_ratio']:.1%}",
            f"{r['compressed_ratio']:.1%}",
            ort,
            ours,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _ms(lat: dict[str, Any] | None, engine: str) -> str:
    if not lat:
        return "–"
    e = lat[engine]
    return f"{e['before_ms']:.3f} → {e['after_ms']:.3f} (×{e['ratio']:.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "pruning.json")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--models", default="digits,resnet18,mobilenetv2")
    args = parser.parse_args()
    rows: list[dict[str, Any]] = []
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="torsh-gen-pruning-") as tmp:
        if "digits" in args.models:
            rows += run_digits(Path(tmp), args.rounds)
        for name in ("resnet18", "mobilenetv2"):
            if name in args.models:
                rows += run_cnn(name, Path(tmp), args.rounds)
    load = {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)}
    result = {
        "cpu": cpu_model(),
        "cpu_flags": cpu_flags(),
        "cores": os.cpu_count(),
        "threads": 2,
        "load_average": load,
        "rows": rows,
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"CPU: {result['cpu']} ({', '.join(result['cpu_flags'])}), {os.cpu_count()} cores, "
        f"2 threads, load average {load}\n"
    )
    print(markdown(rows))


if __name__ == "__main__":
    main()
