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


# --------------------------------------------------- inverse trig, hyperbolic, Tan, Shrink, Pow, Mod

MATH_INPUTS = {
    "Asin": np.array([-1.0, -0.99999994, -0.7, -0.5, -1e-30, 0.0, 0.3, 0.5, 0.75, 0.9999, 1.0, 1.5, np.nan]),
    "Acos": np.array([-1.0, -0.99999994, -0.7, -0.5, -1e-30, 0.0, 0.3, 0.5, 0.75, 0.9999, 1.0, -1.5, np.nan]),
    "Atan": np.array([-np.inf, -1e30, -3.0, -1.0, -0.3, -0.0, 0.0, 1e-30, 0.4, 0.5, 2.5, 1e30, np.nan]),
    "Sinh": np.array([-np.inf, -89.0, -20.0, -1.5, -1.0, -0.3, -0.0, 0.0, 1e-30, 0.9, 2.0, 89.4, np.nan]),
    "Cosh": np.array([-np.inf, -89.0, -20.0, -1.5, -1.0, -0.3, -0.0, 0.0, 1e-30, 0.9, 2.0, 89.4, np.nan]),
    "Asinh": np.array([-np.inf, -1e30, -2000.0, -3.0, -0.4, -0.0, 0.0, 1e-30, 0.5, 7.0, 1e5, 3e38, np.nan]),
    "Acosh": np.array([0.5, 1.0, 1.0000001, 1.2, 1.5, 3.0, 100.0, 1499.0, 2000.0, 1e20, 3e38, np.inf, np.nan]),
    "Atanh": np.array([-1.5, -1.0, -0.99999994, -0.6, -0.4, -0.0, 0.0, 1e-30, 0.3, 0.5, 0.999, 1.0, np.nan]),
    "Tan": np.array([-1e30, -12345.678, -1.5707964, -0.785, -0.0, 0.0, 1e-30, 1.0, 1.5707963, 3.0, 8e6, 3e38, np.nan]),
}


def _wide_range(op: str, n: int) -> np.ndarray:
    """Dense samples of each function's interesting range."""
    rng = np.random.default_rng(7)
    lo, hi = {"Asin": (-1, 1), "Acos": (-1, 1), "Atanh": (-1, 1), "Acosh": (1, 50), "Sinh": (-20, 20),
              "Cosh": (-20, 20)}.get(op, (-30, 30))
    return rng.uniform(lo, hi, n)


@pytest.mark.parametrize("op", sorted(MATH_INPUTS))
def test_new_unary_math_against_onnxruntime(op: str) -> None:
    """float32 through the JIT and the interpreter: edge values (domain ends, signed zeros,
    inf, NaN, overflow boundaries) and a dense sample."""
    x = np.concatenate([MATH_INPUTS[op], _wide_range(op, 3 * 37 - MATH_INPUTS[op].size)]).astype(np.float32)
    x = x.reshape(3, 37)
    model = make_model([helper.make_node(op, ["x"], ["y"])], [helper.make_tensor_value_info("x", TP.FLOAT, x.shape)],
                       [helper.make_tensor_value_info("y", TP.FLOAT, x.shape)], opset=18)
    with np.errstate(all="ignore"):
        check_native(model, {"x": x}, rtol=1e-6, atol=0, interpret=True)


@pytest.mark.parametrize("op", sorted(MATH_INPUTS))
def test_new_unary_math_float64_through_float32(op: str) -> None:
    """float64 inputs compute through float32 (about 1e-7 relative); domain ends stay NaN."""
    from tests.backends.native.helpers import interpret_program, lower_model
    from torsh_gen.backends.llvm.jit import JitProgram

    x = np.concatenate([MATH_INPUTS[op], _wide_range(op, 40)])
    if op in ("Asin", "Acos", "Atanh"):
        x = np.concatenate([x, [1.0 + 1e-12, -1.0 - 1e-12]])
    if op == "Acosh":
        x = np.concatenate([x, [1.0 - 1e-12]])
    model = make_model([helper.make_node(op, ["x"], ["y"])], [helper.make_tensor_value_info("x", TP.DOUBLE, x.shape)],
                       [helper.make_tensor_value_info("y", TP.DOUBLE, x.shape)], opset=18)
    ref = {"Asin": np.arcsin, "Acos": np.arccos, "Atan": np.arctan, "Sinh": np.sinh, "Cosh": np.cosh,
           "Asinh": np.arcsinh, "Acosh": np.arccosh, "Atanh": np.arctanh, "Tan": np.tan}[op]
    with np.errstate(all="ignore"):
        want = ref(x.astype(np.float32).astype(np.float64))
        want = np.where(np.isnan(ref(x)), np.nan, want)  # domain checked on the float64 value
    program = lower_model(model)
    for got in (JitProgram(program).run({"x": x})["y"], interpret_program(program, {"x": x})[0]):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=0)


