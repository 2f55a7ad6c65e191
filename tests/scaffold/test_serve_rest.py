"""The generated REST service, run as a real server: answers vs onnxruntime, bad requests, load.

One project per model is generated per module (compiled engine for examples/tiny_cnn.onnx,
onnxruntime for a model with hostile tensor names) and started with ``python -m NAME``.
"""

from __future__ import annotations

import io
import json
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import EXAMPLE
from tests.scaffold import serve_support as sup

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("prometheus_client")

PATH = "/v1/models/tiny_cnn:predict"


def _ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def _npz(arrays: dict) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, value in arrays.items():
            with archive.open(f"{name}.npy", "w") as member:
                np.lib.format.write_array(member, value, allow_pickle=False)
    return buffer.getvalue()


def _arrays(body: bytes) -> dict:
    with np.load(io.BytesIO(body), allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files}


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("rest") / "svc"
    sup.generate(EXAMPLE, out, "rest", "compiled")
    return out


@pytest.fixture(scope="module")
def server(project):
    with sup.server_process(project, "tiny_cnn", _ready, "--max-request-bytes", "200000") as port:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            yield client


def _image(batch: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, 1, 28, 28)).astype(np.float32)


def test_json_and_npz_answers_match_onnxruntime(server):
    x = _image(3)
    want = sup.onnxruntime_outputs(EXAMPLE, {"image": x})["probs"]
    r = server.post(PATH, json={"inputs": {"image": x.tolist()}})
    assert r.status_code == 200, r.text
    assert r.json()["model"] == "tiny_cnn"
    np.testing.assert_allclose(
        np.asarray(r.json()["outputs"]["probs"], np.float32), want, rtol=1e-4, atol=1e-5
    )
    r = server.post(
        PATH,
        content=_npz({"image": x}),
        headers={"Content-Type": "application/x-npz", "Accept": "application/x-npz"},
    )
    assert r.status_code == 200 and r.headers["content-type"] == "application/x-npz"
    got = _arrays(r.content)["probs"]
    assert got.dtype == np.float32 and got.shape == (3, 10)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    buffer = io.BytesIO()
    np.save(buffer, x)
    r = server.post(PATH, content=buffer.getvalue(), headers={"Content-Type": "application/x-npy"})
    np.testing.assert_allclose(
        np.asarray(r.json()["outputs"]["probs"], np.float32), want, rtol=1e-4, atol=1e-5
    )


@pytest.mark.parametrize(
    "body, content_type, status, words",
    [
        (b"{oops", "application/json", 400, "not valid JSON"),
        (json.dumps({"inputs": {}}).encode(), "application/json", 400, "missing input(s) 'image'"),
        (
            json.dumps({"inputs": {"image": [[1, 2], [3]]}}).encode(),
            "application/json",
            400,
            "rectangular",
        ),
        (json.dumps({"inputs": {"image": [1.0] * 4}}).encode(), "application/json", 400, "1 dims"),
        (
            json.dumps({"inputs": {"image": np.zeros((1, 1, 27, 28)).tolist()}}).encode(),
            "application/json",
            400,
            "dim 2 must be 28",
        ),
        (json.dumps({"inputs": {"image": "abc"}}).encode(), "application/json", 400, "'image'"),
        (
            json.dumps({"inputs": {"image": [], "extra": 1}}).encode(),
            "application/json",
            400,
            "unknown input(s) 'extra'",
        ),
        (json.dumps([1, 2]).encode(), "application/json", 400, '{"inputs"'),
        (
            _npz({"image": np.zeros((1, 1, 28, 28), np.float64)}),
            "application/x-npz",
            400,
            "dtype float64",
        ),
        (b"PK\x03\x04junk", "application/x-npz", 400, "npz"),
        (b"\x93NUMPY junk", "application/x-npy", 400, "npy"),
        (b"x", "text/csv", 415, "Content-Type"),
    ],
)
def test_malformed_requests_get_4xx_naming_the_problem(server, body, content_type, status, words):
    r = server.post(PATH, content=body, headers={"Content-Type": content_type})
    assert r.status_code == status, r.text
    assert words in r.json()["error"]


def test_unknown_model_and_oversized_bodies(server):
    assert server.post("/v1/models/other:predict", json={"inputs": {}}).status_code == 404
    big = _npz({"image": _image(80)})  # 250 kB > --max-request-bytes 200000
    r = server.post(PATH, content=big, headers={"Content-Type": "application/x-npz"})
    assert r.status_code == 413 and "limit" in r.json()["error"]

    def chunks():  # no Content-Length: the limit applies while streaming
        for i in range(0, len(big), 65536):
            yield big[i : i + 65536]

    r = server.post(PATH, content=chunks(), headers={"Content-Type": "application/x-npz"})
    assert r.status_code == 413


