"""ONNX ops defined as functions expand into their bodies for the native targets, and the
result matches onnxruntime: losses (context-dependent bodies, attribute references,
nested expansion), Attention, and what is left alone."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest
from onnx import TensorProto as TP
from onnx import helper, numpy_helper

from tests.backends.native.helpers import make_model, ort_run, rand
from torsh_gen.errors import UnsupportedOpError
from torsh_gen.frontends.onnx import load_onnx
from torsh_gen.frontends.onnx.functions import expand_functions

needs_gcc = pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is not installed (apt install gcc)")
LOSSES = {"SoftmaxCrossEntropyLoss", "NegativeLogLikelihoodLoss"}


def _sce_model(reduction: str = "mean", ignore_index: int | None = 1, weight: bool = True) -> onnx.ModelProto:
    """SoftmaxCrossEntropyLoss over (N, C, D) scores with both outputs."""
    attrs = {"reduction": reduction} | ({"ignore_index": ignore_index} if ignore_index is not None else {})
    inits = [numpy_helper.from_array(np.linspace(0.5, 1.5, 5, dtype=np.float32), "w")] if weight else []
    node = helper.make_node("SoftmaxCrossEntropyLoss", ["x", "t"] + (["w"] if weight else []), ["loss", "logp"], **attrs)
    return make_model(
        [node],
        [helper.make_tensor_value_info("x", TP.FLOAT, (3, 5, 4)), helper.make_tensor_value_info("t", TP.INT64, (3, 4))],
        [helper.make_tensor_value_info("loss", TP.FLOAT, None), helper.make_tensor_value_info("logp", TP.FLOAT, (3, 5, 4))],
        inits,
        opset=17,
    )


def _feeds() -> dict[str, np.ndarray]:
    return {"x": rand(3, 5, 4, seed=1), "t": np.random.default_rng(2).integers(0, 5, (3, 4)).astype(np.int64)}


def _run_native(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Expand what the native targets lack, lower, JIT-run."""
    import torsh_gen.passes.memplan  # noqa: F401  (registers plan_memory)
    from torsh_gen.backends.kernel.lower import Schedule
    from torsh_gen.backends.kernel.program import build_program, lowerable
    from torsh_gen.backends.llvm.jit import JitProgram
    from torsh_gen.ops.inference import infer_types
    from torsh_gen.passes import pipeline, run_passes

    graph = load_onnx(model.SerializeToString())
    expand_functions(graph, lambda n: not lowerable(n))
    run_passes(graph, pipeline("O3") + ["plan_memory"])
    infer_types(graph)
    return JitProgram(build_program(graph, Schedule(lanes=8, threads=False))).run(feeds)


@pytest.mark.parametrize(
    "reduction, ignore_index, weight",
    [("mean", 1, True), ("sum", None, False), ("none", 2, True), ("mean", None, True)],
)
def test_softmax_cross_entropy_expands_and_matches_onnxruntime(reduction, ignore_index, weight) -> None:
    """SoftmaxCrossEntropyLoss → LogSoftmax + NegativeLogLikelihoodLoss → Gather/Where/
    reductions: two rounds, attribute references resolved (or left to their defaults when
    the node does not set them), both outputs equal onnxruntime's."""
    model = _sce_model(reduction, ignore_index, weight)
    graph = load_onnx(model.SerializeToString())
    assert expand_functions(graph, lambda n: n.op_type in LOSSES) == ["SoftmaxCrossEntropyLoss", "NegativeLogLikelihoodLoss"]
    assert not LOSSES & {n.op_type for n in graph.nodes}
    assert [v.name for v in graph.outputs] == ["loss", "logp"]
    feeds = _feeds()
    got = _run_native(model, feeds)
    for name, want in zip(["loss", "logp"], ort_run(model, feeds)):
        np.testing.assert_allclose(got[name], want, rtol=1e-5, atol=1e-5, err_msg=name)


def test_only_wanted_nodes_with_bodies_expand() -> None:
    """A node the predicate keeps stays; an op without a function body (GridSample) stays
    whatever the predicate says; a model without an opset is left alone."""
    graph = load_onnx(_sce_model().SerializeToString())
    assert expand_functions(graph, lambda n: False) == []
    assert [n.op_type for n in graph.nodes] == ["SoftmaxCrossEntropyLoss"]
    grid = make_model(
        [helper.make_node("GridSample", ["x", "g"], ["y"])],
        [helper.make_tensor_value_info("x", TP.FLOAT, (1, 1, 4, 4)), helper.make_tensor_value_info("g", TP.FLOAT, (1, 2, 2, 2))],
        [helper.make_tensor_value_info("y", TP.FLOAT, (1, 1, 2, 2))],
        opset=17,
    )
    graph = load_onnx(grid.SerializeToString())
    assert expand_functions(graph, lambda n: True) == [] and graph.nodes[0].op_type == "GridSample"


