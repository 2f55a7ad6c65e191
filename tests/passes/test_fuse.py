"""fuse_epilogues and fuse_elementwise: op lists before/after and numerical equality.

Every case runs the passes with the verifier on and compares all outputs with the
reference interpreter before the pass (and, for the zoo model, with onnxruntime on the
original model).
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from tests.conftest import make_model, tensor_info
from tests.passes.test_patterns import (
    bert_feeds,
    bert_layer,
    const,
    gelu_erf_nodes,
    gelu_tanh_nodes,
    ops,
    weight,
)
from torsh_gen.frontends.onnx import load_onnx, to_onnx
from torsh_gen.ir.graph import Graph
from torsh_gen.ir.rewrite import _graphs
from torsh_gen.ir.verify import verify
from torsh_gen.ops.execute import run_graph
from torsh_gen.passes import run_passes
from torsh_gen.tools.testmodels import randomized_light_model


def fuse(
    model: onnx.ModelProto, feeds: dict, passes=("fuse_epilogues",), rtol: float = 1e-5
) -> Graph:
    """Run ``passes`` + DCE on ``model`` (verified); outputs must equal the unfused graph's."""
    g = load_onnx(model)
    before = run_graph(g, feeds)
    run_passes(g, [*passes, "eliminate_dead_code"], check=True)
    verify(g)
    for a, b in zip(run_graph(g, feeds), before):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=1e-5)
    return g


def feeds_for(model: onnx.ModelProto, seed: int = 0) -> dict[str, np.ndarray]:
    r = np.random.default_rng(seed)
    out = {}
    for i in model.graph.input:
        shape = [d.dim_value for d in i.type.tensor_type.shape.dim]
        out[i.name] = (r.standard_normal(shape) * 2).astype(np.float32)
    return out


# --------------------------------------------------------------------------- Conv
def conv_block(
    tail: list, outputs=("y",), extra_inits=(), bias: bool = False, opset: int = 17
) -> onnx.ModelProto:
    """Conv(x, w[, b]) → ``tail`` nodes; x and z are (1, 4, 6, 6) inputs."""
    r = np.random.default_rng(2)
    inits = [
        weight(r, "w", (4, 4, 3, 3)),
        const("cb", r.uniform(-1, 1, (1, 4, 1, 1))),
        *extra_inits,
    ]
    ins = ["x", "w"]
    if bias:
        inits.append(const("b", r.uniform(-1, 1, 4)))
        ins.append("b")
    nodes = [helper.make_node("Conv", ins, ["c"], pads=[1, 1, 1, 1]), *tail]
    inputs = [tensor_info("x", [1, 4, 6, 6]), tensor_info("z", [1, 4, 6, 6])]
    return make_model(
        nodes, inputs, [tensor_info(o, [1, 4, 6, 6]) for o in outputs], inits, opset=opset
    )


def test_conv_bias_residual_relu_become_one_fused_conv():
    tail = [
        helper.make_node("Add", ["c", "cb"], ["c1"]),
        helper.make_node("Add", ["z", "c1"], ["c2"]),
        helper.make_node("Relu", ["c2"], ["y"]),
    ]
    model = conv_block(tail, bias=True)
    g = fuse(model, feeds_for(model))
    assert ops(g) == ["ai.torsh::FusedConv"]
    n = g.nodes[0]
    assert [v.name for v in n.inputs[::3]] == ["x", "z"] and n.inputs[2].const.shape == (4,)
    assert n.attr("activation") == "Relu" and n.attr("pads") == [1, 1, 1, 1]
    assert g.outputs[0].name == "y" and n.outputs[0] is g.outputs[0]
    assert g.info.opset_imports["ai.torsh"] == 1
    exported = to_onnx(g)
    assert {(o.domain, o.version) for o in exported.opset_import} >= {("ai.torsh", 1)}
    np.testing.assert_allclose(
        run_graph(load_onnx(exported), feeds_for(model))[0], run_graph(g, feeds_for(model))[0]
    )


def test_conv_sum_residual_and_clip_bounds_from_inputs():
    tail = [
        helper.make_node("Sum", ["c", "z"], ["c1"]),
        helper.make_node("Clip", ["c1", "lo", "hi"], ["y"]),
    ]
    model = conv_block(tail, extra_inits=[const("lo", 0.0), const("hi", 6.0)])
    g = fuse(model, feeds_for(model))
    assert ops(g) == ["ai.torsh::FusedConv"]
    n = g.nodes[0]
    assert n.inputs[2] is None and n.inputs[3].name == "z"
    assert n.attr("activation") == "Clip" and n.attr("activation_params") == [0.0, 6.0]


