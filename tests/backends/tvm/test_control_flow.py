"""Run-time control flow in the TVM backend against onnxruntime: If whose branches give
different shapes, Loop with a run-time trip count, a condition-terminated Loop whose
carried value grows, a loop long enough to need the nested recursion levels, an If inside a
Loop body, Scan of a symbolic length, and what stays as it was (compile-time loops
unrolled, main one dataflow block)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from tests.backends.native.helpers import ort_run
from tests.backends.tvm.helpers import tvm_session

pytest.importorskip("tvm")

F, I64, B = TensorProto.FLOAT, TensorProto.INT64, TensorProto.BOOL


def _compare(model: onnx.ModelProto, feeds_list: list[dict[str, np.ndarray]]) -> None:
    """Build ``model`` once and check every feed's outputs against onnxruntime."""
    session = tvm_session(model)
    for feeds in feeds_list:
        got = list(session.run(feeds).values())
        want = ort_run(model, feeds)
        assert len(got) == len(want)
        for k, (g, w) in enumerate(zip(got, want)):
            assert g.shape == w.shape, f"output {k}: shape {g.shape} != {w.shape} for {feeds}"
            assert g.dtype == w.dtype, f"output {k}"
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5, err_msg=f"output {k}")


def _model(nodes: list, inputs: list, outputs: list, inits: list | None = None) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "cf", inputs, outputs, inits or [])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _if_model() -> onnx.ModelProto:
    """Y = Relu(If(C, X[0:2] + 1, X * W)) with W a 4x3 weight: branch shapes [2, 3] and
    [4, 3], so the passes cannot select with Where; Relu runs on the If's symbolic shape."""
    one = helper.make_tensor("one", F, [], [1.0])
    then_g = helper.make_graph(
        [
            helper.make_node("Slice", ["X", "s0", "s1"], ["ts"]),
            helper.make_node("Add", ["ts", "one"], ["t"]),
        ],
        "then",
        [],
        [helper.make_tensor_value_info("t", F, [2, 3])],
        [one, helper.make_tensor("s0", I64, [1], [0]), helper.make_tensor("s1", I64, [1], [2])],
    )
    else_g = helper.make_graph(
        [helper.make_node("Mul", ["X", "W"], ["e"])],
        "else",
        [],
        [helper.make_tensor_value_info("e", F, [4, 3])],
    )
    w = helper.make_tensor("W", F, [4, 3], np.linspace(-1, 1, 12).astype(np.float32))
    return _model(
        [
            helper.make_node("If", ["C"], ["Z"], then_branch=then_g, else_branch=else_g),
            helper.make_node("Relu", ["Z"], ["Y"]),
        ],
        [helper.make_tensor_value_info("C", B, []), helper.make_tensor_value_info("X", F, [4, 3])],
        [helper.make_tensor_value_info("Y", F, None)],
        [w],
    )


def test_if_runtime_condition_with_different_branch_shapes() -> None:
    """Each branch runs when taken, with its own output shape."""
    x = np.arange(12, dtype=np.float32).reshape(4, 3) - 5
    _compare(_if_model(), [{"C": np.array(True), "X": x}, {"C": np.array(False), "X": x}])


