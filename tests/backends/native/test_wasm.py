"""The wasm32 artifact run three ways (Node's run.mjs, Python's wasmtime, headless Chromium
through playwright) against onnxruntime; model.js and run.mjs errors; hostile tensor names;
determinism; code size; weights embedded or in weights.bin."""

from __future__ import annotations

import functools
import http.server
import json
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto as TP
from onnx import helper

from tests.backends.native.helpers import make_model, ort_run, rand
from torsh_gen.tools.compile import compile_model

NODE = shutil.which("node")
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ALIGN = 64
TOL = {"rtol": 1e-4, "atol": 1e-4}

pytestmark = [
    pytest.mark.skipif(
        shutil.which("wasm-ld") is None, reason="wasm-ld (Debian package lld) is not installed"
    ),
]
needs_node = pytest.mark.skipif(NODE is None, reason="node is not installed")

HOSTILE_IN = "x\"'</script>`${globalThis.pwned=1}`\n\u2028\u2029é"
HOSTILE_OUT = "y</script><script>globalThis.pwned=1</script>&amp;<!--"


def _vi(name: str, dtype: int, shape: tuple[int, ...]) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, dtype, shape)


def elementwise_model() -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """Two inputs (float32, int64), weights, a fused chain, four outputs of four dtypes."""
    shape = (3, 37)
    w = helper.make_tensor("w", TP.FLOAT, [37], rand(37, seed=5).tolist())
    nodes = [
        helper.make_node("Mul", ["x", "w"], ["a"]),
        helper.make_node("Tanh", ["a"], ["b"]),
        helper.make_node("Add", ["b", "x"], ["y"]),
        helper.make_node("Greater", ["y", "x"], ["m"]),
        helper.make_node("Div", ["k", "d"], ["q"]),
        helper.make_node("Cast", ["y"], ["c"], to=TP.INT32),
    ]
    d = helper.make_tensor("d", TP.INT64, [], [3])
    model = make_model(
        nodes,
        [_vi("x", TP.FLOAT, shape), _vi("k", TP.INT64, (5, 7))],
        [
            _vi("y", TP.FLOAT, shape),
            _vi("m", TP.BOOL, shape),
            _vi("q", TP.INT64, (5, 7)),
            _vi("c", TP.INT32, shape),
        ],
        [w, d],
    )
    feeds = {"x": rand(*shape, seed=1) * 3, "k": np.random.default_rng(2).integers(-40, 40, (5, 7))}
    return model, feeds


def hostile_model() -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """Tensor names built to break out of JS strings, template literals and script elements."""
    model = make_model(
        [helper.make_node("Sigmoid", [HOSTILE_IN], [HOSTILE_OUT])],
        [_vi(HOSTILE_IN, TP.FLOAT, (4, 9))],
        [_vi(HOSTILE_OUT, TP.FLOAT, (4, 9))],
    )
    model.graph.name = "</title><script>globalThis.pwned=1</script>"
    return model, {HOSTILE_IN: rand(4, 9, seed=3)}


def mlp_model() -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """784-64-10 (Gemm, Relu, Gemm, Softmax-free) with random weights."""
    w1 = helper.make_tensor(
        "w1", TP.FLOAT, [64, 784], (rand(64, 784, seed=6) * 0.05).ravel().tolist()
    )
    b1 = helper.make_tensor("b1", TP.FLOAT, [64], rand(64, seed=7).tolist())
    w2 = helper.make_tensor("w2", TP.FLOAT, [10, 64], (rand(10, 64, seed=8) * 0.1).ravel().tolist())
    b2 = helper.make_tensor("b2", TP.FLOAT, [10], rand(10, seed=9).tolist())
    nodes = [
        helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], transB=1),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("Gemm", ["r", "w2", "b2"], ["y"], transB=1),
    ]
    model = make_model(
        nodes, [_vi("x", TP.FLOAT, (2, 784))], [_vi("y", TP.FLOAT, (2, 10))], [w1, b1, w2, b2]
    )
    return model, {"x": rand(2, 784, seed=4)}


