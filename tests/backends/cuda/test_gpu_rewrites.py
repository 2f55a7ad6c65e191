"""What the CUDA builder leaves out of a plan, checked on the host against onnxruntime:
Transposes that cuBLAS reads in place (attention's head split and merge), Casts that a
row kernel does itself (LayerNormalization, Softmax kept in float32 by the precision
passes), and float16 conversions as single PTX instructions."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tests.oracle import ort_outputs
from torsh_gen.backends.cuda.host import host_plan
from torsh_gen.backends.llvm.nvptx import ptx_module
from torsh_gen.passes.pipelines import PIPELINES
from torsh_gen.tools.compile import optimized_graph

SEQ, WIDTH, HEADS = 16, 32, 4
HEAD = WIDTH // HEADS


def _const(name: str, a: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(a, name)


def attention_block(layer_norm: bool = True) -> onnx.ModelProto:
    """One self-attention block as exporters write it: three projections, Reshape and
    Transpose into heads (K transposed for Q @ K^T), scaled scores, Softmax, the heads
    merged back by Transpose and Reshape, an output projection and a LayerNormalization."""
    rng = np.random.default_rng(1)
    inits = [_const(f"w{p}", (rng.standard_normal((WIDTH, WIDTH)) / 6).astype(np.float32)) for p in "qkvo"]
    inits += [
        _const("b_q", rng.standard_normal(WIDTH).astype(np.float32)),
        _const("heads", np.array([1, SEQ, HEADS, HEAD], np.int64)),
        _const("flat", np.array([1, SEQ, WIDTH], np.int64)),
        _const("scale", np.array(np.sqrt(HEAD), np.float32)),
        _const("gamma", rng.uniform(0.5, 1.5, WIDTH).astype(np.float32)),
        _const("beta", rng.standard_normal(WIDTH).astype(np.float32)),
    ]
    n = helper.make_node
    nodes = [
        n("MatMul", ["x", "wq"], ["q0"]), n("Add", ["q0", "b_q"], ["q1"]),
        n("Reshape", ["q1", "heads"], ["q2"]), n("Transpose", ["q2"], ["q"], perm=[0, 2, 1, 3]),
        n("MatMul", ["x", "wk"], ["k1"]), n("Reshape", ["k1", "heads"], ["k2"]),
        n("MatMul", ["x", "wv"], ["v1"]), n("Reshape", ["v1", "heads"], ["v2"]),
        n("Transpose", ["v2"], ["v"], perm=[0, 2, 1, 3]), n("Transpose", ["k2"], ["kt"], perm=[0, 2, 3, 1]),
        n("MatMul", ["q", "kt"], ["s0"]), n("Div", ["s0", "scale"], ["s1"]), n("Softmax", ["s1"], ["p"], axis=-1),
        n("MatMul", ["p", "v"], ["c0"]), n("Transpose", ["c0"], ["c1"], perm=[0, 2, 1, 3]),
        n("Reshape", ["c1", "flat"], ["c2"]), n("MatMul", ["c2", "wo"], ["o"]),
    ]
    if layer_norm:
        nodes.append(n("LayerNormalization", ["o", "gamma", "beta"], ["y"], axis=-1))
    else:
        nodes.append(n("Identity", ["o"], ["y"]))
    graph = helper.make_graph(
        nodes, "attention", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, SEQ, WIDTH])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, SEQ, WIDTH])], inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _plan(model: onnx.ModelProto, low: str | None = None):
    o3 = list(PIPELINES["O3"])
    if low:
        cut = o3.index("fuse_epilogues")
        o3 = o3[:cut] + [low] + o3[cut:]
    return host_plan(optimized_graph(model, "cuda", passes=o3))


def _kinds(plan) -> list[str]:
    return [s["kernel"].split("_", 1)[1].rsplit("_", 1)[0] if s["op"] == "launch" else "gemm" for s in plan.plan.steps]


def _error(model: onnx.ModelProto, plan) -> float:
    x = np.random.default_rng(0).standard_normal((1, SEQ, WIDTH)).astype(np.float32)
    want = ort_outputs(model, {"x": x})[0]
    got = list(plan.run({"x": x}).values())[0]
    return float(np.abs(want - got).max() / np.abs(want).max())


def test_attention_transposes_are_read_in_place_by_the_gemms():
    """No Transpose launch is left: Q, K^T and V are read by the batched GEMMs through
    leading dimensions and batch strides, and P @ V writes the merged heads itself."""
    model = attention_block()
    plan = _plan(model)
    kinds = _kinds(plan)
    assert "transpose" not in kinds, kinds
    batched = [s for s in plan.plan.steps if s["op"] == "gemm" and s["batch"] == HEADS]
    assert len(batched) == 2
    scores, merge = batched
    assert (scores["lda"], scores["stride_a"]) == (WIDTH, HEAD)  # Q read in place
    assert scores["trans_b"] and (scores["ldb"], scores["stride_b"]) == (WIDTH, HEAD)  # K^T
    assert (merge["ldc"], merge["stride_c"]) == (WIDTH, HEAD)  # heads merged by the GEMM
    assert "div" not in kinds and np.isclose(scores["alpha"], 1 / np.sqrt(HEAD), rtol=1e-6)  # scaling: alpha
    assert _error(model, plan) < 1e-5


def test_a_transpose_no_gemm_can_read_still_runs():
    """A permutation that leaves no unit stride inside the matrix (the last axis moved
    to the batch) is computed by its kernel before the product reads it."""
    rng = np.random.default_rng(2)
    w = _const("w", rng.standard_normal((8, 5)).astype(np.float32))
    nodes = [
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("Transpose", ["r"], ["t"], perm=[0, 3, 1, 2]),
        helper.make_node("MatMul", ["t", "w"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "t", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 6, 4, 5])], [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    plan = host_plan(optimized_graph(model, "cuda"))
    assert "transpose" in _kinds(plan)
    x = rng.standard_normal((1, 4, 8, 6)).astype(np.float32)
    np.testing.assert_allclose(list(plan.run({"x": x}).values())[0], ort_outputs(model, {"x": x})[0], rtol=1e-5, atol=1e-5)


def test_float16_plan_leaves_the_casts_around_row_kernels_to_them():
    """convert_fp16 keeps Softmax and LayerNormalization in float32 between Casts; the
    row kernels read and write float16 themselves, so only the graph input's Cast runs,
    with the same values as the Casts would give."""
    model = attention_block()
    plan = _plan(model, "convert_fp16")
    kinds = _kinds(plan)
    assert kinds.count("cast") <= 1, kinds
    assert {s["dtype"] for s in plan.plan.steps if s["op"] == "gemm"} == {"f16"}
    assert _error(model, plan) < 2e-2


def test_float16_conversions_are_single_ptx_instructions():
    """float16 loads and stores convert with cvt.f32.f16 / cvt.rn.f16.f32 on the GPU (the
    portable integer expansion stays for CPUs and the interpreter)."""
    plan = _plan(attention_block(layer_norm=False), "convert_fp16")
    ptx = ptx_module(plan.plan.kernels, "sm_80")
    assert "cvt.f32.f16" in ptx and "cvt.rn.f16.f32" in ptx
    assert "0f33800000" not in ptx  # 2**-24: the expansion's subnormal scale


def conv_pair(second_kernel: int = 3, shared: bool = False, batch: int = 2) -> onnx.ModelProto:
    """Conv 1x1 + bias + Relu feeding a second convolution (ResNet's bottleneck start);
    ``shared``: the first output is also added to the result (two readers)."""
    rng = np.random.default_rng(3)
    k = second_kernel
    inits = [
        _const("w1", (rng.standard_normal((8, 6, 1, 1)) / 3).astype(np.float32)),
        _const("b1", rng.standard_normal(8).astype(np.float32)),
        _const("w2", (rng.standard_normal((8, 8, k, k)) / 6).astype(np.float32)),
        _const("b2", rng.standard_normal(8).astype(np.float32)),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[k // 2] * 4),
    ]
    if shared:
        nodes.append(helper.make_node("Add", ["c2", "r1"], ["y"]))
    else:
        nodes.append(helper.make_node("Relu", ["c2"], ["y"]))
    graph = helper.make_graph(
        nodes, "pair", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 6, 9, 9])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 8, 9, 9])], inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _conv_error(model: onnx.ModelProto, plan) -> float:
    x = np.random.default_rng(0).standard_normal((2, 6, 9, 9)).astype(np.float32)
    want = ort_outputs(model, {"x": x})[0]
    return float(np.abs(want - list(plan.run({"x": x}).values())[0]).max() / np.abs(want).max())


def test_im2col_applies_the_previous_convolutions_epilogue():
    """A convolution read by one 3x3 convolution alone leaves its bias and Relu to that
    convolution's im2col (padding still zero): one epilogue launch, the final one."""
    model = conv_pair()
    plan = _plan(model)
    kinds = _kinds(plan)
    assert kinds.count("epilogue") == 1 and kinds.count("im2col") == 1, kinds
    assert _conv_error(model, plan) < 1e-5


def test_epilogue_stays_where_the_output_has_other_readers():
    """Two readers (the 3x3 convolution and the residual Add), or a pointwise reader that
    reads the tensor directly: the epilogue runs as planned."""
    for model in (conv_pair(shared=True), conv_pair(second_kernel=1)):
        plan = _plan(model)
        assert _kinds(plan).count("epilogue") == 2, _kinds(plan)
        assert _conv_error(model, plan) < 1e-5


def test_elementwise_chain_after_a_product_runs_in_its_epilogue():
    """A FusedElementwise reading only a product's output (bias, then x * 2 + 1 and tanh)
    is applied by the product's epilogue and writes the chain's output: one launch."""
    rng = np.random.default_rng(4)
    inits = [
        _const("w", (rng.standard_normal((WIDTH, 48)) / 6).astype(np.float32)),
        _const("b", rng.standard_normal(48).astype(np.float32)),
        _const("two", np.array(2.0, np.float32)),
        _const("one", np.array(1.0, np.float32)),
    ]
    n = helper.make_node
    nodes = [
        n("MatMul", ["x", "w"], ["m"]), n("Add", ["m", "b"], ["a"]), n("Mul", ["a", "two"], ["t"]),
        n("Add", ["t", "one"], ["u"]), n("Tanh", ["u"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, SEQ, WIDTH])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, SEQ, 48])], inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    plan = _plan(model)
    kinds = _kinds(plan)
    assert kinds == ["gemm", "epilogue"], kinds
    assert _error(model, plan) < 1e-5