@pytest.mark.parametrize("dtype,np_dtype", [(TP.FLOAT, np.float32), (TP.DOUBLE, np.float64), (TP.INT8, np.int8),
                                            (TP.UINT8, np.uint8), (TP.INT16, np.int16), (TP.UINT16, np.uint16),
                                            (TP.INT32, np.int32), (TP.UINT32, np.uint32), (TP.INT64, np.int64),
                                            (TP.UINT64, np.uint64)])
@pytest.mark.parametrize("attrs", [{}, {"lambd": 1.5, "bias": 1.5}, {"lambd": 1.5, "bias": -10.7}, {"lambd": -300.0, "bias": 2.5}])
def test_shrink(dtype, np_dtype, attrs) -> None:
    """Shrink with its defaults and attributes; integers wrap like onnxruntime's casts
    (int8 120 + 10.7 → -126)."""
    if np.dtype(np_dtype).kind == "f":
        x = (rand(2, 19, seed=3) * 4).astype(np_dtype)
    else:
        info = np.iinfo(np_dtype)
        x = np.random.default_rng(3).integers(max(info.min, -128), min(info.max, 127) + 1, (2, 19)).astype(np_dtype)
        x.flat[:3] = [info.max if info.max < 1000 else 120, 0, 1]
        if np_dtype == np.uint64:
            x.flat[3:5] = [2**63 + 2**40, 2**64 - 2**41]  # above 2**63: the two-step conversion
    model = make_model([helper.make_node("Shrink", ["x"], ["y"], **attrs)], [helper.make_tensor_value_info("x", dtype, x.shape)],
                       [helper.make_tensor_value_info("y", dtype, x.shape)], opset=18)
    if np_dtype != np.float64:
        check_native(model, {"x": x}, rtol=0, atol=0, interpret=True)
        return
    # onnxruntime rounds float64 Shrink to float32; the spec (and onnx's reference) do not
    from onnx.reference import ReferenceEvaluator

    from tests.backends.native.helpers import interpret_program, lower_model
    from torsh_gen.backends.llvm.jit import JitProgram

    want = ReferenceEvaluator(model).run(None, {"x": x})[0]
    program = lower_model(model)
    np.testing.assert_array_equal(JitProgram(program).run({"x": x})["y"], want)
    np.testing.assert_array_equal(interpret_program(program, {"x": x})[0], want)


def _pow_model(ta: int, tb: int, shape: tuple[int, ...]):
    return make_model([helper.make_node("Pow", ["a", "b"], ["y"])],
                      [helper.make_tensor_value_info("a", ta, shape), helper.make_tensor_value_info("b", tb, shape)],
                      [helper.make_tensor_value_info("y", ta, shape)], opset=15)


@pytest.mark.parametrize("ta,a_dt,tb,b_dt", [(TP.INT32, np.int32, TP.INT32, np.int32), (TP.INT64, np.int64, TP.INT64, np.int64),
                                             (TP.INT32, np.int32, TP.INT64, np.int64), (TP.INT64, np.int64, TP.INT32, np.int32)])