def cnn_model(pool: bool = True) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """Conv 3→8 (3x3, pad 1) + Relu (+ MaxPool 2x2) on a 1x3x12x12 image."""
    w = helper.make_tensor(
        "w", TP.FLOAT, [8, 3, 3, 3], (rand(8, 3, 3, 3, seed=10) * 0.3).ravel().tolist()
    )
    b = helper.make_tensor("b", TP.FLOAT, [8], rand(8, seed=11).tolist())
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r" if pool else "y"]),
    ]
    if pool:
        nodes.append(helper.make_node("MaxPool", ["r"], ["y"], kernel_shape=[2, 2], strides=[2, 2]))
    out = (1, 8, 6, 6) if pool else (1, 8, 12, 12)
    model = make_model(
        nodes, [_vi("x", TP.FLOAT, (1, 3, 12, 12))], [_vi("y", TP.FLOAT, out)], [w, b]
    )
    return model, {"x": rand(1, 3, 12, 12, seed=12)}


def compile_wasm(model: onnx.ModelProto, out: Path, embed: bool = False) -> Path:
    """compile_model for wasm32 (weights in weights.bin, or in model.wasm with ``embed``)."""
    compile_model(model, out, target="wasm32", embed_weights=embed)
    return out


def manifest_of(folder: Path) -> dict[str, Any]:
    """The artifact's manifest."""
    return json.loads((folder / "manifest.json").read_text())


def write_inputs(folder: Path, feeds: dict[str, np.ndarray], target: Path) -> Path:
    """One .npy per input under the manifest's file names."""
    target.mkdir(parents=True, exist_ok=True)
    for entry in manifest_of(folder)["inputs"]:
        np.save(
            target / entry["file"],
            np.ascontiguousarray(feeds[entry["name"]]).astype(entry["dtype"]),
        )
    return target


