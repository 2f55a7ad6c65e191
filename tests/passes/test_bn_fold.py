"""Before/after cases for ``fold_batchnorm``, and the folded light ResNet-50 vs onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from tests.passes.irtext import build, check_pass, feeds, model, node, ops, run_ort
from torsh_gen.frontends.onnx import load_onnx, to_onnx
from torsh_gen.passes import run_passes
from torsh_gen.tools.testmodels import randomized_light_model

FOLD = ["fold_batchnorm", "eliminate_dead_code"]


def bn_params(c: int, seed: int = 0, dtype=np.float32) -> dict[str, np.ndarray]:
    r = np.random.default_rng(seed)
    return {
        "scale": r.uniform(0.5, 1.5, c).astype(dtype),
        "bias": r.uniform(-0.5, 0.5, c).astype(dtype),
        "mean": r.uniform(-0.5, 0.5, c).astype(dtype),
        "var": r.uniform(0.5, 1.5, c).astype(dtype),
    }


def rand(*shape, seed=1, dtype=np.float32):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


BN = node("BatchNormalization", "h scale bias mean var", "y", epsilon=1e-3)


@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("group", [1, 2])
def test_conv_bn_folds_into_conv(with_bias, group):
    inits = {"w": rand(6, 4 // group, 3, 3), **bn_params(6)}
    ins = "x w b" if with_bias else "x w"
    if with_bias:
        inits["b"] = rand(6, seed=2)
    g = build(
        [node("Conv", ins, "h", pads=[1, 1, 1, 1], group=group), BN],
        ["x: float[batch,4,5,5]"],
        ["y: float[batch,6,5,5]"],
        inits,
    )
    after = check_pass(g, FOLD, [feeds(g, 0, batch=1), feeds(g, 1, batch=3)], rtol=1e-5, atol=1e-5)
    assert ops(after) == ["Conv"]
    assert after.nodes[0].outputs[0].name == "y" and after.outputs[0].name == "y"
    assert len(after.nodes[0].inputs) == 3
    x = feeds(g, 2, batch=2)
    np.testing.assert_allclose(run_ort(after, x)[0], run_ort(g, x)[0], rtol=1e-4, atol=1e-5)


def test_conv_transpose_with_groups_folds():
    inits = {"w": rand(4, 3, 2, 2), **bn_params(6)}
    g = build(
        [node("ConvTranspose", "x w", "h", group=2, strides=[2, 2]), BN],
        ["x: float[1,4,3,3]"],
        ["y: float[1,6,6,6]"],
        inits,
    )
    after = check_pass(g, FOLD, feeds(g), rtol=1e-5, atol=1e-5)
    assert ops(after) == ["ConvTranspose"]
    np.testing.assert_allclose(
        run_ort(after, feeds(g))[0], run_ort(g, feeds(g))[0], rtol=1e-4, atol=1e-5
    )


@pytest.mark.parametrize("trans_b", [0, 1])
@pytest.mark.parametrize("bias", ["none", "vector", "matrix"])
def test_gemm_bn_folds(trans_b, bias):
    inits = {"w": rand(5, 8) if trans_b else rand(8, 5), **bn_params(5)}
    ins = "x w"
    if bias != "none":
        inits["c"] = rand(5, seed=3) if bias == "vector" else rand(2, 5, seed=3)
        ins += " c"
    g = build(
        [node("Gemm", ins, "h", transB=trans_b, alpha=0.5, beta=2.0), BN],
        ["x: float[2,8]"],
        ["y: float[2,5]"],
        inits,
    )
    after = check_pass(g, FOLD, feeds(g), rtol=1e-5, atol=1e-5)
    assert ops(after) == ["Gemm"]
    assert after.nodes[0].attr("beta") == 1.0
    np.testing.assert_allclose(
        run_ort(after, feeds(g))[0], run_ort(g, feeds(g))[0], rtol=1e-4, atol=1e-5
    )


def test_matmul_bn_becomes_matmul_add():
    g = build(
        [node("MatMul", "x w", "h"), BN],
        ["x: float[batch,8]"],
        ["y: float[batch,5]"],
        {"w": rand(8, 5), **bn_params(5)},
    )
    after = check_pass(g, FOLD, [feeds(g, 0, batch=2), feeds(g, 1, batch=7)], rtol=1e-5, atol=1e-5)
    assert ops(after) == ["MatMul", "Add"]
    assert after.outputs[0] is after.nodes[1].outputs[0] and after.outputs[0].name == "y"


def test_matmul_bias_add_bn_extends_the_add():
    g = build(
        [node("MatMul", "x w", "m"), node("Add", "c m", "h"), BN, node("Relu", "y", "z")],
        ["x: float[3,8]"],
        ["z: float[3,5]"],
        {"w": rand(8, 5), "c": rand(5, seed=4), **bn_params(5)},
    )
    after = check_pass(g, FOLD, feeds(g), rtol=1e-5, atol=1e-5)
    assert ops(after) == ["MatMul", "Add", "Relu"]
    assert len(after.initializers) == 2


def test_float16_weights_fold_in_float64():
    inits = {"w": rand(4, 3, 1, 1, dtype=np.float16), **bn_params(4, dtype=np.float16)}
    g = build(
        [node("Conv", "x w", "h"), BN], ["x: float16[1,3,4,4]"], ["y: float16[1,4,4,4]"], inits
    )
    after = check_pass(g, FOLD, feeds(g), rtol=2e-2, atol=2e-2)
    assert ops(after) == ["Conv"]
    assert all(v.const.dtype == np.float16 for v in after.initializers)


def _unfolded(nodes, inputs, outputs, inits, **kw):
    g = build(nodes, inputs, outputs, inits, **kw)
    after = check_pass(g, FOLD, feeds(g))
    return ops(after)


def test_standalone_bn_stays():
    assert _unfolded(
        [node("BatchNormalization", "x scale bias mean var", "y")],
        ["x: float[1,4,3,3]"],
        ["y: float[1,4,3,3]"],
        bn_params(4),
    ) == ["BatchNormalization"]


def test_bn_after_relu_stays():
    nodes = [node("Conv", "x w", "c"), node("Relu", "c", "h"), BN]
    assert _unfolded(
        nodes, ["x: float[1,2,3,3]"], ["y: float[1,4,3,3]"], {"w": rand(4, 2, 1, 1), **bn_params(4)}
    ) == ["Conv", "Relu", "BatchNormalization"]


def test_bn_whose_input_has_another_reader_stays():
    nodes = [node("Conv", "x w", "h"), BN, node("Add", "h y", "z")]
    assert _unfolded(
        nodes, ["x: float[1,2,3,3]"], ["z: float[1,4,3,3]"], {"w": rand(4, 2, 1, 1), **bn_params(4)}
    ) == ["Conv", "BatchNormalization", "Add"]


def test_matmul_with_3d_output_stays():
    nodes = [node("MatMul", "x w", "h"), BN]
    assert _unfolded(
        nodes, ["x: float[2,5,8]"], ["y: float[2,5,5]"], {"w": rand(8, 5), **bn_params(5)}
    ) == ["MatMul", "BatchNormalization"]


def test_bn_with_overridable_parameters_stays():
    m = model(
        [node("Conv", "x w", "h"), BN],
        ["x: float[1,2,3,3]", "mean: float[4]"],
        ["y: float[1,4,3,3]"],
        {"w": rand(4, 2, 1, 1), **bn_params(4)},
    )
    g = load_onnx(m)
    run_passes(g, FOLD, check=True)
    assert ops(g) == ["Conv", "BatchNormalization"]


def test_training_mode_bn_stays():
    nodes = [
        node("Conv", "x w", "h"),
        node("BatchNormalization", "h scale bias mean var", "y rm rv", training_mode=1),
    ]
    g = build(
        nodes,
        ["x: float[2,2,3,3]"],
        ["y: float[2,4,3,3]", "rm: float[4]", "rv: float[4]"],
        {"w": rand(4, 2, 1, 1), **bn_params(4)},
    )
    run_passes(g, FOLD, check=True)
    assert ops(g) == ["Conv", "BatchNormalization"]


def test_randomized_resnet50_folds_every_bn_and_matches_onnxruntime():
    m = randomized_light_model("resnet50")
    softmax = next(n for n in m.graph.node if n.op_type == "Softmax")
    # the softmax saturates with random weights: compare the logits too
    m.graph.output.append(
        onnx.helper.make_tensor_value_info(softmax.input[0], onnx.TensorProto.FLOAT, None)
    )
    g = load_onnx(m)
    assert sum(n.op_type == "BatchNormalization" for n in g.nodes) == 53
    reports = run_passes(g, ["fold_constants", "fold_batchnorm", "eliminate_dead_code"], check=True)
    assert not any(n.op_type == "BatchNormalization" for n in g.nodes)
    assert reports[1].notes == ["folded 53 BatchNormalization nodes"]
    assert reports[2].weight_bytes_after < reports[0].weight_bytes_before
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    x = np.random.default_rng(1).standard_normal((1, 3, 224, 224)).astype(np.float32)
    want = ort.InferenceSession(
        m.SerializeToString(), opts, providers=["CPUExecutionProvider"]
    ).run(None, {"gpu_0/data_0": x})
    got = ort.InferenceSession(
        to_onnx(g).SerializeToString(), opts, providers=["CPUExecutionProvider"]
    ).run(None, {"gpu_0/data_0": x})
    for a, b in zip(want, got):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4 * float(np.abs(a).max()))


def test_per_channel_mul_add_after_conv_fold_into_it():
    c = 6
    r = np.random.default_rng(5)
    inits = {
        "w": rand(c, 3, 3, 3),
        "s": r.uniform(0.5, 1.5, (c, 1, 1)).astype(np.float32),
        "t": r.uniform(-1, 1, (1, c, 1, 1)).astype(np.float32),
    }
    g = build(
        [node("Conv", "x w", "h"), node("Mul", "h s", "m"), node("Add", "t m", "y")],
        ["x: float[batch,3,8,8]"],
        ["y: float[batch,6,6,6]"],
        inits,
    )
    after = check_pass(g, FOLD, [feeds(g, 0, batch=1), feeds(g, 1, batch=2)], rtol=1e-5, atol=1e-5)
    assert ops(after) == ["Conv"] and after.outputs[0].name == "y"


def test_per_column_mul_after_gemm_folds():
    inits = {"w": rand(8, 5), "s": np.linspace(0.5, 2, 5).astype(np.float32)}
    g = build(
        [node("Gemm", "x w", "h"), node("Mul", "h s", "y")],
        ["x: float[3,8]"],
        ["y: float[3,5]"],
        inits,
    )
    after = check_pass(g, FOLD, feeds(g), rtol=1e-5, atol=1e-5)
    assert ops(after) == ["Gemm"]


@pytest.mark.parametrize("shape", [(6, 4, 4), (1, 1, 4, 1), (2, 6, 1, 1)])
def test_mul_by_more_than_a_channel_vector_stays(shape):
    inits = {"w": rand(6, 3, 1, 1), "s": np.full(shape, 2.0, np.float32)}
    g = build(
        [node("Conv", "x w", "h"), node("Mul", "h s", "y")],
        ["x: float[1,3,4,4]"],
        ["y: float"],
        inits,
    )
    after = check_pass(g, FOLD, feeds(g))
    assert ops(after) == ["Conv", "Mul"]


AFFINE = ["fold_batchnorm", "batchnorm_to_affine", "eliminate_dead_code"]


@pytest.mark.parametrize("dtype", ["float", "float16"])
def test_unfoldable_bn_becomes_mul_add(dtype):
    # DenseNet's pre-activation BatchNorm: after a Concat, before a Relu
    np_dt = np.float16 if dtype == "float16" else np.float32
    g = build(
        [node("Concat", "a b", "h", axis=1), BN, node("Relu", "y", "z")],
        [f"a: {dtype}[batch,2,3,3]", f"b: {dtype}[batch,3,3,3]"],
        [f"z: {dtype}[batch,5,3,3]"],
        bn_params(5, dtype=np_dt),
    )
    tol = 2e-3 if dtype == "float16" else 1e-5
    after = check_pass(g, AFFINE, [feeds(g, 0, batch=1), feeds(g, 1, batch=2)], rtol=tol, atol=tol)
    assert ops(after) == ["Concat", "Mul", "Add", "Relu"]
    s, t = (after.nodes[i].inputs[1].const for i in (1, 2))
    assert s.shape == t.shape == (5, 1, 1) and s.dtype == t.dtype == np_dt
    x = feeds(g, 2, batch=2)
    np.testing.assert_allclose(run_ort(after, x)[0], run_ort(g, x)[0], rtol=tol, atol=tol)


def test_bn_as_graph_output_keeps_its_name_as_add():
    g = build([BN], ["h: float[2,4]"], ["y: float[2,4]"], bn_params(4))
    after = check_pass(g, AFFINE, feeds(g, 0), rtol=1e-5, atol=1e-6)
    assert ops(after) == ["Mul", "Add"] and after.nodes[1].outputs[0].name == "y"


def test_bn_with_runtime_statistics_is_not_rewritten():
    m = model(
        [BN],
        ["h: float[1,4,3,3]", "mean: float[4]"],
        ["y: float[1,4,3,3]"],
        {k: v for k, v in bn_params(4).items() if k != "mean"},
    )
    g = load_onnx(m)
    run_passes(g, AFFINE, check=True)
    assert ops(g) == ["BatchNormalization"]
