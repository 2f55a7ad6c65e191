"""Elementwise converters of the TVM backend against onnxruntime (or onnx's reference
evaluator, or numpy where neither follows the current spec): math, integer semantics,
NaN handling, casts, activations, ai.onnx.ml's Binarizer and Scaler."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.backends.tvm.helpers import check_tvm, node_model, tvm_session
from torsh_gen.errors import UnsupportedOpError

F, D, H = TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16
I8, I32, I64, U8, B = TensorProto.INT8, TensorProto.INT32, TensorProto.INT64, TensorProto.UINT8, TensorProto.BOOL
RNG = np.random.default_rng(0)


def _unary(op: str, elem: int = F, shape: list[int] | None = None, opset: int = 21, **attrs: Any) -> Any:
    shape = shape or [3, 4]
    return node_model(op, [("x", elem, shape)], [("y", elem, shape)], opset=opset, **attrs)


def _binary(op: str, ta: int, tb: int, sa: list[int], sb: list[int], out: int | None = None, **attrs: Any) -> Any:
    return node_model(op, [("a", ta, sa), ("b", tb, sb)], [("y", out or ta, None)], **attrs)


def _tvm(model: Any, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    return list(tvm_session(model).run(feeds).values())


def _fanout(ops: list[tuple[str, dict[str, Any]]], inputs: list[tuple[str, int, list[int]]], out: int | None = None,
            opset: int = 21) -> Any:
    """One model applying each (op, attrs) to the same inputs, one output each: one TVM
    build checks many converters."""
    nodes = [helper.make_node(op, [n for n, _, _ in inputs], [f"y{k}_{op}"], **attrs) for k, (op, attrs) in enumerate(ops)]
    outs = [helper.make_tensor_value_info(f"y{k}_{op}", out or inputs[0][1], None) for k, (op, _) in enumerate(ops)]
    graph = helper.make_graph(nodes, "fanout", [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs], outs)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


# -- unary math -------------------------------------------------------------------------------
_DOMAIN = {"Acos": (-1, 1), "Asin": (-1, 1), "Atanh": (-0.99, 0.99), "Acosh": (1, 5), "Log": (0.01, 5), "Sqrt": (0, 5)}


_UNARY_GROUPS = {
    (-4.0, 4.0): ["Abs", "Asinh", "Atan", "Ceil", "Cos", "Cosh", "Erf", "Exp", "Floor", "Neg", "Reciprocal", "Sign",
                  "Sin", "Sinh", "Tan", "Tanh", "Sigmoid", "Softsign", "Softplus"],
    (-0.99, 0.99): ["Acos", "Asin", "Atanh"],
    (1.0, 5.0): ["Acosh", "Log", "Sqrt"],
}


@pytest.mark.parametrize("domain", list(_UNARY_GROUPS))
def test_unary_float_math_matches_onnxruntime(domain: tuple[float, float]) -> None:
    x = RNG.uniform(*domain, (3, 4)).astype(np.float32)
    check_tvm(_fanout([(op, {}) for op in _UNARY_GROUPS[domain]], [("x", F, [3, 4])]), {"x": x}, rtol=2e-6, atol=1e-6)


def test_round_ties_to_even() -> None:
    x = np.array([[0.5, 1.5, 2.5, -0.5], [-1.5, -2.5, 2.4, 2.6], [np.nan, np.inf, -0.0, 7.0]], np.float32)
    check_tvm(_unary("Round"), {"x": x})


def test_tanh_sinh_keep_relative_precision_near_zero_and_range_far_out() -> None:
    """TVM's own tanh lowering gives tanh(1e-10) = 0; and e^x overflows before sinh does."""
    x = np.array([1e-10, -1e-7, 1e-5, 3e-3, 0.1, 0.2, 1.0, 9.0, 30.0, -30.0], np.float32)
    for op, ref in (("Tanh", np.tanh), ("Sinh", np.sinh)):
        (got,) = _tvm(_unary(op, shape=[10]), {"x": x})
        np.testing.assert_allclose(got, ref(x.astype(np.float64)), rtol=4e-7, atol=0, err_msg=op)
    big = np.array([89.0, -89.0, 88.9], np.float32)
    for op, ref in (("Sinh", np.sinh), ("Cosh", np.cosh)):
        (got,) = _tvm(_unary(op, shape=[3]), {"x": big})
        np.testing.assert_allclose(got, ref(big.astype(np.float64)).astype(np.float32), rtol=1e-5, err_msg=op)
        assert np.isfinite(got).all()


