"""Models over 2 GB: weights in external data, imported and exported (slow; `make test-slow`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from tests.conftest import make_model, tensor_info
from torsh_gen.frontends.onnx import load_onnx, save_onnx
from torsh_gen.ops.execute import run_graph


def _external_tensor(name: str, shape: tuple[int, ...], location: str) -> TensorProto:
    """A float TensorProto whose data lives in ``location`` (written separately)."""
    t = TensorProto()
    t.name = name
    t.data_type = TensorProto.FLOAT
    t.dims.extend(shape)
    t.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", str(int(np.prod(shape)) * 4))):
        entry = t.external_data.add()
        entry.key, entry.value = key, value
    return t


@pytest.mark.slow
def test_model_over_2gb_round_trips(tmp_path: Path):
    rows = 2**29 + 2**20  # 2.1 GB of float32
    w = np.lib.format.open_memmap(tmp_path / "scratch.npy", mode="w+", dtype=np.float32, shape=(rows, 1))
    w[:] = 1.0
    w[-1, 0] = 3.0
    w.tofile(tmp_path / "big.data")
    del w
    node = helper.make_node("ReduceSum", ["w"], ["y"], keepdims=0)
    model = make_model([node], [], [tensor_info("y", [])], [_external_tensor("w", (rows, 1), "big.data")], opset=17)
    onnx.save_model(model, tmp_path / "big.onnx")
    g = load_onnx(tmp_path / "big.onnx")
    assert g.initializers[0].const.nbytes > 2**31
    out = save_onnx(g, tmp_path / "out" / "big.onnx")  # chooses external data by itself
    assert (out.parent / "big.onnx.data").stat().st_size > 2**31
    assert out.stat().st_size < 1 << 20
    g2 = load_onnx(out)
    assert float(run_graph(g2, {})[0]) == pytest.approx(rows + 2.0)
