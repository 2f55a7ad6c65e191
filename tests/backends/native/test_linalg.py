"""MatMul, Gemm and FusedMatMul through the tiled micro-kernel, against onnxruntime."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto as TP
from onnx import helper, numpy_helper

from tests.backends.native.helpers import check_native, make_model, rand

NP_TO_TP = {np.float32: TP.FLOAT, np.float64: TP.DOUBLE, np.int64: TP.INT64, np.int32: TP.INT32}


def _vi(name: str, shape: tuple[int, ...], dtype=np.float32):
    return helper.make_tensor_value_info(name, NP_TO_TP[dtype], shape)


def _data(shape: tuple[int, ...], seed: int, dtype=np.float32) -> np.ndarray:
    if np.issubdtype(dtype, np.integer):
        return np.random.default_rng(seed).integers(-4, 5, shape).astype(dtype)
    return rand(*shape, seed=seed).astype(dtype)


def _matmul_model(ash, bsh, const_b: bool, dtype=np.float32):
    out = np.matmul(np.zeros(ash), np.zeros(bsh)).shape
    b = _data(bsh, 2, dtype)
    inits = [numpy_helper.from_array(b, "b")] if const_b else []
    ins = [_vi("a", ash, dtype)] + ([] if const_b else [_vi("b", bsh, dtype)])
    model = make_model(
        [helper.make_node("MatMul", ["a", "b"], ["y"])], ins, [_vi("y", out, dtype)], inits
    )
    feeds = {"a": _data(ash, 1, dtype)}
    if not const_b:
        feeds["b"] = b
    return model, feeds


@pytest.mark.parametrize(
    "ash,bsh",
    [
        ((29,), (29, 13)),  # 1-D x 2-D
        ((7, 29), (29,)),  # 2-D x 1-D
        ((29,), (29,)),  # dot product
        ((7, 29), (29, 13)),  # odd M, N, K
        ((1, 784), (784, 40)),  # M = 1
        ((5, 1), (1, 40)),  # K = 1
        ((2, 3, 7, 9), (9, 33)),  # batch folded into M
        ((2, 1, 7, 9), (3, 9, 33)),  # 4-D broadcast
        ((4, 13, 70), (4, 70, 37)),  # batched, both operands
        ((20, 300), (300, 70)),  # K sliced for L1
        ((64, 40), (40, 96)),  # full panels only
    ],
)
@pytest.mark.parametrize("const_b", [True, False])
def test_matmul_shapes(ash, bsh, const_b: bool) -> None:
    model, feeds = _matmul_model(ash, bsh, const_b)
    program = check_native(model, feeds, lanes=16, rtol=1e-4, atol=2e-4)
    assert [c.op_type for c in program.calls] == ["MatMul"]


@pytest.mark.parametrize("lanes", [4, 8])
def test_matmul_interpreted(lanes: int) -> None:
    """The kernel-IR interpreter agrees too (small shapes; K sliced for 8 lanes)."""
    model, feeds = _matmul_model((13, 5), (5, 11), True)
    check_native(model, feeds, lanes=lanes, interpret=True)
    model, feeds = _matmul_model((2, 7, 9), (2, 9, 6), False)
    check_native(model, feeds, lanes=lanes, interpret=True)


def test_matmul_k_slices_interpreted() -> None:
    """With 4 lanes a K slice is 512: K = 800 makes two slices (first, last flags)."""
    model, feeds = _matmul_model((7, 800), (800, 3), True)
    check_native(model, feeds, lanes=4, interpret=True, atol=5e-4)


@pytest.mark.parametrize("dtype", [np.float64, np.int64, np.int32])
def test_matmul_dtypes(dtype) -> None:
    model, feeds = _matmul_model((9, 17), (17, 21), False, dtype)
    check_native(model, feeds)
    model, feeds = _matmul_model((3, 9, 17), (17, 21), True, dtype)
    check_native(model, feeds)


@pytest.mark.parametrize("trans_a", [0, 1])
@pytest.mark.parametrize("trans_b", [0, 1])
@pytest.mark.parametrize(
    "alpha,beta,c_shape",
    [(1.0, 1.0, None), (0.5, 2.0, (23,)), (1.0, 1.0, (9, 1)), (1.5, 0.0, (9, 23)), (1.0, -1.0, ())],
)
def test_gemm(trans_a: int, trans_b: int, alpha: float, beta: float, c_shape) -> None:
    m, k, n = 9, 31, 23
    ash = (k, m) if trans_a else (m, k)
    bsh = (n, k) if trans_b else (k, n)
    inits = [numpy_helper.from_array(rand(*bsh, seed=2), "b")]
    inputs = ["a", "b"]
    if c_shape is not None:
        inits.append(
            numpy_helper.from_array(
                np.asarray(rand(*(c_shape or (1,)), seed=3)).reshape(c_shape), "c"
            )
        )
        inputs.append("c")
    node = helper.make_node(
        "Gemm", inputs, ["y"], alpha=alpha, beta=beta, transA=trans_a, transB=trans_b
    )
    model = make_model([node], [_vi("a", ash)], [_vi("y", (m, n))], inits)
    check_native(model, {"a": rand(*ash, seed=1)}, level="O0")


@pytest.mark.parametrize("trans_b", [0, 1])
def test_gemm_runtime_b(trans_b: int) -> None:
    """B as a model input: no packing; transB reads it with a stride per lane."""
    m, k, n = 14, 20, 40
    bsh = (n, k) if trans_b else (k, n)
    c = numpy_helper.from_array(rand(n, seed=3), "c")
    node = helper.make_node("Gemm", ["a", "b", "c"], ["y"], alpha=0.7, transB=trans_b)
    model = make_model([node], [_vi("a", (m, k)), _vi("b", bsh)], [_vi("y", (m, n))], [c])
    check_native(model, {"a": rand(m, k, seed=1), "b": rand(*bsh, seed=2)}, level="O0")


def _fused_model(act: str, residual: bool, gemm: bool = False):
    m, k, n = 19, 37, 45
    inits = [
        numpy_helper.from_array(rand(n, k, seed=2) if gemm else rand(k, n, seed=2), "w"),
        numpy_helper.from_array(rand(n, seed=3), "bias"),
    ]
    if gemm:
        nodes = [helper.make_node("Gemm", ["a", "w", "bias"], ["t"], transB=1)]
    else:
        nodes = [
            helper.make_node("MatMul", ["a", "w"], ["mm"]),
            helper.make_node("Add", ["mm", "bias"], ["t"]),
        ]
    ins = [_vi("a", (m, k))]
    last = "t"
    if residual:
        nodes.append(helper.make_node("Add", ["t", "z"], ["r"]))
        ins.append(_vi("z", (m, n)))
        last = "r"
    if act == "LeakyRelu":
        nodes.append(helper.make_node(act, [last], ["y"], alpha=0.1))
    else:
        nodes.append(helper.make_node(act, [last], ["y"]))
    model = make_model(nodes, ins, [_vi("y", (m, n))], inits)
    feeds = {"a": rand(m, k, seed=1)}
    if residual:
        feeds["z"] = rand(m, n, seed=4)
    return model, feeds


@pytest.mark.parametrize("act", ["Relu", "Sigmoid", "Tanh", "LeakyRelu", "HardSwish"])
@pytest.mark.parametrize("residual", [False, True])
def test_fused_matmul_from_o3(act: str, residual: bool) -> None:
    """MatMul + Add(bias) [+ Add(residual)] + activation fuses into one FusedMatMul."""
    model, feeds = _fused_model(act, residual)
    program = check_native(model, feeds, lanes=16)
    assert [c.op_type for c in program.calls] == ["FusedMatMul"]


def test_fused_gemm_trans_b() -> None:
    """Gemm(transB=1) with a bias and Relu: the pass stores B transposed, then we pack it."""
    model, feeds = _fused_model("Relu", False, gemm=True)
    program = check_native(model, feeds, lanes=8, interpret=True)
    assert [c.op_type for c in program.calls] == ["FusedMatMul"]


def test_fused_batched_residual() -> None:
    """A 3-D activation times a weight with bias and residual: the batch folds into M."""
    nodes = [
        helper.make_node("MatMul", ["a", "w"], ["mm"]),
        helper.make_node("Add", ["mm", "bias"], ["t"]),
        helper.make_node("Add", ["t", "z"], ["y"]),
    ]
    inits = [
        numpy_helper.from_array(rand(24, 50, seed=2), "w"),
        numpy_helper.from_array(rand(50, seed=3), "bias"),
    ]
    model = make_model(
        nodes, [_vi("a", (3, 11, 24)), _vi("z", (3, 11, 50))], [_vi("y", (3, 11, 50))], inits
    )
    program = check_native(model, {"a": rand(3, 11, 24, seed=1), "z": rand(3, 11, 50, seed=4)})
    assert [c.op_type for c in program.calls] == ["FusedMatMul"]


def _int8(shape, seed: int, dtype) -> np.ndarray:
    lo, hi = (0, 256) if dtype == np.uint8 else (-128, 128)
    return np.random.default_rng(seed).integers(lo, hi, shape).astype(dtype)


@pytest.mark.parametrize(
    "a_dt,b_dt", [(np.uint8, np.int8), (np.uint8, np.uint8), (np.int8, np.int8)]
)
@pytest.mark.parametrize("const_b", [True, False])
@pytest.mark.parametrize("per_column", [False, True])
def test_matmul_integer(a_dt, b_dt, const_b: bool, per_column: bool) -> None:
    """(A - a_zp) @ (B - b_zp) in int32; B's zero point per tensor or per column."""
    ash, bsh = (2, 9, 37), (37, 21)
    b = _int8(bsh, 2, b_dt)
    zb = _int8((21,) if per_column else (), 4, b_dt)
    inits = [numpy_helper.from_array(_int8((), 3, a_dt), "za"), numpy_helper.from_array(zb, "zb")]
    tp = {np.uint8: TP.UINT8, np.int8: TP.INT8}
    ins = [helper.make_tensor_value_info("a", tp[a_dt], ash)]
    if const_b:
        inits.append(numpy_helper.from_array(b, "b"))
    else:
        ins.append(helper.make_tensor_value_info("b", tp[b_dt], bsh))
    node = helper.make_node("MatMulInteger", ["a", "b", "za", "zb"], ["y"])
    model = make_model([node], ins, [_vi("y", (2, 9, 21), np.int32)], inits)
    feeds = {"a": _int8(ash, 1, a_dt)} | ({} if const_b else {"b": b})
    check_native(model, feeds, interpret=not const_b and per_column and a_dt == np.uint8)