def test_softplus_does_not_overflow() -> None:
    x = np.array([-100.0, -20.0, 0.0, 20.0, 100.0, 1000.0], np.float32)
    (got,) = _tvm(_unary("Softplus", shape=[6]), {"x": x})
    np.testing.assert_allclose(got, np.logaddexp(0, x.astype(np.float64)).astype(np.float32), rtol=1e-6, atol=0)


def test_isinf_isnan_and_detect_sign() -> None:
    x = np.array([np.inf, -np.inf, np.nan, 0.0, 1e38, -3.0], np.float32)
    for attrs in ({}, {"detect_negative": 0}, {"detect_positive": 0}, {"detect_negative": 0, "detect_positive": 0}):
        model = node_model("IsInf", [("x", F, [6])], [("y", B, [6])], **attrs)
        check_tvm(model, {"x": x})
    with np.errstate(over="ignore"):
        check_tvm(node_model("IsNaN", [("x", H, [6])], [("y", B, [6])]), {"x": x.astype(np.float16)})


# -- binary arithmetic -------------------------------------------------------------------------------
def test_integer_div_truncates_toward_zero() -> None:
    a = np.array([[7, -7, 7, -7, 0, 9]], np.int32)
    b = np.array([2, 2, -2, -2, 5, -4], np.int32)
    check_tvm(_binary("Div", I32, I32, [1, 6], [6]), {"a": a, "b": b})


@pytest.mark.parametrize("elem,dtype", [(I32, np.int32), (I8, np.int8), (U8, np.uint8)])
def test_integer_mod_signs(elem: int, dtype: Any) -> None:
    """fmod=0: the divisor's sign; fmod=1: the dividend's."""
    if dtype == np.uint8:
        a, b = np.array([7, 200, 5, 0], dtype), np.array([3, 7, 5, 9], dtype)
    else:
        a, b = np.array([7, -7, 7, -7], dtype), np.array([3, 3, -3, -3], dtype)
    model = _fanout([("Mod", {"fmod": 0}), ("Mod", {"fmod": 1})], [("a", elem, [4]), ("b", elem, [4])])
    check_tvm(model, {"a": a, "b": b})


def test_float_mod_follows_the_spec_special_cases() -> None:
    """fmod=0 on floats: Python's %, with ±0 taking the divisor's sign and x % ±inf."""
    a = np.array([5.5, -5.5, 5.5, -5.5, 0.0, -0.0, 3.0, -3.0, np.inf, 2.0, np.nan], np.float32)
    b = np.array([2.0, 2.0, -2.0, -2.0, -3.0, 3.0, np.inf, np.inf, 2.0, 0.0, 1.0], np.float32)
    for fmod, ref in ((0, np.mod), (1, np.fmod)):
        (got,) = _tvm(_binary("Mod", F, F, [11], [11], fmod=fmod), {"a": a, "b": b})
        with np.errstate(invalid="ignore"):
            want = ref(a, b)
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(np.signbit(got[~np.isnan(want)]), np.signbit(want[~np.isnan(want)]))


@pytest.mark.parametrize(
    "ta,tb,a,b",
    [
        (I32, I32, np.array([2, -3, 5, 0], np.int32), np.array([3, 3, 2, 4], np.int32)),
        (I64, F, np.array([2, 3, 9, 16], np.int64), np.array([3.0, 0.5, 0.5, 0.25], np.float32)),
        (F, I64, np.array([1.5, -2.0, 0.5, 3.0], np.float32), np.array([2, 3, -1, 0], np.int64)),
        (F, F, np.array([1.5, 2.0, 0.5, 3.0], np.float32), np.array([2.2, -3.0, 0.5, 1.1], np.float32)),
    ],
)
def test_pow_mixed_types_keep_the_base_type(ta: int, tb: int, a: np.ndarray, b: np.ndarray) -> None:
    check_tvm(_binary("Pow", ta, tb, [4], [4]), {"a": a, "b": b}, rtol=1e-6)


def test_pow_by_constant_two_is_a_square() -> None:
    two = numpy_helper.from_array(np.array(2.0, np.float32), "b")
    model = node_model("Pow", [("a", F, [2, 3]), ("b", F, [])], [("y", F, [2, 3])], initializers=[two])
    check_tvm(model, {"a": RNG.standard_normal((2, 3)).astype(np.float32)})


