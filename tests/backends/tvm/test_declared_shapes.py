"""Declared output shapes are untrusted (they come from the model file): where a run-time
operand decides the result, the TVM backend either computes from the operand, giving what
onnxruntime gives on the same model with the declaration removed, or stops at run time
with a message saying the two disagree. Never a result built from the declared value.

Also Resize with constant, non-integer scales in the coordinate modes that depend on the
resized length, checked against onnx's reference and the run-time-scales path."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.backends.native.helpers import ort_run
from tests.backends.tvm.helpers import node_model, tvm_session

F, I64 = TensorProto.FLOAT, TensorProto.INT64
RNG = np.random.default_rng(11)


def _x(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def _undeclared(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with the shapes of its outputs removed (element types kept)."""
    stripped = onnx.ModelProto()
    stripped.CopyFrom(model)
    for out in stripped.graph.output:
        out.type.tensor_type.ClearField("shape")
    return stripped


def _assert_as_undeclared(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> None:
    """Our build of ``model`` (whose declared output shapes may lie) gives what
    onnxruntime gives once the declarations are removed."""
    got = list(tvm_session(model).run(feeds).values())
    want = ort_run(_undeclared(model), feeds)
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


# -- built from the declaration, checked at run time --------------------------------------
def _top_k_model() -> onnx.ModelProto:
    outs = [("v", F, [2, 3]), ("i", I64, [2, 3])]
    return node_model("TopK", [("x", F, [2, 6]), ("k", I64, [1])], outs)


def test_top_k_with_the_declared_k_is_right() -> None:
    x = _x(2, 6)
    _assert_as_undeclared(_top_k_model(), {"x": x, "k": np.array([3], np.int64)})


@pytest.mark.parametrize("k", [2, 5])
def test_top_k_with_another_k_than_declared_stops(k: int) -> None:
    session = tvm_session(_top_k_model())
    with pytest.raises(
        AssertionError,
        match=rf"^TopK: k is \[{k}\] at run time, but the model's declared output shape says k=3$",
    ):
        session.run({"x": _x(2, 6), "k": np.array([k], np.int64)})


@pytest.mark.parametrize("size, ok", [(8, True), (6, False)])
def test_window_size_read_off_the_declaration_is_checked(size: int, ok: bool) -> None:
    """A window with a run-time size is built from the declared length (only one size gives
    it); a run-time size that disagrees stops the model instead of returning that window."""
    model = node_model(
        "HannWindow", [("n", I64, [])], [("w", F, [8])], opset=17
    )
    session = tvm_session(model)
    feeds = {"n": np.array(size, np.int64)}
    if ok:
        np.testing.assert_allclose(session.run(feeds)["w"], ort_run(model, feeds)[0], atol=1e-6)
        return
    with pytest.raises(
        AssertionError,
        match=r"^HannWindow: the size is \[6\] at run time, but the model's declared output shape says 8$",
    ):
        session.run(feeds)


@pytest.mark.parametrize("shape, ok", [([1, 2, 7, 5], True), ([1, 2, 8, 5], False)])
def test_max_unpool_run_time_output_shape_is_checked(shape: list[int], ok: bool) -> None:
    """MaxUnpool with output_shape given at run time is built from the declared output
    shape; a run-time output_shape that disagrees stops the model."""
    pool = helper.make_node("MaxPool", ["x"], ["p", "i"], kernel_shape=[2, 2], strides=[2, 2])
    unpool = helper.make_node("MaxUnpool", ["p", "i", "s"], ["y"], kernel_shape=[2, 2], strides=[2, 2])
    graph = helper.make_graph(
        [pool, unpool],
        "unpool",
        [helper.make_tensor_value_info("x", F, [1, 2, 6, 4]), helper.make_tensor_value_info("s", I64, [4])],
        [helper.make_tensor_value_info("y", F, [1, 2, 7, 5])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])
    session = tvm_session(model)
    feeds = {"x": _x(1, 2, 6, 4), "s": np.array(shape, np.int64)}
    if ok:
        from onnx.reference import ReferenceEvaluator

        np.testing.assert_allclose(session.run(feeds)["y"], ReferenceEvaluator(model).run(None, feeds)[0])
        return
    with pytest.raises(
        AssertionError,
        match=r"^MaxUnpool: output_shape is \[1 2 8 5\] at run time, but the model's declared output shape says \[1, 2, 7, 5\]$",
    ):
        session.run(feeds)


@pytest.mark.parametrize("image, ok", [([5, 5], True), ([4, 6], False)])
def test_col2im_run_time_image_shape_is_checked(image: list[int], ok: bool) -> None:
    """Col2Im with image_shape given at run time is built from the declared output shape;
    a run-time image_shape that disagrees stops the model."""
    model = node_model(
        "Col2Im",
        [("x", F, [1, 5, 25]), ("img", I64, [2]), ("blk", I64, [2])],
        [("y", F, [1, 5, 5, 5])],
        opset=18,
    )
    session = tvm_session(model)
    feeds = {"x": _x(1, 5, 25), "img": np.array(image, np.int64), "blk": np.array([1, 1], np.int64)}
    if ok:
        _assert_as_undeclared(model, feeds)
        return
    with pytest.raises(
        AssertionError,
        match=r"^Col2Im: image_shape is \[4 6\] at run time, but the model's declared output shape says \[5, 5\]$",
    ):
        session.run(feeds)


@pytest.mark.parametrize("axis, ok", [(0, True), (-2, True), (2, False)])
def test_dft_run_time_axis_is_checked(axis: int, ok: bool) -> None:
    """A run-time DFT axis is computed along every axis it may name and picked at run
    time; the complex dim (or any axis the declaration rules out) stops the model."""
    model = node_model(
        "DFT", [("x", F, [2, 5, 1]), ("n", I64, []), ("axis", I64, [])], [("y", F, [2, 5, 2])], opset=20
    )
    model.graph.node[0].input[1] = ""  # no dft_length
    del model.graph.input[1]
    session = tvm_session(model)
    feeds = {"x": _x(2, 5, 1), "axis": np.array(axis, np.int64)}
    if ok:
        np.testing.assert_allclose(session.run(feeds)["y"], ort_run(model, feeds)[0], rtol=1e-5, atol=1e-5)
        return
    with pytest.raises(AssertionError, match=r"^DFT: the axis given at run time \(2\) is not one the declared output shape allows \[0, 1\]$"):
        session.run(feeds)


@pytest.mark.parametrize("step, ok", [(2, True), (3, False), (0, False)])
def test_stft_run_time_frame_step_is_checked(step: int, ok: bool) -> None:
    """STFT's frames are laid out from the declared frame count (7: 16 samples, frames of
    4 every 2); a run-time step giving another count stops the model."""
    length = numpy_helper.from_array(np.array(4, np.int64), "len")
    model = node_model(
        "STFT",
        [("x", F, [1, 16, 1]), ("step", I64, []), ("len", I64, [])],
        [("y", F, [1, 7, 3, 2])],
        initializers=[length],
        opset=17,
    )
    model.graph.node[0].input[:] = ["x", "step", "", "len"]
    session = tvm_session(model)
    feeds = {"x": _x(1, 16, 1), "step": np.array(step, np.int64)}
    if ok:
        np.testing.assert_allclose(session.run(feeds)["y"], ort_run(model, feeds)[0], rtol=1e-5, atol=1e-5)
        return
    with pytest.raises(AssertionError, match=rf"^STFT: the frame_step given at run time \({step}\) does not give the declared 7 frames$"):
        session.run(feeds)


@pytest.mark.parametrize("n_mel, n_dft, ok", [(8, 8, True), (8, 10, False), (6, 8, False)])
def test_mel_weight_matrix_run_time_sizes_are_checked(n_mel: int, n_dft: int, ok: bool) -> None:
    """MelWeightMatrix with run-time sizes is built with the declared shape [5, 8]."""
    ins = [("mel", I64, []), ("dft", I64, []), ("rate", I64, []), ("lo", F, []), ("hi", F, [])]
    model = node_model("MelWeightMatrix", ins, [("w", F, [5, 8])], opset=17)
    session = tvm_session(model)
    feeds = {
        "mel": np.array(n_mel, np.int64),
        "dft": np.array(n_dft, np.int64),
        "rate": np.array(8000, np.int64),
        "lo": np.array(0.0, np.float32),
        "hi": np.array(4000.0, np.float32),
    }
    if ok:
        np.testing.assert_allclose(session.run(feeds)["w"], ort_run(model, feeds)[0], rtol=1e-5, atol=1e-6)
        return
    with pytest.raises(
        AssertionError,
        match=rf"^MelWeightMatrix: num_mel_bins \({n_mel}\) and dft_length \({n_dft}\) given at run time do not give the declared shape \[5, 8\]$",
    ):
        session.run(feeds)


def _reduce_model(
    op: str, shape: list[int], declared: list[int], n_axes: int, keepdims: int
) -> onnx.ModelProto:
    ins = [("x", F, shape), ("axes", I64, [n_axes])]
    return node_model(op, ins, [("y", F, declared)], opset=18, keepdims=keepdims)


def test_reduce_with_the_declared_axes_is_right() -> None:
    session = tvm_session(_reduce_model("ReduceSum", [3, 2, 4], [3, 2], 1, 0))
    x = _x(3, 2, 4)
    for axis in (2, -1):
        got = session.run({"x": x, "axes": np.array([axis], np.int64)})["y"]
        np.testing.assert_allclose(got, x.sum(axis=axis), rtol=1e-5, atol=1e-6)


def test_reduce_with_other_axes_than_declared_stops() -> None:
    """Reducing axis 1 gives shape (3, 4); the declaration (3, 2) implies axis 2."""
    session = tvm_session(_reduce_model("ReduceSum", [3, 2, 4], [3, 2], 1, 0))
    with pytest.raises(
        AssertionError,
        match=r"^ReduceSum: the reduction axes given at run time \(\[1\]\) disagree .* implies axes \[2\]$",
    ):
        session.run({"x": _x(3, 2, 4), "axes": np.array([1], np.int64)})


def test_reduce_with_an_out_of_range_axis_stops() -> None:
    session = tvm_session(_reduce_model("ReduceMax", [3, 2, 4], [3, 2], 1, 0))
    with pytest.raises(AssertionError, match="ReduceMax: the reduction axes given at run time"):
        session.run({"x": _x(3, 2, 4), "axes": np.array([7], np.int64)})


def test_reduce_keepdims_accepts_singleton_axes_and_refuses_others() -> None:
    """With keepdims, reducing a singleton axis as well changes nothing: still right."""
    session = tvm_session(_reduce_model("ReduceMean", [3, 1, 4], [3, 1, 1], 2, 1))
    x = _x(3, 1, 4)
    got = session.run({"x": x, "axes": np.array([1, 2], np.int64)})["y"]
    np.testing.assert_allclose(got, x.mean(axis=(1, 2), keepdims=True), rtol=1e-5, atol=1e-6)
    with pytest.raises(AssertionError, match="ReduceMean: the reduction axes given at run time"):
        session.run({"x": x, "axes": np.array([0, 2], np.int64)})


# -- computed from the operand ---------------------------------------------------------------
def _i64(*values: int) -> np.ndarray:
    return np.array(values, np.int64)


_FROM_OPERAND: dict[str, tuple[onnx.ModelProto, dict[str, np.ndarray]]] = {
    "Expand": (
        node_model("Expand", [("x", F, [3, 1]), ("s", I64, [2])], [("y", F, [3, 5])]),
        {"x": _x(3, 1), "s": _i64(3, 4)},
    ),
    "Tile": (
        node_model("Tile", [("x", F, [2, 3]), ("r", I64, [2])], [("y", F, [2, 3])]),
        {"x": _x(2, 3), "r": _i64(2, 2)},
    ),
    "Reshape": (
        node_model("Reshape", [("x", F, [2, 3]), ("s", I64, [2])], [("y", F, [6, 1])]),
        {"x": _x(2, 3), "s": _i64(3, -1)},
    ),
    "ConstantOfShape": (
        node_model(
            "ConstantOfShape",
            [("s", I64, [2])],
            [("y", F, [2, 2])],
            value=numpy_helper.from_array(np.array([1.5], np.float32)),
        ),
        {"s": _i64(3, 1)},
    ),
    "Range": (
        node_model("Range", [("a", F, []), ("b", F, []), ("d", F, [])], [("y", F, [5])]),
        {
            "a": np.array(0.5, np.float32),
            "b": np.array(3.0, np.float32),
            "d": np.array(0.75, np.float32),
        },
    ),
    "OneHot": (
        node_model(
            "OneHot", [("i", I64, [3]), ("n", I64, []), ("v", F, [2])], [("y", F, [3, 4])], axis=-1
        ),
        {"i": _i64(0, 5, -1), "n": np.array(6, np.int64), "v": np.array([0.0, 2.0], np.float32)},
    ),
}


@pytest.mark.parametrize("op", sorted(_FROM_OPERAND))
def test_run_time_shape_operands_win_over_the_declaration(op: str) -> None:
    model, feeds = _FROM_OPERAND[op]
    _assert_as_undeclared(model, feeds)


# -- Resize with non-integer constant scales ----------------------------------------------------
def _resize(
    ctm: str, mode: str, nearest: str, scales: list[float], runtime: bool
) -> onnx.ModelProto:
    """Resize (opset 19) of a 1x1x5x7 input; scales an initializer or a graph input."""
    inputs = [helper.make_tensor_value_info("x", F, [1, 1, 5, 7])]
    inits = []
    s = numpy_helper.from_array(np.array([1, 1, *scales], np.float32), "scales")
    if runtime:
        inputs.append(helper.make_tensor_value_info("scales", F, [4]))
    else:
        inits.append(s)
    roi = ""
    if ctm == "tf_crop_and_resize":
        roi = "roi"
        inits.append(numpy_helper.from_array(np.array([0, 0, 0, 0, 1, 1, 1, 1], np.float32), "roi"))
    node = helper.make_node(
        "Resize",
        ["x", roi, "scales"],
        ["y"],
        mode=mode,
        coordinate_transformation_mode=ctm,
        nearest_mode=nearest,
    )
    graph = helper.make_graph(
        [node], "resize", inputs, [helper.make_tensor_value_info("y", F, None)], inits
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])