def _counting_loop(trip: str, cond: str, limit: float = 1e6, gain: float = 1.0) -> onnx.ModelProto:
    """Loop(M, cond, s) with body s' = s @ W + i (W an 8x8 weight read from the outer graph,
    so it is captured; ``gain`` on its diagonal) and scan output s' * 2; the body's
    condition is sum(s') < ``limit`` (it ends the loop even without a condition input, in
    onnxruntime as in our kernel)."""
    body = helper.make_graph(
        [
            helper.make_node("Cast", ["i"], ["fi"], to=F),
            helper.make_node("MatMul", ["s_in", "W"], ["sw"]),
            helper.make_node("Add", ["sw", "fi"], ["s_out"]),
            helper.make_node("Mul", ["s_out", "two"], ["y"]),
            helper.make_node("ReduceSum", ["s_out"], ["total"], keepdims=0),
            helper.make_node("Less", ["total", "limit"], ["c_out"]),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", I64, []),
            helper.make_tensor_value_info("c_in", B, []),
            helper.make_tensor_value_info("s_in", F, [1, 8]),
        ],
        [
            helper.make_tensor_value_info("c_out", B, []),
            helper.make_tensor_value_info("s_out", F, [1, 8]),
            helper.make_tensor_value_info("y", F, [1, 8]),
        ],
        [helper.make_tensor("two", F, [], [2.0]), helper.make_tensor("limit", F, [], [limit])],
    )
    rng = np.random.default_rng(0)
    w = helper.make_tensor(
        "W",
        F,
        [8, 8],
        (rng.standard_normal(64) * 0.3 * gain + gain * np.eye(8).ravel()).astype(np.float32),
    )
    inputs = [helper.make_tensor_value_info("S", F, [1, 8])]
    if trip:
        inputs.append(helper.make_tensor_value_info("M", I64, []))
    if cond:
        inputs.append(helper.make_tensor_value_info("C", B, []))
    node = helper.make_node("Loop", [trip, cond, "S"], ["S_final", "Ys"], body=body)
    return _model(
        [node],
        inputs,
        [
            helper.make_tensor_value_info("S_final", F, [1, 8]),
            helper.make_tensor_value_info("Ys", F, None),
        ],
        [w],
    )


def test_loop_runtime_trip_count() -> None:
    """M given at run time (0, 1, 7 and 100 iterations, the last one cut short by the
    body's condition): the final state and the stacked scan outputs, the weight the body
    reads captured from main."""
    model = _counting_loop("M", "")
    s = np.full((1, 8), 0.1, dtype=np.float32)
    _compare(model, [{"S": s, "M": np.array(m, dtype=np.int64)} for m in (0, 1, 7, 100)])


def test_loop_trip_count_and_condition() -> None:
    """Both bounds: the body's condition ends the loop before M (the sum passes 1e6) or M
    does; an initial false condition runs nothing."""
    model = _counting_loop("M", "C")
    s = np.full((1, 8), 0.5, dtype=np.float32)
    feeds = [
        {"S": s, "M": np.array(m, dtype=np.int64), "C": np.array(c)}
        for m, c in ((40, True), (3, True), (5, False))
    ]
    _compare(model, feeds)


def _growing_loop() -> onnx.ModelProto:
    """A loop with only a condition: v' = Concat(v, v[-1:] + 1) until v holds 'limit'
    elements; v's shape changes every iteration."""
    body = helper.make_graph(
        [
            helper.make_node("Slice", ["v_in", "m1", "big"], ["last"]),
            helper.make_node("Add", ["last", "one"], ["nxt"]),
            helper.make_node("Concat", ["v_in", "nxt"], ["v_out"], axis=0),
            helper.make_node("Size", ["v_out"], ["size"]),
            helper.make_node("Less", ["size", "N"], ["c_out"]),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", I64, []),
            helper.make_tensor_value_info("c_in", B, []),
            helper.make_tensor_value_info("v_in", F, ["k"]),
        ],
        [
            helper.make_tensor_value_info("c_out", B, []),
            helper.make_tensor_value_info("v_out", F, ["k2"]),
        ],
        [
            helper.make_tensor("m1", I64, [1], [-1]),
            helper.make_tensor("big", I64, [1], [np.iinfo(np.int64).max]),
            helper.make_tensor("one", F, [], [1.0]),
        ],
    )
    return _model(
        [helper.make_node("Loop", ["", "C", "V"], ["V_out"], body=body)],
        [
            helper.make_tensor_value_info("C", B, []),
            helper.make_tensor_value_info("V", F, [2]),
            helper.make_tensor_value_info("N", I64, []),
        ],
        [helper.make_tensor_value_info("V_out", F, None)],
    )


def test_loop_terminated_by_condition_with_growing_value() -> None:
    """No trip count: the body's condition alone ends it; the carried value grows."""
    v = np.array([3.0, 4.0], dtype=np.float32)
    feeds = [{"C": np.array(True), "V": v, "N": np.array(n, dtype=np.int64)} for n in (6, 2, 30)]
    _compare(_growing_loop(), feeds)