def test_bias_and_residual_epilogues_are_offered_to_cublaslt():
    """A projection with a bias, and one with a bias and a residual: each GEMM offers
    cuBLASLt its epilogue (bias along the output features, the residual as C with beta
    1), and the epilogue launch after it is marked optional, so a runtime without
    cuBLASLt, and the host, run it; a chained GELU-like epilogue is not offered."""
    from torsh_gen.backends.cuda.package import plan_program
    from torsh_gen.backends.cuda.program import build_cuda_program

    rng = np.random.default_rng(5)
    inits = [
        _const("w1", (rng.standard_normal((WIDTH, WIDTH)) / 6).astype(np.float32)),
        _const("b1", rng.standard_normal(WIDTH).astype(np.float32)),
        _const("w2", (rng.standard_normal((WIDTH, WIDTH)) / 6).astype(np.float32)),
        _const("b2", rng.standard_normal(WIDTH).astype(np.float32)),
    ]
    n = helper.make_node
    nodes = [
        n("MatMul", ["x", "w1"], ["m1"]), n("Add", ["m1", "b1"], ["h"]),
        n("MatMul", ["h", "w2"], ["m2"]), n("Add", ["m2", "b2"], ["a2"]), n("Add", ["a2", "h"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "proj", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, SEQ, WIDTH])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, SEQ, WIDTH])], inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    plan = plan_program(build_cuda_program(optimized_graph(model, "cuda")))
    gemms = [s for s in plan.steps if s["op"] == "gemm"]
    assert [g["lt"]["residual"] is not None for g in gemms] == [False, True]
    assert all(g["lt"]["bias"] is not None and g["lt"]["beta"] == (1.0 if g["lt"]["residual"] else 0.0) for g in gemms)
    after = [plan.steps[plan.steps.index(g) + 1] for g in gemms]
    assert all(s["op"] == "launch" and s["optional"] for s in after)
    assert _error(model, host_plan(optimized_graph(model, "cuda"))) < 1e-5


def test_convolution_epilogues_stay_kernels():
    """A convolution's bias is one per output channel, a row of our C, where cuBLASLt's
    BIAS epilogue runs along cuBLAS's column-major rows (our columns); its row-major
    layouts, the other way in, were answered CUBLAS_STATUS_NOT_SUPPORTED on an H200. So
    convolutions make no cuBLASLt offer and their epilogues are kernels."""
    from torsh_gen.backends.cuda.package import plan_program
    from torsh_gen.backends.cuda.program import build_cuda_program

    plan = plan_program(build_cuda_program(optimized_graph(conv_pair(shared=True, batch=1), "cuda")))
    assert not any("lt" in s or s.get("optional") for s in plan.steps)
    assert sum(1 for s in plan.steps if s["op"] == "launch" and "_epilogue_" in s["kernel"]) == 2
