"""The CUDA artifact's runtime (templates/cuda) on a machine without a GPU or CuPy.

The templates are rendered into a package beside a hand-made plan.json; the tests check
what needs no GPU: the generated files are black-clean Python, the package imports
without CuPy, ``Model()`` says what is missing, plans are checked, inputs are validated,
and the row-major to column-major cuBLAS translation is right (checked by emulating
cuBLAS's column-major GEMM in numpy). tests/backends/cuda/gpu_smoke.py runs it on a GPU.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace

import jinja2
import numpy as np
import pytest

from torsh_gen.backends.python.formatting import format_code

TEMPLATES = Path(__file__).resolve().parents[3] / "templates" / "cuda"
VALUES = {"P": "tiny_cuda_model", "version": "0.0.test", "target": "cuda-sm80"}


def render(name: str) -> str:
    """A template rendered the way the backend renders templates (StrictUndefined)."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )
    return env.get_template(name).render(**VALUES)


def ref(mem: str, index: int = 0, offset: int = 0) -> dict:
    return {"mem": mem, "index": index, "offset": offset}


def tiny_plan() -> dict:
    """relu(x) into the workspace, then y = relu(x) @ W with W (3 x 2) in the weights."""
    return {
        "format": "torsh-gen-cuda-plan/1",
        "arch": "sm_80",
        "tf32": False,
        "inputs": [{"name": "x", "dtype": "float32", "shape": [2, 3]}],
        "outputs": [{"name": "y", "dtype": "float32", "shape": [2, 2]}],
        "weights_bytes": 64,
        "workspace_bytes": 256,
        "modules": ["kernels/x.ptx"],
        "steps": [
            {
                "op": "launch",
                "module": 0,
                "kernel": "relu6",
                "grid": 1,
                "block": 32,
                "args": [ref("input"), ref("workspace")],
                "node": "relu_0",
            },
            {
                "op": "gemm",
                "dtype": "f32",
                "m": 2,
                "n": 2,
                "k": 3,
                "batch": 1,
                "trans_a": False,
                "trans_b": False,
                "a": ref("workspace"),
                "lda": 3,
                "stride_a": 0,
                "b": ref("weights"),
                "ldb": 2,
                "stride_b": 0,
                "c": ref("output"),
                "ldc": 2,
                "stride_c": 0,
                "alpha": 1.0,
                "beta": 0.0,
                "node": "matmul_1",
            },
        ],
    }


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    """The rendered artifact, imported (and forgotten again after the module's tests)."""
    root = tmp_path_factory.mktemp("cuda_artifact")
    folder = root / VALUES["P"]
    (folder / "kernels").mkdir(parents=True)
    (folder / "__init__.py").write_text(render("__init__.py.j2"))
    (folder / "_runtime.py").write_text(render("_runtime.py.j2"))
    (folder / "plan.json").write_text(json.dumps(tiny_plan(), indent=1))
    (folder / "manifest.json").write_text(json.dumps({"target": VALUES["target"]}))
    (folder / "weights.bin").write_bytes(np.arange(16, dtype=np.float32).tobytes())
    (folder / "kernels" / "x.ptx").write_text(".version 7.8\n.target sm_80\n")
    sys.path.insert(0, str(root))
    try:
        yield importlib.import_module(VALUES["P"])
    finally:
        sys.path.remove(str(root))
        for name in [m for m in sys.modules if m.split(".")[0] == VALUES["P"]]:
            del sys.modules[name]


@pytest.fixture(scope="module")
def rt(package: ModuleType) -> ModuleType:
    """The artifact's _runtime module."""
    return package._runtime


@pytest.mark.parametrize("name", ["__init__.py.j2", "_runtime.py.j2"])
def test_rendered_files_are_black_clean_and_deterministic(name: str) -> None:
    text = render(name)
    compile(text, name, "exec")
    assert format_code(text) == text
    assert text == render(name)
    assert "{{" not in text and "{%" not in text


def test_import_needs_no_cupy_and_reads_the_signature_from_plan_json(package) -> None:
    assert "cupy" not in sys.modules or sys.modules["cupy"] is None
    assert package.INPUTS == ({"name": "x", "dtype": "float32", "shape": (2, 3)},)
    assert package.OUTPUTS == ({"name": "y", "dtype": "float32", "shape": (2, 2)},)
    assert set(package.__all__) == {"INPUTS", "OUTPUTS", "Model", "run", "run_device"}


def test_model_without_cupy_says_how_to_install_it(package, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "cupy", None)  # import cupy fails, as without CuPy
    with pytest.raises(RuntimeError, match=r"needs CuPy: pip install cupy-cuda12x .*cupy-cuda13x"):
        package.Model()
    with pytest.raises(RuntimeError, match="CuPy"):
        package.run(x=np.zeros((2, 3), np.float32))


