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
