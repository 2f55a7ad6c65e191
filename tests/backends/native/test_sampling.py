"""Spatial sampling ops (GridSample, AffineGrid, Col2Im, RoiAlign, MaxUnpool, DeformConv)
through the JIT and the kernel-IR interpreter, against onnxruntime (onnx's reference
evaluator where onnxruntime differs from the spec's test data). Run-time coordinates,
boxes, block shapes and indices that are out of range must stay inside the buffers: the
interpreter raises on any access outside one."""

from __future__ import annotations

import itertools

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from tests.backends.native.helpers import check_native, interpret_program, lower_model, rand
from torsh_gen.errors import UnsupportedOpError


def build(
    op: str,
    feeds: dict[str, np.ndarray],
    consts: dict[str, np.ndarray] | None = None,
    inputs: list[str] | None = None,
    out_shape: tuple[int, ...] | None = None,
    opset: int = 20,
    **attrs,
) -> onnx.ModelProto:
    """A one-node model; ``out_shape`` declares the output where it depends on run-time
    values (Col2Im's image shape, MaxUnpool's output_shape)."""
    consts = consts or {}
    names = inputs if inputs is not None else list(feeds) + list(consts)
    vi = [
        helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
        for k, v in feeds.items()
    ]
    first = next(iter(feeds.values()))
    elem = helper.np_dtype_to_tensor_dtype(first.dtype)
    out = helper.make_tensor_value_info("y", elem, out_shape) if out_shape else onnx.ValueInfoProto(name="y")
    graph = helper.make_graph(
        [helper.make_node(op, names, ["y"], **attrs)],
        "g",
        vi,
        [out],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in consts.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    return model if out_shape else onnx.shape_inference.infer_shapes(model, strict_mode=True)


def close(op: str, feeds, consts=None, inputs=None, out_shape=None, opset=20, interpret=True, tol=1e-5, **attrs) -> None:
    """Compare with onnxruntime (JIT, and the interpreter when asked); the op's kernel ran."""
    model = build(op, feeds, consts, inputs, out_shape, opset, **attrs)
    program = check_native(model, feeds, rtol=tol, atol=tol, interpret=interpret)
    assert op in [c.op_type for c in program.calls]


def against_reference(model: onnx.ModelProto, feeds: dict[str, np.ndarray], tol: float = 1e-5) -> None:
    """Compare the JIT and the interpreter with onnx's reference evaluator."""
    from torsh_gen.backends.llvm.jit import JitProgram

    program = lower_model(model)
    want = ReferenceEvaluator(model).run(None, feeds)[0]
    got = JitProgram(program).run(feeds)["y"]
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol)
    np.testing.assert_allclose(interpret_program(program, feeds)[0], want, rtol=tol, atol=tol)