@pytest.mark.parametrize("per_column", [False, True])
@pytest.mark.parametrize("const_b", [True, False])
def test_qlinear_matmul(per_column: bool, const_b: bool) -> None:
    """Requantized in the epilogue (level O1: O3 turns a constant-weight one into QGemm);
    onnxruntime's float32 multiplier can round a tie the other way: atol of one step."""
    m, k, n = 13, 40, 35
    b = _int8((k, n), 2, np.int8)
    b_scale = np.abs(rand(n, seed=5)) * 0.01 + 0.005 if per_column else np.float32(0.01)
    consts = {
        "sa": np.float32(0.02),
        "za": np.uint8(128),
        "sb": np.asarray(b_scale, np.float32),
        "zb": np.int8(0) if per_column else np.int8(3),
        "sy": np.float32(0.05),
        "zy": np.uint8(120),
    }
    inits = [numpy_helper.from_array(np.asarray(v), k_) for k_, v in consts.items()]
    ins = [helper.make_tensor_value_info("a", TP.UINT8, (m, k))]
    if const_b:
        inits.append(numpy_helper.from_array(b, "b"))
    else:
        ins.append(helper.make_tensor_value_info("b", TP.INT8, (k, n)))
    node = helper.make_node("QLinearMatMul", ["a", "sa", "za", "b", "sb", "zb", "sy", "zy"], ["y"])
    model = make_model([node], ins, [helper.make_tensor_value_info("y", TP.UINT8, (m, n))], inits)
    feeds = {"a": _int8((m, k), 1, np.uint8)} | ({} if const_b else {"b": b})
    program = check_native(model, feeds, level="O1", rtol=0, atol=1)
    assert [c.op_type for c in program.calls] == ["QLinearMatMul"]


