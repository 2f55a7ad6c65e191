"""Tensor-manipulation converters against onnxruntime: the constant-operand paths the
conformance suite does not reach (it feeds shapes, pads and starts at run time), symbolic
dims, and run-time operands computed inside the graph."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto as TP
from onnx import helper, numpy_helper

from tests.backends.tvm.helpers import check_tvm, node_model, tvm_session
from torsh_gen.errors import UnsupportedOpError

F = TP.FLOAT
I64 = TP.INT64


def _x(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _i64(name: str, values: list[int]) -> onnx.TensorProto:
    return numpy_helper.from_array(np.array(values, dtype=np.int64), name)


def _graph(
    nodes: list[Any],
    inputs: list[Any],
    outputs: list[Any],
    inits: list[Any] | None = None,
    opset: int = 21,
) -> onnx.ModelProto:
    g = helper.make_graph(nodes, "g", inputs, outputs, inits or [])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def _vi(name: str, elem: int, shape: list[Any] | None) -> Any:
    return helper.make_tensor_value_info(name, elem, shape)


def test_slice_constant_operands_clamp_and_negative_steps() -> None:
    inits = [
        _i64("s", [-100, 8, 1]),
        _i64("e", [100, -100, -1]),
        _i64("a", [0, -2, 2]),
        _i64("st", [2, -3, 1]),
    ]
    model = node_model(
        "Slice",
        [("x", F, [5, 9, 4]), ("s", I64, [3]), ("e", I64, [3]), ("a", I64, [3]), ("st", I64, [3])],
        [("y", F, None)],
        inits,
    )
    check_tvm(model, {"x": _x(5, 9, 4)})


def test_slice_with_a_symbolic_dim_and_constant_starts() -> None:
    inits = [_i64("s", [1, -1]), _i64("e", [-1, -1000])]
    model = node_model(
        "Slice",
        [("x", F, ["N", 6]), ("s", I64, [2]), ("e", I64, [2]), ("a", I64, [2]), ("st", I64, [2])],
        [("y", F, None)],
        inits + [_i64("a", [0, 1]), _i64("st", [1, -2])],
    )
    session = tvm_session(model)
    for n in (3, 7):
        x = _x(n, 6, seed=n)
        np.testing.assert_array_equal(session.run({"x": x})["y"], x[1:-1, -1::-2])


def test_slice_opset1_attributes() -> None:
    model = node_model(
        "Slice",
        [("x", F, [4, 6])],
        [("y", F, None)],
        opset=9,
        starts=[1, -4],
        ends=[1000, -1],
        axes=[0, 1],
    )
    check_tvm(model, {"x": _x(4, 6)})


def test_slice_run_time_starts_from_a_computation() -> None:
    """starts computed in the graph (Shape → Sub), not a graph input."""
    nodes = [
        helper.make_node("Shape", ["x"], ["sh"]),
        helper.make_node("Sub", ["sh", "two"], ["e"]),
        helper.make_node("Slice", ["x", "one", "e"], ["y"]),
    ]
    model = _graph(
        nodes,
        [_vi("x", F, ["N", "M"])],
        [_vi("y", F, None)],
        [_i64("two", [2, 2]), _i64("one", [1, 0])],
    )
    check_tvm(model, {"x": _x(6, 5)})


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge", "wrap"])
def test_pad_constant_pads_every_mode(mode: str) -> None:
    pads = [1, -1, 2, 2]  # a negative pad crops before the mode pads
    inits = [_i64("p", pads), numpy_helper.from_array(np.array(1.5, np.float32), "v")]
    model = node_model(
        "Pad",
        [("x", F, [3, 4]), ("p", I64, [4]), ("v", F, [])],
        [("y", F, None)],
        inits,
        opset=19,
        mode=mode,
    )
    check_tvm(model, {"x": _x(3, 4)})


def test_pad_constant_axes_and_opset2_attributes() -> None:
    inits = [_i64("p", [1, 0, 2, 1]), _i64("a", [-1, 0])]
    node = helper.make_node("Pad", ["x", "p", "", "a"], ["y"])
    model = _graph([node], [_vi("x", F, [2, 3, 4])], [_vi("y", F, None)], inits, opset=19)
    check_tvm(model, {"x": _x(2, 3, 4)})
    old = node_model(
        "Pad", [("x", F, [2, 3])], [("y", F, None)], opset=2, pads=[0, 1, 1, 0], mode="edge"
    )
    check_tvm(old, {"x": _x(2, 3)})


def test_reshape_symbolic_batch_constant_and_run_time_shape() -> None:
    const = node_model(
        "Reshape",
        [("x", F, ["N", 3, 4]), ("s", I64, [3])],
        [("y", F, None)],
        [_i64("s", [0, -1, 2])],
    )
    check_tvm(const, {"x": _x(5, 3, 4)})
    nodes = [
        helper.make_node("Shape", ["x"], ["sh"], end=1),
        helper.make_node("Concat", ["sh", "k"], ["s"], axis=0),
        helper.make_node("Reshape", ["x", "s"], ["y"]),
    ]
    run = _graph(nodes, [_vi("x", F, ["N", 3, 4])], [_vi("y", F, None)], [_i64("k", [-1, 2])])
    check_tvm(run, {"x": _x(5, 3, 4)})


def test_squeeze_unsqueeze_constant_axes_and_old_opsets() -> None:
    check_tvm(
        node_model(
            "Squeeze",
            [("x", F, [1, 3, 1, 2]), ("a", I64, [1])],
            [("y", F, None)],
            [_i64("a", [-2])],
        ),
        {"x": _x(1, 3, 1, 2)},
    )
    check_tvm(
        node_model("Squeeze", [("x", F, [1, 3, 1, 2])], [("y", F, None)], opset=11),
        {"x": _x(1, 3, 1, 2)},
    )
    check_tvm(
        node_model("Unsqueeze", [("x", F, ["N", 2])], [("y", F, None)], opset=11, axes=[-1, 0]),
        {"x": _x(4, 2)},
    )


def test_transpose_concat_split_symbolic() -> None:
    nodes = [
        helper.make_node("Transpose", ["x"], ["t"], perm=[1, 0, 2]),
        helper.make_node("Concat", ["t", "t"], ["c"], axis=-1),
        helper.make_node("Split", ["c"], ["a", "b", "d"], axis=2, num_outputs=3),
    ]
    model = _graph(nodes, [_vi("x", F, ["N", 2, 4])], [_vi(n, F, None) for n in "abd"], opset=18)
    check_tvm(model, {"x": _x(3, 2, 4)})


def test_split_attribute_sizes_opset11() -> None:
    model = node_model(
        "Split", [("x", F, [7, 2])], [("a", F, None), ("b", F, None)], opset=11, split=[3, 4]
    )
    check_tvm(model, {"x": _x(7, 2)})


def test_gather_family_negative_constant_and_run_time_indices() -> None:
    data = _x(4, 5)
    check_tvm(
        node_model(
            "Gather",
            [("x", F, [4, 5]), ("i", I64, [3])],
            [("y", F, None)],
            [_i64("i", [-1, 0, -4])],
            axis=0,
        ),
        {"x": data},
    )
    check_tvm(
        node_model("Gather", [("x", F, [4, 5]), ("i", I64, [2, 2])], [("y", F, None)], axis=1),
        {"x": data, "i": np.array([[-1, 2], [0, -5]], np.int64)},
    )
    ge = node_model(
        "GatherElements", [("x", F, [4, 5]), ("i", TP.INT32, [4, 2])], [("y", F, None)], axis=-1
    )
    check_tvm(ge, {"x": data, "i": np.array([[-1, 2], [0, -5], [4, 1], [3, -3]], np.int32)})
    nd = node_model(
        "GatherND", [("x", F, [2, 3, 4]), ("i", I64, [2, 1, 2])], [("y", F, None)], batch_dims=1
    )
    check_tvm(nd, {"x": _x(2, 3, 4), "i": np.array([[[-1, -4]], [[0, 3]]], np.int64)})


@pytest.mark.parametrize("reduction", ["none", "add", "max"])
def test_scatter_family_reductions_and_negative_indices(reduction: str) -> None:
    se = node_model(
        "ScatterElements",
        [("x", F, [3, 4]), ("i", I64, [2, 2]), ("u", F, [2, 2])],
        [("y", F, None)],
        axis=1,
        reduction=reduction,
    )
    check_tvm(
        se, {"x": _x(3, 4), "i": np.array([[-1, 0], [1, -2]], np.int64), "u": _x(2, 2, seed=1)}
    )
    snd = node_model(
        "ScatterND",
        [("x", F, [3, 4]), ("i", I64, [2, 1]), ("u", F, [2, 4])],
        [("y", F, None)],
        reduction=reduction,
    )
    check_tvm(snd, {"x": _x(3, 4), "i": np.array([[-1], [0]], np.int64), "u": _x(2, 4, seed=1)})


def test_expand_tile_constant_operands() -> None:
    exp = node_model(
        "Expand", [("x", F, ["N", 1]), ("s", I64, [3])], [("y", F, None)], [_i64("s", [2, 1, 3])]
    )
    check_tvm(exp, {"x": _x(4, 1)})
    check_tvm(
        node_model(
            "Tile", [("x", F, [2, 3]), ("r", I64, [2])], [("y", F, None)], [_i64("r", [2, 3])]
        ),
        {"x": _x(2, 3)},
    )


def test_run_time_scalar_operands_computed_in_graph() -> None:
    """Trilu's k and OneHot's depth from a Squeeze of a 1-element input: run-time 0-d."""
    nodes = [
        helper.make_node("Squeeze", ["k1", "zero"], ["k"]),
        helper.make_node("Trilu", ["x", "k"], ["y"], upper=0),
    ]
    model = _graph(
        nodes, [_vi("x", F, [4, 5]), _vi("k1", I64, [1])], [_vi("y", F, None)], [_i64("zero", [0])]
    )
    check_tvm(model, {"x": _x(4, 5), "k1": np.array([-1], np.int64)})
    nodes = [
        helper.make_node("Squeeze", ["d1", "zero"], ["d"]),
        helper.make_node("OneHot", ["i", "d", "v"], ["y"], axis=0),
    ]
    model = _graph(
        nodes,
        [_vi("i", I64, [3]), _vi("d1", I64, [1]), _vi("v", F, [2])],
        [_vi("y", F, None)],
        [_i64("zero", [0])],
    )
    check_tvm(
        model,
        {
            "i": np.array([1, -1, 7], np.int64),
            "d1": np.array([4], np.int64),
            "v": np.array([0.5, 2.0], np.float32),
        },
    )


def test_layout_ops_symbolic_batch() -> None:
    for mode in ("DCR", "CRD"):
        model = node_model(
            "DepthToSpace", [("x", F, ["N", 8, 2, 3])], [("y", F, None)], blocksize=2, mode=mode
        )
        check_tvm(model, {"x": _x(2, 8, 2, 3)})
    check_tvm(
        node_model("SpaceToDepth", [("x", F, ["N", 2, 4, 6])], [("y", F, None)], blocksize=2),
        {"x": _x(2, 2, 4, 6)},
    )


def test_constant_of_shape_eye_like_center_crop_reverse_sequence() -> None:
    value = numpy_helper.from_array(np.array([7], np.int32), "value")
    cos = node_model(
        "ConstantOfShape",
        [("s", I64, [2])],
        [("y", TP.INT32, None)],
        [_i64("s", [2, 3])],
        value=value,
    )
    check_tvm(cos, {})
    check_tvm(
        node_model("EyeLike", [("x", F, [3, 5])], [("y", TP.INT32, None)], k=-1, dtype=TP.INT32),
        {"x": _x(3, 5)},
    )
    ccp = node_model(
        "CenterCropPad",
        [("x", F, [5, 4, 3]), ("s", I64, [2])],
        [("y", F, None)],
        [_i64("s", [2, 7])],
        opset=18,
        axes=[0, -2],
    )
    check_tvm(ccp, {"x": _x(5, 4, 3)}, oracle="reference")
    rs = node_model(
        "ReverseSequence",
        [("x", F, [4, 3]), ("l", I64, [3])],
        [("y", F, None)],
        time_axis=0,
        batch_axis=1,
    )
    check_tvm(rs, {"x": _x(4, 3), "l": np.array([4, 1, 2], np.int64)})


def test_compress_run_time_and_nonzero() -> None:
    cp = node_model("Compress", [("x", F, [3, 4]), ("c", TP.BOOL, [4])], [("y", F, None)], axis=1)
    session = tvm_session(cp)
    x = _x(3, 4)
    for cond in ([True, False, True, True], [False] * 4):
        c = np.array(cond)
        np.testing.assert_array_equal(session.run({"x": x, "c": c})["y"], np.compress(c, x, axis=1))
    check_tvm(
        node_model("NonZero", [("x", F, [2, 3])], [("y", I64, None)]),
        {"x": np.array([[0, 1, 0], [2, 0, 3]], np.float32)},
    )


def test_dropout_inference_mask_and_unseeded_training_declined() -> None:
    """Inference Dropout passes its input with an all-true mask; training mode without a
    seed is refused (no per-call state), with the reason (seeded: test_ops_more)."""
    model = node_model(
        "Dropout", [("x", F, [2, 3])], [("y", F, None), ("m", TP.BOOL, None)], opset=13
    )
    check_tvm(model, {"x": _x(2, 3)})
    node = helper.make_node("Dropout", ["x", "", "t"], ["y"])
    train = _graph(
        [node], [_vi("x", F, [2, 3]), _vi("t", TP.BOOL, [])], [_vi("y", F, None)], opset=13
    )
    with pytest.raises(UnsupportedOpError, match="an unseeded Dropout draws new numbers per call"):
        tvm_session(train, level="O0")


def test_tensor_scatter_circular() -> None:
    model = node_model(
        "TensorScatter",
        [("c", F, [2, 5, 3]), ("u", F, [2, 2, 3]), ("w", I64, [2])],
        [("y", F, None)],
        opset=24,
        axis=1,
        mode="circular",
    )
    check_tvm(
        model,
        {"c": _x(2, 5, 3), "u": _x(2, 2, 3, seed=1), "w": np.array([4, 1], np.int64)},
        oracle="reference",
    )


def test_reshape_allowzero_to_an_empty_shape() -> None:
    model = node_model(
        "Reshape",
        [("x", F, [0, 3]), ("s", I64, [2])],
        [("y", F, None)],
        [_i64("s", [3, 0])],
        allowzero=1,
    )
    check_tvm(model, {"x": np.zeros((0, 3), np.float32)})


def test_split_empty_parts_and_symbolic_uneven_parts_and_size() -> None:
    outs = [("a", F, None), ("b", F, None), ("c", F, None)]
    check_tvm(
        node_model("Split", [("x", F, [4, 2]), ("s", I64, [3])], outs, [_i64("s", [0, 4, 0])]),
        {"x": _x(4, 2)},
    )
    uneven = node_model("Split", [("x", F, ["N", 2])], outs, opset=18, num_outputs=3)
    session = tvm_session(uneven)
    for n in (7, 2):
        x = _x(n, 2, seed=n)
        got = list(session.run({"x": x}).values())
        chunk = -(-n // 3)
        want = [x[k * chunk : (k + 1) * chunk] for k in range(3)]
        assert [g.shape for g in got] == [w.shape for w in want]
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g, w)
    check_tvm(node_model("Size", [("x", F, ["N", 5])], [("y", I64, None)]), {"x": _x(4, 5)})


def test_range_takes_one_element_vectors() -> None:
    """Range's operands are scalars by the spec, but function bodies (AffineGrid) pass
    one-element 1-D tensors; the run-time count and values read their one element."""
    from onnx import TensorProto

    model = node_model(
        "Range",
        [("s", TensorProto.FLOAT, [1]), ("l", TensorProto.FLOAT, [1]), ("d", TensorProto.FLOAT, [1])],
        [("y", TensorProto.FLOAT, None)],
        opset=11,
    )
    feeds = {"s": np.array([1.0], np.float32), "l": np.array([4.0], np.float32), "d": np.array([0.5], np.float32)}
    got = tvm_session(model).run(feeds)["y"]
    np.testing.assert_array_equal(got, np.arange(1.0, 4.0, 0.5, dtype=np.float32))


def test_range_sized_at_run_time_after_scalar_work() -> None:
    """A positional-encoding shape: the step computed from the run-time size, then
    Range(0, size) scaled by it and through Cos. TVM's FuseOps fused the values' kernel
    with the scalar work before the MatchCast that binds the count and moved it there
    ("4 * n0 has not been computed"); the converter fences the block after the MatchCast."""
    scalar = [helper.make_tensor("c", TP.FLOAT, [], [v]) for v in (0.0, 1.0, 6.2831855)]
    nodes = [
        helper.make_node("Constant", [], ["zero"], value=scalar[0]),
        helper.make_node("Constant", [], ["one"], value=scalar[1]),
        helper.make_node("Constant", [], ["tau"], value=scalar[2]),
        helper.make_node("Cast", ["size"], ["size_f"], to=F),
        helper.make_node("Div", ["tau", "size_f"], ["step"]),
        helper.make_node("Range", ["zero", "size_f", "one"], ["r"]),
        helper.make_node("Mul", ["r", "step"], ["angle"]),
        helper.make_node("Cos", ["angle"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "pe", [helper.make_tensor_value_info("size", TP.INT64, [])], [helper.make_tensor_value_info("y", F, [None])]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    session = tvm_session(model)
    for n in (7, 12):
        got = session.run({"size": np.array(n, np.int64)})["y"]
        np.testing.assert_allclose(got, np.cos(np.arange(n, dtype=np.float32) * np.float32(6.2831855 / n)), rtol=1e-5, atol=1e-6)
