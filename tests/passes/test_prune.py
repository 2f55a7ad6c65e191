"""Pruning passes: magnitude (layer/global) and structured channel removal.

Structured pruning is checked against an independent reference: the unpruned model with
the removed input channels of every consumer set to zero must give the same outputs (in
onnxruntime) as the shrunk model.
"""

from __future__ import annotations

import copy

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from tests.conftest import make_model, tensor_info
from torsh_gen.errors import InputError
from torsh_gen.frontends.onnx import load_onnx
from torsh_gen.ir.graph import Graph
from torsh_gen.passes.prune import NodeFilter, magnitude_prune, structured_prune
from torsh_gen.tools.compare import run_onnxruntime


class Net:
    """A tiny ONNX model builder with seeded random weights."""

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []

    def const(self, name: str, array: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(array.astype(np.float32), name))
        return name

    def node(self, op: str, inputs: list[str], name: str, **attrs) -> str:
        self.nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    def conv(
        self, x: str, cin: int, cout: int, name: str, k: int = 3, group: int = 1, scale: float = 1.0
    ) -> str:
        w = self.const(f"{name}.w", self.rng.standard_normal((cout, cin // group, k, k)) * scale)
        b = self.const(f"{name}.b", self.rng.standard_normal(cout))
        return self.node("Conv", [x, w, b], name, pads=[k // 2] * 4, group=group)

    def bn(self, x: str, c: int, name: str) -> str:
        r = self.rng
        p = [
            self.const(f"{name}.{k}", v)
            for k, v in (
                ("g", r.uniform(0.5, 1.5, c)),
                ("b", r.uniform(-0.1, 0.1, c)),
                ("m", r.uniform(-0.1, 0.1, c)),
                ("v", r.uniform(0.5, 1.5, c)),
            )
        ]
        return self.node("BatchNormalization", [x, *p], name)

    def gemm(self, x: str, k: int, n: int, name: str, scale: float = 1.0) -> str:
        w = self.const(f"{name}.w", self.rng.standard_normal((n, k)) * scale)
        b = self.const(f"{name}.b", self.rng.standard_normal(n))
        return self.node("Gemm", [x, w, b], name, transB=1)

    def model(self, inputs, outputs) -> onnx.ModelProto:
        return make_model(self.nodes, inputs, outputs, self.inits)


def _chain_cnn() -> onnx.ModelProto:
    """conv→BN→relu→maxpool→conv→relu→conv→relu→flatten→gemm→relu→gemm."""
    n = Net()
    h = n.node("Relu", [n.bn(n.conv("x", 3, 8, "c1"), 8, "bn1")], "r1")
    h = n.node("MaxPool", [h], "p1", kernel_shape=[2, 2], strides=[2, 2])
    h = n.node("Relu", [n.conv(h, 8, 16, "c2")], "r2")
    h = n.node("Relu", [n.conv(h, 16, 12, "c3")], "r3")
    h = n.node("Flatten", [h], "flat")
    h = n.node("Relu", [n.gemm(h, 12 * 16, 20, "fc1")], "r4")
    n.gemm(h, 20, 5, "y")
    return n.model([tensor_info("x", ["N", 3, 8, 8])], [tensor_info("y", ["N", 5])])


def _residual_cnn() -> onnx.ModelProto:
    """stem conv→relu, two residual blocks (conv→relu→conv→BN, + skip), then conv head."""
    n = Net(1)
    h = n.node("Relu", [n.conv("x", 3, 8, "stem")], "r0")
    for i in (1, 2):
        t = n.node("Relu", [n.conv(h, 8, 6, f"b{i}a")], f"b{i}r")
        t = n.bn(n.conv(t, 6, 8, f"b{i}b"), 8, f"b{i}bn")
        h = n.node("Relu", [n.node("Add", [t, h], f"b{i}add")], f"b{i}out")
    h = n.node("GlobalAveragePool", [n.conv(h, 8, 10, "head")], "gap")
    n.node("Flatten", [h], "y")
    return n.model([tensor_info("x", [2, 3, 6, 6])], [tensor_info("y", [2, 10])])


def _concat_cnn() -> onnx.ModelProto:
    """Two branches concatenated (left alone) before a conv; a prunable conv before them."""
    n = Net(2)
    h = n.node("Relu", [n.conv("x", 3, 8, "c0")], "r0")
    a = n.node("Relu", [n.conv(h, 8, 4, "ca")], "ra")
    b = n.node("Relu", [n.conv(h, 8, 4, "cb")], "rb")
    cat = n.node("Concat", [a, b], "cat", axis=1)
    n.conv(cat, 8, 3, "y")
    return n.model([tensor_info("x", [1, 3, 6, 6])], [tensor_info("y", [1, 3, 6, 6])])


def _depthwise_cnn() -> onnx.ModelProto:
    """Pointwise expand → depthwise 3x3 → BN → Clip (ReLU6) → pointwise project."""
    n = Net(3)
    h = n.conv("x", 4, 12, "expand", k=1)
    h = n.conv(h, 12, 12, "dw", group=12)
    h = n.bn(h, 12, "dwbn")
    lo, hi = n.const("lo", np.array(0.0)), n.const("hi", np.array(6.0))
    h = n.node("Clip", [h, lo, hi], "relu6")
    n.conv(h, 12, 5, "y", k=1)
    return n.model([tensor_info("x", [1, 4, 5, 5])], [tensor_info("y", [1, 5, 5, 5])])


def _mlp() -> onnx.ModelProto:
    """MatMul + per-feature Add bias → Relu → MatMul, with a per-feature Mul scale."""
    n = Net(4)
    h = n.node("MatMul", ["x", n.const("w1", n.rng.standard_normal((6, 16)))], "mm1")
    h = n.node("Add", [h, n.const("b1", n.rng.standard_normal(16))], "add1")
    h = n.node(
        "Mul", [n.node("Relu", [h], "relu1"), n.const("s1", n.rng.uniform(0.5, 2, (1, 16)))], "mul1"
    )
    n.node("MatMul", [h, n.const("w2", n.rng.standard_normal((16, 3)))], "y")
    return n.model([tensor_info("x", ["B", 6])], [tensor_info("y", ["B", 3])])


def _gemm_mlp() -> onnx.ModelProto:
    """Gemm (transB=0) → Sigmoid → Gemm (transB=1) → Relu → Gemm (transB=0)."""
    n = Net(7)
    w1, b1 = n.const("g1.w", n.rng.standard_normal((5, 12))), n.const(
        "g1.b", n.rng.standard_normal(12)
    )
    h = n.node("Sigmoid", [n.node("Gemm", ["x", w1, b1], "g1")], "sig")
    h = n.node("Relu", [n.gemm(h, 12, 10, "g2")], "relu")
    w3 = n.const("y.w", n.rng.standard_normal((10, 3)))
    n.node("Gemm", [h, w3], "y")
    return n.model([tensor_info("x", ["B", 5])], [tensor_info("y", ["B", 3])])


def _self_residual() -> onnx.ModelProto:
    """h + conv(h): one conv reads and writes the same channel group."""
    n = Net(8)
    h = n.node("Relu", [n.conv("x", 3, 8, "stem")], "r0")
    h = n.node("Add", [h, n.conv(h, 8, 8, "inner")], "add")
    n.conv(n.node("Relu", [h], "r1"), 8, 2, "y")
    return n.model([tensor_info("x", [1, 3, 5, 5])], [tensor_info("y", [1, 2, 5, 5])])


FEEDS = {
    "chain": {"x": np.random.default_rng(9).standard_normal((2, 3, 8, 8)).astype(np.float32)},
    "residual": {"x": np.random.default_rng(9).standard_normal((2, 3, 6, 6)).astype(np.float32)},
    "concat": {"x": np.random.default_rng(9).standard_normal((1, 3, 6, 6)).astype(np.float32)},
    "depthwise": {"x": np.random.default_rng(9).standard_normal((1, 4, 5, 5)).astype(np.float32)},
    "mlp": {"x": np.random.default_rng(9).standard_normal((4, 6)).astype(np.float32)},
    "gemm": {"x": np.random.default_rng(9).standard_normal((4, 5)).astype(np.float32)},
    "selfres": {"x": np.random.default_rng(9).standard_normal((1, 3, 5, 5)).astype(np.float32)},
}
MODELS = {
    "chain": _chain_cnn,
    "residual": _residual_cnn,
    "concat": _concat_cnn,
    "depthwise": _depthwise_cnn,
    "mlp": _mlp,
    "gemm": _gemm_mlp,
    "selfres": _self_residual,
}


def _graph(name: str) -> Graph:
    return load_onnx(MODELS[name]().SerializeToString())


def _weights(graph: Graph) -> dict[str, np.ndarray]:
    return {v.name: v.const for v in graph.initializers}


def _node(graph: Graph, name: str):
    return next(n for n in graph.nodes if n.name == name)


def _zeroed_reference(graph: Graph, results, flatten_readers: dict[str, tuple[str, int]]) -> Graph:
    """The unpruned graph with every consumer's removed input channels set to zero."""
    ref = copy.deepcopy(graph)
    for r in results:
        if r.blocked or not r.removed:
            continue
        removed = np.asarray(r.removed)
        for cname in r.consumers:
            node = _node(ref, cname)
            if node.op_type == "Flatten":
                reader, per = flatten_readers[cname]
                node, removed_cols = (
                    _node(ref, reader),
                    (removed[:, None] * per + np.arange(per)).ravel(),
                )
            else:
                removed_cols = removed
            w = node.inputs[1].const.copy()
            if node.op_type == "Conv":
                w[:, removed_cols] = 0
            elif node.op_type == "Gemm" and node.attr("transB", 0):
                w[:, removed_cols] = 0
            else:  # Gemm without transB, MatMul: input channels are rows
                w[removed_cols] = 0
            node.inputs[1].const = w
    return ref


FLATTENS = {"chain": {"flat": ("fc1", 16)}}


@pytest.mark.parametrize("name", list(MODELS))
def test_zero_sparsity_changes_nothing(name):
    graph = _graph(name)
    before = _weights(graph)
    results = structured_prune(graph, 0.0)
    assert all(r.removed == [] for r in results)
    after = _weights(graph)
    assert before.keys() == after.keys() and all(
        np.array_equal(before[k], after[k]) for k in before
    )
    ref = run_onnxruntime(_graph(name), FEEDS[name])
    out = run_onnxruntime(graph, FEEDS[name])
    assert all(np.array_equal(out[k], ref[k]) for k in ref)


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("sparsity", [0.25, 0.5, 0.75])
def test_shrunk_model_equals_zeroed_reference(name, sparsity):
    original = _graph(name)
    pruned = copy.deepcopy(original)
    results = structured_prune(pruned, sparsity)
    assert any(r.removed for r in results)
    ref = run_onnxruntime(_zeroed_reference(original, results, FLATTENS.get(name, {})), FEEDS[name])
    out = run_onnxruntime(pruned, FEEDS[name])  # onnxruntime accepts every shrunk shape
    for k in ref:
        assert out[k].shape == ref[k].shape
        np.testing.assert_allclose(out[k], ref[k], rtol=1e-4, atol=1e-4)


def test_chain_shapes_shrink_through_bn_pool_and_flatten():
    graph = _graph("chain")
    results = {r.name: r for r in structured_prune(graph, 0.5)}
    assert {k: (r.channels, len(r.kept)) for k, r in results.items()} == {
        "c1": (8, 4),
        "c2": (16, 8),
        "c3": (12, 6),
        "fc1": (20, 10),
        "y": (5, 5),
    }
    assert "graph output" in results["y"].blocked
    w = _weights(graph)
    assert w["c1.w"].shape == (4, 3, 3, 3) and w["bn1.g"].shape == (4,) and w["bn1.v"].shape == (4,)
    assert w["c2.w"].shape == (8, 4, 3, 3) and w["c3.w"].shape == (6, 8, 3, 3)
    assert w["fc1.w"].shape == (10, 6 * 16) and w["y.w"].shape == (5, 10)


def test_residual_group_pruned_consistently():
    graph = _graph("residual")
    results = {r.name: r for r in structured_prune(graph, 0.5)}
    skip = results["stem"]
    assert sorted(skip.producers) == ["b1b", "b2b", "stem"]  # one group: every producer of the Adds
    assert sorted(skip.consumers) == ["b1a", "b2a", "head"]
    assert len(skip.kept) == 4 and not skip.blocked
    w = _weights(graph)
    for name in ("stem.w", "b1b.w", "b2b.w"):
        assert w[name].shape[0] == 4
    assert (
        w["b1bn.g"].shape == (4,)
        and w["head.w"].shape == (10, 4, 3, 3)
        and w["b1a.w"].shape == (3, 4, 3, 3)
    )
    assert (
        "Flatten" in results["head"].blocked
    )  # head → GAP → Flatten (the graph output): left alone


def test_conv_reading_and_writing_one_group_loses_rows_and_columns():
    graph = _graph("selfres")
    results = {r.name: r for r in structured_prune(graph, 0.5)}
    assert sorted(results["stem"].producers) == ["inner", "stem"] and sorted(
        results["stem"].consumers
    ) == ["inner", "y"]
    assert _weights(graph)["inner.w"].shape == (4, 4, 3, 3)


def test_concat_branches_are_left_alone():
    graph = _graph("concat")
    results = {r.name: r for r in structured_prune(graph, 0.5)}
    assert "Concat" in results["ca"].blocked and "Concat" in results["cb"].blocked
    assert len(results["c0"].kept) == 4 and not results["c0"].blocked
    w = _weights(graph)
    assert w["ca.w"].shape == (4, 4, 3, 3) and w["y.w"].shape == (3, 8, 3, 3)


def test_depthwise_conv_is_sliced_with_its_group():
    graph = _graph("depthwise")
    results = {r.name: r for r in structured_prune(graph, 0.5)}
    assert len(results["expand"].kept) == 6
    dw = _node(graph, "dw")
    assert dw.attr("group") == 6 and dw.inputs[1].const.shape == (6, 1, 3, 3)
    assert _weights(graph)["y.w"].shape == (5, 6, 1, 1)


def test_mlp_bias_and_scale_constants_are_sliced():
    graph = _graph("mlp")
    structured_prune(graph, 0.25)
    w = _weights(graph)
    assert (
        w["w1"].shape == (6, 12)
        and w["b1"].shape == (12,)
        and w["s1"].shape == (1, 12)
        and w["w2"].shape == (12, 3)
    )


def test_global_scope_removes_where_scores_are_low():
    n = Net(5)
    h = n.node("Relu", [n.conv("x", 3, 16, "big")], "r1")
    h = n.node("Relu", [n.conv(h, 16, 16, "mixed")], "r2")
    n.conv(h, 16, 4, "y")
    model = n.model([tensor_info("x", [1, 3, 6, 6])], [tensor_info("y", [1, 4, 6, 6])])
    w = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    mixed = w["mixed.w"].copy()
    mixed[:12] *= 1e-3  # 12 of 16 filters are nearly zero: a global ranking removes them first
    model.graph.initializer[[t.name for t in model.graph.initializer].index("mixed.w")].CopyFrom(
        numpy_helper.from_array(mixed, "mixed.w")
    )
    layer = {
        r.name: r for r in structured_prune(load_onnx(model.SerializeToString()), 0.5, "layer")
    }
    glob = {
        r.name: r for r in structured_prune(load_onnx(model.SerializeToString()), 0.5, "global")
    }
    assert len(layer["big"].removed) == 8 and len(layer["mixed"].removed) == 8
    assert len(glob["big"].removed) + len(glob["mixed"].removed) == 16
    assert len(glob["mixed"].removed) >= 12 and set(range(12)) <= set(glob["mixed"].removed)


def test_excluded_producer_leaves_its_group_alone():
    graph = _graph("chain")
    results = {
        r.name: r for r in structured_prune(graph, 0.5, node_filter=NodeFilter(exclude=("c2",)))
    }
    assert "excluded" in results["c2"].blocked and len(results["c1"].kept) == 4
    assert _weights(graph)["c2.w"].shape == (16, 4, 3, 3)


def test_l2_norm_ranks_by_filter_energy():
    n = Net(6)
    h = n.node("Relu", [n.conv("x", 2, 4, "c", k=1)], "r")
    n.conv(h, 4, 2, "y", k=1)
    model = n.model([tensor_info("x", [1, 2, 3, 3])], [tensor_info("y", [1, 2, 3, 3])])
    # filter 0: [3, 0] (L1 3, L2 3); filter 1: [2, 2] (L1 4, L2 2.83); filters 2, 3 large
    w = np.array([[3, 0], [2, 2], [9, 9], [8, 8]], np.float32).reshape(4, 2, 1, 1)
    model.graph.initializer[0].CopyFrom(numpy_helper.from_array(w, "c.w"))
    l1 = structured_prune(load_onnx(model.SerializeToString()), 0.25, norm="l1")[0]
    l2 = structured_prune(load_onnx(model.SerializeToString()), 0.25, norm="l2")[0]
    assert l1.removed == [0] and l2.removed == [1]


def test_nothing_prunable_and_bad_options():
    model = make_model(
        [helper.make_node("Relu", ["x"], ["y"])],
        [tensor_info("x", [1, 4])],
        [tensor_info("y", [1, 4])],
    )
    with pytest.raises(InputError, match="nothing in this model can be pruned"):
        structured_prune(load_onnx(model.SerializeToString()), 0.5)
    with pytest.raises(InputError, match="no Conv, Gemm or MatMul"):
        magnitude_prune(load_onnx(model.SerializeToString()), 0.5)
    for bad in (-0.1, 1.0, 1.5):
        with pytest.raises(InputError, match=r"sparsity must be in \[0, 1\)"):
            structured_prune(_graph("chain"), bad)
    with pytest.raises(InputError, match="unknown scope"):
        magnitude_prune(_graph("chain"), 0.5, "everything")
    with pytest.raises(InputError, match="unknown norm"):
        structured_prune(_graph("chain"), 0.5, norm="l3")


# ----------------------------------------------------------------------------- magnitude
def test_magnitude_layer_scope_hits_the_sparsity_in_every_layer():
    graph = _graph("chain")
    rows = magnitude_prune(graph, 0.6, "layer")
    assert [r.weight for r in rows] == ["c1.w", "c2.w", "c3.w", "fc1.w", "y.w"]
    for r in rows:
        assert r.zeros_after == round(0.6 * r.size)
    out = run_onnxruntime(graph, FEEDS["chain"])
    assert np.isfinite(out["y"]).all()


def test_magnitude_global_scope_uses_one_threshold():
    original = _graph("chain")
    graph = copy.deepcopy(original)
    rows = magnitude_prune(graph, 0.5, "global")
    total = sum(r.size for r in rows)
    assert sum(r.zeros_after for r in rows) == round(0.5 * total)
    assert len({round(r.sparsity, 3) for r in rows}) > 1  # layers end at different sparsities
    before, after = _weights(original), _weights(graph)
    removed = np.concatenate([np.abs(before[r.weight][after[r.weight] == 0]) for r in rows])
    kept = np.concatenate([np.abs(after[r.weight][after[r.weight] != 0]) for r in rows])
    assert removed.max() <= kept.min()
    for r in rows:  # only zeros were introduced; everything else is untouched
        nz = after[r.weight] != 0
        assert np.array_equal(after[r.weight][nz], before[r.weight][nz])


def test_magnitude_filter_and_zero_sparsity():
    graph = _graph("chain")
    rows = magnitude_prune(graph, 0.5, node_filter=NodeFilter(include=("c*",)))
    assert [r.node for r in rows] == ["c1", "c2", "c3"]
    graph = _graph("chain")
    before = _weights(graph)
    magnitude_prune(graph, 0.0)
    assert all(np.array_equal(before[k], v) for k, v in _weights(graph).items())
    with pytest.raises(InputError, match="matches no node"):
        NodeFilter(include=("conv_nope",)).check(_graph("chain"))


def test_channel_multiple_rounds_kept_channels_up():
    graph = _graph("chain")
    results = {r.name: r for r in structured_prune(graph, 0.6, channel_multiple=4)}
    # 8 → 3 kept → 4; 16 → 6 → 8; 12 → 5 → 8; 20 → 8 → 8
    assert {k: len(r.kept) for k, r in results.items()} == {
        "c1": 4,
        "c2": 8,
        "c3": 8,
        "fc1": 8,
        "y": 5,
    }
    best = structured_prune(_graph("chain"), 0.5)[
        0
    ]  # 4 of c1's 8 channels: rounding to 4 keeps the same ones
    assert results["c1"].kept == best.kept
    ref = run_onnxruntime(
        _zeroed_reference(_graph("chain"), list(results.values()), FLATTENS["chain"]),
        FEEDS["chain"],
    )
    np.testing.assert_allclose(
        run_onnxruntime(graph, FEEDS["chain"])["y"], ref["y"], rtol=1e-4, atol=1e-4
    )
    with pytest.raises(InputError, match="channel multiple"):
        structured_prune(_graph("chain"), 0.5, channel_multiple=0)


def test_prelu_slope_and_broadcast_constants():
    n = Net(10)
    h = n.conv("x", 2, 6, "c")
    h = n.node("PRelu", [h, n.const("slope", n.rng.uniform(0.1, 0.3, (6, 1, 1)))], "prelu")
    h = n.node(
        "Add", [h, n.const("shift", n.rng.standard_normal((1, 1, 1, 4)))], "shift_w"
    )  # broadcast over W
    n.conv(h, 6, 2, "y")
    model = n.model([tensor_info("x", [1, 2, 4, 4])], [tensor_info("y", [1, 2, 4, 4])])
    original = load_onnx(model.SerializeToString())
    graph = copy.deepcopy(original)
    results = structured_prune(graph, 0.5)
    w = _weights(graph)
    assert w["slope"].shape == (3, 1, 1) and w["shift"].shape == (1, 1, 1, 4)
    feeds = {"x": np.random.default_rng(0).standard_normal((1, 2, 4, 4)).astype(np.float32)}
    ref = run_onnxruntime(_zeroed_reference(original, results, {}), feeds)
    np.testing.assert_allclose(run_onnxruntime(graph, feeds)["y"], ref["y"], rtol=1e-4, atol=1e-4)


def test_unused_second_outputs_do_not_block_but_used_ones_do():
    def model(read_indices: bool) -> onnx.ModelProto:
        n = Net(11)
        h = n.conv("x", 2, 8, "c")
        n.nodes.append(helper.make_node("Dropout", [h], ["drop", "mask"], name="drop"))
        outs = ["pool", "indices"]
        n.nodes.append(
            helper.make_node("MaxPool", ["drop"], outs, name="pool", kernel_shape=[2, 2])
        )
        n.conv("pool", 8, 2, "y")
        extra = (
            [tensor_info("indices", [1, 8, 3, 3], onnx.TensorProto.INT64)] if read_indices else []
        )
        return n.model([tensor_info("x", [1, 2, 4, 4])], [tensor_info("y", [1, 2, 3, 3]), *extra])

    graph = load_onnx(model(False).SerializeToString())
    assert len(structured_prune(graph, 0.5)[0].kept) == 4
    assert run_onnxruntime(graph, {"x": np.ones((1, 2, 4, 4), np.float32)})["y"].shape == (
        1,
        2,
        3,
        3,
    )
    with pytest.raises(InputError, match="MaxPool 'pool' has a second output in use"):
        structured_prune(load_onnx(model(True).SerializeToString()), 0.5)