def test_zip_bomb_is_refused_before_decompressing(server):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("image.npy", b"\0" * 5_000_000)
    assert len(buffer.getvalue()) < 200000
    r = server.post(PATH, content=buffer.getvalue(), headers={"Content-Type": "application/x-npz"})
    assert r.status_code == 413 and "expands" in r.json()["error"]


def test_concurrent_requests_each_get_their_own_answer(server):
    xs = [_image(1 + i % 3, seed=i) for i in range(16)]
    with ThreadPoolExecutor(4) as pool:
        answers = list(
            pool.map(
                lambda x: server.post(PATH, json={"inputs": {"image": x.tolist()}}), xs, timeout=120
            )
        )
    for x, r in zip(xs, answers):
        want = sup.onnxruntime_outputs(EXAMPLE, {"image": x})["probs"]
        np.testing.assert_allclose(
            np.asarray(r.json()["outputs"]["probs"], np.float32), want, rtol=1e-4, atol=1e-5
        )


def test_health_metrics_openapi_metadata(server):
    assert server.get("/healthz").json() == {"status": "ok"}
    server.post(PATH, json={"inputs": {}})
    text = server.get("/metrics").text
    assert 'predict_requests_total{code="400",model="tiny_cnn"}' in text
    assert (
        "predict_latency_seconds_bucket" in text
        and 'predict_errors_total{model="tiny_cnn",reason="bad_request"}' in text
    )
    schema = server.get("/openapi.json").json()
    body = schema["paths"]["/v1/models/{model}:predict"]["post"]["requestBody"]["content"]
    assert body["application/json"]["schema"]["properties"]["inputs"]["required"] == ["image"]
    meta = server.get("/v1/models/tiny_cnn").json()
    assert meta["inputs"] == [{"name": "image", "dtype": "float32", "shape": ["batch", 1, 28, 28]}]


@pytest.mark.slow  # a load run against a live server (12 s)
def test_load_throughput_and_micro_batching(project, capsys):
    """A 2 s load run with and without micro-batching; answers stay right under batching."""
    x = _image(1)
    body = _npz({"image": x})
    headers = {"Content-Type": "application/x-npz", "Accept": "application/x-npz"}
    want = sup.onnxruntime_outputs(EXAMPLE, {"image": x})["probs"]
    rates = {}
    for label, args in (("plain", ()), ("batched", ("--max-batch", "8", "--max-wait-ms", "2"))):
        with sup.server_process(project, "tiny_cnn", _ready, *args) as port:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:

                def call():
                    r = client.post(PATH, content=body, headers=headers)
                    assert r.status_code == 200, r.text
                    np.testing.assert_allclose(
                        _arrays(r.content)["probs"], want, rtol=1e-4, atol=1e-5
                    )

                count, rate = sup.load(call, seconds=2.0, threads=4)
                rates[label] = rate
                assert count > 0
                if label == "batched":
                    metrics = client.get("/metrics").text
                    assert "predict_batch_rows_count" in metrics
    with capsys.disabled():
        print(
            f"\nREST tiny_cnn throughput (4 client threads, 2 s): {rates['plain']:.0f} req/s plain, {rates['batched']:.0f} req/s micro-batched"
        )


@pytest.mark.slow  # the generated project's own tests cover auth in-process
def test_bearer_token_from_environment(project):
    with sup.server_process(project, "tiny_cnn", _ready, env={"TINY_CNN_TOKEN": "tok"}) as port:
        url = f"http://127.0.0.1:{port}{PATH}"
        body = {"inputs": {"image": _image(1).tolist()}}
        assert httpx.post(url, json=body, timeout=30).status_code == 401
        assert (
            httpx.post(
                url, json=body, headers={"Authorization": "Bearer nope"}, timeout=30
            ).status_code
            == 401
        )
        assert (
            httpx.post(
                url, json=body, headers={"Authorization": "Bearer tok"}, timeout=30
            ).status_code
            == 200
        )


def test_generated_project_tests_pass(project):
    result = sup.run_project_tests(project)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert " passed" in result.stdout


