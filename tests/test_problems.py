"""Every answer is problem+json, also those given before a request reaches the app.

gunicorn refuses what its parser cannot read (an over-long request line, too many or too large
headers, a malformed line or header, an unknown transfer coding) with its own HTML page; segsvc's
worker answers those as problems, over real sockets here, and closes the connection. The README's
errors table lists every code the service can answer.
"""

import http.client
import json
import re
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from serving import Launcher

from segsvc import errors

README = Path(__file__).resolve().parent.parent / "README.md"
PROBLEM_FIELDS = ["type", "title", "status", "detail", "code", "request_id"]


def request(path: str = "/healthz", *headers: str, method: str = "GET", body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: localhost", "Connection: close", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def post(*headers: str, body: bytes = b"") -> bytes:
    return request("/api/v1/users", *headers, method="POST", body=body)


def chunked_post(body: bytes) -> bytes:
    return post("Content-Type: application/json", "Transfer-Encoding: chunked", body=body)


BAD_REQUEST = (400, "bad_request")
URI_TOO_LONG = (414, "uri_too_long")
HEADERS_TOO_LARGE = (431, "request_header_fields_too_large")
# What gunicorn's parser (or the worker before it) refuses: (raw request, (status, code)).
REFUSED_REQUESTS = {
    "5,000-character slug in the path": (request(f"/api/v1/segments/{'A' * 5000}"), URI_TOO_LONG),
    "request line of 40,000 bytes, unfinished": (b"GET /" + b"a" * 40_000, URI_TOO_LONG),
    "header field over 8190 bytes": (
        request("/healthz", "X-Long: " + "a" * 9000),
        HEADERS_TOO_LARGE,
    ),
    "101 header fields": (request("/", *(f"X-{n}: 1" for n in range(101))), HEADERS_TOO_LARGE),
    "headers over 32 KiB, unfinished": (
        request("/healthz", *(f"X-{n}: " + "a" * 7000 for n in range(5)))[:-4],
        HEADERS_TOO_LARGE,
    ),
    "not HTTP": (b"NOT HTTP\r\n\r\n", BAD_REQUEST),
    "method with a parenthesis": (request().replace(b"GET", b"G(T", 1), BAD_REQUEST),
    "space in the target": (request("/a b"), BAD_REQUEST),
    "HTTP/2.0 request line": (request().replace(b"HTTP/1.1", b"HTTP/2.0", 1), BAD_REQUEST),
    "header name with a space": (request("/healthz", "Bad Name: 1"), BAD_REQUEST),
    "header without a colon": (request("/healthz", "NoColon"), BAD_REQUEST),
    "obsolete line folding": (request("/healthz", "X-Folded: 1", " more"), BAD_REQUEST),
    "NUL in a header value": (request("/healthz", "X-Nul: a\x00b"), BAD_REQUEST),
    "two Content-Lengths": (
        post("Content-Length: 1", "Content-Length: 2", body=b"{}"),
        BAD_REQUEST,
    ),
    "Content-Length not a number": (post("Content-Length: ten"), BAD_REQUEST),
    "contradictory scheme headers": (
        request("/healthz", "X-Forwarded-Proto: https", "X-Forwarded-Ssl: off"),
        BAD_REQUEST,
    ),
    "bare LF line ends": (b"GET /healthz HTTP/1.1\nHost: localhost\n\n", BAD_REQUEST),
    "Expect other than 100-continue": (
        request("/healthz", "Expect: 200-ok"),
        (417, "expectation_failed"),
    ),
    "gzip transfer coding without chunked": (
        post("Transfer-Encoding: gzip", body=b"0\r\n\r\n"),
        BAD_REQUEST,
    ),
    "unknown transfer coding": (
        post("Transfer-Encoding: br, chunked", body=b"0\r\n\r\n"),
        (501, "not_implemented"),
    ),
    "malformed chunk size": (chunked_post(b"zz\r\n{}\r\n0\r\n\r\n"), BAD_REQUEST),
    "chunk without its terminator": (chunked_post(b"2\r\n{}XX0\r\n\r\n"), BAD_REQUEST),
}


@pytest.fixture
def served(start_launcher: Callable[..., Launcher], database_url_for_test: str) -> Launcher:
    launcher = start_launcher(
        DATABASE_URL=database_url_for_test,
        SEGSVC_EXPIRY_ENABLED="false",
        SEGSVC_REQUEST_READ_TIMEOUT_SECONDS="5",
    )
    launcher.wait_until_healthy()
    return launcher


def exchange(port: int, raw: bytes) -> tuple[http.client.HTTPResponse, bytes, bytes]:
    """Sends `raw`; the answer, its body and what followed it until the server closed."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(raw)
        response = http.client.HTTPResponse(sock)
        response.begin()
        body = response.read()
        rest = bytearray()
        while chunk := sock.recv(65536):
            rest += chunk
    return response, body, bytes(rest)


def assert_served_problem(
    response: http.client.HTTPResponse, body: bytes, status: int, code: str
) -> dict[str, Any]:
    assert response.status == status, body
    assert response.getheader("Content-Type") == errors.PROBLEM_MIMETYPE
    problem = json.loads(body)
    assert list(problem) == PROBLEM_FIELDS
    assert (problem["type"], problem["status"], problem["code"]) == (
        f"urn:segsvc:problem:{code}",
        status,
        code,
    )
    assert problem["title"]
    assert problem["detail"]
    assert re.fullmatch(r"[\x21-\x7e]{1,128}", problem["request_id"])
    assert problem["request_id"] == response.getheader("X-Request-ID")
    return problem


def test_requests_gunicorn_refuses_are_answered_as_problems_and_closed(served, subtests):
    for kind, (raw, (status, code)) in REFUSED_REQUESTS.items():
        with subtests.test(kind=kind):
            started = time.monotonic()
            response, body, rest = exchange(served.port, raw)
            assert_served_problem(response, body, status, code)
            assert rest == b"", "something followed the answer"
            assert response.getheader("Connection") == "close"
            assert time.monotonic() - started < 4, "answered only at the read timeout"
    # The worker is still serving.
    response, body, _ = exchange(served.port, request("/healthz"))
    assert (response.status, json.loads(body)) == (200, {"status": "ok"})


def test_an_unfinished_request_is_answered_408_as_a_problem(served):
    response, body, _ = exchange(served.port, request("/healthz")[:-2])
    problem = assert_served_problem(response, body, 408, "request_timeout")
    assert problem["detail"] == "The request did not arrive whole within 5 s."


def test_a_long_request_line_is_refused_with_the_limit_in_its_detail(served):
    response, body, _ = exchange(served.port, request("/api/v1/segments/" + "A" * 5000))
    problem = assert_served_problem(response, body, 414, "uri_too_long")
    assert problem["detail"] == "The request line is longer than 4094 bytes."
    assert problem["request_id"] in served.output()


def test_a_request_line_of_4094_bytes_is_served(served):
    path = "/api/v1/segments/"
    path += "A" * (4094 - len(f"GET {path} HTTP/1.1"))
    response, body, _ = exchange(served.port, request(path))
    assert response.status == 422, body  # the slug is too long: the app answered


def test_a_malformed_chunked_body_left_unread_closes_without_a_second_answer(served):
    """The app answers without reading the body; gunicorn then drains it and finds it broken."""
    raw = request("/healthz", "Transfer-Encoding: chunked", body=b"zz\r\n").replace(
        b"Connection: close\r\n", b""
    )
    response, body, rest = exchange(served.port, raw)
    assert (response.status, json.loads(body)) == (200, {"status": "ok"})
    assert rest == b""


# The errors table


def error_table() -> dict[str, int]:
    """`code` -> status, from the README's "### Errors" table."""
    section = README.read_text().split("\n### Errors\n", 1)[1].split("\n### ", 1)[0]
    rows = re.findall(r"^\| (\d{3}) \| `([a-z_]+)` \|", section, re.MULTILINE)
    return {code: int(status) for status, code in rows}


def service_errors() -> dict[str, int]:
    """Every problem the code can answer: `code` -> status."""
    found, pending = {}, [errors.ServiceError]
    while pending:
        error_class = pending.pop()
        found[error_class.code] = error_class.status
        pending += error_class.__subclasses__()
    return found


def test_the_errors_table_lists_every_code_with_its_status():
    assert error_table() == service_errors()
