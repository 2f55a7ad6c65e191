"""The TVM backend's remaining ops: Col2Im, MaxUnpool, RoiAlign, DeformConv (ops_sampling),
MelWeightMatrix (ops_extra), Attention and FlexAttention (ops_attention) against
onnxruntime or onnx's reference evaluator; the random ops (ops_random) by their
distribution, shapes and dtypes, and by a seeded node repeating its draws."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto as TP
from onnx import helper, numpy_helper

from tests.backends.tvm.helpers import check_tvm, node_model, tvm_session
from torsh_gen.errors import UnsupportedOpError

F, D, I64 = TP.FLOAT, TP.DOUBLE, TP.INT64
RNG = np.random.default_rng(11)


def _x(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def _const(name: str, values: list[int]) -> onnx.TensorProto:
    return numpy_helper.from_array(np.array(values, np.int64), name)


# -- sampling ---------------------------------------------------------------------------------
def test_col2im_constant_shapes_strides_dilations_pads() -> None:
    """The gather form of the fold (constant image and block shapes) equals onnxruntime's."""
    m = node_model(
        "Col2Im",
        [("x", F, [1, 2 * 4, 15]), ("img", I64, [2]), ("blk", I64, [2])],
        [("y", F, None)],
        initializers=[_const("img", [5, 6]), _const("blk", [2, 2])],
        opset=18,
        strides=[2, 1],
        dilations=[1, 2],
        pads=[1, 0, 0, 1],
    )
    check_tvm(m, {"x": _x(1, 8, 15)})


@pytest.mark.slow
def test_col2im_runtime_shapes() -> None:
    """Image and block shapes fed at run time (the sequential kernel), static output."""
    m = node_model(
        "Col2Im",
        [("x", F, [1, 2 * 4, 15]), ("img", I64, [2]), ("blk", I64, [2])],
        [("y", F, [1, 2, 5, 6])],
        opset=18,
        strides=[2, 1],
        dilations=[1, 2],
        pads=[1, 0, 0, 1],
    )
    feeds = {
        "x": _x(1, 8, 15),
        "img": np.array([5, 6], np.int64),
        "blk": np.array([2, 2], np.int64),
    }
    check_tvm(m, feeds)


@pytest.mark.slow
@pytest.mark.parametrize("with_shape", [False, True])
def test_max_unpool_matches_onnxruntime(with_shape: bool) -> None:
    """MaxPool's indices scattered back, with and without a larger output_shape."""
    pool = helper.make_node(
        "MaxPool", ["x"], ["p", "i"], kernel_shape=[2, 2], strides=[2, 2]
    )
    ins = ["p", "i"] + (["shape"] if with_shape else [])
    unpool = helper.make_node(
        "MaxUnpool", ins, ["y"], kernel_shape=[2, 2], strides=[2, 2]
    )
    inits = [_const("shape", [1, 2, 7, 5])] if with_shape else []
    graph = helper.make_graph(
        [pool, unpool],
        "unpool",
        [helper.make_tensor_value_info("x", F, [1, 2, 6, 4])],
        [helper.make_tensor_value_info("y", F, None)],
        inits,
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])
    # onnxruntime reads the indices in the requested layout; the spec's reference (and
    # ours) in the default one, padding at the end
    check_tvm(m, {"x": _x(1, 2, 6, 4)}, oracle="reference" if with_shape else "ort")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("mode", "ratio", "ctm"),
    [("avg", 0, "half_pixel"), ("max", 2, "output_half_pixel")],
)
def test_roi_align_matches_onnxruntime(mode: str, ratio: int, ctm: str) -> None:
    """Adaptive (ratio 0) and fixed sampling grids, regions partly outside the image."""
    m = node_model(
        "RoiAlign",
        [("x", F, [2, 3, 8, 9]), ("rois", F, [4, 4]), ("b", I64, [4])],
        [("y", F, None)],
        opset=16,
        mode=mode,
        sampling_ratio=ratio,
        coordinate_transformation_mode=ctm,
        output_height=3,
        output_width=2,
        spatial_scale=0.5,
    )
    rois = np.array(
        [[0, 0, 9, 9], [2.5, 1, 14, 12.5], [-4, -3, 6, 5], [10, 12, 30, 20]], np.float32
    )
    check_tvm(
        m,
        {"x": _x(2, 3, 8, 9), "rois": rois, "b": np.array([0, 1, 1, 0], np.int64)},
        rtol=1e-4,
    )


