"""TFLite frontend: ``.tflite`` flatbuffers (float32, float16 weights, int8) into the IR.

``load_tflite(path)`` reads the file with the schema's generated parser (the ``tflite``
extra), maps each operator to ONNX ops (NHWC kept at the graph boundary, NCHW inside
conv chains, quantized tensors between QuantizeLinear/DequantizeLinear) and records what
it did in ``graph.meta["conversion"]``. ``saved_model.load_saved_model`` converts a
TensorFlow SavedModel folder through tf2onnx (the ``tensorflow`` extra).
"""

from torsh_gen.frontends.tflite.importer import graph_from_tflite, load_tflite, unsupported_ops
from torsh_gen.frontends.tflite.reader import read_tflite

__all__ = ["graph_from_tflite", "load_tflite", "read_tflite", "unsupported_ops"]
