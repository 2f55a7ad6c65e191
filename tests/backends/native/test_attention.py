"""Attention (opset 23-25) through the JIT and the kernel-IR interpreter, against
onnxruntime, and against onnx's reference evaluator where onnxruntime lacks a case
(sliding windows, masks shorter than the keys) or departs from the spec."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper
from onnx.reference import ReferenceEvaluator

from tests.backends.native.helpers import check_native, lower_model, rand
from tests.backends.native.test_training_ops import check_reference
from torsh_gen.errors import UnsupportedOpError

INPUTS = ("Q", "K", "V", "attn_mask", "past_key", "past_value", "nonpad_kv_seqlen")
OUTPUTS = ("Y", "present_key", "present_value", "qk_matmul_output")


def attention(
    feeds: dict[str, np.ndarray], outputs: tuple[str, ...] = ("Y",), opset: int = 23, **attrs
) -> onnx.ModelProto:
    """A one-node Attention model over the given inputs (absent ones left empty); the
    outputs up to the last one asked for are all named (the importer needs a name for
    each), typed from onnx's reference run."""
    last = max(INPUTS.index(k) for k in feeds)
    names = [k if k in feeds else "" for k in INPUTS[: last + 1]]
    outs = list(OUTPUTS[: max(OUTPUTS.index(k) for k in outputs) + 1])
    vi = [
        helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
        for k, v in feeds.items()
    ]
    node = helper.make_node("Attention", names, outs, **attrs)
    opsets = [helper.make_opsetid("", opset)]
    untyped = helper.make_graph([node], "g", vi, [onnx.ValueInfoProto(name=k) for k in outs])
    results = ReferenceEvaluator(helper.make_model(untyped, opset_imports=opsets)).run(None, feeds)
    typed = [
        helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(r.dtype), r.shape)
        for k, r in zip(outs, results)
    ]
    return helper.make_model(helper.make_graph([node], "g", vi, typed), opset_imports=opsets)


def qkv(b=2, hq=4, hkv=2, sq=3, skv=5, dk=8, dv=6, dtype=np.float32, three_d=False):
    """Seeded Q, K, V in 4-D, or 3-D (B, S, H*D)."""
    q, k, v = rand(b, hq, sq, dk, seed=1), rand(b, hkv, skv, dk, seed=2), rand(b, hkv, skv, dv, seed=3)
    if three_d:
        q, k, v = (x.transpose(0, 2, 1, 3).reshape(x.shape[0], x.shape[2], -1) for x in (q, k, v))
    return {"Q": q.astype(dtype), "K": k.astype(dtype), "V": v.astype(dtype)}


def check(model, feeds, tol: float = 1e-4, interpret: bool = True):
    """Against onnxruntime; the node must be one Attention kernel."""
    program = check_native(model, feeds, rtol=tol, atol=tol, interpret=interpret)
    assert [c.op_type for c in program.calls] == ["Attention"]


@pytest.mark.parametrize("causal", [0, 1])
@pytest.mark.parametrize("heads", [(4, 4), (4, 2), (3, 1)])
def test_4d_gqa_causal(heads, causal: int) -> None:
    feeds = qkv(hq=heads[0], hkv=heads[1])
    check(attention(feeds, is_causal=causal), feeds)


@pytest.mark.parametrize("scale", [0.0, 0.3])
def test_3d_heads(scale: float) -> None:
    feeds = qkv(hq=4, hkv=2, sq=4, skv=6, three_d=True)
    extra = {"scale": scale} if scale else {}
    check(attention(feeds, q_num_heads=4, kv_num_heads=2, is_causal=1, **extra), feeds)


def test_long_rows_vectorized() -> None:
    """Key and head sizes past the vector width, with tails."""
    feeds = qkv(b=1, hq=2, hkv=1, sq=5, skv=19, dk=20, dv=11)
    check(attention(feeds, is_causal=1), feeds, interpret=False)


@pytest.mark.parametrize("shape", [(3, 5), (2, 1, 3, 5), (4, 3, 5), (2, 4, 3, 5)])
def test_bool_mask(shape) -> None:
    feeds = qkv()
    mask = np.random.default_rng(4).random(shape) > 0.4
    mask[..., 0] = True
    feeds["attn_mask"] = mask
    check(attention(feeds), feeds)


@pytest.mark.parametrize("causal", [0, 1])
def test_float_mask(causal: int) -> None:
    feeds = qkv()
    feeds["attn_mask"] = rand(2, 1, 3, 5, seed=5)
    check(attention(feeds, is_causal=causal), feeds)


