"""Normalizations through the segment reductions, against onnxruntime."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto as TP
from onnx import helper, numpy_helper

from tests.backends.native.helpers import check_native, lower_model, make_model, rand
from torsh_gen.backends.llvm.jit import JitProgram


def _vi(name: str, shape) -> object:
    return helper.make_tensor_value_info(name, TP.FLOAT, shape)


def _consts(**arrays: np.ndarray) -> list:
    return [numpy_helper.from_array(np.asarray(a, np.float32), k) for k, a in arrays.items()]


@pytest.mark.parametrize(
    "shape,axis", [((4, 7, 64), -1), ((3, 5, 6), 1), ((6, 300), -1), ((2, 3, 4, 5), -2)]
)
@pytest.mark.parametrize("with_bias", [True, False])
def test_layer_norm(shape, axis: int, with_bias: bool) -> None:
    norm_shape = shape[axis % len(shape) :]
    inits = _consts(scale=rand(*norm_shape, seed=2), bias=rand(*norm_shape, seed=3))
    inputs = ["x", "scale", "bias"] if with_bias else ["x", "scale"]
    node = helper.make_node("LayerNormalization", inputs, ["y"], axis=axis, epsilon=1e-3)
    model = make_model([node], [_vi("x", shape)], [_vi("y", shape)], inits)
    x = rand(*shape, seed=1) * 2 + 3  # an offset mean: the two-pass variance stays accurate
    program = check_native(model, {"x": x}, lanes=16)
    assert [c.op_type for c in program.calls] == ["LayerNormalization"]


def test_layer_norm_statistics_outputs_interpreted() -> None:
    """Mean and InvStdDev outputs; a broadcast (1, 9) scale; interpreter too."""
    shape = (3, 4, 9)
    inits = _consts(scale=rand(1, 9, seed=2), bias=rand(9, seed=3))
    node = helper.make_node(
        "LayerNormalization", ["x", "scale", "bias"], ["y", "mean", "inv"], axis=-1
    )
    model = make_model(
        [node],
        [_vi("x", shape)],
        [_vi("y", shape), _vi("mean", (3, 4, 1)), _vi("inv", (3, 4, 1))],
        inits,
    )
    check_native(model, {"x": rand(*shape, seed=1)}, lanes=4, interpret=True)


def test_layer_norm_runtime_scale() -> None:
    shape = (5, 40)
    node = helper.make_node("LayerNormalization", ["x", "s", "b"], ["y"])
    model = make_model(
        [node], [_vi("x", shape), _vi("s", (40,)), _vi("b", (40,))], [_vi("y", shape)]
    )
    check_native(model, {"x": rand(*shape, seed=1), "s": rand(40, seed=2), "b": rand(40, seed=3)})


def test_rms_norm() -> None:
    shape = (3, 5, 48)
    node = helper.make_node("RMSNormalization", ["x", "scale"], ["y"], axis=-1, epsilon=1e-4)
    model = make_model(
        [node], [_vi("x", shape)], [_vi("y", shape)], _consts(scale=rand(48, seed=2)), opset=23
    )
    check_native(model, {"x": rand(*shape, seed=1)}, lanes=16, interpret=False)


@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (2, 4, 40), (1, 3, 2)])
def test_instance_norm(shape) -> None:
    c = shape[1]
    inits = _consts(s=rand(c, seed=2), b=rand(c, seed=3))
    node = helper.make_node("InstanceNormalization", ["x", "s", "b"], ["y"], epsilon=1e-4)
    model = make_model([node], [_vi("x", shape)], [_vi("y", shape)], inits)
    check_native(model, {"x": rand(*shape, seed=1)}, interpret=shape == (1, 3, 2))


@pytest.mark.parametrize("shape,groups", [((2, 6, 5, 7), 3), ((2, 8, 33), 2), ((1, 4, 3), 4)])
def test_group_norm(shape, groups: int) -> None:
    c = shape[1]
    inits = _consts(s=rand(c, seed=2), b=rand(c, seed=3))
    node = helper.make_node(
        "GroupNormalization", ["x", "s", "b"], ["y"], num_groups=groups, epsilon=1e-4
    )
    model = make_model([node], [_vi("x", shape)], [_vi("y", shape)], inits, opset=21)
    check_native(model, {"x": rand(*shape, seed=1)}, interpret=shape == (1, 4, 3))


def test_group_norm_opset18_per_group() -> None:
    """Opset 18 gives scale and bias per group; onnx deprecated that version (the checker
    and onnxruntime refuse it), so numpy computes the expected values."""
    shape, groups = (2, 6, 11), 3
    s, b = rand(groups, seed=2), rand(groups, seed=3)
    node = helper.make_node("GroupNormalization", ["x", "s", "b"], ["y"], num_groups=groups)
    model = make_model([node], [_vi("x", shape)], [_vi("y", shape)], _consts(s=s, b=b), opset=18)
    x = rand(*shape, seed=1)
    got = JitProgram(lower_model(model)).run({"x": x})["y"]
    g = x.reshape(2, groups, -1).astype(np.float64)
    normed = (g - g.mean(-1, keepdims=True)) / np.sqrt(g.var(-1, keepdims=True) + 1e-5)
    expected = normed * s.reshape(1, groups, 1) + b.reshape(1, groups, 1)
    np.testing.assert_allclose(got, expected.reshape(shape), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (2, 40, 20), (6, 20), (3, 1, 9)])
def test_batch_norm_inference(shape) -> None:
    """Level O1 keeps the op (O2 folds it into an affine chain)."""
    c = shape[1]
    inits = _consts(
        s=rand(c, seed=2), b=rand(c, seed=3), m=rand(c, seed=4), v=np.abs(rand(c, seed=5)) + 0.5
    )
    node = helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], epsilon=1e-3)
    model = make_model([node], [_vi("x", shape)], [_vi("y", shape)], inits)
    program = check_native(
        model, {"x": rand(*shape, seed=1)}, level="O1", interpret=shape == (6, 20)
    )
    assert [c.op_type for c in program.calls] == ["BatchNormalization"]


@pytest.mark.parametrize("p", [1, 2])
@pytest.mark.parametrize("axis", [-1, 1, 0])
def test_lp_norm(p: int, axis: int) -> None:
    shape = (3, 4, 20)
    x = rand(*shape, seed=1)
    x[0, 0, :] = 0.0  # a zero row along the last axis: its norm is 0
    node = helper.make_node("LpNormalization", ["x"], ["y"], axis=axis, p=p)
    model = make_model([node], [_vi("x", shape)], [_vi("y", shape)])
    check_native(model, {"x": x}, interpret=axis == 1)


@pytest.mark.parametrize("size", [1, 3, 5])  # onnxruntime accepts odd sizes only
def test_lrn(size: int) -> None:
    from onnx import TensorProto as TP
    from onnx import helper as oh

    shape = (2, 7, 5, 6)
    model = make_model(
        [oh.make_node("LRN", ["x"], ["y"], size=size, alpha=2e-3, beta=0.75, bias=1.5)],
        [oh.make_tensor_value_info("x", TP.FLOAT, shape)], [oh.make_tensor_value_info("y", TP.FLOAT, shape)],
    )
    program = check_native(model, {"x": rand(*shape) * 3}, interpret=size == 3)
    assert [c.op_type for c in program.calls] == ["LRN"]


def _batch_norm_training_model(shape, momentum: float, opset: int = 15):
    c = shape[1]
    node = helper.make_node(
        "BatchNormalization", ["x", "s", "b", "m", "v"], ["y", "rm", "rv"],
        epsilon=1e-3, momentum=momentum, training_mode=1,
    )  # fmt: skip
    ins = [_vi("x", shape)] + [_vi(k, (c,)) for k in ("s", "b", "m", "v")]
    return make_model([node], ins, [_vi("y", shape), _vi("rm", (c,)), _vi("rv", (c,))], opset=opset)


@pytest.mark.parametrize("shape,momentum", [((2, 3, 4, 5), 0.9), ((6, 4), 0.5), ((2, 5, 1, 33), 0.0)])
def test_batch_norm_training(shape, momentum: float) -> None:
    """Training mode: batch statistics normalize Y and update the running mean and
    variance (onnxruntime has no training kernel here: onnx's reference evaluator)."""
    from onnx.reference import ReferenceEvaluator

    from tests.backends.native.helpers import interpret_program

    c = shape[1]
    model = _batch_norm_training_model(shape, momentum)
    feeds = {"x": rand(*shape, seed=1) * 2 + 1, "s": rand(c, seed=2), "b": rand(c, seed=3),
             "m": rand(c, seed=4), "v": np.abs(rand(c, seed=5)) + 0.5}  # fmt: skip
    want = ReferenceEvaluator(model).run(None, feeds)
    program = lower_model(model)
    got = JitProgram(program).run(feeds)
    for name, w in zip(("y", "rm", "rv"), want):
        np.testing.assert_allclose(got[name], w, rtol=1e-4, atol=1e-4, err_msg=name)
    if shape == (2, 3, 4, 5):
        for out, w in zip(interpret_program(program, feeds), want):
            np.testing.assert_allclose(out, w, rtol=1e-4, atol=1e-4)


def test_batch_norm_statistics_outputs_before_opset_14_are_declined() -> None:
    from torsh_gen.errors import UnsupportedOpError

    node = helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y", "rm"], epsilon=1e-3)
    ins = [_vi("x", (2, 3))] + [_vi(k, (3,)) for k in ("s", "b", "m", "v")]
    model = make_model([node], ins, [_vi("y", (2, 3)), _vi("rm", (3,))], opset=9)
    with pytest.raises(UnsupportedOpError, match="statistics outputs before opset 14"):
        lower_model(model)
