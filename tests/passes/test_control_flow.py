"""Control flow unrolled for the native targets (passes/control_flow.py): Scan, Loop and If
become straight-line nodes, checked for structure and run through the native JIT and the
kernel-IR interpreter against onnxruntime (onnx.reference where onnxruntime lacks the op)."""

from __future__ import annotations

import shutil

import numpy as np
import onnx
import pytest
from onnx import TensorProto as TP
from onnx import helper, numpy_helper

from tests.backends.native.helpers import interpret_program, ort_run, rand
from torsh_gen.errors import UnsupportedOpError
from torsh_gen.frontends.onnx import load_onnx
from torsh_gen.ir.graph import Graph
from torsh_gen.ir.verify import verify
from torsh_gen.passes.control_flow import UnrollBudget, unroll_control_flow


def _model(nodes: list, inputs: list, outputs: list, inits: list | None = None, opset: int = 17) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, inits or [])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _t(name: str, shape, dtype=TP.FLOAT) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, dtype, shape)


def _const(name: str, value) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.asarray(value), name))


def _unrolled(model: onnx.ModelProto, **kw) -> tuple[Graph, object]:
    graph = load_onnx(model.SerializeToString())
    result = unroll_control_flow(graph, **kw)
    verify(graph)
    return graph, result


def _ops(graph: Graph) -> list[str]:
    return [n.op_type for _, n in graph.walk()]


def _check(model: onnx.ModelProto, feeds: dict[str, np.ndarray], want: list[np.ndarray] | None = None) -> Graph:
    """Expand and unroll as compile does for x86_64-linux, optimize (O3), lower, JIT-run
    and interpret; compare with onnxruntime (or ``want``)."""
    import torsh_gen.passes.memplan  # noqa: F401  (registers plan_memory)
    from torsh_gen.backends import llvm
    from torsh_gen.backends.kernel.lower import Schedule
    from torsh_gen.backends.kernel.program import build_program
    from torsh_gen.backends.llvm.jit import JitProgram
    from torsh_gen.ops.inference import infer_types
    from torsh_gen.passes import pipeline, run_passes
    from torsh_gen.tools.compile import _expand_functions

    graph = load_onnx(model.SerializeToString())
    _expand_functions(graph, llvm, check=True)
    assert not set(_ops(graph)) & {"Scan", "Loop", "If"}
    run_passes(graph, pipeline("O3") + ["plan_memory"], check=True)
    infer_types(graph)
    program = build_program(graph, Schedule(lanes=4, threads=False))
    want = want if want is not None else ort_run(model, feeds)
    got = JitProgram(program).run(feeds)
    interpreted = interpret_program(program, feeds)
    for spec, exp, out in zip(program.outputs, want, interpreted):
        np.testing.assert_allclose(got[spec.name], exp, rtol=1e-5, atol=1e-5, err_msg=f"JIT {spec.name}")
        np.testing.assert_allclose(out, exp, rtol=1e-5, atol=1e-5, err_msg=f"interpreted {spec.name}")
    return graph


# ====================================================================== Scan
def _scan_model(in_axes, in_dirs, out_axes, out_dirs, steps: int = 4) -> onnx.ModelProto:
    """A Scan with two scan inputs and two scan outputs; its body reads the outer weight W."""
    body = helper.make_graph(
        [
            helper.make_node("MatMul", ["a_t", "W"], ["aw"]),
            helper.make_node("Add", ["s_in", "aw"], ["s_out"]),
            helper.make_node("Mul", ["s_out", "b_t"], ["y_t"]),
            helper.make_node("Identity", ["s_out"], ["z_t"]),
        ],
        "body",
        [_t("s_in", [3]), _t("a_t", [3]), _t("b_t", [3])],
        [_t("s_out", [3]), _t("y_t", [3]), _t("z_t", [3])],
    )
    shape = {0: [steps, 3], 1: [3, steps], -1: [3, steps], -2: [steps, 3]}
    scan = helper.make_node(
        "Scan", ["s0", "a", "b"], ["s", "y", "z"], body=body, num_scan_inputs=2,
        scan_input_axes=in_axes, scan_input_directions=in_dirs,
        scan_output_axes=out_axes, scan_output_directions=out_dirs,
    )
    out_shape = {0: [steps, 3], 1: [3, steps], -1: [3, steps], -2: [steps, 3]}
    w = numpy_helper.from_array(rand(3, 3, seed=9), "W")
    return _model(
        [scan],
        [_t("s0", [3]), _t("a", shape[in_axes[0]]), _t("b", shape[in_axes[1]])],
        [_t("s", [3]), _t("y", out_shape[out_axes[0]]), _t("z", out_shape[out_axes[1]])],
        [w],
    )


