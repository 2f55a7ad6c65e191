"""Outputs whose size depends on the data (NonZero, Compress with a run-time condition,
Unique, NonMaxSuppression) on the native targets: each op in process (JIT and kernel-IR
interpreter) against onnxruntime, empty results included; one package with all of them
through the ctypes wrapper, the C API's ``output_shape`` and ``run_checked``, the
``run_model`` driver and the manifest; wasm32 under Node and aarch64 under qemu; and the
refusal when such a tensor feeds another node."""

from __future__ import annotations

import ctypes
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto as TP
from onnx import helper

from tests.backends.native.helpers import (
    CTensor,
    import_package,
    interpret_program,
    lower_model,
    make_model,
    ort_run,
)
from torsh_gen.backends.llvm.jit import JitProgram
from torsh_gen.errors import UnsupportedOpError

HAS_GCC = shutil.which("gcc") is not None
NODE = shutil.which("node")
HAS_WASM = NODE is not None and shutil.which("wasm-ld") is not None
HAS_AARCH64 = (
    shutil.which("aarch64-linux-gnu-gcc") is not None and shutil.which("qemu-aarch64") is not None
)
QEMU = ["qemu-aarch64", "-L", "/usr/aarch64-linux-gnu"]


def _vi(name: str, dtype: int, shape: list | None) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, dtype, shape)


def _check(
    model: onnx.ModelProto, feeds: dict[str, np.ndarray], interpret: bool = True
) -> dict[str, np.ndarray]:
    """JIT (and interpreter) outputs equal to onnxruntime's, shapes and dtypes included."""
    program = lower_model(model)
    expected = ort_run(model, feeds)
    got = JitProgram(program).run(feeds)
    runs = [("JIT", [got[s.name] for s in program.outputs])]
    if interpret:
        runs.append(("interpreter", interpret_program(program, feeds)))
    for how, outs in runs:
        for spec, out, exp in zip(program.outputs, outs, expected):
            assert (
                out.dtype == exp.dtype and out.shape == exp.shape
            ), f"{how} {spec.name}: {out.shape} vs {exp.shape}"
            np.testing.assert_array_equal(out, exp, err_msg=f"{how} output {spec.name}")
    return got


# --------------------------------------------------------------------------- the ops in process
@pytest.mark.parametrize(
    "x",
    [
        np.array([[0, 1.5, 0, -2], [np.nan, 0, 0, 3], [0, 0, 0, 0]], np.float32),
        np.zeros((2, 3, 4), np.float32),  # no non-zero element: [3, 0]
        np.array([[True, False], [False, True]]),
        np.arange(-3, 9, dtype=np.int64).reshape(2, 2, 3) % 3,
    ],
    ids=["float-nan", "all-zero", "bool", "int64-3d"],
)
def test_nonzero(x: np.ndarray) -> None:
    dtype = onnx.helper.np_dtype_to_tensor_dtype(x.dtype)
    model = make_model(
        [helper.make_node("NonZero", ["x"], ["y"])],
        [_vi("x", dtype, list(x.shape))],
        [_vi("y", TP.INT64, None)],
        opset=13,
    )
    program = lower_model(model)
    spec = program.outputs[0]
    assert spec.max_shape == (x.ndim, x.size) and spec.extent is not None and spec.dims[0] == x.ndim
    _check(model, {"x": x})


@pytest.mark.parametrize(
    ("axis", "cond"),
    [
        (0, [True, False, True]),
        (1, [False, True, True, False, True, True]),  # longer than the axis: the rest is ignored
        (-1, [True, False]),  # shorter: the rest of the axis is dropped
        (None, [1, 0, 0, 1, 1, 0, 1]),
        (0, [False, False, False]),  # nothing kept: [0, 5]
    ],
)
def test_compress_runtime_condition(axis: int | None, cond: list) -> None:
    x = np.arange(15, dtype=np.float32).reshape(3, 5) - 4
    c = np.array(cond, dtype=bool)
    attrs = {} if axis is None else {"axis": axis}
    model = make_model(
        [helper.make_node("Compress", ["x", "c"], ["y"], **attrs)],
        [_vi("x", TP.FLOAT, [3, 5]), _vi("c", TP.BOOL, [len(cond)])],
        [_vi("y", TP.FLOAT, None)],
        opset=13,
    )
    _check(model, {"x": x, "c": c})


