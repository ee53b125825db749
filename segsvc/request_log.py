"""Logging to stderr, and one access line per request: method, path, status, duration."""

import logging
import sys
import time

from flask import Flask, Response, g, request

access_log = logging.getLogger("segsvc.access")


def configure_logging(level: str) -> None:
    """Idempotent: the app factory may run more than once in a process (tests)."""
    root = logging.getLogger()
    root.setLevel(level)
    if not any(getattr(handler, "segsvc", False) for handler in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.segsvc = True  # type: ignore[attr-defined]
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s")
        )
        root.addHandler(handler)


def _start_timer() -> None:
    g.request_started = time.perf_counter()


def _log_request(response: Response) -> Response:
    started = g.get("request_started")
    duration_ms = (time.perf_counter() - started) * 1000 if started is not None else 0.0
    access_log.info(
        "%s %s %d %.1fms",
        request.method,
        request.path,
        response.status_code,
        duration_ms,
    )
    return response


def init_app(app: Flask) -> None:
    app.before_request(_start_timer)
    app.after_request(_log_request)
