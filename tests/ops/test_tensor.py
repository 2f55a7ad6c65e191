"""Tensor/shape-family kernels compared with onnxruntime on small models.

Each case builds a one-node model (two nodes for round trips through types onnxruntime
cannot feed, such as float8 and int4), runs it through onnxruntime and through
``torsh_gen.backend``, and requires the same shapes, dtypes and values. Early-opset
variants (attributes that later became inputs) are checked at the opsets that had them.
"""

from __future__ import annotations

from typing import Any

import ml_dtypes
import numpy as np
import onnx
import pytest
from onnx import TensorProto as TP
from onnx import helper

from tests.ops.onenode import assert_matches_onnxruntime, check_one_node, graph_model
from torsh_gen.backend import prepare

RNG = np.random.default_rng(11)


def _ir_version(opset: int) -> int:
    """The IR version this file's models use: 10 from opset 21 on, 8 before."""
    return 8 if opset < 21 else 10


def _model(
    nodes: list[onnx.NodeProto], inputs: list[np.ndarray | None], opset: int
) -> onnx.ModelProto:
    """A model over ``nodes`` whose inputs are x0.. (None = omitted) and outputs the last node's."""
    return graph_model(nodes, inputs, {"": opset}, ir_version=_ir_version(opset))


def compare(model: onnx.ModelProto, inputs: list[np.ndarray | None]) -> list[Any]:
    """Run ``model`` on both runtimes, assert equal outputs, return ours."""
    return assert_matches_onnxruntime(model, inputs, rtol=1e-6, atol=0)


def check(
    op_type: str,
    inputs: list[np.ndarray | None],
    n_outputs: int = 1,
    opset: int = 18,
    **attrs: Any,
) -> list[Any]:
    """One-node model of ``op_type`` compared between the runtimes."""
    return check_one_node(
        op_type, inputs, n_outputs, opset, rtol=1e-6, atol=0, ir_version=_ir_version(opset), **attrs
    )


def i64(*v: int) -> np.ndarray:
    return np.array(v, dtype=np.int64)


