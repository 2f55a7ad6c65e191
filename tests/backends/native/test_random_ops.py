"""Random ops and BitCast through the JIT and the kernel-IR interpreter.

Random numbers cannot be compared with onnxruntime's, so the tests check what the ops
promise: values in range, the right type and shape, the distribution's moments over many
draws, the same numbers for the same seed (and on every target: the interpreter and the
JIT agree bit for bit), different numbers for different seeds and nodes. BitCast is
compared with numpy's ``view``.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from tests.backends.native.helpers import interpret_program, lower_model
from torsh_gen.backends.llvm.jit import JitProgram


def one_node(
    op: str, feeds: dict[str, np.ndarray], out: tuple[int, list[int]], opset: int = 22, **attrs
) -> onnx.ModelProto:
    """A one-node model over ``feeds`` with one output of (elem type, shape)."""
    ins = [
        helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
        for k, v in feeds.items()
    ]
    y = helper.make_tensor_value_info("y", out[0], out[1])
    g = helper.make_graph([helper.make_node(op, list(feeds), ["y"], **attrs)], "g", ins, [y])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def jit(m: onnx.ModelProto, feeds: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """The JIT's only output."""
    return JitProgram(lower_model(m)).run(feeds or {})["y"]


def jit_and_interp_agree(
    m: onnx.ModelProto, feeds: dict[str, np.ndarray] | None = None
) -> np.ndarray:
    """Run both ways; the counter-based generator gives identical bits."""
    program = lower_model(m)
    got = JitProgram(program).run(feeds or {})["y"]
    np.testing.assert_array_equal(interpret_program(program, feeds or {})[0], got)
    return got


# --------------------------------------------------------------------------- uniform
@pytest.mark.parametrize(
    "elem,np_t", [(TensorProto.FLOAT, np.float32), (TensorProto.DOUBLE, np.float64)]
)
def test_uniform_range_and_moments(elem, np_t):
    low, high = -2.0, 3.0
    m = one_node(
        "RandomUniform",
        {},
        (elem, [400, 500]),
        dtype=elem,
        low=low,
        high=high,
        shape=[400, 500],
        seed=7.0,
    )
    y = jit(m)
    assert y.dtype == np_t and y.shape == (400, 500)
    assert y.min() >= low and y.max() < high
    n = y.size
    assert abs(y.mean() - 0.5) < 5 * np.sqrt(25 / 12 / n)
    assert abs(y.var() - 25 / 12) < 0.02
    hist = np.histogram(y, bins=10, range=(low, high))[0] / n
    np.testing.assert_allclose(hist, 0.1, atol=0.005)


def test_uniform_seeded_reproducible_and_seeds_differ():
    def make(seed: float) -> onnx.ModelProto:
        return one_node("RandomUniform", {}, (TensorProto.FLOAT, [6, 7]), shape=[6, 7], seed=seed)

    a = jit_and_interp_agree(make(1.0))
    np.testing.assert_array_equal(a, jit(make(1.0)))
    b = jit(make(2.0))
    assert not np.array_equal(a, b)
    # neighbouring elements are not correlated
    big = jit(
        one_node("RandomUniform", {}, (TensorProto.FLOAT, [100000]), shape=[100000], seed=3.0)
    )
    assert abs(np.corrcoef(big[:-1], big[1:])[0, 1]) < 0.02


def test_uniform_like_takes_shape_and_type():
    x = np.zeros((3, 5), np.float64)
    m = one_node(
        "RandomUniformLike", {"x": x}, (TensorProto.DOUBLE, [3, 5]), low=10.0, high=11.0, seed=4.0
    )
    y = jit_and_interp_agree(m, {"x": x})
    assert y.dtype == np.float64 and y.shape == (3, 5)
    assert ((y >= 10.0) & (y < 11.0)).all()


def test_unseeded_nodes_draw_new_numbers_per_call_and_differ_between_nodes():
    """Without ``seed`` a node's call counter (persistent workspace state) advances, so
    each call draws new numbers; two nodes of one model draw different numbers; a seeded
    node repeats itself."""
    ys = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [64]) for n in ("a", "b", "c")]
    nodes = [helper.make_node("RandomUniform", [], [n], shape=[64]) for n in ("a", "b")]
    nodes.append(helper.make_node("RandomUniform", [], ["c"], shape=[64], seed=3.0))
    m = helper.make_model(
        helper.make_graph(nodes, "g", [], ys), opset_imports=[helper.make_opsetid("", 22)]
    )
    program = lower_model(m)
    prog = JitProgram(program)
    first, again = prog.run({}), prog.run({})
    assert not np.array_equal(first["a"], again["a"])
    assert not np.array_equal(first["a"], first["b"])
    np.testing.assert_array_equal(first["c"], again["c"])
    # a fresh workspace (zeroed here) starts the counter over: the interpreter agrees
    np.testing.assert_array_equal(interpret_program(program, {})[0], first["a"])


