"""Whole models compiled at O3 against onnxruntime: the light zoo with random weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper

from tests.backends.helpers import compile_and_load, ort_outputs
from torsh_gen.tools.testmodels import randomized_light_model


def with_logits(model: onnx.ModelProto) -> onnx.ModelProto:
    """Also output the input of the last Softmax: random-weight softmaxes saturate to one-hot."""
    soft = [n for n in model.graph.node if n.op_type == "Softmax"]
    if soft:
        model.graph.output.append(helper.make_empty_tensor_value_info(soft[-1].input[0]))
    return model


FAST = ["squeezenet", "shufflenet"]
SLOW = ["resnet50", "densenet121", "inception_v1", "inception_v2", "bvlc_alexnet"]


@pytest.mark.parametrize("name", FAST + [pytest.param(n, marks=pytest.mark.slow) for n in SLOW])
def test_light_model_matches_onnxruntime(tmp_path: Path, name: str) -> None:
    model = with_logits(randomized_light_model(name))
    module = compile_and_load(model, tmp_path / name)
    spec = next(s for s in module.INPUTS if s["default"] is None)
    shape = [d if isinstance(d, int) else 1 for d in spec["shape"]]
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    m = module.Model()
    for feeds in ({spec["name"]: x}, {spec["name"]: x * 0.5}):  # the second run reuses buffers
        ours = m.run(**feeds)
        for (key, got), want in zip(ours.items(), ort_outputs(model, feeds)):
            assert got.shape == want.shape and got.dtype == want.dtype, key
            # random weights give large activations: float32 sums agree to a scale-relative bound
            scale = float(np.abs(want).max()) or 1.0
            np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4 * scale, err_msg=key)
