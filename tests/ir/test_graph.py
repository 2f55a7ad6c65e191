"""Graph IR: types, toposort, verifier, printer."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

from torsh_gen.errors import GraphError
from torsh_gen.ir import Attribute, AttrKind, DType, Graph, Node, TensorType, Value
from torsh_gen.ir.printer import format_graph
from torsh_gen.ir.types import tensor_type_of
from torsh_gen.ir.verify import verify


def test_every_onnx_dtype_maps_to_numpy_and_back():
    for dt in DType:
        if dt in (DType.UNDEFINED, DType.STRING):
            continue
        try:
            npdt = dt.numpy
        except ValueError:
            continue  # types this ml_dtypes version lacks
        assert DType.from_numpy(npdt) == dt
    assert DType.BFLOAT16.numpy == np.dtype(ml_dtypes.bfloat16)
    assert DType.INT4.itemsize_bits == 4
    assert DType.FLOAT8E4M3FN.itemsize_bits == 8


def test_tensor_type_numel_with_symbols():
    t = TensorType(DType.FLOAT, ("batch", 3, None))
    assert t.numel() is None
    assert t.numel({"batch": 2}) is None
    assert TensorType(DType.FLOAT, ("batch", 3)).numel({"batch": 2}) == 6
    assert str(t) == "float[batch,3,?]"
    assert tensor_type_of(np.zeros((2, 3), np.int8)) == TensorType(DType.INT8, (2, 3))


def _chain() -> Graph:
    x = Value("x", TensorType(DType.FLOAT, (2,)))
    g = Graph("g", inputs=[x])
    a = g.add_node("Relu", [x], name="a").outputs[0]
    b = g.add_node("Neg", [a], name="b").outputs[0]
    g.outputs = [b]
    return g


def test_toposort_orders_out_of_order_nodes():
    g = _chain()
    g.nodes.reverse()
    with pytest.raises(GraphError, match="not defined before"):
        verify(g)
    g.toposort()
    assert [n.name for n in g.nodes] == ["a", "b"]
    verify(g)


def test_cycle_is_reported():
    x = Value("x", TensorType(DType.FLOAT, (2,)))
    g = Graph("g", inputs=[x])
    n1 = g.add_node("Add", [x, None], name="n1")
    n2 = g.add_node("Neg", [n1.outputs[0]], name="n2")
    n1.inputs[1] = n2.outputs[0]
    g.outputs = [n2.outputs[0]]
    with pytest.raises(GraphError, match="cycle"):
        g.toposort()


def test_verifier_rejects_double_definition_and_bad_initializer():
    g = _chain()
    g.nodes[1].outputs[0].name = "a"
    with pytest.raises(GraphError, match="named 'a'"):
        verify(g)
    g = _chain()
    w = g.add_initializer("w", np.zeros(3, np.float32))
    w.type = TensorType(DType.INT64, (3,))
    with pytest.raises(GraphError, match="holds FLOAT data"):
        verify(g)


def test_verifier_checks_subgraph_outer_scope():
    outer = _chain()
    inner_out = Value("inner_y")
    inner = Graph("body", nodes=[Node("Neg", [outer.nodes[0].outputs[0]], [inner_out])], outputs=[inner_out])
    cond = Value("c", TensorType(DType.BOOL, ()))
    outer.inputs.append(cond)
    node = Node("If", [cond], [Value("r")], {"then_branch": Attribute(AttrKind.GRAPH, inner), "else_branch": Attribute(AttrKind.GRAPH, inner)})
    outer.nodes.append(node)
    verify(outer)  # the subgraph may read %a from the enclosing graph
    bad = Graph("body", nodes=[Node("Neg", [Value("nowhere")], [Value("z")])], outputs=[])
    node.attrs["then_branch"] = Attribute(AttrKind.GRAPH, bad)
    with pytest.raises(GraphError, match="nowhere"):
        verify(outer)


def test_printer_quotes_hostile_names():
    g = _chain()
    g.nodes[0].name = "evil\n%y = Hack()"
    text = format_graph(g)
    assert "Hack()" in text and "\n%y = Hack" not in text
    assert "%x: float[2]" in text
