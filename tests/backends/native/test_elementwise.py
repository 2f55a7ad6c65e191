"""Elementwise ops and fused chains through the kernel IR, the JIT and the interpreter."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto as TP
from onnx import helper

from tests.backends.native.helpers import check_native, make_model, rand

UNARY = ["Relu", "Sigmoid", "Tanh", "Exp", "Abs", "Neg", "Sqrt", "Reciprocal", "Floor", "Ceil", "Erf",
         "Softplus", "Softsign", "Sin", "Cos", "HardSwish", "Sign", "Round", "Log", "Elu", "Selu", "Celu",
         "LeakyRelu", "HardSigmoid", "Mish", "ThresholdedRelu"]


def _unary_input(op: str, shape: tuple[int, ...]) -> np.ndarray:
    x = rand(*shape) * 3
    if op in ("Sqrt", "Log"):
        x = np.abs(x) + 0.1
    if op == "Reciprocal":
        x = np.where(np.abs(x) < 0.1, 0.5, x).astype(np.float32)
    return x


@pytest.mark.parametrize("op", UNARY)
def test_unary(op: str) -> None:
    shape = (2, 3, 37)
    model = make_model([helper.make_node(op, ["x"], ["y"])], [helper.make_tensor_value_info("x", TP.FLOAT, shape)],
                       [helper.make_tensor_value_info("y", TP.FLOAT, shape)], opset=18)
    check_native(model, {"x": _unary_input(op, shape)}, interpret=True)


@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div", "Max", "Min", "Pow"])
@pytest.mark.parametrize("shapes", [((4, 5, 6), (4, 5, 6)), ((4, 5, 6), (6,)), ((4, 1, 6), (1, 5, 1)), ((3, 40), ())])
def test_binary_broadcast(op: str, shapes) -> None:
    a, b = shapes
    out = np.broadcast_shapes(a, b)
    model = make_model([helper.make_node(op, ["a", "b"], ["y"])],
                       [helper.make_tensor_value_info("a", TP.FLOAT, a), helper.make_tensor_value_info("b", TP.FLOAT, b)],
                       [helper.make_tensor_value_info("y", TP.FLOAT, out)])
    xa = rand(*a, seed=1)
    xb = rand(*b, seed=2) if b else np.array(rand(1, seed=2)[0])
    if op == "Pow":
        xa = np.abs(xa) + 0.5
    if op == "Div":
        xb = np.where(np.abs(xb) < 0.2, 1.0, xb).astype(np.float32)
    check_native(model, {"a": xa, "b": xb.astype(np.float32)}, interpret=a == (3, 40))


def test_fused_chain_and_comparisons() -> None:
    shape = (8, 300)
    nodes = [
        helper.make_node("Mul", ["x", "x"], ["sq"]),
        helper.make_node("Add", ["sq", "x"], ["t"]),
        helper.make_node("Greater", ["t", "z"], ["m"]),
        helper.make_node("Where", ["m", "t", "x"], ["w"]),
        helper.make_node("Gelu", ["w"], ["y"]),
        helper.make_node("Cast", ["m"], ["c"], to=TP.INT32),
    ]
    z = helper.make_tensor("z", TP.FLOAT, [], [0.5])
    model = make_model(nodes, [helper.make_tensor_value_info("x", TP.FLOAT, shape)],
                       [helper.make_tensor_value_info("y", TP.FLOAT, shape), helper.make_tensor_value_info("c", TP.INT32, shape)],
                       [z], opset=20)
    check_native(model, {"x": rand(*shape)})


def test_integer_ops() -> None:
    shape = (5, 7)
    nodes = [helper.make_node("Div", ["a", "b"], ["q"]), helper.make_node("Mod", ["a", "b"], ["r"])]
    model = make_model(nodes, [helper.make_tensor_value_info("a", TP.INT64, shape), helper.make_tensor_value_info("b", TP.INT64, shape)],
                       [helper.make_tensor_value_info("q", TP.INT64, shape), helper.make_tensor_value_info("r", TP.INT64, shape)])
    rng = np.random.default_rng(3)
    a = rng.integers(-50, 50, shape)
    b = rng.integers(1, 9, shape) * rng.choice([-1, 1], shape)
    check_native(model, {"a": a, "b": b}, interpret=True)


@pytest.mark.parametrize("dtype,np_dtype", [(TP.UINT8, np.uint8), (TP.INT8, np.int8), (TP.UINT32, np.uint32), (TP.INT64, np.int64)])
@pytest.mark.parametrize("direction", ["LEFT", "RIGHT"])
def test_bitshift_including_out_of_range_amounts(dtype, np_dtype, direction) -> None:
    shape = (2, 9)
    bits = np.dtype(np_dtype).itemsize * 8
    rng = np.random.default_rng(5)
    lo = np.iinfo(np_dtype).min // 4 if np.issubdtype(np_dtype, np.signedinteger) else 0
    x = rng.integers(lo, np.iinfo(np_dtype).max // 4, shape).astype(np_dtype)
    amounts = [0, 1, 3, bits - 1, bits, bits + 2] + ([-1, -3] if np.issubdtype(np_dtype, np.signedinteger) else [2, 5])
    y = np.resize(np.array(amounts), shape).astype(np_dtype)
    model = make_model([helper.make_node("BitShift", ["x", "y"], ["z"], direction=direction)],
                       [helper.make_tensor_value_info("x", dtype, shape), helper.make_tensor_value_info("y", dtype, shape)],
                       [helper.make_tensor_value_info("z", dtype, shape)], opset=11)
    from tests.backends.native.helpers import interpret_program, lower_model
    from torsh_gen.backends.llvm.jit import JitProgram

    program = lower_model(model)
    with np.errstate(all="ignore"):
        fn = np.left_shift if direction == "LEFT" else np.right_shift
        inside = (y >= 0) & (y < bits)
        fill = np.where(x < 0, -1, 0).astype(np_dtype) if direction == "RIGHT" else np.zeros_like(x)
        want = np.where(inside, fn(x, np.where(inside, y, 0).astype(np_dtype)), fill).astype(np_dtype)
    got = JitProgram(program).run({"x": x, "y": y})["z"]
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(interpret_program(program, {"x": x, "y": y})[0], want)


def test_castlike_takes_the_dtype_of_its_second_input() -> None:
    shape = (3, 11)
    model = make_model([helper.make_node("CastLike", ["x", "like"], ["y"])],
                       [helper.make_tensor_value_info("x", TP.FLOAT, shape), helper.make_tensor_value_info("like", TP.INT32, (1,))],
                       [helper.make_tensor_value_info("y", TP.INT32, shape)], opset=15)
    check_native(model, {"x": rand(*shape) * 50, "like": np.array([7], np.int32)})
