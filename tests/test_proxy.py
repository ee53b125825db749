"""nginx in front of segsvc, as docker-compose.yml runs it, over real sockets.

Debian's nginx runs the shipped deploy/nginx.conf with only its port, its upstream and its client
timeouts changed (shorter, to keep the test quick); `make test` installs nginx when it is missing.
The service is the real launcher with one worker of two threads, fewer than the slow clients.
"""

import http.client
import itertools
import json
import os
import pwd
import re
import select
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, suppress
from pathlib import Path

import pytest
from serving import (
    PROJECT_DIRECTORY,
    START_TIMEOUT_SECONDS,
    Launcher,
    free_port,
    port_is_open,
)

DEPLOYED_CONFIG = PROJECT_DIRECTORY / "deploy" / "nginx.conf"
CLIENT_TIMEOUT_SECONDS = 2
# Under this, a probe has not waited for any slow client.
PROMPT_SECONDS = 1.0

# What the test sets around the deployed file: where nginx keeps its pid, logs and temporary files.
HARNESS_CONFIG = """\
user {user};
worker_processes 1;
pid {directory}/nginx.pid;
error_log {directory}/error.log info;
events {{ worker_connections 256; }}
http {{
    access_log {directory}/access.log;
    client_body_temp_path {directory}/client_body;
    proxy_temp_path {directory}/proxy;
    fastcgi_temp_path {directory}/fastcgi;
    uwsgi_temp_path {directory}/uwsgi;
    scgi_temp_path {directory}/scgi;
    include {directory}/segsvc.conf;
}}
"""


def render_deployed_config(port: int, upstream_port: int) -> str:
    replacements = {
        # A small socket send buffer: a 1.5 MB answer outgrows it as a large report outgrows the
        # buffers of a real network, so an unread answer has to wait somewhere.
        r"listen 8080;": f"listen 127.0.0.1:{port} sndbuf=16k;",
        r"server segsvc:8080;": f"server 127.0.0.1:{upstream_port};",
        r"client_header_timeout \w+;": f"client_header_timeout {CLIENT_TIMEOUT_SECONDS}s;",
        r"client_body_timeout \w+;": f"client_body_timeout {CLIENT_TIMEOUT_SECONDS}s;",
    }
    config = DEPLOYED_CONFIG.read_text()
    for pattern, replacement in replacements.items():
        config, count = re.subn(pattern, replacement, config)
        assert count == 1, f"{pattern!r} matches {count} times in {DEPLOYED_CONFIG}"
    return config