# --------------------------------------------------------------------------- normal
@pytest.mark.parametrize(
    "elem,np_t", [(TensorProto.FLOAT, np.float32), (TensorProto.DOUBLE, np.float64)]
)
def test_normal_moments(elem, np_t):
    mean, scale = 1.5, 2.0
    m = one_node(
        "RandomNormal",
        {},
        (elem, [200000]),
        dtype=elem,
        mean=mean,
        scale=scale,
        shape=[200000],
        seed=11.0,
    )
    y = jit(m)
    assert y.dtype == np_t and np.isfinite(y).all()
    n = y.size
    assert abs(y.mean() - mean) < 5 * scale / np.sqrt(n)
    assert abs(y.std() - scale) < 0.02
    z = (y - mean) / scale
    assert abs(np.mean(np.abs(z) < 1) - 0.6827) < 0.005
    assert abs(np.mean(np.abs(z) < 2) - 0.9545) < 0.003
    assert abs(np.mean(z**3)) < 0.03  # symmetric


def test_normal_like_agrees_with_interpreter():
    x = np.zeros((4, 6), np.float32)
    m = one_node("RandomNormalLike", {"x": x}, (TensorProto.FLOAT, [4, 6]), seed=5.0)
    y = jit_and_interp_agree(m, {"x": x})
    assert y.shape == (4, 6) and np.isfinite(y).all()


# --------------------------------------------------------------------------- Bernoulli
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bernoulli_frequencies(dtype):
    p = np.repeat(np.array([0.0, 0.1, 0.5, 0.9, 1.0], dtype), 20000)
    m = one_node(
        "Bernoulli", {"p": p}, (TensorProto.FLOAT, [p.size]), dtype=TensorProto.FLOAT, seed=2.0
    )
    y = jit(m, {"p": p}).reshape(5, -1)
    assert set(np.unique(y)) <= {0.0, 1.0}
    np.testing.assert_allclose(y.mean(axis=1), [0.0, 0.1, 0.5, 0.9, 1.0], atol=0.015)
    assert y[0].sum() == 0 and y[-1].sum() == y.shape[1]


@pytest.mark.parametrize("elem,np_t", [(TensorProto.BOOL, np.bool_), (TensorProto.INT32, np.int32)])
def test_bernoulli_output_types(elem, np_t):
    p = np.linspace(0, 1, 12).astype(np.float32)
    m = one_node("Bernoulli", {"p": p}, (elem, [12]), dtype=elem, seed=9.0)
    y = jit_and_interp_agree(m, {"p": p})
    assert y.dtype == np_t and y[0] == 0 and y[-1] == 1


# --------------------------------------------------------------------------- Multinomial
def test_multinomial_frequencies():
    logits = np.log(np.array([[0.1, 0.2, 0.7], [0.5, 0.25, 0.25]], np.float32))
    m = one_node(
        "Multinomial",
        {"x": logits},
        (TensorProto.INT64, [2, 30000]),
        dtype=TensorProto.INT64,
        sample_size=30000,
        seed=1.0,
    )
    y = jit(m, {"x": logits})
    assert y.dtype == np.int64 and y.min() >= 0 and y.max() <= 2
    freq = np.stack([np.bincount(r, minlength=3) / r.size for r in y])
    np.testing.assert_allclose(freq, np.exp(logits), atol=0.015)


def test_multinomial_agrees_with_interpreter():
    logits = np.array([[0.0, 1.0, -1.0, 2.0]], np.float32)
    m = one_node(
        "Multinomial", {"x": logits}, (TensorProto.INT32, [1, 16]), sample_size=16, seed=3.0
    )
    y = jit_and_interp_agree(m, {"x": logits})
    assert y.dtype == np.int32 and ((y >= 0) & (y < 4)).all()


# --------------------------------------------------------------------------- BitCast
@pytest.mark.parametrize(
    "src,dst",
    [
        (np.float32, np.int32),
        (np.int64, np.float64),
        (np.uint16, np.int16),
        (np.int8, np.uint8),
        (np.float16, np.int16),
        (np.uint16, np.float16),
        (np.uint32, np.float32),
        (np.bool_, np.uint8),
    ],
)
def test_bitcast(src, dst):
    rng = np.random.default_rng(0)
    if src == np.bool_:
        x = rng.random(10) < 0.5
    else:
        x = rng.integers(0, 256, 10 * np.dtype(src).itemsize, dtype=np.uint8).view(src)[:10].copy()
        if np.dtype(src).kind == "f":
            x = rng.standard_normal(10).astype(src)
    to = helper.np_dtype_to_tensor_dtype(np.dtype(dst))
    m = one_node("BitCast", {"x": x}, (to, [10]), opset=26, to=to)
    y = jit_and_interp_agree(m, {"x": x})
    np.testing.assert_array_equal(y.view(np.uint8), x.view(dst).view(np.uint8))
