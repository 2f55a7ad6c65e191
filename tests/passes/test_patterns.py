"""recognize_patterns: decomposed GELU, LayerNorm, Softmax and attention, before and after.

Models are built with onnx.helper the way torch.onnx exports them; every rewrite is checked
for the op list, the verifier, and numerical equality with the reference interpreter and
with onnxruntime running the exported result.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.conftest import make_model, tensor_info
from torsh_gen.frontends.onnx import load_onnx, to_onnx
from torsh_gen.ir.graph import Graph
from torsh_gen.ir.verify import verify
from torsh_gen.ops.execute import run_graph
from torsh_gen.passes import run_passes

RTOL, ATOL = 1e-5, 1e-5


# --------------------------------------------------------------------------- builders
def const(name: str, value, dtype=np.float32) -> onnx.TensorProto:
    """An initializer (0-d for Python scalars, as torch.onnx exports them)."""
    return numpy_helper.from_array(np.asarray(value, dtype=dtype), name)


def weight(rng: np.random.Generator, name: str, shape, scale: float = 0.3) -> onnx.TensorProto:
    return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)


def gelu_erf_nodes(x: str, y: str, p: str, variant: int = 0) -> tuple[list, list]:
    """Exact GELU as exporters spell it; ``variant`` picks the operand order."""
    c = [
        const(f"{p}sqrt2", 1.4142135381698608),
        const(f"{p}one", 1.0),
        const(f"{p}half", 0.5),
        const(f"{p}rsqrt2", 0.7071067690849304),
    ]
    if variant == 0:  # torch.onnx: x * (1 + erf(x / sqrt2)) * 0.5
        n = [
            helper.make_node("Div", [x, f"{p}sqrt2"], [f"{p}d"]),
            helper.make_node("Erf", [f"{p}d"], [f"{p}e"]),
            helper.make_node("Add", [f"{p}e", f"{p}one"], [f"{p}a"]),
            helper.make_node("Mul", [x, f"{p}a"], [f"{p}m"]),
            helper.make_node("Mul", [f"{p}m", f"{p}half"], [y]),
        ]
    elif variant == 1:  # (0.5 * x) * (1 + erf(x * 1/sqrt2))
        n = [
            helper.make_node("Mul", [f"{p}half", x], [f"{p}h"]),
            helper.make_node("Mul", [x, f"{p}rsqrt2"], [f"{p}d"]),
            helper.make_node("Erf", [f"{p}d"], [f"{p}e"]),
            helper.make_node("Add", [f"{p}one", f"{p}e"], [f"{p}a"]),
            helper.make_node("Mul", [f"{p}a", f"{p}h"], [y]),
        ]
    else:  # 0.5 * ((1 + erf(x / sqrt2)) * x)
        n = [
            helper.make_node("Div", [x, f"{p}sqrt2"], [f"{p}d"]),
            helper.make_node("Erf", [f"{p}d"], [f"{p}e"]),
            helper.make_node("Add", [f"{p}e", f"{p}one"], [f"{p}a"]),
            helper.make_node("Mul", [f"{p}a", x], [f"{p}m"]),
            helper.make_node("Mul", [f"{p}half", f"{p}m"], [y]),
        ]
    return n, c


def gelu_tanh_nodes(x: str, y: str, p: str, cube_by_mul: bool = False) -> tuple[list, list]:
    """The tanh approximation as HF's NewGELU exports it."""
    c = [
        const(f"{p}half", 0.5),
        const(f"{p}three", 3.0),
        const(f"{p}k", 0.044715),
        const(f"{p}s", math.sqrt(2 / math.pi)),
        const(f"{p}one", 1.0),
    ]
    if cube_by_mul:
        cube = [
            helper.make_node("Mul", [x, x], [f"{p}x2"]),
            helper.make_node("Mul", [f"{p}x2", x], [f"{p}x3"]),
        ]
    else:
        cube = [helper.make_node("Pow", [x, f"{p}three"], [f"{p}x3"])]
    n = [
        helper.make_node("Mul", [x, f"{p}half"], [f"{p}h"]),
        *cube,
        helper.make_node("Mul", [f"{p}x3", f"{p}k"], [f"{p}kx3"]),
        helper.make_node("Add", [x, f"{p}kx3"], [f"{p}in"]),
        helper.make_node("Mul", [f"{p}in", f"{p}s"], [f"{p}t"]),
        helper.make_node("Tanh", [f"{p}t"], [f"{p}th"]),
        helper.make_node("Add", [f"{p}th", f"{p}one"], [f"{p}a"]),
        helper.make_node("Mul", [f"{p}h", f"{p}a"], [y]),
    ]
    return n, c


