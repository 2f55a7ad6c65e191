"""Leaf conversions between IR objects and ONNX protobuf messages.

Types, tensors and non-graph attributes convert here; whole graphs are the ONNX
frontend's job (``torsh_gen.frontends.onnx``). Kept in the IR layer because both the
frontend and ONNX-schema-based type inference in ``ops`` need them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from torsh_gen.ir.graph import Attribute, AttrKind
from torsh_gen.ir.types import (
    DType,
    MapType,
    OptionalType,
    SequenceType,
    TensorType,
    Type,
)


# --------------------------------------------------------------------------- types
def type_from_proto(tp: onnx.TypeProto) -> Type | None:
    """IR type of an ONNX TypeProto (None when the proto says nothing)."""
    which = tp.WhichOneof("value")
    if which in ("tensor_type", "sparse_tensor_type"):
        tt = getattr(tp, which)
        dtype = DType(tt.elem_type) if tt.elem_type in DType._value2member_map_ else DType.UNDEFINED
        if not tt.HasField("shape"):
            return TensorType(dtype, None)
        dims: list[int | str | None] = []
        for d in tt.shape.dim:
            if d.HasField("dim_value"):
                dims.append(int(d.dim_value))
            elif d.HasField("dim_param") and d.dim_param:
                dims.append(d.dim_param)
            else:
                dims.append(None)
        return TensorType(dtype, tuple(dims))
    if which == "sequence_type":
        return SequenceType(type_from_proto(tp.sequence_type.elem_type))
    if which == "optional_type":
        return OptionalType(type_from_proto(tp.optional_type.elem_type))
    if which == "map_type":
        return MapType(DType(tp.map_type.key_type), type_from_proto(tp.map_type.value_type))
    return None


def type_to_proto(t: Type | None) -> onnx.TypeProto:
    """ONNX TypeProto for an IR type (an empty proto for None)."""
    tp = onnx.TypeProto()
    if t is None:
        return tp
    if isinstance(t, TensorType):
        tp.tensor_type.elem_type = int(t.dtype)
        if t.shape is not None:
            shape = tp.tensor_type.shape
            shape.SetInParent()
            for d in t.shape:
                dim = shape.dim.add()
                if isinstance(d, int):
                    dim.dim_value = d
                elif isinstance(d, str):
                    dim.dim_param = d
    elif isinstance(t, SequenceType):
        tp.sequence_type.elem_type.CopyFrom(type_to_proto(t.elem))
    elif isinstance(t, OptionalType):
        tp.optional_type.elem_type.CopyFrom(type_to_proto(t.elem))
    elif isinstance(t, MapType):
        tp.map_type.key_type = int(t.key)
        tp.map_type.value_type.CopyFrom(type_to_proto(t.value))
    return tp


# --------------------------------------------------------------------------- tensors
def array_from_tensor(t: onnx.TensorProto) -> np.ndarray:
    """A numpy array from a TensorProto whose data is already loaded."""
    arr = numpy_helper.to_array(t)
    if t.data_type == onnx.TensorProto.STRING:
        arr = arr.astype(object)
    return arr


def array_to_tensor(arr: np.ndarray, name: str = "") -> onnx.TensorProto:
    """A TensorProto holding ``arr`` (ml_dtypes arrays keep their ONNX element type)."""
    arr = np.asarray(arr)
    if arr.dtype == object or arr.dtype.kind in "US":
        flat = [s if isinstance(s, bytes) else str(s).encode("utf-8") for s in arr.ravel()]
        t = onnx.helper.make_tensor(name, onnx.TensorProto.STRING, arr.shape, flat)
        return t
    return numpy_helper.from_array(arr, name)


# --------------------------------------------------------------------------- attributes
def attribute_from_proto(a: onnx.AttributeProto, graph_loader: Any = None) -> Attribute:
    """IR Attribute from an AttributeProto; ``graph_loader`` converts GRAPH values."""
    kind = AttrKind(a.type)
    value: Any
    if kind == AttrKind.FLOAT:
        value = float(a.f)
    elif kind == AttrKind.INT:
        value = int(a.i)
    elif kind == AttrKind.STRING:
        value = a.s.decode("utf-8", "surrogateescape")
    elif kind == AttrKind.TENSOR:
        value = array_from_tensor(a.t)
    elif kind == AttrKind.GRAPH:
        value = graph_loader(a.g) if graph_loader else a.g
    elif kind == AttrKind.FLOATS:
        value = [float(x) for x in a.floats]
    elif kind == AttrKind.INTS:
        value = [int(x) for x in a.ints]
    elif kind == AttrKind.STRINGS:
        value = [s.decode("utf-8", "surrogateescape") for s in a.strings]
    elif kind == AttrKind.TENSORS:
        value = [array_from_tensor(t) for t in a.tensors]
    elif kind == AttrKind.GRAPHS:
        value = [graph_loader(g) if graph_loader else g for g in a.graphs]
    elif kind == AttrKind.SPARSE_TENSOR:
        value = a.sparse_tensor
    elif kind == AttrKind.SPARSE_TENSORS:
        value = list(a.sparse_tensors)
    elif kind == AttrKind.TYPE_PROTO:
        value = type_from_proto(a.tp)
    elif kind == AttrKind.TYPE_PROTOS:
        value = [type_from_proto(t) for t in a.type_protos]
    else:
        value = None
    return Attribute(kind, value, ref=a.ref_attr_name, doc=a.doc_string)


def attribute_to_proto(name: str, a: Attribute, graph_saver: Any = None) -> onnx.AttributeProto:
    """AttributeProto for an IR Attribute; ``graph_saver`` converts GRAPH values."""
    p = onnx.AttributeProto()
    p.name = name
    p.type = int(a.kind)
    if a.ref:
        p.ref_attr_name = a.ref
    if a.doc:
        p.doc_string = a.doc
    k, v = a.kind, a.value
    if a.ref and v is None:
        return p
    if k == AttrKind.FLOAT:
        p.f = float(v)
    elif k == AttrKind.INT:
        p.i = int(v)
    elif k == AttrKind.STRING:
        p.s = v.encode("utf-8", "surrogateescape") if isinstance(v, str) else bytes(v)
    elif k == AttrKind.TENSOR:
        p.t.CopyFrom(array_to_tensor(v))
    elif k == AttrKind.GRAPH:
        p.g.CopyFrom(graph_saver(v) if graph_saver else v)
    elif k == AttrKind.FLOATS:
        p.floats.extend(float(x) for x in v)
    elif k == AttrKind.INTS:
        p.ints.extend(int(x) for x in v)
    elif k == AttrKind.STRINGS:
        p.strings.extend(s.encode("utf-8", "surrogateescape") if isinstance(s, str) else s for s in v)
    elif k == AttrKind.TENSORS:
        p.tensors.extend(array_to_tensor(x) for x in v)
    elif k == AttrKind.GRAPHS:
        p.graphs.extend(graph_saver(g) if graph_saver else g for g in v)
    elif k == AttrKind.SPARSE_TENSOR:
        p.sparse_tensor.CopyFrom(v)
    elif k == AttrKind.SPARSE_TENSORS:
        p.sparse_tensors.extend(v)
    elif k == AttrKind.TYPE_PROTO:
        p.tp.CopyFrom(type_to_proto(v))
    elif k == AttrKind.TYPE_PROTOS:
        p.type_protos.extend(type_to_proto(t) for t in v)
    return p
