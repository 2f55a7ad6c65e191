"""The generated gRPC service, run as a real server: answers vs onnxruntime, bad requests, load.

The client comes from the generated project itself (its stubs were compiled at generation
time), imported from the project folder in a subprocess-free way: the folder goes on
``sys.path`` for the duration of a test.
"""

from __future__ import annotations

import importlib
import sys
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import EXAMPLE
from tests.scaffold import serve_support as sup

grpc = pytest.importorskip("grpc")
pytest.importorskip("grpc_tools")
pytest.importorskip("grpc_health")
pytest.importorskip("grpc_reflection")
pytest.importorskip("prometheus_client")


@contextmanager
def project_modules(project: Path, name: str):
    """Import the generated package ``name`` from ``project``; forget it afterwards."""
    sys.path.insert(0, str(project))
    try:
        yield importlib.import_module(f"{name}.client"), importlib.import_module(f"{name}.tensors")
    finally:
        sys.path.remove(str(project))
        for mod in [m for m in sys.modules if m == name or m.startswith(f"{name}.")]:
            del sys.modules[mod]


def _ready(port: int) -> bool:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=2
            )
        except grpc.RpcError:
            return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("grpc") / "svc"
    sup.generate(EXAMPLE, out, "grpc", "compiled")
    return out


@pytest.fixture(scope="module")
def target(project):
    with sup.server_process(project, "tiny_cnn", _ready, "--max-request-bytes", "200000") as port:
        yield f"127.0.0.1:{port}"


@pytest.fixture(scope="module")
def modules(project):
    with project_modules(project, "tiny_cnn") as mods:
        yield mods


def _image(batch: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, 1, 28, 28)).astype(np.float32)


def _call(target: str, tensors, request):
    """Send a raw PredictRequest; (status code, details)."""
    pb = tensors.pb
    with grpc.insecure_channel(target) as channel:
        rpc = channel.unary_unary(
            "/tiny_cnn.v1.Model/Predict",
            request_serializer=pb.PredictRequest.SerializeToString,
            response_deserializer=pb.PredictResponse.FromString,
        )
        try:
            rpc(request, timeout=30)
        except grpc.RpcError as e:
            return e.code(), e.details()
    return grpc.StatusCode.OK, ""


def test_answers_match_onnxruntime(target, modules):
    client_mod, _ = modules
    x = _image(3)
    want = sup.onnxruntime_outputs(EXAMPLE, {"image": x})["probs"]
    with client_mod.Client(target) as client:
        got = client.predict({"image": x})["probs"]
    assert got.dtype == np.float32 and got.shape == (3, 10)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_malformed_requests_are_invalid_argument(target, modules):
    _, tensors = modules
    pb = tensors.pb
    assert _call(target, tensors, pb.PredictRequest())[0] == grpc.StatusCode.INVALID_ARGUMENT
    code, details = _call(target, tensors, pb.PredictRequest())
    assert "missing field(s) image" in details
    cases = [
        (tensors.to_tensor(_image(1).astype(np.float64)), "dtype float64"),
        (tensors.to_tensor(np.zeros((1, 1, 28, 27), np.float32)), "dim 3 must be 28"),
        (tensors.to_tensor(np.zeros((28, 28), np.float32)), "2 dims"),
        (pb.Tensor(dtype="float32", shape=[1, 1, 28, 28], data=b"\0" * 10), "bytes of data"),
        (pb.Tensor(dtype="object", shape=[1], data=b"\0" * 8), "dtype 'object'"),
        (pb.Tensor(dtype="float32", shape=[1, -1, 28, 28], data=b""), "negative"),
    ]
    for tensor, words in cases:
        code, details = _call(target, tensors, pb.PredictRequest(image=tensor))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and words in details, (words, details)


def test_oversized_request_is_resource_exhausted(target, modules):
    _, tensors = modules
    code, _ = _call(target, tensors, tensors.predict_request({"image": _image(80)}))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_concurrent_requests(target, modules):
    client_mod, _ = modules
    xs = [_image(1 + i % 3, seed=i) for i in range(16)]
    with client_mod.Client(target) as client, ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda x: client.predict({"image": x}), xs, timeout=120))
    for x, got in zip(xs, answers):
        want = sup.onnxruntime_outputs(EXAMPLE, {"image": x})["probs"]
        np.testing.assert_allclose(got["probs"], want, rtol=1e-4, atol=1e-5)


def test_health_and_reflection(target):
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    with grpc.insecure_channel(target) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        (reply,) = list(stub.ServerReflectionInfo(iter([request]), timeout=30))
    names = {s.name for s in reply.list_services_response.service}
    assert {"tiny_cnn.v1.Model", "grpc.health.v1.Health"} <= names