def layernorm_nodes(
    x: str,
    y: str,
    p: str,
    gamma: str | None,
    beta: str | None,
    opset: int = 17,
    square: str = "Pow",
) -> tuple[list, list]:
    """torch.onnx's LayerNorm below opset 17 (ReduceMean axes as attribute, or input from 18)."""
    c = [const(f"{p}two", 2.0), const(f"{p}eps", 1e-5)]

    def mean(i: str, o: str):
        if opset >= 18:
            return helper.make_node("ReduceMean", [i, f"{p}axes"], [o], keepdims=1)
        return helper.make_node("ReduceMean", [i], [o], axes=[-1], keepdims=1)

    if opset >= 18:
        c.append(const(f"{p}axes", [-1], np.int64))
    sq = (
        helper.make_node("Pow", [f"{p}d", f"{p}two"], [f"{p}sq"])
        if square == "Pow"
        else helper.make_node("Mul", [f"{p}d", f"{p}d"], [f"{p}sq"])
    )
    last = f"{p}n" if gamma or beta else y
    n = [
        mean(x, f"{p}mu"),
        helper.make_node("Sub", [x, f"{p}mu"], [f"{p}d"]),
        sq,
        mean(f"{p}sq", f"{p}var"),
        helper.make_node("Add", [f"{p}var", f"{p}eps"], [f"{p}ve"]),
        helper.make_node("Sqrt", [f"{p}ve"], [f"{p}sd"]),
        helper.make_node("Div", [f"{p}d", f"{p}sd"], [last]),
    ]
    if gamma:
        n.append(helper.make_node("Mul", [last, gamma], [f"{p}g" if beta else y]))
        last = f"{p}g"
    if beta:
        n.append(helper.make_node("Add", [last, beta], [y]))
    return n, c


def bert_layer(
    opset: int, seq: int = 8, hidden: int = 16, heads: int = 2, seed: int = 0, dynamic: bool = False
) -> onnx.ModelProto:
    """One BERT encoder layer as torch.onnx exports it: projections, attention, GELU, LayerNorms.

    ``dynamic`` gives the inputs symbolic batch and sequence dimensions.
    """
    r = np.random.default_rng(seed)
    hd = hidden // heads
    inits = [
        const("shape4", [0, 0, heads, hd], np.int64),
        const("shape3", [0, 0, hidden], np.int64),
        const("scale", math.sqrt(hd)),
        const("g1", r.uniform(0.5, 1.5, hidden)),
        const("be1", r.uniform(-0.1, 0.1, hidden)),
        const("g2", r.uniform(0.5, 1.5, hidden)),
        const("be2", r.uniform(-0.1, 0.1, hidden)),
    ]
    nodes = []
    for name, shape in (
        ("q", (hidden, hidden)),
        ("k", (hidden, hidden)),
        ("v", (hidden, hidden)),
        ("o", (hidden, hidden)),
        ("f1", (hidden, 4 * hidden)),
        ("f2", (4 * hidden, hidden)),
    ):
        inits += [weight(r, f"W{name}", shape), weight(r, f"b{name}", shape[1:], 0.1)]
    for name, perm in (("q", [0, 2, 1, 3]), ("k", [0, 2, 3, 1]), ("v", [0, 2, 1, 3])):
        nodes += [
            helper.make_node("MatMul", ["x", f"W{name}"], [f"{name}0"]),
            helper.make_node("Add", [f"{name}0", f"b{name}"], [f"{name}1"]),
            helper.make_node("Reshape", [f"{name}1", "shape4"], [f"{name}2"]),
            helper.make_node("Transpose", [f"{name}2"], [f"{name}3"], perm=perm),
        ]
    nodes += [
        helper.make_node("MatMul", ["q3", "k3"], ["s0"]),
        helper.make_node("Div", ["s0", "scale"], ["s1"]),
        helper.make_node("Add", ["s1", "mask"], ["s2"]),
        helper.make_node("Softmax", ["s2"], ["p"], axis=-1),
        helper.make_node("MatMul", ["p", "v3"], ["c0"]),
        helper.make_node("Transpose", ["c0"], ["c1"], perm=[0, 2, 1, 3]),
        helper.make_node("Reshape", ["c1", "shape3"], ["c2"]),
        helper.make_node("MatMul", ["c2", "Wo"], ["o0"]),
        helper.make_node("Add", ["o0", "bo"], ["o1"]),
        helper.make_node("Add", ["o1", "x"], ["o2"]),
    ]
    ln1, c1 = layernorm_nodes("o2", "h1", "ln1_", "g1", "be1", opset)
    gelu, c2 = gelu_erf_nodes("f1", "f2a", "gelu_")
    ln2, c3 = layernorm_nodes("f4", "y", "ln2_", "g2", "be2", opset)
    nodes += ln1 + [
        helper.make_node("MatMul", ["h1", "Wf1"], ["f0"]),
        helper.make_node("Add", ["f0", "bf1"], ["f1"]),
    ]
    nodes += (
        gelu
        + [
            helper.make_node("MatMul", ["f2a", "Wf2"], ["f2"]),
            helper.make_node("Add", ["f2", "bf2"], ["f3"]),
            helper.make_node("Add", ["f3", "h1"], ["f4"]),
        ]
        + ln2
    )
    b, s = ("batch", "seq") if dynamic else (1, seq)
    inputs = [tensor_info("x", [b, s, hidden]), tensor_info("mask", [b, 1, 1, s])]
    return make_model(
        nodes, inputs, [tensor_info("y", [b, s, hidden])], inits + c1 + c2 + c3, opset=opset
    )