def _fake_cupy(count: int, capability: str) -> SimpleNamespace:
    runtime = SimpleNamespace(
        getDeviceCount=lambda: count,
        getDeviceProperties=lambda d: {"name": b"Fake GPU"},
    )
    device = lambda d: SimpleNamespace(compute_capability=capability)  # noqa: E731
    return SimpleNamespace(cuda=SimpleNamespace(runtime=runtime, Device=device))


def test_gpu_checks(rt) -> None:
    def no_gpu() -> int:
        raise RuntimeError("cudaErrorNoDevice: no CUDA-capable device is detected")

    cp = _fake_cupy(1, "75")
    cp.cuda.runtime.getDeviceCount = no_gpu
    with pytest.raises(RuntimeError, match="no usable CUDA GPU: cudaErrorNoDevice"):
        rt.check_device(cp, 0, "sm_80")
    with pytest.raises(RuntimeError, match=r"sm_80 \(compute capability 8.0 or newer\).*7.5"):
        rt.check_device(_fake_cupy(1, "75"), 0, "sm_80")
    with pytest.raises(RuntimeError, match="no CUDA GPU 1; this machine has 1"):
        rt.check_device(_fake_cupy(1, "90"), 1, "sm_80")
    with pytest.raises(RuntimeError, match="sm_90a"):
        rt.check_device(_fake_cupy(1, "100"), 0, "sm_90a")
    rt.check_device(_fake_cupy(1, "90"), 0, "sm_80")
    rt.check_device(_fake_cupy(2, "80"), 1, "sm_80")


def test_cublas_is_looked_up_by_soname_then_paths(rt, monkeypatch, tmp_path) -> None:
    assert rt.cublas_candidates(12)[:3] == ["libcublas.so.12", "libcublas.so.13", "libcublas.so"]
    assert rt.cublas_candidates(13)[0] == "libcublas.so.13"
    (tmp_path / "lib64").mkdir()
    (tmp_path / "lib64" / "libcublas.so.13").write_bytes(b"not a library")
    monkeypatch.setenv("CUDA_PATH", str(tmp_path))
    path = str(tmp_path / "lib64" / "libcublas.so.13")
    assert path in rt.cublas_candidates(13)
    rt.load_cublas.cache_clear()
    try:
        rt.load_cublas(13)
    except RuntimeError as exc:  # this machine has no cuBLAS: every place is named
        assert "cannot load cuBLAS" in str(exc) and path in str(exc)
    rt.load_cublas.cache_clear()


# ---- plans ---------------------------------------------------------------------------


def test_the_tiny_plan_is_accepted(rt) -> None:
    rt.check_plan(tiny_plan())


#: a cuBLASLt epilogue offer: bias from the weights, no residual, ReLU
LT = {"bias": ref("weights", 0, 48), "residual": None, "beta": 0.0, "relu": True}


def test_a_plan_with_a_cublaslt_epilogue_offer_is_accepted(rt) -> None:
    plan = tiny_plan()
    plan["steps"][1]["lt"] = dict(LT)
    plan["steps"].append({**plan["steps"][0], "optional": True, "node": "matmul_1"})
    rt.check_plan(plan)
    assert rt.LT_EPILOGUE[(True, True)] == 6 and rt.LT_EPILOGUE[(False, False)] == 1  # cublasLt.h


def test_cublaslt_is_looked_up_like_cublas(rt, monkeypatch) -> None:
    """libcublasLt by soname (CuPy's CUDA first); not found: None, epilogues stay kernels."""
    names = rt.cublas_candidates(12, "cublasLt")
    assert names[:2] == ["libcublasLt.so.12", "libcublasLt.so.13"]
    rt.load_cublaslt.cache_clear()
    monkeypatch.setattr(rt, "cublas_candidates", lambda major, lib="cublas": ["/nonexistent/libcublasLt.so"])
    try:
        assert rt.load_cublaslt(13) is None
    finally:
        rt.load_cublaslt.cache_clear()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda p: p.update(arch="80"), "arch"),
        (lambda p: p["inputs"][0].update(shape=["batch", 3]), "fixed shapes"),
        (lambda p: p["inputs"][0].update(dtype="float128"), "unknown element type"),
        (lambda p: p.update(modules=["../evil.ptx"]), "relative paths"),
        (lambda p: p["steps"][0]["args"][1].update(offset=257), "outside its memory"),
        (lambda p: p["steps"][0]["args"][0].update(index=1), "index"),
        (lambda p: p["steps"][0].update(block=2048), "block"),
        (lambda p: p["steps"][1].update(k=20, lda=20), "step 1 .*'matmul_1'.*outside"),
        (lambda p: p["steps"][1].update(ldb=1), "ldb"),
        (lambda p: p["steps"][1].update(dtype="f64"), "gemm dtype"),
        (lambda p: p["steps"][1].update(op="conv"), "unknown op"),
        (lambda p: p["steps"][0].update(optional="yes"), "optional must be"),
        (lambda p: p["steps"][1].update(lt={"bias": None, "residual": None, "beta": 0.0}), "cuBLASLt"),
        (lambda p: p["steps"][1].update(lt={**LT, "beta": "1"}), "beta must be"),
        (lambda p: p["steps"][1].update(lt={**LT, "bias": ref("weights", 0, 65)}), "outside its memory"),
    ],
)
def test_bad_plans_are_refused(rt, change, message) -> None:
    plan = tiny_plan()
    change(plan)
    with pytest.raises(rt.PlanError, match=message):
        rt.check_plan(plan)


