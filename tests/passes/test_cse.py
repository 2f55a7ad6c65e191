"""Before/after cases for ``eliminate_common_subexpressions``."""

from __future__ import annotations

import numpy as np
from onnx import helper

from tests.passes.irtext import build, check_pass, feeds, model, node, ops, run_ort
from torsh_gen.frontends.onnx import load_onnx
from torsh_gen.passes import run_passes

CSE = ["eliminate_common_subexpressions"]


def test_identical_nodes_merge_transitively():
    g = build(
        [
            node("Relu", "x", "a"),
            node("Relu", "x", "b"),
            node("Neg", "a", "na"),
            node("Neg", "b", "nb"),
            node("Add", "na nb", "y"),
        ],
        ["x: float[batch,4]"],
        ["y: float[batch,4]"],
    )
    after = check_pass(g, CSE, [feeds(g, 0, batch=2), feeds(g, 1, batch=5)])
    assert ops(after) == ["Relu", "Neg", "Add"]
    add = after.nodes[2]
    assert add.inputs[0] is add.inputs[1] is after.nodes[1].outputs[0]
    np.testing.assert_allclose(
        run_ort(after, feeds(g, 2, batch=3))[0], -2 * np.maximum(feeds(g, 2, batch=3)["x"], 0)
    )


def test_different_attributes_or_inputs_do_not_merge():
    g = build(
        [
            node("Transpose", "x", "a", perm=[1, 0]),
            node("Transpose", "x", "b", perm=[0, 1]),
            node("Softmax", "x", "c", axis=0),
            node("Softmax", "x", "d", axis=1),
            node("Relu", "x", "e"),
            node("Relu", "z", "f"),
        ],
        ["x: float[3,3]", "z: float[3,3]"],
        [
            "a: float[3,3]",
            "b: float[3,3]",
            "c: float[3,3]",
            "d: float[3,3]",
            "e: float[3,3]",
            "f: float[3,3]",
        ],
    )
    after = check_pass(g, CSE, feeds(g))
    assert len(after.nodes) == 6


def test_equal_initializers_merge_and_then_their_readers():
    w = np.random.default_rng(0).standard_normal((4, 4)).astype(np.float32)
    g = build(
        [node("MatMul", "x w1", "a"), node("MatMul", "x w2", "b"), node("Sub", "a b", "y")],
        ["x: float[batch,4]"],
        ["y: float[batch,4]"],
        {"w1": w, "w2": w.copy()},
    )
    after = check_pass(g, CSE, feeds(g, batch=3))
    assert ops(after) == ["MatMul", "Sub"]
    assert [v.name for v in after.initializers] == ["w1"]
    reports = run_passes(g, CSE, check=True)
    assert reports[0].weight_bytes_after == reports[0].weight_bytes_before - w.nbytes


def test_same_bytes_with_other_dtype_or_shape_do_not_merge():
    ones = np.ones(4, np.float32)
    g = build(
        [
            node("Add", "x c1", "a"),
            node("Add", "x c2", "b"),
            node("Add", "x c3", "c"),
            node("Add", "xi c4", "d"),
            node("Sum", "a b c", "y"),
        ],
        ["x: float[4]", "xi: int32[4]"],
        ["y: float[4]", "d: int32[4]"],
        {"c1": ones, "c2": ones.reshape(1, 4), "c3": ones.copy(), "c4": ones.view(np.int32)},
    )
    after = check_pass(g, CSE, feeds(g))
    assert [v.name for v in after.initializers] == ["c1", "c2", "c4"]
    assert ops(after) == ["Add", "Add", "Add", "Sum"]


def test_graph_output_keeps_its_name_when_merged():
    g = build(
        [node("Relu", "x", "hidden"), node("Relu", "x", "y"), node("Neg", "hidden", "z")],
        ["x: float[2]"],
        ["y: float[2]", "z: float[2]"],
    )
    after = check_pass(g, CSE, feeds(g))
    assert ops(after) == ["Relu", "Neg"]
    assert after.nodes[0].outputs[0].name == "y"
    assert after.nodes[1].inputs[0] is after.outputs[0]


def test_two_graph_outputs_stay_two_values():
    g = build(
        [node("Relu", "x", "y1"), node("Relu", "x", "y2")],
        ["x: float[2]"],
        ["y1: float[2]", "y2: float[2]"],
    )
    after = check_pass(g, CSE, feeds(g))
    assert [v.name for v in after.outputs] == ["y1", "y2"]
    assert len(after.nodes) == 2


def test_random_ops_and_overridable_inputs_are_not_merged():
    m = model(
        [
            node("RandomNormalLike", "x", "r1", seed=1.0),
            node("RandomNormalLike", "x", "r2", seed=1.0),
            node("Add", "x c1", "a"),
            node("Add", "x c2", "b"),
        ],
        ["x: float[3]", "c1: float[3]"],
        ["r1: float[3]", "r2: float[3]", "a: float[3]", "b: float[3]"],
        {"c1": np.ones(3, np.float32), "c2": np.ones(3, np.float32)},
    )
    g = load_onnx(m)
    run_passes(g, CSE, check=True)
    assert ops(g) == ["RandomNormalLike", "RandomNormalLike", "Add", "Add"]
    assert {v.name for v in g.initializers} == {"c1", "c2"}


def test_unnamed_optional_output_gets_the_readers_name():
    g = build(
        [
            node("TopK", "x k", "v1 _", axis=0),
            node("TopK", "x k", "v2 i2", axis=0),
            node("Add", "v1 v2", "s"),
            node("Cast", "i2", "y", to=1),
        ],
        ["x: float[5]"],
        ["s: float[2]", "y: float[2]"],
        {"k": np.array([2], np.int64)},
    )
    after = check_pass(g, CSE, feeds(g))
    assert ops(after) == ["TopK", "Add", "Cast"]
    assert after.nodes[0].outputs[1].name == "i2"


def test_merges_inside_subgraphs():
    body = helper.make_graph(
        [node("Relu", "x", "a"), node("Relu", "x", "b"), node("Add", "a b", "t")],
        "then",
        [],
        [helper.make_tensor_value_info("t", 1, [3])],
    )
    other = helper.make_graph(
        [node("Neg", "x", "e")], "else", [], [helper.make_tensor_value_info("e", 1, [3])]
    )
    g = build(
        [node("If", "cond", "y", then_branch=body, else_branch=other)],
        ["cond: bool[]", "x: float[3]"],
        ["y: float[3]"],
    )
    after = check_pass(g, CSE, [{"cond": np.array(True), "x": np.array([-1, 0, 2], np.float32)}])
    assert [n.op_type for n in after.nodes[0].attrs["then_branch"].value.nodes] == ["Relu", "Add"]


def test_constant_nodes_with_equal_values_merge():
    t = helper.make_tensor("v", 1, [2], [1.5, 2.5])
    g = build(
        [
            node("Constant", "", "c1", value=t),
            node("Constant", "", "c2", value=t),
            node("Mul", "x c1", "a"),
            node("Mul", "x c2", "b"),
            node("Sub", "a b", "y"),
        ],
        ["x: float[2]"],
        ["y: float[2]"],
    )
    after = check_pass(g, CSE, feeds(g))
    assert ops(after) == ["Constant", "Mul", "Sub"]
