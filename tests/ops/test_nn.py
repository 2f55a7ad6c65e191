"""Convolution, pooling and resampling kernels compared with onnxruntime on one-node models.

Each case builds a single-node model, runs it through onnxruntime and through
``torsh_gen.backend``, and requires the same shapes, dtypes and values. Ops onnxruntime
lacks at the needed opset (CausalConvWithState, DeformConv) are checked against hand
results. Costs and the speed of a ResNet-sized Conv are checked too.
"""

from __future__ import annotations

import time
from functools import partial
from typing import Any

import numpy as np
import onnx
import pytest

from tests.ops.onenode import check_one_node, one_node_model, run_one_node, run_ours
from torsh_gen.backend import prepare
from torsh_gen.frontends.onnx import load_onnx
from torsh_gen.ops.inference import infer_types

RNG = np.random.default_rng(11)

check = partial(check_one_node, opset=19, rtol=1e-4, atol=1e-5)


def _f32(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


# --------------------------------------------------------------------------- convolutions
@pytest.mark.parametrize(
    "xs, ws, attrs",
    [
        ((2, 4, 9, 8), (6, 4, 3, 3), {"pads": [1, 0, 2, 1], "strides": [2, 1]}),
        ((1, 4, 10, 10), (6, 2, 3, 3), {"group": 2, "dilations": [2, 1]}),
        ((1, 6, 7, 7), (6, 1, 3, 3), {"group": 6, "auto_pad": "SAME_UPPER"}),
        ((1, 3, 7, 6), (4, 3, 2, 2), {"auto_pad": "SAME_LOWER", "strides": [2, 2]}),
        ((1, 3, 7, 6), (4, 3, 3, 3), {"auto_pad": "VALID"}),
        ((2, 3, 11), (5, 3, 4), {"strides": [3], "pads": [2, 1]}),
        ((1, 2, 5, 6, 4), (3, 2, 2, 3, 2), {"pads": [1, 0, 1, 0, 1, 1]}),
    ],
)
def test_conv(xs: tuple[int, ...], ws: tuple[int, ...], attrs: dict[str, Any]) -> None:
    x, w = _f32(*xs), _f32(*ws)
    check("Conv", [x, w], **attrs)
    check("Conv", [x, w, _f32(ws[0])], **attrs)


def test_conv_float64_and_empty_batch() -> None:
    x, w = _f32(1, 2, 5, 5), _f32(3, 2, 3, 3)
    (ref,) = check("Conv", [x, w])
    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    (y64,) = run_one_node("Conv", [x64, w64], opset=19)
    assert y64.dtype == np.float64
    np.testing.assert_allclose(y64, ref, rtol=1e-5, atol=1e-5)
    empty = _f32(0, 2, 5, 5)
    (y,) = run_one_node("Conv", [empty, w], opset=19)
    assert y.shape == (0, 3, 3, 3)


@pytest.mark.parametrize(
    "xs, ws, attrs",
    [
        ((1, 3, 4, 5), (3, 2, 3, 3), {"strides": [2, 3], "pads": [1, 0, 0, 1]}),
        (
            (2, 4, 3, 3),
            (4, 3, 3, 2),
            {"group": 2, "dilations": [2, 1], "output_padding": [1, 0], "strides": [2, 2]},
        ),
        ((1, 2, 3, 3), (2, 3, 3, 3), {"strides": [3, 2], "output_shape": [10, 8]}),
        ((1, 2, 3, 4), (2, 1, 3, 3), {"strides": [2, 2], "auto_pad": "SAME_UPPER"}),
        ((1, 2, 5), (2, 3, 4), {"strides": [2], "pads": [1, 2]}),
        ((1, 2, 3, 2, 3), (2, 2, 2, 2, 2), {"strides": [1, 2, 1]}),
    ],
)
def test_conv_transpose(xs: tuple[int, ...], ws: tuple[int, ...], attrs: dict[str, Any]) -> None:
    x, w = _f32(*xs), _f32(*ws)
    check("ConvTranspose", [x, w], **attrs)
    groups = attrs.get("group", 1)
    check("ConvTranspose", [x, w, _f32(ws[1] * groups)], **attrs)


def test_conv_integer() -> None:
    x = RNG.integers(0, 255, (1, 3, 6, 6), dtype=np.uint8)
    w = RNG.integers(0, 255, (4, 3, 3, 3), dtype=np.uint8)
    check(
        "ConvInteger",
        [x, w, np.array(17, np.uint8), np.array(128, np.uint8)],
        opset=10,
        pads=[1, 1, 1, 1],
    )
    check("ConvInteger", [x, w], opset=10, strides=[2, 2])


def test_qlinear_conv_per_channel() -> None:
    x = RNG.integers(0, 255, (1, 3, 7, 7), dtype=np.uint8)
    w = RNG.integers(-100, 100, (4, 3, 3, 3), dtype=np.int8)
    inputs = [
        x, np.array(0.05, np.float32), np.array(120, np.uint8),
        w, np.array([0.01, 0.02, 0.015, 0.03], np.float32), np.zeros(4, np.int8),
        np.array(0.4, np.float32), np.array(100, np.uint8),
        RNG.integers(-500, 500, 4).astype(np.int32),
    ]  # fmt: skip
    check("QLinearConv", inputs, opset=10, pads=[1, 1, 1, 1], atol=1)


def test_col2im() -> None:
    x = _f32(2, 3 * 4, 9)
    check(
        "Col2Im",
        [x, np.array([5, 6]), np.array([2, 2])],
        opset=18,
        strides=[2, 2],
        pads=[1, 0, 1, 1],
    )


def test_causal_conv_with_state_by_hand() -> None:
    x, w, b, past = _f32(2, 3, 5), _f32(3, 1, 4), _f32(3), _f32(2, 3, 3)
    model = one_node_model(
        "CausalConvWithState", [x, w, b, past], n_outputs=2, opset=27, activation="silu"
    )
    y, state = run_ours(model, [x, w, b, past])
    seq = np.concatenate([past, x], axis=2)
    pre = (
        np.stack([(seq[:, :, t : t + 4] * w[:, 0]).sum(-1) for t in range(5)], axis=-1) + b[:, None]
    )
    np.testing.assert_allclose(y, pre / (1 + np.exp(-pre)), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(state, seq[:, :, -3:])


def test_deform_conv_zero_offset_is_conv() -> None:
    x, w = _f32(1, 4, 6, 6), _f32(4, 2, 3, 3)
    offset = np.zeros((1, 2 * 2 * 9, 4, 4), np.float32)
    model = one_node_model("DeformConv", [x, w, offset], opset=19, group=2, offset_group=2)
    (got,) = run_ours(model, [x, w, offset])
    (ref,) = run_one_node("Conv", [x, w], opset=19, group=2)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    shifted = np.zeros_like(offset)
    shifted[:, 1::2] = 1.0  # every tap moves one pixel right: same as the conv of x shifted left
    (moved,) = run_ours(model, [x, w, shifted])
    xs = np.concatenate([x[..., 1:], np.zeros_like(x[..., :1])], axis=-1)
    (ref2,) = run_one_node("Conv", [xs, w], opset=19, group=2)
    np.testing.assert_allclose(moved, ref2, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- pooling
@pytest.mark.parametrize(
    "xs, attrs",
    [
        ((1, 2, 7, 8), {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}),
        ((1, 2, 7, 8), {"kernel_shape": [2, 3], "pads": [1, 0, 0, 1], "dilations": [2, 1]}),
        ((2, 1, 6, 6), {"kernel_shape": [3, 3], "auto_pad": "SAME_UPPER", "strides": [2, 2]}),
        ((1, 2, 9), {"kernel_shape": [3], "strides": [2], "pads": [1, 1]}),
        ((1, 1, 4, 5, 6), {"kernel_shape": [2, 2, 3], "strides": [2, 2, 2], "ceil_mode": 1}),
    ],
)
def test_pools(xs: tuple[int, ...], attrs: dict[str, Any]) -> None:
    x = _f32(*xs)
    check("MaxPool", [x], **attrs)
    if len(xs) == 4 and "dilations" not in attrs:
        check("MaxPool", [x], n_outputs=2, **attrs)
        check("MaxPool", [x], n_outputs=2, storage_order=1, **attrs)
    check("AveragePool", [x], **attrs)
    check("AveragePool", [x], count_include_pad=1, **attrs)
    check("LpPool", [x], p=3, opset=18, **attrs)


def test_maxpool_int8_and_global_pools() -> None:
    check(
        "MaxPool",
        [RNG.integers(-128, 127, (1, 2, 5, 5), dtype=np.int8)],
        kernel_shape=[2, 2],
        pads=[1, 1, 1, 1],
    )
    x = _f32(2, 3, 4, 5)
    for name in ("GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool"):
        check(name, [x])


def test_maxunpool_roundtrip() -> None:
    x = _f32(1, 2, 6, 6)
    y, idx = run_one_node(
        "MaxPool", [x], n_outputs=2, opset=19, kernel_shape=[2, 2], strides=[2, 2]
    )
    check("MaxUnpool", [y, idx], opset=11, kernel_shape=[2, 2], strides=[2, 2])


# --------------------------------------------------------------------------- resampling
_F = np.array([], np.float32)


@pytest.mark.parametrize(
    "mode, attrs",
    [
        ("nearest", {"coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"}),
        ("nearest", {"nearest_mode": "round_prefer_ceil"}),
        ("linear", {}),
        ("linear", {"coordinate_transformation_mode": "half_pixel_symmetric"}),
        ("linear", {"antialias": 1}),
        ("cubic", {"exclude_outside": 1, "cubic_coeff_a": -0.5}),
        ("cubic", {"coordinate_transformation_mode": "pytorch_half_pixel", "antialias": 1}),
    ],
)
@pytest.mark.parametrize("scales", [[1.0, 1.0, 0.6, 1.7], [1.0, 1.0, 2.0, 0.5]])
def test_resize_scales(mode: str, attrs: dict[str, Any], scales: list[float]) -> None:
    x = _f32(1, 2, 5, 6)
    check("Resize", [x, None, np.array(scales, np.float32)], mode=mode, **attrs)


def test_resize_uint8_truncates() -> None:
    x = RNG.integers(0, 255, (1, 1, 5, 6), dtype=np.uint8)
    check("Resize", [x, None, np.array([1, 1, 1.6, 0.7], np.float32)], mode="linear", atol=0)


def test_resize_align_corners() -> None:
    # onnxruntime divides by the integer output length, onnx's reference (and the conformance
    # data we follow) by scale * input length: they agree when that product is whole.
    x = _f32(1, 2, 5, 6)
    for mode in ("linear", "cubic"):
        sc = np.array([1, 1, 2.0, 0.5], np.float32)
        check("Resize", [x, None, sc], mode=mode, coordinate_transformation_mode="align_corners")


def test_resize_sizes_axes_and_crop() -> None:
    x = _f32(1, 2, 6, 8)
    sizes = np.array([4, 5], np.int64)
    for policy in ("stretch", "not_larger", "not_smaller"):
        check(
            "Resize",
            [x, None, None, sizes],
            mode="linear",
            axes=[2, 3],
            keep_aspect_ratio_policy=policy,
        )
    roi = np.array([0.1, 0.2, 0.9, 1.3], np.float32)
    check(
        "Resize", [x, roi, None, sizes], mode="linear", axes=[-2, -1],
        coordinate_transformation_mode="tf_crop_and_resize", extrapolation_value=-3.0,
    )  # fmt: skip
    check("Resize", [x, _F, np.array([1, 1, 0.5, 1.5], np.float32)], opset=11, mode="nearest")


def test_resize_opset10_and_upsample() -> None:
    x = _f32(1, 1, 3, 4)
    sc = np.array([1, 1, 2, 1.5], np.float32)
    check("Resize", [x, sc], opset=10, mode="linear")
    check("Resize", [x, sc], opset=10, mode="nearest")
    check("Upsample", [x, sc], opset=9, mode="linear")
    check("Upsample", [x], opset=7, mode="nearest", scales=[1.0, 1.0, 2.0, 3.0])


@pytest.mark.parametrize("mode", ["nearest", "linear", "cubic"])
@pytest.mark.parametrize("padding", ["zeros", "border", "reflection"])
@pytest.mark.parametrize("align", [0, 1])
def test_grid_sample(mode: str, padding: str, align: int) -> None:
    x = _f32(2, 3, 5, 6)
    grid = RNG.uniform(-1.4, 1.4, (2, 4, 3, 2)).astype(np.float32)
    check("GridSample", [x, grid], opset=20, mode=mode, padding_mode=padding, align_corners=align)


def test_grid_sample_volumetric_and_affine_grid() -> None:
    x = _f32(1, 2, 3, 4, 5)
    grid = RNG.uniform(-1.2, 1.2, (1, 2, 3, 4, 3)).astype(np.float32)
    check("GridSample", [x, grid], opset=20, mode="linear", padding_mode="border")
    theta = _f32(2, 2, 3)
    for align in (0, 1):
        check(
            "AffineGrid", [theta, np.array([2, 3, 4, 5], np.int64)], opset=20, align_corners=align
        )


@pytest.mark.parametrize("mode", ["avg", "max"])
@pytest.mark.parametrize("ctm", ["half_pixel", "output_half_pixel"])
def test_roi_align(mode: str, ctm: str) -> None:
    x = _f32(2, 3, 10, 12)
    rois = np.array(
        [[0, 0, 9, 9], [2.5, 1.2, 7.1, 8.4], [-2, -1, 3, 2], [4, 4, 4.5, 4.2]], np.float32
    )
    batch = np.array([0, 1, 1, 0], np.int64)
    check(
        "RoiAlign", [x, rois, batch], opset=16, mode=mode, coordinate_transformation_mode=ctm,
        output_height=3, output_width=4, spatial_scale=0.8,
    )  # fmt: skip
    check("RoiAlign", [x, rois, batch], opset=16, mode=mode, sampling_ratio=2, output_height=2)


def test_non_max_suppression() -> None:
    boxes = RNG.uniform(0, 10, (2, 30, 4)).astype(np.float32)
    scores = RNG.uniform(0, 1, (2, 3, 30)).astype(np.float32)
    limits = [np.array([5], np.int64), np.array([0.3], np.float32), np.array([0.2], np.float32)]
    check("NonMaxSuppression", [boxes, scores, *limits], opset=11)
    check("NonMaxSuppression", [boxes, scores, *limits], opset=11, center_point_box=1)
    got = check("NonMaxSuppression", [boxes, scores], opset=11)[0]
    assert got.shape == (0, 3)


# --------------------------------------------------------------------------- cost and speed
def test_conv_cost() -> None:
    x, w, b = _f32(2, 8, 10, 10), _f32(16, 4, 3, 3), _f32(16)
    model = one_node_model("Conv", [x, w, b], opset=19, group=2, pads=[1, 1, 1, 1])
    graph = load_onnx(onnx.shape_inference.infer_shapes(model))
    ti = infer_types(graph)
    (cost,) = [ti.costs[id(n)] for n in graph.nodes]
    macs = 2 * 16 * 10 * 10 * 4 * 9
    assert cost.macs == macs
    assert cost.flops == 2 * macs + 2 * 16 * 10 * 10


def test_conv_speed() -> None:
    x, w = _f32(1, 64, 56, 56), _f32(64, 64, 3, 3)
    rep = prepare(one_node_model("Conv", [x, w], opset=19, pads=[1, 1, 1, 1]))
    rep.run([x, w])
    start = time.perf_counter()
    rep.run([x, w])
    assert time.perf_counter() - start < 0.5
