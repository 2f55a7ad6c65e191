"""The graph IR: values, nodes, graphs, types, verifier, printer and .torsh serialization."""

from torsh_gen.ir.graph import Attribute, AttrKind, Graph, ModelInfo, Node, Value
from torsh_gen.ir.types import DType, MapType, OptionalType, SequenceType, TensorType, Type

__all__ = [
    "AttrKind",
    "Attribute",
    "DType",
    "Graph",
    "MapType",
    "ModelInfo",
    "Node",
    "OptionalType",
    "SequenceType",
    "TensorType",
    "Type",
    "Value",
]
