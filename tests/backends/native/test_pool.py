"""Pooling through the kernel IR, the JIT and the interpreter, against onnxruntime:
MaxPool (with Indices), AveragePool, LpPool with pads, strides, dilations, ceil_mode,
count_include_pad and auto_pad, and the global pools."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto as TP
from onnx import helper

from tests.backends.native.helpers import check_native, make_model, rand


def pool_model(
    op: str,
    xs: tuple[int, ...],
    indices: bool = False,
    dtype: int = TP.FLOAT,
    opset: int = 19,
    **attrs,
) -> onnx.ModelProto:
    """A model of one pooling node (and MaxPool's Indices output when asked)."""
    outs = ["y", "i"] if indices else ["y"]
    vis = [helper.make_tensor_value_info("y", dtype, None)]
    if indices:
        vis.append(helper.make_tensor_value_info("i", TP.INT64, None))
    node = helper.make_node(op, ["x"], outs, **attrs)
    model = make_model([node], [helper.make_tensor_value_info("x", dtype, xs)], vis, opset=opset)
    return onnx.shape_inference.infer_shapes(model)


X2 = (1, 3, 13, 11)
WINDOWED = [
    ("MaxPool", X2, dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2])),
    ("MaxPool", (1, 3, 40, 37), dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1])),
    ("MaxPool", (2, 17, 20, 21), dict(kernel_shape=[2, 2], strides=[2, 2])),
    ("MaxPool", X2, dict(kernel_shape=[3, 3], ceil_mode=1, strides=[2, 2])),
    ("MaxPool", X2, dict(kernel_shape=[3, 3], dilations=[2, 2], pads=[1, 2, 1, 0])),
    ("MaxPool", X2, dict(kernel_shape=[5, 5], auto_pad="SAME_UPPER", strides=[2, 2])),
    ("MaxPool", X2, dict(kernel_shape=[4, 4], auto_pad="SAME_LOWER")),
    ("MaxPool", X2, dict(kernel_shape=[3, 2], auto_pad="VALID", strides=[1, 3])),
    ("MaxPool", (1, 3, 30), dict(kernel_shape=[3], pads=[1, 1], strides=[2])),
    ("MaxPool", (1, 2, 5, 6, 7), dict(kernel_shape=[2, 3, 3], pads=[1, 1, 1, 0, 1, 1])),
    ("AveragePool", X2, dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2])),
    (
        "AveragePool",
        X2,
        dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2], count_include_pad=1),
    ),
    ("AveragePool", X2, dict(kernel_shape=[3, 3], ceil_mode=1, strides=[2, 2])),
    (
        "AveragePool",
        X2,
        dict(kernel_shape=[3, 3], ceil_mode=1, strides=[2, 2], count_include_pad=1),
    ),
    ("AveragePool", (1, 3, 40, 37), dict(kernel_shape=[5, 5], auto_pad="SAME_UPPER")),
    ("AveragePool", (1, 3, 40, 37), dict(kernel_shape=[7, 7], strides=[1, 1])),
    ("AveragePool", (1, 3, 20), dict(kernel_shape=[4], auto_pad="SAME_LOWER", strides=[3])),
    (
        "AveragePool",
        (1, 2, 5, 6, 7),
        dict(kernel_shape=[2, 2, 3], pads=[0, 1, 1, 1, 0, 1], count_include_pad=1),
    ),
    ("LpPool", X2, dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1], p=2)),
    ("LpPool", X2, dict(kernel_shape=[3, 2], p=1, strides=[2, 1])),
    ("LpPool", X2, dict(kernel_shape=[2, 2], p=3)),
]


@pytest.mark.parametrize(
    "op,xs,attrs", WINDOWED, ids=[f"{w[0]}-{i}" for i, w in enumerate(WINDOWED)]
)
def test_windowed_pool(op: str, xs, attrs) -> None:
    check_native(pool_model(op, xs, **attrs), {"x": rand(*xs, seed=3)}, lanes=16)


@pytest.mark.parametrize(
    "attrs",
    [
        dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2]),
        dict(kernel_shape=[2, 3], storage_order=1),
        dict(kernel_shape=[3, 3], dilations=[1, 2], ceil_mode=1, strides=[2, 2]),
    ],
)
def test_maxpool_indices(attrs) -> None:
    """MaxPool's second output: flat argmax positions into X (row- or column-major)."""
    xs = (2, 3, 13, 17)
    check_native(
        pool_model("MaxPool", xs, indices=True, **attrs), {"x": rand(*xs, seed=3)}, lanes=16
    )


def test_maxpool_uint8() -> None:
    xs = (1, 4, 11, 37)
    x = np.random.default_rng(0).integers(0, 255, xs).astype(np.uint8)
    check_native(
        pool_model("MaxPool", xs, dtype=TP.UINT8, kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        {"x": x},
        lanes=16,
    )


@pytest.mark.parametrize(
    "op,xs,attrs",
    [
        ("MaxPool", (1, 2, 7, 6), dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2])),
        (
            "AveragePool",
            (1, 2, 7, 6),
            dict(kernel_shape=[3, 3], pads=[1, 0, 1, 1], ceil_mode=1, strides=[2, 2]),
        ),
        ("LpPool", (1, 2, 7, 6), dict(kernel_shape=[2, 2], p=2)),
        ("GlobalAveragePool", (1, 3, 5, 9), {}),
    ],
)
def test_interpreter_agrees(op: str, xs, attrs) -> None:
    check_native(pool_model(op, xs, **attrs), {"x": rand(*xs, seed=3)}, interpret=True)


@pytest.mark.parametrize("op", ["GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool"])
@pytest.mark.parametrize(
    "xs", [(2, 5, 13, 11), (1, 64, 7, 7), (2, 3, 3), (1, 4, 1, 1), (1, 2, 3, 4, 5)]
)
def test_global_pool(op: str, xs) -> None:
    if op == "GlobalLpPool" and xs == (2, 3, 3):
        pytest.skip("onnxruntime's GlobalLpPool needs 2-d or more spatial axes")
    check_native(pool_model(op, xs), {"x": rand(*xs, seed=3)}, lanes=16)


def test_pool_after_conv_in_a_model() -> None:
    """Conv → Relu → MaxPool → GlobalAveragePool, lowered through the O3 pipeline."""
    from onnx import numpy_helper

    xs = (1, 3, 24, 24)
    w = numpy_helper.from_array(rand(8, 3, 3, 3, seed=1) * 0.3, "w")
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node(
            "MaxPool", ["r"], ["m"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]
        ),
        helper.make_node("GlobalAveragePool", ["m"], ["y"]),
    ]
    model = make_model(
        nodes,
        [helper.make_tensor_value_info("x", TP.FLOAT, xs)],
        [helper.make_tensor_value_info("y", TP.FLOAT, (1, 8, 1, 1))],
        [w],
    )
    program = check_native(model, {"x": rand(*xs, seed=3)}, lanes=16)
    assert [c.op_type for c in program.calls] == ["FusedConv", "MaxPool", "GlobalAveragePool"]