@pytest.mark.parametrize(
    "in_axes, in_dirs, out_axes, out_dirs",
    [
        ([0, 0], [0, 0], [0, 0], [0, 0]),
        ([1, -1], [1, 0], [1, -1], [1, 0]),
        ([0, 1], [1, 1], [-2, 0], [1, 1]),
    ],
)
def test_scan_unrolls_with_axes_directions_and_outer_reads(in_axes, in_dirs, out_axes, out_dirs) -> None:
    model = _scan_model(in_axes, in_dirs, out_axes, out_dirs)
    graph, result = _unrolled(model)
    ops = _ops(graph)
    assert "Scan" not in ops and ops.count("MatMul") == 4 and ops.count("Gather") == 8
    assert ops.count("Concat") == 2 and result.unrolled == ["Scan (unnamed): 4 iterations"]
    assert [v.name for v in graph.outputs] == ["s", "y", "z"]
    shapes = {0: (4, 3), 1: (3, 4), -1: (3, 4)}
    feeds = {"s0": rand(3, seed=1), "a": rand(*shapes[in_axes[0]], seed=2), "b": rand(*shapes[in_axes[1]], seed=3)}
    _check(model, feeds)


def test_scan_of_opset_8_unrolls_per_batch_item() -> None:
    """Opset 8: batch axis 0, scan axis 1, directions for the inputs, full sequence_lens;
    the body's own initializer becomes one initializer of the graph."""
    body = helper.make_graph(
        [helper.make_node("Add", ["s_in", "x_t"], ["s_out"]), helper.make_node("Mul", ["s_out", "half"], ["y_t"])],
        "body", [_t("s_in", [2]), _t("x_t", [2])], [_t("s_out", [2]), _t("y_t", [2])],
        [numpy_helper.from_array(np.array([0.5, 2.0], np.float32), "half")],
    )
    lens = numpy_helper.from_array(np.array([3, 3], dtype=np.int64), "lens")
    scan = helper.make_node("Scan", ["lens", "s0", "x"], ["s", "y"], body=body, num_scan_inputs=1, directions=[1])
    model = _model([scan], [_t("s0", [2, 2]), _t("x", [2, 3, 2])], [_t("s", [2, 2]), _t("y", [2, 3, 2])], [lens], opset=8)
    graph, result = _unrolled(model)
    assert result.unrolled == ["Scan (unnamed): 2 x 3 iterations"] and _ops(graph).count("Add") == 6
    assert [v.name for v in graph.initializers].count("Scan/half") == 1
    _check(model, {"s0": rand(2, 2, seed=1), "x": rand(2, 3, 2, seed=2)})


def test_scan_with_a_dynamic_length_is_left_with_the_reason() -> None:
    body = helper.make_graph(
        [helper.make_node("Add", ["s_in", "x_t"], ["s_out"])], "body", [_t("s_in", [2]), _t("x_t", [2])], [_t("s_out", [2])]
    )
    scan = helper.make_node("Scan", ["s0", "x"], ["s"], body=body, num_scan_inputs=1, name="scan")
    graph, result = _unrolled(_model([scan], [_t("s0", [2]), _t("x", ["n", 2])], [_t("s", [2])]))
    assert _ops(graph) == ["Scan", "Add"] and not result.unrolled
    assert "'x' is not static" in next(iter(result.declined.values()))


