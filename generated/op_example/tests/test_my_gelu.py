"""Tests of the com.example::MyGelu op: the two kernels agree, and torsh-gen runs
and compiles a model that uses the op.

Run them from the package folder: ``pip install -e ".[test]" && pytest``.
"""

from __future__ import annotations

import numpy as np
import pytest

from torsh_op_my_gelu import DOMAIN, OP_TYPE, kernels, reference

SHAPES = [(), (7,), (3, 5), (2, 3, 4, 5)]
ALPHAS = [1.0, 1.702, -0.5]


def _tolerance(dtype: type) -> dict:
    return {"rtol": 1e-6, "atol": 1e-7} if dtype == np.float32 else {"rtol": 1e-12, "atol": 1e-14}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
def test_numba_kernel_matches_reference(shape: tuple, dtype: type) -> None:
    x = np.asarray(np.random.default_rng(0).standard_normal(shape) * 4, dtype=dtype)
    for alpha in ALPHAS:
        want = reference.compute(x, alpha=alpha)
        got = kernels.compute(x, alpha=alpha)
        assert got.dtype == x.dtype and got.shape == x.shape
        np.testing.assert_allclose(got, want, **_tolerance(dtype))


def test_numba_kernel_takes_strided_and_half_inputs() -> None:
    x = np.random.default_rng(1).standard_normal((4, 6)).astype(np.float32)[:, ::2]
    np.testing.assert_allclose(kernels.compute(x), reference.compute(x), **_tolerance(np.float32))
    h = x.astype(np.float16)
    got = kernels.compute(h, alpha=2.0)
    assert got.dtype == np.float16
    np.testing.assert_allclose(got, reference.compute(h, alpha=2.0), rtol=2e-3, atol=1e-3)


def _model(alpha: float):
    """A one-node ONNX model: y = MyGelu(x) over float[batch, 5]."""
    from onnx import TensorProto, helper

    node = helper.make_node(OP_TYPE, ["x"], ["y"], domain=DOMAIN, alpha=alpha)
    graph = helper.make_graph(
        [node],
        "uses_op",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 5])],
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid(DOMAIN, 1)]
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8
    return model


def test_registered_with_torsh_gen() -> None:
    pytest.importorskip("torsh_gen")
    from torsh_gen.ops.registry import lookup

    from torsh_op_my_gelu import spec

    assert isinstance(lookup(OP_TYPE, DOMAIN), spec.MyGeluOp)


def test_torsh_gen_runs_and_compiles_a_model_using_the_op(tmp_path) -> None:
    pytest.importorskip("torsh_gen")
    onnx = pytest.importorskip("onnx")
    from torsh_gen.tools.artifact import load_artifact
    from torsh_gen.tools.compile import compile_model
    from torsh_gen.tools.loading import load_model
    from torsh_gen.tools.run import run_model

    from torsh_op_my_gelu import spec  # noqa: F401  (registers the op when not installed)

    model = _model(alpha=1.702)
    path = tmp_path / "uses_op.onnx"
    onnx.save(model, path)
    x = np.random.default_rng(2).standard_normal((3, 5)).astype(np.float32)
    want = reference.compute(x, alpha=1.702)

    graph = load_model(path)
    assert graph.outputs[0].type.shape == ("batch", 5)
    np.testing.assert_allclose(run_model(graph, {"x": x})["y"], want, rtol=1e-6, atol=1e-7)

    compile_model(path, tmp_path / "uses_op")
    artifact = load_artifact(tmp_path / "uses_op")
    np.testing.assert_allclose(artifact.run(x=x)["y"], want, rtol=1e-6, atol=1e-7)
