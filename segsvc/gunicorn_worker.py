"""gunicorn's gthread worker, changed so that slow clients cannot hold its threads.

The stock worker hands a connection to a thread when its first byte arrives, and the thread then
reads headers and body with blocking calls: a client sending a byte a second holds a thread for
as long as it likes, and a handful of them stop the worker (gunicorn's documentation asks for a
buffering proxy in front). Here the worker's event loop reads each request without blocking, and
a thread gets the connection only once the request is whole (or known to be refused: too large,
malformed). A request not whole within SEGSVC_REQUEST_READ_TIMEOUT_SECONDS is answered `408` and
closed. A thread writes the response with SEGSVC_SEND_TIMEOUT_SECONDS on each write, so a client
that stops reading frees its thread too; and connections are closed from the event loop without
waiting on the client. What gunicorn's parser refuses is answered as a problem (segsvc.errors),
not with gunicorn's HTML page. HTTP/1.x only, as segsvc configures gunicorn.
"""

import contextlib
import selectors
import socket
import struct
import time
import uuid
from collections import deque
from enum import Enum
from typing import Any

from gunicorn.http import errors as http_errors
from gunicorn.workers.gthread import TConn, ThreadWorker

from .config import ServeConfig
from .errors import (
    PROBLEM_MIMETYPE,
    BadRequest,
    ExpectationFailed,
    Forbidden,
    HeaderFieldsTooLarge,
    RequestTimeout,
    ServiceError,
    TransferCodingNotImplemented,
    UriTooLong,
    problem_body,
)

HEADER_END = b"\r\n\r\n"
# Request line and headers together; nginx's default allowance (4 buffers of 8 KiB).
MAX_HEADER_BYTES = 32 * 1024
RECEIVE_BYTES = 64 * 1024
# How long a closed connection may drain what the client still sends (gunicorn's own value).
LINGER_SECONDS = 2.0


class RequestState(Enum):
    INCOMPLETE = "incomplete"
    # Whole, or enough of it for the parser or the app to answer without reading more.
    READY = "ready"
    # Headers still incomplete past MAX_HEADER_BYTES.
    HEADERS_TOO_LARGE = "headers_too_large"


def request_state(
    data: bytes | bytearray, max_body_bytes: int, max_request_line: int
) -> RequestState:
    """Whether `data`, the bytes received so far on a connection, hold a whole HTTP/1.x request.

    Lenient on purpose: anything malformed is READY, for gunicorn's parser to refuse with `400`
    (a bare LF at once: the head would never end), and so is a request line longer than
    `max_request_line` (gunicorn's `limit_request_line`, 0 for none), for it to refuse with
    `414`; a body over the limit is READY, for the app to refuse with `413` without reading it.
    """
    header_end = data.find(HEADER_END)
    if header_end < 0:
        line_end = data.find(b"\r\n")
        if (line_end if line_end >= 0 else len(data) - 2) > max_request_line > 0:
            return RequestState.READY
        if data.count(b"\n") != data.count(b"\r\n"):
            return RequestState.READY
        if len(data) > MAX_HEADER_BYTES:
            return RequestState.HEADERS_TOO_LARGE
        return RequestState.INCOMPLETE
    body_start = header_end + len(HEADER_END)
    content_length = None
    chunked = False
    for line in bytes(data[:header_end]).split(b"\r\n")[1:]:
        name, colon, value = line.partition(b":")
        if not colon:
            continue
        name, value = name.strip().lower(), value.strip()
        if name == b"transfer-encoding":
            chunked = True
        elif name == b"content-length":
            if content_length is not None or not value.isdigit():
                return RequestState.READY
            content_length = int(value)
    if chunked:
        return _chunked_body_state(data, body_start, max_body_bytes)
    if content_length is None or content_length > max_body_bytes:
        return RequestState.READY
    if len(data) - body_start >= content_length:
        return RequestState.READY
    return RequestState.INCOMPLETE


