"""ONNX-level quantization rewrites: int8 (static, dynamic) and block-wise int4 weights.

``quantize_graph(graph, options, ranges)`` rewrites a float graph in place into QDQ or
QOperator form; op quantizers live in a registry (``QUANTIZERS``), options are typed
(``QuantOptions``). Calibration (which produces ``ranges``) is a tool, not a pass.
"""

from torsh_gen.passes.quantize.numeric import (
    activation_params,
    quantize_bias,
    quantize_weight_int4,
    quantize_weight_int8,
)
from torsh_gen.passes.quantize.options import (
    QOPERATOR_MODES,
    QuantFormat,
    QuantMode,
    QuantOptions,
    TensorRange,
)
from torsh_gen.passes.quantize.prepare import split_gemm
from torsh_gen.passes.quantize.quantizers import QUANTIZERS, OpQuantizer, quantizer
from torsh_gen.passes.quantize.rewrite import (
    QuantizeResult,
    candidates,
    check_selection,
    node_key,
    quantize_graph,
    required_opset,
)

__all__ = [
    "QOPERATOR_MODES",
    "QUANTIZERS",
    "OpQuantizer",
    "QuantFormat",
    "QuantMode",
    "QuantOptions",
    "QuantizeResult",
    "TensorRange",
    "activation_params",
    "candidates",
    "check_selection",
    "node_key",
    "quantize_bias",
    "quantize_graph",
    "quantize_weight_int4",
    "quantize_weight_int8",
    "quantizer",
    "required_opset",
    "split_gemm",
]
