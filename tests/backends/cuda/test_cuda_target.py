"""The CUDA target without a GPU: the GPU schedule run on the host against onnxruntime,
the PTX of every kernel assembled by ptxas for sm_80 and sm_90, the artifact's files."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.backends.models import hostile_names, mlp
from tests.oracle import ort_outputs
from torsh_gen.backend import prepare
from torsh_gen.backends.cuda.host import HostPlan
from torsh_gen.backends.cuda.schedule import split_for_gpu
from torsh_gen.backends.kernel.builder import KernelBuilder
from torsh_gen.backends.kernel.interp import run_kernel
from torsh_gen.backends.llvm.nvptx import ptx_module
from torsh_gen.errors import InputError, UnsupportedOpError
from torsh_gen.tools.compile import compile_model
from torsh_gen.tools.testmodels import randomized_light_model

PTXAS = shutil.which("ptxas")
LIGHT = ("light_resnet50", "light_squeezenet", "light_densenet121", "light_inception_v1")


def _init(name: str, a: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(a.astype(np.float32), name)


def conv_family() -> onnx.ModelProto:
    """Stem conv (7x7 s2) + MaxPool, a residual block, depthwise + pointwise convs,
    AveragePool, global pool, Gemm, LayerNorm and Softmax: every GPU schedule of the
    builder (im2col, pointwise, grouped, pools, transposes, epilogues) in one model."""
    rng = np.random.default_rng(1)
    r = lambda *s: rng.standard_normal(s) * 0.2  # noqa: E731
    nodes = [
        helper.make_node("Conv", ["x", "w0", "b0"], ["c0"], strides=[2, 2], pads=[3, 3, 3, 3]),
        helper.make_node("Relu", ["c0"], ["r0"]),
        helper.make_node("MaxPool", ["r0"], ["p0"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["p0", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c1", "p0"], ["a1"]),
        helper.make_node("Relu", ["a1"], ["r1"]),
        helper.make_node("Conv", ["r1", "wd"], ["cd"], group=8, pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Clip", ["cd", "lo", "hi"], ["rd"]),
        helper.make_node("Conv", ["rd", "wp", "bp"], ["cp"]),
        helper.make_node("AveragePool", ["cp"], ["ap"], kernel_shape=[2, 2], strides=[1, 1]),
        helper.make_node("Transpose", ["ap"], ["t0"], perm=[0, 2, 3, 1]),
        helper.make_node("LayerNormalization", ["t0", "g", "beta"], ["ln"], axis=-1),
        helper.make_node("Transpose", ["ln"], ["t1"], perm=[0, 3, 1, 2]),
        helper.make_node("GlobalAveragePool", ["t1"], ["gp"]),
        helper.make_node("Flatten", ["gp"], ["f"]),
        helper.make_node("Gemm", ["f", "wf", "bf"], ["logits"], transB=1),
        helper.make_node("Softmax", ["logits"], ["y"]),
    ]
    inits = [
        _init("w0", r(8, 3, 7, 7)), _init("b0", r(8)), _init("w1", r(8, 8, 3, 3)), _init("b1", r(8)),
        _init("wd", r(8, 1, 3, 3)), _init("lo", np.array(0.0)), _init("hi", np.array(6.0)),
        _init("wp", r(16, 8, 1, 1)), _init("bp", r(16)), _init("g", r(16) + 1), _init("beta", r(16)),
        _init("wf", r(10, 16)), _init("bf", r(10)),
    ]
    graph = helper.make_graph(
        nodes, "conv_family", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 32, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 10])], inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _feeds(model: onnx.ModelProto, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    inits = {i.name for i in model.graph.initializer}
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        shape = [d.dim_value or 2 for d in vi.type.tensor_type.shape.dim]
        out[vi.name] = rng.standard_normal(shape).astype(np.float32)
    return out


def _check_host(model: onnx.ModelProto, tol: float = 1e-4) -> None:
    feeds = _feeds(model)
    got = prepare(model, mode="compiled", target="cuda-host").run(feeds)
    for ref, out in zip(ort_outputs(model, feeds), got):
        err = np.abs(ref - out).max() / max(1.0, float(np.abs(ref).max()))
        assert err <= tol, err


def test_conv_family_on_host_matches_onnxruntime():
    _check_host(conv_family())


@pytest.mark.parametrize("name", LIGHT)
def test_light_models_on_host_match_onnxruntime(name):
    _check_host(randomized_light_model(name, seed=0))


def test_mlp_with_bound_batch_on_host():
    model = mlp()
    for vi in list(model.graph.input) + list(model.graph.output):
        vi.type.tensor_type.shape.dim[0].dim_value = 4
    _check_host(model)


def _pieces_of(model: onnx.ModelProto):
    from torsh_gen.backends.cuda.package import plan_program
    from torsh_gen.backends.cuda.program import build_cuda_program
    from torsh_gen.tools.compile import optimized_graph

    return plan_program(build_cuda_program(optimized_graph(model, "cuda")))


@pytest.mark.skipif(PTXAS is None, reason="ptxas (CUDA toolkit) not installed")
@pytest.mark.parametrize("name", ("conv_family",) + LIGHT)
def test_ptx_assembles_for_sm80_and_sm90(name, tmp_path):
    model = conv_family() if name == "conv_family" else randomized_light_model(name, seed=0)
    plan = _pieces_of(model)
    for arch in ("sm_80", "sm_90"):
        ptx = tmp_path / f"{arch}.ptx"
        ptx.write_text(ptx_module(plan.kernels, arch))
        done = subprocess.run([PTXAS, f"-arch={arch}", "-o", str(tmp_path / f"{arch}.cubin"), str(ptx)], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]


def test_schedule_splits_top_level_loops_and_collapses_parallel_nests():
    kb = KernelBuilder("k")
    x = kb.buffer("x", "f32", 24)
    y = kb.buffer("y", "f32", 24, writable=True)
    s = kb.buffer("s", "f32", 1, writable=True)
    with kb.loop(2, kind="parallel") as a, kb.loop(3, kind="parallel") as b:
        row = kb.let((a * 3 + b) * 4, "row")
        with kb.loop(4, kind="parallel") as c:
            y[row + c] = x[row + c] * 2.0
    acc = kb.local("f32", 0.0)
    with kb.loop(24) as i:  # a kernel-wide sum: one thread
        kb.assign(acc, acc + y[i])
    s[0] = acc
    kernel = kb.build()
    pieces = split_for_gpu(kernel)
    assert len(pieces) == 1 and pieces[0].threads == 1  # a top-level local keeps it whole
    kernel.body = kernel.body[:1]
    (piece,) = split_for_gpu(kernel)
    assert piece.threads == 24 and piece.kernel.body[0].kind == "gpu"
    xs = np.arange(24, dtype=np.float32)
    ys = np.zeros(24, dtype=np.float32)
    run_kernel(piece.kernel, {"x": xs, "y": ys})
    np.testing.assert_array_equal(ys, xs * 2)


def test_ptx_uses_thread_ids_and_global_memory():
    kb = KernelBuilder("k")
    x = kb.buffer("x", "f32", 1000)
    y = kb.buffer("y", "f32", 1000, writable=True)
    with kb.loop(1000, kind="parallel") as i:
        y[i] = x[i] + 1.0
    (piece,) = split_for_gpu(kb.build())
    ptx = ptx_module([piece.kernel], "sm_80")
    assert ".entry k_0(" in ptx and ".target sm_80" in ptx
    assert "%tid.x" in ptx and "%ctaid.x" in ptx and "%nctaid.x" in ptx
    assert "ld.global" in ptx and "st.global" in ptx
    assert piece.grid * piece.block >= 1000 and piece.block % 32 == 0


def test_compile_writes_a_deterministic_artifact(tmp_path):
    model = conv_family()
    outs = []
    for k in range(2):
        report = compile_model(model, tmp_path / f"build{k}" / "m", target="cuda")
        assert report.target == "cuda"
        outs.append(tmp_path / f"build{k}" / "m")
    files = sorted(p.name for p in outs[0].rglob("*") if p.is_file())
    assert files == sorted(["__init__.py", "_runtime.py", "manifest.json", "plan.json", "weights.bin", "model.ptx"])
    for name in ("plan.json", "kernels/model.ptx", "weights.bin", "__init__.py", "_runtime.py"):
        assert (outs[0] / name).read_bytes() == (outs[1] / name).read_bytes(), name
    plan = json.loads((outs[0] / "plan.json").read_text())
    assert plan["format"] == "torsh-gen-cuda-plan/1" and plan["arch"] == "sm_80" and plan["tf32"] is False
    ops = {s["op"] for s in plan["steps"]}
    assert ops == {"launch", "gemm"}
    kernels = set((outs[0] / "kernels" / "model.ptx").read_text().split(".entry ")[1:])
    assert len(kernels) >= len({s["kernel"] for s in plan["steps"] if s["op"] == "launch"})
    manifest = json.loads((outs[0] / "manifest.json").read_text())
    assert manifest["target"] == "cuda-sm80" and manifest["inputs"][0]["shape"] == [2, 3, 32, 32]


def test_sm90_target(tmp_path):
    compile_model(mlp_static(), tmp_path / "m", target="cuda-sm90")
    assert ".target sm_90" in (tmp_path / "m" / "kernels" / "model.ptx").read_text()


def mlp_static() -> onnx.ModelProto:
    model = mlp()
    for vi in list(model.graph.input) + list(model.graph.output):
        vi.type.tensor_type.shape.dim[0].dim_value = 4
    return model


def test_model_strings_stay_in_json(tmp_path):
    model = hostile_names()
    try:
        compile_model(model, tmp_path / "m", target="cuda")
    except (InputError, UnsupportedOpError) as exc:  # symbolic dims: bound below
        assert "--input-shape" in str(exc) or "lowering" in str(exc)
        return
    for code in ("__init__.py", "_runtime.py"):
        text = (tmp_path / "m" / code).read_text()
        for vi in model.graph.input:
            assert vi.name not in text


def test_symbolic_shapes_need_input_shape(tmp_path):
    with pytest.raises(InputError, match="--input-shape"):
        compile_model(mlp(), tmp_path / "m", target="cuda")
    assert not (tmp_path / "m").exists()


def test_unsupported_ops_listed_at_once(tmp_path):
    nodes = [helper.make_node("NonZero", ["x"], ["nz"]), helper.make_node("Unique", ["x"], ["u"])]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("nz", TensorProto.INT64, None), helper.make_tensor_value_info("u", TensorProto.FLOAT, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises((UnsupportedOpError, InputError)) as info:
        compile_model(model, tmp_path / "m", target="cuda")
    assert "NonZero" in str(info.value) and "Unique" in str(info.value)


def test_host_plan_gemm_semantics_transposed_and_batched():
    """GEMM steps as the runtime gives them to cuBLAS: Gemm(transA, transB) and a batched
    MatMul with a shared right operand, run through the host plan against onnxruntime."""
    rng = np.random.default_rng(3)
    a = rng.standard_normal((5, 7)).astype(np.float32)
    b = rng.standard_normal((6, 5)).astype(np.float32)
    nodes = [
        helper.make_node("Gemm", ["x", "b", "c"], ["g"], transA=1, transB=1, alpha=0.5, beta=2.0),
        helper.make_node("Reshape", ["g", "shape"], ["g3"]),
        helper.make_node("MatMul", ["g3", "w"], ["y"]),
    ]
    inits = [_init("b", b), _init("c", rng.standard_normal(6)), numpy_helper.from_array(np.array([1, 7, 6], np.int64), "shape"),
             _init("w", rng.standard_normal((6, 3)))]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [5, 7])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 7, 3])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    got = prepare(model, mode="compiled", target="cuda-host").run({"x": a})[0]
    np.testing.assert_allclose(got, ort_outputs(model, {"x": a})[0], rtol=1e-5, atol=1e-5)
    assert isinstance(prepare(model, mode="compiled", target="cuda-host").plan, HostPlan)


def test_tf32_is_a_cuda_option(tmp_path):
    compile_model(mlp_static(), tmp_path / "m", target="cuda", tf32=True)
    assert json.loads((tmp_path / "m" / "plan.json").read_text())["tf32"] is True
    with pytest.raises(InputError, match="--tf32"):
        compile_model(mlp_static(), tmp_path / "c", target="cpu", tf32=True)


TORCH_BUILT = ("mobilenetv2", "resnet18", "bert_encoder", "mlp", "resnet50")


@pytest.fixture(scope="module")
def torch_built(tmp_path_factory):
    """The PyTorch-built benchmark models (benchmarks/models.py), exported once."""
    pytest.importorskip("torch")
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "benchmarks"))
    from models import build_models

    folder = tmp_path_factory.mktemp("bench")
    return {m.name: m.onnx_path for m in build_models(folder, TORCH_BUILT)}


@pytest.mark.slow  # about 32 s of the default suite; the op-family and zoo tests cover the same kernels
@pytest.mark.parametrize("name", TORCH_BUILT)
def test_benchmark_models_assemble_and_run_on_host(name, torch_built, tmp_path):
    """Every kernel of the GPU benchmark suite assembles for sm_80 and sm_90, and its plan
    run on the host matches onnxruntime."""
    model = onnx.load(torch_built[name])
    plan = _pieces_of(model)
    if PTXAS is not None:
        for arch in ("sm_80", "sm_90"):
            ptx = tmp_path / f"{arch}.ptx"
            ptx.write_text(ptx_module(plan.kernels, arch))
            done = subprocess.run([PTXAS, f"-arch={arch}", "-o", str(tmp_path / "k.cubin"), str(ptx)], capture_output=True, text=True)
            assert done.returncode == 0, done.stderr[-2000:]
    rng = np.random.default_rng(0)
    vi = model.graph.input[0]
    shape = [d.dim_value for d in vi.type.tensor_type.shape.dim]
    if vi.type.tensor_type.elem_type == TensorProto.INT64:
        feeds = {vi.name: rng.integers(0, 1000, shape).astype(np.int64)}
    else:
        feeds = {vi.name: rng.standard_normal(shape).astype(np.float32)}
    got = HostPlan(plan).run(feeds)
    for ref, out in zip(ort_outputs(model, feeds), got.values()):
        assert np.abs(ref - out).max() <= 1e-4 * max(1.0, float(np.abs(ref).max()))


def test_validate_without_a_gpu_says_where_to_run(tmp_path):
    pytest.importorskip("onnxruntime")
    try:
        import cupy  # noqa: F401

        pytest.skip("CuPy is installed here")
    except ImportError:
        pass
    from torsh_gen.tools.validate import validate_model

    path = tmp_path / "m.onnx"
    onnx.save(mlp_static(), path)
    with pytest.raises(InputError, match="--artifact DIR"):
        validate_model(path, target="cuda")


@pytest.mark.parametrize("n", [7, 32, 100])
def test_warp_softmax_schedule_interp_jit_and_ptx(n):
    """One warp per row with butterfly exchanges: the interpreter (lanes in lockstep), the
    host JIT (a 32-lane vector) and numpy agree; the PTX shuffles over the full warp."""
    from torsh_gen.backends.cuda.rows import Rows, warp_softmax
    from torsh_gen.backends.llvm.jit import JitKernels

    rows = Rows(3, n, 1)
    kb = KernelBuilder("wsm")
    x = kb.buffer("x", "f32", 3 * n)
    y = kb.buffer("y", "f32", 3 * n, writable=True)
    warp_softmax(kb, rows, x, y, log_form=False)
    (piece,) = split_for_gpu(kb.build())
    assert piece.threads == 3 * 32 and piece.kernel.body[0].width == 32
    xs = np.random.default_rng(n).standard_normal(3 * n).astype(np.float32) * 4
    e = np.exp(xs.reshape(3, n) - xs.reshape(3, n).max(axis=1, keepdims=True))
    want = (e / e.sum(axis=1, keepdims=True)).reshape(-1)
    interp = np.zeros_like(xs)
    run_kernel(piece.kernel, {"x": xs, "y": interp})
    jit = np.zeros_like(xs)
    JitKernels([piece.kernel]).run(piece.kernel.name, {"x": xs, "y": jit})
    np.testing.assert_allclose(interp, want, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(jit, want, rtol=1e-5, atol=1e-7)
    ptx = ptx_module([piece.kernel], "sm_80")
    assert ptx.count("shfl.sync.bfly.b32") == 10 and ", 31, -1;" in ptx


@pytest.mark.parametrize("low", ["convert_fp16", "convert_bf16"])
def test_half_precision_plans_use_16_bit_gemms(low):
    """A graph the precision pass converted: 16-bit GEMMs (cuBLAS GemmEx on the GPU) and
    epilogues, run on the host within the 16-bit types' error."""
    from torsh_gen.backends.cuda.host import host_plan
    from torsh_gen.passes.pipelines import PIPELINES
    from torsh_gen.tools.compile import optimized_graph

    model = conv_family()
    plan = host_plan(optimized_graph(model, "cuda", passes=[low] + list(PIPELINES["O3"])))
    assert {s["dtype"] for s in plan.plan.steps if s["op"] == "gemm"} == {"f16" if low == "convert_fp16" else "bf16"}
    feeds = _feeds(model)
    ref = ort_outputs(model, feeds)[0]
    got = list(plan.run(feeds).values())[0]
    assert np.abs(ref - got).max() <= (2e-2 if low == "convert_fp16" else 5e-2) * np.abs(ref).max()