def test_body_names_never_collide_with_the_model_names() -> None:
    """Intermediate values take the node's name as a prefix; a model value already called
    that keeps its name and the body's gets a suffix (ir.rewrite.NameGen)."""
    model = _sce_model()
    model.graph.node[0].name = "sce"
    clash = helper.make_node("Identity", ["x"], ["sce/X_Log"])
    model.graph.node.insert(0, clash)
    model.graph.output.append(helper.make_tensor_value_info("sce/X_Log", TP.FLOAT, (3, 5, 4)))
    graph = load_onnx(model.SerializeToString())
    expand_functions(graph, lambda n: n.op_type in LOSSES)
    names = [v.name for v in graph.values()]
    assert len(names) == len(set(names)) and "sce/X_Log" in names and "sce/X_Log_1" in names
    feeds = _feeds()
    got = _run_native(model, feeds)
    for name, want in zip(["loss", "logp", "sce/X_Log"], ort_run(model, feeds)):
        np.testing.assert_allclose(got[name], want, rtol=1e-5, atol=1e-5, err_msg=name)


@needs_gcc
def test_compile_expands_a_function_op_for_x86_64(tmp_path) -> None:
    """`compile --target x86_64-linux` expands SoftmaxCrossEntropyLoss (no native
    lowering) into its body, reports it as the first pass, and the library matches onnx's
    reference implementation of the op."""
    from onnx.reference import ReferenceEvaluator

    from tests.backends.native.helpers import import_package
    from torsh_gen.tools.compile import compile_model

    model, feeds = _sce_model(), _feeds()
    report = compile_model(model, tmp_path / "sce", target="x86_64-linux")
    assert report.passes[0] == "expand_functions"
    assert "SoftmaxCrossEntropyLoss" in report.pass_reports[0].notes[0]
    assert "expand_functions" in json.loads((tmp_path / "sce" / "manifest.json").read_text())["passes"]
    got = import_package(tmp_path / "sce").run(**feeds)
    for name, want in zip(("loss", "logp"), ReferenceEvaluator(model).run(None, feeds)):
        np.testing.assert_allclose(got[name], want, rtol=1e-5, atol=1e-5)


def test_an_op_without_a_body_is_still_named(tmp_path) -> None:
    """What cannot be expanded keeps failing with the one-line error naming the node."""
    from torsh_gen.tools.compile import compile_model

    model = make_model(
        [helper.make_node("ImageDecoder", ["b"], ["y"], name="dec")],
        [helper.make_tensor_value_info("b", TP.UINT8, (64,))],
        [helper.make_tensor_value_info("y", TP.UINT8, (4, 4, 3))],
        opset=20,
    )
    with pytest.raises(UnsupportedOpError, match="ImageDecoder \\(node 'dec'\\)"):
        compile_model(model, tmp_path / "img", target="x86_64-linux")


@pytest.mark.parametrize("axes", [None, [1]])
def test_a_left_out_attribute_takes_the_ops_default(axes) -> None:
    """MeanVarianceNormalization has a plain (not context-dependent) function body whose
    ReduceMean reads ``axes`` by reference. Left out, it is the op's default [0, 2, 3], not
    "every axis" (the ReduceMean's own default): the expanded graph matches onnxruntime."""
    attrs = {"axes": axes} if axes else {}
    model = make_model(
        [helper.make_node("MeanVarianceNormalization", ["x"], ["y"], **attrs)],
        [helper.make_tensor_value_info("x", TP.FLOAT, (2, 3, 4, 5))],
        [helper.make_tensor_value_info("y", TP.FLOAT, (2, 3, 4, 5))],
        opset=17,
    )
    graph = load_onnx(model.SerializeToString())
    assert expand_functions(graph, lambda n: n.op_type == "MeanVarianceNormalization") == ["MeanVarianceNormalization"]
    feeds = {"x": rand(2, 3, 4, 5, seed=4) * 3 + 1}
    got = _run_native(model, feeds)["y"]
    np.testing.assert_allclose(got, ort_run(model, feeds)[0], rtol=1e-4, atol=1e-4)


def test_nodes_with_subgraphs_stay_and_are_named(tmp_path) -> None:
    """SequenceMap has a context-dependent body, built around its own subgraph: it is not
    expanded, and the compile stops with the one-line error naming it (no crash)."""
    from torsh_gen.tools.compile import compile_model

    body = helper.make_graph(
        [helper.make_node("Add", ["a", "a"], ["b"])], "body",
        [helper.make_tensor_value_info("a", TP.FLOAT, (2,))], [helper.make_tensor_value_info("b", TP.FLOAT, (2,))],
    )
    seq = helper.make_tensor_sequence_value_info
    model = make_model(
        [helper.make_node("SequenceConstruct", ["x", "x"], ["s"]), helper.make_node("SequenceMap", ["s"], ["t"], body=body, name="map")],
        [helper.make_tensor_value_info("x", TP.FLOAT, (2,))], [seq("t", TP.FLOAT, (2,))], opset=17,
    )
    graph = load_onnx(model.SerializeToString())
    assert expand_functions(graph, lambda n: True) == []
    with pytest.raises(UnsupportedOpError, match="SequenceMap \\(node 'map'\\)"):
        compile_model(model, tmp_path / "seqmap", target="x86_64-linux")