def test_compress_constant_condition_stays_static() -> None:
    """A constant condition gives a static output (the gather of ``matrix.py``), no extent."""
    model = make_model(
        [helper.make_node("Compress", ["x", "c"], ["y"], axis=1)],
        [_vi("x", TP.FLOAT, [3, 5])],
        [_vi("y", TP.FLOAT, None)],
        [helper.make_tensor("c", TP.BOOL, [5], [1, 0, 1, 1, 0])],
        opset=13,
    )
    program = lower_model(model)
    assert program.outputs[0].shape == (3, 3) and program.outputs[0].extent is None
    _check(model, {"x": np.arange(15, dtype=np.float32).reshape(3, 5)}, interpret=False)


def _unique_model(shape: list[int], dtype: int, **attrs) -> onnx.ModelProto:
    outs = ["y", "indices", "inverse", "counts"]
    types = [dtype, TP.INT64, TP.INT64, TP.INT64]
    return make_model(
        [helper.make_node("Unique", ["x"], outs, **attrs)],
        [_vi("x", dtype, shape)],
        [_vi(n, t, None) for n, t in zip(outs, types)],
        opset=13,
    )


@pytest.mark.parametrize("sort", [1, 0])
@pytest.mark.parametrize(
    ("x", "axis"),
    [
        (np.array([[2.0, -1, 2, 0.5], [0.5, 7, -1, 2]], np.float32), None),
        (np.array([[1, 2, 1, 3, 2], [0, 5, 0, 1, 5], [4, 4, 4, 4, 4]], np.float32), 1),
        (np.array([[3, 1], [0, 2], [3, 1], [0, 1]], np.int64), 0),
        (np.array([[[1, 2], [1, 2]], [[0, 0], [1, 2]], [[1, 2], [1, 2]]], np.int64), -3),
        (np.array([5], np.float32), None),
    ],
    ids=["flat", "axis1", "int64-axis0", "3d-negative-axis", "one"],
)
def test_unique(x: np.ndarray, axis: int | None, sort: int) -> None:
    attrs = {"sorted": sort} | ({} if axis is None else {"axis": axis})
    model = _unique_model(list(x.shape), onnx.helper.np_dtype_to_tensor_dtype(x.dtype), **attrs)
    program = lower_model(model)
    assert [s.data_dependent for s in program.outputs] == [True, True, False, True]
    _check(model, {"x": x})


def _nms_model(
    center: int = 0, max_out: int | None = 3, score_threshold: bool = True
) -> onnx.ModelProto:
    """boxes [2, 6, 4], scores [2, 2, 6]; ``max_out`` None: a run-time input ``m``."""
    names = ["boxes", "scores", "m", "iou"] + (["st"] if score_threshold else [])
    inputs = [
        _vi("boxes", TP.FLOAT, [2, 6, 4]),
        _vi("scores", TP.FLOAT, [2, 2, 6]),
        _vi("iou", TP.FLOAT, [1]),
    ]
    inits = []
    if max_out is None:
        inputs.append(_vi("m", TP.INT64, [1]))
    else:
        inits.append(helper.make_tensor("m", TP.INT64, [1], [max_out]))
    if score_threshold:
        inputs.append(_vi("st", TP.FLOAT, [1]))
    node = helper.make_node("NonMaxSuppression", names, ["selected"], center_point_box=center)
    return make_model([node], inputs, [_vi("selected", TP.INT64, None)], inits, opset=13)


