"""Hostile and broken ONNX files: one clear error, never a crash or a hang."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper

from tests.conftest import EXAMPLE, make_model, tensor_info
from torsh_gen.errors import GraphError, ModelLoadError
from torsh_gen.frontends.onnx import load_onnx, save_onnx, to_onnx
from torsh_gen.ir.verify import verify


def test_missing_and_empty_and_text_files(tmp_path: Path):
    with pytest.raises(ModelLoadError, match="no such file"):
        load_onnx(tmp_path / "nope.onnx")
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(ModelLoadError, match="empty"):
        load_onnx(empty)
    text = tmp_path / "text.onnx"
    text.write_text("this is not a model at all\n" * 10)
    with pytest.raises(ModelLoadError, match="not (a valid )?(an )?ONNX model"):
        load_onnx(text)
    with pytest.raises(ModelLoadError, match="folder"):
        load_onnx(tmp_path)


def test_truncated_and_corrupted_protobuf(tmp_path: Path):
    data = EXAMPLE.read_bytes()
    for cut in (len(data) // 2, len(data) - 7, 50):
        p = tmp_path / f"cut{cut}.onnx"
        p.write_bytes(data[:cut])
        with pytest.raises(ModelLoadError):
            load_onnx(p)
    rng = np.random.default_rng(0)
    for i in range(20):
        corrupted = bytearray(data)
        for pos in rng.integers(0, len(data), 16):
            corrupted[pos] = int(rng.integers(0, 256))
        p = tmp_path / f"bad{i}.onnx"
        p.write_bytes(bytes(corrupted))
        try:
            verify(load_onnx(p))
        except (ModelLoadError, GraphError):
            pass


def test_undefined_value_is_named():
    node = helper.make_node("Relu", ["ghost"], ["y"], name="r")
    model = make_model([node], [tensor_info("x", [2])], [tensor_info("y", [2])])
    with pytest.raises(GraphError, match="'ghost'"):
        load_onnx(model)


def test_cycle_is_rejected():
    n1 = helper.make_node("Add", ["x", "b"], ["a"], name="n1")
    n2 = helper.make_node("Relu", ["a"], ["b"], name="n2")
    model = make_model([n1, n2], [tensor_info("x", [2])], [tensor_info("b", [2])])
    with pytest.raises(GraphError):
        load_onnx(model)


def test_double_assignment_is_rejected():
    n1 = helper.make_node("Relu", ["x"], ["y"])
    n2 = helper.make_node("Neg", ["x"], ["y"])
    model = make_model([n1, n2], [tensor_info("x", [2])], [tensor_info("y", [2])])
    with pytest.raises(GraphError, match="defined twice"):
        load_onnx(model)


def test_external_data_round_trip_and_missing_file(tmp_path: Path):
    w = onnx.numpy_helper.from_array(np.arange(4096, dtype=np.float32).reshape(64, 64), "w")
    node = helper.make_node("MatMul", ["x", "w"], ["y"])
    model = make_model([node], [tensor_info("x", [1, 64])], [tensor_info("y", [1, 64])], [w])
    path = tmp_path / "ext.onnx"
    onnx.save_model(model, path, save_as_external_data=True, location="ext.bin", size_threshold=0)
    g = load_onnx(path)
    np.testing.assert_array_equal(g.initializers[0].const, np.arange(4096, dtype=np.float32).reshape(64, 64))
    out = save_onnx(g, tmp_path / "out" / "m.onnx", external_data=True)
    assert (out.parent / "m.onnx.data").exists()
    np.testing.assert_array_equal(load_onnx(out).initializers[0].const, g.initializers[0].const)
    (tmp_path / "ext.bin").unlink()
    with pytest.raises(ModelLoadError, match="not found"):
        load_onnx(path)


def test_metadata_and_docs_survive_round_trip():
    model = onnx.load(EXAMPLE)
    model.doc_string = "model doc"
    p = model.metadata_props.add()
    p.key, p.value = "author", "me"
    model.graph.node[0].doc_string = "first node"
    back = to_onnx(load_onnx(model))
    assert back.doc_string == "model doc"
    assert {m.key: m.value for m in back.metadata_props} == {"author": "me"}
    assert back.graph.node[0].doc_string == "first node"
    assert back.producer_name == model.producer_name


def test_every_opset_version_imports():
    """Models at opsets 7 to the newest onnx knows import and export."""
    for opset in range(7, onnx.defs.onnx_opset_version() + 1):
        node = helper.make_node("Relu", ["x"], ["y"])
        model = make_model([node], [tensor_info("x", [2])], [tensor_info("y", [2])], opset=opset)
        model.ir_version = 3 if opset < 8 else 7
        g = load_onnx(model)
        assert g.info.opset_imports[""] == opset
        onnx.checker.check_model(to_onnx(g), full_check=True)
