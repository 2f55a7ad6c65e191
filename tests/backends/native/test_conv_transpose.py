"""ConvTranspose through the native lowering, against onnxruntime."""

from __future__ import annotations

import pytest
from onnx import TensorProto as TP
from onnx import helper, numpy_helper

from tests.backends.native.helpers import check_native, make_model, rand

CASES = [
    dict(shape=(1, 3, 5, 4), w=(3, 2, 3, 3), attrs={}),
    dict(shape=(2, 4, 4, 5), w=(4, 3, 3, 3), attrs={"strides": [2, 2], "pads": [1, 1, 1, 1]}),
    dict(shape=(1, 4, 3, 3), w=(4, 1, 2, 2), attrs={"strides": [2, 2], "group": 2}),
    dict(shape=(1, 2, 5, 5), w=(2, 3, 3, 3), attrs={"strides": [2, 2], "output_padding": [1, 1], "dilations": [2, 1]}),
    dict(shape=(1, 2, 4, 4), w=(2, 2, 3, 3), attrs={"strides": [2, 2], "auto_pad": "SAME_UPPER"}),
    dict(shape=(1, 2, 4, 4), w=(2, 2, 3, 3), attrs={"strides": [3, 2], "output_shape": [12, 9]}),
    dict(shape=(1, 3, 7), w=(3, 2, 4), attrs={"strides": [3], "pads": [1, 2]}),
]


@pytest.mark.parametrize("case", CASES, ids=[str(i) for i in range(len(CASES))])
@pytest.mark.parametrize("bias", [False, True])
def test_conv_transpose(case: dict, bias: bool) -> None:
    import onnx
    import onnxruntime as ort

    shape, wshape = case["shape"], case["w"]
    group = case["attrs"].get("group", 1)
    m = wshape[1] * group
    inits = [numpy_helper.from_array(rand(*wshape, seed=3), "w")]
    inputs = ["x", "w"]
    if bias:
        inits.append(numpy_helper.from_array(rand(m, seed=4), "b"))
        inputs.append("b")
    node = helper.make_node("ConvTranspose", inputs, ["y"], **case["attrs"])
    probe = make_model([node], [helper.make_tensor_value_info("x", TP.FLOAT, shape)],
                       [helper.make_tensor_value_info("y", TP.FLOAT, None)], inits)
    out_shape = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": rand(*shape)})[0].shape
    model = make_model([node], [helper.make_tensor_value_info("x", TP.FLOAT, shape)],
                       [helper.make_tensor_value_info("y", TP.FLOAT, out_shape)], inits)
    onnx.checker.check_model(model)
    program = check_native(model, {"x": rand(*shape, seed=1)}, interpret=case is CASES[2] and bias)
    assert [c.op_type for c in program.calls] == ["ConvTranspose"]