def node_run(folder: Path, inputs: Path, outputs: Path) -> subprocess.CompletedProcess:
    """``node run.mjs INPUTS OUTPUTS``."""
    return subprocess.run(
        [NODE, str(folder / "run.mjs"), str(inputs), str(outputs)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def assert_outputs(
    folder: Path, got: dict[str, np.ndarray], expected: list[np.ndarray], how: str
) -> None:
    """Every output equal to onnxruntime's, dtype and shape included."""
    entries = manifest_of(folder)["outputs"]
    assert len(entries) == len(expected)
    for entry, exp in zip(entries, expected):
        out = got[entry["name"]]
        assert out.dtype == exp.dtype and out.shape == exp.shape, (
            f"{how} {entry['name']!r}: {out.dtype}{out.shape}"
        )
        np.testing.assert_allclose(out, exp, **TOL, err_msg=f"{how} output {entry['name']!r}")


def run_with_node(folder: Path, feeds: dict[str, np.ndarray], tmp: Path) -> dict[str, np.ndarray]:
    """Outputs by name from run.mjs."""
    proc = node_run(folder, write_inputs(folder, feeds, tmp / "in"), tmp / "out")
    assert proc.returncode == 0, proc.stderr
    return {e["name"]: np.load(tmp / "out" / e["file"]) for e in manifest_of(folder)["outputs"]}


def run_with_wasmtime(folder: Path, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Instantiate model.wasm with wasmtime and lay out memory as model.js does."""
    wasmtime = pytest.importorskip(
        "wasmtime", reason="the wasmtime Python package is not installed"
    )
    man = manifest_of(folder)
    store = wasmtime.Store()
    module = wasmtime.Module.from_file(store.engine, str(folder / "model.wasm"))
    assert list(module.imports) == [], "model.wasm must not import anything"
    ex = wasmtime.Instance(store, module, []).exports(store)
    names = man["wasm"]["exports"]
    memory = ex[names["memory"]]
    at = -(-ex[names["heap_base"]].value(store) // ALIGN) * ALIGN

    def take(n: int) -> int:
        nonlocal at
        start, at = at, at + -(-max(n, 1) // ALIGN) * ALIGN
        return start

    ws = take(man["workspace_bytes"])
    weights_file = man["weights"]["file"]
    blob = (folder / weights_file).read_bytes() if weights_file else b""
    weights = take(len(blob)) if weights_file else ex[names["weights"]].value(store)
    arrays = [np.ascontiguousarray(feeds[e["name"]], dtype=e["dtype"]) for e in man["inputs"]]
    in_ptrs = [take(a.nbytes) for a in arrays]
    outs = [np.zeros(e["shape"], dtype=e["dtype"]) for e in man["outputs"]]
    out_ptrs = [take(o.nbytes) for o in outs]
    tables = take(4 * len(in_ptrs)), take(4 * len(out_ptrs))
    grow = -(-(at - memory.data_len(store)) // 65536)
    if grow > 0:
        memory.grow(store, grow)
    if blob:
        memory.write(store, blob, weights)
    for ptr, arr in zip(in_ptrs, arrays):
        memory.write(store, arr.tobytes(), ptr)
    memory.write(store, np.array(in_ptrs, dtype="<u4").tobytes(), tables[0])
    memory.write(store, np.array(out_ptrs, dtype="<u4").tobytes(), tables[1])
    ex[names["run"]](store, 0, ws, weights, *tables)
    for ptr, out in zip(out_ptrs, outs):
        out.reshape(-1).view(np.uint8)[:] = np.frombuffer(
            memory.read(store, ptr, ptr + out.nbytes), dtype=np.uint8
        )
    return {e["name"]: o for e, o in zip(man["outputs"], outs)}


@pytest.fixture(scope="module")
def ew(tmp_path_factory) -> tuple[Path, dict[str, np.ndarray], list[np.ndarray]]:
    """The elementwise model compiled once: (folder, feeds, onnxruntime outputs)."""
    model, feeds = elementwise_model()
    folder = compile_wasm(model, tmp_path_factory.mktemp("ew") / "ewmodel")
    return folder, feeds, ort_run(model, feeds)


@needs_node
def test_node_driver_matches_onnxruntime(ew, tmp_path: Path) -> None:
    folder, feeds, expected = ew
    assert_outputs(folder, run_with_node(folder, feeds, tmp_path), expected, "node")


def test_wasmtime_matches_onnxruntime(ew) -> None:
    folder, feeds, expected = ew
    assert_outputs(folder, run_with_wasmtime(folder, feeds), expected, "wasmtime")


def test_module_shape_simd_and_size(ew) -> None:
    """No imports, growable exported memory, SIMD128 required, code ≤ 300 KB."""
    wasmtime = pytest.importorskip(
        "wasmtime", reason="the wasmtime Python package is not installed"
    )
    folder = ew[0]
    module = wasmtime.Module.from_file(wasmtime.Engine(), str(folder / "model.wasm"))
    assert list(module.imports) == []
    exports = {e.name: e.type for e in module.exports}
    assert (
        isinstance(exports["memory"], wasmtime.MemoryType) and exports["memory"].limits.max is None
    )
    assert set(exports) == {"memory", "model_graph_run", "__heap_base"}
    config = wasmtime.Config()
    config.wasm_relaxed_simd = False
    config.wasm_simd = False
    with pytest.raises(wasmtime.WasmtimeError, match="SIMD"):
        wasmtime.Module.from_file(wasmtime.Engine(config), str(folder / "model.wasm"))
    man = manifest_of(folder)
    assert man["wasm"]["code_bytes"] == (folder / "model.wasm").stat().st_size <= 300_000
    files = {"model.wasm", "model.js", "run.mjs", "index.html", "weights.bin"}
    assert set(man["files"].values()) == files
    blob = (folder / "weights.bin").read_bytes()
    assert man["weights"] == {"file": "weights.bin", "embedded": False, "bytes": len(blob)}
    assert blob[: 37 * 4] == rand(37, seed=5).tobytes()  # w first, then d at the next 64 bytes


def test_deterministic(tmp_path: Path) -> None:
    model, _ = elementwise_model()
    a = compile_wasm(model, tmp_path / "a" / "det")
    b = compile_wasm(model, tmp_path / "b" / "det")
    files = sorted(p.name for p in a.iterdir())
    assert files == sorted(p.name for p in b.iterdir())
    for name in files:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def _node_script(folder: Path, body: str) -> Any:
    """Run an ES module snippet beside model.js; it prints one JSON value."""
    script = folder / "_check.mjs"
    script.write_text('import { load, signature } from "./model.js";\n' + body)
    try:
        proc = subprocess.run(
            [NODE, str(script)], capture_output=True, text=True, timeout=60, check=False
        )
    finally:
        script.unlink()
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


MODEL_JS_ERRORS = """
const model = await load();
const x = new Float32Array(3 * 37), k = new BigInt64Array(35);
const cases = {
  unknown: { x, k, z: x }, missing: { x }, notObject: [x],
  dtype: { x: new Float64Array(3 * 37), k },
  dims: { x: { data: x, dims: [37, 3] }, k },
  length: { x: { data: new Float32Array(5), dims: [3, 37] }, k },
  shape: { x: { data: x }, k },
};
const out = {};
for (const [name, feeds] of Object.entries(cases)) {
  try { await model.run(feeds); out[name] = "no error"; } catch (e) { out[name] = e.message; }
}
try { await load(42); } catch (e) { out.source = e.message; }
try { await load("/nonexistent/model.wasm"); } catch (e) { out.path = e.message; }
const fs = await import("node:fs");
const code = fs.readFileSync(new URL("./model.wasm", import.meta.url));
try { await load(code); } catch (e) { out.noWeights = e.message; }
try { await load(code, { weights: new Uint8Array(3) }); } catch (e) { out.short = e.message; }
const weights = fs.readFileSync(new URL("./weights.bin", import.meta.url));
out.bytes = Object.keys(await (await load(new Uint8Array(code), { weights })).run({ x, k }));
const ok = await model.run({ x: { data: x, dims: [3, 37] }, k });
out.ok = Object.keys(ok);
console.log(JSON.stringify(out));
"""


@needs_node
def test_model_js_errors(ew) -> None:
    got = _node_script(ew[0], MODEL_JS_ERRORS)
    assert got["unknown"] == 'unknown input "z"; the model\'s inputs are "x", "k"'
    assert got["missing"] == 'missing input "k" (int64 [5, 7])'
    assert got["notObject"].startswith("run() takes an object") and "Array" in got["notObject"]
    assert (
        got["dtype"] == 'input "x": data must be a Float32Array (dtype float32), got Float64Array'
    )
    assert got["dims"] == 'input "x": dims [37, 3] do not match the model\'s shape [3, 37]'
    assert got["length"] == 'input "x": data has 5 elements, dims [3, 37] need 111'
    assert got["shape"].startswith('input "x": expected {data: TypedArray, dims: number[]}')
    assert got["source"].startswith("model.wasm: expected a URL, a file path")
    assert got["path"].startswith("cannot read model.wasm from /nonexistent/model.wasm")
    assert got["noWeights"].startswith(
        "this model keeps its weights in weights.bin: pass load(bytes, {weights:"
    )
    bytes_ = manifest_of(ew[0])["weights"]["bytes"]
    assert got["short"] == f"weights.bin has 3 bytes, this model needs {bytes_}"
    assert got["ok"] == got["bytes"] == ["y", "m", "q", "c"]


@needs_node
def test_run_mjs_errors(ew, tmp_path: Path) -> None:
    folder, feeds, _ = ew
    good = write_inputs(folder, feeds, tmp_path / "good")
    cases = {
        "missing": ({"k.npy": None}, 'cannot read input "k" (', "no such file"),
        "dtype": (
            {"x.npy": feeds["x"].astype(np.float64)},
            'input "x"',
            "holds float64, the model expects float32",
        ),
        "shape": (
            {"k.npy": feeds["k"][:2]},
            'input "k"',
            "has shape [2,7], the model expects [5,7]",
        ),
        "fortran": (
            {"x.npy": np.asfortranarray(feeds["x"])},
            'input "x"',
            "Fortran-order arrays are not supported",
        ),
    }
    for case, (changes, *parts) in cases.items():
        bad = tmp_path / case
        shutil.copytree(good, bad)
        for file, value in changes.items():
            (bad / file).unlink()
            if value is not None:
                np.save(bad / file, value)
        proc = node_run(folder, bad, tmp_path / f"{case}-out")
        assert proc.returncode == 1, (case, proc.stderr)
        assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr
        assert all(p in proc.stderr for p in parts), proc.stderr
    (tmp_path / "junk").mkdir()
    shutil.copytree(good, tmp_path / "junk", dirs_exist_ok=True)
    (tmp_path / "junk" / "x.npy").write_bytes(b"not an array")
    proc = node_run(folder, tmp_path / "junk", tmp_path / "junk-out")
    assert proc.returncode == 1 and "is not a .npy file" in proc.stderr
    usage = subprocess.run(
        [NODE, str(folder / "run.mjs")], capture_output=True, text=True, timeout=60, check=False
    )
    assert usage.returncode == 2 and usage.stderr.startswith(
        "usage: node run.mjs INPUT_DIR OUTPUT_DIR"
    )


@needs_node
def test_hostile_names(tmp_path: Path) -> None:
    model, feeds = hostile_model()
    folder = compile_wasm(model, tmp_path / "hostile")
    for name, tags in (("model.js", 0), ("index.html", 1), ("run.mjs", 0)):
        text = (folder / name).read_text()
        assert text.lower().count("</script") == text.lower().count("</title") == tags, name
        assert text.count("<!--") == (name == "index.html"), name  # only the header comment
        assert "\u2028" not in text and "\u2029" not in text and text.isascii(), name
        assert HOSTILE_IN not in text and HOSTILE_OUT not in text, name
    html = (folder / "index.html").read_text()
    assert "<code>&lt;/title&gt;&lt;script&gt;globalThis.pwned=1&lt;/script&gt;</code>" in html
    got = _node_script(
        folder,
        "globalThis.pwned = 0;\nconsole.log(JSON.stringify("
        "[signature.inputs[0].name, signature.outputs[0].name, globalThis.pwned]));",
    )
    assert got == [HOSTILE_IN, HOSTILE_OUT, 0]
    assert_outputs(folder, run_with_node(folder, feeds, tmp_path), ort_run(model, feeds), "node")


@needs_node
def test_embedded_weights(tmp_path: Path) -> None:
    """--embed-weights: no weights.bin, the weights are a data segment of model.wasm."""
    model, feeds = elementwise_model()
    folder = compile_wasm(model, tmp_path / "emb", embed=True)
    man = manifest_of(folder)
    assert man["weights"] == {"file": None, "embedded": True, "bytes": man["weights"]["bytes"]}
    assert (
        not (folder / "weights.bin").exists() and man["wasm"]["exports"]["weights"] == "tg_weights"
    )
    size = (folder / "model.wasm").stat().st_size
    assert man["wasm"]["code_bytes"] == size - man["weights"]["bytes"] <= 300_000
    expected = ort_run(model, feeds)
    assert_outputs(folder, run_with_node(folder, feeds, tmp_path), expected, "node (embedded)")
    assert_outputs(folder, run_with_wasmtime(folder, feeds), expected, "wasmtime (embedded)")
    got = _node_script(
        folder,
        """
const code = (await import("node:fs")).readFileSync(new URL("./model.wasm", import.meta.url));
const model = await load(code);
const out = await model.run({ x: new Float32Array(111), k: new BigInt64Array(35) });
console.log(JSON.stringify(Object.keys(out)));
""",
    )
    assert got == ["y", "m", "q", "c"]


def _serve(folder: Path) -> http.server.ThreadingHTTPServer:
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder))
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


PAGE_RUN = """async ([feeds]) => {
  const { load, signature } = await import("./model.js");
  const model = await load();
  const types = { float32: Float32Array, int64: BigInt64Array };
  const inputs = {};
  for (const s of signature.inputs) {
    const T = types[s.dtype];
    const data = T.from(feeds[s.name], (v) => (T === BigInt64Array ? BigInt(v) : v));
    inputs[s.name] = { data, dims: s.shape };
  }
  const out = await model.run(inputs);
  return Object.fromEntries(Object.entries(out).map(([k, v]) => [k, Array.from(v.data, Number)]));
}"""


@pytest.mark.skipif(not CHROMIUM.exists(), reason="chromium is not installed at /usr/bin/chromium")
def test_chromium(ew, tmp_path: Path) -> None:
    """index.html's demo and a direct model.js run in headless Chromium."""
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="the playwright Python package is not installed"
    )
    hostile, hostile_feeds = hostile_model()
    cases = [
        (ew[0], elementwise_model()[0], ew[1]),
        (compile_wasm(hostile, tmp_path / "hostile", embed=True), hostile, hostile_feeds),
    ]
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            for folder, model, feeds in cases:
                server = _serve(folder)
                try:
                    base = f"http://127.0.0.1:{server.server_address[1]}"
                    _check_page(browser.new_page(), base, folder, model, feeds)
                finally:
                    server.shutdown()
                    server.server_close()
        finally:
            browser.close()


def _page_outputs(folder: Path, values: dict[str, list]) -> dict[str, np.ndarray]:
    return {
        e["name"]: np.array(values[e["name"]]).astype(e["dtype"]).reshape(e["shape"])
        for e in manifest_of(folder)["outputs"]
    }


def _check_page(
    page: Any, base: str, folder: Path, model: onnx.ModelProto, feeds: dict[str, np.ndarray]
) -> None:
    """The demo runs on its random input (checked against onnxruntime on that input), shows
    every output name as text, and model.js imported by the page matches onnxruntime."""
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{base}/index.html")
    page.wait_for_function("window.torshDemo !== undefined", timeout=30_000)
    demo = page.evaluate(DEMO_STATE)
    assert "error" not in demo and not errors, (demo, errors)
    assert demo["latency"] >= 0 and demo["pwned"] is None
    assert page.inner_text("#status").startswith("Ran on random input: median latency")
    man = manifest_of(folder)
    shown = page.eval_on_selector_all(
        "#outputs tbody tr td:first-child", "cells => cells.map((c) => c.textContent)"
    )
    assert shown == [e["name"] for e in man["outputs"]]
    demo_feeds = {
        e["name"]: np.array(demo["inputs"][e["name"]]).astype(e["dtype"]).reshape(e["shape"])
        for e in man["inputs"]
    }
    assert_outputs(
        folder, _page_outputs(folder, demo["outputs"]), ort_run(model, demo_feeds), "chromium demo"
    )
    direct = page.evaluate(PAGE_RUN, [{k: v.ravel().tolist() for k, v in feeds.items()}])
    assert_outputs(
        folder, _page_outputs(folder, direct), ort_run(model, feeds), "chromium model.js"
    )


DEMO_STATE = """() => {
  const d = window.torshDemo;
  if (d.error) return d;
  const plain = (m) =>
    Object.fromEntries(Object.entries(m).map(([k, v]) => [k, Array.from(v.data, Number)]));
  const state = { inputs: plain(d.inputs), outputs: plain(d.outputs), latency: d.latencyMs };
  return { ...state, pwned: globalThis.pwned };
}"""


NETWORKS = {
    "mlp": mlp_model,
    "conv": functools.partial(cnn_model, pool=False),
    "cnn": cnn_model,
}


@needs_node
@pytest.mark.parametrize("name", list(NETWORKS))
def test_network(name: str, tmp_path: Path) -> None:
    """An MLP and small CNNs: node and wasmtime vs onnxruntime."""
    model, feeds = NETWORKS[name]()
    folder = compile_wasm(model, tmp_path / "net")
    expected = ort_run(model, feeds)
    assert_outputs(folder, run_with_node(folder, feeds, tmp_path), expected, "node")
    assert_outputs(folder, run_with_wasmtime(folder, feeds), expected, "wasmtime")
    assert manifest_of(folder)["wasm"]["code_bytes"] <= 300_000


def test_wasm_kernels_stay_separate_functions() -> None:
    """wasm32 keeps every kernel its own function (V8 compiles one huge inlined function
    with a worse register allocator); the native targets let LLVM inline them."""
    from tests.backends.native.helpers import lower_model
    from torsh_gen.backends.llvm.machine import assembly
    from torsh_gen.backends.llvm.program import emit_program
    from torsh_gen.backends.llvm.targets import load_target

    spec = load_target("wasm32")
    assert spec.inline_kernels is False and load_target("x86_64-linux").inline_kernels is True
    model = make_model(
        [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Sigmoid", ["a"], ["y"])],
        [helper.make_tensor_value_info("x", TP.FLOAT, (4, 64))],
        [helper.make_tensor_value_info("y", TP.FLOAT, (4, 64))],
    )
    program = lower_model(model, lanes=4, threads=False)
    asm = assembly(emit_program(program, "m", inline_kernels=False), spec)
    called = {line.split()[1] for line in asm.splitlines() if line.strip().startswith("call\t")}
    assert {k for k in program.kernels} <= called
    inlined = assembly(emit_program(program, "m"), spec)
    assert not any(line.strip().startswith("call\t") and line.split()[1] in program.kernels
                   for line in inlined.splitlines())


@needs_node
def test_channel_tile_convolutions_in_node(tmp_path: Path) -> None:
    """wasm32 turns on channel tiles (``conv_channel_tiles``): the 3x3 convolution (288
    multiply-adds per output) takes them, the strided 1x1 one (40) keeps the row tile; both
    match onnxruntime in Node."""
    from onnx import numpy_helper

    from torsh_gen.backends.llvm import schedule_for
    from torsh_gen.backends.llvm.targets import load_target

    assert schedule_for(load_target("wasm32")).channel_tiles is True
    assert schedule_for(load_target("aarch64-linux")).channel_tiles is None
    rng = np.random.default_rng(11)
    inits = [
        numpy_helper.from_array((rng.standard_normal((40, 32, 3, 3)) * 0.1).astype(np.float32), "w"),
        numpy_helper.from_array(rng.standard_normal(40).astype(np.float32), "b"),
        numpy_helper.from_array((rng.standard_normal((16, 40, 1, 1)) * 0.2).astype(np.float32), "s"),
    ]
    model = make_model(
        [
            helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["c"], ["r"]),
            helper.make_node("Conv", ["r", "s"], ["y"], strides=[2, 2]),
        ],
        [_vi("x", TP.FLOAT, (1, 32, 11, 9))],
        [_vi("y", TP.FLOAT, (1, 16, 6, 5))],
        inits,
    )
    import torsh_gen.passes.memplan  # noqa: F401  (registers plan_memory)
    from torsh_gen.backends.kernel.printer import format_kernel
    from torsh_gen.backends.kernel.program import build_program
    from torsh_gen.frontends.onnx import load_onnx
    from torsh_gen.ops.inference import infer_types
    from torsh_gen.passes import pipeline, run_passes

    graph = load_onnx(model.SerializeToString())
    run_passes(graph, pipeline("O3") + ["plan_memory"])
    infer_types(graph)
    program = build_program(graph, schedule_for(load_target("wasm32")))
    texts = [format_kernel(program.kernels[c.kernel]) for c in program.calls]
    import re

    across = [bool(re.search(r"for r\d+ in 0:i64\.\.8:i64 vector8 ", t)) for t in texts]
    assert across == [True, False]  # the 3x3 vectorizes across 8 output channels
    feeds = {"x": rand(1, 32, 11, 9, seed=6)}
    folder = compile_wasm(model, tmp_path / "cc")
    assert_outputs(folder, run_with_node(folder, feeds, tmp_path), ort_run(model, feeds), "node")