@pytest.mark.parametrize(
    "elem,ops",
    [
        (F, ["Add", "Mul", "Div", "Greater", "LessOrEqual", "Max"]),
        (I64, ["Sub", "Equal", "BitwiseXor", "Min"]),
        (I8, ["GreaterOrEqual", "BitwiseAnd", "Less", "Mul"]),
        (U8, ["BitwiseOr", "Add", "Less"]),
    ],
)
def test_broadcast_binary_ops(elem: int, ops: list[str]) -> None:
    dtype = helper.tensor_dtype_to_np_dtype(elem)
    a = (RNG.standard_normal((2, 3, 4)) * 5).astype(dtype)
    b = (RNG.standard_normal((3, 1)) * 5 + 0.5).astype(dtype)
    outs = {"Greater", "LessOrEqual", "Equal", "GreaterOrEqual", "Less"}
    nodes = [helper.make_node(op, ["a", "b"], [f"y{k}"]) for k, op in enumerate(ops)]
    graph = helper.make_graph(
        nodes, "binary", [helper.make_tensor_value_info("a", elem, [2, 3, 4]), helper.make_tensor_value_info("b", elem, [3, 1])],
        [helper.make_tensor_value_info(f"y{k}", B if op in outs else elem, None) for k, op in enumerate(ops)],
    )
    check_tvm(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)]), {"a": a, "b": b})


def test_logic() -> None:
    a, b = RNG.random((2, 4)) > 0.5, RNG.random((4,)) > 0.5
    check_tvm(_fanout([("And", {}), ("Or", {}), ("Xor", {})], [("a", B, [2, 4]), ("b", B, [4])]), {"a": a, "b": b})
    check_tvm(_unary("Not", B, [2, 4]), {"x": a})


def test_legacy_broadcast_with_axis_before_opset_7() -> None:
    model = node_model("Add", [("a", F, [2, 3, 4]), ("b", F, [3])], [("y", F, [2, 3, 4])], opset=6, broadcast=1, axis=1)
    a, b = RNG.standard_normal((2, 3, 4)).astype(np.float32), RNG.standard_normal(3).astype(np.float32)
    (got,) = _tvm(model, {"a": a, "b": b})
    np.testing.assert_allclose(got, a + b[:, None], rtol=1e-6)


def test_bitshift_signed_and_out_of_range_shifts() -> None:
    """Opset 28: arithmetic right shift for signed types; negative or too large shifts give
    the sign fill (0 or -1)."""
    x = np.array([-8, 8, -8, 8, 100, -100, 1], np.int8)
    y = np.array([1, 2, 8, 9, -1, -1, 7], np.int8)
    for direction in ("LEFT", "RIGHT"):
        model = _binary("BitShift", I8, I8, [7], [7], direction=direction, opset=28)
        (got,) = _tvm(model, {"a": x, "b": y})
        wide = x.astype(np.int64)
        if direction == "LEFT":
            want = np.where((y < 0) | (y >= 8), 0, (wide << np.clip(y, 0, 7)).astype(np.int8))
        else:
            want = np.where((y < 0) | (y >= 8), np.where(x < 0, -1, 0), wide >> np.clip(y, 0, 7))
        np.testing.assert_array_equal(got, want.astype(np.int8), err_msg=direction)
    u = np.array([1, 128, 255, 3], np.uint8)
    check_tvm(_binary("BitShift", U8, U8, [4], [4], direction="RIGHT", opset=18), {"a": u, "b": np.array([0, 7, 4, 1], np.uint8)})


# -- variadic, selection, clipping ------------------------------------------------------------------
def test_variadic_three_inputs_broadcast() -> None:
    model = _fanout([(op, {}) for op in ("Max", "Min", "Sum", "Mean")], [("a", F, [2, 3]), ("b", F, [3]), ("c", F, [2, 1])])
    feeds = {n: RNG.standard_normal(s).astype(np.float32) for n, s in (("a", (2, 3)), ("b", (3,)), ("c", (2, 1)))}
    check_tvm(model, feeds)


def test_max_min_propagate_nan() -> None:
    a = np.array([1.0, np.nan, 3.0, np.nan], np.float32)
    b = np.array([np.nan, 2.0, 1.0, np.nan], np.float32)
    got = _tvm(_fanout([("Max", {}), ("Min", {})], [("a", F, [4]), ("b", F, [4])]), {"a": a, "b": b})
    np.testing.assert_array_equal(got[0], np.maximum(a, b))
    np.testing.assert_array_equal(got[1], np.minimum(a, b))


def test_integer_mean_and_max() -> None:
    a, b = np.array([1, -7, 8, 5], np.int32), np.array([2, 2, -1, 5], np.int32)
    check_tvm(_binary("Max", I32, I32, [4], [4]), {"a": a, "b": b})
    (got,) = _tvm(_binary("Mean", I32, I32, [4], [4]), {"a": a, "b": b})
    np.testing.assert_array_equal(got, np.trunc((a + b) / 2).astype(np.int32))


