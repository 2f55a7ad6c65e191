"""Linear algebra, attention and quantization kernels compared with onnxruntime."""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np
import pytest
from onnx import TensorProto, helper

from tests.ops.onenode import check_one_node, one_node_model
from torsh_gen.backend import prepare
from torsh_gen.ir.graph import Attribute, AttrKind, Node, Value
from torsh_gen.ir.types import DType, TensorType
from torsh_gen.ops.registry import InferContext, lookup

RNG = np.random.default_rng(7)
F = TensorProto.FLOAT

# Models here default to opset 21 and keep onnx.helper's IR version; inputs are named dicts.
_model = partial(one_node_model, opset=21, ir_version=None)
check = partial(check_one_node, opset=21, ir_version=None, rtol=1e-5, atol=1e-6, in_float64=True)


def _f32(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize(
    ("sa", "sb"),
    [
        ((3, 4), (4, 5)),
        ((4,), (2, 4, 3)),
        ((2, 1, 3, 4), (5, 4, 2)),
        ((4,), (4,)),
        ((3, 0), (0, 2)),
    ],
)
def test_matmul_broadcast_and_1d(sa: tuple[int, ...], sb: tuple[int, ...]) -> None:
    check("MatMul", {"a": _f32(*sa), "b": _f32(*sb)})


def test_matmul_int_and_fp16() -> None:
    a = RNG.integers(-5, 5, (2, 3, 4)).astype(np.int32)
    b = RNG.integers(-5, 5, (4, 2)).astype(np.int32)
    check("MatMul", {"a": a, "b": b})
    check(
        "MatMul",
        {"a": _f32(3, 8).astype(np.float16), "b": _f32(8, 2).astype(np.float16)},
        rtol=2e-3,
        atol=2e-3,
    )


@pytest.mark.parametrize("c_shape", [None, (), (1,), (5,), (3, 1), (3, 5)])
@pytest.mark.parametrize(("ta", "tb"), [(0, 0), (1, 1)])
def test_gemm(c_shape: tuple[int, ...] | None, ta: int, tb: int) -> None:
    a = _f32(4, 3) if ta else _f32(3, 4)
    b = _f32(5, 4) if tb else _f32(4, 5)
    c = None if c_shape is None else _f32(*c_shape)
    check("Gemm", {"a": a, "b": b, "c": c}, transA=ta, transB=tb, alpha=0.5, beta=2.0)


@pytest.mark.parametrize(
    ("eq", "shapes"),
    [
        ("bij,bjk->bik", [(2, 3, 4), (2, 4, 5)]),
        ("ii->i", [(3, 3)]),
        ("...ij->...ji", [(2, 3, 4)]),
        ("ij,ij", [(3, 4), (3, 4)]),
        ("i,j->ij", [(3,), (2,)]),
    ],
)
def test_einsum(eq: str, shapes: list[tuple[int, ...]]) -> None:
    check("Einsum", {f"x{i}": _f32(*s) for i, s in enumerate(shapes)}, equation=eq)


def test_det_batched() -> None:
    check("Det", {"x": _f32(2, 3, 3, 3)}, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("zp_kind", ["none", "scalar", "col"])
def test_matmulinteger_zero_points(zp_kind: str) -> None:
    a = RNG.integers(0, 255, (2, 4, 6)).astype(np.uint8)
    b = RNG.integers(-128, 127, (6, 3)).astype(np.int8)
    inputs: dict[str, np.ndarray | None] = {"a": a, "b": b}
    if zp_kind == "scalar":
        inputs |= {"azp": np.array(12, np.uint8), "bzp": np.array(-3, np.int8)}
    elif zp_kind == "col":
        inputs |= {"azp": np.array(7, np.uint8), "bzp": np.array([1, -5, 9], np.int8)}
    check("MatMulInteger", inputs)


def test_matmulinteger_per_row_zero_point() -> None:
    # onnxruntime accepts only scalar zero points for A: compare with the formula instead
    a = RNG.integers(0, 255, (4, 6)).astype(np.uint8)
    b = RNG.integers(0, 255, (6, 3)).astype(np.uint8)
    azp = RNG.integers(0, 255, (4,)).astype(np.uint8)
    bzp = RNG.integers(0, 255, (3,)).astype(np.uint8)
    m = _model("MatMulInteger", {"a": a, "b": b, "azp": azp, "bzp": bzp})
    y = prepare(m).run([a, b, azp, bzp])[0]
    want = (a.astype(np.int64) - azp[:, None]) @ (b.astype(np.int64) - bzp[None, :])
    assert y.dtype == np.int32 and np.array_equal(y, want)


def test_qlinearmatmul() -> None:
    a = RNG.integers(0, 255, (2, 3, 4)).astype(np.uint8)
    b = RNG.integers(0, 255, (4, 5)).astype(np.uint8)
    sc = np.array(0.02, np.float32)
    inputs = {
        "a": a, "sa": sc, "za": np.array(120, np.uint8),
        "b": b, "sb": np.array(0.01, np.float32), "zb": np.array(130, np.uint8),
        "sy": np.array(0.05, np.float32), "zy": np.array(128, np.uint8),
    }  # fmt: skip
    check("QLinearMatMul", inputs, atol=1)  # rounding of exact halves may differ by one step


@pytest.mark.parametrize("to", [TensorProto.UINT8, TensorProto.INT8, TensorProto.INT16])
def test_quantize_per_tensor_rounds_half_even(to: int) -> None:
    x = np.array(
        [[-3.5, -2.5, -0.5, 0.5, 1.5, 2.5], [300.0, -300.0, 1000, 7.49, 7.51, 0]], np.float32
    )
    zp = np.array(3, helper.tensor_dtype_to_np_dtype(to))
    check("QuantizeLinear", {"x": x, "s": np.array(1.0, np.float32), "zp": zp}, atol=0)


def test_quantize_per_axis_negative_axis_and_blocked() -> None:
    x = _f32(2, 3, 4) * 10
    s = np.array([0.5, 1.0, 2.0, 4.0], np.float32)
    zp = np.array([0, 1, -2, 3], np.int8)
    check("QuantizeLinear", {"x": x, "s": s, "zp": zp}, atol=0, axis=-1)
    sb = np.abs(_f32(2, 3, 2)) + 0.1
    zb = RNG.integers(-3, 3, (2, 3, 2)).astype(np.int8)
    y = check("QuantizeLinear", {"x": x, "s": sb, "zp": zb}, atol=0, axis=2, block_size=2)[0]
    back = check("DequantizeLinear", {"y": y, "s": sb, "zp": zb}, axis=2, block_size=2)[0]
    assert np.abs(back - x).max() <= sb.max() / 2 + 1e-5


def test_quantize_int4_and_float8() -> None:
    import ml_dtypes

    # onnxruntime's python API takes no ml_dtypes inputs: check against known values
    x = np.array([-20.0, -8.4, -1.5, 0.5, 2.5, 7.6, 100.0], np.float32)
    s = np.array(1.0, np.float32)
    zp4 = np.array(0, ml_dtypes.int4)
    y = prepare(_model("QuantizeLinear", {"x": x, "s": s, "zp": zp4})).run([x, s, zp4])[0]
    assert y.dtype == np.dtype(ml_dtypes.int4)
    assert y.astype(np.int8).tolist() == [-8, -8, -2, 0, 2, 7, 7]
    zp8 = np.array(0, ml_dtypes.float8_e4m3fn)
    m = _model("QuantizeLinear", {"x": x * 100, "s": s, "zp": zp8})
    y8 = prepare(m).run([x * 100, s, zp8])[0]
    assert y8.dtype == np.dtype(ml_dtypes.float8_e4m3fn)
    assert float(y8[0]) == -448.0 and float(y8[-1]) == 448.0  # saturated
    m = _model("QuantizeLinear", {"x": x * 100, "s": s, "zp": zp8}, saturate=0)
    assert np.isnan(float(prepare(m).run([x * 100, s, zp8])[0][-1]))


def test_dequantize_per_axis_and_int32() -> None:
    x = RNG.integers(-128, 127, (3, 4)).astype(np.int8)
    s = np.array([0.1, 0.2, 0.3], np.float32)
    zp = np.array([1, -1, 0], np.int8)
    check("DequantizeLinear", {"x": x, "s": s, "zp": zp}, axis=0)
    xi = RNG.integers(-(2**20), 2**20, (5,)).astype(np.int32)
    check("DequantizeLinear", {"x": xi, "s": np.array(0.25, np.float32)})


@pytest.mark.parametrize("lo_hi", [(-1.0, 2.0), (0.5, 3.0), (-4.0, -1.0)])
def test_dynamic_quantize(lo_hi: tuple[float, float]) -> None:
    x = RNG.uniform(*lo_hi, (3, 7)).astype(np.float32)
    check("DynamicQuantizeLinear", {"x": x}, n_outputs=3, atol=1)


def test_attention_3d_gqa_causal_with_past() -> None:
    b, sq, past, hq, hkv, d = 2, 3, 4, 4, 2, 8
    inputs = {
        "q": _f32(b, sq, hq * d),
        "k": _f32(b, sq, hkv * d),
        "v": _f32(b, sq, hkv * d),
        "mask": None,
        "pk": _f32(b, hkv, past, d),
        "pv": _f32(b, hkv, past, d),
    }
    check(
        "Attention", inputs, n_outputs=3, opset=23, rtol=1e-4, atol=1e-5,
        q_num_heads=hq, kv_num_heads=hkv, is_causal=1,
    )  # fmt: skip


@pytest.mark.parametrize("bool_mask", [False, True])
def test_attention_4d_mask_softcap(bool_mask: bool) -> None:
    q, k, v = _f32(1, 2, 3, 4), _f32(1, 2, 5, 4), _f32(1, 2, 5, 6)
    mask = RNG.random((3, 5)) > 0.3 if bool_mask else _f32(3, 5)
    if bool_mask:
        mask[:, 0] = True
    check("Attention", {"q": q, "k": k, "v": v, "mask": mask}, opset=23, rtol=1e-4, atol=1e-5,
           softcap=2.0, scale=0.3)  # fmt: skip


def test_attention_fully_masked_row_is_zero() -> None:
    q, k, v = _f32(1, 1, 2, 4), _f32(1, 1, 3, 4), _f32(1, 1, 3, 4)
    mask = np.array([[False, False, False], [True, False, True]])
    m = _model("Attention", {"q": q, "k": k, "v": v, "mask": mask}, n_outputs=4, opset=23,
               qk_matmul_output_mode=3)  # fmt: skip
    y, _, _, probs = prepare(m).run([q, k, v, mask])
    assert np.all(y[0, 0, 0] == 0) and np.all(probs[0, 0, 0] == 0)
    assert np.isfinite(y).all() and np.allclose(probs[0, 0, 1].sum(), 1.0)


@pytest.mark.parametrize("interleaved", [0, 1])
def test_rotary_embedding_3d_partial(interleaved: int) -> None:
    b, s, h, d, rdim = 2, 3, 2, 8, 4
    x = _f32(b, s, h * d)
    cos, sin = _f32(10, rdim // 2), _f32(10, rdim // 2)
    pos = RNG.integers(0, 10, (b, s)).astype(np.int64)
    inputs = {"x": x, "cos": cos, "sin": sin, "pos": pos}
    check("RotaryEmbedding", inputs, opset=23, num_heads=h, rotary_embedding_dim=rdim,
           interleaved=interleaved)  # fmt: skip


def _cost(op_type: str, shapes: list[tuple[int, ...]], out: tuple[int, ...], **attrs: Any) -> Any:
    spec = lookup(op_type, "", 23)
    vals = [Value(f"i{i}", TensorType(DType.FLOAT, s)) for i, s in enumerate(shapes)]
    node = Node(op_type, vals, [Value("o", TensorType(DType.FLOAT, out))])
    for k, v in attrs.items():
        node.attrs[k] = Attribute(AttrKind.INT, v)
    ctx = InferContext(node, spec.resolve_attrs(node), [v.type for v in vals], [None] * 3, 23)
    return spec.cost(ctx, [TensorType(DType.FLOAT, out)])


def test_costs() -> None:
    c = _cost("MatMul", [(2, 3, 4), (4, 5)], (2, 3, 5))
    assert (c.macs, c.flops) == (2 * 3 * 5 * 4, 2 * 2 * 3 * 5 * 4)
    c = _cost("Gemm", [(4, 3), (4, 5)], (3, 5), transA=1)
    assert c.macs == 3 * 5 * 4
    c = _cost("Attention", [(1, 2, 3, 8), (1, 2, 5, 8), (1, 2, 5, 6)], (1, 2, 3, 6))
    assert c.macs == 2 * 3 * 5 * (8 + 6)
