"""Neural-network converters (convolution, pooling, normalization, softmax, matrix
products, resize) against onnxruntime, on the edges where ONNX and TVM disagree: ceil-mode
windows, averages over padding, transposed-convolution crops, per-axis resize taps."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.backends.tvm.helpers import check_tvm, node_model, tvm_session
from torsh_gen.errors import UnsupportedOpError

F = TensorProto.FLOAT
RNG = np.random.default_rng(0)


def _x(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def _unary(op: str, shape: list[int], opset: int = 21, **attrs: Any) -> None:
    """One float input ``x`` → one output ``y`` of unknown shape, compared with ORT."""
    model = node_model(op, [("x", F, shape)], [("y", F, None)], opset=opset, **attrs)
    check_tvm(model, {"x": _x(*shape)}, rtol=1e-4, atol=1e-5)


# -- convolutions -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("xshape", "wshape", "attrs"),
    [
        ([1, 4, 9], [6, 2, 3], {"group": 2, "pads": [1, 2]}),
        ([1, 3, 7, 8], [4, 3, 3, 2], {"strides": [2, 1], "auto_pad": "SAME_LOWER"}),
        ([1, 2, 5, 5, 4], [3, 2, 2, 2, 2], {"dilations": [2, 1, 1], "auto_pad": "SAME_UPPER"}),
    ],
)
def test_conv(xshape: list[int], wshape: list[int], attrs: dict[str, Any]) -> None:
    w = numpy_helper.from_array(_x(*wshape), "w")
    b = numpy_helper.from_array(_x(wshape[0]), "b")
    model = node_model("Conv", [("x", F, xshape), ("w", F, wshape), ("b", F, [wshape[0]])], [("y", F, None)], [w, b], **attrs)
    # onnxruntime refuses dilations with SAME padding
    oracle = "reference" if "dilations" in attrs else "ort"
    check_tvm(model, {"x": _x(*xshape)}, rtol=1e-4, atol=1e-4, oracle=oracle)


@pytest.mark.parametrize(
    "attrs",
    [
        {"strides": [3, 2], "output_padding": [1, 1], "pads": [1, 0, 0, 2]},
        {"strides": [3, 2], "output_shape": [10, 8]},
        {"strides": [2, 2], "auto_pad": "SAME_LOWER", "dilations": [2, 1]},
        {"group": 2, "pads": [0, 1, 2, 0]},
    ],
)
def test_conv_transpose(attrs: dict[str, Any]) -> None:
    w = numpy_helper.from_array(_x(4, 3, 3, 2), "w")
    b = numpy_helper.from_array(_x(3 * attrs.get("group", 1)), "b")
    model = node_model("ConvTranspose", [("x", F, [1, 4, 3, 4]), ("w", F, [4, 3, 3, 2]), ("b", F, None)], [("y", F, None)], [w, b], **attrs)
    check_tvm(model, {"x": _x(1, 4, 3, 4)}, rtol=1e-4, atol=1e-4)


def test_conv_integer_with_per_channel_weight_zero_point() -> None:
    xs = numpy_helper.from_array(np.array(3, np.uint8), "xz")
    ws = numpy_helper.from_array(np.array([1, 2], np.uint8), "wz")
    w = numpy_helper.from_array(RNG.integers(0, 9, (2, 1, 2, 2)).astype(np.uint8), "w")
    U8 = TensorProto.UINT8
    model = node_model(
        "ConvInteger", [("x", U8, [1, 1, 4, 4]), ("w", U8, [2, 1, 2, 2]), ("xz", U8, []), ("wz", U8, [2])],
        [("y", TensorProto.INT32, None)], [w, xs, ws], opset=10, pads=[1, 1, 0, 0],
    )
    # onnxruntime takes per-tensor zero points only
    check_tvm(model, {"x": RNG.integers(0, 255, (1, 1, 4, 4)).astype(np.uint8)}, oracle="reference")


# -- matrix products ----------------------------------------------------------------------
@pytest.mark.parametrize(("a", "b"), [([3], [3, 4]), ([2, 1, 3, 4], [5, 4, 2]), ([4, 3], [3])])
def test_matmul_broadcasts_and_takes_vectors(a: list[int], b: list[int]) -> None:
    model = node_model("MatMul", [("a", F, a), ("b", F, b)], [("y", F, None)])
    check_tvm(model, {"a": _x(*a), "b": _x(*b)}, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cshape", [[], [1], [4], [3, 1]])
def test_gemm_bias_broadcasts(cshape: list[int]) -> None:
    c = numpy_helper.from_array(_x(*cshape), "c")
    model = node_model("Gemm", [("a", F, [5, 3]), ("b", F, [4, 5]), ("c", F, cshape)], [("y", F, None)], [c] if cshape != [3, 1] else None,
                       transA=1, transB=1, alpha=0.5, beta=2.0)
    feeds = {"a": _x(5, 3), "b": _x(4, 5)}
    if cshape == [3, 1]:
        feeds["c"] = _x(3, 1)
    check_tvm(model, feeds, rtol=1e-5, atol=1e-5)


def test_gemm_rank0_bias_as_graph_input() -> None:
    model = node_model("Gemm", [("a", F, [2, 3]), ("b", F, [3, 4]), ("c", F, [])], [("y", F, None)])
    check_tvm(model, {"a": _x(2, 3), "b": _x(3, 4), "c": np.array(3.5, np.float32)})


def test_matmul_integer_per_row_zero_point() -> None:
    I8, U8 = TensorProto.INT8, TensorProto.UINT8
    az = numpy_helper.from_array(np.array([1, -2, 3], np.int8), "az")
    bz = numpy_helper.from_array(np.array([7, 9], np.uint8), "bz")
    model = node_model("MatMulInteger", [("a", I8, [3, 4]), ("b", U8, [4, 2]), ("az", I8, [3]), ("bz", U8, [2])],
                       [("y", TensorProto.INT32, None)], [az, bz], opset=10)
    a, b = RNG.integers(-128, 127, (3, 4)).astype(np.int8), RNG.integers(0, 255, (4, 2)).astype(np.uint8)
    # onnxruntime takes per-tensor zero points only, onnx's reference fails to broadcast them
    want = (a.astype(np.int32) - np.array([[1], [-2], [3]])) @ (b.astype(np.int32) - np.array([7, 9]))
    got = tvm_session(model).run({"a": a, "b": b})["y"]
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, want)


def test_einsum_with_ellipsis_and_spaces() -> None:
    model = node_model("Einsum", [("a", F, [2, 3, 4]), ("b", F, [2, 4, 5])], [("y", F, None)], opset=12, equation="...ij, ...jk -> ...ik")
    check_tvm(model, {"a": _x(2, 3, 4), "b": _x(2, 4, 5)}, rtol=1e-5, atol=1e-5)


# -- pooling --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("op", "attrs"),
    [
        ("MaxPool", {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1, "pads": [1, 0, 1, 0]}),
        ("MaxPool", {"kernel_shape": [2, 2], "dilations": [2, 2], "ceil_mode": 1, "strides": [2, 2]}),
        ("AveragePool", {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1, "pads": [1, 1, 1, 1], "count_include_pad": 1}),
        ("AveragePool", {"kernel_shape": [3, 2], "strides": [2, 2], "ceil_mode": 1, "pads": [0, 1, 1, 0]}),
        ("AveragePool", {"kernel_shape": [3, 3], "auto_pad": "SAME_UPPER", "strides": [2, 2], "count_include_pad": 1}),
        ("LpPool", {"kernel_shape": [2, 3], "strides": [2, 1], "pads": [1, 1, 0, 1], "p": 3}),
        ("LpPool", {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}),
    ],
)
def test_pooling(op: str, attrs: dict[str, Any]) -> None:
    _unary(op, [1, 2, 8, 7], opset=19 if op != "LpPool" else 18, **attrs)


@pytest.mark.parametrize("order", [0, 1])
def test_maxpool_indices(order: int) -> None:
    model = node_model("MaxPool", [("x", F, [2, 3, 5, 4])], [("y", F, None), ("i", TensorProto.INT64, None)],
                       opset=12, kernel_shape=[2, 3], pads=[1, 0, 0, 1], strides=[2, 1], storage_order=order)
    x = np.round(_x(2, 3, 5, 4))  # ties: the first maximum wins
    check_tvm(model, {"x": x})


@pytest.mark.parametrize("op", ["GlobalMaxPool", "GlobalLpPool"])
def test_global_pools(op: str) -> None:
    _unary(op, [2, 3, 4, 5])


# -- normalization ----------------------------------------------------------------------
def test_batch_norm_folds_constant_statistics() -> None:
    c = 3
    inits = [numpy_helper.from_array(v, n) for v, n in [(_x(c), "s"), (_x(c), "b"), (_x(c), "m"), (np.abs(_x(c)) + 0.5, "v")]]
    model = node_model("BatchNormalization", [("x", F, [2, c, 4]), ("s", F, [c]), ("b", F, [c]), ("m", F, [c]), ("v", F, [c])],
                       [("y", F, None)], inits, epsilon=1e-3)
    check_tvm(model, {"x": _x(2, c, 4)}, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("outputs", [["y"], ["y", "rm", "rv"]])
def test_batch_norm_training_mode(outputs: list[str]) -> None:
    """Training mode normalizes with the batch's statistics; the running mean and variance
    (double here, opset 15's own type) blend in the batch's with the momentum."""
    D = TensorProto.DOUBLE
    model = node_model(
        "BatchNormalization",
        [("x", F, [3, 4, 2, 5]), ("s", F, [4]), ("b", F, [4]), ("m", D, [4]), ("v", D, [4])],
        [(n, F if n == "y" else D, None) for n in outputs],
        opset=15, training_mode=1, momentum=0.8, epsilon=1e-3,
    )
    feeds = {"x": _x(3, 4, 2, 5) * 2 + 1, "s": _x(4), "b": _x(4), "m": _x(4).astype(np.float64), "v": np.abs(_x(4)).astype(np.float64)}
    from onnx.reference import ReferenceEvaluator

    got = list(tvm_session(model).run(feeds).values())
    want = ReferenceEvaluator(model).run(None, feeds)
    # the spec types the running statistics as the given ones (U, double here); onnx's
    # reference casts them to X's type, so only the values are compared with it
    assert [g.dtype for g in got] == [np.dtype(np.float32)] + [np.dtype(np.float64)] * (len(outputs) - 1)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)


def test_batch_norm_running_statistics_before_opset_14_decline() -> None:
    model = node_model("BatchNormalization", [("x", F, [2, 3]), ("s", F, [3]), ("b", F, [3]), ("m", F, [3]), ("v", F, [3])],
                       [("y", F, None), ("rm", F, None)], opset=9)
    with pytest.raises(UnsupportedOpError, match="running statistics"):
        tvm_session(model)


def test_layer_norm_outputs_mean_and_inv_std() -> None:
    s = numpy_helper.from_array(_x(4, 5), "s")
    model = node_model("LayerNormalization", [("x", F, [2, 3, 4, 5]), ("s", F, [4, 5])],
                       [("y", F, None), ("mean", F, None), ("inv", F, None)], [s], opset=17, axis=-2)
    check_tvm(model, {"x": _x(2, 3, 4, 5)}, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("opset", [18, 21])
def test_group_norm_scale_shapes_by_opset(opset: int) -> None:
    n = 2 if opset == 18 else 6
    inits = [numpy_helper.from_array(_x(n), "s"), numpy_helper.from_array(_x(n), "b")]
    model = node_model("GroupNormalization", [("x", F, [2, 6, 3, 2]), ("s", F, [n]), ("b", F, [n])], [("y", F, None)], inits,
                       opset=opset, num_groups=2)
    check_tvm(model, {"x": _x(2, 6, 3, 2)}, rtol=1e-4, atol=1e-4, oracle="reference")


@pytest.mark.parametrize(
    ("op", "attrs"),
    [
        ("InstanceNormalization", {}),
        ("LpNormalization", {"axis": 1, "p": 1}),
        ("MeanVarianceNormalization", {"axes": [0, 2]}),
        ("LRN", {"size": 3, "alpha": 0.5, "beta": 0.6, "bias": 2.0}),
    ],
)
def test_normalizations(op: str, attrs: dict[str, Any]) -> None:
    shape = [2, 5, 3, 4]
    if op == "InstanceNormalization":
        inits = [numpy_helper.from_array(_x(5), "s"), numpy_helper.from_array(_x(5), "b")]
        model = node_model(op, [("x", F, shape), ("s", F, [5]), ("b", F, [5])], [("y", F, None)], inits)
        check_tvm(model, {"x": _x(*shape)}, rtol=1e-4, atol=1e-4)
        return
    _unary(op, shape, **attrs)


def test_lrn_even_size_window_leans_forward() -> None:
    """Channels [c - 1, c + 2] for size 4 (onnxruntime takes odd sizes only, onnx's
    reference loops over the batch instead of the channels): checked against the spec."""
    x = _x(1, 6, 2, 3)
    model = node_model("LRN", [("x", F, [1, 6, 2, 3])], [("y", F, None)], size=4, alpha=0.5, beta=0.6, bias=2.0)
    sq = np.pad(x**2, [(0, 0), (1, 2), (0, 0), (0, 0)])
    total = sum(sq[:, k : k + 6] for k in range(4))
    want = x / (2.0 + 0.5 / 4 * total) ** 0.6
    np.testing.assert_allclose(tvm_session(model).run({"x": x})["y"], want, rtol=1e-5, atol=1e-6)


def test_rms_norm() -> None:
    s = numpy_helper.from_array(_x(3, 4), "s")
    model = node_model("RMSNormalization", [("x", F, [2, 3, 4]), ("s", F, [3, 4])], [("y", F, None)], [s], opset=23, axis=1)
    check_tvm(model, {"x": _x(2, 3, 4)}, rtol=1e-4, atol=1e-5, oracle="reference")


# -- softmax family -----------------------------------------------------------------------
@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax", "Hardmax"])
@pytest.mark.parametrize("opset", [11, 13])
def test_softmax_family_axis_semantics(op: str, opset: int) -> None:
    # opset 11 coerces to 2-d at axis 1: the normalization spans the last two axes
    _unary(op, [2, 3, 4], opset=opset, axis=1)


# -- resize -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("scales", "sizes", "attrs"),
    [
        ([1, 1, 0.6, 1.7], None, {"mode": "linear"}),
        ([1, 1, 2.0, 1.5], None, {"mode": "nearest", "coordinate_transformation_mode": "asymmetric", "nearest_mode": "ceil"}),
        (None, [1, 2, 9, 4], {"mode": "cubic", "coordinate_transformation_mode": "align_corners", "exclude_outside": 1}),
        (None, [1, 2, 3, 3], {"mode": "linear", "antialias": 1}),
        (None, [1, 2, 7, 9], {"mode": "nearest", "coordinate_transformation_mode": "pytorch_half_pixel"}),
    ],
)
def test_resize_with_constant_scales_or_sizes(scales: list[float] | None, sizes: list[int] | None, attrs: dict[str, Any]) -> None:
    consts = {"scales": np.array(scales, np.float32)} if scales else {"sizes": np.array(sizes, np.int64)}
    names = ["x", "", "scales" if scales else "", "sizes" if sizes else ""]
    check_tvm(_resize_model(names, [1, 2, 5, 6], consts, **attrs), {"x": _x(1, 2, 5, 6)}, rtol=1e-4, atol=1e-5)


def _resize_model(names: list[str], shape: list[int], consts: dict[str, np.ndarray], **attrs: Any) -> Any:
    """A Resize (opset 19) whose roi/scales/sizes are initializers; "" skips an input."""
    node = helper.make_node("Resize", names, ["y"], **attrs)
    inputs = [helper.make_tensor_value_info(n, F, shape) for n in names if n and n not in consts]
    graph = helper.make_graph([node], "resize", inputs, [helper.make_tensor_value_info("y", F, None)],
                              [numpy_helper.from_array(v, k) for k, v in consts.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])


def test_resize_crop_extrapolates() -> None:
    consts = {"roi": np.array([0, 0, 0.4, -0.2, 1, 1, 1.2, 0.8], np.float32), "sizes": np.array([1, 1, 4, 5], np.int64)}
    model = _resize_model(["x", "roi", "", "sizes"], [1, 1, 4, 4], consts, mode="linear",
                          coordinate_transformation_mode="tf_crop_and_resize", extrapolation_value=7.0)
    # onnxruntime 1.2x applies this roi differently from the spec's reference
    check_tvm(model, {"x": _x(1, 1, 4, 4)}, rtol=1e-4, atol=1e-5, oracle="reference")


@pytest.mark.parametrize(
    ("mode", "param", "attrs"),
    [
        ("linear", "scales", {}),
        ("cubic", "sizes", {"exclude_outside": 1, "axes": [3, 2]}),
        ("cubic", "scales", {"coordinate_transformation_mode": "half_pixel_symmetric"}),
    ],
)
def test_resize_antialias_with_run_time_scales_or_sizes(mode: str, param: str, attrs: dict[str, Any]) -> None:
    """Antialiasing with a run-time scale: the tap count follows the scale (a fresh
    symbolic dim), so one build resamples correctly at two scales, per onnx's reference."""
    from onnx.reference import ReferenceEvaluator

    rank = len(attrs.get("axes", [0, 1, 2, 3]))
    names = ["x", "", "scales", ""] if param == "scales" else ["x", "", "", "sizes"]
    node = helper.make_node("Resize", names, ["y"], mode=mode, antialias=1, **attrs)
    kind = F if param == "scales" else TensorProto.INT64
    ins = [helper.make_tensor_value_info("x", F, [1, 2, 9, 11]), helper.make_tensor_value_info(param, kind, [rank])]
    graph = helper.make_graph([node], "resize", ins, [helper.make_tensor_value_info("y", F, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    session = tvm_session(model)
    x = _x(1, 2, 9, 11)
    if param == "scales":
        params = [np.array([1, 1, 0.6, 0.3], np.float32), np.array([1, 1, 0.25, 0.8], np.float32)]
    else:
        params = [np.array([4, 3], np.int64), np.array([2, 7], np.int64)]
    for value in params:
        feeds = {"x": x, param: value}
        got = list(session.run(feeds).values())[0]
        want = ReferenceEvaluator(model).run(None, feeds)[0]
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_batch_norm_with_run_time_statistics() -> None:
    names = [("x", F, [2, 3, 4, 2])] + [(n, F, [3]) for n in "sbmv"]
    model = node_model("BatchNormalization", names, [("y", F, None)], epsilon=1e-2)
    feeds = {"x": _x(2, 3, 4, 2), "s": _x(3), "b": _x(3), "m": _x(3), "v": np.abs(_x(3)) + 0.1}
    check_tvm(model, feeds, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("op", ["MatMul", "Softmax"])
def test_half_precision_accumulates_in_float32(op: str) -> None:
    """Long fp16 reductions round once at the end, as onnxruntime's kernels do."""
    H = TensorProto.FLOAT16
    x = RNG.uniform(0, 1, (4, 512)).astype(np.float16)
    if op == "MatMul":
        model = node_model(op, [("x", H, [4, 512]), ("w", H, [512, 3])], [("y", H, None)])
        feeds = {"x": x, "w": RNG.uniform(0, 1, (512, 3)).astype(np.float16)}
    else:
        model = node_model(op, [("x", H, [4, 512])], [("y", H, None)])
        feeds = {"x": x}
    check_tvm(model, feeds, rtol=2e-3, atol=1e-4)


@pytest.mark.parametrize("p", [1, 2])
def test_lp_normalization_keeps_zero_vectors_zero(p: int) -> None:
    """A vector whose norm is 0 normalizes to 0 (onnx's reference), not to 0/0 = NaN."""
    x = np.array([[1.0, 2.0, 0.0], [3.0, 4.0, 0.0]], np.float32)
    model = node_model("LpNormalization", [("x", F, [2, 3])], [("y", F, None)], axis=0, p=p)
    check_tvm(model, {"x": x}, oracle="reference")
