"""The light zoo models with seeded random weights: our reference execution vs onnxruntime."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from torsh_gen.backend import prepare
from torsh_gen.tools.testmodels import randomized_light_model

MODELS = ["resnet50", "squeezenet", "densenet121", "inception_v1", "inception_v2", "shufflenet", "bvlc_alexnet"]


@pytest.mark.parametrize("name", MODELS)
def test_randomized_light_model_matches_onnxruntime(name: str):
    model = randomized_light_model(name)
    x = np.random.default_rng(1).standard_normal((1, 3, 224, 224)).astype(np.float32)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    expected = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    assert expected.std() > 0.05 * np.abs(expected).mean(), "random weights must give non-uniform outputs"
    ours = prepare(model).run([x])[0]
    np.testing.assert_allclose(ours, expected, rtol=2e-3, atol=2e-5)