def bert_feeds(seq: int = 8, hidden: int = 16) -> dict[str, np.ndarray]:
    r = np.random.default_rng(1)
    mask = np.zeros((1, 1, 1, seq), np.float32)
    mask[..., -2:] = -10000.0  # two padded positions
    return {"x": r.standard_normal((1, seq, hidden)).astype(np.float32), "mask": mask}


# --------------------------------------------------------------------------- checking
def ops(g: Graph) -> list[str]:
    return [n.qualified_op for n in g.nodes]


def rewrite(
    model: onnx.ModelProto, feeds: dict, passes=("recognize_patterns",), ort_check: bool = True
) -> Graph:
    """Run ``passes`` (then DCE) with the verifier on; compare outputs before/after and with onnxruntime."""
    g = load_onnx(model)
    before = run_graph(g, feeds)
    run_passes(g, [*passes, "eliminate_dead_code"], check=True)
    verify(g)
    after = run_graph(g, feeds)
    for a, b in zip(after, before):
        np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL)
    if ort_check:
        sess = ort.InferenceSession(
            to_onnx(g).SerializeToString(), providers=["CPUExecutionProvider"]
        )
        for a, b in zip(sess.run(None, feeds), before):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    return g


def x_feed(shape=(2, 3, 8)) -> dict[str, np.ndarray]:
    return {"x": (np.random.default_rng(0).standard_normal(shape) * 2).astype(np.float32)}


# --------------------------------------------------------------------------- GELU
@pytest.mark.parametrize("variant", [0, 1, 2])
def test_exact_gelu_in_every_operand_order_becomes_gelu(variant):
    nodes, c = gelu_erf_nodes("x", "y", "g_", variant)
    model = make_model(
        nodes, [tensor_info("x", [2, 3, 8])], [tensor_info("y", [2, 3, 8])], c, opset=20
    )
    g = rewrite(model, x_feed())
    assert ops(g) == ["Gelu"]
    assert g.nodes[0].attr("approximate", "none") == "none" and g.outputs[0].name == "y"


@pytest.mark.parametrize("cube_by_mul", [False, True])
def test_tanh_gelu_becomes_gelu_tanh(cube_by_mul):
    nodes, c = gelu_tanh_nodes("x", "y", "g_", cube_by_mul)
    model = make_model(
        nodes, [tensor_info("x", [2, 3, 8])], [tensor_info("y", [2, 3, 8])], c, opset=20
    )
    g = rewrite(model, x_feed())
    assert ops(g) == ["Gelu"] and g.nodes[0].attr("approximate") == "tanh"


def test_gelu_is_left_below_opset_20_and_with_wrong_constants_or_shared_values():
    nodes, c = gelu_erf_nodes("x", "y", "g_")
    model = make_model(
        nodes, [tensor_info("x", [2, 3, 8])], [tensor_info("y", [2, 3, 8])], c, opset=17
    )
    assert "Gelu" not in ops(rewrite(model, x_feed()))
    c[2] = const("g_half", 0.6)  # not 0.5 * x * ...
    model = make_model(
        nodes, [tensor_info("x", [2, 3, 8])], [tensor_info("y", [2, 3, 8])], c, opset=20
    )
    assert "Gelu" not in ops(rewrite(model, x_feed()))
    c[2] = const("g_half", 0.5)
    outputs = [
        tensor_info("y", [2, 3, 8]),
        tensor_info("g_e", [2, 3, 8]),
    ]  # Erf output read outside
    model = make_model(nodes, [tensor_info("x", [2, 3, 8])], outputs, c, opset=20)
    assert ops(rewrite(model, x_feed())) == ["Div", "Erf", "Add", "Mul", "Mul"]


