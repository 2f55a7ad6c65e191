"""Shared fixtures: paths of the models shipped in the onnx package, model builders."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import torsh_gen.ops  # noqa: F401  (registers ops)

ONNX_DATA = Path(os.path.dirname(onnx.__file__)) / "backend" / "test" / "data"
REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "tiny_cnn.onnx"


def shipped_model_dirs(kind: str) -> list[Path]:
    """Folders holding model.onnx + test_data_set_* for one of the onnx package's collections."""
    root = ONNX_DATA / kind
    return sorted(p for p in root.iterdir() if (p / "model.onnx").is_file())


def light_models() -> list[Path]:
    """The light_*.onnx zoo models shipped in the onnx package."""
    return sorted((ONNX_DATA / "light").glob("light_*.onnx"))


def make_model(nodes, inputs, outputs, initializers=(), opset: int = 17, **kw) -> onnx.ModelProto:
    """A ModelProto from onnx.helper pieces with one default-domain opset."""
    graph = helper.make_graph(nodes, kw.pop("name", "g"), inputs, outputs, list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], **kw)
    model.ir_version = 8
    return model


def tensor_info(name: str, shape, dtype=TensorProto.FLOAT) -> onnx.ValueInfoProto:
    """Shorthand for make_tensor_value_info."""
    return helper.make_tensor_value_info(name, dtype, shape)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture
def mlp_model() -> onnx.ModelProto:
    """A two-layer MLP with a symbolic batch dim and real (seeded) weights."""
    r = np.random.default_rng(7)
    w1 = onnx.numpy_helper.from_array(r.standard_normal((16, 32)).astype(np.float32), "w1")
    b1 = onnx.numpy_helper.from_array(r.standard_normal(32).astype(np.float32), "b1")
    w2 = onnx.numpy_helper.from_array(r.standard_normal((32, 4)).astype(np.float32), "w2")
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h0"], name="fc1/MatMul"),
        helper.make_node("Add", ["h0", "b1"], ["h1"], name="fc1/Add"),
        helper.make_node("Relu", ["h1"], ["h2"], name="act/Relu"),
        helper.make_node("MatMul", ["h2", "w2"], ["y"], name="fc2/MatMul"),
    ]
    return make_model(nodes, [tensor_info("x", ["batch", 16])], [tensor_info("y", ["batch", 4])], [w1, b1, w2])