def _nms_feeds(
    seed: int, iou: float, st: float | None = 0.2, m: int | None = None
) -> dict[str, np.ndarray]:
    """Clustered boxes (so IoU suppresses), ties in the scores."""
    rng = np.random.default_rng(seed)
    lo = rng.uniform(0, 4, (2, 6, 2)).astype(np.float32)
    boxes = np.concatenate([lo, lo + rng.uniform(2, 4, (2, 6, 2)).astype(np.float32)], axis=-1)
    boxes[0, 2] = boxes[0, 2, [2, 3, 0, 1]]  # flipped corners
    scores = rng.uniform(0, 1, (2, 2, 6)).astype(np.float32)
    scores[0, 0, 4] = scores[0, 0, 1]  # a tie: the lower index first
    feeds = {"boxes": boxes, "scores": scores, "iou": np.array([iou], np.float32)}
    if st is not None:
        feeds["st"] = np.array([st], np.float32)
    if m is not None:
        feeds["m"] = np.array([m], np.int64)
    return feeds


@pytest.mark.parametrize(
    ("center", "max_out", "with_st", "feeds"),
    [
        (0, 3, True, _nms_feeds(1, 0.3)),
        (0, 6, True, _nms_feeds(2, 0.1, 0.0)),
        (1, 6, True, _nms_feeds(3, 0.2)),
        (0, None, True, _nms_feeds(4, 0.25, 0.1, m=4)),  # limit read at run time
        (0, 6, False, _nms_feeds(5, 0.5, None)),
        (0, 6, True, _nms_feeds(6, 0.5, 2.0)),  # nothing above the threshold: [0, 3]
    ],
    ids=["corners", "suppress", "center", "runtime-limit", "no-score-threshold", "empty"],
)
def test_nonmaxsuppression(center: int, max_out: int | None, with_st: bool, feeds: dict) -> None:
    got = _check(_nms_model(center, max_out, with_st), feeds)
    if "st" in feeds and feeds["st"][0] >= 1:
        assert got["selected"].shape == (0, 3)


def test_output_bounds() -> None:
    """The upper bounds the op specs give (what the buffers hold)."""
    program = lower_model(_nms_model(max_out=None))
    assert program.outputs[0].max_shape == (2 * 2 * 6, 3)  # run-time limit: bounded by the boxes
    program = lower_model(_nms_model(max_out=2))
    assert program.outputs[0].max_shape == (2 * 2 * 2, 3)
    program = lower_model(_unique_model([4, 3], TP.FLOAT, axis=1))
    assert [s.max_shape for s in program.outputs] == [(4, 3), (3,), (3,), (3,)]
    assert program.outputs[0].dims[:1] == (4,) and isinstance(program.outputs[0].dims[1], str)


# --------------------------------------------------------------------------- refusals
def test_data_dependent_tensor_feeding_a_node_is_refused() -> None:
    model = make_model(
        [
            helper.make_node("NonZero", ["x"], ["nz"], name="find"),
            helper.make_node("Cast", ["nz"], ["f"], to=TP.FLOAT, name="tofloat"),
            helper.make_node("Unique", ["x"], ["u"], name="uniq"),
            helper.make_node("Identity", ["u"], ["u2"]),  # passing through Identity is fine
        ],
        [_vi("x", TP.FLOAT, [3, 4])],
        [_vi("f", TP.FLOAT, None), _vi("u2", TP.FLOAT, None)],
        opset=13,
    )
    with pytest.raises(UnsupportedOpError) as err:
        lower_model(model, level="O0")
    msg = str(err.value)
    assert "1 node(s) cannot be lowered" in msg and "\n" not in msg
    assert "NonZero (node 'find': output 'nz' feeds Cast (node 'tofloat')" in msg
    assert (
        "its size depends on the data and native targets return such tensors only as model outputs"
        in msg
    )
    assert "uniq" not in msg


