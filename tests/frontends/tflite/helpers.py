"""Fixture paths and the LiteRT interpreter as the reference for TFLite imports."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[2] / "data" / "tflite"
FLOAT_MODELS = ["mobilenet_float", "mobilenet_fp16", "transformer_block", "mlp", "float_ops"]
INT8_MODELS = ["mobilenet_int8", "mobilenet_int8_float_io", "int8_ops"]
ALL_MODELS = FLOAT_MODELS + INT8_MODELS


def fixture(name: str) -> Path:
    """Path of a committed .tflite fixture."""
    return DATA / f"{name}.tflite"


def random_feeds(path: Path, seed: int, batch: int | None = None) -> list[np.ndarray]:
    """Random inputs for the model's inputs (int8 inputs: the full int8 range)."""
    from ai_edge_litert.interpreter import Interpreter

    rng = np.random.default_rng(seed)
    feeds = []
    for d in Interpreter(model_path=str(path)).get_input_details():
        shape = list(d["shape"])
        if batch is not None:
            shape[0] = batch
        if d["dtype"] == np.int8:
            feeds.append(rng.integers(-128, 128, size=shape).astype(np.int8))
        else:
            feeds.append(rng.uniform(-1.5, 1.5, size=shape).astype(d["dtype"]))
    return feeds


def litert_run(path: Path, feeds: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Outputs of the LiteRT interpreter (the source framework) on ``feeds``."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path))
    for d, x in zip(it.get_input_details(), feeds):
        if tuple(d["shape"]) != x.shape:
            it.resize_tensor_input(d["index"], list(x.shape))
    it.allocate_tensors()
    for d, x in zip(it.get_input_details(), feeds):
        it.set_tensor(d["index"], x)
    it.invoke()
    return [it.get_tensor(d["index"]).copy() for d in it.get_output_details()]


def output_steps(path: Path) -> list[tuple[str, float]]:
    """For each model output: the op that writes it and one quantization step in its units.

    Integer outputs count in steps of 1; a float output written by DEQUANTIZE counts in
    its input's scale; other float outputs must match exactly (step 0).
    """
    from torsh_gen.frontends.tflite import read_tflite

    model = read_tflite(path)
    writer = {o: op for op in model.operators for o in op.outputs}
    steps = []
    for i in model.outputs:
        op = writer[i]
        t = model.tensors[i]
        if t.dtype.is_integer:
            steps.append((op.opcode, 1.0))
        elif op.opcode == "DEQUANTIZE":
            steps.append((op.opcode, float(model.tensors[op.inputs[0]].quant.scale[0])))
        else:
            steps.append((op.opcode, 0.0))
    return steps