# ====================================================================== nesting
def test_nested_loop_scan_and_if_unroll_with_fresh_names() -> None:
    """A Loop whose body holds a Scan (reading the Loop body's value ``scale`` from the outer
    scope) and an If on the iteration number, which is a constant once unrolled; every copy
    gets fresh names, the model's names survive."""
    inner = helper.make_graph(
        [helper.make_node("Mul", ["r_t", "scale"], ["rs"]), helper.make_node("Add", ["acc_in", "rs"], ["acc_out"])],
        "inner", [_t("acc_in", [2]), _t("r_t", [2])], [_t("acc_out", [2])],
    )
    then_b = helper.make_graph([helper.make_node("Add", ["acc", "c_in"], ["t_out"])], "then", [], [_t("t_out", [2])])
    else_b = helper.make_graph([helper.make_node("Sub", ["acc", "c_in"], ["e_out"])], "else", [], [_t("e_out", [2])])
    body = helper.make_graph(
        [
            helper.make_node("Cast", ["i"], ["fi"], to=TP.FLOAT),
            _const("one", np.float32(1)),
            helper.make_node("Add", ["fi", "one"], ["scale"]),
            helper.make_node("Gather", ["x", "i"], ["rows"], axis=0),
            helper.make_node("Scan", ["c_in", "rows"], ["acc"], body=inner, num_scan_inputs=1),
            _const("two", np.int64(2)),
            helper.make_node("Less", ["i", "two"], ["early"]),
            helper.make_node("If", ["early"], ["c_out"], then_branch=then_b, else_branch=else_b),
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            helper.make_node("Identity", ["c_out"], ["c_scan"]),
        ],
        "body", [_t("i", [], TP.INT64), _t("cond_in", [], TP.BOOL), _t("c_in", [2])],
        [_t("cond_out", [], TP.BOOL), _t("c_out", [2]), _t("c_scan", [2])],
    )
    inits = [numpy_helper.from_array(np.array(3, np.int64), "M"), numpy_helper.from_array(np.array(True), "go")]
    loop = helper.make_node("Loop", ["M", "go", "c0"], ["c", "cs"], body=body)
    model = _model([loop], [_t("c0", [2]), _t("x", [3, 4, 2])], [_t("c", [2]), _t("cs", [3, 2])], inits)
    graph, result = _unrolled(model)
    ops = _ops(graph)
    assert not set(ops) & {"Loop", "Scan", "If"}
    assert ops.count("Mul") == 12 and ops.count("Add") == 3 + 12 + 2 and ops.count("Sub") == 1
    names = [v.name for v in graph.values()]
    assert len(names) == len(set(names)) and {"c", "cs", "c0", "x"} <= set(names)
    _check(model, {"c0": rand(2, seed=1), "x": rand(3, 4, 2, seed=2)})


# ====================================================================== If
def _if_model(cond_init: bool | None, then_nodes=None, then_shape=(2, 3)) -> onnx.ModelProto:
    then_b = helper.make_graph(
        then_nodes or [helper.make_node("Mul", ["x", "x"], ["t_out"])], "then", [], [_t("t_out", list(then_shape))]
    )
    else_b = helper.make_graph([helper.make_node("Neg", ["x"], ["e_out"])], "else", [], [_t("e_out", [2, 3])])
    node = helper.make_node("If", ["c"], ["y"], then_branch=then_b, else_branch=else_b, name="if")
    inputs = [_t("x", [2, 3])]
    inits = []
    if cond_init is None:
        inputs.append(_t("c", [1], TP.BOOL))
    else:
        inits.append(numpy_helper.from_array(np.array([cond_init]), "c"))
    return _model([node], inputs, [_t("y", [2, 3])], inits)


@pytest.mark.parametrize("cond", [True, False])
def test_if_with_a_constant_condition_inlines_the_branch_taken(cond) -> None:
    model = _if_model(cond)
    graph, result = _unrolled(model)
    assert _ops(graph) == ["Mul" if cond else "Neg", "Identity"]
    assert result.unrolled == [f"If 'if': {'then' if cond else 'else'} branch taken"]
    _check(model, {"x": rand(2, 3, seed=1)})