def test_integer_pow_matches_onnxruntime(ta, a_dt, tb, b_dt) -> None:
    """Negative exponents truncate (0, +-1, and the integer minimum for 0**-n), overflow
    gives the integer minimum, as onnxruntime does on x86; small results are exact."""
    a = np.array([2, -2, 0, 1, -1, 3, 3, 2, 7, -3, 0, 2, -1, -1, 5, 1, 0, -2], a_dt)
    b = np.array([-1, -1, -1, -5, -5, 20, 40, 30, 11, 19, 0, 31, 70, 71, 0, 99, 3, 63], b_dt)
    check_native(_pow_model(ta, tb, a.shape), {"a": a, "b": b}, rtol=0, atol=0, interpret=True)


def test_int64_pow_is_exact_beyond_float64() -> None:
    """int64 results above 2**53 are exact (onnxruntime's double pow rounds them)."""
    from tests.backends.native.helpers import interpret_program, lower_model
    from torsh_gen.backends.llvm.jit import JitProgram

    a = np.array([3, -3, 7, 2, -2, 9, 10, -5], np.int64)
    b = np.array([39, 39, 22, 62, 63, 19, 18, 27], np.int64)
    want = np.array([int(x) ** int(n) for x, n in zip(a, b)], np.int64)
    program = lower_model(_pow_model(TP.INT64, TP.INT64, a.shape))
    np.testing.assert_array_equal(JitProgram(program).run({"a": a, "b": b})["y"], want)
    np.testing.assert_array_equal(interpret_program(program, {"a": a, "b": b})[0], want)


@pytest.mark.parametrize("ta,a_dt", [(TP.INT32, np.int32), (TP.INT64, np.int64)])
def test_integer_base_float_exponent(ta, a_dt) -> None:
    """Integral float exponents are exact; others truncate the float power (NaN → minimum)."""
    a = np.array([2, -2, 0, 1, -1, 3, 3, 2, 7, -3, 0, 2, 4, 9, 1, -1, 10, 16], a_dt)
    b = np.array([0.5, 1.5, 2.0, -1, 0.5, 2.0, 0.3, 1.0, 2.0, 3.0, -0.5, 2.5, 0.5, 1.5, np.nan, np.inf, 9.0, 0.25], np.float32)
    check_native(_pow_model(ta, TP.FLOAT, a.shape), {"a": a, "b": b}, rtol=0, atol=0, interpret=True)


@pytest.mark.parametrize("ta,a_dt,tb,b_dt", [(TP.FLOAT, np.float32, TP.INT32, np.int32), (TP.FLOAT, np.float32, TP.INT64, np.int64),
                                             (TP.DOUBLE, np.float64, TP.INT64, np.int64)])
def test_float_base_integer_exponent(ta, a_dt, tb, b_dt) -> None:
    """Squaring in float64: float32 results as onnxruntime's pow gives them (signs by
    parity, 0 and inf at the ends, huge exponents)."""
    a = np.array([2.0, -2.0, 0.0, -0.0, 1.5, -1.5, 3.0, 1.0001, -1.0, 0.5, np.nan, np.inf, -np.inf, 7.0, -1.0, 1.5], a_dt)
    b = np.array([-1, -1, -1, -3, 7, 7, 20, 62, 2**30 + 1, 120, 0, -2, 3, -9, -(2**31) + 1, -(2**31)], b_dt)
    check_native(_pow_model(ta, tb, a.shape), {"a": a, "b": b}, rtol=1e-6 if a_dt == np.float32 else 1e-13, atol=0, interpret=True)


def test_pow_constant_integral_exponent_and_declined_base() -> None:
    """x**3.0 with a constant exponent squares (no exp/log); an int16 base is declined."""
    from tests.backends.native.helpers import lower_model
    from torsh_gen.errors import UnsupportedOpError

    three = helper.make_tensor("c", TP.FLOAT, [], [3.0])
    model = make_model([helper.make_node("Pow", ["x", "c"], ["y"])], [helper.make_tensor_value_info("x", TP.FLOAT, (4, 9))],
                       [helper.make_tensor_value_info("y", TP.FLOAT, (4, 9))], [three])
    check_native(model, {"x": rand(4, 9) * 5}, rtol=1e-6, atol=0, interpret=True)
    with pytest.raises(UnsupportedOpError, match="Pow of a i16 base"):
        lower_model(_pow_model(TP.INT16, TP.INT16, (3,)))