def _nonzero_transpose_model() -> onnx.ModelProto:
    """``torch.nonzero(x > 0.5)`` as PyTorch exports it: NonZero, then Transpose."""
    return make_model(
        [
            helper.make_node("Greater", ["x", "half"], ["m"]),
            helper.make_node("NonZero", ["m"], ["nz"]),
            helper.make_node("Transpose", ["nz"], ["y"], perm=[1, 0]),
        ],
        [_vi("x", TP.FLOAT, [3, 4, 5])],
        [_vi("y", TP.INT64, None)],
        [helper.make_tensor("half", TP.FLOAT, [], [0.5])],
        opset=13,
    )


@pytest.mark.parametrize("scale", [0.0, 0.7, 1.6], ids=["none", "some", "most"])
def test_nonzero_then_transpose(scale: float) -> None:
    """A Transpose reads a data-dependent tensor in the dims its producer wrote and gives a
    bounded tensor of its own (``torch.nonzero``), in process and in the library."""
    model = _nonzero_transpose_model()
    program = lower_model(model)
    spec = program.outputs[0]
    assert spec.max_shape == (60, 3) and isinstance(spec.dims[0], str) and spec.dims[1] == 3
    x = np.random.default_rng(3).random((3, 4, 5)).astype(np.float32) * scale
    _check(model, {"x": x})


def test_unique_rows_then_transpose() -> None:
    """Any permutation; here the varying dim moves from first to last."""
    model = make_model(
        [
            helper.make_node("Unique", ["x"], ["u"], axis=0, sorted=1),
            helper.make_node("Transpose", ["u"], ["y"]),
        ],
        [_vi("x", TP.FLOAT, [6, 2])],
        [_vi("y", TP.FLOAT, None)],
        opset=13,
    )
    x = np.array([[1, 2], [3, 4], [1, 2], [0, 0], [3, 4], [5, 6]], np.float32)
    got = _check(model, {"x": x})
    assert got["y"].shape == (2, 4)


def test_nonzero_then_transpose_in_the_library(tmp_path: Path) -> None:
    """The wrapper and the driver return the transpose in its actual shape; a consumer of
    the Transpose's output is refused like one of NonZero's."""
    if not HAS_GCC:
        pytest.skip("gcc is not installed (apt install gcc)")
    from torsh_gen.tools.compile import compile_model

    model, pkg = _nonzero_transpose_model(), tmp_path / "nzt"
    compile_model(model, pkg, target="x86_64-linux")
    mod = import_package(pkg)
    for seed in (1, 2):
        feeds = {"x": np.random.default_rng(seed).random((3, 4, 5)).astype(np.float32)}
        _assert_like_ort(mod.run(**feeds), model, feeds, f"wrapper seed {seed}")
        got = _driver_outputs([str(pkg / "run_model")], pkg, tmp_path / f"run{seed}", feeds)
        _assert_like_ort(got, model, feeds, "run_model")
    fed = onnx.ModelProto()
    fed.CopyFrom(model)
    fed.graph.node.append(helper.make_node("Neg", ["y"], ["z"], name="negate"))
    fed.graph.output[0].CopyFrom(_vi("z", TP.INT64, None))
    with pytest.raises(UnsupportedOpError, match=r"Transpose \(node '\?': output 'y' feeds Neg \(node 'negate'\)"):
        lower_model(fed)


def test_static_output_targets_refuse_data_dependent_ops() -> None:
    """A backend that needs static outputs (the CUDA program builder's check) names them."""
    from torsh_gen.backends.kernel.program import check_lowerable
    from torsh_gen.frontends.onnx import load_onnx
    from torsh_gen.ops.inference import infer_types

    model = make_model(
        [helper.make_node("NonZero", ["x"], ["y"], name="find")],
        [_vi("x", TP.FLOAT, [3, 4])],
        [_vi("y", TP.INT64, None)],
        opset=13,
    )
    graph = load_onnx(model.SerializeToString())
    infer_types(graph)
    check_lowerable(graph, data_dependent=True)
    with pytest.raises(
        UnsupportedOpError,
        match=r"NonZero \(node 'find': its output size depends on the data, and this target needs static output shapes\)",
    ):
        check_lowerable(graph)