def test_load_plan_checks_the_format(rt, tmp_path) -> None:
    (tmp_path / "plan.json").write_text(json.dumps({**tiny_plan(), "format": "other/2"}))
    with pytest.raises(rt.PlanError, match="format 'other/2'"):
        rt.load_plan(str(tmp_path))


# ---- the cuBLAS translation ----------------------------------------------------------


def _colmajor(offset: int, rows: int, cols: int, ld: int) -> np.ndarray:
    """Indices of a column-major rows x cols matrix at ``offset`` with leading dimension ld."""
    return offset + np.arange(rows)[:, None] + np.arange(cols)[None, :] * ld


def _rowmajor(offset: int, rows: int, cols: int, ld: int) -> np.ndarray:
    return offset + np.arange(rows)[:, None] * ld + np.arange(cols)[None, :]


def emulate_cublas(g, a_buf, b_buf, c_buf, alpha: float, beta: float) -> None:
    """cuBLAS's strided batched GEMM on flat buffers, column major, as cuBLAS defines it."""
    for i in range(g.batch):
        rows_a, cols_a = (g.m, g.k) if g.transa == 0 else (g.k, g.m)
        rows_b, cols_b = (g.k, g.n) if g.transb == 0 else (g.n, g.k)
        a = a_buf[_colmajor(i * g.stride_a, rows_a, cols_a, g.lda)]
        b = b_buf[_colmajor(i * g.stride_b, rows_b, cols_b, g.ldb)]
        a, b = (a if g.transa == 0 else a.T), (b if g.transb == 0 else b.T)
        c_idx = _colmajor(i * g.stride_c, g.m, g.n, g.ldc)
        c_buf[c_idx] = alpha * (a @ b) + beta * c_buf[c_idx]


GEMMS = [  # m, n, k, batch, trans_a, trans_b, lda pad, ldb pad, ldc pad, stride_a 0?, stride_b 0?
    (4, 3, 5, 1, False, False, 0, 0, 0, False, False),
    (4, 3, 5, 1, True, False, 2, 0, 1, False, False),
    (4, 3, 5, 1, False, True, 0, 3, 0, False, False),
    (2, 6, 3, 1, True, True, 1, 1, 2, False, False),
    (4, 3, 5, 3, False, True, 0, 0, 0, False, True),  # one weight matrix for every image
    (3, 4, 2, 2, True, False, 1, 2, 1, True, False),
]


@pytest.mark.parametrize("case", GEMMS)
def test_cublas_args_compute_the_row_major_product(rt, case) -> None:
    m, n, k, batch, trans_a, trans_b, pad_a, pad_b, pad_c, shared_a, shared_b = case
    rng = np.random.default_rng(len(GEMMS))
    stored_a = (k, m) if trans_a else (m, k)
    stored_b = (n, k) if trans_b else (k, n)
    lda, ldb, ldc = stored_a[1] + pad_a, stored_b[1] + pad_b, n + pad_c
    stride_a = 0 if shared_a else stored_a[0] * lda + 1
    stride_b = 0 if shared_b else stored_b[0] * ldb + 2
    stride_c = m * ldc + 1
    a_buf = rng.standard_normal(stride_a * (batch - 1) + stored_a[0] * lda)
    b_buf = rng.standard_normal(stride_b * (batch - 1) + stored_b[0] * ldb)
    c_buf = rng.standard_normal(stride_c * (batch - 1) + m * ldc)
    step = dict(m=m, n=n, k=k, batch=batch, trans_a=trans_a, trans_b=trans_b, lda=lda, ldb=ldb)
    step.update(ldc=ldc, stride_a=stride_a, stride_b=stride_b, stride_c=stride_c)
    alpha, beta = 0.5, 0.25
    expected = c_buf.copy()
    for i in range(batch):
        a = a_buf[_rowmajor(i * stride_a, *stored_a, lda)]
        b = b_buf[_rowmajor(i * stride_b, *stored_b, ldb)]
        c_idx = _rowmajor(i * stride_c, m, n, ldc)
        op_a, op_b = (a.T if trans_a else a), (b.T if trans_b else b)
        expected[c_idx] = alpha * op_a @ op_b + beta * expected[c_idx]
    g = rt.cublas_args(step)
    assert (g.m, g.n, g.k, g.batch) == (n, m, k, batch)
    assert (g.lda, g.ldb, g.ldc) == (ldb, lda, ldc)
    assert (g.stride_a, g.stride_b, g.stride_c) == (stride_b, stride_a, stride_c)
    emulate_cublas(g, b_buf, a_buf, c_buf, alpha, beta)  # cuBLAS's A is the plan's B
    np.testing.assert_allclose(c_buf, expected, rtol=1e-12, atol=1e-12)  # padding untouched


