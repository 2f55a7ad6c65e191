"""Type and shape inference through ONNX's operator schemas.

ONNX ships an inference function with every standard op's schema; using it as the default
rule means each op's shape logic is not re-implemented by hand. Specs of ops without an
ONNX schema (or with subgraphs) override ``OpSpec.infer``.
"""

from __future__ import annotations

import numpy as np
import onnx

from torsh_gen.ir.graph import AttrKind
from torsh_gen.ir.proto import array_to_tensor, attribute_to_proto, type_from_proto, type_to_proto
from torsh_gen.ir.types import TensorType, Type

#: Constant inputs up to this many elements are handed to ONNX's data propagation.
_MAX_PROPAGATED_ELEMENTS = 4096


def infer_with_onnx_schema(spec, ctx) -> list[Type | None]:  # noqa: ANN001 (avoid import cycle)
    """Output types of ``ctx.node`` from ONNX's schema inference; None where it cannot tell."""
    node = ctx.node
    n_out = len(node.outputs)
    unknown: list[Type | None] = [None] * n_out
    if any(a.kind in (AttrKind.GRAPH, AttrKind.GRAPHS) for a in node.attrs.values()):
        return unknown
    try:
        schema = onnx.defs.get_schema(node.op_type, ctx.opset or onnx.defs.onnx_opset_version(), node.domain)
    except Exception:
        return unknown
    in_names = [f"i{k}" if v is not None else "" for k, v in enumerate(node.inputs)]
    out_names = [f"o{k}" if o.name else "" for k, o in enumerate(node.outputs)]
    proto = onnx.NodeProto()
    proto.op_type = node.op_type
    proto.domain = node.domain
    proto.input.extend(in_names)
    proto.output.extend(out_names)
    try:
        proto.attribute.extend(attribute_to_proto(k, a) for k, a in node.attrs.items() if not a.ref)
    except Exception:
        return unknown
    types: dict[str, onnx.TypeProto] = {}
    data: dict[str, onnx.TensorProto] = {}
    for name, t, val in zip(in_names, ctx.input_types, ctx.input_values):
        if not name:
            continue
        if t is None:
            return unknown
        types[name] = type_to_proto(t)
        if isinstance(val, np.ndarray) and val.size <= _MAX_PROPAGATED_ELEMENTS and val.dtype != object:
            try:
                data[name] = array_to_tensor(val, name)
            except Exception:
                pass
    opsets = [onnx.helper.make_opsetid(node.domain, ctx.opset)] if ctx.opset else None
    try:
        result = onnx.shape_inference.infer_node_outputs(schema, proto, types, data, opset_imports=opsets)
    except Exception:
        return unknown
    out: list[Type | None] = []
    for name in out_names:
        t = type_from_proto(result[name]) if name in result else None
        if isinstance(t, TensorType) and t.dtype == 0:
            t = None
        out.append(t)
    return out
