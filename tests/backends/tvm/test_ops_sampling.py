"""Resize with run-time scales/sizes/roi, GridSample and AffineGrid on the TVM backend,
against onnxruntime (or onnx's reference evaluator)."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto as TP
from onnx import numpy_helper

from tests.backends.tvm.helpers import check_tvm, node_model

#: Slow (about 3 minutes; the default suite's TVM conformance cross-section runs GridSample and run-time Resize): `make test-slow`.
pytestmark = pytest.mark.slow

F, I64 = TP.FLOAT, TP.INT64
RNG = np.random.default_rng(7)


def _x(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize(
    ("mode", "ctm", "scales"),
    [
        ("linear", "half_pixel", [1, 1, 1.7, 0.6]),
        ("cubic", "align_corners", [1, 1, 0.6, 2.0]),
        ("cubic", "pytorch_half_pixel", [1, 1, 2.5, 1.5]),
        ("linear", "half_pixel_symmetric", [1, 1, 1.3, 2.2]),
    ],
)
def test_resize_runtime_scales(mode: str, ctm: str, scales: list[float]) -> None:
    """Scales fed as a graph input: the output shape and the taps come at run time."""
    m = node_model(
        "Resize",
        [("x", F, [1, 2, 5, 6]), ("roi", F, [0]), ("scales", F, [4])],
        [("y", F, None)],
        initializers=[numpy_helper.from_array(np.zeros(0, np.float32), "roi")],
        opset=19,
        mode=mode,
        coordinate_transformation_mode=ctm,
    )
    check_tvm(m, {"x": _x(1, 2, 5, 6), "scales": np.array(scales, np.float32)}, oracle="reference", rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("policy", ["stretch", "not_larger"])
def test_resize_runtime_sizes_nearest(policy: str) -> None:
    m = node_model(
        "Resize",
        [("x", F, [1, 1, 4, 5]), ("roi", F, [0]), ("scales", F, [0]), ("sizes", I64, [2])],
        [("y", F, None)],
        initializers=[numpy_helper.from_array(np.zeros(0, np.float32), n) for n in ("roi", "scales")],
        opset=19,
        axes=[3, 2],
        keep_aspect_ratio_policy=policy,
        nearest_mode="round_prefer_ceil",
    )
    check_tvm(m, {"x": _x(1, 1, 4, 5), "sizes": np.array([7, 3], np.int64)}, oracle="reference")


def test_resize_runtime_tf_crop_and_resize() -> None:
    m = node_model(
        "Resize",
        [("x", F, [1, 1, 4, 4]), ("roi", F, [8]), ("scales", F, [0]), ("sizes", I64, [4])],
        [("y", F, None)],
        initializers=[numpy_helper.from_array(np.zeros(0, np.float32), "scales")],
        opset=19,
        mode="linear",
        coordinate_transformation_mode="tf_crop_and_resize",
        extrapolation_value=10.0,
    )
    feeds = {
        "x": _x(1, 1, 4, 4),
        "roi": np.array([0, 0, 0.4, 0.6, 1, 1, 1.2, 1.7], np.float32),
        "sizes": np.array([1, 1, 3, 3], np.int64),
    }
    check_tvm(m, feeds, oracle="reference", rtol=1e-4, atol=1e-5)


def test_upsample_runtime_scales_int() -> None:
    """Nearest on integers is a pure gather: exact."""
    m = node_model("Upsample", [("x", TP.INT32, [1, 1, 2, 3]), ("s", F, [4])], [("y", TP.INT32, None)], opset=9)
    x = np.arange(6, dtype=np.int32).reshape(1, 1, 2, 3)
    check_tvm(m, {"x": x, "s": np.array([1, 1, 2, 3], np.float32)}, oracle="reference")


@pytest.mark.parametrize(
    ("mode", "pad", "align"),
    [("linear", "zeros", 0), ("nearest", "border", 1), ("cubic", "reflection", 0), ("linear", "reflection", 1)],
)
def test_grid_sample_2d(mode: str, pad: str, align: int) -> None:
    """Grid points well outside [-1, 1] exercise every padding mode."""
    m = node_model(
        "GridSample",
        [("x", F, [2, 3, 4, 5]), ("g", F, [2, 3, 6, 2])],
        [("y", F, [2, 3, 3, 6])],
        opset=20,
        mode=mode,
        padding_mode=pad,
        align_corners=align,
    )
    grid = (RNG.random((2, 3, 6, 2)) * 5 - 2.5).astype(np.float32)
    check_tvm(m, {"x": _x(2, 3, 4, 5), "g": grid}, oracle="reference", rtol=1e-4, atol=1e-5)


def test_grid_sample_nan_grid_stays_in_bounds() -> None:
    """NaN and huge coordinates must not crash (they are clamped before indexing)."""
    m = node_model("GridSample", [("x", F, [1, 1, 3, 3]), ("g", F, [1, 1, 3, 2])], [("y", F, [1, 1, 1, 3])], opset=20)
    from tests.backends.tvm.helpers import tvm_session

    grid = np.array([[[[np.nan, 0.0], [1e30, -1e30], [0.0, 0.0]]]], np.float32)
    out = list(tvm_session(m).run({"x": _x(1, 1, 3, 3), "g": grid}).values())[0]
    assert out.shape == (1, 1, 1, 3) and np.isfinite(out[0, 0, 0, 1:]).all()


def test_grid_sample_3d_bilinear() -> None:
    m = node_model(
        "GridSample", [("x", F, [1, 2, 3, 4, 5]), ("g", F, [1, 2, 3, 2, 3])], [("y", F, [1, 2, 2, 3, 2])], opset=20
    )
    grid = (RNG.random((1, 2, 3, 2, 3)) * 2.4 - 1.2).astype(np.float32)
    check_tvm(m, {"x": _x(1, 2, 3, 4, 5), "g": grid}, oracle="reference", rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("align", "dims"), [(0, [2, 1, 3, 4]), (1, [2, 1, 2, 3, 4])])
def test_affine_grid_runtime_size(align: int, dims: list[int]) -> None:
    r = len(dims) - 2
    m = node_model(
        "AffineGrid", [("t", F, [2, r, r + 1]), ("s", I64, [r + 2])], [("y", F, None)], opset=20, align_corners=align
    )
    check_tvm(m, {"t": _x(2, r, r + 1), "s": np.array(dims, np.int64)}, oracle="reference", rtol=1e-5, atol=1e-6)