# --------------------------------------------------------------------------- packages
def _all_ops_model() -> onnx.ModelProto:
    """NonZero, Unique (four outputs), Compress and NonMaxSuppression, plus a static output."""
    nodes = [
        helper.make_node("NonZero", ["x"], ["nz"]),
        helper.make_node("Unique", ["x"], ["uy", "ui", "uinv", "uc"], sorted=1),
        helper.make_node("Compress", ["x", "c"], ["cy"], axis=1),
        helper.make_node("NonMaxSuppression", ["boxes", "scores", "m", "iou", "st"], ["sel"]),
        helper.make_node("Relu", ["x"], ["r"]),
    ]
    inputs = [
        _vi("x", TP.FLOAT, [3, 4]),
        _vi("c", TP.BOOL, [4]),
        _vi("boxes", TP.FLOAT, [2, 6, 4]),
        _vi("scores", TP.FLOAT, [2, 2, 6]),
        _vi("iou", TP.FLOAT, [1]),
        _vi("st", TP.FLOAT, [1]),
    ]
    outs = [
        ("nz", TP.INT64),
        ("uy", TP.FLOAT),
        ("ui", TP.INT64),
        ("uinv", TP.INT64),
        ("uc", TP.INT64),
        ("cy", TP.FLOAT),
    ]
    outputs = [_vi(n, t, None) for n, t in outs] + [
        _vi("sel", TP.INT64, None),
        _vi("r", TP.FLOAT, [3, 4]),
    ]
    return make_model(
        nodes, inputs, outputs, [helper.make_tensor("m", TP.INT64, [1], [4])], opset=13
    )


def _all_ops_feeds(seed: int, empty: bool = False) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.integers(-2, 3, (3, 4)).astype(np.float32)
    c = rng.integers(0, 2, 4).astype(bool)
    feeds = _nms_feeds(seed, 0.3) | {"x": x, "c": c}
    if empty:  # no non-zero, no kept column, no box above the threshold
        feeds |= {
            "x": np.zeros((3, 4), np.float32),
            "c": np.zeros(4, bool),
            "st": np.array([5.0], np.float32),
        }
    return feeds


def _assert_like_ort(
    got: dict[str, np.ndarray], model: onnx.ModelProto, feeds: dict[str, np.ndarray], how: str
) -> None:
    for out, exp in zip(model.graph.output, ort_run(model, feeds)):
        value = got[out.name]
        assert (
            value.dtype == exp.dtype and value.shape == exp.shape
        ), f"{how} {out.name}: {value.shape} vs {exp.shape}"
        np.testing.assert_array_equal(value, exp, err_msg=f"{how} output {out.name}")


