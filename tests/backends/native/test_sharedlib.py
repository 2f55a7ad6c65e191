"""The sharedlib packaging (x86_64-linux, aarch64-linux, host): build real packages and run
them through the ctypes wrapper, the checked C API, run_model (here and under qemu) and
bench_model, against onnxruntime; bad inputs, hostile tensor names, determinism."""

from __future__ import annotations

import ast
import ctypes
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto as TP
from onnx import helper, numpy_helper

from tests.backends.native.helpers import CTensor, import_package, make_model, ort_run, rand
from torsh_gen.tools.compile import compile_model

HAS_GCC = shutil.which("gcc") is not None
HAS_AARCH64 = (
    shutil.which("aarch64-linux-gnu-gcc") is not None and shutil.which("qemu-aarch64") is not None
)
QEMU = ["qemu-aarch64", "-L", "/usr/aarch64-linux-gnu"]
needs_gcc = pytest.mark.skipif(not HAS_GCC, reason="gcc is not installed (apt install gcc)")

NAME_A = 'a"b*/ \n\\ ??/ $x ${y} \u00e9'
NAME_C = '*/ #include <stdio.h>\n"); system("id'


def _mlp(batch: int = 2, n_in: int = 16, hidden: int = 32, n_out: int = 4) -> onnx.ModelProto:
    """Gemm → Relu → Gemm → Sigmoid, weights as initializers."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((n_in, hidden)).astype(np.float32), "W1"),
        numpy_helper.from_array(rng.standard_normal(hidden).astype(np.float32), "b1"),
        numpy_helper.from_array(rng.standard_normal((hidden, n_out)).astype(np.float32), "W2"),
        numpy_helper.from_array(rng.standard_normal(n_out).astype(np.float32), "b2"),
    ]
    nodes = [
        helper.make_node("Gemm", ["x", "W1", "b1"], ["h"]),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("Gemm", ["r", "W2", "b2"], ["logits"]),
        helper.make_node("Sigmoid", ["logits"], ["y"]),
    ]
    return make_model(
        nodes,
        [helper.make_tensor_value_info("x", TP.FLOAT, (batch, n_in))],
        [helper.make_tensor_value_info("y", TP.FLOAT, (batch, n_out))],
        inits,
    )


def _elementwise(shape: tuple[int, ...] = (64, 1024)) -> onnx.ModelProto:
    """Two inputs, a weight, two outputs; 65536 elements so the loops run on the pool."""
    w = numpy_helper.from_array(np.linspace(-1, 1, shape[-1], dtype=np.float32), "w")
    nodes = [
        helper.make_node("Mul", ["x", "w"], ["t"]),
        helper.make_node("Add", ["t", "y"], ["u"]),
        helper.make_node("Sigmoid", ["u"], ["s"]),
        helper.make_node("Abs", ["t"], ["m"]),
    ]
    vi = [helper.make_tensor_value_info(n, TP.FLOAT, shape) for n in ("x", "y", "s", "m")]
    return make_model(nodes, vi[:2], vi[2:], [w])


def _names_model(marker: Path) -> onnx.ModelProto:
    """Tensor names with quotes, newlines, comment ends, backslashes, `$` and a Python call."""
    b = f"__import__('os').system('touch {marker}')"
    nodes = [helper.make_node("Add", [NAME_A, b], ["s"]), helper.make_node("Tanh", ["s"], [NAME_C])]
    return make_model(
        nodes,
        [
            helper.make_tensor_value_info(NAME_A, TP.FLOAT, (3, 5)),
            helper.make_tensor_value_info(b, TP.FLOAT, (5,)),
        ],
        [helper.make_tensor_value_info(NAME_C, TP.FLOAT, (3, 5))],
    )


def _save_inputs(folder: Path, pkg: Path, feeds: dict[str, np.ndarray]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for entry in json.loads((pkg / "manifest.json").read_text())["inputs"]:
        np.save(folder / entry["file"], feeds[entry["name"]])


def _npy_bytes(array: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def _run_driver(pkg: Path, in_dir: Path, out_dir: Path, prefix: list[str] | None = None):
    return subprocess.run(
        [*(prefix or []), str(pkg / "run_model"), str(in_dir), str(out_dir)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _load_outputs(pkg: Path, out_dir: Path) -> dict[str, np.ndarray]:
    entries = json.loads((pkg / "manifest.json").read_text())["outputs"]
    return {e["name"]: np.load(out_dir / e["file"]) for e in entries}


def _compare(
    got: dict[str, np.ndarray], model: onnx.ModelProto, feeds: dict[str, np.ndarray]
) -> None:
    names = [o.name for o in model.graph.output]
    for name, exp in zip(names, ort_run(model, feeds)):
        np.testing.assert_allclose(got[name], exp, rtol=1e-4, atol=1e-4, err_msg=name)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Path]:
    """The packages several tests share, compiled once."""
    root = tmp_path_factory.mktemp("sharedlib")
    if not HAS_GCC:
        pytest.skip("gcc is not installed (apt install gcc)")
    out = {"root": root}
    compile_model(_mlp(), root / "mlp", target="x86_64-linux")
    compile_model(_elementwise(), root / "ew", target="x86_64-linux")
    return out | {"mlp": root / "mlp", "ew": root / "ew"}


def test_mlp_through_wrapper_and_driver(built) -> None:
    pkg, model = built["mlp"], _mlp()
    feeds = {"x": rand(2, 16, seed=3)}
    mod = import_package(pkg)
    _compare(mod.run(**feeds), model, feeds)
    with mod.Model(threads=2) as m:
        assert m.threads == 2
        _compare(m.run(x=feeds["x"].tolist()), model, feeds)  # lists are converted
        _compare(m.run(x=np.asfortranarray(feeds["x"])), model, feeds)  # made contiguous
    _save_inputs(built["root"] / "mlp_in", pkg, feeds)
    proc = _run_driver(pkg, built["root"] / "mlp_in", built["root"] / "mlp_out")
    assert proc.returncode == 0, proc.stderr
    _compare(_load_outputs(pkg, built["root"] / "mlp_out"), model, feeds)
    with open(built["root"] / "mlp_in" / "x.npy", "wb") as f:  # format version 2 headers too
        np.lib.format.write_array(f, feeds["x"], version=(2, 0))
    proc = _run_driver(pkg, built["root"] / "mlp_in", built["root"] / "mlp_out2")
    assert proc.returncode == 0, proc.stderr
    _compare(_load_outputs(pkg, built["root"] / "mlp_out2"), model, feeds)
    assert list(mod.run(**feeds)) == ["y"] and [i["name"] for i in mod.INPUTS] == ["x"]


def test_threaded_elementwise(built) -> None:
    pkg, model = built["ew"], _elementwise()
    mod = import_package(pkg)
    for threads in (1, 2, 3):
        with mod.Model(threads=threads) as m:
            for seed in range(3):
                feeds = {"x": rand(64, 1024, seed=seed), "y": rand(64, 1024, seed=seed + 10)}
                got = m.run(**feeds)
                assert list(got) == ["s", "m"]  # graph order
                _compare(got, model, feeds)


def test_one_model_shared_by_python_threads(built) -> None:
    from concurrent.futures import ThreadPoolExecutor

    mod, model = import_package(built["ew"]), _elementwise()
    feeds = [{"x": rand(64, 1024, seed=s), "y": rand(64, 1024, seed=s + 1)} for s in range(6)]
    with mod.Model(threads=2) as m, ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda f: m.run(**f), feeds * 2))
    for f, got in zip(feeds * 2, results):
        _compare(got, model, f)
    with mod.Model() as m:
        assert m.threads == len(os.sched_getaffinity(0))  # threads=0: one per core


def test_parts_of_late_workers_are_taken_over(built) -> None:
    """With more threads than cores, workers often wake late; a part nobody has started is
    then run by whichever thread is free (once). 300 calls, some right after pauses long
    enough for the workers to fall asleep, all equal the one-thread result bit for bit,
    and none hangs."""
    import threading
    import time

    mod, model = import_package(built["ew"]), _elementwise()
    feeds = {"x": rand(64, 1024, seed=5), "y": rand(64, 1024, seed=6)}
    with mod.Model(threads=1) as m:
        want = m.run(**feeds)
    _compare(want, model, feeds)
    failures: list[str] = []

    def calls() -> None:
        with mod.Model(threads=6) as m:
            for i in range(300):
                if i % 50 == 0:
                    time.sleep(0.02)
                got = m.run(**feeds)
                failures.extend(f"call {i}: {k}" for k in want if not np.array_equal(got[k], want[k]))

    worker = threading.Thread(target=calls, daemon=True)
    worker.start()
    worker.join(timeout=120)
    assert not worker.is_alive(), "the pool hung"
    assert not failures, failures[:5]


def test_mixed_element_types(tmp_path: Path) -> None:
    if not HAS_GCC:
        pytest.skip("gcc is not installed (apt install gcc)")
    vi = helper.make_tensor_value_info
    nodes = [
        helper.make_node("Greater", ["x", "y"], ["gt"]),
        helper.make_node("Cast", ["k"], ["kf"], to=TP.FLOAT),
        helper.make_node("Add", ["kf", "x"], ["s"]),
        helper.make_node("Cast", ["s"], ["si"], to=TP.INT64),
    ]
    ins = [vi("x", TP.FLOAT, (3, 4)), vi("y", TP.FLOAT, (3, 4)), vi("k", TP.INT32, (3, 4))]
    model = make_model(nodes, ins, [vi("gt", TP.BOOL, (3, 4)), vi("si", TP.INT64, (3, 4))])
    feeds = {"x": rand(3, 4, seed=1) * 9, "y": rand(3, 4, seed=2) * 9}
    feeds["k"] = np.arange(-6, 6, dtype=np.int32).reshape(3, 4)
    pkg = tmp_path / "mixed"
    compile_model(model, pkg, target="x86_64-linux")
    got = import_package(pkg).run(**feeds)
    assert got["gt"].dtype == np.bool_ and got["si"].dtype == np.int64
    _compare(got, model, feeds)
    _save_inputs(tmp_path / "in", pkg, feeds)
    proc = _run_driver(pkg, tmp_path / "in", tmp_path / "out")
    assert proc.returncode == 0, proc.stderr
    _compare(_load_outputs(pkg, tmp_path / "out"), model, feeds)
    np.save(tmp_path / "in" / "k.npy", feeds["k"].astype(np.int64))
    proc = _run_driver(pkg, tmp_path / "in", tmp_path / "out2")
    assert proc.returncode == 2 and "element type '<i8', the model expects '<i4'" in proc.stderr


def test_wrapper_rejects_bad_inputs(built) -> None:
    mod = import_package(built["mlp"])
    x = rand(2, 16)
    cases = [
        ({}, r"missing input\(s\) 'x'; the model takes 'x'"),
        ({"x": x, "z": x}, r"unknown input\(s\) 'z'"),
        ({"z": x}, r"missing input\(s\) 'x'; unknown input\(s\) 'z'"),
        (
            {"x": x.astype(np.float64)},
            r"input 'x': element type float64, the model expects float32",
        ),
        ({"x": x[:1]}, r"input 'x': shape \(1, 16\), the model expects \(2, 16\)"),
        ({"x": "text"}, r"input 'x': cannot convert to float32"),
    ]
    for feeds, message in cases:
        with pytest.raises(ValueError, match=message) as info:
            mod.run(**feeds)
        assert "\n" not in str(info.value)
    with pytest.raises(RuntimeError, match="cannot open the weights file"):
        mod.Model(weights=str(built["root"] / "missing.bin"))
    short = built["root"] / "short.bin"
    short.write_bytes(b"\0" * 8)
    with pytest.raises(RuntimeError, match="has 8 bytes, this model needs"):
        mod.Model(weights=str(short))
    with pytest.raises(RuntimeError, match="threads must be"):
        mod.Model(threads=-1)
    m = mod.Model()
    m.close()
    with pytest.raises(RuntimeError, match="closed"):
        m.run(x=x)


def _tensor(
    name: bytes,
    array: np.ndarray,
    dtype: int = 1,
    shape: tuple | None = None,
    nbytes: int | None = None,
):
    shape = array.shape if shape is None else shape
    dims = (ctypes.c_int64 * max(len(shape), 1))(*shape)
    t = CTensor(
        name, dtype, len(shape), dims, array.ctypes.data, array.nbytes if nbytes is None else nbytes
    )
    t._keep = (dims, array)
    return t


def _c_api(pkg: Path):
    lib = ctypes.CDLL(str(pkg / f"lib{pkg.name}.so"))
    p = pkg.name
    for fn, res, args in [
        ("create", ctypes.c_void_p, [ctypes.c_char_p, ctypes.c_int]),
        (
            "create_with_workspace",
            ctypes.c_void_p,
            [ctypes.c_char_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t],
        ),
        ("workspace_size", ctypes.c_size_t, []),
        ("last_error", ctypes.c_char_p, [ctypes.c_void_p]),
        ("destroy", None, [ctypes.c_void_p]),
        (
            "run_checked",
            ctypes.c_int,
            [
                ctypes.c_void_p,
                ctypes.POINTER(CTensor),
                ctypes.c_size_t,
                ctypes.POINTER(CTensor),
                ctypes.c_size_t,
            ],
        ),
    ]:
        getattr(lib, f"{p}_{fn}").restype = res
        getattr(lib, f"{p}_{fn}").argtypes = args
    return lib, p


def test_checked_c_api(built) -> None:
    pkg, model = built["mlp"], _mlp()
    lib, p = _c_api(pkg)
    weights = str(pkg / "weights.bin").encode()
    ws = np.zeros(getattr(lib, f"{p}_workspace_size")() + 3, dtype=np.uint8)
    assert not getattr(lib, f"{p}_create_with_workspace")(weights, 1, ws.ctypes.data, 3)
    assert b"the workspace has 3 bytes" in getattr(lib, f"{p}_last_error")(None)
    h = getattr(lib, f"{p}_create_with_workspace")(weights, 1, ws[3:].ctypes.data, ws.size - 3)
    assert h
    x, y = rand(2, 16, seed=5), np.zeros((2, 4), np.float32)
    run = getattr(lib, f"{p}_run_checked")

    def call(ins: list, outs: list) -> tuple[int, str]:
        rc = run(h, (CTensor * len(ins))(*ins), len(ins), (CTensor * len(outs))(*outs), len(outs))
        return rc, getattr(lib, f"{p}_last_error")(h).decode()

    assert call([_tensor(b"x", x)], [_tensor(b"y", y)]) == (0, "no error")
    _compare({"y": y}, model, {"x": x})
    bad = [
        ([_tensor(b"q", x)], [_tensor(b"y", y)], 2, "missing input 'x'"),
        ([_tensor(b"x", x), _tensor(b"x", x)], [_tensor(b"y", y)], 2, "got 2 inputs and 1 outputs"),
        (
            [_tensor(b"x", x, dtype=2)],
            [_tensor(b"y", y)],
            3,
            "input 'x' has element type float64, the model expects float32",
        ),
        (
            [_tensor(b"x", x, shape=(16, 2))],
            [_tensor(b"y", y)],
            4,
            "input 'x' has shape (16, 2), the model expects (2, 16)",
        ),
        (
            [_tensor(b"x", x, shape=(32,))],
            [_tensor(b"y", y)],
            4,
            "has shape (32,), the model expects (2, 16)",
        ),
        (
            [_tensor(b"x", x)],
            [_tensor(b"y", y, nbytes=16)],
            4,
            "output 'y' has 16 bytes of data, the model needs 32",
        ),
        ([_tensor(b"x", x)], [_tensor(None, y)], 1, "output 0 has a NULL name"),
    ]
    for ins, outs, code, message in bad:
        rc, err = call(ins, outs)
        assert (rc, message in err) == (code, True), (rc, err)
    getattr(lib, f"{p}_destroy")(h)


def test_driver_rejects_bad_files(built) -> None:
    pkg, root = built["mlp"], built["root"]
    good = rand(2, 16)
    cases = {
        "missing": (None, "cannot read input 0"),
        "shape": (good[:1], "shape (1, 16), the model expects (2, 16)"),
        "dtype": (good.astype(np.float64), "element type '<f8', the model expects '<f4'"),
        "fortran": (np.asfortranarray(rand(16, 2).T), "Fortran-ordered"),
        "garbage": (b"not numpy at all", "not a .npy file"),
        "truncated": (b"\x93NUMPY\x01\x00\xff\x00{'descr'", "malformed .npy header"),
    }
    for case, (data, message) in cases.items():
        in_dir = root / f"bad_{case}"
        in_dir.mkdir()
        if isinstance(data, bytes):
            (in_dir / "x.npy").write_bytes(data)
        elif data is not None:
            np.save(in_dir / "x.npy", data)
        proc = _run_driver(pkg, in_dir, root / f"bad_{case}_out")
        assert proc.returncode == 2, (case, proc.returncode, proc.stderr)
        assert message in proc.stderr and proc.stderr.count("\n") == 1, (case, proc.stderr)
    valid = _npy_bytes(good)
    for k, data in enumerate(
        [valid[:n] for n in (0, 9, 11, 60, 127, len(valid) - 1)] + [valid + b"\0"]
    ):
        in_dir = root / f"cut_{k}"
        in_dir.mkdir()
        (in_dir / "x.npy").write_bytes(data)
        proc = _run_driver(pkg, in_dir, root / f"cut_{k}_out")
        assert proc.returncode == 2 and proc.stderr.startswith("run_model: "), (
            k,
            proc.returncode,
            proc.stderr,
        )
    usage = subprocess.run([str(pkg / "run_model")], capture_output=True, text=True)
    assert usage.returncode == 2 and "usage:" in usage.stderr


def test_bench_driver_reports_latency(built) -> None:
    proc = subprocess.run(
        [str(built["mlp"] / "bench_model"), "2000", "1"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    stats = dict(kv.split("=") for kv in proc.stdout.split())
    assert stats["iterations"] == "2000" and stats["threads"] == "1"
    assert 0 < float(stats["min_us"]) <= float(stats["median_us"]) <= float(stats["p90_us"])
    bad = subprocess.run(
        [str(built["mlp"] / "bench_model"), "lots"], capture_output=True, text=True
    )
    assert bad.returncode == 2 and "usage:" in bad.stderr


def test_library_imports_only_libc(built) -> None:
    readelf = shutil.which("readelf")
    if readelf is None:
        pytest.skip("readelf is not installed (apt install binutils)")
    lib = built["mlp"] / "libmlp.so"
    dynamic = subprocess.run(
        [readelf, "-d", str(lib)], capture_output=True, text=True, check=True
    ).stdout
    assert re.findall(r"\(NEEDED\)\s+Shared library: \[(.+?)\]", dynamic) == ["libc.so.6"]
    syms = subprocess.run(
        [readelf, "--dyn-syms", "-W", str(lib)], capture_output=True, text=True, check=True
    ).stdout
    exported = {
        line.split()[-1] for line in syms.splitlines() if " FUNC " in line and " UND " not in line
    }
    assert exported == {
        f"mlp_{n}"
        for n in (
            "create",
            "create_with_workspace",
            "workspace_size",
            "run",
            "run_checked",
            "last_error",
            "cpu_variant",
            "num_threads",
            "input_info",
            "output_info",
            "output_shape",
            "destroy",
        )
    }
    assert "tg_parallel_for" not in syms and "graph_run" not in syms


def test_embedded_weights_and_determinism(built, tmp_path: Path) -> None:
    model, feeds = _mlp(), {"x": rand(2, 16, seed=9)}
    compile_model(model, tmp_path / "a" / "mlp", target="x86_64-linux", embed_weights=True)
    compile_model(model, tmp_path / "b" / "mlp", target="x86_64-linux", embed_weights=True)
    a, b = tmp_path / "a" / "mlp", tmp_path / "b" / "mlp"
    files = sorted(str(p.relative_to(a)) for p in a.rglob("*") if p.is_file())
    assert files == sorted(str(p.relative_to(b)) for p in b.rglob("*") if p.is_file())
    for name in files:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert (
        not (a / "weights.bin").exists()
        and "weights" not in json.loads((a / "manifest.json").read_text())["files"]
    )
    _compare(import_package(a).run(**feeds), model, feeds)
    _save_inputs(tmp_path / "in", a, feeds)
    shutil.move(str(a), tmp_path / "moved")  # rpath $ORIGIN, weights inside: the folder moves whole
    proc = _run_driver(tmp_path / "moved", tmp_path / "in", tmp_path / "out")
    assert proc.returncode == 0, proc.stderr
    _compare(_load_outputs(tmp_path / "moved", tmp_path / "out"), model, feeds)
    # the default (weights.bin) build is deterministic too: same bytes as the shared one
    compile_model(model, tmp_path / "c" / "mlp", target="x86_64-linux")
    for name in ("libmlp.so", "run_model", "mlp.h", "__init__.py", "weights.bin", "manifest.json"):
        assert (tmp_path / "c" / "mlp" / name).read_bytes() == (built["mlp"] / name).read_bytes(), (
            name
        )


def test_hostile_tensor_names(tmp_path: Path) -> None:
    if not HAS_GCC:
        pytest.skip("gcc is not installed (apt install gcc)")
    marker = tmp_path / "PWNED"
    model = _names_model(marker)
    name_b = model.graph.input[1].name
    pkg = tmp_path / "names"
    compile_model(model, pkg, target="x86_64-linux")
    feeds = {NAME_A: rand(3, 5, seed=1), name_b: rand(5, seed=2)}
    mod = import_package(pkg)
    got = mod.run(**feeds)
    assert list(got) == [NAME_C]
    _compare(got, model, feeds)
    with pytest.raises(ValueError, match=r"^input 'a\"b\*/ \\n\\\\ .*shape \(5,\)") as info:
        mod.run(**{NAME_A: rand(5), name_b: rand(5)})
    assert "\n" not in str(info.value)
    _save_inputs(tmp_path / "in", pkg, feeds)
    proc = _run_driver(pkg, tmp_path / "in", tmp_path / "out")
    assert proc.returncode == 0, proc.stderr
    _compare(_load_outputs(pkg, tmp_path / "out"), model, feeds)
    # names reach C only as escaped literals, comments only as a safe subset
    for path in (pkg / "names.h", pkg / "src" / "names_runtime.c", pkg / "src" / "run_model.c"):
        text = path.read_text()
        for name in (NAME_A, name_b, NAME_C):
            assert name not in text and "*/ #include" not in text
        comments = re.findall(r"/\*.*?\*/", text, flags=re.S)
        assert all("'os'" not in c and "#include <stdio.h>" not in c for c in comments)
    header_check = subprocess.run(
        ["gcc", "-fsyntax-only", "-Wall", "-Werror", "-x", "c", str(pkg / "names.h")],
        capture_output=True,
        text=True,
    )
    assert header_check.returncode == 0, header_check.stderr
    # the checked C API matches the exact (escaped) names
    lib, p = _c_api(pkg)
    h = lib.names_create(str(pkg / "weights.bin").encode(), 1)
    out = np.zeros((3, 5), np.float32)
    ins = (CTensor * 2)(
        _tensor(name_b.encode(), feeds[name_b]), _tensor(NAME_A.encode(), feeds[NAME_A])
    )
    assert lib.names_run_checked(h, ins, 2, (CTensor * 1)(_tensor(NAME_C.encode(), out)), 1) == 0
    _compare({NAME_C: out}, model, feeds)
    ins[1] = _tensor(NAME_A.encode(), feeds[NAME_A], shape=(5, 3))
    assert lib.names_run_checked(h, ins, 2, (CTensor * 1)(_tensor(NAME_C.encode(), out)), 1) == 4
    assert "\n" not in lib.names_last_error(h).decode()
    lib.names_destroy(h)
    # Python: names only as string constants
    tree = ast.parse((pkg / "__init__.py").read_text())
    strings = {
        n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
    }
    assert {NAME_A, name_b, NAME_C} <= strings
    assert not any(isinstance(n, ast.Name) and n.id == "__import__" for n in ast.walk(tree))
    assert not marker.exists()


@pytest.mark.skipif(
    not HAS_AARCH64, reason="needs aarch64-linux-gnu-gcc and qemu-aarch64 (make toolchains)"
)
def test_aarch64_under_qemu(tmp_path: Path) -> None:
    model = _mlp()
    feeds = {"x": rand(2, 16, seed=4)}
    pkg = tmp_path / "mlp_arm"
    compile_model(model, pkg, target="aarch64-linux")
    assert json.loads((pkg / "manifest.json").read_text())["triple"].startswith("aarch64")
    _save_inputs(tmp_path / "in", pkg, feeds)
    proc = _run_driver(pkg, tmp_path / "in", tmp_path / "out", QEMU)
    assert proc.returncode == 0, proc.stderr
    _compare(_load_outputs(pkg, tmp_path / "out"), model, feeds)
    np.save(tmp_path / "in" / "x.npy", rand(3, 16))
    proc = _run_driver(pkg, tmp_path / "in", tmp_path / "out2", QEMU)
    assert proc.returncode == 2 and "shape (3, 16), the model expects (2, 16)" in proc.stderr
    bench = subprocess.run(
        [*QEMU, str(pkg / "bench_model"), "50", "2"], capture_output=True, text=True, timeout=60
    )
    assert bench.returncode == 0 and "median_us=" in bench.stdout, bench.stderr


@needs_gcc
def test_host_target(tmp_path: Path) -> None:
    model = _elementwise((4, 100))
    feeds = {"x": rand(4, 100, seed=1), "y": rand(4, 100, seed=2)}
    compile_model(model, tmp_path / "ew_host", target="host")
    assert json.loads((tmp_path / "ew_host" / "manifest.json").read_text())["target"] == "host"
    _compare(import_package(tmp_path / "ew_host").run(**feeds), model, feeds)


def test_option_and_name_errors(tmp_path: Path) -> None:
    from torsh_gen.errors import InputError, TorshGenError

    with pytest.raises(InputError, match="--embed-weights applies to native targets"):
        compile_model(_mlp(), tmp_path / "cpu_pkg", target="cpu", embed_weights=True)
    with pytest.raises(TorshGenError, match="would define C functions libc already has"):
        compile_model(_mlp(), tmp_path / "pthread", target="x86_64-linux")
    assert not (tmp_path / "pthread").exists()