# --------------------------------------------------------------------------- LayerNorm
@pytest.mark.parametrize(
    ("opset", "square", "gamma", "beta"),
    [
        (17, "Pow", "gamma", "beta"),
        (18, "Mul", "gamma", "beta"),
        (17, "Pow", None, None),
        (17, "Pow", None, "beta"),
        (17, "Pow", "gamma3d", None),
    ],
)
def test_decomposed_layernorm_becomes_layernormalization(opset, square, gamma, beta):
    r = np.random.default_rng(3)
    nodes, c = layernorm_nodes("x", "y", "ln_", gamma, beta, opset, square)
    c += [
        const("gamma", r.uniform(0.5, 1.5, 8)),
        const("beta", r.uniform(-1, 1, 8)),
        const("gamma3d", r.uniform(0.5, 1.5, (1, 1, 8))),
    ]
    model = make_model(
        nodes, [tensor_info("x", [2, 3, 8])], [tensor_info("y", [2, 3, 8])], c, opset=opset
    )
    g = rewrite(model, x_feed())
    assert ops(g) == ["LayerNormalization"]
    ln = g.nodes[0]
    assert ln.attr("axis") == -1 and ln.attr("epsilon") == pytest.approx(1e-5)
    assert len(ln.inputs) == (3 if beta else 2) and ln.inputs[1].const.shape == (8,)


def test_layernorm_is_left_below_opset_17_or_over_another_axis():
    nodes, c = layernorm_nodes("x", "y", "ln_", None, None, 16)
    model = make_model(
        nodes, [tensor_info("x", [2, 3, 8])], [tensor_info("y", [2, 3, 8])], c, opset=16
    )
    assert "LayerNormalization" not in ops(rewrite(model, x_feed()))
    nodes[0] = helper.make_node("ReduceMean", ["x"], ["ln_mu"], axes=[1], keepdims=1)
    nodes[3] = helper.make_node("ReduceMean", ["ln_sq"], ["ln_var"], axes=[1], keepdims=1)
    model = make_model(
        nodes, [tensor_info("x", [2, 3, 8])], [tensor_info("y", [2, 3, 8])], c, opset=17
    )
    assert "LayerNormalization" not in ops(rewrite(model, x_feed()))


# --------------------------------------------------------------------------- Softmax
def softmax_nodes(axis: int, stable: bool, opset: int) -> tuple[list, list]:
    c = [const("axes", [axis], np.int64)]
    rsum = (
        helper.make_node("ReduceSum", ["e", "axes"], ["s"], keepdims=1)
        if opset >= 13
        else helper.make_node("ReduceSum", ["e"], ["s"], axes=[axis], keepdims=1)
    )
    n = [
        helper.make_node("Exp", ["z" if stable else "x"], ["e"]),
        rsum,
        helper.make_node("Div", ["e", "s"], ["y"]),
    ]
    if stable:
        n = [
            helper.make_node("ReduceMax", ["x"], ["m"], axes=[axis], keepdims=1),
            helper.make_node("Sub", ["x", "m"], ["z"]),
            *n,
        ]
    return n, c


@pytest.mark.parametrize(("axis", "stable"), [(-1, True), (1, False), (2, True)])
def test_decomposed_softmax_becomes_softmax(axis, stable):
    nodes, c = softmax_nodes(axis, stable, 13)
    model = make_model(
        nodes, [tensor_info("x", [2, 3, 8])], [tensor_info("y", [2, 3, 8])], c, opset=13
    )
    g = rewrite(model, x_feed())
    assert ops(g) == ["Softmax"] and g.nodes[0].attr("axis") == axis


def test_softmax_below_opset_13_only_over_the_last_axis():
    nodes, c = softmax_nodes(1, True, 11)
    model = make_model(
        nodes, [tensor_info("x", [2, 3, 8])], [tensor_info("y", [2, 3, 8])], c, opset=11
    )
    assert "Softmax" not in ops(rewrite(model, x_feed()))
    nodes, c = softmax_nodes(2, True, 11)
    model = make_model(
        nodes, [tensor_info("x", [2, 3, 8])], [tensor_info("y", [2, 3, 8])], c, opset=11
    )
    assert ops(rewrite(model, x_feed())) == ["Softmax"]


