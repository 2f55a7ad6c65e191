"""ONNX → IR: read a model file (or ModelProto) and build a Graph.

Handles every IR version from 3 on, external-data files, models over 2 GB (their weights
live in external files), model-local functions (inlined with onnx's inliner), sparse
initializers (densified) and nested graphs with outer-scope reads. A model file is
untrusted: failures become ModelLoadError/GraphError with one line saying what to do.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from google.protobuf.message import DecodeError

from torsh_gen.errors import GraphError, ModelLoadError
from torsh_gen.ir.graph import Graph, ModelInfo, Node, Value
from torsh_gen.ir.proto import array_from_tensor, attribute_from_proto, type_from_proto
from torsh_gen.ir.types import tensor_type_of

#: Protobuf cannot parse a single message above 2 GiB; larger models must use external data.
_PROTOBUF_LIMIT = 2**31 - 1


def load_onnx(source: str | os.PathLike | bytes | onnx.ModelProto, *, load_external_data: bool = True) -> Graph:
    """Load an ONNX model from a path, bytes or a ModelProto into a Graph."""
    if isinstance(source, onnx.ModelProto):
        return graph_from_model(source)
    if isinstance(source, (bytes, bytearray)):
        return graph_from_model(_parse(bytes(source), "<bytes>"))
    path = Path(source)
    if not path.exists():
        raise ModelLoadError(f"{path}: no such file; check the path")
    if path.is_dir():
        raise ModelLoadError(f"{path}: is a folder, not an ONNX model file")
    size = path.stat().st_size
    if size == 0:
        raise ModelLoadError(f"{path}: file is empty; expected an ONNX model")
    if size > _PROTOBUF_LIMIT:
        raise ModelLoadError(
            f"{path}: {size} bytes is over protobuf's 2 GiB limit; save the model with external data "
            "(onnx.save_model(..., save_as_external_data=True))"
        )
    model = _parse(path.read_bytes(), str(path))
    if load_external_data:
        _check_external_files(model, path)
        try:
            onnx.external_data_helper.load_external_data_for_model(model, str(path.parent))
        except FileNotFoundError as e:
            raise ModelLoadError(
                f"{path}: external data file {Path(e.filename or '?').name!r} not found; "
                "keep the model's data files beside it"
            ) from None
        except Exception as e:  # bad offsets, escapes outside the folder, ...
            raise ModelLoadError(f"{path}: cannot load external data: {e}") from None
    return graph_from_model(model, source_name=str(path))


def _check_external_files(model: onnx.ModelProto, path: Path) -> None:
    """Name the first missing external data file before onnx reports it obscurely."""
    from onnx.external_data_helper import ExternalDataInfo, _get_all_tensors, uses_external_data

    for t in _get_all_tensors(model):
        if uses_external_data(t):
            location = ExternalDataInfo(t).location
            if not (path.parent / location).is_file():
                raise ModelLoadError(
                    f"{path}: external data file {location!r} (tensor '{t.name}') not found; "
                    "keep the model's data files beside it"
                )


def _parse(data: bytes, name: str) -> onnx.ModelProto:
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as e:
        raise ModelLoadError(f"{name}: not a valid ONNX model (protobuf parse failed: {e}); is the file truncated?") from None
    if model.ir_version <= 0 or not model.HasField("graph"):
        raise ModelLoadError(f"{name}: not an ONNX model (no IR version or graph); check the file")
    return model


def graph_from_model(model: onnx.ModelProto, source_name: str = "<model>") -> Graph:
    """Convert a parsed ModelProto (external data already loaded) into a Graph."""
    if model.ir_version < 3:
        raise ModelLoadError(f"{source_name}: ONNX IR version {model.ir_version} is too old; re-export with IR version 3 or later")
    if model.functions:
        try:
            model = onnx.inliner.inline_local_functions(model)
        except Exception as e:
            raise ModelLoadError(f"{source_name}: cannot inline the model's local functions: {e}") from None
    opsets = {("" if o.domain == "ai.onnx" else o.domain): int(o.version) for o in model.opset_import}
    if not opsets:
        opsets = {"": 1}
    info = ModelInfo(
        ir_version=int(model.ir_version),
        opset_imports=opsets,
        producer_name=model.producer_name,
        producer_version=model.producer_version,
        domain=model.domain,
        model_version=int(model.model_version),
        doc=model.doc_string,
        metadata_props={p.key: p.value for p in model.metadata_props},
    )
    graph = _GraphBuilder(None, source_name).build(model.graph)
    graph.info = info
    return graph


class _GraphBuilder:
    """Builds one Graph, resolving names first locally, then in enclosing builders."""

    def __init__(self, parent: _GraphBuilder | None, source: str) -> None:
        self.parent = parent
        self.source = source
        self.scope: dict[str, Value] = {}

    def resolve(self, name: str) -> Value | None:
        b: _GraphBuilder | None = self
        while b is not None:
            if name in b.scope:
                return b.scope[name]
            b = b.parent
        return None

    def define(self, v: Value, what: str) -> None:
        if v.name in self.scope:
            raise GraphError(f"{self.source}: value '{v.name}' is defined twice ({what}); ONNX graphs are single-assignment")
        self.scope[v.name] = v

    def build(self, gp: onnx.GraphProto) -> Graph:
        types = {vi.name: type_from_proto(vi.type) for vi in gp.value_info}
        docs = {vi.name: vi.doc_string for vi in gp.value_info}
        inits: list[Value] = []
        init_by_name: dict[str, Value] = {}
        for t in gp.initializer:
            arr = _tensor_array(t, self.source)
            v = Value(t.name, None, const=arr)
            v.type = tensor_type_of(arr)
            inits.append(v)
            init_by_name[t.name] = v
        for st in gp.sparse_initializer:
            arr = _sparse_to_dense(st, self.source)
            v = Value(st.values.name, tensor_type_of(arr), const=arr)
            inits.append(v)
            init_by_name[v.name] = v
        inputs: list[Value] = []
        for vi in gp.input:
            if vi.name in init_by_name:  # an input with a default value (old IR versions list all)
                v = init_by_name[vi.name]
                declared = type_from_proto(vi.type)
                if declared is not None and v.type is None:
                    v.type = declared
            else:
                v = Value(vi.name, type_from_proto(vi.type), doc=vi.doc_string)
            inputs.append(v)
            self.define(v, "graph input")
        for v in inits:
            if v.name not in self.scope:
                self.define(v, "initializer")
        nodes = [self._node(n, types, docs) for n in gp.node]
        outputs: list[Value] = []
        for vi in gp.output:
            v = self.resolve(vi.name)
            if v is None:
                raise GraphError(f"{self.source}: graph output '{vi.name}' is not produced by any node, input or initializer")
            t = type_from_proto(vi.type)
            if t is not None and (v.type is None or v.const is None):
                v.type = t if v.type is None or _more_specific(t, v.type) else v.type
            if vi.doc_string and not v.doc:
                v.doc = vi.doc_string
            outputs.append(v)
        g = Graph(gp.name or "main", nodes, inputs, outputs, inits, doc=gp.doc_string)
        return g

    def _node(self, n: onnx.NodeProto, types: dict[str, Any], docs: dict[str, str]) -> Node:
        inputs: list[Value | None] = []
        for name in n.input:
            if not name:
                inputs.append(None)
                continue
            v = self.resolve(name)
            if v is None:
                label = n.name or n.op_type
                raise GraphError(
                    f"{self.source}: node '{label}' reads '{name}', which no earlier node, input or "
                    "initializer defines (undefined value, or nodes out of order in a cycle)"
                )
            inputs.append(v)
        attrs = {}
        for a in n.attribute:
            attrs[a.name] = attribute_from_proto(a, graph_loader=self._subgraph)
        outputs = []
        for name in n.output:
            v = Value(name, types.get(name), doc=docs.get(name, ""))
            if name:
                self.define(v, f"output of node '{n.name or n.op_type}'")
            outputs.append(v)
        domain = "" if n.domain == "ai.onnx" else n.domain
        meta = {p.key: p.value for p in n.metadata_props}
        return Node(n.op_type, inputs, outputs, attrs, domain, n.name, n.doc_string, meta, n.overload)

    def _subgraph(self, gp: onnx.GraphProto) -> Graph:
        return _GraphBuilder(self, self.source).build(gp)


def _more_specific(a: Any, b: Any) -> bool:
    """True when type ``a`` says more about the shape than ``b``."""
    sa, sb = getattr(a, "shape", None), getattr(b, "shape", None)
    if sa is None:
        return False
    if sb is None:
        return True
    return sum(isinstance(d, int) for d in sa) > sum(isinstance(d, int) for d in sb)


def _tensor_array(t: onnx.TensorProto, source: str) -> np.ndarray:
    try:
        return array_from_tensor(t)
    except Exception as e:
        raise ModelLoadError(f"{source}: initializer '{t.name}' is corrupted ({e}); re-export the model") from None


def _sparse_to_dense(st: onnx.SparseTensorProto, source: str) -> np.ndarray:
    values = _tensor_array(st.values, source)
    indices = _tensor_array(st.indices, source).astype(np.int64)
    dense = np.zeros(tuple(st.dims), dtype=values.dtype)
    if indices.ndim == 1:
        dense.reshape(-1)[indices] = values
    else:
        dense[tuple(indices.T)] = values
    return dense
