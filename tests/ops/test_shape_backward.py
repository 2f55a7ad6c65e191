"""Static shapes that only the graph's end knows reach the values before it: the declared
type of a graph output survives the removal of an identity Cast, and shape-preserving
unary ops hand their output's dims back to their input (native targets need them)."""

from __future__ import annotations

from onnx import TensorProto as TP
from onnx import helper

from torsh_gen.frontends.onnx import load_onnx
from torsh_gen.ir.types import TensorType
from torsh_gen.ops.inference import infer_types
from torsh_gen.passes import run_passes


def _reduce_l2_body(cast_at_end: bool):
    """ReduceSum with run-time axes (shape unknown forward), then Sqrt, then maybe Cast."""
    nodes = [helper.make_node("Mul", ["x", "x"], ["sq"]), helper.make_node("ReduceSum", ["sq", "axes"], ["s"], keepdims=1),
             helper.make_node("Sqrt", ["s"], ["r" if cast_at_end else "y"])]
    if cast_at_end:
        nodes.append(helper.make_node("Cast", ["r"], ["y"], to=TP.FLOAT))
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TP.FLOAT, (3, 2, 2)),
                                       helper.make_tensor_value_info("axes", TP.INT64, (1,))],
                          [helper.make_tensor_value_info("y", TP.FLOAT, (3, 1, 2))])
    return load_onnx(helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)]).SerializeToString())


def _shape_of(graph, name: str):
    for _, n in graph.walk():
        for v in n.outputs:
            if v.name == name:
                assert isinstance(v.type, TensorType)
                return v.type.shape
    raise KeyError(name)


def test_unary_ops_give_their_input_the_outputs_static_shape() -> None:
    graph = _reduce_l2_body(cast_at_end=False)
    infer_types(graph)
    assert _shape_of(graph, "s") == (3, 1, 2)


def test_removing_an_identity_cast_keeps_the_declared_output_shape() -> None:
    graph = _reduce_l2_body(cast_at_end=True)
    run_passes(graph, ["simplify"])
    assert [n.op_type for n in graph.nodes] == ["Mul", "ReduceSum", "Sqrt"]
    assert graph.outputs[0].name == "y" and graph.outputs[0].type.shape == (3, 1, 2)
    infer_types(graph)
    assert _shape_of(graph, "s") == (3, 1, 2)