def test_loop_longer_than_one_recursion_level() -> None:
    """5000 iterations: one VM frame per iteration would overflow the native stack; the
    nested levels keep it at a few hundred."""
    model = _counting_loop("M", "", limit=np.inf, gain=0.5)
    feeds = {"S": np.zeros((1, 8), dtype=np.float32), "M": np.array(5000, dtype=np.int64)}
    got = tvm_session(model).run(feeds)
    want = ort_run(model, feeds)
    assert got["Ys"].shape == (5000, 1, 8)
    np.testing.assert_allclose(got["S_final"], want[0], rtol=1e-4)
    np.testing.assert_allclose(got["Ys"], want[1], rtol=1e-4)


def test_scan_output_of_runtime_shape_is_refused() -> None:
    """A scan output whose per-iteration shape is only known at run time: one line naming it."""
    from torsh_gen.errors import UnsupportedOpError

    with pytest.raises(
        UnsupportedOpError, match=r"\(Loop\): scan output 0 has a shape known only at run time"
    ) as err:
        tvm_session(_growing_scan())
    assert "\n" not in str(err.value)


def _growing_scan() -> onnx.ModelProto:
    """A loop whose scan output is the growing value itself."""
    model = _growing_loop()
    body = model.graph.node[0].attribute[0].g
    body.output.append(helper.make_tensor_value_info("v_out", F, ["k2"]))
    model.graph.output.append(helper.make_tensor_value_info("Vs", F, None))
    model.graph.node[0].output.append("Vs")
    return model


def test_if_nested_in_a_loop_body() -> None:
    """A run-time If inside a Loop body (odd iterations double s, even ones add W, a weight
    of main captured through both functions)."""
    then_g = helper.make_graph(
        [helper.make_node("Add", ["s_in", "W"], ["t"])],
        "then",
        [],
        [helper.make_tensor_value_info("t", F, [2, 3])],
    )
    else_g = helper.make_graph(
        [helper.make_node("Mul", ["s_in", "two"], ["e"])],
        "else",
        [],
        [helper.make_tensor_value_info("e", F, [2, 3])],
    )
    body = helper.make_graph(
        [
            helper.make_node("Mod", ["i", "two_i"], ["r"]),
            helper.make_node("Equal", ["r", "zero_i"], ["even"]),
            helper.make_node("If", ["even"], ["s_out"], then_branch=then_g, else_branch=else_g),
            helper.make_node("Identity", ["c_in"], ["c_out"]),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", I64, []),
            helper.make_tensor_value_info("c_in", B, []),
            helper.make_tensor_value_info("s_in", F, [2, 3]),
        ],
        [
            helper.make_tensor_value_info("c_out", B, []),
            helper.make_tensor_value_info("s_out", F, [2, 3]),
        ],
        [
            helper.make_tensor("two", F, [], [2.0]),
            helper.make_tensor("two_i", I64, [], [2]),
            helper.make_tensor("zero_i", I64, [], [0]),
        ],
    )
    model = _model(
        [helper.make_node("Loop", ["M", "", "S"], ["S_out"], body=body)],
        [
            helper.make_tensor_value_info("M", I64, []),
            helper.make_tensor_value_info("S", F, [2, 3]),
        ],
        [helper.make_tensor_value_info("S_out", F, [2, 3])],
        [helper.make_tensor("W", F, [2, 3], np.arange(6, dtype=np.float32) * 0.1)],
    )
    ones = np.ones((2, 3), np.float32)
    _compare(model, [{"M": np.array(k, np.int64), "S": ones} for k in (0, 1, 4, 9)])


