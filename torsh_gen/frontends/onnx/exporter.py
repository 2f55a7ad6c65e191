"""IR → ONNX: build a ModelProto from a Graph and save it (external data above 2 GB).

The exporter writes value_info for every inferred intermediate type, keeps model
metadata, doc strings and node metadata, and writes weights larger than the protobuf
limit into an external data file beside the model.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np
import onnx

from torsh_gen.errors import GraphError
from torsh_gen.ir.graph import Graph, ModelInfo, Node
from torsh_gen.ir.proto import array_to_tensor, attribute_to_proto, type_to_proto
from torsh_gen.ir.types import DType

#: Above this many bytes of weights, ``save_onnx`` writes them to an external data file.
EXTERNAL_DATA_THRESHOLD = 1_800_000_000


TensorWriter = Callable[[np.ndarray, str], onnx.TensorProto]


def to_onnx(graph: Graph, *, value_info: bool = True, tensor_writer: TensorWriter | None = None) -> onnx.ModelProto:
    """The ModelProto of a top-level Graph.

    ``tensor_writer`` (used by ``save_onnx`` for large models) turns big initializers into
    external-data references as it writes their bytes, so no >2 GB message is ever built.
    """
    info = graph.info or ModelInfo()
    gp = graph_to_proto(graph, value_info=value_info, tensor_writer=tensor_writer)
    opsets = [onnx.helper.make_opsetid(d, v) for d, v in sorted(info.opset_imports.items())]
    model = onnx.helper.make_model(gp, opset_imports=opsets)
    model.ir_version = max(info.ir_version, 3)
    model.producer_name = info.producer_name or "torsh-gen"
    model.producer_version = info.producer_version
    model.domain = info.domain
    model.model_version = info.model_version
    model.doc_string = info.doc
    for k, v in info.metadata_props.items():
        p = model.metadata_props.add()
        p.key, p.value = k, v
    return model


def graph_to_proto(graph: Graph, *, value_info: bool = True, tensor_writer: TensorWriter | None = None) -> onnx.GraphProto:
    """The GraphProto of a Graph (nested graphs included)."""
    gp = onnx.GraphProto()
    gp.name = graph.name
    if graph.doc:
        gp.doc_string = graph.doc
    for v in graph.initializers:
        if tensor_writer is not None and _streamable(v.const):
            gp.initializer.append(tensor_writer(v.const, v.name))
        else:
            gp.initializer.append(array_to_tensor(v.const, v.name))
    for v in graph.inputs:
        gp.input.append(_value_info(v))
    for v in graph.outputs:
        if not v.name:
            raise GraphError(f"graph '{graph.name}' has an unnamed output")
        gp.output.append(_value_info(v))
    for n in graph.nodes:
        gp.node.append(_node_to_proto(n, value_info, tensor_writer))
    if value_info:
        io = {id(v) for v in graph.inputs} | {id(v) for v in graph.outputs}
        for n in graph.nodes:
            for v in n.outputs:
                if v.name and v.type is not None and id(v) not in io:
                    gp.value_info.append(_value_info(v))
    return gp


def _streamable(arr: np.ndarray) -> bool:
    """Large tensors stored one element per byte or more (sub-byte types are packed: inline)."""
    if arr.dtype == object or arr.nbytes < 1024:
        return False
    return DType.from_numpy(arr.dtype).itemsize_bits >= 8


def _value_info(v) -> onnx.ValueInfoProto:  # noqa: ANN001
    vi = onnx.ValueInfoProto()
    vi.name = v.name
    if v.type is not None:
        vi.type.CopyFrom(type_to_proto(v.type))
    if v.doc:
        vi.doc_string = v.doc
    return vi


def _node_to_proto(n: Node, value_info: bool, tensor_writer: TensorWriter | None = None) -> onnx.NodeProto:
    p = onnx.NodeProto()
    p.op_type = n.op_type
    if n.domain:
        p.domain = n.domain
    if n.name:
        p.name = n.name
    if n.doc:
        p.doc_string = n.doc
    if n.overload:
        p.overload = n.overload
    p.input.extend("" if v is None else v.name for v in n.inputs)
    p.output.extend(v.name for v in n.outputs)
    for name, a in n.attrs.items():
        p.attribute.append(attribute_to_proto(name, a, graph_saver=lambda g: graph_to_proto(g, value_info=value_info, tensor_writer=tensor_writer)))
    for k, v in n.metadata.items():
        m = p.metadata_props.add()
        m.key, m.value = k, v
    return p


def weight_bytes(graph: Graph) -> int:
    """Total bytes of the graph's initializers (nested graphs included)."""
    total = sum(v.const.nbytes for v in graph.initializers)
    for _, n in graph.walk():
        for sg in n.subgraphs():
            total += sum(v.const.nbytes for v in sg.initializers)
    return total


def save_onnx(graph: Graph, path: str | os.PathLike, *, external_data: bool | None = None) -> Path:
    """Write ``graph`` as an ONNX file; large models get an external ``<name>.data`` file.

    The files are written in a temporary folder beside the target and renamed at the end,
    so a failure never leaves a half-written model. External tensors are streamed to the
    data file (64-byte aligned) while the proto is built, so models over 2 GB never pass
    through one protobuf message.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if external_data is None:
        external_data = weight_bytes(graph) > EXTERNAL_DATA_THRESHOLD
    data_name = path.name + ".data"
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".torsh-gen-") as tmp:
        tmp_model = Path(tmp) / path.name
        if external_data:
            with open(Path(tmp) / data_name, "wb") as data:
                model = to_onnx(graph, tensor_writer=_ExternalWriter(data, data_name))
            tmp_model.write_bytes(model.SerializeToString())
            os.replace(Path(tmp) / data_name, path.parent / data_name)
        else:
            onnx.save_model(to_onnx(graph), tmp_model)
        os.replace(tmp_model, path)
    return path


class _ExternalWriter:
    """Appends tensor bytes to an open data file and returns the referencing TensorProto."""

    def __init__(self, file: BinaryIO, location: str) -> None:
        self.file = file
        self.location = location
        self.offset = 0

    def __call__(self, arr: np.ndarray, name: str) -> onnx.TensorProto:
        pad = (-self.offset) % 64
        self.file.write(b"\0" * pad)
        self.offset += pad
        t = onnx.TensorProto()
        t.name = name
        t.data_type = int(DType.from_numpy(arr.dtype))
        t.dims.extend(arr.shape)
        start = self.offset
        data = np.ascontiguousarray(arr)
        if data.dtype.byteorder == ">":
            data = data.astype(data.dtype.newbyteorder("<"))
        self.file.write(memoryview(data.reshape(-1)).cast("B"))
        self.offset += data.nbytes
        t.data_location = onnx.TensorProto.EXTERNAL
        for key, value in (("location", self.location), ("offset", str(start)), ("length", str(data.nbytes))):
            entry = t.external_data.add()
            entry.key, entry.value = key, value
        return t