def _float_bits(rng: np.random.Generator, n: int, np_dtype) -> np.ndarray:
    """Random bit patterns: every exponent, subnormals, infinities and NaNs."""
    ui = np.uint32 if np_dtype == np.float32 else np.uint64
    return rng.integers(0, np.iinfo(ui).max, n, dtype=np.uint64, endpoint=True).astype(ui).view(np_dtype)


@pytest.mark.parametrize("fmod", [1, 0])
@pytest.mark.parametrize("tdt,np_dtype", [(TP.FLOAT, np.float32), (TP.DOUBLE, np.float64)])
def test_float_mod_is_exact(fmod: int, tdt, np_dtype) -> None:
    """Float Mod equals numpy's fmod (fmod=1) or mod (fmod=0) bit for bit, signed zeros and
    NaNs included, over random bit patterns (huge quotients) and the spec's edge values."""
    from tests.backends.native.helpers import interpret_program, lower_model
    from torsh_gen.backends.llvm.jit import JitProgram

    rng = np.random.default_rng(11)
    edge = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1.0, -1.0, 3.0, -3.0, np.finfo(np_dtype).smallest_subnormal], np_dtype)
    ex, ey = (v.ravel() for v in np.meshgrid(edge, edge))
    x = np.concatenate([ex, _float_bits(rng, 2000, np_dtype), (rng.standard_normal(500) * 1e4).astype(np_dtype),
                        np.array([-4.3, 7.2, 5.0, 4.3, -7.2, 8.0], np_dtype)])
    y = np.concatenate([ey, _float_bits(rng, 2000, np_dtype), rng.standard_normal(500).astype(np_dtype),
                        np.array([2.1, -3.4, 8.0, -2.1, 3.4, 5.0], np_dtype)])
    with np.errstate(all="ignore"):
        want = np.fmod(x, y) if fmod else np.mod(x, y)

    def program(n: int):
        vi = [helper.make_tensor_value_info(name, tdt, (n,)) for name in ("x", "y", "z")]
        return lower_model(make_model([helper.make_node("Mod", ["x", "y"], ["z"], fmod=fmod)], vi[:2], vi[2:], opset=13))

    got = JitProgram(program(x.size)).run({"x": x, "y": y})["z"]
    few = slice(0, 160)  # the interpreter on the edge grid and some random pairs
    out = interpret_program(program(160), {"x": x[few], "y": y[few]})[0]
    for a, b in ((got, want), (out, want[few])):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(np.signbit(a) & ~np.isnan(a), np.signbit(b) & ~np.isnan(b))