def _write_inputs(pkg: Path, folder: Path, feeds: dict[str, np.ndarray]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for entry in json.loads((pkg / "manifest.json").read_text())["inputs"]:
        np.save(folder / entry["file"], feeds[entry["name"]])
    return folder


def _read_outputs(pkg: Path, folder: Path) -> dict[str, np.ndarray]:
    return {
        e["name"]: np.load(folder / e["file"])
        for e in json.loads((pkg / "manifest.json").read_text())["outputs"]
    }


def _driver_outputs(
    command: list[str], pkg: Path, folder: Path, feeds: dict[str, np.ndarray], timeout: int = 60
) -> dict[str, np.ndarray]:
    """Run a package's driver (``command`` + IN_DIR OUT_DIR) on ``feeds`` and read what it
    wrote."""
    in_dir = _write_inputs(pkg, folder / "in", feeds)
    proc = subprocess.run(
        [*command, str(in_dir), str(folder / "out")], capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, proc.stderr
    return _read_outputs(pkg, folder / "out")


@pytest.fixture(scope="module")
def x86_package(tmp_path_factory) -> Path:
    if not HAS_GCC:
        pytest.skip("gcc is not installed (apt install gcc)")
    from torsh_gen.tools.compile import compile_model

    pkg = tmp_path_factory.mktemp("datadep") / "ddops"
    compile_model(_all_ops_model(), pkg, target="x86_64-linux")
    return pkg


def test_wrapper_returns_actual_shapes(x86_package: Path) -> None:
    model, mod = _all_ops_model(), import_package(x86_package)
    for seed in (1, 2):
        feeds = _all_ops_feeds(seed)
        _assert_like_ort(mod.run(**feeds), model, feeds, f"wrapper seed {seed}")
    feeds = _all_ops_feeds(3, empty=True)
    with mod.Model(threads=1) as m:
        got = m.run(**feeds)
        _assert_like_ort(got, model, feeds, "wrapper (empty results)")
        assert (
            got["nz"].shape == (2, 0) and got["cy"].shape == (3, 0) and got["sel"].shape == (0, 3)
        )
        assert m.output_shape("nz") == (2, 0) and m.output_shape("r") == (3, 4)
        with pytest.raises(ValueError, match="unknown output 'nope'"):
            m.output_shape("nope")
    outputs = {o["name"]: o for o in mod.OUTPUTS}
    assert outputs["nz"]["max_shape"] == (2, 12) and isinstance(outputs["nz"]["shape"][1], str)
    assert "max_shape" not in outputs["r"] and "max_shape" not in outputs["uinv"]


def test_manifest_and_header(x86_package: Path) -> None:
    entries = {
        e["name"]: e for e in json.loads((x86_package / "manifest.json").read_text())["outputs"]
    }
    assert entries["nz"]["shape"][0] == 2 and isinstance(entries["nz"]["shape"][1], str)
    assert entries["nz"]["max_shape"] == [2, 12]
    assert entries["sel"]["max_shape"] == [16, 3] and isinstance(entries["sel"]["shape"][0], str)
    assert entries["cy"]["max_shape"] == [3, 4] and entries["uinv"]["shape"] == [12]
    assert "max_shape" not in entries["r"] and "max_shape" not in entries["uinv"]
    header = (x86_package / "ddops.h").read_text()
    assert "int ddops_output_shape(const ddops_model *m, int j, int64_t *dims);" in header
    assert (
        "#define DDOPS_OUTPUT0_DATA_DEPENDENT 1" in header
        and "#define DDOPS_OUTPUT7_DATA_DEPENDENT 0" in header
    )
    assert "(up to 192 bytes)" in header


def test_c_api_output_shape(x86_package: Path) -> None:
    lib = ctypes.CDLL(str(x86_package / "libddops.so"))
    lib.ddops_create.restype = ctypes.c_void_p
    lib.ddops_create.argtypes = [ctypes.c_char_p, ctypes.c_int]
    lib.ddops_output_shape.restype = ctypes.c_int
    lib.ddops_output_shape.argtypes = [
        ctypes.c_void_p,
        ctypes.c_int,
        ctypes.POINTER(ctypes.c_int64),
    ]
    lib.ddops_output_info.restype = ctypes.POINTER(CTensor)
    lib.ddops_run_checked.restype = ctypes.c_int
    lib.ddops_run_checked.argtypes = [
        ctypes.c_void_p,
        ctypes.POINTER(CTensor),
        ctypes.c_size_t,
        ctypes.POINTER(CTensor),
        ctypes.c_size_t,
    ]
    lib.ddops_last_error.restype = ctypes.c_char_p
    lib.ddops_last_error.argtypes = [ctypes.c_void_p]
    lib.ddops_destroy.argtypes = [ctypes.c_void_p]
    model = _all_ops_model()
    m = lib.ddops_create(str(x86_package / "weights.bin").encode(), 1)
    assert m
    try:
        dims = (ctypes.c_int64 * 4)()

        def shape(j: int) -> tuple[int, ...]:
            n = lib.ddops_output_shape(m, j, dims)
            assert n >= 0
            return tuple(dims[:n])

        info = lib.ddops_output_info(0).contents  # the bound
        assert info.ndim == 2 and tuple(info.shape[:2]) == (2, 12) and info.nbytes == 2 * 12 * 8
        assert shape(0) == (2, 0)  # before the first run: empty
        assert shape(7) == (3, 4)  # a static output: its shape
        assert (
            lib.ddops_output_shape(m, 8, dims) == -1 and lib.ddops_output_shape(m, -1, dims) == -1
        )
        assert lib.ddops_output_shape(None, 0, dims) == -1
        assert lib.ddops_output_shape(m, 0, None) == 2

        feeds = _all_ops_feeds(4)
        keep = []

        def tensor(name: str, array: np.ndarray, code: int, nbytes: int | None = None) -> CTensor:
            dims_ = (ctypes.c_int64 * max(array.ndim, 1))(*array.shape)
            keep.append((dims_, array))
            return CTensor(
                name.encode(),
                code,
                array.ndim,
                dims_,
                array.ctypes.data,
                array.nbytes if nbytes is None else nbytes,
            )

        codes = {np.dtype(np.float32): 1, np.dtype(np.int64): 4, np.dtype(np.bool_): 11}
        ins = (CTensor * 6)(
            *[tensor(i.name, feeds[i.name], codes[feeds[i.name].dtype]) for i in model.graph.input]
        )
        bufs, outs = [], []
        for j, o in enumerate(model.graph.output):
            spec = lib.ddops_output_info(j).contents
            buf = np.zeros(spec.nbytes, np.uint8)
            bufs.append(buf)
            outs.append(tensor(o.name, buf, spec.dtype))  # data-dependent: only the capacity counts
            if o.name in ("uinv", "r"):  # static outputs: their shape is checked
                outs[-1].ndim, outs[-1].shape = spec.ndim, spec.shape
        out_arr = (CTensor * 8)(*outs)
        assert lib.ddops_run_checked(m, ins, 6, out_arr, 8) == 0, lib.ddops_last_error(m)
        expected = ort_run(model, feeds)
        for j, (buf, exp) in enumerate(zip(bufs, expected)):
            got = buf.view(exp.dtype)[: exp.size].reshape(shape(j))
            assert got.shape == exp.shape
            np.testing.assert_array_equal(got, exp)
        out_arr[0].nbytes = 2 * 12 * 8 - 8  # one element short of the bound
        assert lib.ddops_run_checked(m, ins, 6, out_arr, 8) == 4
        err = lib.ddops_last_error(m).decode()
        assert (
            "output 'nz' has 184 bytes of data, the model needs 192" in err
            and "largest shape" in err
        )
    finally:
        lib.ddops_destroy(m)


def test_driver_writes_actual_shapes(x86_package: Path, tmp_path: Path) -> None:
    model = _all_ops_model()
    for k, feeds in enumerate((_all_ops_feeds(5), _all_ops_feeds(6, empty=True))):
        got = _driver_outputs([str(x86_package / "run_model")], x86_package, tmp_path / f"run{k}", feeds)
        _assert_like_ort(got, model, feeds, f"run_model {k}")


@pytest.mark.skipif(not HAS_WASM, reason="needs node and wasm-ld (make toolchains)")
def test_wasm32_under_node(tmp_path: Path) -> None:
    from torsh_gen.tools.compile import compile_model

    model, pkg = _all_ops_model(), tmp_path / "ddwasm"
    compile_model(model, pkg, target="wasm32")
    for k, feeds in enumerate((_all_ops_feeds(7), _all_ops_feeds(8, empty=True))):
        got = _driver_outputs([NODE, str(pkg / "run.mjs")], pkg, tmp_path / f"run{k}", feeds)
        _assert_like_ort(got, model, feeds, f"node {k}")


@pytest.mark.skipif(
    not HAS_AARCH64, reason="needs aarch64-linux-gnu-gcc and qemu-aarch64 (make toolchains)"
)
def test_aarch64_under_qemu(tmp_path: Path) -> None:
    from torsh_gen.tools.compile import compile_model

    model, pkg = _all_ops_model(), tmp_path / "ddarm"
    compile_model(model, pkg, target="aarch64-linux")
    feeds = _all_ops_feeds(9)
    got = _driver_outputs([*QEMU, str(pkg / "run_model")], pkg, tmp_path, feeds, timeout=120)
    _assert_like_ort(got, model, feeds, "aarch64")


HOSTILE = "n*/ \"'\n${x}</script>"


def test_hostile_dim_names_stay_data(tmp_path: Path) -> None:
    """A model-chosen symbolic dim name reaches the header, wrapper and manifest escaped."""
    if not HAS_GCC:
        pytest.skip("gcc is not installed (apt install gcc)")
    from torsh_gen.tools.compile import compile_model

    model = make_model(
        [helper.make_node("NonZero", ["x"], ["y"])],
        [_vi("x", TP.FLOAT, [3, 4])],
        [_vi("y", TP.INT64, [2, HOSTILE])],
        opset=13,
    )
    pkg = tmp_path / "hostile"
    compile_model(model, pkg, target="x86_64-linux")  # the C compiler read the header
    entry = json.loads((pkg / "manifest.json").read_text())["outputs"][0]
    assert entry["shape"] == [2, HOSTILE] and entry["max_shape"] == [2, 12]
    assert HOSTILE not in (pkg / "hostile.h").read_text()
    mod = import_package(pkg)
    assert mod.OUTPUTS[0]["shape"] == (2, HOSTILE)
    x = np.array([[0, 1, 0, 2], [0, 0, 0, 0], [3, 0, 0, 0]], np.float32)
    np.testing.assert_array_equal(mod.run(x=x)["y"], ort_run(model, {"x": x})[0])


JNI_INCLUDES = sorted(Path("/usr/lib/jvm").glob("*/include/linux/jni_md.h"))


@pytest.mark.skipif(
    shutil.which("aarch64-linux-gnu-gcc") is None or not JNI_INCLUDES or not HAS_GCC,
    reason="needs aarch64-linux-gnu-gcc and a JDK's jni.h (make toolchains)",
)
def test_android_bridge(tmp_path: Path) -> None:
    """The JNI bridge with nativeOutputShape compiles warning-free; Kotlin trims outputs."""
    from torsh_gen.backends.llvm.package_android import kotlin_names
    from torsh_gen.tools.compile import compile_model

    pkg = tmp_path / "ddandroid"
    compile_model(_all_ops_model(), pkg, target="android-arm64")
    jdk = JNI_INCLUDES[0].parents[1]
    cpp = pkg / "src" / "main" / "cpp"
    flags = ["-std=gnu11", "-Wall", "-Wextra", "-Werror", "-Wno-unused-parameter"]
    proc = subprocess.run(
        [
            "gcc",
            *flags,
            f"-I{jdk}",
            f"-I{jdk}/linux",
            f"-I{cpp}",
            "-fsyntax-only",
            str(cpp / "ddandroid_jni.c"),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    names = kotlin_names(pkg.name)
    kotlin = (pkg / "src/main/kotlin" / names["kt_path"] / f"{names['kt_class']}.kt").read_text()
    assert 'TensorInfo("nz", "int64", longArrayOf(2, 12), 192L, true)' in kotlin
    assert 'TensorInfo("r", "float32", longArrayOf(3, 4), 48L)' in kotlin
    assert "fun outputShape(name: String): LongArray" in kotlin
