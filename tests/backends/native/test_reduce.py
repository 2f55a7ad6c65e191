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


def _run_time_axes_model(op: str, shape, out, count: int, keepdims: int, dtype=TP.FLOAT, noop=0):
    """``op`` with an axes input of ``count`` values fed at run time and a declared output."""
    node = helper.make_node(op, ["x", "axes"], ["y"], keepdims=keepdims, noop_with_empty_axes=noop)
    return make_model(
        [node],
        [helper.make_tensor_value_info("x", dtype, shape), helper.make_tensor_value_info("axes", TP.INT64, (count,))],
        [helper.make_tensor_value_info("y", dtype, out)],
        opset=20,
    )


@pytest.mark.parametrize("op", ["ReduceSum", "ReduceMax", "ReduceMean", "ReduceL2", "ReduceLogSumExp"])
def test_run_time_axes_that_the_shapes_leave_open_are_read_at_run_time(op: str) -> None:
    """(3, 3, 3) -> (3, 3) fits every axis: one body per axis, picked by the axes' value
    (negative ones counted from the end); the same program serves every value."""
    model = _run_time_axes_model(op, (3, 3, 3), (3, 3), 1, 0)
    x = _reduce_input(op, (3, 3, 3))
    for axis in (0, 1, 2, -1, -3):
        check_native(model, {"x": x, "axes": np.array([axis], np.int64)}, interpret=axis in (1, -3))


def test_two_run_time_axes_of_three() -> None:
    """Two of three equal dims reduced, keepdims=0: three bodies (two make a nest)."""
    model = _run_time_axes_model("ReduceSum", (4, 4, 4), (4,), 2, 0)
    x = rand(4, 4, 4, seed=2)
    for axes in ([0, 2], [2, 1], [-1, -3], [0, 1]):
        check_native(model, {"x": x, "axes": np.array(axes, np.int64)}, interpret=True)


def test_run_time_axes_that_differ_in_size_one_dims_only() -> None:
    """(1, 1, 5) -> (1, 5) drops dim 0 or dim 1: both size 1, so the values are the same
    and the kernel has one body, no branch on the axes."""
    from torsh_gen.backends.kernel.ir import If

    model = _run_time_axes_model("ReduceMax", (1, 1, 5), (1, 5), 1, 0)
    program = lower_model(model)
    (kernel,) = program.kernels.values()
    assert not any(isinstance(s, If) for s in kernel.body)
    x = rand(1, 1, 5, seed=1)
    for axes in ([0], [1], [-2]):
        check_native(model, {"x": x, "axes": np.array(axes, np.int64)}, interpret=True)


def test_empty_run_time_axes() -> None:
    """An axes input of length 0: every axis (noop_with_empty_axes=0) or none (1)."""
    x = rand(3, 4, seed=8)
    empty = np.zeros((0,), np.int64)
    check_native(_run_time_axes_model("ReduceSum", (3, 4), (1, 1), 0, 1), {"x": x, "axes": empty}, interpret=True)
    check_native(_run_time_axes_model("ReduceMin", (3, 4), (3, 4), 0, 1, noop=1), {"x": x, "axes": empty}, interpret=True)


def test_too_many_run_time_axis_choices_are_declined() -> None:
    """Three axes of six equal dims, dropped: 20 possible sets, more than the kernel holds."""
    model = _run_time_axes_model("ReduceSum", (2,) * 6, (2,) * 3, 3, 0)
    with pytest.raises(UnsupportedOpError, match="fit 20 choices"):
        lower_model(model)


@pytest.mark.parametrize("op", ["ReduceMax", "ReduceMin"])
def test_bool_max_and_min_are_any_and_all(op: str) -> None:
    x = np.random.default_rng(1).random((4, 3, 19)) < 0.3
    for axes, keepdims in (([2], 1), ([1], 0), ([0, 2], 0), ([0], 1)):
        node, inits = _reduce_node(op, axes, keepdims, 20)
        check_native(_model(node, x.shape, TP.BOOL, inits, opset=20), {"x": x}, interpret=axes == [1])
    node, inits = _reduce_node(op, [1], 1, 20)  # empty set: False for max, True for min
    model = _model(node, (2, 0, 3), TP.BOOL, inits, opset=20)  # onnxruntime refuses it
    _check_with_reference(model, {"x": np.zeros((2, 0, 3), bool)})


def test_bool_sum_is_declined() -> None:
    node, inits = _reduce_node("ReduceSum", [1], 1, 13)
    model = make_model(
        [node], [helper.make_tensor_value_info("x", TP.BOOL, (2, 3))],
        [helper.make_tensor_value_info("y", TP.BOOL, (2, 1))], inits, opset=13,
    )
    with pytest.raises(UnsupportedOpError, match="ReduceSum of bool"):
        lower_model(model)