def test_conv_per_channel_mul_and_add_fold_into_weights_and_bias():
    r = np.random.default_rng(8)
    scale = const("s", r.uniform(0.5, 1.5, (4, 1, 1)))
    tail = [
        helper.make_node("Mul", ["c", "s"], ["c1"]),
        helper.make_node("Add", ["c1", "cb"], ["c2"]),
        helper.make_node("Relu", ["c2"], ["y"]),
    ]
    model = conv_block(tail, extra_inits=[scale], bias=True)
    g = fuse(model, feeds_for(model))
    assert ops(g) == ["ai.torsh::FusedConv"] and g.nodes[0].attr("activation") == "Relu"
    assert g.nodes[0].inputs[1].name != "w"  # scaled copy; the original weight is untouched


def test_conv_chain_stops_at_shared_or_output_values():
    tail = [helper.make_node("Add", ["c", "z"], ["c1"]), helper.make_node("Relu", ["c1"], ["y"])]
    model = conv_block(tail, outputs=("y", "c1"))  # c1 is a graph output: Relu stays apart
    g = fuse(model, feeds_for(model))
    assert ops(g) == ["ai.torsh::FusedConv", "Relu"] and g.nodes[0].outputs[0].name == "c1"
    model = conv_block(tail, outputs=("y", "c"))  # the conv output itself is needed
    assert ops(fuse(model, feeds_for(model))) == ["Conv", "Add", "Relu"]
    tail = [helper.make_node("Add", ["c", "zb"], ["c1"]), helper.make_node("Relu", ["c1"], ["y"])]
    model = conv_block(tail, extra_inits=[const("zb", np.ones((1, 4, 6, 1)))])  # not per-channel
    g = fuse(model, feeds_for(model))
    assert ops(g) == ["Conv", "Add", "Relu"]
    assert "ai.torsh" not in g.info.opset_imports


# --------------------------------------------------------------------------- MatMul / Gemm
def dense(act_nodes: list, opset: int = 20, extra=()) -> onnx.ModelProto:
    """MatMul(x, W) + b → ``act_nodes`` reading 'h' and writing 'y'."""
    r = np.random.default_rng(4)
    inits = [weight(r, "W", (8, 6)), const("b", r.uniform(-1, 1, 6)), *extra]
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["h0"]),
        helper.make_node("Add", ["h0", "b"], ["h"]),
        *act_nodes,
    ]
    return make_model(
        nodes, [tensor_info("x", [3, 8])], [tensor_info("y", [3, 6])], inits, opset=opset
    )


def _act(op_type: str, **attrs) -> list:
    return [helper.make_node(op_type, ["h"], ["y"], **attrs)]


ACTIVATION_CASES = [
    (_act("Relu"), "Relu", []),
    (_act("LeakyRelu", alpha=0.1), "LeakyRelu", [0.1]),
    (_act("Sigmoid"), "Sigmoid", []),
    (_act("Tanh"), "Tanh", []),
    (_act("HardSigmoid", alpha=0.3, beta=0.4), "HardSigmoid", [0.3, 0.4]),
    (_act("HardSwish"), "HardSwish", []),
    (_act("Gelu"), "Gelu", []),
    (_act("Gelu", approximate="tanh"), "GeluTanh", []),
    (_act("Elu", alpha=0.7), "Elu", [0.7]),
    (
        [helper.make_node("Sigmoid", ["h"], ["s"]), helper.make_node("Mul", ["s", "h"], ["y"])],
        "Silu",
        [],
    ),
    (gelu_erf_nodes("h", "y", "g_")[0], "Gelu", []),
    (gelu_tanh_nodes("h", "y", "t_")[0], "GeluTanh", []),
]


@pytest.mark.parametrize(
    ("nodes", "name", "params"),
    ACTIVATION_CASES,
    ids=[c[1] + str(i) for i, c in enumerate(ACTIVATION_CASES)],
)
def test_matmul_bias_activation_become_fused_matmul(nodes, name, params):
    extra = gelu_erf_nodes("h", "y", "g_")[1] + gelu_tanh_nodes("h", "y", "t_")[1]
    model = dense(
        nodes, opset=17 if name.startswith("Gelu") and len(nodes) > 1 else 20, extra=extra
    )
    g = fuse(model, feeds_for(model))
    assert ops(g) == ["ai.torsh::FusedMatMul"]
    n = g.nodes[0]
    assert n.attr("activation") == name
    assert n.attr("activation_params", []) == pytest.approx(params)
    assert n.inputs[2].const.shape == (6,)


