"""IR → ONNX: build a ModelProto from a Graph and save it (external data above 2 GB).

The exporter writes value_info for every inferred intermediate type, keeps model
metadata, doc strings and node metadata, and writes weights larger than the protobuf
limit into an external data file beside the model.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import onnx

from torsh_gen.errors import GraphError
from torsh_gen.ir.graph import Graph, ModelInfo, Node
from torsh_gen.ir.proto import array_to_tensor, attribute_to_proto, type_to_proto

#: Above this many bytes of weights, ``save_onnx`` writes them to an external data file.
EXTERNAL_DATA_THRESHOLD = 1_800_000_000


def to_onnx(graph: Graph, *, value_info: bool = True) -> onnx.ModelProto:
    """The ModelProto of a top-level Graph."""
    info = graph.info or ModelInfo()
    gp = graph_to_proto(graph, value_info=value_info)
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


def graph_to_proto(graph: Graph, *, value_info: bool = True) -> onnx.GraphProto:
    """The GraphProto of a Graph (nested graphs included)."""
    gp = onnx.GraphProto()
    gp.name = graph.name
    if graph.doc:
        gp.doc_string = graph.doc
    for v in graph.initializers:
        gp.initializer.append(array_to_tensor(v.const, v.name))
    for v in graph.inputs:
        gp.input.append(_value_info(v))
    for v in graph.outputs:
        if not v.name:
            raise GraphError(f"graph '{graph.name}' has an unnamed output")
        gp.output.append(_value_info(v))
    for n in graph.nodes:
        gp.node.append(_node_to_proto(n, value_info))
    if value_info:
        io = {id(v) for v in graph.inputs} | {id(v) for v in graph.outputs}
        for n in graph.nodes:
            for v in n.outputs:
                if v.name and v.type is not None and id(v) not in io:
                    gp.value_info.append(_value_info(v))
    return gp


def _value_info(v) -> onnx.ValueInfoProto:  # noqa: ANN001
    vi = onnx.ValueInfoProto()
    vi.name = v.name
    if v.type is not None:
        vi.type.CopyFrom(type_to_proto(v.type))
    if v.doc:
        vi.doc_string = v.doc
    return vi


def _node_to_proto(n: Node, value_info: bool) -> onnx.NodeProto:
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
        p.attribute.append(attribute_to_proto(name, a, graph_saver=lambda g: graph_to_proto(g, value_info=value_info)))
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
    so a failure never leaves a half-written model.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = to_onnx(graph)
    if external_data is None:
        external_data = weight_bytes(graph) > EXTERNAL_DATA_THRESHOLD
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".torsh-gen-") as tmp:
        tmp_model = Path(tmp) / path.name
        data_name = path.name + ".data"
        if external_data:
            onnx.save_model(model, tmp_model, save_as_external_data=True, all_tensors_to_one_file=True, location=data_name, size_threshold=1024)
            os.replace(Path(tmp) / data_name, path.parent / data_name)
        else:
            onnx.save_model(model, tmp_model)
        os.replace(tmp_model, path)
    return path
