"""Shared helpers for the op tests: one-node models run on onnxruntime and on torsh-gen.

Inputs are given either as a list (graph inputs ``x0``, ``x1``, ... by position) or as a
dict (graph inputs named by its keys); a ``None`` entry is an omitted optional input (an
empty name on the node, no graph input, nothing fed). Node outputs are ``y0``, ``y1``, ...
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper

from tests.oracle import INTEGER_PRODUCT_OPS, ORT_INTEGER_EXACT, reference_outputs
from torsh_gen.backend import prepare

Inputs = Sequence[np.ndarray | None] | Mapping[str, np.ndarray | None]


def input_names(inputs: Inputs) -> list[str]:
    """The node's input names: dict keys or ``x<i>``, and ``""`` for each omitted input."""
    if isinstance(inputs, Mapping):
        return ["" if x is None else name for name, x in inputs.items()]
    return ["" if x is None else f"x{i}" for i, x in enumerate(inputs)]


def input_values(inputs: Inputs) -> list[np.ndarray | None]:
    """All input values in node order, ``None`` entries included."""
    return list(inputs.values()) if isinstance(inputs, Mapping) else list(inputs)


def present(inputs: Inputs) -> list[np.ndarray]:
    """The values actually fed, in graph-input order (the omitted ``None`` entries dropped)."""
    return [x for x in input_values(inputs) if x is not None]


def fed_by_name(inputs: Mapping[str, np.ndarray | None]) -> dict[str, np.ndarray]:
    """The non-None entries of a dict of inputs."""
    return {name: x for name, x in inputs.items() if x is not None}


def graph_model(
    nodes: list[onnx.NodeProto],
    inputs: Inputs,
    opsets: Mapping[str, int],
    *,
    ir_version: int | None = 8,
    infer_shapes: bool = False,
) -> onnx.ModelProto:
    """A model over ``nodes`` fed by the non-None ``inputs``, with the last node's outputs."""
    g_in = [
        helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(x.dtype), x.shape)
        for name, x in zip(input_names(inputs), input_values(inputs), strict=True)
        if x is not None
    ]
    g_out = [helper.make_empty_tensor_value_info(o) for o in nodes[-1].output]
    graph = helper.make_graph(nodes, "g", g_in, g_out)
    imports = [helper.make_opsetid(domain, version) for domain, version in opsets.items()]
    model = helper.make_model(graph, opset_imports=imports)
    if ir_version is not None:  # None keeps onnx.helper's default IR version
        model.ir_version = ir_version
    return onnx.shape_inference.infer_shapes(model) if infer_shapes else model


def one_node_model(
    op_type: str,
    inputs: Inputs,
    n_outputs: int = 1,
    opset: int = 18,
    *,
    domain: str = "",
    domain_opset: int = 1,
    ir_version: int | None = 8,
    infer_shapes: bool = False,
    **attrs: Any,
) -> onnx.ModelProto:
    """A one-node model of ``op_type`` (``domain`` imported at ``domain_opset`` if given)."""
    outputs = [f"y{i}" for i in range(n_outputs)]
    node = helper.make_node(op_type, input_names(inputs), outputs, domain=domain or None, **attrs)
    opsets = {"": opset} | ({domain: domain_opset} if domain else {})
    return graph_model([node], inputs, opsets, ir_version=ir_version, infer_shapes=infer_shapes)


def run_ours(model: onnx.ModelProto, inputs: Inputs) -> list[Any]:
    """torsh-gen's outputs: a dict is fed by name, a list by position (None entries dropped)."""
    if isinstance(inputs, Mapping):
        return list(prepare(model).run(fed_by_name(inputs)))
    return list(prepare(model).run(present(inputs)))


def run_onnxruntime(model: onnx.ModelProto, inputs: Inputs) -> list[Any]:
    """onnxruntime's (CPU) outputs, feeding a dict by name and a list in graph-input order
    (onnx's reference evaluator's for integer products where onnxruntime's are inexact)."""
    if isinstance(inputs, Mapping):
        feeds = fed_by_name(inputs)
    else:
        feeds = dict(zip((i.name for i in model.graph.input), present(inputs), strict=True))
    if not ORT_INTEGER_EXACT and any(n.op_type in INTEGER_PRODUCT_OPS for n in model.graph.node):
        return reference_outputs(model, feeds)  # onnxruntime's u8 x s8 kernels saturate here
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def run_one_node(
    op_type: str, inputs: Inputs, n_outputs: int = 1, opset: int = 18, **kwargs: Any
) -> list[Any]:
    """torsh-gen's outputs for ``one_node_model(op_type, inputs, ...)`` (no comparison)."""
    return run_ours(one_node_model(op_type, inputs, n_outputs, opset, **kwargs), inputs)


def assert_array_matches(
    got: Any, expected: np.ndarray, *, rtol: float, atol: float, in_float64: bool = False
) -> None:
    """Assert one output equals onnxruntime's: an ndarray of its shape, dtype and values."""
    assert isinstance(got, np.ndarray), type(got)
    assert got.shape == expected.shape, (got.shape, expected.shape)
    if expected.dtype == object or expected.dtype.kind in "US":  # strings: compare exactly
        assert got.dtype == object, got.dtype
        assert got.tolist() == expected.astype(object).tolist()
        return
    assert got.dtype == expected.dtype, (got.dtype, expected.dtype)
    if in_float64:  # compare in float64 (half-precision and integer outputs alike)
        got, expected = got.astype(np.float64), expected.astype(np.float64)
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=atol)


def assert_outputs_match(
    got: Sequence[Any],
    expected: Sequence[Any],
    *,
    rtol: float,
    atol: float,
    in_float64: bool = False,
) -> None:
    """Assert every output matches onnxruntime's (sequence outputs element by element)."""
    assert len(got) == len(expected), (len(got), len(expected))
    for e, g in zip(expected, got, strict=True):
        if isinstance(e, list):
            assert isinstance(g, list) and len(g) == len(e), (type(g), e)
            pairs = list(zip(e, g, strict=True))
        else:
            pairs = [(e, g)]
        for e_item, g_item in pairs:
            assert_array_matches(g_item, e_item, rtol=rtol, atol=atol, in_float64=in_float64)


def assert_matches_onnxruntime(
    model: onnx.ModelProto,
    inputs: Inputs,
    *,
    rtol: float = 1e-5,
    atol: float = 1e-6,
    in_float64: bool = False,
) -> list[Any]:
    """Run ``model`` on both runtimes, assert the outputs agree, and return ours."""
    expected = run_onnxruntime(model, inputs)
    got = run_ours(model, inputs)
    assert_outputs_match(got, expected, rtol=rtol, atol=atol, in_float64=in_float64)
    return got


def check_one_node(
    op_type: str,
    inputs: Inputs,
    n_outputs: int = 1,
    opset: int = 18,
    *,
    rtol: float = 1e-5,
    atol: float = 1e-6,
    in_float64: bool = False,
    **kwargs: Any,
) -> list[Any]:
    """Build ``one_node_model(op_type, inputs, ...)``, compare both runtimes, return ours."""
    model = one_node_model(op_type, inputs, n_outputs, opset, **kwargs)
    return assert_matches_onnxruntime(model, inputs, rtol=rtol, atol=atol, in_float64=in_float64)