@pytest.mark.parametrize("cond", [True, False])
def test_if_with_a_run_time_condition_selects_with_where(cond) -> None:
    model = _if_model(None)
    graph, _ = _unrolled(model)
    assert _ops(graph) == ["Mul", "Neg", "Squeeze", "Where"]
    _check(model, {"x": rand(2, 3, seed=1), "c": np.array([cond])})


def test_if_left_when_a_branch_is_random_or_the_types_differ() -> None:
    random = [helper.make_node("RandomUniform", [], ["r"], shape=[2, 3]), helper.make_node("Add", ["x", "r"], ["t_out"])]
    graph, result = _unrolled(_if_model(None, random))
    assert "If" in _ops(graph) and "RandomUniform, which must not run" in next(iter(result.declined.values()))
    reduce = [_const("ax", np.array([1], np.int64)), helper.make_node("ReduceSum", ["x", "ax"], ["t_out"])]
    graph, result = _unrolled(_if_model(None, reduce, then_shape=(2, 1)))
    assert "If" in _ops(graph) and "types float[2,1] and float[2,3]" in next(iter(result.declined.values()))
    graph, result = _unrolled(_if_model(True, random))  # a constant condition: just the branch
    assert _ops(graph) == ["RandomUniform", "Add", "Identity"]


# ====================================================================== Loop
def _loop_model(trip: int | None, cond_body: list, inits: list | None = None) -> onnx.ModelProto:
    """y = y + x[i] per iteration, stacked as a scan output; ``cond_body`` computes cond_out."""
    body = helper.make_graph(
        [
            helper.make_node("Gather", ["x", "i"], ["row"], axis=0),
            helper.make_node("Add", ["y_in", "row"], ["y_out"]),
            helper.make_node("Identity", ["y_out"], ["y_scan"]),
            *cond_body,
        ],
        "body", [_t("i", [], TP.INT64), _t("cond_in", [], TP.BOOL), _t("y_in", [3])],
        [_t("cond_out", [], TP.BOOL), _t("y_out", [3]), _t("y_scan", [3])],
    )
    inputs = [_t("y0", [3]), _t("x", [8, 3])]
    inits = list(inits or [])
    if trip is None:
        inputs.append(_t("M", [], TP.INT64))
    else:
        inits.append(numpy_helper.from_array(np.array(trip, np.int64), "M"))
    loop = helper.make_node("Loop", ["M", "go" if any(i.name == "go" for i in inits) else "", "y0"], ["y", "ys"], body=body, name="loop")
    return _model([loop], inputs, [_t("y", [3]), _t("ys", ["n", 3])], inits)


def test_loop_with_a_constant_trip_count_unrolls() -> None:
    go = numpy_helper.from_array(np.array(True), "go")
    model = _loop_model(5, [helper.make_node("Identity", ["cond_in"], ["cond_out"])], [go])
    graph, result = _unrolled(model)
    assert _ops(graph).count("Gather") == 5 and result.unrolled == ["Loop 'loop': 5 iterations"]
    _check(model, {"y0": rand(3, seed=1), "x": rand(8, 3, seed=2)})


def test_loop_stops_where_its_compile_time_condition_turns_false() -> None:
    """M is 8 but cond_out = i < 2 ends the loop after three iterations (as onnxruntime)."""
    cond = [_const("two", np.int64(2)), helper.make_node("Less", ["i", "two"], ["cond_out"])]
    model = _loop_model(8, cond, [numpy_helper.from_array(np.array(True), "go")])
    graph, result = _unrolled(model)
    assert result.unrolled == ["Loop 'loop': 3 iterations"]
    _check(model, {"y0": rand(3, seed=1), "x": rand(8, 3, seed=2)})


def test_loop_with_a_run_time_trip_count_is_reported_with_the_reason() -> None:
    from torsh_gen.backends import llvm
    from torsh_gen.tools.compile import _expand_functions

    model = _loop_model(None, [helper.make_node("Identity", ["cond_in"], ["cond_out"])])
    graph = load_onnx(model.SerializeToString())
    reports = _expand_functions(graph, llvm, check=True)
    assert [r.name for r in reports] == ["unroll_control_flow"] and not reports[0].changed
    assert reports[0].notes == ["left Loop 'loop': its trip count 'M' is only known at run time"]
    assert list(graph.meta["not_lowered"].values()) == ["its trip count 'M' is only known at run time"]


