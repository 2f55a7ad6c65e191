"""The gRPC server: the Model service, standard health checking and reflection.

``start(settings)`` binds, starts and returns the server and its port; the model loads in
a background thread, and health reports NOT_SERVING until it is loaded and warmed up.
When the environment variable named by ``Settings.token_env`` is set, Predict requires
the metadata ``authorization: Bearer <its value>``; health and reflection stay open.
"""

from __future__ import annotations

import hmac
import logging
import os
import threading
import time
from concurrent import futures
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from . import metrics
from .engine import Engine
from .proto import tiny_cnn_pb2 as pb
from .proto import tiny_cnn_pb2_grpc as pb_grpc
from .signature import INPUTS, MODEL_NAME, RequestError, check_inputs
from .tensors import predict_response, request_arrays

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Model"].full_name
PREDICT_METHOD = f"/{SERVICE_NAME}/Predict"


@dataclass(frozen=True)
class Settings:
    """Service options (``python -m tiny_cnn --help`` sets them from the command line)."""

    host: str = "127.0.0.1"
    port: int = 50051
    max_request_bytes: int = 64 * 1024 * 1024
    token_env: str = "TINY_CNN_TOKEN"
    threads: int = 0
    workers: int = 8
    max_batch: int = 1  # 1 turns micro-batching off
    max_wait_ms: float = 2.0


class ModelServicer(pb_grpc.ModelServicer):
    """Predict: decode, check, run (directly or through the micro-batcher), encode."""

    def __init__(self, settings: Settings, health_servicer: health.HealthServicer) -> None:
        self._settings = settings
        self._health = health_servicer
        self._runner = None
        self._batched = False
        self.error: str | None = None
        self.ready = threading.Event()

    def load(self) -> None:
        """Load and warm up the engine, then report SERVING."""
        try:
            engine = Engine(threads=self._settings.threads)
            engine.warm_up()
            runner = engine.run
            if self._settings.max_batch > 1:
                from .batching import MicroBatcher

                batcher = MicroBatcher(
                    engine, self._settings.max_batch, self._settings.max_wait_ms / 1000
                )
                runner = lambda inputs: batcher.submit(inputs).result()  # noqa: E731
                self._batched = True
            self._runner = runner
            self.ready.set()
            for service in ("", SERVICE_NAME):
                self._health.set(service, health_pb2.HealthCheckResponse.SERVING)
            log.info("model %s loaded", MODEL_NAME)
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            log.exception("loading the model failed")

    def Predict(self, request, context):  # noqa: N802  (the RPC's name)
        start = time.perf_counter()
        code = grpc.StatusCode.OK
        try:
            code, message, response = self._predict(request)
            if code != grpc.StatusCode.OK:
                context.abort(code, message)
            return response
        finally:
            metrics.REQUESTS.labels(MODEL_NAME, code.name).inc()
            metrics.LATENCY.labels(MODEL_NAME).observe(time.perf_counter() - start)

    def _predict(self, request):
        if not self.ready.is_set():
            detail = (
                f"failed to load: {self.error}" if self.error else "still loading; retry shortly"
            )
            return self._fail(grpc.StatusCode.UNAVAILABLE, f"the model is {detail}", "not_ready")
        try:
            arrays = check_inputs(request_arrays(request))
        except RequestError as e:
            return self._fail(grpc.StatusCode.INVALID_ARGUMENT, str(e), "bad_request")
        try:
            if not self._batched:  # the micro-batcher records its own batch sizes
                first = arrays[INPUTS[0].name]
                metrics.BATCH_ROWS.observe(int(first.shape[0]) if first.ndim else 1)
            outputs = self._runner(arrays)
        except Exception as exc:
            log.exception("the model failed on a request")
            return self._fail(
                grpc.StatusCode.INTERNAL,
                f"the model failed: {type(exc).__name__}: {exc}",
                "model_error",
            )
        return grpc.StatusCode.OK, "", predict_response(outputs)

    @staticmethod
    def _fail(code: grpc.StatusCode, message: str, reason: str):
        metrics.ERRORS.labels(MODEL_NAME, reason).inc()
        return code, message, None


class _BearerToken(grpc.ServerInterceptor):
    """Refuse Predict calls without the bearer token (when one is configured)."""

    def __init__(self, token_env: str) -> None:
        self._token_env = token_env

    def intercept_service(self, continuation, handler_call_details):
        token = os.environ.get(self._token_env)
        if not token or handler_call_details.method != PREDICT_METHOD:
            return continuation(handler_call_details)
        given = dict(handler_call_details.invocation_metadata or ()).get("authorization", "")
        if isinstance(given, str) and hmac.compare_digest(
            given.encode(), f"Bearer {token}".encode()
        ):
            return continuation(handler_call_details)
        metrics.ERRORS.labels(MODEL_NAME, "unauthorized").inc()

        def deny(request, context):
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")

        return grpc.unary_unary_rpc_method_handler(deny)


def start(settings: Settings | None = None) -> tuple[grpc.Server, int, ModelServicer]:
    """Bind and start the server; returns it, the bound port and the servicer."""
    settings = settings or Settings()
    options = [
        ("grpc.max_receive_message_length", settings.max_request_bytes),
        ("grpc.max_send_message_length", -1),
    ]
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="grpc"),
        interceptors=[_BearerToken(settings.token_env)],
        options=options,
    )
    health_servicer = health.HealthServicer()
    for service in ("", SERVICE_NAME):
        health_servicer.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
    servicer = ModelServicer(settings, health_servicer)
    pb_grpc.add_ModelServicer_to_server(servicer, server)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (
            SERVICE_NAME,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ),
        server,
    )
    port = server.add_insecure_port(f"{settings.host}:{settings.port}")
    if port == 0:
        raise OSError(f"cannot listen on {settings.host}:{settings.port}")
    server.start()
    threading.Thread(target=servicer.load, name="load-model", daemon=True).start()
    return server, port, servicer