@pytest.mark.parametrize("per_column", [False, True])
@pytest.mark.parametrize("a_dt", [np.uint8, np.int8])
def test_qlinear_matmul_scales_and_zero_points_at_run_time(per_column: bool, a_dt) -> None:
    """Every scale and zero point is a model input: the multiplier is computed in the
    kernel (per column into scratch), y's zero point read at run time. Batched A."""
    m, k, n = 5, 19, 11
    tp = {np.uint8: TP.UINT8, np.int8: TP.INT8}
    feeds = {
        "a": _int8((2, m, k), 1, a_dt),
        "sa": np.array([0.02], np.float32),
        "za": _int8((1,), 3, a_dt),
        "b": _int8((k, n), 2, np.int8),
        "sb": (np.abs(rand(n, seed=5)) * 0.01 + 0.005) if per_column else np.array([0.013], np.float32),
        "zb": np.zeros(n, np.int8) if per_column else np.array([3], np.int8),
        "sy": np.array([0.05], np.float32),
        "zy": _int8((1,), 4, a_dt),
    }
    ins = [helper.make_tensor_value_info(name, tp.get(v.dtype.type, TP.FLOAT), v.shape) for name, v in feeds.items()]
    node = helper.make_node("QLinearMatMul", list(feeds), ["y"])
    model = make_model([node], ins, [helper.make_tensor_value_info("y", tp[a_dt], (2, m, n))])
    program = check_native(model, feeds, rtol=0, atol=1, interpret=per_column)
    assert [c.op_type for c in program.calls] == ["QLinearMatMul"]


def test_qlinear_matmul_per_row_scale_is_declined() -> None:
    from tests.backends.native.helpers import lower_model
    from torsh_gen.errors import UnsupportedOpError

    shapes = {"a": (3, 4), "sa": (3,), "za": (), "b": (4, 2), "sb": (), "zb": (), "sy": (), "zy": ()}
    types = {"a": TP.UINT8, "za": TP.UINT8, "b": TP.UINT8, "zb": TP.UINT8, "zy": TP.UINT8}
    ins = [helper.make_tensor_value_info(k, types.get(k, TP.FLOAT), s) for k, s in shapes.items()]
    node = helper.make_node("QLinearMatMul", list(shapes), ["y"])
    model = make_model([node], ins, [helper.make_tensor_value_info("y", TP.UINT8, (3, 2))])
    with pytest.raises(UnsupportedOpError, match="scales must be per tensor"):
        lower_model(model)
