"""Tests of the service on 127.0.0.1: answers, validation, limits, auth, health, reflection.

Answers are compared with calling the engine directly, so these tests check the service
around the model; the model itself was checked against onnxruntime when it was generated.
"""

from __future__ import annotations

import grpc
import numpy as np
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tiny_cnn.client import Client
from tiny_cnn.engine import Engine
from tiny_cnn.proto import tiny_cnn_pb2 as pb
from tiny_cnn.server import SERVICE_NAME, Settings, start
from tiny_cnn.signature import INPUTS, OUTPUTS, example_inputs
from tiny_cnn.tensors import INPUT_FIELDS, predict_request, to_tensor


def _started(settings: Settings):
    server, port, servicer = start(settings)
    assert servicer.ready.wait(timeout=300), servicer.error  # the first start compiles kernels
    return server, f"127.0.0.1:{port}"


@pytest.fixture(scope="module")
def target():
    server, address = _started(Settings(port=0))
    yield address
    server.stop(grace=None)


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine()


def test_predict_matches_the_engine(target, engine):
    inputs = example_inputs(seed=1)
    with Client(target) as client:
        got = client.predict(inputs)
    assert sorted(got) == sorted(spec.name for spec in OUTPUTS)
    for name, want in engine.run(inputs).items():
        assert got[name].dtype == want.dtype
        np.testing.assert_allclose(got[name], want, rtol=1e-6, atol=1e-7)


def _status(target: str, request) -> tuple[grpc.StatusCode, str]:
    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary(
            f"/{SERVICE_NAME}/Predict",
            request_serializer=pb.PredictRequest.SerializeToString,
            response_deserializer=pb.PredictResponse.FromString,
        )
        try:
            call(request, timeout=30)
        except grpc.RpcError as e:
            return e.code(), e.details()
    return grpc.StatusCode.OK, ""


def test_missing_input_is_named(target):
    request = predict_request(example_inputs())
    field = INPUT_FIELDS[INPUTS[0].name]
    request.ClearField(field)
    code, details = _status(target, request)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and field in details


def test_wrong_dtype_shape_and_data_are_refused(target):
    spec = INPUTS[0]
    inputs = example_inputs()
    wrong = np.int8 if spec.dtype != "int8" else np.float32
    code, details = _status(
        target, predict_request({**inputs, spec.name: inputs[spec.name].astype(wrong)})
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "dtype" in details
    code, details = _status(
        target, predict_request({**inputs, spec.name: inputs[spec.name][..., None]})
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "dims" in details
    request = predict_request(inputs)
    field = INPUT_FIELDS[spec.name]
    broken = to_tensor(inputs[spec.name])
    broken.data = broken.data[:-1]
    getattr(request, field).CopyFrom(broken)
    code, details = _status(target, request)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "bytes" in details
    broken.dtype = "object"
    getattr(request, field).CopyFrom(broken)
    assert _status(target, request)[0] == grpc.StatusCode.INVALID_ARGUMENT


def test_oversized_request_is_refused():
    server, address = _started(Settings(port=0, max_request_bytes=16))
    try:
        code, _ = _status(address, predict_request(example_inputs()))
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    finally:
        server.stop(grace=None)


def test_bearer_token(monkeypatch):
    monkeypatch.setenv("TINY_CNN_TEST_TOKEN", "s3cret")
    server, address = _started(Settings(port=0, token_env="TINY_CNN_TEST_TOKEN"))
    try:
        with Client(address) as client, pytest.raises(grpc.RpcError) as denied:
            client.predict(example_inputs())
        assert denied.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with Client(address, token="s3cret") as client:
            assert client.predict(example_inputs())
            assert client.health() == "SERVING"  # health stays open
    finally:
        server.stop(grace=None)


def test_health_and_reflection(target):
    with Client(target) as client:
        assert client.health() == "SERVING"
        assert client.health(SERVICE_NAME) == "SERVING"
    with grpc.insecure_channel(target) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        (reply,) = list(stub.ServerReflectionInfo(iter([request]), timeout=30))
        names = {s.name for s in reply.list_services_response.service}
    assert SERVICE_NAME in names and "grpc.health.v1.Health" in names


def test_concurrent_requests(target, engine):
    from concurrent.futures import ThreadPoolExecutor

    requests = [example_inputs(seed=i) for i in range(8)]
    with Client(target) as client, ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(client.predict, requests, timeout=120))
    for request, got in zip(requests, answers):
        for name, want in engine.run(request).items():
            np.testing.assert_allclose(got[name], want, rtol=1e-6, atol=1e-7)


def test_micro_batching_server(engine):
    from concurrent.futures import ThreadPoolExecutor

    server, address = _started(Settings(port=0, max_batch=8, max_wait_ms=20))
    try:
        requests = [example_inputs(seed=i) for i in range(6)]
        with Client(address) as client, ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(client.predict, requests, timeout=120))
        for request, got in zip(requests, answers):
            for name, want in engine.run(request).items():
                np.testing.assert_allclose(got[name], want, rtol=1e-5, atol=1e-6)
    finally:
        server.stop(grace=None)
