"""The converter's core: weights as parameters, symbolic dims, every failure listed."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.backends.tvm.helpers import check_tvm, tvm_session
from torsh_gen.errors import UnsupportedOpError


def _mlp(batch: object = "N") -> object:
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.standard_normal((64, 32)).astype(np.float32), "w1")
    b1 = numpy_helper.from_array(rng.standard_normal(32).astype(np.float32), "b1")
    w2 = numpy_helper.from_array(rng.standard_normal((10, 32)).astype(np.float32), "w2")
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"]),
        helper.make_node("Add", ["h", "b1"], ["h2"]),
        helper.make_node("Relu", ["h2"], ["h3"]),
        helper.make_node("Gemm", ["h3", "w2"], ["y"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 10])],
        [w1, b1, w2],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_mlp_matches_onnxruntime_for_several_batch_sizes() -> None:
    model = _mlp()
    session = tvm_session(model)
    for batch in (1, 3, 16):
        x = np.random.default_rng(batch).standard_normal((batch, 64)).astype(np.float32)
        check_tvm(model, {"x": x}, rtol=1e-5, atol=1e-5)
        assert session.run({"x": x})["y"].shape == (batch, 10)


def test_weights_are_parameters_not_constants() -> None:
    session = tvm_session(_mlp())
    shapes = sorted(p.shape for p in session.module.params)
    # b1 (32 elements) is small enough to inline; the Gemm weight is stored transposed
    assert shapes == [(32, 10), (64, 32)]


def test_every_node_without_a_converter_is_listed() -> None:
    nodes = [
        helper.make_node("ImageDecoder", ["a"], ["p"], name="first"),
        helper.make_node("ImageDecoder", ["a"], ["q"], name="second"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, [16])],
        [helper.make_tensor_value_info(n, TensorProto.UINT8, None) for n in "pq"],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    with pytest.raises(UnsupportedOpError) as info:
        tvm_session(model, level="O0")
    text = str(info.value)
    assert text.startswith("2 node(s) cannot be built by the TVM backend")
    assert "'first' (ImageDecoder)" in text and "'second' (ImageDecoder)" in text


def test_string_inputs_are_refused_by_name() -> None:
    nodes = [
        helper.make_node("StringNormalizer", ["s"], ["t"], name="first"),
        helper.make_node("RegexFullMatch", ["t"], ["m"], name="second", pattern="a+"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("s", TensorProto.STRING, [2])],
        [helper.make_tensor_value_info("m", TensorProto.BOOL, [2])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    with pytest.raises(UnsupportedOpError) as info:
        tvm_session(model)
    text = str(info.value)
    assert "graph input 's'" in text and "STRING" in text


def test_outputs_computed_from_weights_alone_build_and_run(tmp_path) -> None:
    """An output that depends on no input (here weights folded into a constant, as a seeded
    random draw or a window would be) used to break TVM's LiftTransformParams ("Var gv is
    not defined"); the build keeps such weight work in main instead, in the session and in
    the packaged artifact."""
    from tests.backends.native.helpers import import_package
    from torsh_gen.tools.compile import compile_model

    w1 = numpy_helper.from_array(np.arange(100, dtype=np.float32), "w1")
    w2 = numpy_helper.from_array(np.full(100, 0.5, np.float32), "w2")
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"]), helper.make_node("Add", ["w1", "w2"], ["z"])],
        "weights_only_output",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, [3]),
            helper.make_tensor_value_info("z", TensorProto.FLOAT, [100]),
        ],
        [w1, w2],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = np.array([-1.0, 0.0, 2.0], np.float32)
    check_tvm(model, {"x": x})
    compile_model(model, tmp_path / "wo", backend="tvm", target="cpu")
    got = import_package(tmp_path / "wo").run(x=x)
    np.testing.assert_array_equal(got["z"], np.arange(100, dtype=np.float32) + 0.5)
    np.testing.assert_array_equal(got["y"], [0.0, 0.0, 2.0])
