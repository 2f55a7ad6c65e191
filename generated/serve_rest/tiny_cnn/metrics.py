"""Prometheus metrics of the service, in a registry of its own.

``predict_requests_total{code}``, ``predict_errors_total{reason}``,
``predict_latency_seconds`` (a histogram of whole requests, decoding included) and
``predict_batch_rows`` (rows per model call, with micro-batching).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

REGISTRY = CollectorRegistry()

REQUESTS = Counter(
    "predict_requests",
    "Predict requests by response code.",
    ["model", "code"],
    registry=REGISTRY,
)
ERRORS = Counter(
    "predict_errors",
    "Predict requests that failed, by reason.",
    ["model", "reason"],
    registry=REGISTRY,
)
LATENCY = Histogram(
    "predict_latency_seconds",
    "Time to answer a predict request.",
    ["model"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    registry=REGISTRY,
)
BATCH_ROWS = Histogram(
    "predict_batch_rows",
    "Rows per model call.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
    registry=REGISTRY,
)


def exposition() -> tuple[bytes, str]:
    """The metrics in Prometheus text format and its content type."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