@pytest.mark.slow
def test_deform_conv_matches_reference() -> None:
    """Offsets that move taps between pixels and outside the image, a mask and a bias,
    two groups and two offset groups."""
    m = node_model(
        "DeformConv",
        [
            ("x", F, [1, 4, 5, 5]),
            ("w", F, [2, 2, 2, 2]),
            ("off", F, [1, 2 * 4 * 2, 3, 5]),
            ("b", F, [2]),
            ("mask", F, [1, 2 * 4, 3, 5]),
        ],
        [("y", F, None)],
        opset=19,
        group=2,
        offset_group=2,
        strides=[2, 1],
        pads=[1, 0, 0, 1],
    )
    feeds = {
        "x": _x(1, 4, 5, 5),
        "w": _x(2, 2, 2, 2),
        "off": _x(1, 16, 3, 5) * 1.5,
        "b": _x(2),
        "mask": RNG.uniform(0, 1, (1, 8, 3, 5)).astype(np.float32),
    }
    check_tvm(m, feeds, oracle="reference", rtol=1e-4)


# -- spectral ----------------------------------------------------------------------------------
@pytest.mark.slow
def test_mel_weight_matrix_runtime_operands() -> None:
    """The five scalars fed at run time, the shape from the declared output."""
    names = ["n_mel", "n_dft", "rate", "lo", "hi"]
    m = node_model(
        "MelWeightMatrix",
        [(n, t, []) for n, t in zip(names, [I64, I64, I64, F, F])],
        [("y", F, [33, 10])],
        opset=17,
    )
    feeds = {
        "n_mel": np.array(10, np.int64),
        "n_dft": np.array(64, np.int64),
        "rate": np.array(16000, np.int64),
        "lo": np.array(100.0, np.float32),
        "hi": np.array(7000.0, np.float32),
    }
    check_tvm(m, feeds, oracle="reference")


# -- attention ----------------------------------------------------------------------------------
@pytest.mark.slow
def test_attention_float_mask_causal_gqa_softcap() -> None:
    """Attention with a float mask shorter than the keys (padded with -inf), causal,
    softcap and grouped kv heads, against the reference evaluator."""
    m = node_model(
        "Attention",
        [
            ("q", F, [2, 4, 5, 8]),
            ("k", F, [2, 2, 6, 8]),
            ("v", F, [2, 2, 6, 8]),
            ("mask", F, [5, 4]),
        ],
        [("y", F, None)],
        opset=23,
        is_causal=1,
        softcap=3.0,
        scale=0.3,
    )
    feeds = {
        "q": _x(2, 4, 5, 8),
        "k": _x(2, 2, 6, 8),
        "v": _x(2, 2, 6, 8),
        "mask": _x(5, 4),
    }
    check_tvm(m, feeds, oracle="reference", rtol=1e-4)