@pytest.mark.parametrize("fmod", [0, 1])
@pytest.mark.parametrize("tdt,np_dtype", [(TP.INT32, np.int32), (TP.INT8, np.int8), (TP.UINT8, np.uint8), (TP.INT64, np.int64)])
def test_integer_mod_and_div_never_trap(fmod: int, tdt, np_dtype) -> None:
    """Integer Mod (both fmod settings) and Div: numpy's results, 0 for a zero divisor and
    for MIN % -1 (the division instruction would trap on both)."""
    from tests.backends.native.helpers import interpret_program, lower_model
    from torsh_gen.backends.llvm.jit import JitProgram

    info = np.iinfo(np_dtype)
    rng = np.random.default_rng(2)
    x = np.concatenate([rng.integers(info.min, info.max, 40, endpoint=True), [info.min, info.min, 7, 0, info.max]]).astype(np_dtype)
    y = np.concatenate([rng.integers(-9 if info.min else 0, 10, 40), [-1 if info.min else 1, 0, 0, 0, 3]]).astype(np_dtype)
    nodes = [helper.make_node("Mod", ["x", "y"], ["r"], fmod=fmod), helper.make_node("Div", ["x", "y"], ["q"])]
    vi = [helper.make_tensor_value_info(n, tdt, x.shape) for n in ("x", "y", "r", "q")]
    program = lower_model(make_model(nodes, vi[:2], vi[2:], opset=13))
    with np.errstate(all="ignore"):
        want_r = np.where(y == 0, 0, np.fmod(x, y) if fmod else np.mod(x, y)).astype(np_dtype)
        q = [0 if b == 0 else (abs(int(a)) // abs(int(b))) * (1 if (a < 0) == (b < 0) else -1) for a, b in zip(x, y)]
        want_q = np.array([v if info.min <= v <= info.max else info.min for v in q]).astype(np_dtype)  # MIN / -1 wraps
    for r, qq in (JitProgram(program).run({"x": x, "y": y}).values(), interpret_program(program, {"x": x, "y": y})):
        np.testing.assert_array_equal(r, want_r)
        np.testing.assert_array_equal(qq, want_q)


@pytest.mark.parametrize("training", [None, False])
def test_dropout_mask_output_at_inference(training) -> None:
    """The mask of an inference Dropout is all true; the data passes through."""
    inits = []
    ins = ["x", "r"]
    if training is not None:
        inits.append(helper.make_tensor("t", TP.BOOL, [], [training]))
        ins.append("t")
    inits.append(helper.make_tensor("r", TP.FLOAT, [], [0.3]))
    model = make_model([helper.make_node("Dropout", ins, ["y", "m"])],
                       [helper.make_tensor_value_info("x", TP.FLOAT, (3, 11))],
                       [helper.make_tensor_value_info("y", TP.FLOAT, (3, 11)), helper.make_tensor_value_info("m", TP.BOOL, (3, 11))],
                       inits, opset=13)
    check_native(model, {"x": rand(3, 11)}, interpret=True, level="O0")


def test_dropout_in_training_mode_drops_and_scales() -> None:
    """Training mode: each element is 0 or x / (1 - ratio), the mask says which, about
    ``ratio`` of them dropped; ratio and training flag may come at run time."""
    from tests.backends.native.helpers import interpret_program, lower_model
    from torsh_gen.backends.llvm.jit import JitProgram

    ratio = 0.3
    model = make_model([helper.make_node("Dropout", ["x", "r", "t"], ["y", "m"], seed=7)],
                       [helper.make_tensor_value_info("x", TP.FLOAT, (40, 50)), helper.make_tensor_value_info("t", TP.BOOL, ())],
                       [helper.make_tensor_value_info("y", TP.FLOAT, (40, 50)), helper.make_tensor_value_info("m", TP.BOOL, (40, 50))],
                       [helper.make_tensor("r", TP.FLOAT, [], [ratio])], opset=13)
    x = rand(40, 50) + 5.0
    feeds = {"x": x, "t": np.array(True)}
    program = lower_model(model, level="O0")
    y, m = (JitProgram(program).run(feeds)[k] for k in ("y", "m"))
    np.testing.assert_allclose(y, np.where(m, x / (1 - ratio), 0.0), rtol=1e-6)
    assert abs((~m).mean() - ratio) < 0.03
    for got, want in zip(interpret_program(program, feeds), (y, m)):
        np.testing.assert_array_equal(got, want)
    runtime = make_model([helper.make_node("Dropout", ["x", "r", "t"], ["y", "m"])],
                         [helper.make_tensor_value_info("x", TP.FLOAT, (3, 11)), helper.make_tensor_value_info("r", TP.FLOAT, ()),
                          helper.make_tensor_value_info("t", TP.BOOL, ())],
                         [helper.make_tensor_value_info("y", TP.FLOAT, (3, 11)), helper.make_tensor_value_info("m", TP.BOOL, (3, 11))],
                         opset=13)
    jit = JitProgram(lower_model(runtime, level="O0"))
    x = rand(3, 11)
    for r, t in ((0.0, True), (0.5, False)):  # nothing dropped: ratio 0, or not training
        out = jit.run({"x": x, "r": np.array(r, np.float32), "t": np.array(t)})
        np.testing.assert_array_equal(out["y"], x)
        assert out["m"].all()
    dropped = jit.run({"x": x, "r": np.array(0.5, np.float32), "t": np.array(True)})
    np.testing.assert_allclose(dropped["y"], np.where(dropped["m"], 2 * x, 0.0), rtol=1e-6)
    assert not dropped["m"].all()