def _chunked_body_state(
    data: bytes | bytearray, position: int, max_body_bytes: int
) -> RequestState:
    """Walks the chunk framing to the last chunk and the empty line after its trailers."""
    received = 0
    while True:
        line_end = data.find(b"\r\n", position)
        if line_end < 0:
            return RequestState.READY if len(data) - position > 1024 else RequestState.INCOMPLETE
        size_text = bytes(data[position:line_end]).partition(b";")[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            return RequestState.READY
        if size == 0:
            trailers_end = data.find(HEADER_END, line_end)
            return RequestState.INCOMPLETE if trailers_end < 0 else RequestState.READY
        received += size
        if received > max_body_bytes:
            return RequestState.READY
        position = line_end + 2 + size + 2
        if position > len(data):
            return RequestState.INCOMPLETE


def expects_continue(data: bytes | bytearray) -> bool:
    """An HTTP/1.1 request with `Expect: 100-continue` waits for our go-ahead to send its body."""
    head = bytes(data[: data.find(HEADER_END)]).lower()
    request_line, _, headers = head.partition(b"\r\n")
    return request_line.endswith(b"http/1.1") and any(
        name.strip() == b"expect" and value.strip() == b"100-continue"
        for name, _, value in (line.partition(b":") for line in headers.split(b"\r\n"))
    )


def problem_bytes(error: ServiceError, request_id: str) -> bytes:
    """A whole HTTP response with a problem body, for errors answered outside the app."""
    body = problem_body(error.status, error.code, error.title, error.detail, request_id)
    head = (
        f"HTTP/1.1 {error.status} {error.title}\r\nContent-Type: {PROBLEM_MIMETYPE}\r\n"
        f"Content-Length: {len(body)}\r\nX-Request-ID: {request_id}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + body


_MALFORMED_LINE = (
    http_errors.InvalidRequestLine,
    http_errors.InvalidRequestMethod,
    http_errors.InvalidHTTPVersion,
)
_MALFORMED_HEADER = (
    http_errors.InvalidHeader,
    http_errors.InvalidHeaderName,
    http_errors.ObsoleteFolding,
    http_errors.InvalidSchemeHeaders,
)
# gunicorn's faults, or the app's (a response header it may not send): answered 500.
_SERVER_FAULTS = (
    http_errors.InvalidResponseHeader,
    http_errors.InvalidResponseHeaderName,
    http_errors.ConfigurationProblem,
)


class BufferingThreadWorker(ThreadWorker):
    """The gthread worker with requests buffered by its event loop (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        settings = ServeConfig.from_environ()
        self.request_read_timeout = settings.request_read_timeout_seconds
        self.send_timeout = settings.send_timeout_seconds
        self.max_body_bytes = settings.max_body_bytes
        # Connections whose request is arriving, and closed ones draining; both by deadline.
        self.reading_conns: deque[TConn] = deque()
        self.lingering_socks: deque[tuple[float, socket.socket]] = deque()

    # The event loop's side: every connection passes here before a thread may take it.

    def enqueue_req(self, conn: TConn) -> None:
        """Reads the request in the event loop; a thread takes it once it is whole."""
        received = bytearray()
        if conn.parser is not None:
            # Bytes of the next request that the previous one's parser read ahead.
            received += conn.parser.unreader.take_buffered()
        now = time.monotonic()
        conn.received = received
        conn.continue_sent = False
        conn.awaiting_request = False
        conn.idle_deadline = now + self.cfg.keepalive
        conn.read_deadline = now + self.request_read_timeout
        conn.sock.setblocking(False)
        # A kept-alive connection comes here once readable: its request is most likely whole
        # already, and goes to a thread without another turn of the loop.
        if (received and self._advance(conn)) or self._receive(conn):
            return
        conn.awaiting_request = True
        self.reading_conns.append(conn)
        self.poller.register(conn.sock, selectors.EVENT_READ, lambda _sock: self._receive(conn))

    def _receive(self, conn: TConn) -> bool:
        """Takes what has arrived; True once the connection waits no more (see `_advance`)."""
        try:
            data = conn.sock.recv(RECEIVE_BYTES)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            data = b""
        if not data:
            self._close(conn)
            return True
        conn.received += data
        return self._advance(conn)

    def _advance(self, conn: TConn) -> bool:
        """Hands a whole request to a thread, or refuses oversized headers (True); or tells the
        client to send its body if it waits for that, and keeps reading (False)."""
        state = request_state(conn.received, self.max_body_bytes, self.cfg.limit_request_line)
        if state is RequestState.HEADERS_TOO_LARGE:
            self._refuse(conn, self._headers_too_large())
            return True
        if state is RequestState.READY:
            self._stop_reading(conn)
            conn.buffered_request = bytes(conn.received)
            conn.received = bytearray()
            conn.data_ready = True
            super().enqueue_req(conn)
            return True
        if not conn.continue_sent and HEADER_END in conn.received:
            conn.continue_sent = True
            if expects_continue(conn.received):
                self._send_quietly(conn.sock, b"HTTP/1.1 100 Continue\r\n\r\n")
        return False

    def _stop_reading(self, conn: TConn) -> None:
        if getattr(conn, "awaiting_request", False):
            conn.awaiting_request = False
            self.poller.unregister(conn.sock)
            self.reading_conns.remove(conn)

    def murder_pending(self) -> None:
        """Runs every loop turn: also ends requests that take too long to arrive, and drains.
        A stopping worker closes idle connections at once: no request has started on them."""
        super().murder_pending()
        now = time.monotonic()
        for conn in [
            c
            for c in self.reading_conns
            if not c.received and (now >= c.idle_deadline or not self.alive)
        ]:
            self._close(conn)
        for conn in [c for c in self.reading_conns if now >= c.read_deadline]:
            self._refuse(
                conn,
                RequestTimeout(
                    f"The request did not arrive whole within {self.request_read_timeout} s."
                ),
            )
        while self.lingering_socks and self.lingering_socks[0][0] <= now:
            self._end_linger(self.lingering_socks.popleft()[1])

    def _refuse(self, conn: TConn, error: ServiceError) -> None:
        self._answer(conn.sock, conn.client, error, error.detail)
        self._close(conn)

    def _answer(self, sock: socket.socket, client: Any, error: ServiceError, reason: str) -> None:
        """Sends the problem with an id of its own: no request was read to take one from."""
        request_id = uuid.uuid4().hex
        self.log.warning(
            "closed a connection from %s: %s %s, request id %s: %s",
            client,
            error.status,
            error.code,
            request_id,
            reason,
        )
        self._send_quietly(sock, problem_bytes(error, request_id))

    def _headers_too_large(self) -> HeaderFieldsTooLarge:
        return HeaderFieldsTooLarge(
            f"The request has over {self.cfg.limit_request_fields} header fields, one over "
            f"{self.cfg.limit_request_field_size} bytes, or a request line and headers over "
            f"{MAX_HEADER_BYTES} bytes in all."
        )

    def handle_error(self, req: Any, client: socket.socket, addr: Any, exc: BaseException) -> None:
        """What gunicorn answers with its HTML page, as a problem: the status it would give,
        a stable code. The thread then returns and the event loop closes the connection."""
        error = self._problem_for(exc)
        if error.status >= 500:
            self.log.exception("error handling a request from %s", addr, exc_info=exc)
        self._answer(client, addr, error, str(exc))

    def _problem_for(self, exc: BaseException) -> ServiceError:
        """gunicorn's status for each of its parser's refusals (gunicorn.workers.base)."""
        if isinstance(exc, _SERVER_FAULTS) or not isinstance(exc, http_errors.ParseException):
            return ServiceError("The server failed to handle the request.")
        if isinstance(exc, http_errors.LimitRequestLine):
            return UriTooLong(
                f"The request line is longer than {self.cfg.limit_request_line} bytes."
            )
        if isinstance(exc, http_errors.LimitRequestHeaders):
            return self._headers_too_large()
        if isinstance(exc, http_errors.ExpectationFailed):
            return ExpectationFailed("The only expectation understood is `100-continue`.")
        if isinstance(exc, http_errors.UnsupportedTransferCoding):
            return TransferCodingNotImplemented("The only transfer coding understood is `chunked`.")
        if isinstance(exc, http_errors.ForbiddenProxyRequest):
            return Forbidden("This address may not send a PROXY protocol header.")
        if isinstance(exc, _MALFORMED_LINE):
            return BadRequest("The request line is not `<method> <target> HTTP/1.x`.")
        if isinstance(exc, _MALFORMED_HEADER):
            return BadRequest("A header field is malformed or not allowed.")
        return BadRequest("The request is malformed.")

    @staticmethod
    def _send_quietly(sock: socket.socket, data: bytes) -> None:
        """Best effort, never blocking: the client may not be reading."""
        sock.setblocking(False)
        with contextlib.suppress(OSError):
            sock.send(data)

    def finish_request(self, conn: TConn, fs: Any) -> None:
        """A connection whose thread is done: closed from here without blocking, else as usual."""
        if not fs.cancelled() and fs.exception() is None and fs.result() is False:
            self._close(conn)
            return
        super().finish_request(conn, fs)

    def _close(self, conn: TConn) -> None:
        """Sends FIN and lets the client's last bytes drain in the event loop (gunicorn's own
        graceful close waits for them in the loop, up to 2 s a connection)."""
        self._stop_reading(conn)
        self.nr_conns -= 1
        sock = conn.sock
        try:
            sock.setblocking(False)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            sock.close()
            return
        self.lingering_socks.append((time.monotonic() + LINGER_SECONDS, sock))
        self.poller.register(sock, selectors.EVENT_READ, self._drain_lingering)

    def _drain_lingering(self, sock: socket.socket) -> None:
        try:
            if sock.recv(RECEIVE_BYTES):
                return
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            pass
        self.lingering_socks = deque(
            entry for entry in self.lingering_socks if entry[1] is not sock
        )
        self._end_linger(sock)

    def _end_linger(self, sock: socket.socket) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self.poller.unregister(sock)
        sock.close()

    # A thread's side.

    def handle(self, conn: TConn) -> Any:
        buffered = conn.__dict__.pop("buffered_request", None)
        if buffered is not None:
            conn.sock.setblocking(True)
            conn.init()
            conn.parser.unreader.unread(buffered)
        return super().handle(conn)

    def _keepalive_after(self, conn: TConn, keepalive: bool) -> bool:
        """gunicorn drains a body the app left unread; one found malformed closes the connection
        instead of getting a second answer after the one already sent."""
        try:
            return bool(super()._keepalive_after(conn, keepalive))
        except http_errors.ParseException as error:
            self.log.debug("closed a connection from %s: %s", conn.client, error)
            return False

    def handle_request(self, req: Any, conn: TConn) -> bool:
        """Serves one request; a client that does not take the response in time is dropped."""
        conn.sock.settimeout(self.send_timeout)
        try:
            return super().handle_request(req, conn)
        except TimeoutError:
            self.log.warning(
                "closed a connection from %s: it took no response data for %d s",
                conn.client,
                self.send_timeout,
            )
            # Resets the connection: what is still unsent is discarded, not left to the client.
            conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.sock.close()
            return False