def stays_inside(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> np.ndarray:
    """Run hostile inputs through the interpreter (which raises on any out-of-bounds access)
    and the JIT; returns the JIT's output, which must agree with the interpreter's."""
    from torsh_gen.backends.llvm.jit import JitProgram

    program = lower_model(model)
    interpreted = interpret_program(program, feeds)[0]
    got = JitProgram(program).run(feeds)["y"]
    np.testing.assert_allclose(got, interpreted, rtol=1e-5, atol=1e-5)
    return got


def grid(*shape: int, spread: float = 1.3, seed: int = 1) -> np.ndarray:
    """A sampling grid with points inside and outside [-1, 1], some exactly on the ties
    where nearest rounding goes half to even and where taps cross the border."""
    g = np.random.default_rng(seed).uniform(-spread, spread, shape).astype(np.float32)
    flat = g.reshape(-1)
    ties = [-1.0, 1.0, 0.0, 0.25, -0.75, 0.5, -0.5, 1.25, -1.25, 0.125]
    flat[: min(len(ties), flat.size)] = ties[: flat.size]
    return g


# --------------------------------------------------------------------------- GridSample
@pytest.mark.parametrize(
    "mode,padding,align",
    list(itertools.product(["linear", "nearest", "cubic"], ["zeros", "border", "reflection"], [0, 1])),
)
def test_grid_sample_2d(mode: str, padding: str, align: int) -> None:
    feeds = {"x": rand(2, 2, 4, 5), "g": grid(2, 3, 4, 2, spread=1.8)}
    close("GridSample", feeds, mode=mode, padding_mode=padding, align_corners=align)


@pytest.mark.parametrize("mode", ["bilinear", "nearest", "bicubic"])
def test_grid_sample_opset16_names(mode: str) -> None:
    feeds = {"x": rand(1, 3, 5, 4), "g": grid(1, 2, 9, 2)}
    close("GridSample", feeds, opset=16, mode=mode, padding_mode="border", interpret=mode == "bicubic")


@pytest.mark.parametrize(
    "mode,padding,align",
    [("linear", "zeros", 0), ("linear", "border", 1), ("linear", "reflection", 0),
     ("nearest", "zeros", 1), ("nearest", "reflection", 1), ("nearest", "border", 0)],
)
def test_grid_sample_3d(mode: str, padding: str, align: int) -> None:
    feeds = {"x": rand(1, 2, 3, 4, 5), "g": grid(1, 2, 3, 4, 3, spread=1.6)}
    close("GridSample", feeds, mode=mode, padding_mode=padding, align_corners=align)


def test_grid_sample_far_reflection_and_double() -> None:
    """Coordinates several periods outside reflect back and forth; f64 data and a long
    output row (vector loop with a tail)."""
    feeds = {"x": rand(1, 2, 3, 4, dtype=np.float64), "g": grid(1, 2, 11, 2, spread=7.0).astype(np.float64)}
    close("GridSample", feeds, mode="linear", padding_mode="reflection", interpret=False)
    close("GridSample", feeds, mode="cubic", padding_mode="reflection", align_corners=1)


def test_grid_sample_single_pixel_axis() -> None:
    """An axis of length 1 (reflection's period is zero with align_corners)."""
    feeds = {"x": rand(1, 1, 1, 4), "g": grid(1, 2, 3, 2, spread=2.5)}
    for padding, align in itertools.product(["zeros", "border", "reflection"], [0, 1]):
        close("GridSample", feeds, mode="linear", padding_mode=padding, align_corners=align)


@pytest.mark.parametrize("mode", ["linear", "nearest", "cubic"])
def test_grid_sample_nonfinite_grid_stays_inside(mode: str) -> None:
    g = grid(1, 2, 4, 2)
    g.reshape(-1)[:5] = [np.nan, np.inf, -np.inf, 1e30, -1e30]
    for padding in ("zeros", "border", "reflection"):
        model = build("GridSample", {"x": rand(1, 2, 3, 4), "g": g}, mode=mode, padding_mode=padding)
        stays_inside(model, {"x": rand(1, 2, 3, 4), "g": g})


def test_grid_sample_int_data_declined() -> None:
    x = np.arange(24, dtype=np.int32).reshape(1, 2, 3, 4)
    model = build("GridSample", {"x": x, "g": grid(1, 2, 2, 2)})
    with pytest.raises(UnsupportedOpError, match="GridSample is lowered for float data"):
        lower_model(model)


# --------------------------------------------------------------------------- AffineGrid
@pytest.mark.parametrize("align", [0, 1])
@pytest.mark.parametrize("size", [(2, 3, 5, 6), (1, 2, 3, 4, 5), (2, 1, 2, 9)])
def test_affine_grid(size: tuple[int, ...], align: int) -> None:
    r = len(size) - 2
    theta = rand(size[0], r, r + 1, seed=3)
    feeds = {"theta": theta}
    consts = {"size": np.array(size, dtype=np.int64)}
    close("AffineGrid", feeds, consts, align_corners=align)


def test_affine_grid_single_position_axis() -> None:
    """An axis of length 1 sits at 0 (PyTorch and the op's reference) under both
    align_corners; onnxruntime puts it at 1 with align_corners (Eigen's LinSpaced), onnx's
    reference divides by zero, so this compares with the CPU compiler's reference."""
    from torsh_gen.backend import prepare

    theta = rand(2, 2, 3, seed=3)
    for align in (0, 1):
        model = build("AffineGrid", {"theta": theta}, {"size": np.array([2, 1, 1, 9], np.int64)}, align_corners=align)
        want = prepare(model).run([theta])[0]
        program = lower_model(model)
        np.testing.assert_allclose(interpret_program(program, {"theta": theta})[0], want, rtol=1e-6, atol=1e-6)


def test_affine_grid_runtime_size() -> None:
    """The size input fed at run time: the declared output shape fixes the grid."""
    feeds = {"theta": rand(2, 2, 3), "size": np.array([2, 3, 4, 7], dtype=np.int64)}
    close("AffineGrid", feeds, out_shape=(2, 4, 7, 2))


# --------------------------------------------------------------------------- Col2Im
COL2IM_CASES = [
    # image, block, attrs
    ((5, 5), (1, 5), {}),
    ((6, 6), (2, 2), {"dilations": [1, 5]}),
    ((5, 5), (1, 5), {"pads": [0, 1, 0, 1]}),
    ((5, 5), (3, 3), {"strides": [2, 2]}),
    ((7, 6), (2, 3), {"strides": [2, 1], "pads": [1, 0, 2, 1], "dilations": [2, 1]}),
    ((3, 4, 5), (1, 2, 2), {"pads": [0, 1, 0, 0, 0, 1]}),
]


def _col2im_feeds(image, block, attrs, c: int = 2, nb: int = 2) -> dict[str, np.ndarray]:
    n = len(image)
    strides = attrs.get("strides", [1] * n)
    dil = attrs.get("dilations", [1] * n)
    pads = attrs.get("pads", [0] * 2 * n)
    counts = [
        (image[i] + pads[i] + pads[i + n] - dil[i] * (block[i] - 1) - 1) // strides[i] + 1
        for i in range(n)
    ]
    return {"x": rand(nb, c * int(np.prod(block)), int(np.prod(counts)), seed=4)}


@pytest.mark.parametrize("image,block,attrs", COL2IM_CASES)
def test_col2im_constant_shapes(image, block, attrs) -> None:
    feeds = _col2im_feeds(image, block, attrs)
    consts = {"image_shape": np.array(image, np.int64), "block_shape": np.array(block, np.int64)}
    close("Col2Im", feeds, consts, opset=18, **attrs)


@pytest.mark.parametrize("image,block,attrs", COL2IM_CASES[:2] + COL2IM_CASES[4:])
def test_col2im_runtime_shapes(image, block, attrs) -> None:
    """Both shapes as graph inputs (as the ONNX test models have them)."""
    feeds = _col2im_feeds(image, block, attrs)
    feeds["image_shape"] = np.array(image, np.int64)
    feeds["block_shape"] = np.array(block, np.int64)
    nb, ck = feeds["x"].shape[:2]
    out = (nb, ck // int(np.prod(block))) + tuple(image)
    close("Col2Im", feeds, out_shape=out, opset=18, **attrs)


def test_col2im_int_data() -> None:
    """onnxruntime has Col2Im for float only: integer sums against onnx's reference."""
    feeds = {"x": np.arange(2 * 4 * 9, dtype=np.int32).reshape(2, 4, 9)}
    consts = {"image_shape": np.array([4, 4], np.int64), "block_shape": np.array([2, 2], np.int64)}
    against_reference(build("Col2Im", feeds, consts, opset=18), feeds, tol=0)


@pytest.mark.parametrize("block", [[0, 0], [-3, 7], [10**15, 2], [5, 1], [1, 1]])
def test_col2im_bad_runtime_block_stays_inside(block) -> None:
    feeds = {
        "x": rand(1, 5, 5),
        "image_shape": np.array([5, 5], np.int64),
        "block_shape": np.array(block, np.int64),
    }
    stays_inside(build("Col2Im", feeds, out_shape=(1, 1, 5, 5), opset=18), feeds)


# --------------------------------------------------------------------------- RoiAlign
ROIS = np.array(
    [[0, 0, 3, 4], [1, 0.5, 4.2, 3.3], [-2, -1, 7, 9], [2, 2, 2.5, 2.2], [4.4, 3.1, 1.0, 0.5]],
    np.float32,
)
BATCH = np.array([0, 1, 1, 0, 1], np.int64)


@pytest.mark.parametrize(
    "mode,ctm,ratio",
    list(itertools.product(["avg", "max"], ["half_pixel", "output_half_pixel"], [0, 2])),
)
def test_roi_align(mode: str, ctm: str, ratio: int) -> None:
    feeds = {"x": rand(2, 3, 6, 5), "rois": ROIS, "bi": BATCH}
    close("RoiAlign", feeds, opset=16, mode=mode, coordinate_transformation_mode=ctm,
          sampling_ratio=ratio, output_height=3, output_width=2, spatial_scale=0.9)


def test_roi_align_opset10_default_coordinates_and_double() -> None:
    feeds = {"x": rand(1, 2, 7, 7), "rois": ROIS[:3] * 1.5, "bi": np.zeros(3, np.int64)}
    close("RoiAlign", feeds, opset=10, output_height=2, output_width=3, sampling_ratio=0)
    feeds64 = {"x": rand(2, 2, 5, 6, dtype=np.float64), "rois": ROIS.astype(np.float64), "bi": BATCH}
    close("RoiAlign", feeds64, opset=16, output_height=2, output_width=2, spatial_scale=0.5, interpret=False)


def test_roi_align_hostile_rois_and_batch_indices_stay_inside() -> None:
    rois = np.array([[np.nan, 0, 1, 1], [0, 0, 1e30, np.inf], [-1e9, -1e9, -1e9, 3], [0, 0, 2, 2]], np.float32)
    feeds = {"x": rand(2, 2, 4, 4), "rois": rois, "bi": np.array([0, 7, -5, 10**12], np.int64)}
    model = build("RoiAlign", feeds, opset=16, output_height=2, output_width=2, sampling_ratio=0)
    from torsh_gen.backends.kernel.lower import sampling

    old = sampling.ROI_GRID_CAP
    sampling.ROI_GRID_CAP = 64.0  # keep the interpreter's adaptive grid short
    try:
        stays_inside(model, feeds)
    finally:
        sampling.ROI_GRID_CAP = old


# --------------------------------------------------------------------------- MaxUnpool
def _pooled(x: np.ndarray, kernel: list[int], strides: list[int], pads: list[int] | None = None):
    """MaxPool's values and indices from onnxruntime (the natural MaxUnpool input)."""
    import onnxruntime as ort

    attrs = {"kernel_shape": kernel, "strides": strides}
    if pads:
        attrs["pads"] = pads
    node = helper.make_node("MaxPool", ["x"], ["v", "i"], **attrs)
    vi = [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, x.shape)]
    outs = [onnx.ValueInfoProto(name="v"), onnx.ValueInfoProto(name="i")]
    model = helper.make_model(helper.make_graph([node], "g", vi, outs), opset_imports=[helper.make_opsetid("", 12)])
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})


