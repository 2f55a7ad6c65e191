"""Tests of the service in-process (FastAPI's TestClient): answers, validation, limits, auth.

Answers are compared with calling the engine directly, so these tests check the service
around the model; the model itself was checked against onnxruntime when it was generated.
"""

from __future__ import annotations

import io
import json
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient

from tiny_cnn import codec
from tiny_cnn.app import PREDICT_PATH, Settings, create_app
from tiny_cnn.engine import Engine
from tiny_cnn.signature import INPUTS, OUTPUTS, example_inputs


def _started(settings: Settings) -> TestClient:
    client = TestClient(create_app(settings))
    client.__enter__()
    deadline = time.monotonic() + 300  # the first start compiles the model's kernels
    while client.get("/readyz").status_code != 200:
        assert time.monotonic() < deadline, client.get("/readyz").json()
        time.sleep(0.05)
    return client


@pytest.fixture(scope="module")
def client():
    c = _started(Settings())
    yield c
    c.__exit__(None, None, None)


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine()


def _npz(arrays: dict) -> bytes:
    return codec.write_npz(arrays)


def _post_npz(client: TestClient, arrays: dict, **headers):
    headers = {"Content-Type": codec.NPZ, "Accept": codec.NPZ, **headers}
    return client.post(PREDICT_PATH, content=_npz(arrays), headers=headers)


def test_health_and_readiness(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").status_code == 200


def test_npz_request_matches_the_engine(client, engine):
    inputs = example_inputs(seed=1)
    response = _post_npz(client, inputs)
    assert response.status_code == 200, response.text
    with np.load(io.BytesIO(response.content), allow_pickle=False) as got:
        assert sorted(got.files) == sorted(spec.name for spec in OUTPUTS)
        for name, want in engine.run(inputs).items():
            assert got[name].dtype == want.dtype
            np.testing.assert_allclose(got[name], want, rtol=1e-6, atol=1e-7)


def test_json_request_matches_the_engine(client, engine):
    inputs = example_inputs(seed=2)
    body = {"inputs": {name: value.tolist() for name, value in inputs.items()}}
    response = client.post(PREDICT_PATH, json=body)
    assert response.status_code == 200, response.text
    outputs = response.json()["outputs"]
    for name, want in engine.run(inputs).items():
        np.testing.assert_allclose(
            np.asarray(outputs[name], dtype=want.dtype), want, rtol=1e-6, atol=1e-7
        )


def test_missing_and_unknown_inputs_are_named(client):
    inputs = example_inputs()
    missing = dict(inputs)
    gone = INPUTS[0].name
    del missing[gone]
    response = _post_npz(client, missing)
    assert response.status_code == 400 and repr(gone) in response.json()["error"]
    extra = {**inputs, "no such input": np.zeros(1, np.float32)}
    response = _post_npz(client, extra)
    assert response.status_code == 400 and "'no such input'" in response.json()["error"]


def test_wrong_dtype_and_shape_are_refused(client):
    spec = INPUTS[0]
    inputs = example_inputs()
    wrong = np.int8 if spec.dtype != "int8" else np.float32
    response = _post_npz(client, {**inputs, spec.name: inputs[spec.name].astype(wrong)})
    assert response.status_code == 400 and "dtype" in response.json()["error"]
    response = _post_npz(client, {**inputs, spec.name: inputs[spec.name][..., None]})
    assert response.status_code == 400 and "dims" in response.json()["error"]


def test_malformed_bodies_are_refused(client):
    response = client.post(
        PREDICT_PATH, content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400 and "JSON" in response.json()["error"]
    response = client.post(PREDICT_PATH, json={"inputs": {INPUTS[0].name: [[1, 2], [3]]}})
    assert response.status_code == 400
    response = client.post(
        PREDICT_PATH, content=b"PK\x03\x04garbage", headers={"Content-Type": codec.NPZ}
    )
    assert response.status_code == 400 and "npz" in response.json()["error"]
    response = client.post(PREDICT_PATH, content=b"x", headers={"Content-Type": "text/plain"})
    assert response.status_code == 415


def test_unknown_model_is_404(client):
    response = client.post("/v1/models/other:predict", json={"inputs": {}})
    assert response.status_code == 404


def test_oversized_request_is_413():
    small = _started(Settings(max_request_bytes=64))
    try:
        response = _post_npz(small, example_inputs())
        assert response.status_code == 413, response.text
    finally:
        small.__exit__(None, None, None)


def test_bearer_token(monkeypatch):
    monkeypatch.setenv("TINY_CNN_TEST_TOKEN", "s3cret")
    secured = _started(Settings(token_env="TINY_CNN_TEST_TOKEN"))
    try:
        assert _post_npz(secured, example_inputs()).status_code == 401
        assert _post_npz(secured, example_inputs(), Authorization="Bearer nope").status_code == 401
        assert (
            _post_npz(secured, example_inputs(), Authorization="Bearer s3cret").status_code == 200
        )
        assert secured.get("/healthz").status_code == 200
    finally:
        secured.__exit__(None, None, None)


def test_metrics_and_openapi(client):
    _post_npz(client, example_inputs())
    text = client.get("/metrics").text
    assert "predict_requests_total" in text and "predict_latency_seconds_bucket" in text
    schema = client.get("/openapi.json").json()
    assert PREDICT_PATH.replace("tiny_cnn", "{model}") in schema["paths"]
    json.dumps(schema)


def test_micro_batches_split_back_to_each_request(engine):
    from tiny_cnn.batching import MicroBatcher

    batcher = MicroBatcher(engine, max_batch=8, max_wait=0.05)
    try:
        requests = [example_inputs(seed=i) for i in range(5)]
        futures = [batcher.submit(r) for r in requests]
        for request, future in zip(requests, futures):
            got = future.result(timeout=60)
            for name, want in engine.run(request).items():
                np.testing.assert_allclose(got[name], want, rtol=1e-5, atol=1e-6)
    finally:
        batcher.close()
