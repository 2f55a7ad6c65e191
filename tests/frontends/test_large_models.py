"""Models over 2 GB: weights in external data, imported and exported (slow; `make test-slow`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper

from tests.conftest import make_model, tensor_info
from torsh_gen.frontends.onnx import load_onnx, save_onnx
from torsh_gen.ops.execute import run_graph


@pytest.mark.slow
def test_model_over_2gb_round_trips(tmp_path: Path):
    rows = 2**29 + 2**20  # 2.1 GB of float32
    w = np.ones((rows, 1), np.float32)
    w[-1, 0] = 3.0
    node = helper.make_node("ReduceSum", ["w"], ["y"], keepdims=0)
    model = make_model([node], [], [tensor_info("y", [])], [onnx.numpy_helper.from_array(w, "w")], opset=17)
    del w
    path = tmp_path / "big.onnx"
    onnx.save_model(model, path, save_as_external_data=True, location="big.data")
    del model
    g = load_onnx(path)
    assert g.initializers[0].const.nbytes > 2**31
    out = save_onnx(g, tmp_path / "out" / "big.onnx")  # chooses external data by itself
    assert (out.parent / "big.onnx.data").stat().st_size > 2**31
    assert out.stat().st_size < 1 << 20
    g2 = load_onnx(out)
    assert float(run_graph(g2, {})[0]) == pytest.approx(rows + 2.0)
