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
import random
import re
import sys
import time
from typing import Any, TextIO

from flask import Flask, Request, Response, g, has_request_context, request

REQUEST_ID_HEADER = "X-Request-ID"
# Where WSGI puts those headers: read from the environ, as `request.headers` would, minus its work.
_REQUEST_ID_ENVIRON_KEY = "HTTP_X_REQUEST_ID"
_USER_AGENT_ENVIRON_KEY = "HTTP_USER_AGENT"
_SANE_REQUEST_ID = re.compile(r"[\x21-\x7e]{1,128}")
# The bits `uuid.UUID(bytes=..., version=4)` clears and sets: the version 4 and RFC 4122 variant.
_UUID4_CLEARED = ~(0xC000 << 48 | 0xF000 << 64)
_UUID4_SET = 0x8000 << 48 | 4 << 76
# Fields a log record may carry (from the request, or `extra=`), in the order JSON lines show them.
REQUEST_FIELDS = ("request_id", "method", "route", "path", "status", "duration_ms", "user_agent")
# C0 controls, DEL, C1 controls (NEL among them) and the line and paragraph separators: each
# ends a line for some reader of logs, or drives a terminal.
_CONTROL_CHARACTER = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_CONTROL_CHARACTER_OR_BACKSLASH = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\\\\]")

access_log = logging.getLogger("segsvc.access")


def current_request_id() -> str | None:
    if not has_request_context():
        return None
    return g._get_current_object().get("request_id")  # type: ignore[attr-defined,no-any-return]


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
        return _CONTROL_CHARACTER.sub(_json_escape, _JSON_LINE_ENCODER.encode(entry))


# What `json.dumps(entry, ensure_ascii=False)` builds for every line; it keeps no state.
_JSON_LINE_ENCODER = json.JSONEncoder(ensure_ascii=False)


def _json_escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match[0]):04x}"


def _text_escape(match: re.Match[str]) -> str:
    if match[0] == "\\":
        return "\\\\"
    code = ord(match[0])
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


class TextFormatter(logging.Formatter):
    """Escapes the line itself; a traceback appended below it keeps its own line breaks. Times
    are UTC, as every time segsvc writes, whatever the server's zone."""

    converter = time.gmtime

    def __init__(self, fmt: str) -> None:
        super().__init__(fmt)
        self._second_text: tuple[int, str] = (-1, "")

    def formatMessage(self, record: logging.LogRecord) -> str:
        return _CONTROL_CHARACTER_OR_BACKSLASH.sub(_text_escape, super().formatMessage(record))

    def usesTime(self) -> bool:
        return True  # TEXT_FORMAT shows `asctime`; logging would search the format every line

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        """`Formatter.formatTime`'s text, its seconds formatted once a second: `localtime` and
        `strftime` were a third of a line's formatting. One tuple holds the second and its text,
        so no thread pairs a second with another's text."""
        second, text = self._second_text
        if second != int(record.created):
            second = int(record.created)
            text = time.strftime(self.default_time_format, self.converter(record.created))
            self._second_text = (second, text)
        return self.default_msec_format % (text, record.msecs)


TEXT_FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(name)s [%(request_id)s]: %(message)s"


class LineStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A StreamHandler that leaves flushing to a line-buffered stream (stderr is, since Python
    3.9): each line written is flushed by its newline, and the handler's flush call after every
    line was 3 % of a cached read's time."""

    def flush(self) -> None:
        if not getattr(self.stream, "line_buffering", False):
            super().flush()


def build_handler(log_format: str, stream: TextIO) -> logging.Handler:
    handler = LineStreamHandler(stream)
    handler.addFilter(RequestContextFilter())
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter(TEXT_FORMAT))
    return handler


def configure_logging(level: str, log_format: str = "text") -> None:
    """Idempotent: the app factory may run more than once in a process (tests)."""
    root = logging.getLogger()
    root.setLevel(level)
    # No line shows a thread or process name: each record would look them up.
    logging.logThreads = False
    logging.logMultiprocessing = False
    for handler in [h for h in root.handlers if getattr(h, "segsvc", False)]:
        root.removeHandler(handler)
    handler = build_handler(log_format, sys.stderr)
    handler.segsvc = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    # It logs every run of every job at INFO: every 10 s per worker. Its warnings still show.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)


def _start_request() -> None:
    # `g` and `request` are context-local proxies: each read through one is a context-variable
    # lookup, so the hooks of the hot path resolve each at most once.
    state = g._get_current_object()  # type: ignore[attr-defined]
    state.request_started = time.perf_counter()
    state.request_id = request_id_of(request._get_current_object().environ)  # type: ignore[attr-defined]


def request_id_of(environ: dict[str, Any]) -> str:
    """The caller's `X-Request-ID` when it is sane, else a new one."""
    incoming = environ.get(_REQUEST_ID_ENVIRON_KEY, "")
    return incoming if _SANE_REQUEST_ID.fullmatch(incoming) else _new_request_id()


def _new_request_id() -> str:
    """A version 4 UUID's hex, as `uuid.uuid4().hex` writes it, without building a `UUID`, whose
    checks cost more than the rest of the request's first hook. Its bits come from `random`,
    not `os.urandom` (a system call, 5 % of a cached read): an id must be unique, not secret,
    and `random` is seeded afresh from the system in every forked worker."""
    value = random.getrandbits(128) & _UUID4_CLEARED | _UUID4_SET
    return f"{value:032x}"


def request_started() -> float | None:
    """`time.perf_counter()` when the request's first hook ran: the metrics time from it too."""
    state = g._get_current_object()  # type: ignore[attr-defined]
    return state.get("request_started")  # type: ignore[no-any-return]


def _finish_request(response: Response) -> Response:
    state = g._get_current_object()  # type: ignore[attr-defined]
    request_id = state.get("request_id")
    # Nothing of the line is gathered when it would not be written (a WARNING level).
    if access_log.isEnabledFor(logging.INFO):
        flask_request = request._get_current_object()  # type: ignore[attr-defined]
        _log_access(flask_request, response, state.get("request_started"), request_id)
    if request_id is not None:
        response.headers[REQUEST_ID_HEADER] = request_id
    return response


def _log_access(
    flask_request: Request, response: Response, started: float | None, request_id: str | None
) -> None:
    rule = flask_request.url_rule
    log_access(
        flask_request.method,
        rule.rule if rule is not None else None,
        flask_request.path,
        response.status_code,
        (time.perf_counter() - started) * 1000 if started is not None else 0.0,
        flask_request.environ.get(_USER_AGENT_ENVIRON_KEY) or None,
        request_id,
    )


def log_access(
    method: str,
    route: str | None,
    path: str,
    status: int,
    duration_ms: float,
    user_agent: str | None,
    request_id: str | None,
) -> None:
    """The access line of a request, at INFO. Builds the record itself: `Logger.info` would
    first walk the stack for the caller's file and line, which no format shows. The request id
    is given, so the filter looks up nothing."""
    record = access_log.makeRecord(
        access_log.name,
        logging.INFO,
        "(unknown file)",
        0,
        "%s %s %d %.1fms",
        (method, path, status, duration_ms),
        None,
        "(unknown function)",
        {
            "request_id": request_id,
            "method": method,
            "route": route,
            "path": path,
            "status": status,
            "duration_ms": round(duration_ms, 3),
            "user_agent": user_agent,
        },
    )
    access_log.handle(record)


def init_app(app: Flask) -> None:
    app.before_request(_start_request)
    app.after_request(_finish_request)
