"""Reductions, ArgMax/ArgMin, Softmax/LogSoftmax, Hardmax and CumSum against onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto as TP
from onnx import helper, numpy_helper

from tests.backends.native.helpers import check_native, lower_model, make_model, rand
from torsh_gen.backends.llvm.jit import JitProgram
from torsh_gen.errors import UnsupportedOpError

REDUCE_OPS = [
    "ReduceSum",
    "ReduceMean",
    "ReduceMax",
    "ReduceMin",
    "ReduceProd",
    "ReduceL1",
    "ReduceL2",
    "ReduceLogSum",
    "ReduceLogSumExp",
    "ReduceSumSquare",
]


def _model(node, shape, dtype=TP.FLOAT, inits=None, opset=18, extra_inputs=()) -> onnx.ModelProto:
    """A one-node model whose output type comes from ONNX shape inference."""
    ins = [helper.make_tensor_value_info("x", dtype, shape)] + list(extra_inputs)
    probe = make_model(
        [node], ins, [helper.make_tensor_value_info("y", TP.UNDEFINED, None)], inits, opset=opset
    )
    y = onnx.shape_inference.infer_shapes(probe, strict_mode=True).graph.output[0]
    return make_model([node], ins, [y], inits, opset=opset)


def _reduce_input(op: str, shape) -> np.ndarray:
    x = rand(*shape, seed=3)
    if op in ("ReduceLogSum", "ReduceL2"):
        x = np.abs(x) + 0.1
    if op == "ReduceProd":
        x = np.abs(x) * 0.3 + 0.8
    return x.astype(np.float32)


def _reduce_node(op: str, axes, keepdims: int, opset: int, noop: int | None = None):
    inits, inputs, kw = [], ["x"], {"keepdims": keepdims}
    if (op == "ReduceSum" and opset >= 13) or opset >= 18:
        if axes is not None:
            inits.append(numpy_helper.from_array(np.array(axes, np.int64), "axes"))
            inputs.append("axes")
        if noop is not None:
            kw["noop_with_empty_axes"] = noop
    elif axes is not None:
        kw["axes"] = axes
    return helper.make_node(op, inputs, ["y"], **kw), inits


CASES = [
    ((3, 4, 50), [2], 1),  # innermost: row mode
    ((3, 40, 5), [1], 0),  # middle: one lane per column
    ((3, 4, 5), [0, 2], 0),  # two separate runs
    ((2, 3, 4, 5), [1, 2], 1),  # adjacent axes merge
    ((6, 70), [-2], 1),  # negative axis, leading
    ((3, 4, 5), None, 1),  # all axes
]


@pytest.mark.parametrize("op", REDUCE_OPS)
@pytest.mark.parametrize("opset", [11, 18])
def test_reduce(op: str, opset: int) -> None:
    for shape, axes, keepdims in CASES:
        node, inits = _reduce_node(op, axes, keepdims, opset)
        program = check_native(
            _model(node, shape, inits=inits, opset=opset), {"x": _reduce_input(op, shape)}
        )
        assert [c.op_type for c in program.calls] == [op]


@pytest.mark.parametrize("op", ["ReduceSum", "ReduceLogSumExp", "ReduceMax"])
def test_reduce_interpreted(op: str) -> None:
    node, inits = _reduce_node(op, [1], 1, 18)
    check_native(
        _model(node, (2, 37, 3), inits=inits), {"x": _reduce_input(op, (2, 37, 3))}, interpret=True
    )
    node, inits = _reduce_node(op, [0], 0, 18)  # 4 lanes x 4 registers, then 1 register
    x = _reduce_input(op, (5, 70))
    check_native(_model(node, (5, 70), inits=inits), {"x": x}, lanes=4, interpret=True)
    node, inits = _reduce_node(op, [-1], 0, 18)
    check_native(
        _model(node, (3, 37), inits=inits),
        {"x": _reduce_input(op, (3, 37))},
        lanes=4,
        interpret=True,
    )


def test_reduce_long_rows() -> None:
    """Sums over 5000 elements: the many-accumulator path with a tail (K-long sums: 1e-3)."""
    for op in ("ReduceSum", "ReduceMean", "ReduceSumSquare", "ReduceMax"):
        node, inits = _reduce_node(op, [-1], 1, 18)
        check_native(
            _model(node, (4, 5003), inits=inits),
            {"x": rand(4, 5003, seed=5)},
            lanes=16,
            rtol=1e-3,
            atol=1e-3,
        )


def test_reduce_noop_and_empty_axes() -> None:
    node, inits = _reduce_node("ReduceSumSquare", [], 1, 18, noop=1)
    check_native(_model(node, (3, 4), inits=inits), {"x": rand(3, 4)})
    node, inits = _reduce_node("ReduceSum", None, 0, 13, noop=0)
    check_native(_model(node, (3, 4), inits=inits, opset=13), {"x": rand(3, 4)})


@pytest.mark.parametrize(
    "op", ["ReduceSum", "ReduceMax", "ReduceMin", "ReduceMean", "ReduceProd", "ReduceL1"]
)
def test_reduce_int64(op: str) -> None:
    x = np.random.default_rng(0).integers(-5, 6, (3, 4, 17))
    for axes, keepdims in (([2], 1), ([1], 0), ([0, 2], 1)):
        node, inits = _reduce_node(op, axes, keepdims, 18)
        check_native(_model(node, (3, 4, 17), TP.INT64, inits), {"x": x})


@pytest.mark.parametrize("op", ["ArgMax", "ArgMin"])
@pytest.mark.parametrize("axis,keepdims,last", [(-1, 1, 0), (1, 0, 0), (0, 1, 1), (2, 0, 1)])
def test_arg(op: str, axis: int, keepdims: int, last: int) -> None:
    x = np.round(rand(4, 6, 33, seed=7) * 2)  # ties: first vs last index matters
    node = helper.make_node(op, ["x"], ["y"], axis=axis, keepdims=keepdims, select_last_index=last)
    check_native(_model(node, x.shape, opset=13), {"x": x.astype(np.float32)}, interpret=axis == 1)


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize("opset,axis", [(11, 1), (11, -1), (11, 0), (13, -1), (13, 1), (13, 0)])
def test_softmax(op: str, opset: int, axis: int) -> None:
    shape = (3, 5, 40)
    node = helper.make_node(op, ["x"], ["y"], axis=axis)
    x = rand(*shape, seed=11) * 4
    check_native(_model(node, shape, opset=opset), {"x": x}, lanes=16)


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
def test_softmax_interpreted_and_large(op: str) -> None:
    node = helper.make_node(op, ["x"], ["y"])
    check_native(
        _model(node, (2, 3, 9), opset=13), {"x": rand(2, 3, 9) * 3}, lanes=4, interpret=True
    )
    x = rand(4, 3000, seed=2) * 30  # large logits: the max subtraction keeps exp finite
    check_native(_model(node, x.shape, opset=13), {"x": x})


@pytest.mark.parametrize("opset,axis", [(11, 1), (13, -1), (13, 1)])
def test_hardmax(opset: int, axis: int) -> None:
    x = np.round(rand(3, 4, 21, seed=5) * 2).astype(np.float32)
    node = helper.make_node("Hardmax", ["x"], ["y"], axis=axis)
    check_native(_model(node, x.shape, opset=opset), {"x": x})


@pytest.mark.parametrize("axis", [0, 1, -1])
@pytest.mark.parametrize("exclusive,reverse", [(0, 0), (1, 0), (0, 1), (1, 1)])
def test_cumsum(axis: int, exclusive: int, reverse: int) -> None:
    shape = (3, 4, 19)
    a = numpy_helper.from_array(np.array(axis, np.int64), "axis")
    node = helper.make_node("CumSum", ["x", "axis"], ["y"], exclusive=exclusive, reverse=reverse)
    check_native(
        _model(node, shape, inits=[a], opset=14), {"x": rand(*shape, seed=9)}, interpret=axis == 1
    )


def test_runtime_axes_that_the_shapes_contradict_are_declined() -> None:
    """Axes that are a model input are read off the shapes; shapes no reduction gives
    (an output dim that is neither 1 nor the input's) get one UnsupportedOpError."""
    node = helper.make_node("ReduceSum", ["x", "axes"], ["y"], keepdims=1)
    axes = helper.make_tensor_value_info("axes", TP.INT64, (1,))
    model = make_model(
        [node],
        [helper.make_tensor_value_info("x", TP.FLOAT, (3, 4)), axes],
        [helper.make_tensor_value_info("y", TP.FLOAT, (3, 2))],
        opset=13,
    )
    with pytest.raises(UnsupportedOpError, match="axes computed at run time"):
        lower_model(model)


@pytest.mark.parametrize(
    "op", ["ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL2", "ReduceLogSumExp"]
)
def test_reduce_over_empty_axis(op: str) -> None:
    """Reducing a size-0 axis gives the reduction's identity (finalized)."""
    node, inits = _reduce_node(op, [1], 0, 18)
    check_native(_model(node, (3, 0), inits=inits), {"x": np.zeros((3, 0), np.float32)})


def test_reduce_mean_over_empty_axis_is_nan() -> None:
    """ONNX leaves it undefined; the op's reference (numpy) gives NaN, and so do we
    (onnxruntime writes 0)."""
    node, inits = _reduce_node("ReduceMean", [1], 0, 18)
    got = JitProgram(lower_model(_model(node, (3, 0), inits=inits))).run(
        {"x": np.zeros((3, 0), np.float32)}
    )
    assert np.isnan(got["y"]).all() and got["y"].shape == (3,)


def test_float64_softmax_and_reductions() -> None:
    """float64 sums run in float64; exp/log through the float32 polynomials (1e-6)."""
    x = rand(3, 41, seed=4).astype(np.float64)
    for node in (
        helper.make_node("Softmax", ["x"], ["y"], axis=-1),
        helper.make_node("LogSoftmax", ["x"], ["y"], axis=0),
        helper.make_node("ReduceSum", ["x"], ["y"], axes=[1], keepdims=0),
        helper.make_node("ReduceL2", ["x"], ["y"], axes=[0], keepdims=1),
    ):
        model = _model(node, x.shape, TP.DOUBLE, opset=13 if "Softmax" in node.op_type else 11)
        check_native(model, {"x": x}, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("keepdims", [0, 1])
@pytest.mark.parametrize("op", ["ReduceSum", "ReduceMax", "ReduceMean"])
def test_axes_given_at_run_time_follow_the_static_shapes(op: str, keepdims: int) -> None:
    """A run-time axes input: the reduced axes are read off the declared output shape."""
    from onnx import TensorProto as TP
    from onnx import helper as oh

    shape = (3, 4, 5)
    out = (3, 1, 5) if keepdims else (3, 5)
    model = make_model(
        [oh.make_node(op, ["x", "axes"], ["y"], keepdims=keepdims)],
        [oh.make_tensor_value_info("x", TP.FLOAT, shape), oh.make_tensor_value_info("axes", TP.INT64, (1,))],
        [oh.make_tensor_value_info("y", TP.FLOAT, out)], opset=18,
    )
    check_native(model, {"x": rand(*shape), "axes": np.array([1], np.int64)})


def test_run_time_axes_with_ambiguous_shapes_are_declined() -> None:
    from onnx import TensorProto as TP
    from onnx import helper as oh

    from torsh_gen.errors import UnsupportedOpError

    model = make_model(
        [oh.make_node("ReduceSum", ["x", "axes"], ["y"], keepdims=0)],
        [oh.make_tensor_value_info("x", TP.FLOAT, (3, 3)), oh.make_tensor_value_info("axes", TP.INT64, (1,))],
        [oh.make_tensor_value_info("y", TP.FLOAT, (3,))], opset=18,
    )
    with pytest.raises(UnsupportedOpError, match="several choices"):
        lower_model(model)