def test_gemm_trans_b_is_pretransposed_and_c_becomes_bias():
    r = np.random.default_rng(6)
    inits = [weight(r, "W", (6, 8)), const("C", r.uniform(-1, 1, (1, 6)))]
    nodes = [
        helper.make_node("Gemm", ["x", "W", "C"], ["h"], transB=1),
        helper.make_node("Tanh", ["h"], ["y"]),
    ]
    model = make_model(
        nodes, [tensor_info("x", [3, 8])], [tensor_info("y", [3, 6])], inits, opset=9
    )
    g = fuse(model, feeds_for(model))
    assert ops(g) == ["ai.torsh::FusedMatMul"]
    assert g.nodes[0].inputs[1].const.shape == (8, 6) and g.nodes[0].inputs[2].const.shape == (6,)
    nodes[0] = helper.make_node("Gemm", ["x", "W", "C"], ["h"], transB=1, alpha=2.0)
    model = make_model(
        nodes, [tensor_info("x", [3, 8])], [tensor_info("y", [3, 6])], inits, opset=9
    )
    assert ops(fuse(model, feeds_for(model))) == ["Gemm", "Tanh"]


def test_gemm_full_shape_c_is_a_residual():
    r = np.random.default_rng(6)
    nodes = [helper.make_node("Gemm", ["x", "W", "z"], ["y"])]
    inputs = [tensor_info("x", [3, 8]), tensor_info("z", [3, 6])]
    model = make_model(
        nodes, inputs, [tensor_info("y", [3, 6])], [weight(r, "W", (8, 6))], opset=13
    )
    g = fuse(model, feeds_for(model))
    assert ops(g) == ["ai.torsh::FusedMatMul"] and g.nodes[0].inputs[3].name == "z"


# --------------------------------------------------------------------------- models
def test_resnet50_convs_fuse_with_relu_and_residual_and_match_onnxruntime():
    model = randomized_light_model("resnet50")
    gemm = next(n for n in model.graph.node if n.op_type == "Gemm")
    model.graph.output.append(
        helper.make_tensor_value_info(gemm.output[0], TensorProto.FLOAT, None)
    )  # logits
    g = load_onnx(model)
    run_passes(
        g,
        ["fold_constants", "eliminate_dead_code", "fold_batchnorm", "eliminate_dead_code"],
        check=True,
    )
    (report,) = run_passes(g, ["fuse_epilogues"], check=True)
    fused = [n for n in g.nodes if n.op_type == "FusedConv"]
    assert report.ops_before["Conv"] == 53 and len(fused) >= 49
    assert sum(n.attr("activation") == "Relu" for n in fused) == 49
    assert sum(len(n.inputs) == 4 for n in fused) == 16  # every bottleneck's residual add
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    expected = sess.run(None, {"gpu_0/data_0": x})
    for got, want in zip(run_graph(g, {"gpu_0/data_0": x}), expected):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))


@pytest.mark.parametrize(("opset", "dynamic"), [(17, False), (23, False), (17, True)])
def test_bert_layer_after_patterns_and_both_fusions(opset, dynamic):
    model = bert_layer(opset, dynamic=dynamic)
    g = fuse(
        model, bert_feeds(), ["recognize_patterns", "fuse_epilogues", "fuse_elementwise"], rtol=1e-4
    )
    found = ops(g)
    fm = [n for n in g.nodes if n.op_type == "FusedMatMul"]
    assert len(fm) == 6  # q, k, v, output and the two FFN projections
    assert sorted(n.attr("activation", "") for n in fm) == ["", "", "", "", "", "Gelu"]
    assert sum(len(n.inputs) == 4 for n in fm) == 2  # attention output + x, FFN + h1
    assert found.count("LayerNormalization") == 2
    if opset < 23:  # the scale and mask adds of the scores become one elementwise kernel
        assert found.count("ai.torsh::FusedElementwise") == 1 and "Div" not in found
    else:
        assert "Attention" in found
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(
        run_graph(g, bert_feeds())[0], sess.run(None, bert_feeds())[0], rtol=1e-4, atol=1e-4
    )


