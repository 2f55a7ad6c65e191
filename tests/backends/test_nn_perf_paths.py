"""The numba fast paths of the CPU backend against onnxruntime: batch-1 matrix-vector
products and GEMM epilogues (bias, residual, activation), row softmax and LayerNorm,
flat fused elementwise kernels, the exact-input fast check of ``Model.run``, and the
accuracy of the polynomial transcendentals those kernels call."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.backends.helpers import assert_matches_ort, compile_and_load
from torsh_gen.backends.python.templating import environment

F = TensorProto.FLOAT


def _model(
    nodes: list, inputs: list, outputs: list, inits: dict, opset: int = 20
) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info(n, F, s) for n, s in inputs],
        [helper.make_tensor_value_info(n, F, None) for n in outputs],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _activation(act: str, x: str, y: str) -> list:
    if act == "Silu":
        return [helper.make_node("Sigmoid", [x], ["sig"]), helper.make_node("Mul", [x, "sig"], [y])]
    if act == "GeluTanh":
        return [helper.make_node("Gelu", [x], [y], approximate="tanh")]
    if act == "LeakyRelu":
        return [helper.make_node("LeakyRelu", [x], [y], alpha=0.1)]
    return [helper.make_node(act, [x], [y])]


def _dense(shape: tuple, n: int, act: str, residual: bool, seed: int = 0) -> onnx.ModelProto:
    """act(x @ w + b [+ r]) with x of static ``shape``."""
    rng = np.random.default_rng(seed)
    k = shape[-1]
    inits = {
        "w": (rng.standard_normal((k, n)) / math.sqrt(k)).astype(np.float32),
        "b": rng.standard_normal(n).astype(np.float32),
    }
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["p"]),
        helper.make_node("Add", ["p", "b"], ["q"]),
    ]
    inputs = [("x", list(shape))]
    last = "q"
    if residual:
        nodes.append(helper.make_node("Add", ["q", "r"], ["s"]))
        inputs.append(("r", list(shape[:-1]) + [n]))
        last = "s"
    nodes += _activation(act, last, "y") if act else [helper.make_node("Identity", [last], ["y"])]
    return _model(nodes, inputs, ["y"], inits)


def _feeds(model: onnx.ModelProto, seed: int, scale: float = 2.0) -> dict:
    rng = np.random.default_rng(seed)
    out = {}
    for vi in model.graph.input:
        shape = [d.dim_value for d in vi.type.tensor_type.shape.dim]
        out[vi.name] = (rng.standard_normal(shape) * scale).astype(np.float32)
    return out


ACTS = ["", "Relu", "Gelu", "GeluTanh", "Tanh", "Sigmoid", "Silu", "LeakyRelu", "HardSigmoid"]


@pytest.mark.parametrize("act", ACTS)
def test_batch1_matvec_with_epilogue(tmp_path: Path, act: str) -> None:
    model = _dense((1, 70), 33, act, residual=act in ("Gelu", "Relu"))
    module = compile_and_load(model, tmp_path / "mv")
    assert "_k.k_matvec" in (tmp_path / "mv" / "model.py").read_text()
    for seed in (1, 2):
        assert_matches_ort(module, model, _feeds(model, seed), rtol=1e-5, atol=1e-6)


def test_forward_without_errstate_only_when_nothing_can_warn(tmp_path: Path) -> None:
    """A forward of numba kernels only (a batch-1 dense layer) skips np.errstate, and inf
    and NaN inputs still raise no warning; a forward with numpy arithmetic (Tanh as
    np.tanh after the product) keeps it, and its overflow raises none either."""
    import warnings

    quiet = _dense((1, 70), 33, "Relu", residual=False)
    loud = _dense((2, 70), 33, "Tanh", residual=False)
    for name, model, wrapped in (("quiet", quiet, False), ("loud", loud, True)):
        module = compile_and_load(model, tmp_path / name)
        src = (tmp_path / name / "model.py").read_text()
        assert ("_quiet_forward = _forward\n" not in src) == wrapped, name
        feeds = _feeds(model, 5)
        x = next(iter(feeds))
        feeds[x] = feeds[x].copy()
        feeds[x][..., 0] = np.inf
        feeds[x][..., 1] = np.nan
        feeds[x][..., 2] = 3e38
        m = module.Model()
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            m.run(**feeds)


@pytest.mark.parametrize("shape", [(1, 301), (1, 1, 301)])
@pytest.mark.parametrize("n", [1, 64, 150])
def test_batch1_matvec_column_blocks(tmp_path: Path, n: int, shape: tuple[int, ...]) -> None:
    """The matvec sums run in blocks of 64 columns: one partial block, exactly one, and
    two whole blocks with a partial third (masked lanes past the matrix's end); a (1, K)
    row goes to the kernel as it is, other shapes flattened."""
    model = _dense(shape, n, "", residual=True)
    module = compile_and_load(model, tmp_path / "mv")
    assert "_k.k_matvec" in (tmp_path / "mv" / "model.py").read_text()
    assert_matches_ort(module, model, _feeds(model, 4), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape", [(1, 1100), (1, 1, 1100)])
@pytest.mark.parametrize(("act", "residual"), [("", True), ("Relu", False)])
def test_batch1_matvec_panels_shared_by_threads(tmp_path: Path, shape: tuple, act: str, residual: bool) -> None:
    """A matrix of 256 KiB or more whose columns split into panels of 64 is packed as
    panels (a new constant; the (K, N) matrix is not stored) that the threads share, the
    epilogue per panel; a matrix under 256 KiB keeps the unpacked kernel."""
    model = _dense(shape, 128, act, residual)  # 1100 x 128: 550 KB, two panels
    module = compile_and_load(model, tmp_path / "mv")
    src = (tmp_path / "mv" / "model.py").read_text()
    kernels = (tmp_path / "mv" / "kernels.py").read_text()
    assert "self.w_matvec_panels" in src and "for p in nb.prange(wp.shape[0])" in kernels
    assert_matches_ort(module, model, _feeds(model, 4), rtol=1e-5, atol=1e-6)
    small = _dense(shape, 128, act, residual, seed=1)
    small.graph.initializer[0].CopyFrom(
        numpy_helper.from_array(numpy_helper.to_array(small.graph.initializer[0])[:400], "w")
    )
    small.graph.input[0].type.tensor_type.shape.dim[-1].dim_value = 400
    module = compile_and_load(small, tmp_path / "small")
    assert "matvec_panels" not in (tmp_path / "small" / "model.py").read_text()
    assert_matches_ort(module, small, _feeds(small, 5), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("act", ["Gelu", "GeluTanh", "Silu", "Relu"])
@pytest.mark.parametrize("residual", [False, True])
def test_gemm_epilogue_in_one_pass(tmp_path: Path, act: str, residual: bool) -> None:
    model = _dense((2, 7, 24), 40, act, residual)
    module = compile_and_load(model, tmp_path / "epi")
    src = (tmp_path / "epi" / "model.py").read_text()
    # the packed GEMM applies bias, residual and Relu in its register tile; other
    # activations follow in one numba pass
    assert "_cv.matmul(" in src and "np.add(" not in src
    assert ("_k.k_epilogue" in src) == (act != "Relu")
    feeds = _feeds(model, 3, scale=3.0)
    assert_matches_ort(module, model, feeds, rtol=1e-5, atol=1e-6)
    if residual:  # a strided residual is copied to a contiguous one, not misread
        feeds["r"] = np.asfortranarray(feeds["r"])
        assert_matches_ort(module, model, feeds, rtol=1e-5, atol=1e-6)


def test_large_gelu_epilogue_splits_rows_across_threads(tmp_path: Path) -> None:
    model = _dense((2, 128, 32), 300, "Gelu", True)  # 76,800 outputs: the parallel epilogue
    module = compile_and_load(model, tmp_path / "epi")
    kernels = (tmp_path / "epi" / "kernels.py").read_text()
    assert "parallel=True" in kernels and "for i in nb.prange(m)" in kernels
    assert_matches_ort(module, model, _feeds(model, 4, scale=3.0), rtol=1e-5, atol=1e-6)


def _softmax_model(op: str, shape: list, axis: int, opset: int) -> onnx.ModelProto:
    return _model([helper.make_node(op, ["x"], ["y"], axis=axis)], [("x", shape)], ["y"], {}, opset)


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize(("axis", "opset"), [(-1, 13), (1, 11), (2, 11)])
def test_row_softmax(tmp_path: Path, op: str, axis: int, opset: int) -> None:
    model = _softmax_model(op, [2, 3, 17], axis, opset)
    module = compile_and_load(model, tmp_path / "sm")
    assert "_k.k_" in (tmp_path / "sm" / "model.py").read_text()
    x = _feeds(model, 4, scale=5.0)["x"]
    x[0, 1, :5] = -np.inf  # attention masks
    x[1, 2, 3] = 1e4
    assert_matches_ort(module, model, {"x": x}, rtol=1e-5, atol=1e-6)
    assert_matches_ort(module, model, {"x": np.ascontiguousarray(x[:, ::-1])}, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
def test_large_row_softmax_splits_rows_across_threads(tmp_path: Path, op: str) -> None:
    model = _softmax_model(op, [2, 4, 96, 96], -1, 13)  # 73,728 elements
    module = compile_and_load(model, tmp_path / "sm")
    assert "for i in nb.prange(m)" in (tmp_path / "sm" / "kernels.py").read_text()
    x = _feeds(model, 6, scale=5.0)["x"]
    x[1, 2, 7, :9] = -np.inf
    assert_matches_ort(module, model, {"x": x}, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("axis", "scale_shape", "bias"), [(-1, [24], True), (-2, [5, 24], True), (-1, [1, 24], False)]
)
def test_row_layer_norm(tmp_path: Path, axis: int, scale_shape: list, bias: bool) -> None:
    rng = np.random.default_rng(5)
    inits = {"g": rng.uniform(0.5, 1.5, scale_shape).astype(np.float32)}
    names = ["x", "g"]
    if bias:
        inits["b"] = rng.uniform(-0.5, 0.5, scale_shape).astype(np.float32)
        names.append("b")
    node = helper.make_node("LayerNormalization", names, ["y"], axis=axis, epsilon=1e-5)
    model = _model([node], [("x", [2, 5, 24])], ["y"], inits, opset=17)
    module = compile_and_load(model, tmp_path / "ln")
    assert "_k.k_layernorm" in (tmp_path / "ln" / "model.py").read_text()
    x = _feeds(model, 6, scale=3.0)["x"] + 4.0
    assert_matches_ort(module, model, {"x": x}, rtol=1e-5, atol=1e-5)


def test_flat_fused_elementwise_kernel(tmp_path: Path) -> None:
    nodes = [
        helper.make_node("Mul", ["x", "z"], ["m"]),
        helper.make_node("Add", ["m", "c"], ["a"]),
        helper.make_node("Tanh", ["a"], ["t"]),
        helper.make_node("Sigmoid", ["x"], ["s"]),
        helper.make_node("Mul", ["t", "s"], ["u"]),
        helper.make_node("Exp", ["u"], ["y"]),
    ]
    inputs = [("x", [3, 4, 5]), ("z", [3, 4, 5])]
    model = _model(nodes, inputs, ["y"], {"c": np.float32([[0.25]])}, opset=17)
    module = compile_and_load(model, tmp_path / "ew")
    kernels = (tmp_path / "ew" / "kernels.py").read_text()
    assert "for i0 in range(y0.shape[0])" in kernels and "nn_tanh(" in kernels
    feeds = _feeds(model, 7)
    assert_matches_ort(module, model, feeds, rtol=1e-5, atol=1e-6)
    feeds["x"] = np.asfortranarray(feeds["x"])
    assert_matches_ort(module, model, feeds, rtol=1e-5, atol=1e-6)


def test_row_fused_elementwise_kernels(tmp_path: Path) -> None:
    # chains whose constants vary per channel and/or per column run as row kernels (the
    # per-row values hoisted, contiguous inner loop); the large one splits rows across
    # threads; a constant varying along two separate axes keeps the strided 3-d kernel
    r = np.random.default_rng(3)
    inits = {
        "s1": r.standard_normal((8, 1, 1)).astype(np.float32),
        "t1": r.standard_normal((1, 8, 1, 1)).astype(np.float32),
        "b2": r.standard_normal(16).astype(np.float32),
        "s3": r.standard_normal((4, 1)).astype(np.float32),
        "b3": r.standard_normal(10).astype(np.float32),
        "s4": r.standard_normal((64, 1, 1)).astype(np.float32),
        "t4": r.standard_normal((64, 1, 1)).astype(np.float32),
        "c5": r.standard_normal((2, 1, 4)).astype(np.float32),
    }
    nodes = [
        helper.make_node("Mul", ["x1", "s1"], ["m1"]),
        helper.make_node("Add", ["m1", "t1"], ["a1"]),
        helper.make_node("Relu", ["a1"], ["y1"]),
        helper.make_node("Add", ["x2", "b2"], ["a2"]),
        helper.make_node("Tanh", ["a2"], ["y2"]),
        helper.make_node("Mul", ["x3", "s3"], ["m3"]),
        helper.make_node("Add", ["m3", "b3"], ["a3"]),
        helper.make_node("Sigmoid", ["a3"], ["y3"]),
        helper.make_node("Mul", ["x4", "s4"], ["m4"]),
        helper.make_node("Add", ["m4", "t4"], ["a4"]),
        helper.make_node("Relu", ["a4"], ["y4"]),
        helper.make_node("Add", ["x5", "c5"], ["a5"]),
        helper.make_node("Relu", ["a5"], ["y5"]),
    ]
    inputs = [
        ("x1", [2, 8, 5, 6]),
        ("x2", [2, 7, 16]),
        ("x3", [3, 4, 10]),
        ("x4", [1, 64, 32, 32]),
        ("x5", [2, 3, 4]),
    ]
    model = _model(nodes, inputs, ["y1", "y2", "y3", "y4", "y5"], inits, opset=17)
    module = compile_and_load(model, tmp_path / "rows")
    kernels = (tmp_path / "rows" / "kernels.py").read_text()
    code = (tmp_path / "rows" / "model.py").read_text()
    assert kernels.count("for r in nb.prange(n_outer * n_mid)") == 4  # x1 and x4: serial, parallel
    assert kernels.count("parallel=True") == 1  # only the 65,536-element chain
    assert code.count("_rt.ew(") == 1  # c5 varies along axes 0 and 2: the 3-d kernel
    for n_outer_mid_inner in ("2,\n            8,\n            30,", "14,\n            1,\n            16,"):
        assert n_outer_mid_inner in code
    assert_matches_ort(module, model, _feeds(model, 5), rtol=1e-5, atol=1e-6)


def test_exact_input_fast_path_keeps_the_errors(tmp_path: Path) -> None:
    model = _dense((1, 8), 4, "Relu", residual=True)
    module = compile_and_load(model, tmp_path / "chk")
    m = module.Model()
    feeds = _feeds(model, 8)
    assert_matches_ort(m, model, feeds)
    wide = np.repeat(feeds["x"], 2, axis=1)[:, ::2]  # strided: still the exact dtype and shape
    assert np.allclose(m.run(x=wide, r=feeds["r"])["y"], m.run(**feeds)["y"])
    with pytest.raises(TypeError, match="dtype float64"):
        m.run(x=feeds["x"].astype(np.float64), r=feeds["r"])
    with pytest.raises(ValueError, match="axis 1 must be 8"):
        m.run(x=np.zeros((1, 9), np.float32), r=feeds["r"])
    with pytest.raises(TypeError, match="missing input 'r'"):
        m.run(x=feeds["x"])
    with pytest.raises(TypeError, match="unexpected input 'q'"):
        m.run(x=feeds["x"], q=feeds["r"])
    first = m.run(**feeds)["y"]
    again = m.run(**_feeds(model, 9))["y"]
    assert not np.shares_memory(first, again) and not np.allclose(first, again)


def _helpers_module(tmp_path: Path):
    nn = environment().get_template("_nn.py.j2").module
    names = ("types", "exp", "exp_wide", "sigmoid", "tanh", "gelu", "gelu_tanh")
    blocks = [str(getattr(nn, name)()) for name in names]
    src = "import math\nimport numba as nb\nimport numpy as np\n\n" + "\n\n\n".join(blocks)
    (tmp_path / "nnhelpers.py").write_text(src)
    spec = importlib.util.spec_from_file_location("nnhelpers", tmp_path / "nnhelpers.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["nnhelpers"] = mod
    try:
        spec.loader.exec_module(mod)
    finally:
        sys.modules.pop("nnhelpers", None)
    return mod


def _gelu_tanh_u(v: np.ndarray) -> np.ndarray:
    return math.sqrt(2 / math.pi) * (v + 0.044715 * v**3)


def test_polynomial_transcendentals_are_accurate(tmp_path: Path) -> None:
    import numba as nb

    mod = _helpers_module(tmp_path)
    erfc = np.vectorize(math.erfc)
    cases = {
        "nn_exp": (-87.0, 88.0, np.exp),
        "nn_tanh": (-10.0, 10.0, np.tanh),
        "nn_sigmoid": (-80.0, 80.0, lambda v: 1 / (1 + np.exp(-v))),
        "nn_gelu": (-10.0, 10.0, lambda v: 0.5 * v * erfc(-v / math.sqrt(2))),
        "nn_gelu_tanh": (-10.0, 10.0, lambda v: v / (1 + np.exp(-2 * _gelu_tanh_u(v)))),
    }
    for name, (lo, hi, ref) in cases.items():
        fn = getattr(mod, name)

        @nb.njit
        def loop(x, y, fn=fn):
            for i in range(x.shape[0]):
                y[i] = fn(x[i])

        x = np.linspace(lo, hi, 200001).astype(np.float32)
        x = np.concatenate([x, np.float32([0.0, 1e-30, -1e-30, 1e-3])])
        y = np.empty_like(x)
        loop(x, y)
        want = ref(x.astype(np.float64))
        nz = want != 0
        rel = np.abs(y[nz] - want[nz]) / np.abs(want[nz])
        assert rel.max() <= 1e-6, (name, float(rel.max()), float(x[nz][rel.argmax()]))
        special = np.float32([np.nan, np.inf, -np.inf])
        out = np.empty_like(special)
        loop(special, out)
        with np.errstate(all="ignore"):
            expect = ref(special.astype(np.float64)).astype(np.float32)
        np.testing.assert_array_equal(out, expect, err_msg=name)


@pytest.mark.parametrize(
    ("a_shape", "b_shape", "perm"),
    [
        ([1, 3, 40, 16], [1, 3, 16, 45], None),  # attention scores: tails in rows and columns
        ([2, 2, 5, 7], [2, 2, 7, 37], None),
        ([1, 2, 33, 150], [1, 2, 33, 150], [0, 1, 3, 2]),  # a transposed view, K > one block
        ([40, 300], [300, 50], None),
    ],
)
def test_batched_products_of_runtime_operands(tmp_path: Path, a_shape: list, b_shape: list, perm: list | None) -> None:
    """Products of two run-time operands go through the packed kernel, strided views included."""
    nodes = []
    rhs = "b"
    if perm:
        nodes.append(helper.make_node("Transpose", ["b"], ["bt"], perm=perm))
        rhs = "bt"
    nodes.append(helper.make_node("MatMul", ["a", rhs], ["y"]))
    model = _model(nodes, [("a", a_shape), ("b", b_shape)], ["y"], {})
    module = compile_and_load(model, tmp_path / "bmm")
    assert "_cv.batched_matmul(" in (tmp_path / "bmm" / "model.py").read_text()
    assert_matches_ort(module, model, _feeds(model, 5), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("size", "beta", "shape"), [(5, 0.75, [1, 7, 6, 5]), (3, 0.5, [2, 9, 11, 3]), (1, 0.75, [1, 3, 4, 4])])
def test_local_response_norm_kernel(tmp_path: Path, size: int, beta: float, shape: list) -> None:
    """LRN through the channel-window kernel (the two-square-root path for beta 0.75, pow
    otherwise)."""
    node = helper.make_node("LRN", ["x"], ["y"], size=size, alpha=2e-3, beta=beta, bias=1.5)
    model = _model([node], [("x", shape)], ["y"], {}, opset=13)
    module = compile_and_load(model, tmp_path / "lrn")
    assert "_cv.local_response_norm(" in (tmp_path / "lrn" / "model.py").read_text()
    assert_matches_ort(module, model, _feeds(model, 9, scale=4.0), rtol=1e-5, atol=1e-6)
