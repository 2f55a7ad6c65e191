"""Models for tests and benchmarks that need no download.

The light_* models shipped in the onnx package generate every weight with
``ConstantOfShape(0.02)``, so their outputs are uniform and a wrong kernel can still match.
``randomized_light_model`` replaces those generators by seeded random initializers
(He-scaled for convolution and GEMM weights, BatchNorm scale and variance near 1), which
makes them fit for correctness checks.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

LIGHT_MODELS = ("resnet50", "squeezenet", "densenet121", "inception_v1", "inception_v2", "shufflenet", "bvlc_alexnet", "zfnet512", "vgg19")


def light_model_path(name: str) -> Path:
    """Path of ``light_<name>.onnx`` inside the installed onnx package."""
    short = name.removeprefix("light_")
    path = Path(os.path.dirname(onnx.__file__)) / "backend" / "test" / "data" / "light" / f"light_{short}.onnx"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is not shipped with this onnx version")
    return path


def randomized_light_model(name: str, seed: int = 0) -> onnx.ModelProto:
    """A light model whose ConstantOfShape weight generators became seeded random initializers."""
    model = onnx.load(light_model_path(name))
    g = model.graph
    rng = np.random.default_rng(seed)
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in g.node:
        for i, name_ in enumerate(n.input):
            consumers.setdefault(name_, []).append((n, i))  # type: ignore[arg-type]
    shapes = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    keep: list[onnx.NodeProto] = []
    new_inits: list[onnx.TensorProto] = []
    for n in g.node:
        if n.op_type != "ConstantOfShape" or n.input[0] not in shapes:
            keep.append(n)
            continue
        shape = tuple(int(d) for d in shapes[n.input[0]])
        out = n.output[0]
        new_inits.append(numpy_helper.from_array(_weight_for(out, shape, consumers.get(out, []), rng), out))
    del g.node[:]
    g.node.extend(keep)
    used = {i for n in keep for i in n.input}
    remaining = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(remaining + new_inits)
    init_names = {t.name for t in g.initializer}
    inputs = [i for i in g.input if i.name in init_names or i.name not in shapes]
    del g.input[:]
    g.input.extend(inputs)
    return model


def _weight_for(name: str, shape: tuple[int, ...], uses: list, rng: np.random.Generator) -> np.ndarray:
    """A plausible weight for the consumer's slot: He-scaled kernels, BN stats near identity."""
    op, slot = (uses[0][0].op_type, uses[0][1]) if uses else ("", 0)
    if op == "BatchNormalization":
        if slot in (1, 4):  # scale, variance
            return rng.uniform(0.5, 1.5, shape).astype(np.float32)
        return rng.uniform(-0.1, 0.1, shape).astype(np.float32)
    if op in ("Conv", "ConvTranspose", "Gemm", "MatMul") and slot == 1 and len(shape) >= 2:
        fan_in = int(np.prod(shape[1:])) if op != "MatMul" else shape[0]
        if op == "Gemm":
            fan_in = shape[-1]
        return (rng.standard_normal(shape) * np.sqrt(2.0 / max(fan_in, 1))).astype(np.float32)
    return rng.uniform(-0.1, 0.1, shape).astype(np.float32)