def _scan_model() -> onnx.ModelProto:
    """Scan over X [T, 2] (T symbolic, so the passes cannot unroll it) and, in reverse, over
    Z [T, 3]: state s' = s + x_t * w (w [2] from the outer graph), scan outputs s' (stacked
    on axis 1) and z_t + 1 (reverse direction)."""
    body = helper.make_graph(
        [
            helper.make_node("Mul", ["x_t", "w"], ["xw"]),
            helper.make_node("Add", ["s_in", "xw"], ["s_out"]),
            helper.make_node("Add", ["z_t", "one"], ["z_out"]),
        ],
        "body",
        [
            helper.make_tensor_value_info("s_in", F, [2]),
            helper.make_tensor_value_info("x_t", F, [2]),
            helper.make_tensor_value_info("z_t", F, [3]),
        ],
        [
            helper.make_tensor_value_info("s_out", F, [2]),
            helper.make_tensor_value_info("s_scan", F, [2]),
            helper.make_tensor_value_info("z_out", F, [3]),
        ],
        [helper.make_tensor("one", F, [], [1.0])],
    )
    body.node.append(helper.make_node("Identity", ["s_out"], ["s_scan"]))
    node = helper.make_node(
        "Scan",
        ["S", "X", "Z"],
        ["S_final", "Ys", "Zs"],
        body=body,
        num_scan_inputs=2,
        scan_input_directions=[0, 1],
        scan_output_axes=[1, 0],
        scan_output_directions=[0, 1],
    )
    return _model(
        [node],
        [
            helper.make_tensor_value_info("S", F, [2]),
            helper.make_tensor_value_info("X", F, ["T", 2]),
            helper.make_tensor_value_info("Z", F, ["T", 3]),
        ],
        [
            helper.make_tensor_value_info("S_final", F, [2]),
            helper.make_tensor_value_info("Ys", F, None),
            helper.make_tensor_value_info("Zs", F, None),
        ],
        [helper.make_tensor("w", F, [2], [0.5, -2.0])],
    )


def test_scan_of_runtime_length() -> None:
    """A Scan whose length is a symbolic dim: states, output axes and directions."""
    rng = np.random.default_rng(2)
    feeds = [
        {
            "S": np.array([1.0, 2.0], dtype=np.float32),
            "X": rng.standard_normal((t, 2)).astype(np.float32),
            "Z": rng.standard_normal((t, 3)).astype(np.float32),
        }
        for t in (1, 6)
    ]
    _compare(_scan_model(), feeds)


def test_plain_graphs_and_compile_time_loops_keep_one_dataflow_main() -> None:
    """A loop with a constant trip count is still unrolled by the passes, and main stays a
    single dataflow block with no control-flow functions (no change for such models)."""
    from tvm import relax

    from torsh_gen.backends.tvm.convert import to_relax
    from torsh_gen.tools.compile import optimized_graph

    model = _counting_loop("M", "", limit=np.inf)
    model.graph.node[0].attribute[0].g.node[-1].CopyFrom(
        helper.make_node("Identity", ["c_in"], ["c_out"])
    )
    model.graph.input.pop(1)
    model.graph.initializer.append(helper.make_tensor("M", I64, [], [3]))
    mod = to_relax(optimized_graph(model.SerializeToString(), "cpu", "O3", backend="tvm")).mod
    relax_fns = [gv.name_hint for gv, f in mod.functions.items() if isinstance(f, relax.Function)]
    assert relax_fns == ["main"]
    blocks = mod["main"].body.blocks
    assert len(blocks) == 1 and isinstance(blocks[0], relax.DataflowBlock)


def test_long_constant_trip_count_runs_as_a_loop() -> None:
    """A constant trip count whose unrolled copies would exceed UNROLL_NODES is not
    unrolled (the pass would refuse beyond its node budget) but run as a loop."""
    from tvm import relax

    from torsh_gen.backends.tvm.convert import to_relax
    from torsh_gen.backends.tvm.ops_control import UNROLL_NODES
    from torsh_gen.tools.compile import optimized_graph

    model = _counting_loop("M", "", limit=np.inf, gain=0.5)
    model.graph.input.pop(1)
    model.graph.initializer.append(helper.make_tensor("M", I64, [], [UNROLL_NODES]))
    mod = to_relax(optimized_graph(model.SerializeToString(), "cpu", "O3", backend="tvm")).mod
    assert sum(isinstance(f, relax.Function) for f in mod.functions.values()) > 1
    _compare(model, [{"S": np.zeros((1, 8), dtype=np.float32)}])