@pytest.mark.parametrize(
    "shape,kernel,strides,pads",
    [((2, 3, 4, 6), [2, 2], [2, 2], None), ((1, 2, 5, 5), [3, 3], [2, 2], [1, 1, 1, 1]),
     ((1, 2, 9), [3], [3], None), ((1, 1, 4, 4, 4), [2, 2, 2], [2, 2, 2], None)],
)
def test_max_unpool(shape, kernel, strides, pads) -> None:
    v, i = _pooled(rand(*shape), kernel, strides, pads)
    attrs = {"kernel_shape": kernel, "strides": strides}
    if pads:
        attrs["pads"] = pads
    close("MaxUnpool", {"v": v, "i": i}, opset=11, tol=0, **attrs)


def test_max_unpool_with_output_shape() -> None:
    """onnxruntime addresses the requested shape; the spec's test data (and onnx's
    reference) the default layout, padded at the end of each axis."""
    v, i = _pooled(rand(1, 2, 4, 4), [2, 2], [2, 2])
    feeds = {"v": v, "i": i, "shape": np.array([1, 2, 5, 6], np.int64)}
    model = build("MaxUnpool", feeds, out_shape=(1, 2, 5, 6), opset=11, kernel_shape=[2, 2], strides=[2, 2])
    against_reference(model, feeds, tol=0)