@pytest.mark.slow
def test_load_throughput_batching_metrics_and_auth(project, modules, capsys):
    """2 s load runs (plain and micro-batched, metrics served over HTTP), then a token check."""
    import httpx

    client_mod, _ = modules
    x = _image(1)
    want = sup.onnxruntime_outputs(EXAMPLE, {"image": x})["probs"]
    rates = {}
    metrics_port = sup.free_port()
    runs = (
        ("plain", ()),
        (
            "batched",
            ("--max-batch", "8", "--max-wait-ms", "2", "--metrics-port", str(metrics_port)),
        ),
    )
    for label, args in runs:
        with (
            sup.server_process(project, "tiny_cnn", _ready, *args) as port,
            client_mod.Client(f"127.0.0.1:{port}") as client,
        ):

            def call():
                np.testing.assert_allclose(
                    client.predict({"image": x})["probs"], want, rtol=1e-4, atol=1e-5
                )

            count, rates[label] = sup.load(call, seconds=2.0, threads=4)
            assert count > 0
            if label == "batched":
                text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text
                assert 'predict_requests_total{code="OK",model="tiny_cnn"}' in text
    with capsys.disabled():
        print(
            f"\ngRPC tiny_cnn throughput (4 client threads, 2 s): {rates['plain']:.0f} req/s plain, {rates['batched']:.0f} req/s micro-batched"
        )
    with sup.server_process(project, "tiny_cnn", _ready, env={"TINY_CNN_TOKEN": "tok"}) as port:
        with (
            client_mod.Client(f"127.0.0.1:{port}") as client,
            pytest.raises(grpc.RpcError) as denied,
        ):
            client.predict({"image": x})
        assert denied.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with client_mod.Client(f"127.0.0.1:{port}", token="tok") as client:
            np.testing.assert_allclose(
                client.predict({"image": x})["probs"], want, rtol=1e-4, atol=1e-5
            )


def test_generated_project_tests_pass(project):
    result = sup.run_project_tests(project)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


@pytest.mark.parametrize(
    "engine", [pytest.param("compiled", marks=pytest.mark.slow), "onnxruntime"]
)
def test_hostile_names_stay_data(tmp_path, engine):
    """Hostile tensor names become safe proto fields; the service answers as onnxruntime does."""
    import onnx

    model_path = tmp_path / "evil.onnx"
    onnx.save(sup.hostile_model(), model_path)
    sup.SENTINEL.unlink(missing_ok=True)
    out = tmp_path / "svc"
    sup.generate(model_path, out, "grpc", engine, name="evil")
    inputs = sup.random_inputs([(n, "float32", (2, 3)) for n in sup.HOSTILE_INPUTS])
    want = sup.onnxruntime_outputs(model_path, inputs)
    with (
        sup.server_process(out, "evil", _ready) as port,
        project_modules(out, "evil") as (client_mod, tensors),
    ):
        assert list(tensors.INPUT_FIELDS.values()) == [
            "x___import___os_system_touch_tmp_torsh_g",
            "class_",
            "a_b",
            "a_b_v2",
        ]
        with client_mod.Client(f"127.0.0.1:{port}") as client:
            got = client.predict(inputs)
        for name in sup.HOSTILE_OUTPUTS:
            np.testing.assert_allclose(got[name], want[name], rtol=1e-6)
    assert not sup.SENTINEL.exists()
    if engine == "compiled":
        result = sup.run_project_tests(out)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert not sup.SENTINEL.exists()


def test_fixed_shapes_and_integer_inputs(tmp_path):
    """No batch dim (no batcher), an int64 input: the project's own tests and one real call."""
    import onnx

    model_path = tmp_path / "ints.onnx"
    onnx.save(sup.int_model(), model_path)
    out = tmp_path / "svc"
    sup.generate(model_path, out, "grpc", "onnxruntime")
    assert not (out / "ints" / "batching.py").exists()
    inputs = {"ids": np.arange(6, dtype=np.int64).reshape(2, 3), "x": np.ones((2, 3), np.float32)}
    want = sup.onnxruntime_outputs(model_path, inputs)["y"]
    with (
        sup.server_process(out, "ints", _ready) as port,
        project_modules(out, "ints") as (client_mod, _),
    ):
        with client_mod.Client(f"127.0.0.1:{port}") as client:
            np.testing.assert_array_equal(client.predict(inputs)["y"], want)
    result = sup.run_project_tests(out)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
