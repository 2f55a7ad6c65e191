"""QuantizeLinear and DequantizeLinear through the native lowering, against onnxruntime."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto as TP
from onnx import helper, numpy_helper

from tests.backends.native.helpers import check_native, make_model, rand


@pytest.mark.parametrize("qtype,np_q", [(TP.UINT8, np.uint8), (TP.INT8, np.int8)])
@pytest.mark.parametrize("per_axis", [False, True])
def test_quantize_dequantize_round_trip(qtype: int, np_q, per_axis: bool) -> None:
    shape = (2, 4, 5, 3)
    if per_axis:
        scale = np.array([0.02, 0.05, 0.1, 0.03], np.float32)
        zp = np.array([3, -2, 0, 7], np.int64).astype(np_q) if np_q == np.int8 else np.array([3, 130, 0, 77], np_q)
    else:
        scale = np.array(0.04, np.float32)
        zp = np.array(5 if np_q == np.int8 else 128, np_q)
    inits = [numpy_helper.from_array(scale, "s"), numpy_helper.from_array(zp, "z")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], axis=1),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], axis=1)]
    model = make_model(nodes, [helper.make_tensor_value_info("x", TP.FLOAT, shape)],
                       [helper.make_tensor_value_info("q", qtype, shape), helper.make_tensor_value_info("y", TP.FLOAT, shape)],
                       inits, opset=13)
    x = rand(*shape) * 4  # values past the range saturate
    program = check_native(model, {"x": x}, rtol=0, atol=1e-6, level="O0", interpret=not per_axis)
    assert {c.op_type for c in program.calls} == {"QuantizeLinear", "DequantizeLinear"}


def test_dequantize_int32_without_zero_point() -> None:
    shape = (3, 7)
    model = make_model([helper.make_node("DequantizeLinear", ["x", "s"], ["y"])],
                       [helper.make_tensor_value_info("x", TP.INT32, shape)], [helper.make_tensor_value_info("y", TP.FLOAT, shape)],
                       [numpy_helper.from_array(np.array(0.001, np.float32), "s")], opset=13)
    x = np.random.default_rng(1).integers(-(2**30), 2**30, shape).astype(np.int32)
    check_native(model, {"x": x}, level="O0")