def test_where_broadcasts() -> None:
    model = node_model("Where", [("c", B, [2, 1]), ("x", F, [3]), ("y", F, [2, 3])], [("o", F, [2, 3])])
    feeds = {"c": np.array([[True], [False]]), "x": RNG.standard_normal(3).astype(np.float32),
             "y": RNG.standard_normal((2, 3)).astype(np.float32)}
    check_tvm(model, feeds)


def _clip_model(lo: float | None, hi: float | None, elem: int = F) -> Any:
    dtype = helper.tensor_dtype_to_np_dtype(elem)
    inits = []
    names = ["x"]
    for name, v in (("lo", lo), ("hi", hi)):
        if v is None:
            names.append("")
        else:
            inits.append(numpy_helper.from_array(np.array(v, dtype), name))
            names.append(name)
    node = helper.make_node("Clip", names, ["y"])
    graph = helper.make_graph([node], "clip", [helper.make_tensor_value_info("x", elem, [6])],
                              [helper.make_tensor_value_info("y", elem, [6])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_clip_bounds_and_nan() -> None:
    x = np.array([-3.0, -0.5, 0.0, 0.5, 3.0, np.nan], np.float32)
    for lo, hi in ((-1.0, 1.0), (None, 1.0), (-1.0, None), (None, None), (2.0, 1.0)):
        (got,) = _tvm(_clip_model(lo, hi), {"x": x})
        want = x.copy()
        if lo is not None:
            want = np.where(want < lo, lo, want)
        if hi is not None:
            want = np.where(want > hi, hi, want)
        np.testing.assert_array_equal(got, want.astype(np.float32), err_msg=f"{lo}, {hi}")
    xi = np.array([-128, -5, 0, 5, 100, 127], np.int8)
    check_tvm(_clip_model(-10, 50, I8), {"x": xi})


def test_clip_opset_6_attributes() -> None:
    model = _unary("Clip", shape=[6], opset=6, min=-1.0, max=0.5)
    check_tvm(model, {"x": np.array([-3.0, -0.5, 0.0, 0.5, 3.0, 0.25], np.float32)})


# -- casts --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "src,dst,x",
    [
        (F, B, np.array([0.0, -0.0, np.nan, 0.5, -np.inf, 2.0], np.float32)),
        (I32, I8, np.array([200, -200, 127, 128, 0, -1], np.int32)),
        (I32, B, np.array([0, 2, 256, -1, 0, 1], np.int32)),
        (B, F, np.array([True, False, True, False, True, True])),
        (F, H, np.array([1e5, -1e5, 1.0 / 3.0, 65504.0, np.nan, 1e-8], np.float32)),
        (F, I32, np.array([1.9, -1.9, 0.0, 1e6, -3.5, 2.5], np.float32)),
        (D, F, np.array([1e300, 1.0 / 3.0, -1e-300, np.inf, 0.0, 2.0], np.float64)),
        (I64, H, np.array([1, 2049, -70000, 3, 0, 65519], np.int64)),
    ],
)
def test_cast(src: int, dst: int, x: np.ndarray) -> None:
    check_tvm(node_model("Cast", [("x", src, [6])], [("y", dst, [6])], to=dst), {"x": x})


def test_cast_to_bfloat16_rounds_to_nearest_even() -> None:
    x = np.array([1.0, 1.00390625, 1.01171875, 3.4e38, -1.01171875, -2.0], np.float32)
    model = node_model("Cast", [("x", F, [6])], [("y", TensorProto.BFLOAT16, [6])], to=TensorProto.BFLOAT16)
    (got,) = _tvm(model, {"x": x})
    # ties to even: 1 + 2^-8 → 1, 1 + 3 * 2^-8 → 1 + 2^-6; past the largest finite → inf
    np.testing.assert_array_equal(got.astype(np.float32), [1.0, 1.0, 1.015625, np.inf, -1.015625, -2.0])


def test_castlike_takes_the_second_input_type() -> None:
    model = node_model("CastLike", [("x", F, [4]), ("t", I64, [1])], [("y", I64, [4])])
    check_tvm(model, {"x": np.array([1.5, -2.5, 3.0, 0.0], np.float32), "t": np.zeros(1, np.int64)})


def test_cast_to_string_declines() -> None:
    model = node_model("Cast", [("x", F, [4])], [("y", TensorProto.STRING, [4])], to=TensorProto.STRING)
    with pytest.raises(UnsupportedOpError, match="Cast"):
        tvm_session(model)


# -- activations ----------------------------------------------------------------------------------
_ACTIVATIONS = [
    ("LeakyRelu", {"alpha": 0.1}), ("Elu", {"alpha": 0.7}), ("Selu", {}), ("Celu", {"alpha": 2.0}),
    ("HardSigmoid", {"alpha": 0.3, "beta": 0.4}), ("HardSwish", {}), ("ThresholdedRelu", {"alpha": 0.5}),
    ("Shrink", {"bias": 0.3, "lambd": 0.6}), ("Mish", {}), ("Gelu", {}), ("Gelu", {"approximate": "tanh"}),
    ("Relu", {}), ("Softsign", {}),
]


def test_activations_match_onnxruntime() -> None:
    x = (RNG.standard_normal((3, 5)) * 3).astype(np.float32)
    check_tvm(_fanout(_ACTIVATIONS, [("x", F, [3, 5])], opset=22), {"x": x}, rtol=1e-5, atol=1e-6)


def test_swish_with_alpha() -> None:
    x = (RNG.standard_normal((3, 5)) * 3).astype(np.float32)
    (got,) = _tvm(_unary("Swish", shape=[3, 5], opset=24, alpha=0.7), {"x": x})
    np.testing.assert_allclose(got, x / (1 + np.exp(-0.7 * x)), rtol=1e-5, atol=1e-6)


def test_float16_activation_computes_in_float32() -> None:
    x = (RNG.standard_normal((4, 8)) * 3).astype(np.float16)
    check_tvm(_unary("Gelu", H, [4, 8], opset=20), {"x": x}, rtol=1e-3, atol=1e-3)


def test_integer_shrink_truncates() -> None:
    x = np.array([-5, -1, 0, 1, 5, 100], np.int32)
    check_tvm(_unary("Shrink", I32, [6], opset=21, bias=1.5, lambd=1.0), {"x": x}, oracle="reference")


def test_prelu_slope_broadcasts_over_channels() -> None:
    slope = numpy_helper.from_array(np.array([[[0.1]], [[0.2]], [[-0.3]]], np.float32), "s")
    model = node_model("PRelu", [("x", F, [2, 3, 2, 2]), ("s", F, [3, 1, 1])], [("y", F, [2, 3, 2, 2])], initializers=[slope])
    check_tvm(model, {"x": RNG.standard_normal((2, 3, 2, 2)).astype(np.float32)})


# -- ai.onnx.ml -----------------------------------------------------------------------------------
def test_binarizer_and_scaler() -> None:
    x = np.array([[-1.0, 0.5, 2.0], [3.0, 0.0, 0.25]], np.float32)
    model = node_model("Binarizer", [("x", F, [2, 3])], [("y", F, [2, 3])], domain="ai.onnx.ml", threshold=0.3)
    check_tvm(model, {"x": x})
    model = node_model("Scaler", [("x", F, [2, 3])], [("y", F, [2, 3])], domain="ai.onnx.ml",
                       offset=[0.5, -1.0, 2.0], scale=[2.0, 0.5, -1.0])
    check_tvm(model, {"x": x})
    model = node_model("Scaler", [("x", I64, [2, 3])], [("y", F, [2, 3])], domain="ai.onnx.ml", offset=[1.0], scale=[0.5])
    check_tvm(model, {"x": np.array([[1, 2, 3], [-4, 5, 6]], np.int64)})


# -- NaN, infinities, symbolic shapes -------------------------------------------------------------
def test_nan_and_infinities_pass_through_activations_as_in_onnxruntime() -> None:
    """relax's relu and sign, and TIR max/min, turn NaN into a number; ours keep it."""
    ops = [(op, {}) for op in ("Relu", "Sign", "HardSigmoid", "HardSwish", "Celu", "Softplus", "Tanh", "Gelu",
                               "Sigmoid", "Elu", "Selu", "Sinh", "Cosh", "LeakyRelu")]
    x = np.array([np.nan, -1.0, 2.0, -0.0, np.inf, -np.inf], np.float32)
    with np.errstate(all="ignore"):
        check_tvm(_fanout(ops, [("x", F, [6])], opset=22), {"x": x})


def test_symbolic_batch_broadcasts_and_unrelated_dims_decline() -> None:
    model = node_model("Max", [("a", F, ["N", 4]), ("b", F, [4])], [("y", F, ["N", 4])])
    session = tvm_session(model)
    for n in (1, 3):
        a, b = RNG.standard_normal((n, 4)).astype(np.float32), RNG.standard_normal(4).astype(np.float32)
        np.testing.assert_array_equal(session.run({"a": a, "b": b})["y"], np.maximum(a, b))
    model = node_model("Add", [("a", F, ["N", 4]), ("b", F, ["M", 4])], [("y", F, None)])
    with pytest.raises(UnsupportedOpError, match="cannot broadcast"):
        tvm_session(model)