# --------------------------------------------------------------------------- attention
def sdpa_model(
    opset: int, mask: list[int] | None = (2, 1, 1, 6), kt_from_transpose: bool = True
) -> onnx.ModelProto:
    """softmax(Q K^T / sqrt(d) + mask) V on (batch, heads, seq, head) tensors."""
    k = "k"
    nodes = []
    if kt_from_transpose:
        nodes.append(helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2]))
        k = "kt"
    nodes += [
        helper.make_node("MatMul", ["q", k], ["s0"]),
        helper.make_node("Div", ["s0", "scale"], ["s1"]),
    ]
    last = "s1"
    if mask:
        nodes.append(helper.make_node("Add", ["s1", "mask"], ["s2"]))
        last = "s2"
    nodes += [
        helper.make_node("Softmax", [last], ["p"], axis=-1),
        helper.make_node("MatMul", ["p", "v"], ["y"]),
    ]
    kshape = [2, 3, 6, 4] if kt_from_transpose else [2, 3, 4, 6]
    inputs = [
        tensor_info("q", [2, 3, 5, 4]),
        tensor_info("k", kshape),
        tensor_info("v", [2, 3, 6, 4]),
    ]
    if mask:
        inputs.append(tensor_info("mask", list(mask)))
    return make_model(
        nodes, inputs, [tensor_info("y", [2, 3, 5, 4])], [const("scale", 2.0)], opset=opset
    )


def sdpa_feeds(kt_from_transpose: bool = True, mask=(2, 1, 1, 6)) -> dict[str, np.ndarray]:
    r = np.random.default_rng(5)
    f = {
        n: r.standard_normal(s).astype(np.float32)
        for n, s in (
            ("q", (2, 3, 5, 4)),
            ("k", (2, 3, 6, 4) if kt_from_transpose else (2, 3, 4, 6)),
            ("v", (2, 3, 6, 4)),
        )
    }
    if mask:
        f["mask"] = np.where(r.random(mask) < 0.3, -1e4, 0).astype(np.float32)
    return f


@pytest.mark.parametrize(
    ("kt_from_transpose", "mask", "expect"),
    [
        (True, (2, 1, 1, 6), ["Expand", "Attention"]),  # onnxruntime wants the mask's query axis
        (True, (2, 1, 5, 6), ["Attention"]),
        (True, (5, 6), ["Attention"]),
        (True, None, ["Attention"]),
        (False, (1, 1, 5, 6), ["Transpose", "Attention"]),  # K^T not from a Transpose
    ],
)
def test_attention_block_becomes_attention_from_opset_23(kt_from_transpose, mask, expect):
    model = sdpa_model(23, mask, kt_from_transpose)
    g = rewrite(model, sdpa_feeds(kt_from_transpose, mask))
    assert ops(g) == expect
    assert g.nodes[-1].attr("scale") == pytest.approx(0.5)


def test_attention_below_opset_23_is_recorded_and_kept():
    g = rewrite(sdpa_model(17, mask=None), sdpa_feeds(mask=None))
    assert ops(g) == ["Transpose", "MatMul", "Div", "Softmax", "MatMul"]
    (block,) = g.meta["attention"]
    assert block.q.name == "q" and block.v.name == "v" and block.mask is None and block.scale == 0.5


# --------------------------------------------------------------------------- a BERT layer
@pytest.mark.parametrize(
    ("opset", "expect"),
    [
        (17, {"LayerNormalization": 2, "Gelu": 0, "Attention": 0, "Erf": 1}),
        (20, {"LayerNormalization": 2, "Gelu": 1, "Attention": 0, "Erf": 0}),
        (23, {"LayerNormalization": 2, "Gelu": 1, "Attention": 1, "Softmax": 0}),
    ],
)
def test_bert_layer_patterns(opset, expect):
    g = rewrite(bert_layer(opset), bert_feeds())
    found = ops(g)
    for op_type, count in expect.items():
        assert found.count(op_type) == count, (op_type, found)
    assert "ReduceMean" not in found and "Sqrt" not in found
    if opset < 23:
        assert len(g.meta["attention"]) == 1


def test_pattern_report_notes_what_changed():
    g = load_onnx(bert_layer(23))
    (report,) = run_passes(g, ["recognize_patterns"], check=True)
    assert report.changed
    assert any("LayerNormalization" in n for n in report.notes) and any(
        "Attention" in n for n in report.notes
    )
    assert "ai.torsh" not in g.info.opset_imports  # plain ONNX
    assert all(n.domain == "" for n in g.nodes)
    assert report.ops_after.get("Gelu") == 1
    assert TensorProto.FLOAT == g.outputs[0].type.dtype
