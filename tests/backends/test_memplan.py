"""The memory planner: reuse by liveness, in-place elementwise ops, views kept alive,
outputs never planned; and compiled artifacts that use the plan stay correct across runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from tests.backends.helpers import assert_matches_ort, compile_and_load
from torsh_gen.frontends.onnx import load_onnx
from torsh_gen.ops.inference import infer_types
from torsh_gen.passes import run_passes
from torsh_gen.passes.memplan import MemoryPlan, build_plan

F = TensorProto.FLOAT
OPSET = [helper.make_opsetid("", 17)]


def _graph(nodes: list, outputs: list[str], shape: list[int] = [1, 8, 4, 4], inits: list | None = None):  # noqa: B006
    g = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", F, shape)],
        [helper.make_tensor_value_info(o, F, None) for o in outputs], inits or [],
    )
    model = helper.make_model(g, opset_imports=OPSET)
    graph = load_onnx(model)
    infer_types(graph)
    return model, graph


def test_chain_of_elementwise_ops_runs_in_one_buffer() -> None:
    nodes = [
        helper.make_node("Relu", ["x"], ["a"]),
        helper.make_node("Sigmoid", ["a"], ["b"]),
        helper.make_node("Tanh", ["b"], ["c"]),
        helper.make_node("Exp", ["c"], ["d"]),
        helper.make_node("Neg", ["d"], ["y"]),
    ]
    _, graph = _graph(nodes, ["y"])
    plan = build_plan(graph)
    assert set(plan.assignment) == {"a", "b", "c", "d"}  # the output y is never planned
    assert len(plan.slots) == 1 and plan.planned_bytes == 4 * 128
    assert plan.inplace == {"b": "a", "c": "b", "d": "c"}
    assert plan.naive_bytes == 4 * 4 * 128


def test_buffers_are_reused_after_the_last_read() -> None:
    nodes = [
        helper.make_node("Relu", ["x"], ["a"]),
        helper.make_node("Sigmoid", ["x"], ["b"]),  # a is still live: new buffer
        helper.make_node("Add", ["a", "b"], ["c"]),  # in place into a
        helper.make_node("Softmax", ["c"], ["d"]),  # not elementwise: b's buffer is free again
        helper.make_node("Mul", ["d", "x"], ["y"]),
    ]
    _, graph = _graph(nodes, ["y"])
    plan = build_plan(graph)
    a, b, c, d = (plan.assignment[n] for n in "abcd")
    assert a != b and c == a and d == b
    assert plan.inplace == {"c": "a"} and len(plan.slots) == 2


def test_views_keep_their_buffer_alive() -> None:
    shape = numpy_helper.from_array(np.array([1, 128], np.int64), "shape")
    nodes = [
        helper.make_node("Relu", ["x"], ["a"]),
        helper.make_node("Reshape", ["a", "shape"], ["v"]),  # a view of a
        helper.make_node("Sigmoid", ["x"], ["b"]),  # must not take a's buffer: v is still read
        helper.make_node("Reshape", ["b", "shape"], ["bv"]),
        helper.make_node("Add", ["v", "bv"], ["y"]),
    ]
    _, graph = _graph(nodes, ["y"], inits=[shape])
    plan = build_plan(graph)
    assert plan.assignment["a"] != plan.assignment["b"]
    assert "v" not in plan.assignment and "y" not in plan.assignment


def test_values_viewed_by_an_output_are_not_planned() -> None:
    nodes = [
        helper.make_node("Relu", ["x"], ["a"]),
        helper.make_node("Transpose", ["a"], ["y"], perm=[0, 2, 3, 1]),
    ]
    _, graph = _graph(nodes, ["y"])
    assert build_plan(graph).assignment == {}


def test_pass_records_the_plan_and_reports_bytes() -> None:
    import torsh_gen.passes.memplan  # noqa: F401  (registers the pass)

    nodes = [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Exp", ["a"], ["y"])]
    _, graph = _graph(nodes, ["y"])
    (report,) = run_passes(graph, ["plan_memory"], check=True)
    assert isinstance(graph.meta["memory_plan"], MemoryPlan)
    assert report.notes == ["1 values in 1 buffers: 512 bytes planned vs 512 naive, 0 in place"]


def test_planned_artifact_is_correct_and_outputs_survive_the_next_run(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((8, 8, 3, 3)).astype(np.float32) * 0.2, "w")
    b = numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "b")
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w", "b"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c2", "x"], ["s"]),
        helper.make_node("Relu", ["s"], ["r2"]),
        helper.make_node("Conv", ["r2", "w"], ["c3"], pads=[1, 1, 1, 1]),
        helper.make_node("Sigmoid", ["c3"], ["g"]),
        helper.make_node("Mul", ["g", "r2"], ["y"]),
        helper.make_node("GlobalAveragePool", ["y"], ["pooled"]),
    ]
    model, _ = _graph(nodes, ["y", "pooled"], inits=[w, b])
    module = compile_and_load(model, tmp_path / "planned", level="O1")
    manifest = (tmp_path / "planned" / "manifest.json").read_text()
    assert '"planned_values": 0' not in manifest
    m = module.Model()
    x1 = rng.standard_normal((1, 8, 4, 4)).astype(np.float32)
    x2 = rng.standard_normal((1, 8, 4, 4)).astype(np.float32)
    first = m.run(x=x1)
    kept = {k: v.copy() for k, v in first.items()}
    assert_matches_ort(m, model, {"x": x2})
    for k, v in first.items():
        np.testing.assert_array_equal(v, kept[k])  # outputs never live in reused buffers
    assert_matches_ort(m, model, {"x": x1})


# --------------------------------------------------------------------------- concat blocks
def test_concat_inputs_become_blocks_of_its_arena() -> None:
    nodes = [
        helper.make_node("Relu", ["x"], ["a"]),
        helper.make_node("Tanh", ["x"], ["t"]),  # computed while a's block is live
        helper.make_node("Sigmoid", ["t"], ["b"]),
        helper.make_node("Concat", ["a", "b"], ["c"], axis=1),
        helper.make_node("Softmax", ["c"], ["d"]),
        helper.make_node("Exp", ["d"], ["y"]),
    ]
    _, graph = _graph(nodes, ["y"])
    plain = build_plan(graph)
    assert not plain.offsets and not plain.concats  # off unless asked for
    plan = build_plan(graph, concat_blocks=True)
    assert plan.concats == {"c"}
    assert plan.assignment["a"] == plan.assignment["b"] == plan.assignment["c"]
    assert plan.offsets == {"b": 4 * 128}  # a at byte 0, b right after it
    assert plan.slots[plan.assignment["c"]] >= 2 * 4 * 128
    # t is computed after a's block is written: it must not share the Concat's arena
    assert plan.assignment["t"] != plan.assignment["c"]
    assert "b" not in plan.inplace  # a block is never written into its input's arena


def test_nested_concats_share_one_arena() -> None:
    nodes = [
        helper.make_node("Relu", ["x"], ["a"]),
        helper.make_node("Sigmoid", ["x"], ["b"]),
        helper.make_node("Concat", ["a", "b"], ["c1"], axis=1),
        helper.make_node("Tanh", ["c1"], ["d"]),
        helper.make_node("Concat", ["c1", "d"], ["c2"], axis=1),
        helper.make_node("Softmax", ["c2"], ["y"]),
    ]
    _, graph = _graph(nodes, ["y"])
    plan = build_plan(graph, concat_blocks=True)
    assert plan.concats == {"c1", "c2"}
    slots = {plan.assignment[n] for n in ("a", "b", "c1", "d", "c2")}
    assert len(slots) == 1
    assert plan.offsets == {"b": 512, "d": 1024}  # c1 (a, b) first, then d


def test_concats_that_cannot_be_blocks_keep_their_copy() -> None:
    cases = {
        "a batch of two": ([helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Sigmoid", ["x"], ["b"]),
                            helper.make_node("Concat", ["a", "b"], ["c"], axis=1)], [2, 8, 4, 4]),
        "a graph input": ([helper.make_node("Relu", ["x"], ["a"]),
                           helper.make_node("Concat", ["a", "x"], ["c"], axis=1)], [1, 8, 4, 4]),
        "one value twice": ([helper.make_node("Relu", ["x"], ["a"]),
                             helper.make_node("Concat", ["a", "a"], ["c"], axis=1)], [1, 8, 4, 4]),
        "along rows": ([helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Sigmoid", ["x"], ["b"]),
                        helper.make_node("Concat", ["a", "b"], ["c"], axis=2)], [1, 8, 4, 4]),
        "a view": ([helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Identity", ["a"], ["v"]),
                    helper.make_node("Sigmoid", ["x"], ["b"]),
                    helper.make_node("Concat", ["v", "b"], ["c"], axis=1)], [1, 8, 4, 4]),
    }
    for why, (nodes, shape) in cases.items():
        nodes = nodes + [helper.make_node("Softmax", ["c"], ["y"])]
        _, graph = _graph(nodes, ["y"], shape=shape)
        plan = build_plan(graph, concat_blocks=True)
        assert not plan.concats and not plan.offsets, why
    pinned = [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Sigmoid", ["x"], ["b"]),
              helper.make_node("Concat", ["a", "b"], ["c"], axis=1)]
    softmax = [helper.make_node("Softmax", ["c"], ["y"])]
    for nodes, outputs in ((pinned, ["c"]), (pinned + softmax, ["a", "y"])):  # output or block leaves
        _, graph = _graph(nodes, outputs)
        plan = build_plan(graph, concat_blocks=True)
        assert not plan.concats and not plan.offsets, outputs


def test_cpu_artifact_writes_concat_blocks_in_place(tmp_path: Path) -> None:
    """The cpu package computes Concat inputs into their blocks (no np.concatenate); an
    input that a kernel returned as a new array (Hardmax runs its reference kernel) is
    copied into its block. Two runs with different inputs both match onnxruntime."""
    w = numpy_helper.from_array(np.random.default_rng(1).standard_normal((4, 8, 3, 3)).astype(np.float32), "w")
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["conv"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv"], ["a"]),
        helper.make_node("Hardmax", ["x"], ["h"], axis=1),
        helper.make_node("Sigmoid", ["x"], ["s"]),
        helper.make_node("Concat", ["a", "h", "s"], ["c"], axis=1),
        helper.make_node("Softmax", ["c"], ["y"], axis=1),
    ]
    model, _ = _graph(nodes, ["y"], inits=[w])
    module = compile_and_load(model, tmp_path / "blocks")
    code = (tmp_path / "blocks" / "model.py").read_text()
    assert "np.concatenate" not in code
    assert "np.copyto(self.b_h, h)" in code  # the reference kernel's result is copied in
    rng = np.random.default_rng(2)
    for _ in range(2):
        assert_matches_ort(module, model, {"x": rng.standard_normal((1, 8, 4, 4)).astype(np.float32)})