class Nginx:
    """Debian's nginx in the foreground, on a free port, in front of 127.0.0.1:`upstream_port`."""

    def __init__(self, binary: str, directory: Path, upstream_port: int) -> None:
        self.port = free_port()
        self.directory = directory
        directory.mkdir()
        (directory / "segsvc.conf").write_text(render_deployed_config(self.port, upstream_port))
        user = pwd.getpwuid(os.geteuid()).pw_name  # workers may then use pytest's 0700 tmp_path
        harness = directory / "nginx.conf"
        harness.write_text(HARNESS_CONFIG.format(user=user, directory=directory))
        arguments = ["-p", directory, "-e", directory / "error.log", "-c", harness]
        self.process = subprocess.Popen(
            [binary, *arguments, "-g", "daemon off;"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not port_is_open(self.port):
            assert self.process.poll() is None, f"nginx exited:\n{self.error_log()}"
            assert time.monotonic() < deadline, f"nginx never listened:\n{self.error_log()}"
            time.sleep(0.02)

    def error_log(self) -> str:
        path = self.directory / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def start_nginx(tmp_path: Path) -> Iterator[Callable[[int], Nginx]]:
    binary = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")
    if binary is None:
        pytest.skip(
            "NGINX IS NOT INSTALLED: the proxy in front of segsvc goes untested. "
            "`make test` installs it (apt-get install nginx)."
        )
    started: list[Nginx] = []

    def start(upstream_port: int) -> Nginx:
        started.append(Nginx(binary, tmp_path / f"nginx-{len(started)}", upstream_port))
        return started[-1]

    try:
        yield start
    finally:
        for nginx in started:
            nginx.stop()


@pytest.fixture
def served_through_nginx(
    start_launcher: Callable[..., Launcher],
    start_nginx: Callable[[int], Nginx],
    database_url_for_test: str,
) -> Iterator[Nginx]:
    """segsvc with one worker of two threads, answering through nginx."""
    launcher = start_launcher(
        DATABASE_URL=database_url_for_test, SEGSVC_WORKERS="1", SEGSVC_THREADS="2"
    )
    nginx = start_nginx(launcher.port)
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while exchange(nginx.port, request_bytes("GET", "/healthz"))[0].status != 200:
        assert launcher.process.poll() is None, f"the launcher exited:\n{launcher.output()}"
        assert time.monotonic() < deadline, f"/healthz never answered:\n{launcher.output()}"
        time.sleep(0.1)
    yield nginx
    nginx.stop()  # first: gunicorn's graceful stop would wait for nginx's idle connections
    launcher.stop(signal.SIGTERM)


def request_bytes(
    method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b""
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: segsvc.test", "Connection: close"]
    if body:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return "\r\n".join(lines).encode() + b"\r\n\r\n" + body


def exchange(port: int, request: bytes) -> tuple[http.client.HTTPResponse, bytes]:
    """Sends raw bytes (malformed ones too) and reads the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
        connection.sendall(request)
        response = http.client.HTTPResponse(connection)
        response.begin()
        return response, response.read()


def call_json(
    port: int, method: str, path: str, body: object = None, request_id: str | None = None
) -> tuple[http.client.HTTPResponse, object]:
    headers = {} if request_id is None else {"X-Request-ID": request_id}
    data = b"" if body is None else json.dumps(body).encode()
    response, raw = exchange(port, request_bytes(method, path, headers, data))
    return response, json.loads(raw) if raw else None


def connection_is_open(connection: socket.socket) -> bool:
    try:
        return connection.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) != b""
    except BlockingIOError:
        return True
    except ConnectionError:
        return False


class SlowClients:
    """Connections that send `head` at once, then `tail` one byte a second, until closed."""

    def __init__(self, port: int, count: int, head: bytes, tail: bytes) -> None:
        self.connections = [socket.create_connection(("127.0.0.1", port)) for _ in range(count)]
        for connection in self.connections:
            connection.sendall(head)
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._drip, args=(tail,))
        self._thread.start()

    def _drip(self, tail: bytes) -> None:
        for offset in itertools.count():
            for connection in self.connections:
                with suppress(OSError):
                    connection.send(tail[offset : offset + 1])
            if self._stopped.wait(1):
                return

    def __enter__(self) -> "SlowClients":
        return self

    def __exit__(self, *_exception: object) -> None:
        self._stopped.set()
        self._thread.join()
        for connection in self.connections:
            connection.close()


def slow_reader(port: int, path: str) -> socket.socket:
    """A connection that asks for `path` and reads nothing until the test reads the answer."""
    reader = socket.socket()
    reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    reader.settimeout(5)
    reader.connect(("127.0.0.1", port))
    reader.sendall(request_bytes("GET", path))
    return reader


SLOW_HEADER = b"GET /healthz HTTP/1.1\r\nHost: segsvc.test\r\nX-Slow: " + b"a" * 1000
SLOW_BODY_HEAD = request_bytes(
    "POST", "/api/v1/users", {"Content-Type": "application/json", "Content-Length": "100000"}
)
SLOW_BODY = b" " * 100_000
# 1.5 MB: past the 256 KiB of one answer nginx keeps in memory, and its 16 KiB socket buffer.
LARGE_ANSWER_PATH = "/docs/assets/swagger-ui-bundle.js.map"


def test_requests_pass_through_nginx_with_their_request_id(served_through_nginx: Nginx) -> None:
    port = served_through_nginx.port
    response, created = call_json(
        port, "POST", "/api/v1/segments", {"slug": "PROXIED"}, request_id="proxy-check-1"
    )
    assert response.status == 201, created
    assert response.getheader("X-Request-ID") == "proxy-check-1"
    assert response.getheader("Location") == "/api/v1/segments/PROXIED"

    response, changed = call_json(
        port, "PATCH", "/api/v1/users/1000/segments", {"add": ["PROXIED"]}
    )
    assert response.status == 200, changed
    response, read = call_json(port, "GET", "/api/v1/users/1000/segments")
    assert [segment["slug"] for segment in read["segments"]] == ["PROXIED"]

    # The service's own errors pass untouched.
    response, problem = call_json(port, "GET", "/api/v1/segments/MISSING", request_id="proxy-2")
    assert response.status == 404
    assert response.getheader("Content-Type") == "application/problem+json"
    assert (problem["code"], problem["request_id"]) == ("segment_not_found", "proxy-2")

    # Without a usable id (this one would break nginx's JSON), nginx's own reaches the service.
    for request_id in (None, 'has"quote'):
        response, _ = call_json(port, "GET", "/healthz", request_id=request_id)
        assert re.fullmatch(r"[0-9a-f]{32}", response.getheader("X-Request-ID"))

    # nginx's body limit is the service's: the largest body the service takes passes.
    body = b'{"user_ids": [1000]}'.ljust(1024 * 1024)
    response, raw = exchange(port, request_bytes("POST", "/api/v1/users", body=body))
    assert (response.status, json.loads(raw)) == (200, {"registered": 0})


def test_slow_clients_wait_on_nginx_while_others_are_answered(served_through_nginx: Nginx) -> None:
    port = served_through_nginx.port
    with (
        SlowClients(port, 4, b"", SLOW_HEADER),
        SlowClients(port, 4, SLOW_BODY_HEAD, SLOW_BODY) as slow_bodies,
        ExitStack() as stack,
    ):
        readers = [stack.enter_context(slow_reader(port, LARGE_ANSWER_PATH)) for _ in range(4)]
        time.sleep(1)  # every slow client has sent something
        for path in ("/healthz", "/api/v1/users/1000/segments") * 3:
            started = time.monotonic()
            response, _ = exchange(port, request_bytes("GET", path))
            elapsed = time.monotonic() - started
            assert response.status == 200, path
            assert elapsed < PROMPT_SECONDS, f"{path} took {elapsed:.2f} s"
        assert all(connection_is_open(c) for c in slow_bodies.connections), "not held by nginx"
        # The answers the readers have not taken wait on nginx's disk, not in gunicorn.
        buffered = served_through_nginx.error_log().count("buffered to a temporary file")
        assert buffered == len(readers)
        for reader in readers:
            answer = http.client.HTTPResponse(reader)
            answer.begin()
            assert (answer.status, len(answer.read())) == (
                200,
                int(answer.getheader("Content-Length")),
            )


@pytest.mark.parametrize(
    ("request_", "status", "code"),
    [
        (
            request_bytes("POST", "/api/v1/users", {"Content-Length": "1048577"}),
            413,
            "payload_too_large",
        ),
        (request_bytes("GET", "/" + "a" * 5000), 414, "uri_too_long"),
        (request_bytes("GET", "/healthz", {"X-Long": "a" * 5000}), 400, "bad_request"),
        (b"NOT HTTP\r\n\r\n", 400, "bad_request"),
        (request_bytes("GET", "/healthz"), 502, "upstream_unavailable"),
    ],
    ids=["body over 1 MiB", "long URI", "long header", "malformed", "service down"],
)
def test_nginx_answers_its_own_errors_as_problems(
    start_nginx: Callable[[int], Nginx], request_: bytes, status: int, code: str
) -> None:
    nginx = start_nginx(free_port())  # nothing listens there

    response, raw = exchange(nginx.port, request_)

    assert response.status == status, raw
    assert response.getheader("Content-Type") == "application/problem+json"
    problem = json.loads(raw)
    assert list(problem) == ["type", "title", "status", "detail", "code", "request_id"]
    assert (problem["type"], problem["status"], problem["code"]) == (
        f"urn:segsvc:problem:{code}",
        status,
        code,
    )
    assert problem["request_id"] == response.getheader("X-Request-ID")


@pytest.mark.parametrize(
    ("head", "tail"),
    [(b"", SLOW_HEADER), (SLOW_BODY_HEAD + b" ", b"")],
    ids=["header at 1 byte a second", "body that stops"],
)
def test_nginx_disconnects_a_slow_client_without_troubling_the_service(
    start_nginx: Callable[[int], Nginx], head: bytes, tail: bytes
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as service:
        nginx = start_nginx(service.getsockname()[1])
        started = time.monotonic()
        with SlowClients(nginx.port, 1, head, tail) as slow:
            slow.connections[0].settimeout(CLIENT_TIMEOUT_SECONDS + 6)
            try:
                answer = slow.connections[0].recv(1024)
            except ConnectionResetError:
                # Closed while a byte of ours was still unread: the kernel resets, no answer.
                answer = b""
            assert answer == b"", "nginx answered instead of closing"
            elapsed = time.monotonic() - started
        # Loose above: the shared 2-core machine may be busy running the rest of the suite.
        assert CLIENT_TIMEOUT_SECONDS - 0.5 < elapsed < CLIENT_TIMEOUT_SECONDS + 4
        assert select.select([service], [], [], 0)[0] == [], "the service was called"
