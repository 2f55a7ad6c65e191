"""The digits evaluation models: trained, held-out accuracy, cached, deterministic."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from torsh_gen.errors import TorshGenError
from torsh_gen.tools.digits import KINDS, accuracy, digits_model, digits_split

pytest.importorskip("torch")
pytest.importorskip("sklearn")


@pytest.mark.parametrize("kind", KINDS)
def test_trained_model_classifies_held_out_digits(kind, tmp_path):
    split = digits_split()
    model = digits_model(kind, cache_dir=tmp_path)
    logits = ort.InferenceSession(model.SerializeToString()).run(None, split.inputs())[0]
    assert logits.shape == (len(split.y_test), 10)
    assert accuracy(logits, split.y_test) > 95.0
    again = digits_model(kind, cache_dir=tmp_path)  # from the cache now
    assert [i.name for i in again.graph.initializer] == [i.name for i in model.graph.initializer]
    assert len(list(tmp_path.iterdir())) == 1


def test_split_is_seeded_and_disjoint():
    a, b = digits_split(), digits_split()
    np.testing.assert_array_equal(a.y_test, b.y_test)
    assert len(a.x_train) + len(a.x_test) == 1797
    assert a.x_train.dtype == np.float32 and a.x_train.max() <= 1.0


def test_unknown_kind_is_refused():
    with pytest.raises(TorshGenError, match="choose one of mlp, cnn"):
        digits_model("resnet")