@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is not installed (apt install gcc)")
def test_compile_unrolls_for_x86_64_and_names_what_it_leaves(tmp_path) -> None:
    from torsh_gen.tools.compile import compile_model

    go = numpy_helper.from_array(np.array(True), "go")
    model = _loop_model(2, [helper.make_node("Identity", ["cond_in"], ["cond_out"])], [go])
    report = compile_model(model, tmp_path / "unrolled", target="x86_64-linux")
    unroll = [r for r in report.pass_reports if r.name == "unroll_control_flow"]
    assert len(unroll) == 1 and unroll[0].notes == ["unrolled Loop 'loop': 2 iterations"]
    assert "unroll_control_flow" in report.passes
    runtime = _loop_model(None, [helper.make_node("Identity", ["cond_in"], ["cond_out"])])
    with pytest.raises(UnsupportedOpError, match="no native lowering: Loop \\(node 'loop': its trip count 'M' is only known at run time\\)"):
        compile_model(runtime, tmp_path / "left", target="x86_64-linux")


def test_loop_whose_condition_is_computed_from_data_is_left() -> None:
    cond = [helper.make_node("ReduceSum", ["y_out"], ["total"], keepdims=0), _const("zero", np.float32(0)),
            helper.make_node("Greater", ["total", "zero"], ["cond_out"])]
    graph, result = _unrolled(_loop_model(4, cond))
    assert _ops(graph)[0] == "Loop" and not result.unrolled
    assert next(iter(result.declined.values())).startswith("its condition after iteration 1")


# ====================================================================== limits, functions
def test_unrolling_past_the_limit_says_to_use_the_cpu_target() -> None:
    body = helper.make_graph(
        [helper.make_node("Add", ["s_in", "x_t"], ["s_out"])], "body", [_t("s_in", [1]), _t("x_t", [1])], [_t("s_out", [1])]
    )
    scan = helper.make_node("Scan", ["s0", "x"], ["s"], body=body, num_scan_inputs=1, name="long")
    model = _model([scan], [_t("s0", [1]), _t("x", [5000, 1])], [_t("s", [1])])
    with pytest.raises(UnsupportedOpError, match=r"Scan 'long' \(5000 iterations.*more than 4096 nodes.*--target cpu"):
        _unrolled(model)
    short = _model([scan], [_t("s0", [1]), _t("x", [4, 1])], [_t("s", [1])])
    with pytest.raises(UnsupportedOpError, match="more than 3 nodes"):
        _unrolled(short, budget=UnrollBudget(limit=3))
    graph, _ = _unrolled(short, budget=UnrollBudget(limit=4))
    assert "Scan" not in _ops(graph)


def test_linear_attention_expands_into_a_scan_that_unrolls() -> None:
    """LinearAttention's function body is a Scan: compile's expansion alternates function
    expansion and unrolling until nothing is left for the native targets (checked against
    onnx.reference: onnxruntime has no kernel for opset 27)."""
    from onnx.reference import ReferenceEvaluator

    from torsh_gen.backends import llvm
    from torsh_gen.tools.compile import _expand_functions

    q, k, v = (_t(n, [1, 3, 8]) for n in ("q", "k", "v"))
    node = helper.make_node("LinearAttention", ["q", "k", "v"], ["out", "state"], q_num_heads=2, kv_num_heads=2, update_rule="linear")
    model = helper.make_model(
        helper.make_graph([node], "la", [q, k, v], [_t("out", [1, 3, 8]), _t("state", [1, 2, 4, 4])]),
        opset_imports=[helper.make_opsetid("", 27)],
    )
    graph = load_onnx(model.SerializeToString())
    reports = _expand_functions(graph, llvm, check=True)
    assert [r.name for r in reports] == ["expand_functions", "unroll_control_flow"]
    assert not set(_ops(graph)) & {"LinearAttention", "Scan"}
    feeds = {n: rand(1, 3, 8, seed=i) for i, n in enumerate("qkv")}
    _check(model, feeds, ReferenceEvaluator(model).run(None, feeds))
