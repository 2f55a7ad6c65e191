"""``python -m tiny_cnn --host HOST --port PORT``: serve the model over HTTP with uvicorn."""

from __future__ import annotations

import argparse
import logging

import uvicorn

from .app import Settings, create_app


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (see ``--help``)."""
    defaults = Settings()
    parser = argparse.ArgumentParser(prog="python -m tiny_cnn", description=__doc__)
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (0.0.0.0 for all)"
    )
    parser.add_argument("--port", type=int, default=8000, help="port to listen on")
    parser.add_argument(
        "--max-request-bytes",
        type=int,
        default=defaults.max_request_bytes,
        help="largest request body accepted (413 above)",
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
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )
    args = parser.parse_args(argv)
    if args.max_request_bytes < 1:
        parser.error("--max-request-bytes must be positive")
    if args.max_batch < 1:
        parser.error("--max-batch must be at least 1")
    return args


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and run the server until interrupted."""
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = Settings(
        max_request_bytes=args.max_request_bytes,
        token_env=args.token_env,
        threads=args.threads,
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
    )
    uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level=args.log_level)


if __name__ == "__main__":
    main()
