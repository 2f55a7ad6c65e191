"""One layer at a time in wasm32 beside onnxruntime-web: which layer kinds lose.

    .venv/bin/python benchmarks/wasm_layers.py [--layers stem7x7s2,c3x3_96_128_27] [--runs 15]

Each layer (the Conv + Relu shapes of light_inception_v1 and light_resnet50, an LRN and a
MaxPool) becomes a one-node model with seeded weights, compiled for wasm32 and timed by
``benchmarks/wasm/bench.mjs`` beside onnxruntime-web in one Node process. GFLOP/s are
2 * MACs / latency. Prints one line per layer; for whole models use wasm_bench.py.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from torsh_gen.tools.compile import compile_model  # noqa: E402

#: name → ("conv", cin, size, cout, kernel, stride, pad) or ("lrn" | "pool", channels, size)
LAYERS: dict[str, tuple] = {
    "stem7x7s2": ("conv", 3, 224, 64, 7, 2, 3),
    "c1x1_64_55": ("conv", 64, 55, 64, 1, 1, 0),
    "c3x3_64_192_55": ("conv", 64, 55, 192, 3, 1, 1),
    "c1x1_192_64_27": ("conv", 192, 27, 64, 1, 1, 0),
    "c3x3_96_128_27": ("conv", 96, 27, 128, 3, 1, 1),
    "c5x5_16_32_27": ("conv", 16, 27, 32, 5, 1, 2),
    "c3x3_128_192_27": ("conv", 128, 27, 192, 3, 1, 1),
    "c1x1_480_192_13": ("conv", 480, 13, 192, 1, 1, 0),
    "c3x3_96_208_13": ("conv", 96, 13, 208, 3, 1, 1),
    "c5x5_16_48_13": ("conv", 16, 13, 48, 5, 1, 2),
    "c3x3_160_320_6": ("conv", 160, 6, 320, 3, 1, 1),
    "c1x1_832_384_6": ("conv", 832, 6, 384, 1, 1, 0),
    "r50_1x1_64_256_56": ("conv", 64, 56, 256, 1, 1, 0),
    "r50_1x1_256_64_56": ("conv", 256, 56, 64, 1, 1, 0),
    "r50_3x3_64_56": ("conv", 64, 56, 64, 3, 1, 1),
    "r50_1x1s2_256_512_56": ("conv", 256, 56, 512, 1, 2, 0),
    "r50_3x3s2_128_56": ("conv", 128, 56, 128, 3, 2, 1),
    "r50_3x3_128_28": ("conv", 128, 28, 128, 3, 1, 1),
    "r50_1x1_1024_256_14": ("conv", 1024, 14, 256, 1, 1, 0),
    "r50_3x3_256_14": ("conv", 256, 14, 256, 3, 1, 1),
    "r50_1x1_512_2048_7": ("conv", 512, 7, 2048, 1, 1, 0),
    "r50_3x3_512_7": ("conv", 512, 7, 512, 3, 1, 1),
    "lrn_192_55": ("lrn", 192, 55),
    "maxpool_480_13": ("pool", 480, 13),
}


def layer_model(name: str) -> tuple[onnx.ModelProto, float]:
    """The one-layer model of ``name`` and its floating-point operations."""
    spec = LAYERS[name]
    rng = np.random.default_rng(0)
    kind, channels, size = spec[0], spec[1], spec[2]
    if kind == "conv":
        _, cin, hw, cout, k, s, p = spec
        ho = (hw + 2 * p - k) // s + 1
        w = (rng.standard_normal((cout, cin, k, k)) * 0.1).astype(np.float32)
        inits = [
            numpy_helper.from_array(w, "w"),
            numpy_helper.from_array(rng.standard_normal(cout).astype(np.float32), "b"),
        ]
        nodes = [
            helper.make_node(
                "Conv", ["x", "w", "b"], ["c"], pads=[p] * 4, strides=[s, s], kernel_shape=[k, k]
            ),
            helper.make_node("Relu", ["c"], ["y"]),
        ]
        out, flops = (1, cout, ho, ho), 2.0 * cin * cout * k * k * ho * ho
    elif kind == "lrn":
        nodes = [helper.make_node("LRN", ["x"], ["y"], size=5, alpha=1e-4, beta=0.75, bias=1.0)]
        inits, out, flops = [], (1, channels, size, size), 0.0
    else:
        nodes = [helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[3, 3], pads=[1] * 4)]
        inits, out, flops = [], (1, channels, size, size), 0.0
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, (1, channels, size, size))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out)],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # onnxruntime-web 1.30 reads it
    return model, flops


def main() -> None:
    """Compile and time each layer; print ours, onnxruntime-web's and the ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", default=",".join(LAYERS))
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    names = args.layers.split(",")
    unknown = [n for n in names if n not in LAYERS]
    if unknown:
        raise SystemExit(f"unknown layer(s) {unknown}; known: {', '.join(LAYERS)}")
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            model, flops = layer_model(name)
            path = Path(tmp) / f"{name}.onnx"
            onnx.save(model, path)
            artifact = Path(tmp) / f"{name}_wasm"
            compile_model(path, artifact, target="wasm32")
            command = ["node", str(HERE / "wasm" / "bench.mjs"), "--artifact", str(artifact)]
            command += ["--onnx", str(path), "--runs", str(args.runs), "--warmup", "2"]
            command += ["--blocks", "3", "--json"]
            proc = subprocess.run(command, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                print(f"{name:18s} failed: {proc.stderr.strip()[-300:]}", flush=True)
                continue
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            ours, ort = r["ours_ms"], r["ort_ms"]
            rate = (lambda ms: f" ({flops / ms / 1e6:5.1f} GFLOP/s)") if flops else (lambda ms: "")
            print(
                f"{name:18s} ours {ours:8.3f} ms{rate(ours)}  onnxruntime-web {ort:8.3f} ms"
                f"{rate(ort)}  ratio {r['ratio']:.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