def test_flex_attention_score_mod_subgraph() -> None:
    """The score_mod subgraph (a causal mask built from Shape/Range, folded at build
    time) converted inline, GQA, against onnx's reference evaluator."""
    one = numpy_helper.from_array(np.array(1, np.int64), "one")
    zero = numpy_helper.from_array(np.array(0, np.int64), "zero")
    two, three = numpy_helper.from_array(
        np.array(2, np.int64), "i2"
    ), numpy_helper.from_array(np.array(3, np.int64), "i3")
    ninf = numpy_helper.from_array(np.array(-np.inf, np.float32), "ninf")
    body = helper.make_graph(
        [
            helper.make_node("Shape", ["s"], ["sh"]),
            helper.make_node("Gather", ["sh", "i2"], ["L"]),
            helper.make_node("Gather", ["sh", "i3"], ["S"]),
            helper.make_node("Range", ["zero", "L", "one"], ["qr"]),
            helper.make_node("Unsqueeze", ["qr", "one"], ["qi"]),
            helper.make_node("Range", ["zero", "S", "one"], ["ki"]),
            helper.make_node("GreaterOrEqual", ["qi", "ki"], ["ok"]),
            helper.make_node("Where", ["ok", "s", "ninf"], ["out"]),
        ],
        "score_mod",
        [helper.make_tensor_value_info("s", F, None)],
        [helper.make_tensor_value_info("out", F, None)],
        [one, zero, two, three, ninf],
    )
    node = helper.make_node(
        "FlexAttention",
        ["q", "k", "v"],
        ["y"],
        domain="ai.onnx.preview",
        score_mod=body,
    )
    graph = helper.make_graph(
        [node],
        "flex",
        [
            helper.make_tensor_value_info(n, F, s)
            for n, s in (("q", [1, 4, 5, 8]), ("k", [1, 2, 5, 8]), ("v", [1, 2, 5, 8]))
        ],
        [helper.make_tensor_value_info("y", F, None)],
    )
    m = helper.make_model(
        graph,
        opset_imports=[
            helper.make_opsetid("", 26),
            helper.make_opsetid("ai.onnx.preview", 1),
        ],
    )
    feeds = {"q": _x(1, 4, 5, 8), "k": _x(1, 2, 5, 8), "v": _x(1, 2, 5, 8)}
    got = tvm_session(m).run(feeds)["y"]
    want = _flex_oracle(feeds["q"], feeds["k"], feeds["v"])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def _flex_oracle(q: np.ndarray, k: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Causal GQA attention in float64, written out (onnx's evaluator lacks the preview op)."""
    rep = q.shape[1] // k.shape[1]
    k, v = np.repeat(k, rep, axis=1).astype(np.float64), np.repeat(
        v, rep, axis=1
    ).astype(np.float64)
    s = q.astype(np.float64) @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1])
    s = np.where(np.tril(np.ones(s.shape[-2:], bool)), s, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    return (p / p.sum(-1, keepdims=True) @ v).astype(np.float32)


# -- random ---------------------------------------------------------------------------------
def _noise_model(op: str, dtype: int, **attrs: float) -> onnx.ModelProto:
    """x + op(x): the draws feed a computation, as noise injection does."""
    nodes = [
        helper.make_node(op, ["x"], ["r"], **attrs),
        helper.make_node("Add", ["x", "r"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        op,
        [helper.make_tensor_value_info("x", dtype, [300, 200])],
        [helper.make_tensor_value_info("y", dtype, None)],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])


def test_random_uniform_like_seeded_repeats_with_uniform_statistics() -> None:
    """Draws in [low, high), mean and variance of the uniform law, the same every call."""
    session = tvm_session(
        _noise_model("RandomUniformLike", F, seed=3.0, low=-2.0, high=5.0)
    )
    x = np.zeros((300, 200), np.float32)
    a, b = session.run({"x": x})["y"], session.run({"x": x})["y"]
    assert a.dtype == np.float32 and a.shape == (300, 200)
    np.testing.assert_array_equal(a, b)
    assert a.min() >= -2.0 and a.max() < 5.0
    assert abs(a.mean() - 1.5) < 0.05 and abs(a.var() - 49 / 12) < 0.1
    assert len(np.unique(a)) > 59000  # not a repeated few values


@pytest.mark.slow
def test_random_normal_like_double_statistics() -> None:
    session = tvm_session(
        _noise_model("RandomNormalLike", D, seed=5.0, mean=1.0, scale=2.0)
    )
    a = session.run({"x": np.zeros((300, 200), np.float64)})["y"]
    assert a.dtype == np.float64
    assert abs(a.mean() - 1.0) < 0.05 and abs(a.std() - 2.0) < 0.05
    assert abs(np.mean(np.abs(a - 1.0) < 2.0) - 0.6827) < 0.01  # within one sigma


@pytest.mark.slow
def test_bernoulli_and_multinomial_statistics() -> None:
    """Bernoulli hits at rate p; Multinomial classes at the softmax's rates."""
    m = node_model(
        "Bernoulli",
        [("p", F, [400, 100])],
        [("y", D, None)],
        opset=15,
        seed=2.0,
        dtype=D,
    )
    p = np.where(np.arange(100) < 50, 0.2, 0.9).astype(np.float32) * np.ones(
        (400, 1), np.float32
    )
    y = tvm_session(m).run({"p": p})["y"]
    assert y.dtype == np.float64 and set(np.unique(y)) <= {0.0, 1.0}
    assert abs(y[:, :50].mean() - 0.2) < 0.02 and abs(y[:, 50:].mean() - 0.9) < 0.02
    m = node_model(
        "Multinomial",
        [("x", F, [2, 3])],
        [("y", I64, None)],
        opset=7,
        seed=1.0,
        sample_size=20000,
        dtype=I64,
    )
    probs = np.array([[0.2, 0.3, 0.5], [0.7, 0.2, 0.1]])
    y = tvm_session(m).run({"x": np.log(probs).astype(np.float32)})["y"]
    assert y.dtype == np.int64 and y.shape == (2, 20000)
    rates = np.stack([np.bincount(r, minlength=3) / 20000 for r in y])
    np.testing.assert_allclose(rates, probs, atol=0.015)


def test_unseeded_random_op_is_refused_with_reason() -> None:
    m = node_model("RandomUniformLike", [("x", F, [4])], [("y", F, None)])
    with pytest.raises(
        UnsupportedOpError,
        match="unseeded RandomUniformLike .* give the node a seed attribute",
    ):
        tvm_session(m)


# -- ai.onnx.ml -------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("post", ["NONE", "LOGISTIC", "SOFTMAX"])
def test_linear_regressor_matches_onnxruntime(post: str) -> None:
    coef = RNG.standard_normal(3 * 4).round(3).tolist()
    m = node_model(
        "LinearRegressor",
        [("x", F, [5, 4])],
        [("y", F, None)],
        opset=17,
        domain="ai.onnx.ml",
        coefficients=coef,
        intercepts=[0.5, -1.0, 2.0],
        targets=3,
        post_transform=post,
    )
    check_tvm(m, {"x": _x(5, 4)})


@pytest.mark.slow
@pytest.mark.parametrize("norm", ["MAX", "L1", "L2"])
def test_normalizer_matches_onnxruntime(norm: str) -> None:
    """A zero row keeps its zeros (the divisor 0 is skipped)."""
    x = _x(4, 6)
    x[2] = 0.0
    m = node_model(
        "Normalizer",
        [("x", F, [4, 6])],
        [("y", F, None)],
        opset=17,
        domain="ai.onnx.ml",
        norm=norm,
    )
    check_tvm(m, {"x": x})


@pytest.mark.slow
def test_dropout_in_training_mode() -> None:
    """A seeded Dropout with a run-time training flag: about ``ratio`` of the elements
    dropped, the rest scaled by 1 / (1 - ratio), the mask agreeing, the same draws every
    call, and the input unchanged with the flag off."""
    m = node_model(
        "Dropout",
        [("x", F, [200, 300]), ("ratio", F, []), ("train", TP.BOOL, [])],
        [("y", F, None), ("mask", TP.BOOL, None)],
        opset=13,
        seed=4.0,
    )
    session = tvm_session(m)
    x = np.ones((200, 300), np.float32)
    feeds = {"x": x, "ratio": np.array(0.25, np.float32), "train": np.array(True)}
    y, mask = session.run(feeds).values()
    assert mask.dtype == np.bool_ and abs(mask.mean() - 0.75) < 0.01
    np.testing.assert_allclose(y, np.where(mask, x / 0.75, 0.0), rtol=1e-6)
    np.testing.assert_array_equal(session.run(feeds)["y"], y)
    off = session.run(dict(feeds, train=np.array(False)))
    np.testing.assert_array_equal(off["y"], x)
    assert off["mask"].all()
