r"""Logs: one line per event on stderr, as text or JSON, every line of a request with its id.

Each request gets an id: the caller's `X-Request-ID` when it is sane (printable ASCII, at most
128 characters), otherwise a new one. It is echoed in the response header, carried by every log
line written while the request runs, and put in every problem body (segsvc.errors). One access
line per request tells method, route, path, status, duration and user agent.

A client chooses its path and user agent, so no control character reaches a log as itself: a
newline would start a forged line. Text lines write them as `\xNN` or `\uNNNN` escapes (and a
backslash as `\\`); JSON lines as JSON's `\uNNNN`, which decode back to what the client sent.
"""

import datetime as dt
import json
import logging
import re
import sys
import time
import uuid
from typing import Any, TextIO

from flask import Flask, Response, g, has_request_context, request

REQUEST_ID_HEADER = "X-Request-ID"
_SANE_REQUEST_ID = re.compile(r"[\x21-\x7e]{1,128}")
# Fields a log record may carry (from the request, or `extra=`), in the order JSON lines show them.
REQUEST_FIELDS = ("request_id", "method", "route", "path", "status", "duration_ms", "user_agent")
# C0 controls, DEL, C1 controls (NEL among them) and the line and paragraph separators: each
# ends a line for some reader of logs, or drives a terminal.
_CONTROL_CHARACTER = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_CONTROL_CHARACTER_OR_BACKSLASH = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\\\\]")

access_log = logging.getLogger("segsvc.access")


def current_request_id() -> str | None:
    return g.get("request_id") if has_request_context() else None


class RequestContextFilter(logging.Filter):
    """Stamps records written during a request with its id."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = current_request_id()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request fields, exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        for field in REQUEST_FIELDS:
            value = getattr(record, field, None)
            if value is not None:
                entry[field] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        # json.dumps escapes only C0 controls. The others can only be inside JSON strings (all
        # else it writes is ASCII), where `\uNNNN` stands for the same character.
        return _CONTROL_CHARACTER.sub(_json_escape, json.dumps(entry, ensure_ascii=False))


def _json_escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match[0]):04x}"


def _text_escape(match: re.Match[str]) -> str:
    if match[0] == "\\":
        return "\\\\"
    code = ord(match[0])
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


class TextFormatter(logging.Formatter):
    """Escapes the line itself; a traceback appended below it keeps its own line breaks."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return _CONTROL_CHARACTER_OR_BACKSLASH.sub(_text_escape, super().formatMessage(record))


TEXT_FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(name)s [%(request_id)s]: %(message)s"


def build_handler(log_format: str, stream: TextIO) -> logging.Handler:
    handler = logging.StreamHandler(stream)
    handler.addFilter(RequestContextFilter())
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter(TEXT_FORMAT))
    return handler


def configure_logging(level: str, log_format: str = "text") -> None:
    """Idempotent: the app factory may run more than once in a process (tests)."""
    root = logging.getLogger()
    root.setLevel(level)
    for handler in [h for h in root.handlers if getattr(h, "segsvc", False)]:
        root.removeHandler(handler)
    handler = build_handler(log_format, sys.stderr)
    handler.segsvc = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    # It logs every run of every job at INFO: every 10 s per worker. Its warnings still show.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)


def _start_request() -> None:
    g.request_started = time.perf_counter()
    incoming = request.headers.get(REQUEST_ID_HEADER, "")
    g.request_id = incoming if _SANE_REQUEST_ID.fullmatch(incoming) else uuid.uuid4().hex


def _finish_request(response: Response) -> Response:
    started = g.get("request_started")
    duration_ms = (time.perf_counter() - started) * 1000 if started is not None else 0.0
    route = request.url_rule.rule if request.url_rule is not None else None
    access_log.info(
        "%s %s %d %.1fms",
        request.method,
        request.path,
        response.status_code,
        duration_ms,
        extra={
            "method": request.method,
            "route": route,
            "path": request.path,
            "status": response.status_code,
            "duration_ms": round(duration_ms, 3),
            "user_agent": request.user_agent.string or None,
        },
    )
    request_id = current_request_id()
    if request_id is not None:
        response.headers[REQUEST_ID_HEADER] = request_id
    return response


def init_app(app: Flask) -> None:
    app.before_request(_start_request)
    app.after_request(_finish_request)
