"""Structured logs and request ids: every line of a request carries its id, and so do errors."""

import datetime as dt
import io
import json
import logging
import os
import re
import time
import uuid
from collections.abc import Iterator
from urllib.parse import quote

import pytest

from segsvc.config import Config
from segsvc.request_log import _new_request_id, build_handler

GENERATED_ID = re.compile(r"[0-9a-f]{32}")


@pytest.fixture
def json_app(make_app):
    return make_app(log_format="json")


def capture(log_format: str) -> Iterator[io.StringIO]:
    """What the service's handler for `log_format` would print, captured."""
    stream = io.StringIO()
    handler = build_handler(log_format, stream)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield stream
    finally:
        root.removeHandler(handler)


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    yield from capture("json")


@pytest.fixture
def captured_text() -> Iterator[io.StringIO]:
    yield from capture("text")


def lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def access_lines(stream: io.StringIO) -> list[dict]:
    return [line for line in lines(stream) if line["logger"] == "segsvc.access"]


def test_access_lines_are_json_objects_with_the_request_fields(json_app, captured):
    client = json_app.test_client()
    client.post("/api/v1/segments", json={"slug": "A"}, headers={"User-Agent": "probe/1.0"})
    client.get("/api/v1/users/1000/segments")
    client.get("/api/v1/nowhere")
    first, second, third = access_lines(captured)
    assert first["level"] == "INFO"
    assert first["time"].endswith("Z")
    assert first["method"] == "POST"
    assert first["route"] == "/api/v1/segments"
    assert first["status"] == 201
    assert first["user_agent"] == "probe/1.0"
    assert first["duration_ms"] >= 0
    assert GENERATED_ID.fullmatch(first["request_id"])
    assert second["route"] == "/api/v1/users/<user_id>/segments"
    assert second["path"] == "/api/v1/users/1000/segments"
    assert "route" not in third
    assert third["status"] == 404
    assert len({line["request_id"] for line in (first, second, third)}) == 3


def test_an_incoming_request_id_is_echoed_logged_and_put_in_problems(json_app, captured):
    client = json_app.test_client()
    response = client.get("/api/v1/segments/NOPE", headers={"X-Request-ID": "checkout-42.a_b"})
    assert response.headers["X-Request-ID"] == "checkout-42.a_b"
    assert response.get_json()["request_id"] == "checkout-42.a_b"
    assert access_lines(captured)[-1]["request_id"] == "checkout-42.a_b"


@pytest.mark.parametrize(
    "hostile",
    [
        "evil\r\nX-Injected: 1",
        'fake\n{"level": "ERROR"}',
        "x" * 129,
        "two words",
        "\u0438\u0434",
        "",
        "\x00\x1b[31m",
    ],
)
def test_a_hostile_request_id_is_replaced_and_never_logged(json_app, captured, hostile):
    client = json_app.test_client()
    environ = {"HTTP_X_REQUEST_ID": hostile}
    response = client.get("/api/v1/users/1/segments", environ_base=environ)
    echoed = response.headers["X-Request-ID"]
    assert GENERATED_ID.fullmatch(echoed)
    assert access_lines(captured)[-1]["request_id"] == echoed
    if hostile:
        assert hostile not in captured.getvalue()


def test_a_new_request_id_is_a_random_version_4_uuid(client):
    ids = {client.get("/healthz").headers["X-Request-ID"] for _ in range(50)}
    assert len(ids) == 50
    for request_id in ids:
        parsed = uuid.UUID(hex=request_id)
        assert parsed.hex == request_id
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122


def test_forked_workers_generate_different_request_ids():
    """Ids come from `random`, which every forked process seeds afresh (gunicorn's workers are
    forks of one master): a child's ids are not its parent's. No app here: a forked child must
    not touch its parent's database connections."""
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child's coverage is not collected
        ids = ",".join(_new_request_id() for _ in range(20))
        os.write(writer, ids.encode())
        os._exit(0)
    os.close(writer)
    os.waitpid(child, 0)
    with os.fdopen(reader) as pipe:
        child_ids = set(pipe.read().split(","))
    parent_ids = {_new_request_id() for _ in range(20)}
    assert len(child_ids) == 20
    assert not child_ids & parent_ids


def test_an_unhandled_error_is_logged_once_with_its_traceback_and_its_request_id(
    json_app, captured
):
    @json_app.get("/boom")
    def boom():
        raise RuntimeError("secret internals")

    boom.openapi_operation = None
    json_app.config["PROPAGATE_EXCEPTIONS"] = False
    response = json_app.test_client().get("/boom", headers={"X-Request-ID": "boom-1"})
    assert response.status_code == 500
    body = response.get_json()
    assert body["code"] == "internal_error"
    assert body["request_id"] == "boom-1"
    assert "secret internals" not in response.get_data(as_text=True)
    errors = [line for line in lines(captured) if line["level"] == "ERROR"]
    assert len(errors) == 1
    assert errors[0]["request_id"] == "boom-1"
    assert "RuntimeError: secret internals" in errors[0]["exception"]


