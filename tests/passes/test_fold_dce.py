"""Pass manager, constant folding and dead-code elimination: before/after cases."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper

from tests.conftest import make_model, tensor_info
from torsh_gen.errors import InputError
from torsh_gen.frontends.onnx import load_onnx
from torsh_gen.ir.verify import verify
from torsh_gen.ops.execute import run_graph
from torsh_gen.passes import pipeline, run_passes
from torsh_gen.tools.testmodels import light_model_path


def _ops(graph) -> list[str]:
    return [n.op_type for n in graph.nodes]


def test_fold_constants_computes_constant_subgraphs_and_static_shapes():
    a = onnx.numpy_helper.from_array(np.arange(6, dtype=np.float32).reshape(2, 3), "a")
    nodes = [
        helper.make_node("Neg", ["a"], ["na"]),
        helper.make_node("Shape", ["x"], ["sx"]),
        helper.make_node("Cast", ["sx"], ["sxf"], to=onnx.TensorProto.FLOAT),
        helper.make_node("ReduceSum", ["sxf"], ["total"], keepdims=0),
        helper.make_node("Add", ["x", "na"], ["y0"]),
        helper.make_node("Mul", ["y0", "total"], ["y"]),
    ]
    g = load_onnx(make_model(nodes, [tensor_info("x", [2, 3])], [tensor_info("y", [2, 3])], [a]))
    x = np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)
    before = run_graph(g, {"x": x})[0]
    reports = run_passes(g, ["fold_constants", "eliminate_dead_code"], check=True)
    assert _ops(g) == ["Add", "Mul"]
    assert reports[0].changed and reports[0].nodes_before == 6 and reports[0].nodes_after == 2
    np.testing.assert_array_equal(run_graph(g, {"x": x})[0], before)


def test_dynamic_shapes_are_not_folded():
    nodes = [helper.make_node("Shape", ["x"], ["s"]), helper.make_node("Reshape", ["x", "s"], ["y"])]
    g = load_onnx(make_model(nodes, [tensor_info("x", ["n", 3])], [tensor_info("y", ["n", 3])]))
    run_passes(g, ["fold_constants"], check=True)
    assert _ops(g) == ["Shape", "Reshape"]


def test_fold_keeps_graph_output_names_and_skips_random_ops():
    nodes = [
        helper.make_node("Constant", [], ["c"], value=onnx.numpy_helper.from_array(np.ones(3, np.float32))),
        helper.make_node("RandomUniform", [], ["r"], shape=[3]),
        helper.make_node("Add", ["c", "r"], ["out"]),
    ]
    g = load_onnx(make_model(nodes, [], [tensor_info("out", [3])]))
    run_passes(g, ["fold_constants", "eliminate_dead_code"], check=True)
    assert _ops(g) == ["RandomUniform", "Add"]
    assert g.outputs[0].name == "out"


def test_dce_removes_unused_nodes_and_initializers_but_keeps_subgraph_reads():
    w = onnx.numpy_helper.from_array(np.ones(3, np.float32), "w")
    unused = onnx.numpy_helper.from_array(np.ones(3, np.float32), "unused")
    then_b = helper.make_graph([helper.make_node("Add", ["x", "w"], ["t"])], "then", [], [tensor_info("t", [3])])
    else_b = helper.make_graph([helper.make_node("Neg", ["x"], ["e"])], "else", [], [tensor_info("e", [3])])
    nodes = [
        helper.make_node("Relu", ["x"], ["dead"]),
        helper.make_node("If", ["c"], ["y"], then_branch=then_b, else_branch=else_b),
    ]
    inputs = [tensor_info("x", [3]), tensor_info("c", [], onnx.TensorProto.BOOL)]
    g = load_onnx(make_model(nodes, inputs, [tensor_info("y", [3])], [w, unused]))
    run_passes(g, ["eliminate_dead_code"], check=True)
    assert _ops(g) == ["If"]
    assert [v.name for v in g.initializers] == ["w"]


def test_light_resnet50_weights_generators_fold_to_initializers():
    g = load_onnx(light_model_path("resnet50"))
    reports = run_passes(g, ["fold_constants", "eliminate_dead_code"], check=True)
    assert "ConstantOfShape" not in _ops(g)
    assert reports[0].weight_bytes_after > 90e6  # 25.6 M float weights materialized
    verify(g)


def test_pipeline_names_and_errors():
    assert pipeline("O0") == []
    assert pipeline("o1") == ["fold_constants", "eliminate_dead_code"]
    assert pipeline("O2", ["eliminate_dead_code"]) == ["eliminate_dead_code"]
    with pytest.raises(InputError, match="unknown optimization level"):
        pipeline("O9")
    with pytest.raises(InputError, match="unknown pass 'nope'"):
        pipeline("O2", ["nope"])
