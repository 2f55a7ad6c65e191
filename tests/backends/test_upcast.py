"""The upcasting path of the Python backend: fp16/bf16 nodes through the float32 emitters.

The float16 <-> float32 bit kernels are checked against numpy exhaustively (every float16)
and on random float32 bit patterns; fp16/bf16 graphs compile with no reference-kernel node
and match the per-node-rounding semantics of the reference interpreter.
"""

from __future__ import annotations

import numba as nb
import numpy as np
import pytest

from tests.passes.irtext import build, node
from torsh_gen.backends.python.upcast import _F16_TO_F32, _F32_TO_F16
from torsh_gen.ir.types import DType
from torsh_gen.ops.execute import run_graph
from torsh_gen.passes.precision import convert_float_precision
from torsh_gen.tools.artifact import load_artifact
from torsh_gen.tools.compile import compile_model


def kernel(src: str):
    scope = {"nb": nb, "np": np}
    exec(src.replace("cache=True", "cache=False").replace("{name}", "k"), scope)  # noqa: S102
    return scope["k"]


def test_f16_to_f32_kernel_matches_numpy_on_every_float16():
    bits = np.arange(65536, dtype=np.uint32).astype(np.uint16)
    out = np.empty(bits.size, np.uint32)
    kernel(_F16_TO_F32)(bits, out)
    expected = bits.view(np.float16).astype(np.float32)
    ours = out.view(np.float32)
    nan = np.isnan(expected)
    assert np.array_equal(ours[~nan].view(np.uint32), expected[~nan].view(np.uint32))  # -0.0 too
    assert np.isnan(ours[nan]).all()


def test_f32_to_f16_kernel_rounds_like_numpy():
    rng = np.random.default_rng(0)
    bits = rng.integers(0, 2**32, 1_000_000, dtype=np.uint64).astype(np.uint32)
    # and the hard cases: halfway points, the subnormal and overflow edges, infinities, zeros
    edges = np.array([0.0, -0.0, 65504.0, 65519.99, 65520.0, 1e9, np.inf, -np.inf, 6.1035156e-05,
                      5.9604645e-08, 2.9802322e-08, 2.9802326e-08, 1e-9, 1.0 + 2**-11, 1.0 + 3 * 2**-11],
                     np.float32).view(np.uint32)
    bits = np.concatenate([bits, edges, np.arange(0x33000000, 0x33100000, dtype=np.uint32)])
    out = np.empty(bits.size, np.uint16)
    kernel(_F32_TO_F16)(bits, out)
    with np.errstate(over="ignore"):
        expected = bits.view(np.float32).astype(np.float16)
    nan = np.isnan(bits.view(np.float32))
    assert np.array_equal(out[~nan], expected[~nan].view(np.uint16))
    assert np.isnan(out[nan].view(np.float16)).all()


@pytest.mark.parametrize("dtype", [DType.FLOAT16, DType.BFLOAT16])
def test_16_bit_graph_compiles_without_reference_kernels_and_rounds_per_node(dtype, tmp_path):
    r = np.random.default_rng(1)
    g = build(
        [node("MatMul", "x w", "m", name="mm"), node("Add", "m b", "a", name="add"),
         node("Tanh", "a", "t", name="tanh"), node("Transpose", "t", "tt", name="tr", perm=[1, 0]),
         node("ReduceSum", "tt", "y", name="sum", keepdims=0)],
        ["x: float[5,16]"],
        ["y: float[8]"],
        {"w": r.standard_normal((16, 8)).astype(np.float32), "b": r.standard_normal(8).astype(np.float32)},
    )
    convert_float_precision(g, dtype)
    x = {"x": r.standard_normal((5, 16)).astype(np.float32)}
    expected = run_graph(g, x)[0]
    report = compile_model(g, tmp_path / "art")
    assert report.reference_nodes == 0
    source = (tmp_path / "art" / "model.py").read_text()
    assert ("f16_to_f32" in source) == (dtype == DType.FLOAT16)
    ours = load_artifact(tmp_path / "art").run(**x)["y"]
    ulp = 2.0**-10 if dtype == DType.FLOAT16 else 2.0**-7
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours, expected, rtol=4 * ulp, atol=4 * ulp * np.abs(expected).max())
