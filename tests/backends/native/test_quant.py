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


def _blocked_model(shape, axis: int, block: int, qtype: int, with_zp: bool):
    """Quantize then dequantize with blocked scales (and zero points) fed at run time."""
    blocks = -(-shape[axis] // block)
    pshape = tuple(blocks if d == axis % len(shape) else s for d, s in enumerate(shape))
    params = ["s", "z"] if with_zp else ["s"]
    nodes = [helper.make_node("QuantizeLinear", ["x", *params], ["q"], axis=axis, block_size=block, output_dtype=0 if with_zp else qtype),
             helper.make_node("DequantizeLinear", ["q", *params], ["y"], axis=axis, block_size=block)]
    ins = [helper.make_tensor_value_info("x", TP.FLOAT, shape), helper.make_tensor_value_info("s", TP.FLOAT, pshape)]
    if with_zp:
        ins.append(helper.make_tensor_value_info("z", qtype, pshape))
    outs = [helper.make_tensor_value_info("q", qtype, shape), helper.make_tensor_value_info("y", TP.FLOAT, shape)]
    return make_model(nodes, ins, outs, opset=21), pshape


@pytest.mark.parametrize(
    "shape,axis,block",
    [((3, 8), 1, 4), ((3, 10), -1, 4), ((7, 2, 5), 0, 3), ((2, 5, 3, 4), 1, 2)],
    ids=["last-even", "last-partial", "first-partial", "middle-partial"],
)
@pytest.mark.parametrize("qtype,np_q", [(TP.UINT8, np.uint8), (TP.INT8, np.int8), (TP.INT16, np.int16)])
@pytest.mark.parametrize("with_zp", [True, False])
def test_blocked_quantization(shape, axis: int, block: int, qtype: int, np_q, with_zp: bool) -> None:
    """One scale (and zero point) per block of ``block`` elements along the axis; the
    last block is shorter where the length is not a multiple."""
    model, pshape = _blocked_model(shape, axis, block, qtype, with_zp)
    rng = np.random.default_rng(2)
    info = np.iinfo(np_q)
    feeds = {"x": rand(*shape) * 3, "s": (rng.random(pshape) * 0.05 + 0.01).astype(np.float32)}
    if with_zp:
        feeds["z"] = rng.integers(max(info.min, -20), min(info.max, 20) + 1, pshape).astype(np_q)
    program = check_native(model, feeds, rtol=0, atol=1e-6, level="O0", interpret=shape == (2, 5, 3, 4) and qtype == TP.UINT8)
    assert {c.op_type for c in program.calls} == {"QuantizeLinear", "DequantizeLinear"}


def test_blocked_scale_of_the_wrong_shape_is_declined() -> None:
    from tests.backends.native.helpers import lower_model
    from torsh_gen.errors import UnsupportedOpError

    node = helper.make_node("DequantizeLinear", ["x", "s"], ["y"], axis=1, block_size=2)
    model = make_model([node], [helper.make_tensor_value_info("x", TP.UINT8, (3, 8)),
                                helper.make_tensor_value_info("s", TP.FLOAT, (3, 3))],
                       [helper.make_tensor_value_info("y", TP.FLOAT, (3, 8))], opset=21)
    with pytest.raises(UnsupportedOpError, match=r"blocked scale or zero point of shape \(3, 3\), not \(3, 4\)"):
        lower_model(model, level="O0")


@pytest.mark.parametrize("qtype,np_q", [(TP.INT32, np.int32), (TP.UINT16, np.uint16)])
def test_quantize_to_wide_integers(qtype: int, np_q) -> None:
    """32-bit targets add the zero point and clamp in float64 (exact over their range);
    values past the range saturate. The op's reference is the oracle (onnxruntime has no
    int32 QuantizeLinear; onnx's reference evaluator overflows past int32)."""
    from tests.backends.native.helpers import lower_model
    from torsh_gen.backend import prepare
    from torsh_gen.backends.llvm.jit import JitProgram

    shape = (4, 9)
    zp = np.array(-(2**30) if np_q == np.int32 else 300, np_q)
    node = helper.make_node("QuantizeLinear", ["x", "s", "z"], ["y"])
    model = make_model([node], [helper.make_tensor_value_info("x", TP.FLOAT, shape)],
                       [helper.make_tensor_value_info("y", qtype, shape)],
                       [numpy_helper.from_array(np.array(1e-3, np.float32), "s"), numpy_helper.from_array(zp, "z")], opset=21)
    x = (rand(*shape) * (4e6 if np_q == np.int32 else 40)).astype(np.float32)
    x[0, :3] = [-3e9, 3e9, 1.5e-3]
    want = prepare(model).run([x])[0]
    got = JitProgram(lower_model(model, level="O0")).run({"x": x})["y"]
    np.testing.assert_array_equal(got, want)