@pytest.mark.parametrize("causal,shape", [(0, (1, 4, 40, 24)), (1, (2, 2, 33, 40))])
def test_warp_attention_matches_onnxruntime(causal, shape):
    """Attention of short sequences, one warp per query row (scores, butterfly max and
    sum, probabilities broadcast by ShflIdx): the plan on the host against onnxruntime."""
    b, h, s, d = shape
    node = helper.make_node("Attention", ["q", "k", "v"], ["y"], is_causal=causal)
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [b, h, s, d]) for n in "qkv"]
    graph = helper.make_graph([node], "a", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, [b, h, s, d])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)])
    plan = _pieces_of(model)
    (step,) = plan.steps
    (kernel,) = plan.kernels
    assert kernel.body[0].kind == "gpu" and kernel.body[0].width == 32  # a warp per query row
    assert b * h * s * 32 <= step["grid"] * step["block"] < b * h * s * 32 + step["block"]
    assert "shfl.sync.idx.b32" in ptx_module(plan.kernels, "sm_80")
    rng = np.random.default_rng(causal)
    feeds = {n: rng.standard_normal((b, h, s, d)).astype(np.float32) for n in "qkv"}
    got = HostPlan(plan).run(feeds)["y"]
    want = ort_outputs(model, feeds)[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