# ---- inputs --------------------------------------------------------------------------


def test_input_names_are_checked_in_one_message(rt) -> None:
    names = ("x", "mask")
    rt.check_names({"x": 1, "mask": 2}, names)
    with pytest.raises(
        ValueError, match=r"^missing input\(s\) 'mask'; the model takes 'x', 'mask'$"
    ):
        rt.check_names({"x": 1}, names)
    message = r"^missing input\(s\) 'mask'; unknown input\(s\) 'y'; the model takes 'x', 'mask'$"
    with pytest.raises(ValueError, match=message):
        rt.check_names({"x": 1, "y": 2}, names)
    with pytest.raises(ValueError, match=r"unknown input\(s\) 'z'; the model takes no inputs"):
        rt.check_names({"z": 0}, ())


def test_element_types_and_shapes_are_checked(rt) -> None:
    f32 = np.dtype(np.float32)
    with pytest.raises(
        ValueError, match="^input 'x': element type float64, the model expects float32$"
    ):
        rt.host_input("x", f32, (2, 3), np.zeros((2, 3)))
    with pytest.raises(
        ValueError, match=r"^input 'x': shape \(3, 2\), the model expects \(2, 3\)$"
    ):
        rt.host_input("x", f32, (2, 3), np.zeros((3, 2), np.float32))
    with pytest.raises(ValueError, match="shape"):
        rt.check_meta("x", f32, (2, 3), np.dtype(np.float32), (2, 3, 1))


def test_host_inputs_become_contiguous_arrays(rt) -> None:
    f32 = np.dtype(np.float32)
    strided = np.arange(12, dtype=np.float32).reshape(3, 4)[:, ::2]
    out = rt.host_input("x", f32, (3, 2), strided)
    assert out.flags.c_contiguous and np.array_equal(out, strided)
    assert rt.host_input("x", f32, (2,), [1, 2]).dtype == f32
    with pytest.raises(ValueError, match="cannot convert"):
        rt.host_input("x", f32, (2,), ["a", "b"])


def test_gpu_arrays_are_sent_to_run_device(rt) -> None:
    class FakeCuda:
        __cuda_array_interface__ = {"shape": (2,), "typestr": "<f4", "data": (0, False)}

    class FakeDLPack:
        def __init__(self, kind: int) -> None:
            self.kind = kind

        def __dlpack_device__(self) -> tuple[int, int]:
            return (self.kind, 0)

    assert rt.is_device_array(FakeCuda()) and rt.is_device_array(FakeDLPack(2))
    assert not rt.is_device_array(FakeDLPack(1)) and not rt.is_device_array(np.zeros(2))
    with pytest.raises(ValueError, match=r"is a GPU array: pass GPU arrays to run_device\(\)"):
        rt.host_input("x", np.dtype(np.float32), (2,), FakeCuda())


def test_bfloat16_needs_ml_dtypes_only_when_used(rt) -> None:
    assert rt.itemsize("bfloat16") == 2
    assert rt.numpy_dtype("float16") == np.float16
    try:
        import ml_dtypes
    except ImportError:
        with pytest.raises(RuntimeError, match="pip install ml_dtypes"):
            rt.numpy_dtype("bfloat16")
    else:
        assert rt.numpy_dtype("bfloat16") == np.dtype(ml_dtypes.bfloat16)


def test_fused_epilogues_reports_the_executors_cublaslt_use(package) -> None:
    """Model.fused_epilogues: the GEMMs that took a cuBLASLt epilogue, and the reasons of
    those that could not (a copy: the caller cannot change the executor's list)."""
    from types import SimpleNamespace

    model = object.__new__(package.Model)
    reasons = ["step 3 (node 'fc'): no cuBLASLt algorithm (status 15, 0 found)"]
    model._executor = SimpleNamespace(lt_fused=2, lt_declined=reasons, close=lambda: None)
    fused, declined = model.fused_epilogues
    assert (fused, declined) == (2, reasons) and declined is not reasons
