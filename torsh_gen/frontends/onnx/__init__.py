"""ONNX frontend: import ONNX models into the IR and export the IR back to ONNX."""

from torsh_gen.frontends.onnx.exporter import graph_to_proto, save_onnx, to_onnx
from torsh_gen.frontends.onnx.importer import graph_from_model, load_onnx

__all__ = ["graph_from_model", "graph_to_proto", "load_onnx", "save_onnx", "to_onnx"]
