"""``python -m tiny_cnn --host HOST --port PORT``: serve the model over gRPC."""

from __future__ import annotations

import argparse
import logging
import signal
import threading

from .server import Settings, start


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (see ``--help``)."""
    defaults = Settings()
    parser = argparse.ArgumentParser(prog="python -m tiny_cnn", description=__doc__)
    parser.add_argument(
        "--host", default=defaults.host, help="address to listen on (0.0.0.0 for all)"
    )
    parser.add_argument("--port", type=int, default=defaults.port, help="port to listen on")
    parser.add_argument(
        "--max-request-bytes",
        type=int,
        default=defaults.max_request_bytes,
        help="largest request message accepted (RESOURCE_EXHAUSTED above)",
    )
    parser.add_argument(
        "--token-env",
        default=defaults.token_env,
        help="environment variable holding the bearer token; auth is on when it is set",
    )
    parser.add_argument(
        "--threads", type=int, default=0, help="threads per model call (0: the engine's default)"
    )
    parser.add_argument(
        "--workers", type=int, default=defaults.workers, help="requests handled concurrently"
    )
    parser.add_argument(
        "--max-batch",
        type=int,
        default=defaults.max_batch,
        help="rows per micro-batch (1: no batching)",
    )
    parser.add_argument(
        "--max-wait-ms",
        type=float,
        default=defaults.max_wait_ms,
        help="how long a request may wait for others to batch with",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=0,
        help="serve Prometheus metrics over HTTP on this port (0: off)",
    )
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )
    args = parser.parse_args(argv)
    if args.max_request_bytes < 1 or args.workers < 1:
        parser.error("--max-request-bytes and --workers must be positive")
    if args.max_batch < 1:
        parser.error("--max-batch must be at least 1")
    return args


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and serve until SIGINT or SIGTERM."""
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = Settings(
        host=args.host,
        port=args.port,
        max_request_bytes=args.max_request_bytes,
        token_env=args.token_env,
        threads=args.threads,
        workers=args.workers,
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
    )
    if args.metrics_port:
        from prometheus_client import start_http_server

        from .metrics import REGISTRY

        start_http_server(args.metrics_port, addr=args.host, registry=REGISTRY)
    server, port, _ = start(settings)
    logging.getLogger(__name__).info("listening on %s:%d", args.host, port)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    server.stop(grace=5).wait()


if __name__ == "__main__":
    main()
