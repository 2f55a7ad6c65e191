"""Concats done in place on the native targets: the ops computing a Concat's inputs write
into their blocks of its arena and the Concat has no kernel. Every model is compared with
onnxruntime, and each test checks which Concats were left as copies."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from tests.backends.native.helpers import check_native, make_model, rand

F = TensorProto.FLOAT


def _conv(name: str, x: str, cin: int, cout: int, k: int, seed: int) -> tuple[list, list]:
    w = numpy_helper.from_array(rand(cout, cin, k, k, seed=seed) * 0.2, f"{name}_w")
    b = numpy_helper.from_array(rand(cout, seed=seed + 1), f"{name}_b")
    conv = helper.make_node("Conv", [x, w.name, b.name], [f"{name}_c"], pads=[k // 2] * 4)
    relu = helper.make_node("Relu", [f"{name}_c"], [name])
    return [conv, relu], [w, b]


def _concats(program) -> int:
    return sum(call.op_type == "Concat" for call in program.calls)


def test_fire_module_writes_both_branches_into_the_concat() -> None:
    """SqueezeNet's fire module: squeeze 1x1, expand 1x1 and 3x3 side by side, concatenated
    along channels, then read by the next convolution."""
    nodes, inits = [], []
    for name, x, cin, cout, k, seed in [
        ("s", "x", 8, 4, 1, 0), ("e1", "s", 4, 8, 1, 2), ("e3", "s", 4, 8, 3, 4)
    ]:
        n, i = _conv(name, x, cin, cout, k, seed)
        nodes += n
        inits += i
    nodes.append(helper.make_node("Concat", ["e1", "e3"], ["cat"], axis=-3))
    n, i = _conv("next", "cat", 16, 8, 3, 6)
    nodes += n
    inits += i
    model = make_model(
        nodes, [helper.make_tensor_value_info("x", F, [1, 8, 9, 9])],
        [helper.make_tensor_value_info("next", F, [1, 8, 9, 9])], inits,
    )
    program = check_native(model, {"x": rand(1, 8, 9, 9, seed=9)})
    assert _concats(program) == 0


def test_dense_block_chain_is_one_arena_and_blocks_are_read_after_the_concat() -> None:
    """DenseNet's pattern: every layer reads the concatenation of all earlier features and
    adds its own; the running concatenations nest into one arena. A block is also read
    directly after its Concat (a residual-style Add), which must still see its values."""
    nodes, inits = [], []
    feat = "x"
    channels = 4
    for layer in range(3):
        scale = numpy_helper.from_array(rand(channels, seed=20 + layer), f"bn{layer}_s")
        bias = numpy_helper.from_array(rand(channels, seed=30 + layer), f"bn{layer}_b")
        mean = numpy_helper.from_array(rand(channels, seed=40 + layer) * 0.1, f"bn{layer}_m")
        var = numpy_helper.from_array(np.abs(rand(channels, seed=50 + layer)) + 0.5, f"bn{layer}_v")
        inits += [scale, bias, mean, var]
        nodes.append(helper.make_node(
            "BatchNormalization", [feat, scale.name, bias.name, mean.name, var.name], [f"bn{layer}"]
        ))
        nodes.append(helper.make_node("Relu", [f"bn{layer}"], [f"act{layer}"]))
        n, i = _conv(f"new{layer}", f"act{layer}", channels, 4, 3, 60 + layer)
        nodes += n
        inits += i
        nodes.append(helper.make_node("Concat", [feat, f"new{layer}"], [f"cat{layer}"], axis=1))
        feat = f"cat{layer}"
        channels += 4
    # read one block (the second layer's new features) after the last Concat
    nodes.append(helper.make_node("Slice", ["cat2", "starts", "ends", "axes"], ["tail"]))
    nodes.append(helper.make_node("Add", ["tail", "new1"], ["y"]))
    inits += [
        numpy_helper.from_array(np.array([12], np.int64), "starts"),
        numpy_helper.from_array(np.array([16], np.int64), "ends"),
        numpy_helper.from_array(np.array([1], np.int64), "axes"),
    ]
    stem, stem_inits = _conv("stem", "inp", 3, 4, 3, 70)
    model = make_model(
        stem + [helper.make_node("Identity", ["stem"], ["x"])] + nodes,
        [helper.make_tensor_value_info("inp", F, [1, 3, 7, 7])],
        [helper.make_tensor_value_info("y", F, [1, 4, 7, 7]), helper.make_tensor_value_info("cat2", F, [1, 16, 7, 7])],
        stem_inits + inits,
    )
    program = check_native(model, {"inp": rand(1, 3, 7, 7, seed=71)}, interpret=True)
    # cat2 is a graph output (a copy into the caller's buffer); the two inner ones are blocks
    assert _concats(program) == 1


def test_concats_that_are_not_channel_blocks_still_copy() -> None:
    nodes = [
        helper.make_node("Relu", ["x"], ["a"]),
        helper.make_node("Sigmoid", ["x"], ["b"]),
        helper.make_node("Concat", ["a", "b"], ["rows"], axis=2),  # not contiguous blocks
        helper.make_node("Concat", ["a", "x"], ["withinput"], axis=1),  # a graph input
        helper.make_node("Tanh", ["rows"], ["y1"]),
        helper.make_node("Tanh", ["withinput"], ["y2"]),
    ]
    model = make_model(
        nodes, [helper.make_tensor_value_info("x", F, [1, 3, 5, 6])],
        [helper.make_tensor_value_info("y1", F, [1, 3, 10, 6]), helper.make_tensor_value_info("y2", F, [1, 6, 5, 6])],
    )
    program = check_native(model, {"x": rand(1, 3, 5, 6, seed=3)}, interpret=True)
    assert _concats(program) == 2