def test_text_lines_carry_the_request_id_too(client, captured_text):
    client.get("/healthz", headers={"X-Request-ID": "text-7"})
    assert "[text-7]: GET /healthz 200" in captured_text.getvalue()


FORGED_LINE = "2026-11-28 15:00:00,000 INFO [1] segsvc.access [x]: DELETE /api/v1/segments/ALL 204"
# C0 controls, DEL, C1 controls (NEL is a line break to many readers), line and paragraph
# separators: each is written as an escape, never as itself.
CONTROL_CHARACTERS = {
    "\n": "\\x0a",
    "\r": "\\x0d",
    "\x00": "\\x00",
    "\x1b": "\\x1b",
    "\x7f": "\\x7f",
    "\x85": "\\x85",
    "\x9f": "\\x9f",
    "\u2028": "\\u2028",
    "\u2029": "\\u2029",
}


@pytest.mark.parametrize("control", CONTROL_CHARACTERS, ids=ascii)
def test_a_client_cannot_forge_or_break_text_lines(client, captured_text, control):
    path = f"/api/v1/x{control}{FORGED_LINE}"
    response = client.get(quote(path), headers={"X-Request-ID": "forger"})
    assert response.status_code == 404
    (line,) = captured_text.getvalue().splitlines()
    assert control not in line
    escaped = re.escape(path.replace(control, CONTROL_CHARACTERS[control]))
    assert re.search(rf"\[forger\]: GET {escaped} 404 [0-9.]+ms$", line), line


def test_a_backslash_from_a_client_is_escaped_so_escapes_stay_unambiguous(client, captured_text):
    client.get(quote("/api/v1/x\\x0a\n"))
    assert "GET /api/v1/x\\\\x0a\\x0a 404" in captured_text.getvalue()


@pytest.mark.parametrize("fraction", [0.0, 0.0004, 0.5, 0.9994, 0.9996, 0.99999999])
def test_text_lines_show_the_time_as_logging_itself_would(fraction):
    """The second's text is kept between lines; the time still reads as logging writes it."""
    formatter = build_handler("text", io.StringIO()).formatter
    assert formatter is not None
    for second in (1_764_338_400, 1_764_338_400, 1_764_338_401, 1_764_342_000):
        created = second + fraction
        record = logging.LogRecord("segsvc.test", logging.INFO, __file__, 1, "x", None, None)
        record.created = created
        record.msecs = int((created - int(created)) * 1000) + 0.0
        assert formatter.formatTime(record) == logging.Formatter().formatTime(record)


def test_a_text_traceback_keeps_its_lines_while_the_message_is_escaped(captured_text):
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("segsvc.test").exception("failed for %s", "/x\nforged")
    first, *traceback = captured_text.getvalue().splitlines()
    assert first.endswith("failed for /x\\x0aforged")
    assert traceback[0] == "Traceback (most recent call last):"
    assert traceback[-1] == "RuntimeError: boom"


@pytest.mark.parametrize("control", CONTROL_CHARACTERS, ids=ascii)
def test_json_lines_stay_one_line_each_and_keep_the_client_values(json_app, captured, control):
    path = f"/api/v1/x{control}{FORGED_LINE}"
    agent = f"probe{control}/1.0"
    json_app.test_client().get(quote(path), environ_base={"HTTP_USER_AGENT": agent})
    (line,) = access_lines(captured)
    assert line["path"] == path
    assert line["user_agent"] == agent
    assert control not in captured.getvalue().removesuffix("\n")


def test_a_bad_log_format_stops_the_service():
    from segsvc.config import ConfigError

    with pytest.raises(ConfigError, match="SEGSVC_LOG_FORMAT"):
        Config.from_environ({"DATABASE_URL": "x", "SEGSVC_LOG_FORMAT": "xml"})


def test_text_lines_show_utc_whatever_the_servers_zone(monkeypatch):
    monkeypatch.setenv("TZ", "Pacific/Kiritimati")  # UTC+14
    time.tzset()
    try:
        stream = io.StringIO()
        logger = logging.getLogger("segsvc.test_zone")
        handler = build_handler("text", stream)
        logger.addHandler(handler)
        try:
            created = time.time()
            logger.warning("zone")
        finally:
            logger.removeHandler(handler)
    finally:
        monkeypatch.undo()
        time.tzset()
    shown = dt.datetime.strptime(stream.getvalue()[:19], "%Y-%m-%d %H:%M:%S")
    utc_now = dt.datetime.fromtimestamp(created, dt.UTC).replace(tzinfo=None)
    assert abs((shown - utc_now).total_seconds()) < 2
