"""Hostile and slow clients against the served service, over real sockets.

Each test starts the launcher as `make run` does, with few threads so that a handful of clients
could take them all, and checks that the service still answers everyone else.
"""

import json
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack

import pytest
from prometheus_client.parser import text_string_to_metric_families
from serving import Launcher, call

REPORT_ROWS = 100_000
REPORT_PATH = "/api/v1/reports/history.csv?from=2023-08"


@pytest.fixture
def history(sql) -> None:
    """About 6 MB of CSV: far more than the socket buffers between client and server hold."""
    sql.execute("INSERT INTO segments (slug, created_at) VALUES ('BULK', '2023-08-01')")
    sql.execute(
        "INSERT INTO membership_history (user_id, segment_id, operation, reason, at)"
        " SELECT 1 + i %% 5000, s.segment_id, 'added', 'manual',"
        "        timestamptz '2023-08-01' + i * interval '1 second'"
        "   FROM generate_series(0, %s - 1) AS i, segments s WHERE s.slug = 'BULK'",
        (REPORT_ROWS,),
    )


@pytest.fixture
def serve(
    start_launcher: Callable[..., Launcher], database_url_for_test: str
) -> Callable[..., Launcher]:
    def start(**variables: str) -> Launcher:
        launcher = start_launcher(
            DATABASE_URL=database_url_for_test, SEGSVC_EXPIRY_ENABLED="false", **variables
        )
        launcher.wait_until_healthy()
        return launcher

    return start


def connect(port: int, receive_buffer: int | None = None) -> socket.socket:
    sock = socket.socket()
    if receive_buffer is not None:
        # Set before connecting, so that the advertised window stays small.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.settimeout(30)
    sock.connect(("127.0.0.1", port))
    return sock


def request_bytes(path: str, *headers: str) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: localhost", "Connection: close", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def read_to_end(sock: socket.socket) -> bytes:
    received = bytearray()
    while chunk := sock.recv(65536):
        received += chunk
    return bytes(received)


def dechunk(body: bytes) -> tuple[bytes, bool]:
    """The payload of a chunked body, and whether it ended with the last (empty) chunk."""
    payload = bytearray()
    position = 0
    while True:
        line_end = body.find(b"\r\n", position)
        if line_end < 0:
            return bytes(payload), False
        size = int(body[position:line_end], 16)
        if size == 0:
            return bytes(payload), True
        if line_end + 2 + size > len(body):
            return bytes(payload + body[line_end + 2 :]), False
        payload += body[line_end + 2 : line_end + 2 + size]
        position = line_end + 2 + size + 2