def test_max_unpool_bad_indices_stay_inside() -> None:
    v = rand(1, 1, 2, 2)
    i = np.array([[[[3, 99], [-1, -(10**12)]]]], np.int64)
    feeds = {"v": v, "i": i}
    got = stays_inside(build("MaxUnpool", feeds, opset=11, kernel_shape=[2, 2], strides=[2, 2]), feeds)
    assert got.shape == (1, 1, 4, 4)


# --------------------------------------------------------------------------- DeformConv
@pytest.mark.parametrize(
    "group,og,mask,bias,attrs",
    [(1, 1, False, False, {}), (2, 2, True, True, {"pads": [1, 1, 1, 1]}),
     (1, 2, True, False, {"strides": [2, 1], "dilations": [1, 2]}), (2, 1, False, True, {"pads": [0, 1, 1, 0]})],
)
def test_deform_conv(group: int, og: int, mask: bool, bias: bool, attrs) -> None:
    nb, c, m, k = 2, 4, 4, (3, 2)
    strides = attrs.get("strides", [1, 1])
    dil = attrs.get("dilations", [1, 1])
    pads = attrs.get("pads", [0, 0, 0, 0])
    h, w = 5, 6
    out = [(s + pads[i] + pads[i + 2] - dil[i] * (k[i] - 1) - 1) // strides[i] + 1 for i, s in enumerate((h, w))]
    feeds = {
        "x": rand(nb, c, h, w),
        "w": rand(m, c // group, *k, seed=2),
        "off": rand(nb, og * k[0] * k[1] * 2, *out, seed=3) * 1.5,
    }
    names = ["x", "w", "off"]
    if bias:
        feeds["b"] = rand(m, seed=5)
    names.append("b" if bias else "")
    if mask:
        feeds["mask"] = np.random.default_rng(6).uniform(0, 1, (nb, og * k[0] * k[1], *out)).astype(np.float32)
        names.append("mask")
    close("DeformConv", feeds, inputs=names, opset=19, group=group, offset_group=og, kernel_shape=list(k), **attrs)


def test_deform_conv_nonfinite_offsets_stay_inside() -> None:
    off = rand(1, 2 * 4, 2, 2) * 100
    off.reshape(-1)[:4] = [np.nan, np.inf, -np.inf, 1e30]
    feeds = {"x": rand(1, 1, 3, 3), "w": rand(1, 1, 2, 2), "off": off}
    stays_inside(build("DeformConv", feeds, opset=19), feeds)


# --------------------------------------------------------------------------- larger shapes
@pytest.mark.parametrize("lanes", [4, 16])
def test_larger_shapes_threads_and_vector_widths(lanes: int) -> None:
    """Shapes whose outer loops run in parallel and whose rows fill several vectors."""
    cases = [
        ("GridSample", {"x": rand(2, 3, 8, 9), "g": grid(2, 16, 21, 2, spread=1.4)}, None, {"mode": "cubic", "padding_mode": "reflection"}, 20),
        ("GridSample", {"x": rand(2, 3, 8, 9), "g": grid(2, 16, 21, 2, spread=1.4)}, None, {"mode": "nearest"}, 20),
        ("AffineGrid", {"theta": rand(3, 2, 3)}, {"size": np.array([3, 1, 24, 37], np.int64)}, {}, 20),
        ("Col2Im", {"x": rand(2, 2 * 9, 100)}, {"image_shape": np.array([10, 10], np.int64), "block_shape": np.array([3, 3], np.int64)}, {"pads": [1, 1, 1, 1], "strides": [1, 1]}, 18),
        ("DeformConv", {"x": rand(1, 4, 10, 10), "w": rand(6, 2, 3, 3), "off": rand(1, 2 * 18, 8, 8) * 2}, None, {"group": 2, "offset_group": 2}, 19),
    ]
    for op, feeds, consts, attrs, opset in cases:
        model = build(op, feeds, consts, opset=opset, **attrs)
        program = check_native(model, feeds, rtol=1e-4, atol=1e-4, lanes=lanes)
        assert op in [c.op_type for c in program.calls]
