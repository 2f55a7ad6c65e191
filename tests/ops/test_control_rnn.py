"""Control flow, sequence/optional and recurrent kernels compared with onnxruntime."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

pytest.importorskip("onnxruntime")

from tests.ops.onenode import assert_matches_onnxruntime  # noqa: E402
from torsh_gen.backend import prepare  # noqa: E402

F = TensorProto.FLOAT


def _vi(name: str, elem: int = F, shape: Any = None) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, shape)


def _seq_vi(name: str, elem: int = F) -> onnx.ValueInfoProto:
    return helper.make_tensor_sequence_value_info(name, elem, None)


def _model(nodes: list, inputs: list, outputs: list, opset: int) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def _compare(model: onnx.ModelProto, feeds: dict[str, Any], rtol: float = 1e-5) -> list[Any]:
    """Run both engines and assert the outputs agree (sequences element by element)."""
    inputs = [feeds[i.name] for i in model.graph.input]  # ours takes them by position
    return assert_matches_onnxruntime(model, inputs, rtol=rtol, atol=1e-6)


# ------------------------------------------------------------------ control flow
@pytest.mark.parametrize("cond", [True, False])
def test_if_reads_outer_scope(cond: bool) -> None:
    then_g = helper.make_graph(
        [helper.make_node("Add", ["x", "y"], ["t"])], "then", [], [_vi("t", F, [3])]
    )
    else_g = helper.make_graph(
        [helper.make_node("Mul", ["x", "y"], ["e"])], "else", [], [_vi("e", F, [3])]
    )
    node = helper.make_node("If", ["c"], ["out"], then_branch=then_g, else_branch=else_g)
    m = _model(
        [node],
        [_vi("c", TensorProto.BOOL, []), _vi("x", F, [3]), _vi("y", F, [3])],
        [_vi("out", F, [3])],
        13,
    )
    x, y = np.arange(3, dtype=np.float32), np.full(3, 2.0, np.float32)
    out = _compare(m, {"c": np.array(cond), "x": x, "y": y})
    assert np.array_equal(out[0], x + y if cond else x * y)


def _loop_body() -> onnx.GraphProto:
    """(i, cond, acc, k) -> (k' < limit, acc + x*k, k + 1, scans: acc, 2*i)."""
    nodes = [
        helper.make_node("Mul", ["x", "k"], ["xk"]),
        helper.make_node("Add", ["acc", "xk"], ["acc_out"]),
        helper.make_node("Add", ["k", "one"], ["k_out"]),
        helper.make_node("Less", ["k_out", "limit"], ["cond_out"]),
        helper.make_node("Add", ["acc", "zero"], ["scan"]),
        helper.make_node("Add", ["i", "i"], ["i2"]),
    ]
    i64, b = TensorProto.INT64, TensorProto.BOOL
    return helper.make_graph(
        nodes,
        "body",
        [_vi("i", i64, []), _vi("cond", b, []), _vi("acc", F, [2]), _vi("k", F, [])],
        [
            _vi("cond_out", b, []),
            _vi("acc_out", F, [2]),
            _vi("k_out", F, []),
            _vi("scan", F, [2]),
            _vi("i2", i64, []),
        ],
    )


@pytest.mark.parametrize("trip,with_cond", [(6, False), (None, True), (10, True), (0, True)])
def test_loop_trip_count_and_condition(trip: int | None, with_cond: bool) -> None:
    node = helper.make_node(
        "Loop",
        ["M" if trip is not None else "", "C" if with_cond else "", "a0", "k0"],
        ["acc", "k", "scan", "iters"],
        body=_loop_body(),
    )
    inputs = [
        _vi("a0", F, [2]),
        _vi("k0", F, []),
        _vi("x", F, [2]),
        _vi("limit", F, []),
        _vi("zero", F, []),
        _vi("one", F, []),
    ]
    feeds: dict[str, Any] = {
        "a0": np.array([1.0, -1.0], np.float32),
        "k0": np.array(0.0, np.float32),
        "x": np.array([0.5, 2.0], np.float32),
        "limit": np.array(8.0, np.float32),
        "zero": np.array(0.0, np.float32),
        "one": np.array(1.0, np.float32),
    }
    if trip is not None:
        inputs.append(_vi("M", TensorProto.INT64, []))
        feeds["M"] = np.array(trip, np.int64)
    if with_cond:
        inputs.append(_vi("C", TensorProto.BOOL, []))
        feeds["C"] = np.array(True)
    outs = [
        _vi("acc", F, [2]),
        _vi("k", F, []),
        _vi("scan", F, [None, 2]),
        _vi("iters", TensorProto.INT64, [None]),
    ]
    m = _model([node], inputs, outs, 13)
    if trip == 0:  # onnxruntime shapes zero-iteration scan outputs from the body's type too
        out = prepare(m).run([feeds[i.name] for i in m.graph.input])
        assert out[2].shape == (0, 2) and np.array_equal(out[0], feeds["a0"])
        return
    _compare(m, feeds)


def _scan_body() -> onnx.GraphProto:
    nodes = [
        helper.make_node("Add", ["s", "x"], ["s_out"]),
        helper.make_node("Mul", ["s_out", "two"], ["y"]),
    ]
    return helper.make_graph(
        nodes,
        "body",
        [_vi("s", F, [2]), _vi("x", F, [2])],
        [_vi("s_out", F, [2]), _vi("y", F, [2])],
    )


@pytest.mark.parametrize(
    "in_axis,in_dir,out_axis,out_dir",
    [
        (0, 0, 0, 0),
        (1, 1, 1, 0),
        (-1, 0, -1, 1),
        (1, 1, 0, 1),
    ],
)
def test_scan9_axes_and_directions(in_axis: int, in_dir: int, out_axis: int, out_dir: int) -> None:
    node = helper.make_node(
        "Scan",
        ["s0", "xs"],
        ["s", "ys"],
        body=_scan_body(),
        num_scan_inputs=1,
        scan_input_axes=[in_axis],
        scan_input_directions=[in_dir],
        scan_output_axes=[out_axis],
        scan_output_directions=[out_dir],
    )
    rng = np.random.default_rng(0)
    xs = rng.standard_normal((4, 2) if in_axis == 0 else (2, 4)).astype(np.float32)
    m = _model(
        [node],
        [_vi("s0", F, [2]), _vi("xs", F, list(xs.shape)), _vi("two", F, [])],
        [_vi("s", F, None), _vi("ys", F, None)],
        16,
    )
    _compare(m, {"s0": np.ones(2, np.float32), "xs": xs, "two": np.array(2.0, np.float32)})


def test_scan8_batch_and_sequence_lens() -> None:
    node = helper.make_node(
        "Scan",
        ["lens", "s0", "xs"],
        ["s", "ys"],
        body=_scan_body(),
        num_scan_inputs=1,
        directions=[1],
    )
    xs = np.arange(24, dtype=np.float32).reshape(3, 4, 2)
    m = _model(
        [node],
        [
            _vi("lens", TensorProto.INT64, [3]),
            _vi("s0", F, [3, 2]),
            _vi("xs", F, [3, 4, 2]),
            _vi("two", F, []),
        ],
        [_vi("s", F, None), _vi("ys", F, None)],
        8,
    )
    feeds = {
        "lens": np.array([4, 2, 1], np.int64),
        "s0": np.ones((3, 2), np.float32),
        "xs": xs,
        "two": np.array(2.0, np.float32),
    }
    out = _compare(m, feeds)
    assert np.all(out[1][1, 2:] == 0) and np.all(out[1][2, 1:] == 0)


# ------------------------------------------------------------------ sequences, optionals
def test_sequence_ops_chain() -> None:
    nodes = [
        helper.make_node("SequenceConstruct", ["a", "b"], ["s0"]),
        helper.make_node("SequenceInsert", ["s0", "c", "p0"], ["s1"]),  # at front
        helper.make_node("SequenceInsert", ["s1", "a"], ["s2"]),  # at back
        helper.make_node("SequenceErase", ["s2", "pm2"], ["s3"]),  # drops b
        helper.make_node("SequenceErase", ["s3"], ["s4"]),  # drops the last
        helper.make_node("SequenceAt", ["s2", "pm1"], ["last"]),
        helper.make_node("SequenceLength", ["s2"], ["n"]),
        helper.make_node("ConcatFromSequence", ["s3"], ["cat"], axis=-1),
        helper.make_node("ConcatFromSequence", ["s3"], ["stk"], axis=-1, new_axis=1),
        helper.make_node("SequenceEmpty", [], ["e"], dtype=F),
        helper.make_node("SequenceLength", ["e"], ["n0"]),
    ]
    i64 = TensorProto.INT64
    m = _model(
        nodes,
        [
            _vi("a", F, [2, 3]),
            _vi("b", F, [2, 3]),
            _vi("c", F, [2, 3]),
            _vi("p0", i64, []),
            _vi("pm1", i64, []),
            _vi("pm2", i64, []),
        ],
        [
            _seq_vi("s4"),
            _vi("last", F, None),
            _vi("n", i64, None),
            _vi("cat", F, None),
            _vi("stk", F, None),
            _vi("n0", i64, None),
        ],
        13,
    )
    rng = np.random.default_rng(1)
    a, b, c = (rng.standard_normal((2, 3)).astype(np.float32) for _ in range(3))
    feeds = {"a": a, "b": b, "c": c, "p0": np.array(0), "pm1": np.array(-1), "pm2": np.array(-2)}
    out = _compare(m, feeds)
    assert len(out[0]) == 2 and out[2] == 4 and out[5] == 0


@pytest.mark.parametrize(
    "split,axis,keepdims",
    [
        (None, 1, 1),
        (None, -1, 0),
        (np.array(2, np.int64), 1, 1),
        (np.array([1, 3], np.int64), 0, 1),
        (np.array(3, np.int64), -2, 1),
    ],
)
def test_split_to_sequence(split: np.ndarray | None, axis: int, keepdims: int) -> None:
    ins = ["x"] if split is None else ["x", "split"]
    nodes = [helper.make_node("SplitToSequence", ins, ["s"], axis=axis, keepdims=keepdims)]
    inputs = [_vi("x", F, [4, 5])]
    feeds: dict[str, Any] = {"x": np.arange(20, dtype=np.float32).reshape(4, 5)}
    if split is not None:
        inputs.append(_vi("split", TensorProto.INT64, list(split.shape)))
        feeds["split"] = split
    _compare(_model(nodes, inputs, [_seq_vi("s")], 13), feeds)


def test_sequence_map_with_tensor_input() -> None:
    body = helper.make_graph(
        [helper.make_node("Add", ["e", "t"], ["o"])],
        "body",
        [_vi("e", F, None), _vi("t", F, None)],
        [_vi("o", F, None)],
    )
    nodes = [
        helper.make_node("SplitToSequence", ["x"], ["s"], axis=0, keepdims=0),
        helper.make_node("SequenceMap", ["s", "t"], ["r"], body=body),
    ]
    m = _model(nodes, [_vi("x", F, [3, 2]), _vi("t", F, [2])], [_seq_vi("r")], 17)
    _compare(
        m,
        {
            "x": np.arange(6, dtype=np.float32).reshape(3, 2),
            "t": np.array([10.0, 20.0], np.float32),
        },
    )


def test_optional_ops() -> None:
    opt_t = helper.make_optional_type_proto(helper.make_tensor_type_proto(F, [2]))
    nodes = [
        helper.make_node("Optional", ["x"], ["o"]),
        helper.make_node("OptionalHasElement", ["o"], ["has"]),
        helper.make_node("OptionalGetElement", ["o"], ["v"]),
        helper.make_node("Optional", [], ["none"], type=helper.make_tensor_type_proto(F, [2])),
        helper.make_node("OptionalHasElement", ["none"], ["has_none"]),
        helper.make_node("OptionalHasElement", ["x"], ["has_t"]),  # plain tensor, opset 18
    ]
    b = TensorProto.BOOL
    m = _model(
        nodes,
        [_vi("x", F, [2])],
        [_vi("has", b, []), _vi("v", F, [2]), _vi("has_none", b, []), _vi("has_t", b, [])],
        18,
    )
    assert opt_t.optional_type is not None
    out = _compare(m, {"x": np.array([1.0, 2.0], np.float32)})
    assert [bool(out[0]), bool(out[2]), bool(out[3])] == [True, False, True]


# ------------------------------------------------------------------ recurrent layers
def _rnn_case(
    op_type: str,
    gates: int,
    direction: str,
    layout: int,
    lens: bool,
    extra_inputs: int,
    **attrs: Any,
) -> None:
    """Compare with onnxruntime at layout 0; layout 1 runs ours on transposed data."""
    rng = np.random.default_rng(7)
    seq, batch, inp, hid = 4, 3, 5, 6
    nd = 2 if direction == "bidirectional" else 1
    feeds: dict[str, Any] = {
        "X": rng.standard_normal((seq, batch, inp)).astype(np.float32),
        "W": (rng.standard_normal((nd, gates * hid, inp)) * 0.5).astype(np.float32),
        "R": (rng.standard_normal((nd, gates * hid, hid)) * 0.5).astype(np.float32),
        "B": (rng.standard_normal((nd, 2 * gates * hid)) * 0.3).astype(np.float32),
        "L": np.array([4, 2, 3], np.int32) if lens else np.full(batch, seq, np.int32),
        "H0": rng.standard_normal((nd, batch, hid)).astype(np.float32),
    }
    names = ["X", "W", "R", "B", "L", "H0"]
    if extra_inputs >= 1:
        feeds["C0"] = rng.standard_normal((nd, batch, hid)).astype(np.float32)
        names.append("C0")
    if extra_inputs >= 2:
        feeds["P"] = rng.standard_normal((nd, 3 * hid)).astype(np.float32)
        names.append("P")
    outs = ["Y", "Y_h"] + (["Y_c"] if op_type == "LSTM" else [])

    def model(lay: int) -> onnx.ModelProto:
        node = helper.make_node(
            op_type, names, outs, hidden_size=hid, direction=direction, layout=lay, **attrs
        )
        inputs = [_vi(n, TensorProto.INT32 if n == "L" else F, None) for n in names]
        return _model([node], inputs, [_vi(o, F, None) for o in outs], 14)

    ref = _compare(model(0), feeds, rtol=1e-4)
    if layout:
        moved = {
            k: (np.swapaxes(v, 0, 1) if k in ("X", "H0", "C0") else v) for k, v in feeds.items()
        }
        ours = prepare(model(1)).run([moved[n] for n in names])
        np.testing.assert_allclose(ours[0], np.transpose(ref[0], (2, 0, 1, 3)), rtol=1e-6)
        for r, o in zip(ref[1:], ours[1:]):
            np.testing.assert_allclose(o, np.swapaxes(r, 0, 1), rtol=1e-6)


@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("layout,lens", [(0, False), (1, True), (0, True)])
def test_rnn_gru_lstm_directions(direction: str, layout: int, lens: bool) -> None:
    _rnn_case("RNN", 1, direction, layout, lens, 0)
    _rnn_case("GRU", 3, direction, layout, lens, 0)
    _rnn_case("LSTM", 4, direction, layout, lens, 2)


@pytest.mark.parametrize("lbr", [0, 1])
def test_gru_linear_before_reset_and_activations(lbr: int) -> None:
    _rnn_case(
        "GRU",
        3,
        "bidirectional",
        0,
        True,
        0,
        linear_before_reset=lbr,
        activations=["HardSigmoid", "LeakyRelu", "Sigmoid", "Tanh"],
        activation_alpha=[0.3, 0.05],
        activation_beta=[0.4],
    )


def test_lstm_clip_and_input_forget() -> None:
    _rnn_case("LSTM", 4, "forward", 0, False, 2, clip=0.7, input_forget=1)
    _rnn_case("LSTM", 4, "forward", 0, False, 1, activations=["Sigmoid", "Tanh", "Relu"])


def test_rnn_missing_optional_inputs_and_fp64() -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 1, 3)).astype(np.float32)
    w = rng.standard_normal((1, 4, 3)).astype(np.float32)
    r = rng.standard_normal((1, 4, 4)).astype(np.float32)

    def model(elem: int) -> onnx.ModelProto:
        node = helper.make_node("RNN", ["X", "W", "R"], ["", "Y_h"], hidden_size=4)
        return _model(
            [node],
            [_vi("X", elem, None), _vi("W", elem, None), _vi("R", elem, None)],
            [_vi("Y_h", elem, None)],
            14,
        )

    ref = _compare(model(F), {"X": x, "W": w, "R": r})
    ours = prepare(model(TensorProto.DOUBLE)).run(
        [x.astype(np.float64), w.astype(np.float64), r.astype(np.float64)]
    )
    assert ours[0].dtype == np.float64
    np.testing.assert_allclose(ours[0], ref[0], rtol=1e-5)