def split_response(raw: bytes) -> tuple[int, str, bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, head.decode("latin-1"), body


def assert_answers_promptly(port: int, seconds: float = 3.0) -> None:
    """Probes that a client with no patience would send: each must answer within `seconds`."""
    for path in ("/healthz", "/api/v1/users/1000/segments"):
        started = time.monotonic()
        with connect(port) as sock:
            sock.settimeout(seconds)
            sock.sendall(request_bytes(path))
            status, _, _ = split_response(read_to_end(sock))
        assert status == 200, path
        assert time.monotonic() - started < seconds, path


def pool_connections_in_use(port: int) -> float:
    with connect(port) as sock:
        sock.sendall(request_bytes("/metrics"))
        _, _, body = split_response(read_to_end(sock))
    text, _ = dechunk(body) if b"\r\n" in body[:10] else (body, True)
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            if sample.name == "segsvc_db_pool_connections_in_use":
                return sample.value
    raise AssertionError("no pool gauge in /metrics")


class Trickler(threading.Thread):
    """Sends `data` one byte every `interval` seconds, as a slowloris does, until stopped."""

    def __init__(self, port: int, data: bytes, interval: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.sock = connect(port)
        self.data = data
        self.interval = interval
        self.stopped = threading.Event()

    def run(self) -> None:
        try:
            for index in range(len(self.data)):
                if self.stopped.wait(self.interval):
                    return
                self.sock.send(self.data[index : index + 1])
        except OSError:
            return

    def stop(self) -> None:
        self.stopped.set()
        self.join()
        self.sock.close()


@pytest.fixture
def tricklers() -> Iterator[Callable[..., Trickler]]:
    started: list[Trickler] = []

    def start(port: int, data: bytes) -> Trickler:
        trickler = Trickler(port, data)
        trickler.start()
        started.append(trickler)
        return trickler

    try:
        yield start
    finally:
        for trickler in started:
            trickler.stop()


def test_slow_headers_and_bodies_hold_no_thread(serve, tricklers):
    launcher = serve(SEGSVC_WORKERS="1", SEGSVC_THREADS="2")
    body_head = (
        b"POST /api/v1/users HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100000\r\n\r\n"
    )
    for _ in range(6):
        tricklers(launcher.port, request_bytes("/healthz", "X-Padding: " + "a" * 200))
    for _ in range(4):
        sender = tricklers(launcher.port, b" " * 100000)
        sender.sock.sendall(body_head)
    time.sleep(1.5)

    for _ in range(3):
        assert_answers_promptly(launcher.port)


def test_a_request_not_whole_in_time_is_answered_408_and_closed(serve):
    launcher = serve(SEGSVC_REQUEST_READ_TIMEOUT_SECONDS="2")
    with connect(launcher.port) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n")
        started = time.monotonic()
        for _ in range(10):
            try:
                sock.send(b"X")
            except OSError:
                break
            time.sleep(0.5)
        raw = read_to_end(sock)
    status, head, body = split_response(raw)
    assert status == 408
    assert "application/problem+json" in head
    assert json.loads(body)["code"] == "request_timeout"
    assert 1.5 < time.monotonic() - started < 6


def test_oversized_headers_are_refused_with_431(serve):
    launcher = serve()
    with connect(launcher.port) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Big: " + b"a" * 40000)
        status, _, body = split_response(read_to_end(sock))
    assert status == 431
    assert json.loads(body)["code"] == "request_header_fields_too_large"


def test_a_body_sent_after_100_continue_is_served(serve):
    launcher = serve()
    body = json.dumps({"user_ids": [1, 2, 3]}).encode()
    with connect(launcher.port) as sock:
        sock.sendall(
            b"POST /api/v1/users HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
            b"Content-Type: application/json\r\nExpect: 100-continue\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n"
        )
        assert sock.recv(100).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        sock.sendall(body)
        raw = read_to_end(sock)
    final = raw[raw.index(b"HTTP/1.1 2") :]
    status, _, answer = split_response(final)
    assert status == 200
    assert json.loads(dechunk(answer)[0] if b"\r\n" in answer[:10] else answer) == {"registered": 3}


def test_clients_that_never_close_do_not_stall_the_worker(serve):
    """gunicorn's graceful close waits in the event loop for the client, 2 s a connection."""
    launcher = serve(SEGSVC_WORKERS="1", SEGSVC_THREADS="2")
    with ExitStack() as stack:
        for _ in range(8):
            sock = stack.enter_context(connect(launcher.port))
            sock.sendall(request_bytes("/healthz"))
        time.sleep(0.5)
        assert_answers_promptly(launcher.port, seconds=1.5)


def test_a_client_that_stops_reading_is_dropped_after_the_send_timeout(serve, history):
    launcher = serve(SEGSVC_WORKERS="1", SEGSVC_THREADS="1", SEGSVC_SEND_TIMEOUT_SECONDS="2")
    with connect(launcher.port, receive_buffer=4096) as stalled:
        stalled.sendall(request_bytes(REPORT_PATH))
        assert stalled.recv(200).startswith(b"HTTP/1.1 200")
        # The only thread is writing to a client that reads nothing more.
        assert_answers_promptly(launcher.port, seconds=6)
        time.sleep(0.5)
        stalled.settimeout(5)
        with pytest.raises(ConnectionResetError):  # the unsent rest was discarded
            read_to_end(stalled)
    assert "it took no response data for 2 s" in launcher.output()


def test_a_report_read_slowly_past_the_idle_timeout_arrives_whole(serve, history):
    launcher = serve(SEGSVC_IDLE_IN_TRANSACTION_TIMEOUT_SECONDS="1")
    with connect(launcher.port, receive_buffer=4096) as sock:
        sock.sendall(request_bytes(REPORT_PATH))
        received = bytearray()
        slow_until = time.monotonic() + 3
        while time.monotonic() < slow_until:
            received += sock.recv(1000)
            time.sleep(0.05)
        received += read_to_end(sock)
    status, head, body = split_response(bytes(received))
    assert status == 200
    assert re.search(r"(?i)transfer-encoding: chunked", head)
    payload, complete = dechunk(body)
    assert complete, "the last chunk is missing: the download was cut short"
    assert payload.count(b"\n") == 1 + REPORT_ROWS


def test_slow_report_readers_leaving_give_every_connection_back(serve, history):
    """The attack: many downloads read a little, wait past the server's idle timeout, leave."""
    launcher = serve(SEGSVC_IDLE_IN_TRANSACTION_TIMEOUT_SECONDS="1", SEGSVC_DB_POOL_MAX="3")
    for _ in range(2):
        with ExitStack() as stack:
            readers = [
                stack.enter_context(connect(launcher.port, receive_buffer=4096)) for _ in range(12)
            ]
            for reader in readers:
                reader.sendall(request_bytes(REPORT_PATH))
            statuses = [split_response(reader.recv(200))[0] for reader in readers]
            assert set(statuses) <= {200, 503}
            assert 200 in statuses
            time.sleep(2.5)

    assert call(launcher.port, "GET", "/readyz") == (200, {"status": "ok"})
    assert call(launcher.port, "GET", "/api/v1/users/1000/segments")[0] == 200
    deadline = time.monotonic() + 10
    while pool_connections_in_use(launcher.port) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert pool_connections_in_use(launcher.port) == 0