# --------------------------------------------------------------------------- elementwise
def ew_model(nodes, outputs=("y",), inits=(), opset: int = 17) -> onnx.ModelProto:
    inputs = [tensor_info("x", [2, 5]), tensor_info("b", [5])]
    return make_model(
        nodes, inputs, [tensor_info(o, [2, 5]) for o in outputs], list(inits), opset=opset
    )


def test_elementwise_dag_becomes_one_fused_node_with_body():
    nodes = [
        helper.make_node("Exp", ["x"], ["a"]),
        helper.make_node("Neg", ["x"], ["n"]),
        helper.make_node("Mul", ["a", "n"], ["m"]),
        helper.make_node("Add", ["m", "b"], ["s"]),
        helper.make_node("Mul", ["s", "half"], ["t"]),
        helper.make_node("Add", ["t", "vec"], ["u"]),
        helper.make_node("Clip", ["u", "lo", "hi"], ["y"]),
    ]
    inits = [const("half", 0.5), const("vec", np.arange(5)), const("lo", -1.0), const("hi", 1.0)]
    model = ew_model(nodes, inits=inits)
    g = fuse(model, feeds_for(model), ["fuse_elementwise"])
    assert ops(g) == ["ai.torsh::FusedElementwise"]
    n = g.nodes[0]
    body = n.attr("body")
    assert [v.name for v in n.inputs] == ["x", "b", "vec"]  # scalars went into the body
    assert [k.op_type for k in body.nodes] == ["Exp", "Neg", "Mul", "Add", "Mul", "Add", "Clip"]
    assert len(body.initializers) == 3 and all(v.type is not None for v in body.outputs)
    names = [v.name for gr in _graphs(g) for v in gr.values()] + [
        k.name for gr in _graphs(g) for k in gr.nodes
    ]
    assert len(names) == len(set(names))
    exported = to_onnx(g)
    assert ("ai.torsh", 1) in {(o.domain, o.version) for o in exported.opset_import}
    again = load_onnx(exported)
    np.testing.assert_array_equal(
        run_graph(again, feeds_for(model))[0], run_graph(g, feeds_for(model))[0]
    )


def test_elementwise_groups_stop_at_values_read_outside():
    nodes = [
        helper.make_node("Exp", ["x"], ["a"]),
        helper.make_node("Add", ["a", "b"], ["s"]),
        helper.make_node("Tanh", ["s"], ["y"]),
        helper.make_node("Sigmoid", ["a"], ["z"]),
    ]
    model = ew_model(nodes, outputs=("y", "z"))
    g = fuse(model, feeds_for(model), ["fuse_elementwise"])
    # a is read by two groups: Exp stays alone, Add+Tanh fuse, Sigmoid alone
    assert ops(g) == ["Exp", "ai.torsh::FusedElementwise", "Sigmoid"]
    nodes = [
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("Transpose", ["r"], ["t"]),
        helper.make_node("Neg", ["t"], ["y"]),
    ]
    model = make_model(nodes, [tensor_info("x", [2, 5])], [tensor_info("y", [5, 2])])
    g = fuse(model, feeds_for(model), ["fuse_elementwise"])  # groups of one are left alone
    assert ops(g) == ["Relu", "Transpose", "Neg"] and "ai.torsh" not in g.info.opset_imports


def test_elementwise_with_comparisons_where_and_cast():
    nodes = [
        helper.make_node("Greater", ["x", "b"], ["c"]),
        helper.make_node("Cast", ["c"], ["cf"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["cf", "x"], ["m"]),
        helper.make_node("Where", ["c", "m", "b"], ["y"]),
    ]
    model = ew_model(nodes)
    g = fuse(model, feeds_for(model), ["fuse_elementwise"])
    assert ops(g) == ["ai.torsh::FusedElementwise"]
    assert [k.op_type for k in g.nodes[0].attr("body").nodes] == ["Greater", "Cast", "Mul", "Where"]


def test_integer_shape_arithmetic_is_not_fused():
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Mul", ["s", "one"], ["s1"]),
        helper.make_node("Add", ["s1", "zero"], ["s2"]),
        helper.make_node("Reshape", ["x", "s2"], ["y"]),
    ]
    inits = [const("one", [1, 1], np.int64), const("zero", [0, 0], np.int64)]
    model = make_model(nodes, [tensor_info("x", ["n", 4])], [tensor_info("y", ["n", 4])], inits)
    g = fuse(model, {"x": np.ones((3, 4), np.float32)}, ["fuse_elementwise"])
    assert ops(g) == ["Shape", "Mul", "Add", "Reshape"]