@pytest.mark.parametrize("boolean", [True, False])
def test_mask_shorter_than_keys(boolean: bool) -> None:
    """The spec pads a short mask with False / -inf (onnxruntime rejects it)."""
    feeds = qkv(skv=6)
    feeds["attn_mask"] = np.ones((3, 4), bool) if boolean else rand(3, 4, seed=6)
    check_reference(attention(feeds), feeds, tol=1e-4, interpret=True)


def test_fully_masked_row_gives_zeros() -> None:
    feeds = qkv()
    mask = np.ones((3, 5), bool)
    mask[1] = False
    feeds["attn_mask"] = mask
    model = attention(feeds, outputs=("Y", "qk_matmul_output"), qk_matmul_output_mode=3)
    check_reference(model, feeds, tol=1e-4, interpret=True)


@pytest.mark.parametrize("three_d", [False, True])
@pytest.mark.parametrize("causal", [0, 1])
def test_past_and_present(causal: int, three_d: bool) -> None:
    feeds = qkv(sq=2, skv=2, three_d=three_d)
    feeds["past_key"], feeds["past_value"] = rand(2, 2, 3, 8, seed=7), rand(2, 2, 3, 6, seed=8)
    heads = {"q_num_heads": 4, "kv_num_heads": 2} if three_d else {}
    model = attention(feeds, outputs=("Y", "present_key", "present_value"), is_causal=causal, **heads)
    check(model, feeds)


def test_past_without_present() -> None:
    """The product needs the concatenated values even when nobody asks for them
    (onnxruntime refuses a past without present outputs)."""
    feeds = qkv(sq=2, skv=2)
    feeds["past_key"], feeds["past_value"] = rand(2, 2, 3, 8, seed=7), rand(2, 2, 3, 6, seed=8)
    check_reference(attention(feeds), feeds, tol=1e-4, interpret=True)


def test_present_without_past() -> None:
    feeds = qkv(three_d=True)
    model = attention(feeds, outputs=("Y", "present_key", "present_value"), q_num_heads=4, kv_num_heads=2)
    check(model, feeds)


@pytest.mark.parametrize("mode", [0, 1, 2, 3])
@pytest.mark.parametrize("softcap", [0.0, 2.0])
def test_qk_matmul_output(mode: int, softcap: float) -> None:
    feeds = qkv()
    feeds["attn_mask"] = rand(3, 5, seed=9)
    model = attention(
        feeds, outputs=("Y", "qk_matmul_output"), qk_matmul_output_mode=mode, softcap=softcap, is_causal=1
    )
    if mode == 2:  # onnxruntime writes -FLT_MAX where the spec (and onnx) has -inf
        check_reference(model, feeds, tol=1e-4, interpret=True)
    else:
        check(model, feeds)


@pytest.mark.parametrize("causal", [0, 1])
def test_nonpad_kv_seqlen(causal: int) -> None:
    """Opset 24's external cache: keys past each batch's length are padding."""
    feeds = qkv(sq=2, skv=6)
    feeds["nonpad_kv_seqlen"] = np.array([4, 6], np.int64)
    check(attention(feeds, opset=24, is_causal=causal), feeds)


@pytest.mark.parametrize("window", [(1, -1), (-1, 0), (2, 1)])
@pytest.mark.parametrize("past", [False, True])
def test_sliding_window(window, past: bool) -> None:
    """Opset 25's window around each query's absolute position (onnx's reference)."""
    feeds = qkv(sq=3, skv=3)
    if past:
        feeds["past_key"], feeds["past_value"] = rand(2, 2, 2, 8, seed=7), rand(2, 2, 2, 6, seed=8)
    model = attention(feeds, opset=25, left_window_size=window[0], right_window_size=window[1])
    check_reference(model, feeds, tol=1e-4, interpret=True)


def test_softmax_precision_float16() -> None:
    """float16 inputs are computed in float32 and rounded where they are stored."""
    feeds = qkv(dtype=np.float16)
    model = attention(feeds, outputs=("Y", "qk_matmul_output"), qk_matmul_output_mode=3, softmax_precision=1)
    check(model, feeds, tol=3e-3)


def test_float64() -> None:
    feeds = qkv(dtype=np.float64)
    feeds["attn_mask"] = rand(3, 5, seed=5).astype(np.float64)
    check(attention(feeds, is_causal=1), feeds, tol=1e-5)