def randn(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


# --------------------------------------------------------------------------- Cast
SPECIALS = np.array(
    [0.47892547, -1.5, 1e6, 1e-7, np.nan, np.inf, -np.inf, -1e-7, -1e6, 0.0, 3.25], np.float32
)


@pytest.mark.parametrize(
    "to", [TP.FLOAT8E4M3FN, TP.FLOAT8E4M3FNUZ, TP.FLOAT8E5M2, TP.FLOAT8E5M2FNUZ]
)
@pytest.mark.parametrize("saturate", [0, 1])
def test_cast_float8_round_trip(to: int, saturate: int) -> None:
    nodes = [
        helper.make_node("Cast", ["x0"], ["t"], to=to, saturate=saturate),
        helper.make_node("Cast", ["t"], ["y0"], to=TP.FLOAT),
    ]
    compare(_model(nodes, [SPECIALS], 21), [SPECIALS])


@pytest.mark.parametrize("to", [TP.INT4, TP.UINT4])
def test_cast_4bit_round_trip(to: int) -> None:
    x = np.arange(-8, 16, dtype=np.int32)
    x = x[(x >= 0) | (to == TP.INT4)][:16]
    nodes = [
        helper.make_node("Cast", ["x0"], ["t"], to=to),
        helper.make_node("Cast", ["t"], ["y0"], to=TP.INT32),
    ]
    compare(_model(nodes, [x], 21), [x])


def test_cast_4bit_wraps_out_of_range() -> None:
    node = helper.make_node("Cast", ["x0"], ["y0"], to=TP.INT4)
    x = np.array([7, 8, -9, 15, 16], np.int32)
    (got,) = prepare(_model([node], [x], 21)).run([x])
    assert got.dtype == ml_dtypes.int4
    assert got.astype(np.int32).tolist() == [7, -8, 7, -1, 0]


@pytest.mark.parametrize(
    "src,to",
    [
        (np.float32, TP.FLOAT16),
        (np.float32, TP.BFLOAT16),
        (np.float64, TP.FLOAT),
        (np.float32, TP.INT32),
        (np.int64, TP.INT8),  # wraps: discard high bits
        (np.int32, TP.BOOL),
        (np.bool_, TP.FLOAT),
        (np.uint8, TP.INT64),
        (np.float16, TP.DOUBLE),
    ],
)
def test_cast_numeric(src: type, to: int) -> None:
    x = (RNG.standard_normal(12) * 100).astype(src)
    if to == TP.BFLOAT16:
        nodes = [
            helper.make_node("Cast", ["x0"], ["t"], to=to),
            helper.make_node("Cast", ["t"], ["y0"], to=TP.FLOAT),
        ]
        compare(_model(nodes, [x], 18), [x])
    else:
        check("Cast", [x], to=to)


def test_cast_number_to_string() -> None:
    x = np.array(
        [0.47892547, 1.0, 1e6, 1e-7, np.nan, np.inf, -np.inf, 3.14159265, 123456789.0], np.float32
    )
    check("Cast", [x], to=TP.STRING)
    check("Cast", [np.array([1, -5, 2**40], np.int64)], to=TP.STRING)


@pytest.mark.parametrize("to", [TP.FLOAT, TP.DOUBLE, TP.INT64, TP.INT32])
def test_cast_string_to_number(to: int) -> None:
    strs = ["1.5", "INF", "-inf", "NaN", "1e-5", "+INF", "-2.75", "1E8"]
    if to in (TP.INT64, TP.INT32):
        strs = ["15", "-3", "1000", "0"]
    check("Cast", [np.array(strs, dtype=object)], to=to)


def test_castlike_takes_type_of_second_input() -> None:
    check("CastLike", [randn(3, 4), np.zeros((1,), np.float16)], opset=19)
    check("CastLike", [np.array([1, 2, 300], np.int32), np.zeros((0,), np.uint8)], opset=19)


def test_cast_e8m0_rounding_modes() -> None:
    x = np.array([0.0, 0.124, 0.25, 1.1, 1.5, 1.6, 3.0, 3e38, np.inf], np.float32)
    expect = {
        "up": [2.0**-127, 0.125, 0.25, 2, 2, 2, 4, 2.0**127, 2.0**127],
        "down": [2.0**-127, 0.0625, 0.25, 1, 1, 1, 2, 2.0**127, 2.0**127],
        "nearest": [2.0**-127, 0.125, 0.25, 1, 2, 2, 4, 2.0**127, 2.0**127],
    }
    for mode, ref in expect.items():
        node = helper.make_node("Cast", ["x0"], ["y0"], to=TP.FLOAT8E8M0, round_mode=mode)
        (got,) = prepare(_model([node], [x], 24)).run([x])
        assert got.dtype == ml_dtypes.float8_e8m0fnu
        np.testing.assert_array_equal(got.astype(np.float64), np.array(ref))


# --------------------------------------------------------------------------- Constant & co
def test_constant_attribute_kinds() -> None:
    cases = {
        "value_float": (2.5, np.array(2.5, np.float32)),
        "value_floats": ([1.0, 2.0], np.array([1, 2], np.float32)),
        "value_int": (7, np.array(7, np.int64)),
        "value_ints": ([3, 4, 5], np.array([3, 4, 5], np.int64)),
        "value": (
            helper.make_tensor("v", TP.INT32, [2, 2], [1, 2, 3, 4]),
            np.array([[1, 2], [3, 4]], np.int32),
        ),
    }
    for name, (value, ref) in cases.items():
        node = helper.make_node("Constant", [], ["y0"], **{name: value})
        (got,) = compare(_model([node], [], 13), [])
        np.testing.assert_array_equal(got, ref)
        assert got.dtype == ref.dtype and got.shape == ref.shape


def test_constant_strings_and_sparse() -> None:
    node = helper.make_node("Constant", [], ["y0"], value_strings=["a", "bc"])
    assert compare(_model([node], [], 13), [])[0].tolist() == ["a", "bc"]
    sparse = helper.make_sparse_tensor(
        helper.make_tensor("v", TP.FLOAT, [2], [5.0, 6.0]),
        helper.make_tensor("i", TP.INT64, [2], [1, 4]),
        [2, 3],
    )
    node = helper.make_node("Constant", [], ["y0"], sparse_value=sparse)
    (got,) = prepare(_model([node], [], 13)).run([])
    np.testing.assert_array_equal(got, np.array([[0, 5, 0], [0, 6, 0]], np.float32))


def test_identity_shape_size() -> None:
    x = randn(2, 3, 4)
    check("Identity", [x])
    check("Size", [x])
    check("Shape", [x])
    for start, end in [(1, None), (-1, None), (0, -1), (-10, 10), (2, 1)]:
        attrs = {"start": start} | ({} if end is None else {"end": end})
        check("Shape", [x], opset=15, **attrs)


def test_constant_of_shape_range_eyelike() -> None:
    check("ConstantOfShape", [i64(2, 3)], opset=9)
    check(
        "ConstantOfShape", [i64(2, 0)], value=helper.make_tensor("v", TP.INT32, [1], [7]), opset=9
    )
    check(
        "Range", [np.array(10, np.int32), np.array(1, np.int32), np.array(-3, np.int32)], opset=11
    )
    check(
        "Range",
        [np.array(1.0, np.float32), np.array(5.1, np.float32), np.array(0.5, np.float32)],
        opset=11,
    )
    check(
        "Range", [np.array(5, np.int64), np.array(1, np.int64), np.array(2, np.int64)], opset=11
    )  # empty
    xs = [i64(2), i64(9), i64(3)]  # one-element 1-D inputs, as some exporters write
    node = helper.make_node("Range", ["x0", "x1", "x2"], ["y0"])
    np.testing.assert_array_equal(prepare(_model([node], xs, 11)).run(xs)[0], i64(2, 5, 8))
    check("EyeLike", [np.zeros((3, 5), np.int32)], k=-1)
    check("EyeLike", [randn(4, 2)], dtype=TP.DOUBLE, k=1)


def test_bitcast() -> None:
    x = randn(2, 3)
    node = helper.make_node("BitCast", ["x0"], ["y0"], to=TP.INT32)
    (got,) = prepare(_model([node], [x], 26)).run([x])
    np.testing.assert_array_equal(got, x.view(np.int32))
    node = helper.make_node("BitCast", ["x0"], ["y0"], to=TP.UINT4)
    x4 = np.array([-1, -8, 3], ml_dtypes.int4)
    (got,) = prepare(_model([node], [x4], 26)).run([x4])
    assert got.dtype == ml_dtypes.uint4 and got.astype(int).tolist() == [15, 8, 3]


# --------------------------------------------------------------------------- layout
def test_reshape_variants() -> None:
    x = randn(2, 3, 4)
    check("Reshape", [x, i64(0, -1)])
    check("Reshape", [x, i64(4, 0, 2)])
    check("Reshape", [x, i64(-1)])
    check("Reshape", [np.zeros((0, 3), np.float32), i64(3, 0)], allowzero=1, opset=14)
    check("Flatten", [x], axis=0)
    check("Flatten", [x], axis=-1)
    check("Flatten", [x], axis=3, opset=11)


def test_squeeze_unsqueeze_both_forms() -> None:
    x = randn(1, 3, 1, 2)
    check("Squeeze", [x])
    check("Squeeze", [x, i64(-2)], opset=13)
    check("Squeeze", [x], axes=[0, 2], opset=11)
    y = randn(3, 2)
    check("Unsqueeze", [y, i64(3, 0, -1)], opset=13)
    check("Unsqueeze", [y], axes=[-1, 1], opset=11)


def test_transpose_concat() -> None:
    x = randn(2, 3, 4)
    check("Transpose", [x])
    check("Transpose", [x], perm=[1, 2, 0])
    check("Concat", [x, randn(2, 1, 4), np.zeros((2, 0, 4), np.float32)], axis=-2)
    check("Concat", [np.array(["a", "b"], object), np.array(["c"], object)], axis=0)


def test_split_versions() -> None:
    x = randn(7, 2)
    check("Split", [x], n_outputs=4, num_outputs=4, opset=18)  # uneven: 2, 2, 2, 1
    check("Split", [x, i64(3, 0, 4)], n_outputs=3, opset=13)
    check("Split", [x], n_outputs=3, split=[1, 2, 4], opset=11)
    check("Split", [randn(2, 6)], n_outputs=3, axis=-1, opset=11)


def test_slice_versions() -> None:
    x = randn(5, 6, 4)
    check("Slice", [x, i64(1, -100), i64(1000, -1)])
    check(
        "Slice", [x, i64(-1, 10), i64(-1000, 0), i64(0, 1), i64(-2, -3)]
    )  # negative steps, clamps
    check("Slice", [x, i64(3), i64(3), i64(-1)])  # empty
    check("Slice", [x], starts=[1, 0], ends=[10, -1], axes=[0, 2], opset=9)
    check("Slice", [x], starts=[-2], ends=[2**62], opset=9)


def test_expand_tile() -> None:
    check("Expand", [randn(3, 1), i64(2, 1, 4)])
    check("Expand", [randn(2, 3), i64(3)])  # shape smaller than input's: broadcast
    check("Tile", [randn(2, 3), i64(3, 2)])
    check("Tile", [np.zeros((0, 2), np.int32), i64(2, 2)])


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge", "wrap"])
def test_pad_modes(mode: str) -> None:
    x = randn(3, 4, 5)
    opset = 19 if mode == "wrap" else 18
    check("Pad", [x, i64(0, 2, 1, 1, 3, 2)], mode=mode, opset=opset)
    check("Pad", [x, i64(1, -1, 0, 1), None, i64(-1, 0)], mode=mode, opset=opset)


def test_pad_old_forms_and_constant_value() -> None:
    x = randn(2, 3)
    check("Pad", [x, i64(1, 0, -1, 2), np.array(1.5, np.float32)], opset=13)
    check("Pad", [x], pads=[0, 1, 2, 0], value=-3.0, opset=10)
    check(
        "Pad",
        [np.arange(6, dtype=np.float32).reshape(2, 3)],
        pads=[1, 1, 1, 1],
        mode="reflect",
        opset=10,
    )


def test_center_crop_pad() -> None:
    x = randn(5, 4, 3)
    check("CenterCropPad", [x, i64(2, 7, 3)])
    check("CenterCropPad", [x, i64(6, 1)], axes=[-1, 0])


@pytest.mark.parametrize("mode", ["DCR", "CRD"])
def test_depth_space(mode: str) -> None:
    x = randn(2, 8, 3, 2)
    check("DepthToSpace", [x], blocksize=2, mode=mode, opset=13)
    check("SpaceToDepth", [randn(2, 2, 4, 6)], blocksize=2, opset=13)