def _cumulative_model(op: str, shape, axis_dtype=TP.INT64, axis=None, dtype=TP.FLOAT, **attrs):
    """CumSum/CumProd whose axis is a constant (``axis``) or fed at run time (None)."""
    inits = [] if axis is None else [numpy_helper.from_array(np.array(axis, helper.tensor_dtype_to_np_dtype(axis_dtype)), "axis")]
    ins = [helper.make_tensor_value_info("x", dtype, shape)]
    if axis is None:
        ins.append(helper.make_tensor_value_info("axis", axis_dtype, ()))
    node = helper.make_node(op, ["x", "axis"], ["y"], **attrs)
    return make_model([node], ins, [helper.make_tensor_value_info("y", dtype, shape)], inits, opset=26 if op == "CumProd" else 14)


def _check_with_reference(model: onnx.ModelProto, feeds: dict, interpret: bool = True) -> None:
    """JIT (and interpreter) against onnx's reference evaluator (for ops onnxruntime lacks)."""
    from onnx.reference import ReferenceEvaluator

    from tests.backends.native.helpers import interpret_program

    program = lower_model(model)
    want = ReferenceEvaluator(model).run(None, feeds)[0]
    got = JitProgram(program).run(feeds)["y"]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    if interpret:
        np.testing.assert_allclose(interpret_program(program, feeds)[0], want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("exclusive,reverse", [(0, 0), (1, 0), (0, 1), (1, 1)])
def test_cumsum_axis_at_run_time(exclusive: int, reverse: int) -> None:
    """One body per axis, picked by the axis' value (int32 or int64, negative too)."""
    shape = (3, 4, 5)
    x = rand(*shape, seed=6)
    for axis_dtype, np_dtype in ((TP.INT64, np.int64), (TP.INT32, np.int32)):
        model = _cumulative_model("CumSum", shape, axis_dtype, exclusive=exclusive, reverse=reverse)
        for axis in (0, 1, 2, -1, -3):
            feeds = {"x": x, "axis": np.array(axis, np_dtype)}
            check_native(model, feeds, interpret=axis == -1 and np_dtype == np.int32)


@pytest.mark.parametrize("exclusive,reverse", [(0, 0), (1, 0), (0, 1), (1, 1)])
def test_cumprod(exclusive: int, reverse: int) -> None:
    """CumProd (opset 26; onnxruntime has no kernel): constant and run-time axes, floats
    and int32."""
    shape = (3, 4, 5)
    x = (np.abs(rand(*shape, seed=4)) * 0.5 + 0.7).astype(np.float32)
    xi = np.random.default_rng(3).integers(-3, 4, shape).astype(np.int32)
    for axis in (0, 1, -1):
        model = _cumulative_model("CumProd", shape, axis=axis, exclusive=exclusive, reverse=reverse)
        _check_with_reference(model, {"x": x}, interpret=axis == 1)
    model = _cumulative_model("CumProd", shape, exclusive=exclusive, reverse=reverse)
    for axis in (0, 2, -2):
        _check_with_reference(model, {"x": x, "axis": np.array(axis, np.int64)})
    model = _cumulative_model("CumProd", shape, dtype=TP.INT32, exclusive=exclusive, reverse=reverse)
    _check_with_reference(model, {"x": xi, "axis": np.array(1, np.int64)})


def test_cumsum_of_a_scalar_is_declined() -> None:
    node = helper.make_node("CumSum", ["x", "axis"], ["y"])
    model = make_model(
        [node],
        [helper.make_tensor_value_info("x", TP.FLOAT, ()), helper.make_tensor_value_info("axis", TP.INT64, ())],
        [helper.make_tensor_value_info("y", TP.FLOAT, ())], opset=14,
    )
    with pytest.raises(UnsupportedOpError, match="CumSum of a scalar"):
        lower_model(model)


@pytest.mark.parametrize("shape,count,keepdims,out", [((3, 4), 0, 1, (1, 1)), ((3, 3, 3), 1, 0, (3, 3)), ((2, 1, 2), 2, 1, None)])
def test_run_time_axes_give_a_static_shape_where_every_choice_agrees(shape, count, keepdims, out) -> None:
    """The type rule: no axes, or axes over equal dims, give one output shape whatever
    their values, so the intermediate a later op reads has a static shape. (2, 1, 2)
    with two axes kept gives (1, 1, 2), (1, 1, 1) or (2, 1, 1): no static shape, and the
    dims the choices agree on are kept."""
    from torsh_gen.errors import InputError

    nodes = [helper.make_node("ReduceSum", ["x", "axes"], ["r"], keepdims=keepdims),
             helper.make_node("Neg", ["r"], ["y"])]
    model = make_model(
        nodes,
        [helper.make_tensor_value_info("x", TP.FLOAT, shape), helper.make_tensor_value_info("axes", TP.INT64, (count,))],
        [helper.make_tensor_value_info("y", TP.FLOAT, out)], opset=18,
    )
    axes = np.arange(count, dtype=np.int64)
    if out is None:
        with pytest.raises(InputError, match=r"\(output of \w+ node .*\) has shape float\[\?,1,\?\], which depends on run-time values"):
            lower_model(model)
        return
    check_native(model, {"x": rand(*shape), "axes": axes}, interpret=True)