def test_heads_that_do_not_divide_are_declined() -> None:
    feeds = qkv(hq=3, hkv=2)
    vi = [helper.make_tensor_value_info(k, onnx.TensorProto.FLOAT, v.shape) for k, v in feeds.items()]
    y = helper.make_tensor_value_info("Y", onnx.TensorProto.FLOAT, (2, 3, 3, 6))
    node = helper.make_node("Attention", ["Q", "K", "V"], ["Y"])
    model = helper.make_model(
        helper.make_graph([node], "g", vi, [y]), opset_imports=[helper.make_opsetid("", 23)]
    )
    with pytest.raises(UnsupportedOpError, match="heads must divide"):
        lower_model(model)


# --------------------------------------------------------------------------- FlexAttention
PREVIEW = "ai.onnx.preview"


def flex(feeds: dict[str, np.ndarray], **attrs) -> onnx.ModelProto:
    """A one-node FlexAttention model (onnx's reference types the output)."""
    vi = [
        helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
        for k, v in feeds.items()
    ]
    node = helper.make_node("FlexAttention", ["Q", "K", "V"], ["Y"], domain=PREVIEW, **attrs)
    opsets = [helper.make_opsetid("", 26), helper.make_opsetid(PREVIEW, 1)]
    untyped = helper.make_graph([node], "g", vi, [onnx.ValueInfoProto(name="Y")])
    (y,) = ReferenceEvaluator(helper.make_model(untyped, opset_imports=opsets)).run(None, feeds)
    out = helper.make_tensor_value_info("Y", helper.np_dtype_to_tensor_dtype(y.dtype), y.shape)
    return helper.make_model(helper.make_graph([node], "g", vi, [out]), opset_imports=opsets)


def body(name: str, nodes: list, inits: dict[str, np.ndarray]) -> onnx.GraphProto:
    """A score_mod/prob_mod body from ``name`` to ``out`` (float scores of any shape)."""
    x = helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
    y = helper.make_tensor_value_info("out", onnx.TensorProto.FLOAT, None)
    consts = [onnx.numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()]
    return helper.make_graph(nodes, "mod", [x], [y], consts)


@pytest.mark.parametrize("scale", [0.0, 0.25])
def test_flex_gqa_head_sizes(scale: float) -> None:
    feeds = qkv(hq=4, hkv=2, sq=3, skv=5, dk=8, dv=6)
    check_reference(flex(feeds, **({"scale": scale} if scale else {})), feeds, tol=1e-4, interpret=True)


def test_flex_score_mod_causal_from_ranges() -> None:
    """Index ranges and the mask built from them fold at compile time; Where runs per element."""
    n = helper.make_node
    nodes = [
        n("Shape", ["s"], ["shape"]),
        n("Gather", ["shape", "i2"], ["L"]),
        n("Gather", ["shape", "i3"], ["S"]),
        n("Range", ["zero", "L", "one"], ["qr"]),
        n("Reshape", ["qr", "qshape"], ["qi"]),
        n("Range", ["zero", "S", "one"], ["kr"]),
        n("GreaterOrEqual", ["qi", "kr"], ["m"]),
        n("Where", ["m", "s", "ninf"], ["out"]),
    ]
    inits = {
        "i2": np.array(2, np.int64), "i3": np.array(3, np.int64), "zero": np.array(0, np.int64),
        "one": np.array(1, np.int64), "qshape": np.array([-1, 1], np.int64),
        "ninf": np.array(-np.inf, np.float32),
    }
    feeds = qkv(sq=4, skv=4)
    check_reference(flex(feeds, score_mod=body("s", nodes, inits)), feeds, tol=1e-4, interpret=True)


def test_flex_score_mod_softcap_and_prob_mod_weights() -> None:
    """Tanh through the scalar table; prob_mod scales by a constant over (Sq, Skv)."""
    n = helper.make_node
    cap = body("s", [n("Div", ["s", "c"], ["t"]), n("Tanh", ["t"], ["u"]), n("Mul", ["u", "c"], ["out"])],
               {"c": np.array(1.5, np.float32)})
    weights = np.random.default_rng(3).random((3, 5)).astype(np.float32)
    scale = body("p", [n("Mul", ["p", "w"], ["out"])], {"w": weights})
    feeds = qkv()
    check_reference(flex(feeds, score_mod=cap, prob_mod=scale), feeds, tol=1e-4, interpret=True)


def test_flex_score_mod_that_reduces_is_declined() -> None:
    n = helper.make_node
    mod = body("s", [n("Softmax", ["s"], ["out"], axis=-1)], {})
    feeds = qkv()
    with pytest.raises(UnsupportedOpError, match="Softmax is not elementwise"):
        lower_model(flex(feeds, score_mod=mod))
