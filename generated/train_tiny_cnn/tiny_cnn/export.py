"""Export the model back to ONNX: ``python -m tiny_cnn.export WEIGHTS -o model.onnx``.

The exported graph keeps the source model's input and output names and its symbolic
dimensions, so it can replace the original file wherever that was used.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch.ao.quantization import FakeQuantizeBase

from tiny_cnn.model import INPUTS, OUTPUTS, Model, example_inputs, load_pretrained

OPSET = 18


def dynamic_shapes() -> tuple[dict[int, torch.export.Dim], ...]:
    """One ``torch.export.Dim`` per symbolic dim of the source model, shared by name."""
    dims: dict[str, torch.export.Dim] = {}
    shapes = []
    for _name, spec, _dtype in INPUTS.values():
        axes = {}
        for axis, d in enumerate(spec):
            if isinstance(d, str):
                axes[axis] = dims.setdefault(d, torch.export.Dim(d, min=1))
        shapes.append(axes)
    return tuple(shapes)


def export_onnx(model: Model, path: str | Path, opset: int = OPSET) -> Path:
    """Write ``model`` (inference mode, final activation on) to ``path`` as ONNX."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    was_training, logits = model.training, model.output_logits
    model.eval()
    model.apply(torch.ao.quantization.disable_observer)  # QAT: freeze the learned ranges
    model.output_logits = False
    names = [name for name, _dims, _dtype in INPUTS.values()]
    try:
        if any(isinstance(m, FakeQuantizeBase) for m in model.modules()):
            # torch.export cannot trace eager fake-quant modules (they branch on tensor
            # values); the TorchScript exporter writes them as QuantizeLinear/DequantizeLinear
            axes = {
                n: {a: d for a, d in enumerate(dims) if isinstance(d, str)}
                for n, (_, dims, _) in zip(names, INPUTS.values())
            }
            torch.onnx.export(
                model,
                example_inputs(2),
                str(path),
                dynamo=False,
                input_names=names,
                output_names=list(OUTPUTS),
                dynamic_axes=axes,
                opset_version=opset,
            )
        else:
            torch.onnx.export(
                model,
                example_inputs(2),
                str(path),
                dynamo=True,
                input_names=names,
                output_names=list(OUTPUTS),
                dynamic_shapes=dynamic_shapes(),
                opset_version=opset,
                external_data=False,
                verbose=False,
            )
    finally:
        model.train(was_training)
        model.output_logits = logits
    return path


def main(argv: list[str] | None = None) -> int:
    """Command line: export the weights in a safetensors file (default: the source model's)."""
    p = argparse.ArgumentParser(description="Export tiny_cnn to ONNX.")
    p.add_argument("weights", nargs="?", help="weights.safetensors written by training")
    p.add_argument("-o", "--output", default="model.onnx")
    p.add_argument("--opset", type=int, default=OPSET)
    args = p.parse_args(argv)
    model = load_pretrained(args.weights) if args.weights else load_pretrained()
    print(export_onnx(model, args.output, args.opset))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