_MODES = [("linear", "round_prefer_floor"), ("cubic", "round_prefer_floor")] + [
    ("nearest", m) for m in ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")
]
#: (scales, coordinate_transformation_mode, mode, nearest_mode); a few run by default,
#: the rest (two builds each) with the slow tests
_RESIZE_DEFAULT = {
    ("align_corners", "linear", "round_prefer_floor"),
    ("tf_crop_and_resize", "cubic", "round_prefer_floor"),
    ("pytorch_half_pixel", "nearest", "floor"),
}
_RESIZE_CASES: list[Any] = [
    pytest.param(
        [1.7, 0.6],
        ctm,
        mode,
        nearest,
        marks=[] if (ctm, mode, nearest) in _RESIZE_DEFAULT else [pytest.mark.slow],
    )
    for ctm in ("align_corners", "pytorch_half_pixel", "tf_crop_and_resize")
    for mode, nearest in _MODES
] + [
    pytest.param(
        [0.2, 0.15],
        ctm,
        mode,
        "round_prefer_floor",
        marks=[] if mode == "cubic" else [pytest.mark.slow],
    )
    for ctm in ("align_corners", "pytorch_half_pixel")
    for mode in ("linear", "cubic")
]


@pytest.mark.parametrize(("scales", "ctm", "mode", "nearest"), _RESIZE_CASES)
def test_resize_with_non_integer_constant_scales(
    scales: list[float], ctm: str, mode: str, nearest: str
) -> None:
    """The resized length in these modes is ``scale * length``, fractional here, as onnx's
    reference computes it and its node tests expect (onnxruntime 1.2x rounds it to the
    output length, and fails those tests); constant and run-time scales agree."""
    from onnx.reference import ReferenceEvaluator

    x = (np.arange(35, dtype=np.float32).reshape(1, 1, 5, 7) ** 1.3).astype(np.float32)
    const = _resize(ctm, mode, nearest, scales, runtime=False)
    want = ReferenceEvaluator(const).run(None, {"x": x})[0]
    got = tvm_session(const).run({"x": x})["y"]
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    feeds = {"x": x, "scales": np.array([1, 1, *scales], np.float32)}
    at_run_time = tvm_session(_resize(ctm, mode, nearest, scales, runtime=True)).run(feeds)["y"]
    np.testing.assert_allclose(at_run_time, want, rtol=1e-4, atol=1e-4)