def test_hostile_names_stay_data(tmp_path):
    """Quotes, newlines, code and keywords as tensor names: served correctly, never executed."""
    import onnx

    model_path = tmp_path / "evil.onnx"
    onnx.save(sup.hostile_model(), model_path)
    sup.SENTINEL.unlink(missing_ok=True)
    out = tmp_path / "svc"
    report = sup.generate(model_path, out, "rest", "onnxruntime", name="evil")
    assert report.batch_dim == sup.HOSTILE_DIM
    inputs = sup.random_inputs([(n, "float32", (2, 3)) for n in sup.HOSTILE_INPUTS])
    want = sup.onnxruntime_outputs(model_path, inputs)
    with sup.server_process(out, "evil", _ready) as port:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            r = client.post(
                "/v1/models/evil:predict",
                json={"inputs": {k: v.tolist() for k, v in inputs.items()}},
            )
            assert r.status_code == 200, r.text
            for name in sup.HOSTILE_OUTPUTS:
                np.testing.assert_allclose(
                    np.asarray(r.json()["outputs"][name], np.float32), want[name], rtol=1e-6
                )
            r = client.post(
                "/v1/models/evil:predict",
                content=_npz(inputs),
                headers={"Content-Type": "application/x-npz", "Accept": "application/x-npz"},
            )
            got = _arrays(r.content)
            for name in sup.HOSTILE_OUTPUTS:
                np.testing.assert_allclose(got[name], want[name], rtol=1e-6)
            bad = dict(inputs)
            bad[sup.HOSTILE_INPUTS[1]] = np.zeros((3, 3), np.float32)
            r = client.post(
                "/v1/models/evil:predict",
                content=_npz(bad),
                headers={"Content-Type": "application/x-npz"},
            )
            assert r.status_code == 400 and "'class'" in r.json()["error"]
    assert not sup.SENTINEL.exists()
    result = sup.run_project_tests(out)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert not sup.SENTINEL.exists()


def test_fixed_shapes_and_integer_inputs(tmp_path):
    """No batch dim (no batcher generated), an int64 input: JSON values are checked, not cast."""
    import onnx

    model_path = tmp_path / "ints.onnx"
    onnx.save(sup.int_model(), model_path)
    out = tmp_path / "svc"
    report = sup.generate(model_path, out, "rest", "onnxruntime")
    assert report.batch_dim is None and not (out / "ints" / "batching.py").exists()
    ids = np.arange(6, dtype=np.int64).reshape(2, 3)
    x = np.ones((2, 3), np.float32)
    want = sup.onnxruntime_outputs(model_path, {"ids": ids, "x": x})["y"]
    with sup.server_process(out, "ints", _ready) as port:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            path = "/v1/models/ints:predict"
            r = client.post(path, json={"inputs": {"ids": ids.tolist(), "x": x.tolist()}})
            np.testing.assert_array_equal(np.asarray(r.json()["outputs"]["y"], np.float32), want)
            r = client.post(path, json={"inputs": {"ids": (ids + 0.5).tolist(), "x": x.tolist()}})
            assert r.status_code == 400 and "integers" in r.json()["error"]
            r = client.post(path, json={"inputs": {"ids": [[2**70] * 3] * 2, "x": x.tolist()}})
            assert r.status_code == 400
            r = client.post(
                path, json={"inputs": {"ids": ids.tolist(), "x": [["NaN", "Infinity", 1]] * 2}}
            )
            assert r.status_code == 200 and r.json()["outputs"]["y"][0][:2] == ["NaN", "Infinity"]
            r = client.post(path, json={"inputs": {"ids": ids.tolist(), "x": [["1", "a", 1]] * 2}})
            assert r.status_code == 400
    result = sup.run_project_tests(out)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def test_output_of_unknown_shape(tmp_path):
    """A Reshape by a runtime shape: the output's shape is unknown until the model runs."""
    import onnx
    from onnx import TensorProto, helper

    from tests.conftest import make_model, tensor_info

    model = make_model(
        [helper.make_node("Reshape", ["x", "s"], ["y"])],
        [tensor_info("x", ["n", 6]), tensor_info("s", [2], TensorProto.INT64)],
        [tensor_info("y", None)],
    )
    model_path = tmp_path / "reshape.onnx"
    onnx.save(model, model_path)
    out = tmp_path / "svc"
    report = sup.generate(model_path, out, "rest", "onnxruntime")
    assert report.batch_dim is None  # the output does not promise a batch dim
    with sup.server_process(out, "reshape", _ready) as port:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            schema = client.get("/openapi.json").json()
            answer = schema["paths"]["/v1/models/{model}:predict"]["post"]["responses"]["200"]
            assert "float32[unknown shape]" in json.dumps(answer)
            assert client.get("/v1/models/reshape").json()["outputs"][0]["shape"] is None
            x = np.arange(12, dtype=np.float32).reshape(2, 6)
            r = client.post(
                "/v1/models/reshape:predict", json={"inputs": {"x": x.tolist(), "s": [4, -1]}}
            )
            assert r.status_code == 200, r.text
            np.testing.assert_array_equal(np.asarray(r.json()["outputs"]["y"]), x.reshape(4, 3))
