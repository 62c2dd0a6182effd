"""A real HTTP/1.1 server standing in for `reviews` v1 / v2, recording what reaches it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Seen:
    """One request as the backend received it."""

    method: str
    path: str
    query: str
    headers: dict[str, str]  # lower-case names; repeated headers joined with ", "
    body: bytes
    chunked: bool
    received_at: float
    answered_at: float = 0.0
    #: Trailer fields of a chunked body (lower-case names), as received.
    trailers: dict[str, str] = field(default_factory=dict)


@dataclass
class Behaviour:
    status: int = 200
    delay: float = 0.0
    body: bytes = b""
    #: When set: each request is held until the event is set (at most 30 s), then answered.
    gate: threading.Event | None = None
    #: When set: `respond(method, path)` gives (status, body, content type, delay) for
    #: each request, in place of the fixed status, body and delay above.
    respond: Callable[[str, str], tuple[int, bytes, str, float]] | None = None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # answers go out at once, as real servers do
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def parse_request(self) -> bool:
        parsed = super().parse_request()
        if parsed:
            # Counted as soon as a head is read, body or not: what reached the backend at all.
            with self.server.lock:
                self.server.heads += 1
        return parsed

    def _read_body(self) -> tuple[bytes, bool, dict[str, str]]:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    trailers: dict[str, str] = {}
                    while (line := self.rfile.readline()) not in (b"\r\n", b"\n", b""):
                        name, _, value = line.decode("latin-1").partition(":")
                        trailers[name.strip().lower()] = value.strip()
                    return b"".join(chunks), True, trailers
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length", "0") or 0)
        body = self.rfile.read(length)
        if len(body) < length:
            # The sender gave up mid-body: as a real server, never take it as a request.
            raise ConnectionAbortedError(f"body cut at {len(body)} of {length} bytes")
        return body, False, {}

    def _handle(self) -> None:
        received = time.monotonic()
        body, chunked, trailers = self._read_body()
        with self.server.lock:
            self.server.arrivals += 1
        url = urlsplit(self.path)
        headers: dict[str, str] = {}
        for name, value in self.headers.items():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        behaviour = self.server.behaviour
        status, ctype, delay = behaviour.status, "text/plain", behaviour.delay
        payload = behaviour.body or self.server.name.encode()
        if behaviour.respond is not None:
            status, payload, ctype, delay = behaviour.respond(self.command, self.path)
        if delay:
            time.sleep(delay)
        if behaviour.gate is not None:
            behaviour.gate.wait(timeout=30)
        # Recorded before answering: once a client has its answer, `seen` holds the request.
        seen = Seen(
            self.command,
            url.path,
            url.query,
            headers,
            body,
            chunked,
            received,
            time.monotonic(),
            trailers,
        )
        with self.server.lock:
            self.server.seen.append(seen)
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("X-Backend", self.server.name)
        self.end_headers()
        self.wfile.write(payload)
        self.wfile.flush()

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _handle


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that broke off mid-request is not a test failure here

    def __init__(self, name: str, behaviour: Behaviour) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.name = name
        self.behaviour = behaviour
        self.lock = threading.Lock()
        self.seen: list[Seen] = []
        self.arrivals = 0
        self.heads = 0


@dataclass
class Backend:
    """`Backend("v1").start()`: serves on 127.0.0.1, answers `name` (or the configured
    body) with the configured status after the configured delay."""

    name: str
    behaviour: Behaviour = field(default_factory=Behaviour)
    _server: _Server | None = None

    def start(self) -> Backend:
        self._server = _Server(self.name, self.behaviour)
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @property
    def address(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"{host}:{port}"

    @property
    def seen(self) -> list[Seen]:
        assert self._server is not None
        with self._server.lock:
            return list(self._server.seen)

    @property
    def heads(self) -> int:
        """Request heads received, whether or not a whole request followed."""
        assert self._server is not None
        with self._server.lock:
            return self._server.heads

    def wait_for_arrivals(self, count: int, timeout: float = 10.0) -> int:
        """Waits (bounded) until at least `count` requests were received (answered or not)."""
        assert self._server is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._server.lock:
                if self._server.arrivals >= count:
                    return self._server.arrivals
            time.sleep(0.01)
        return self._server.arrivals

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Seen]:
        """Waits (bounded) until at least `count` requests were answered."""
        deadline = time.monotonic() + timeout
        while len(seen := self.seen) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        return seen


class Stall:
    """`Stall().start()`: a TCP peer on 127.0.0.1 that accepts every connection and never
    reads from it (a hung mirror). A small receive buffer makes writers block at once."""

    def __init__(self, receive_buffer: int = 4096) -> None:
        import socket

        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(1024)
        self._held: list[Any] = []
        self._lock = threading.Lock()
        self._closed = threading.Event()

    def start(self) -> Stall:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return  # closed
            with self._lock:
                if self._closed.is_set():  # stop() has run meanwhile: not held past it
                    conn.close()
                    return
                self._held.append(conn)

    @property
    def accepted(self) -> int:
        with self._lock:
            return len(self._held)

    @property
    def address(self) -> str:
        host, port = self._listener.getsockname()[:2]
        return f"{host}:{port}"

    def stop(self) -> None:
        import contextlib
        import socket

        with self._lock:
            self._closed.set()
        with contextlib.suppress(OSError):  # not connected: nothing to shut down
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        with self._lock:
            for conn in self._held:
                conn.close()
            self._held.clear()
