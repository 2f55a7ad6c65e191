"""The FastAPI application: predict, model metadata, health, readiness and metrics.

* ``POST /v1/models/tiny_cnn:predict``: run the model (bodies described in ``codec``).
* ``GET /v1/models/tiny_cnn``: the signature as JSON.
* ``GET /healthz``: the process is up. ``GET /readyz``: the model is loaded and warmed up
  (503 until then).
* ``GET /metrics``: Prometheus metrics. ``GET /docs``, ``/openapi.json``: the schema.

Bad requests get a 4xx answer ``{"error": "..."}`` that names the problem. When the
environment variable named by ``Settings.token_env`` is set, the model routes require
``Authorization: Bearer <its value>``.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import threading
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from . import codec, metrics
from .engine import Engine
from .signature import INPUTS, MODEL_NAME, OUTPUTS, RequestError, check_inputs

log = logging.getLogger(__name__)

PREDICT_PATH = f"/v1/models/{MODEL_NAME}:predict"


@dataclass(frozen=True)
class Settings:
    """Service options (``python -m tiny_cnn --help`` sets them from the command line)."""

    max_request_bytes: int = 64 * 1024 * 1024
    token_env: str = "TINY_CNN_TOKEN"
    threads: int = 0
    max_batch: int = 1  # 1 turns micro-batching off
    max_wait_ms: float = 2.0


class _State:
    """The engine once loaded (in a background thread, so /healthz answers at once)."""

    def __init__(self) -> None:
        self.engine = None
        self.runner = None
        self.error: str | None = None
        self.ready = threading.Event()


def _load(state: _State, settings: Settings) -> None:
    try:
        engine = Engine(threads=settings.threads)
        engine.warm_up()
        state.engine = engine
        state.runner = engine.run
        if settings.max_batch > 1:
            from .batching import MicroBatcher

            state.runner = MicroBatcher(engine, settings.max_batch, settings.max_wait_ms / 1000)
        state.ready.set()
        log.info("model %s loaded", MODEL_NAME)
    except Exception as exc:  # reported by /readyz and every predict call
        state.error = f"{type(exc).__name__}: {exc}"
        log.exception("loading the model failed")


def _error(message: str, status: int, reason: str) -> JSONResponse:
    metrics.ERRORS.labels(MODEL_NAME, reason).inc()
    return JSONResponse({"error": message}, status_code=status)


#: JSON Schema type of an element, by the first letter of its dtype (bool, int, uint, float).
_JSON_TYPES = {"b": "boolean", "i": "integer", "u": "integer", "f": "number"}


def _request_schema() -> dict:
    """The OpenAPI description of the predict body, built from the signature."""

    def tensor(spec) -> dict:
        item: dict = {"type": _JSON_TYPES[spec.dtype[0]]}
        for _ in spec.shape or ():
            item = {"type": "array", "items": item}
        item["description"] = spec.describe()
        return item

    inputs = {spec.name: tensor(spec) for spec in INPUTS}
    json_schema = {
        "type": "object",
        "required": ["inputs"],
        "properties": {
            "inputs": {"type": "object", "required": list(inputs), "properties": inputs}
        },
    }
    binary = {"schema": {"type": "string", "format": "binary"}}
    content = {codec.JSON: {"schema": json_schema}, codec.NPZ: binary}
    if len(INPUTS) == 1:
        content[codec.NPY] = binary
    outputs = {spec.name: tensor(spec) for spec in OUTPUTS}
    answer = {
        "type": "object",
        "properties": {
            "model": {"type": "string"},
            "outputs": {"type": "object", "properties": outputs},
        },
    }
    return {
        "requestBody": {"required": True, "content": content},
        "responses": {
            "200": {
                "description": "The outputs",
                "content": {codec.JSON: {"schema": answer}, codec.NPZ: binary},
            }
        },
    }


def create_app(settings: Settings | None = None) -> FastAPI:
    """The application; the model loads in the background when it starts."""
    settings = settings or Settings()
    state = _State()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        thread = threading.Thread(
            target=_load, args=(state, settings), name="load-model", daemon=True
        )
        thread.start()
        yield
        if hasattr(state.runner, "close"):
            state.runner.close()

    app = FastAPI(title=f"{MODEL_NAME} model service", version="0.1.0", lifespan=lifespan)
    app.state.model = state

    def authorized(request: Request) -> bool:
        token = os.environ.get(settings.token_env)
        if not token:
            return True
        given = request.headers.get("authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {token}".encode())

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        if state.ready.is_set():
            return JSONResponse({"status": "ready"})
        status = "failed: " + state.error if state.error else "loading"
        return JSONResponse({"status": status}, status_code=503)

    @app.get("/metrics")
    async def metrics_endpoint() -> Response:
        body, content_type = metrics.exposition()
        return Response(body, media_type=content_type)

    @app.get("/v1/models/{model}")
    async def metadata(model: str, request: Request) -> JSONResponse:
        if not authorized(request):
            return JSONResponse({"error": "missing or wrong bearer token"}, status_code=401)
        if model != MODEL_NAME:
            return JSONResponse(
                {"error": f"unknown model {model!r}; this service serves {MODEL_NAME!r}"},
                status_code=404,
            )

        def describe(specs) -> list:
            return [
                {
                    "name": s.name,
                    "dtype": s.dtype,
                    "shape": list(s.shape) if s.shape is not None else None,
                }
                for s in specs
            ]

        return JSONResponse(
            {"name": MODEL_NAME, "inputs": describe(INPUTS), "outputs": describe(OUTPUTS)}
        )

    @app.post("/v1/models/{model}:predict", openapi_extra=_request_schema())
    async def predict(model: str, request: Request) -> Response:
        start = time.perf_counter()
        response = await _predict(model, request)
        metrics.REQUESTS.labels(MODEL_NAME, str(response.status_code)).inc()
        metrics.LATENCY.labels(MODEL_NAME).observe(time.perf_counter() - start)
        return response

    async def _predict(model: str, request: Request) -> Response:
        if not authorized(request):
            return _error("missing or wrong bearer token", 401, "unauthorized")
        if model != MODEL_NAME:
            return _error(
                f"unknown model {model!r}; this service serves {MODEL_NAME!r}", 404, "unknown_model"
            )
        limit = settings.max_request_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return _error(
                f"the body has {declared} bytes, over the limit of {limit}", 413, "too_large"
            )
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                return _error(f"the body is over the limit of {limit} bytes", 413, "too_large")
        if not state.ready.is_set():
            detail = (
                f"failed to load: {state.error}" if state.error else "still loading; retry shortly"
            )
            return _error(f"the model is {detail}", 503, "not_ready")
        try:
            arrays = check_inputs(
                codec.decode(bytes(body), request.headers.get("content-type"), limit)
            )
        except RequestError as e:
            return _error(str(e), e.status, "bad_request")
        try:
            if hasattr(state.runner, "submit"):
                outputs = await asyncio.wrap_future(state.runner.submit(arrays))
            else:
                metrics.BATCH_ROWS.observe(_rows(arrays))
                outputs = await run_in_threadpool(state.runner, arrays)
        except Exception as exc:
            log.exception("the model failed on a request")
            return _error(f"the model failed: {type(exc).__name__}: {exc}", 500, "model_error")
        payload, media_type = codec.encode(outputs, request.headers.get("accept"))
        return Response(payload, media_type=media_type)

    return app


def _rows(arrays: dict) -> int:
    first = arrays[INPUTS[0].name]
    return int(first.shape[0]) if first.ndim else 1
