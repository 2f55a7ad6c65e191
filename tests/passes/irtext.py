"""Helpers for before/after pass tests: terse graph building, printing and comparing.

    g = build(
        [node("Transpose", "x", "t", perm=[1, 0]), node("Transpose", "t", "u", perm=[1, 0]),
         node("Relu", "u", "y")],
        ["x: float[batch,4]"],
        ["y: float[batch,4]"],
    )
    after = check_pass(g, ["simplify"], feeds(g, batch=3))
    assert ops(after) == ["Relu"]
    print(text(after))  # the printed IR, as ``torsh-gen inspect --ir`` shows it

Nodes come from ``onnx.helper`` (``node`` is a shorthand: space-separated names, ``_`` for
an omitted input); values are written ``"name: dtype[dims]"``; ``build`` imports the model
with ``load_onnx``, so tests exercise the real frontend.
``check_pass`` runs the passes on a copy with the verifier on, compares every output
before and after with the reference interpreter and returns the rewritten graph.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from torsh_gen.frontends.onnx import load_onnx, to_onnx
from torsh_gen.ir.graph import Graph
from torsh_gen.ir.printer import format_graph
from torsh_gen.ir.types import DType, TensorType
from torsh_gen.ir.verify import verify
from torsh_gen.ops.execute import run_graph
from torsh_gen.passes import run_passes

_DTYPES = {
    "float": TensorProto.FLOAT,
    "float16": TensorProto.FLOAT16,
    "double": TensorProto.DOUBLE,
    "int64": TensorProto.INT64,
    "int32": TensorProto.INT32,
    "int8": TensorProto.INT8,
    "uint8": TensorProto.UINT8,
    "bool": TensorProto.BOOL,
}
_SPEC = re.compile(r"^\s*([^:]+?)\s*:\s*(\w+)\s*(?:\[(.*)\])?\s*$")


def node(
    op_type: str, inputs: str, outputs: str, *, domain: str = "", name: str = "", **attrs: Any
) -> onnx.NodeProto:
    """An ONNX node; ``inputs``/``outputs`` are space-separated names, ``_`` an omitted one."""
    ins = ["" if s == "_" else s for s in inputs.split()]
    outs = ["" if s == "_" else s for s in outputs.split()]
    return helper.make_node(op_type, ins, outs, name=name or None, domain=domain or None, **attrs)


def value_info(spec: str) -> onnx.ValueInfoProto:
    """``"x: float[batch,3]"`` → a tensor ValueInfoProto (``float`` alone: unknown rank)."""
    m = _SPEC.match(spec)
    if m is None:
        raise ValueError(f"bad value spec {spec!r}; write 'name: dtype[d0,d1,...]'")
    name, dtype, dims = m.groups()
    shape = None
    if dims is not None:
        shape = [
            int(d) if d.strip().lstrip("-").isdigit() else d.strip()
            for d in dims.split(",")
            if d.strip()
        ]
    return helper.make_tensor_value_info(name, _DTYPES[dtype], shape)


def model(
    nodes: Sequence[onnx.NodeProto],
    inputs: Iterable[str],
    outputs: Iterable[str],
    inits: Mapping[str, np.ndarray] | None = None,
    opset: int = 17,
    ir_version: int = 8,
) -> onnx.ModelProto:
    """A ModelProto from nodes, input/output specs and named initializer arrays."""
    tensors = [numpy_helper.from_array(np.asarray(a), k) for k, a in (inits or {}).items()]
    graph = helper.make_graph(
        list(nodes), "g", [value_info(s) for s in inputs], [value_info(s) for s in outputs], tensors
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = ir_version
    return m


def build(
    nodes: Sequence[onnx.NodeProto],
    inputs: Iterable[str],
    outputs: Iterable[str],
    inits: Mapping[str, np.ndarray] | None = None,
    opset: int = 17,
) -> Graph:
    """The IR Graph of ``model(...)``."""
    return load_onnx(model(nodes, inputs, outputs, inits, opset))


def ops(graph: Graph) -> list[str]:
    """Op types of the top-level nodes, in order."""
    return [n.qualified_op for n in graph.nodes]


def text(graph: Graph) -> str:
    """The printed graph (``torsh-gen inspect --ir`` form)."""
    return format_graph(graph)


def feeds(graph: Graph, seed: int = 0, **dims: int) -> dict[str, np.ndarray]:
    """Random inputs for ``graph``; symbolic dims are bound from ``dims`` (default 2)."""
    rng = np.random.default_rng(seed)
    result = {}
    for v in graph.inputs:
        if v.const is not None:
            continue
        t = v.type
        assert isinstance(t, TensorType) and t.shape is not None, f"input {v.name} needs a shape"
        shape = tuple(d if isinstance(d, int) else dims.get(str(d), 2) for d in t.shape)
        dt = t.dtype.numpy
        if t.dtype == DType.BOOL:
            result[v.name] = rng.random(shape) > 0.5
        elif t.dtype.is_integer:
            result[v.name] = rng.integers(-5, 6, shape).astype(dt)
        else:
            result[v.name] = rng.standard_normal(shape).astype(dt)
    return result


def run_ref(graph: Graph, inputs: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """Outputs of the reference interpreter."""
    return [np.asarray(o) for o in run_graph(graph, inputs)]


def run_ort(graph: Graph, inputs: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """Outputs of onnxruntime on the exported graph."""
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(
        to_onnx(graph).SerializeToString(), opts, providers=["CPUExecutionProvider"]
    )
    return sess.run(None, dict(inputs))


def check_pass(
    graph: Graph,
    passes: Sequence[str],
    inputs: Mapping[str, np.ndarray] | Sequence[Mapping[str, np.ndarray]],
    rtol: float = 1e-6,
    atol: float = 1e-6,
) -> Graph:
    """Run ``passes`` on a copy of ``graph``; assert it verifies, keeps output names and
    computes the same outputs on every feed set. Returns the rewritten copy."""
    after = copy.deepcopy(graph)
    run_passes(after, passes, check=True)
    verify(after)
    assert [v.name for v in after.outputs] == [v.name for v in graph.outputs]
    for one in [inputs] if isinstance(inputs, Mapping) else inputs:
        for name, want, got in zip(
            [v.name for v in graph.outputs], run_ref(graph, one), run_ref(after, one)
        ):
            assert got.shape == want.shape, f"{name}: shape {got.shape} != {want.shape}"
            assert got.dtype == want.dtype, f"{name}: dtype {got.dtype} != {want.dtype}"
            np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, err_msg=name)
    return after
