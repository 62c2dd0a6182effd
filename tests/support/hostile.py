"""Hostile HTTP/1.1 peers on loopback: upstreams (a mirror's v2, or a primary) that answer
every request with exactly the bytes named in issue 14, so that a test can show what the
proxy does with them and a benchmark what they cost its users.

Each peer listens on 127.0.0.1, port 0, serves every accepted connection on a thread of
its own and reads each request whole (head, then a Content-Length or chunked body) before
it answers; a peer whose answer ends keeps the connection for the next request
(keep-alive). Per connection it counts the bytes it wrote (accepted by its kernel: at
most its send buffer and the proxy's receive buffer more than the proxy read; `sndbuf`
shrinks the first) and how the connection ended: closed by the other side (the proxy
cut it), reset by the peer itself, capped, or closed at `stop()`. It records every
request received (method, target, raw header lines, body), so a test can assert what
reached the hop.

    with huge_body() as v2:                      # listening once built
        ... route a mirror to v2.address ...
        v2.wait_requests(1)
        assert v2.connections()[0].closed_by_peer

A peer can also run in a process of its own (`spawn("huge_body")`, or
`python tests/support/hostile.py huge_body`), so that a benchmark's client does not share
a GIL with a peer writing at full speed. Only the standard library is used: the file runs
as a script."""

from __future__ import annotations

import contextlib
import fcntl
import json
import socket
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: What a copy-draining proxy could be made to read from one connection, at most: the
#: endless peers stop writing there (and close), `huge_body` there ends its body.
CAP = 1 << 30
#: Size of each write of an endless body.
PIECE = 64 * 1024
#: A request head longer than this is refused (the peer closes the connection).
MAX_REQUEST_HEAD = 64 * 1024

HUGE_BODY_HEAD = b"HTTP/1.1 200 OK\r\nContent-Length: 1073741824\r\n\r\n"
HUGE_BODY_PIECE = b"x" * PIECE
CHUNKED_HEAD = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
#: One chunk of 0x10000 (64 KiB) bytes, its size line and its CRLF.
CHUNK = b"10000\r\n" + b"x" * PIECE + b"\r\n"
STATUS_LINE = b"HTTP/1.1 200 OK\r\n"
#: One header line of exactly 1 KiB, CRLF included.
JUNK_LINE = b"X-Junk: " + b"j" * (1024 - len(b"X-Junk: \r\n")) + b"\r\n"
SHORT_BODY_HEAD = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n"
SHORT_BODY = b"x" * 1000
CL_AND_TE = (
    b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"a\r\n0123456789\r\n0\r\n\r\n"
)
#: The body a correct proxy forwards for CL_AND_TE (with no `Content-Length: 3`).
CL_AND_TE_BODY = b"0123456789"
CL_LIST_EQUAL = b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nok"
CL_CONFLICT = b"HTTP/1.1 200 OK\r\nContent-Length: 2, 3\r\n\r\nok"
CL_MALFORMED = b"HTTP/1.1 200 OK\r\nContent-Length: 2x\r\n\r\nok"


def healthy_answer(body: bytes) -> bytes:
    """The bytes `healthy(body)` answers: a plain 200 framed by Content-Length."""
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n" % len(body)
        + body
    )


@dataclass(frozen=True)
class Request:
    """One request as the peer received it: what reached the hop, byte for byte."""

    connection: int
    """Index of the connection it came on (in `connections()`)."""
    method: str
    target: str
    """The request target as sent (path and query)."""
    version: str
    lines: tuple[bytes, ...]
    """The header lines, raw, in order, without their CRLF."""
    body: bytes
    chunked: bool

    @property
    def path(self) -> str:
        """The target without its query."""
        return self.target.split("?", 1)[0]

    def header(self, name: str) -> list[bytes]:
        """Values of every header line named `name` (any case), stripped, in order."""
        wanted = name.lower().encode()
        found = []
        for line in self.lines:
            key, _, value = line.partition(b":")
            if key.strip().lower() == wanted:
                found.append(value.strip())
        return found


@dataclass
class Connection:
    """One accepted connection, as the peer saw it."""

    index: int
    accepted_at: float
    """time.monotonic() at accept."""
    bytes_written: int = 0
    bytes_read: int = 0
    requests: int = 0
    end: str = "open"
    """open | peer_closed (the other side closed or reset it) | reset (this peer sent
    a reset) | closed (this peer closed it after a complete exchange) | cap (an endless
    answer reached CAP) | stopped (closed at stop()) | bad_request (unparseable request)."""
    ended_at: float | None = None
    error: str = ""

    @property
    def closed_by_peer(self) -> bool:
        """Whether the other side (the proxy) closed or reset this connection."""
        return self.end == "peer_closed"

    def as_dict(self) -> dict[str, Any]:
        """The record as JSON-able data (for `stats()` and spawned peers)."""
        return {**self.__dict__, "closed_by_peer": self.closed_by_peer}


class _Ended(Exception):
    """The connection is over (its `end` says why)."""


class _Exchange:
    """A connection being served: reads requests, writes (counted) and resets."""

    def __init__(self, peer: HostilePeer, sock: socket.socket, record: Connection) -> None:
        """Serves `sock`, counting into `record`."""
        self.peer = peer
        self.sock = sock
        self.record = record
        self._buffer = b""

    def _end(self, why: str, error: str = "") -> _Ended:
        """Records how the connection ended (the first reason wins; `stopped` when the
        peer is stopping) and returns the exception to raise."""
        if self.record.end == "open":
            self.record.end = "stopped" if self.peer.stopping else why
            self.record.error = error
            self.record.ended_at = time.monotonic()
        return _Ended(why)

    def _recv(self) -> bytes:
        """The next bytes from the other side (counted); ends on its close or reset."""
        while True:
            if self.peer.stopping:
                raise self._end("stopped")
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError as exc:
                raise self._end("peer_closed", repr(exc)) from exc
            if not data:
                raise self._end("peer_closed")
            self.record.bytes_read += len(data)
            return data

    def _read_line(self, limit: int) -> bytes:
        """One CRLF-ended line (without it), at most `limit` bytes long."""
        while b"\r\n" not in self._buffer:
            if len(self._buffer) > limit:
                raise self._end("bad_request", "line too long")
            self._buffer += self._recv()
        line, self._buffer = self._buffer.split(b"\r\n", 1)
        return line

    def _read_exactly(self, n: int) -> bytes:
        """Exactly `n` bytes of request body."""
        while len(self._buffer) < n:
            self._buffer += self._recv()
        data, self._buffer = self._buffer[:n], self._buffer[n:]
        return data

    def read_request(self) -> Request:
        """The next request, whole; raises _Ended when the other side closes first."""
        while b"\r\n\r\n" not in self._buffer:
            if len(self._buffer) > MAX_REQUEST_HEAD:
                raise self._end("bad_request", "request head too long")
            self._buffer += self._recv()
        head, self._buffer = self._buffer.split(b"\r\n\r\n", 1)
        first, *lines = head.split(b"\r\n")
        try:
            method, target, version = first.decode("latin-1").split(" ")
        except ValueError as exc:
            raise self._end("bad_request", f"request line {first[:100]!r}") from exc
        request = Request(self.record.index, method, target, version, tuple(lines), b"", False)
        te = b",".join(request.header("transfer-encoding")).lower()
        if b"chunked" in te:
            body = bytearray()
            while True:
                size_line = self._read_line(4096)
                try:
                    size = int(size_line.split(b";", 1)[0].strip(), 16)
                except ValueError as exc:
                    raise self._end("bad_request", f"chunk size {size_line[:40]!r}") from exc
                if size == 0:
                    while self._read_line(MAX_REQUEST_HEAD):  # trailers, then the blank line
                        pass
                    break
                body += self._read_exactly(size)
                self._read_exactly(2)
            request = Request(
                request.connection, method, target, version, request.lines, bytes(body), True
            )
        else:
            lengths = request.header("content-length")
            if lengths:
                try:
                    length = int(lengths[0])
                except ValueError as exc:
                    raise self._end("bad_request", f"content-length {lengths[0]!r}") from exc
                body_bytes = self._read_exactly(length)
                request = Request(
                    request.connection, method, target, version, request.lines, body_bytes, False
                )
        self.record.requests += 1
        return request

    def write(self, data: bytes) -> None:
        """Writes all of `data`, counting what the kernel took; raises _Ended when the
        other side closed or reset the connection, or the peer is stopping."""
        view = memoryview(data)
        while view:
            if self.peer.stopping:
                raise self._end("stopped")
            try:
                n = self.sock.send(view)
            except TimeoutError:
                continue
            except OSError as exc:
                raise self._end("peer_closed", repr(exc)) from exc
            self.record.bytes_written += n
            view = view[n:]

    def write_until_cap(self, piece: bytes) -> None:
        """Writes `piece` over and over until the connection has CAP bytes written
        (then closes it: `cap`) or the other side closes it."""
        while self.record.bytes_written + len(piece) <= self.peer.cap:
            self.write(piece)
        raise self._end("cap")

    def reset(self) -> None:
        """Waits (at most 1 s) until the kernel has sent what was written and had it
        acknowledged, so that nothing written is discarded, then closes with a TCP reset
        (SO_LINGER 0)."""
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            unsent = fcntl.ioctl(self.sock, termios.TIOCOUTQ, b"\0\0\0\0")
            if struct.unpack("i", unsent)[0] == 0:
                break
            time.sleep(0.001)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        raise self._end("reset")


#: How a peer answers one request: writes to the exchange; returns True to keep the
#: connection for the next request, or raises _Ended (through the exchange) to end it.
Answer = Callable[[_Exchange, Request], bool]


class HostilePeer:
    """An HTTP/1.1 upstream on 127.0.0.1 (port 0) answering each request with `answer`.
    Listening once built (`address`); `stop()` (or leaving its `with` block) closes the
    listener and every connection and waits for their threads."""

    def __init__(
        self,
        name: str,
        answer: Answer,
        *,
        cap: int = CAP,
        sndbuf: int | None = None,
    ) -> None:
        """Binds 127.0.0.1:0 and starts accepting. `cap`: the most an endless answer
        writes on one connection; `sndbuf`: SO_SNDBUF of each connection (smaller: the
        bytes written follow what the proxy read more closely)."""
        self.name = name
        self.cap = cap
        self._answer = answer
        self._sndbuf = sndbuf
        self._lock = threading.Lock()
        self._connections: list[Connection] = []
        self._requests: list[Request] = []
        self._live: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=1024)
        self._listener.settimeout(1.0)  # a fallback only: stop() shuts the listener down
        host, port = self._listener.getsockname()[:2]
        self.address = f"{host}:{port}"
        """`127.0.0.1:PORT` (kept after stop())."""
        self.port = int(port)
        self._acceptor = threading.Thread(target=self._accept, name=f"{name}-accept", daemon=True)
        self._acceptor.start()

    @property
    def stopping(self) -> bool:
        """Whether stop() was called."""
        return self._stopping.is_set()

    def connections(self) -> list[Connection]:
        """The connections accepted so far, in order (live records: their counts go on)."""
        with self._lock:
            return list(self._connections)

    def requests(self) -> list[Request]:
        """The requests received so far, in order of arrival."""
        with self._lock:
            return list(self._requests)

    def bytes_written(self) -> int:
        """Bytes written on all connections together."""
        return sum(c.bytes_written for c in self.connections())

    def wait_requests(self, n: int, timeout: float = 5.0) -> list[Request]:
        """Waits until `n` requests were received; returns them all. Fails (AssertionError)
        past `timeout`."""
        deadline = time.monotonic() + timeout
        while len(found := self.requests()) < n:
            assert time.monotonic() < deadline, f"{self.name}: {len(found)} of {n} requests"
            time.sleep(0.005)
        return found

    def wait_ended(self, n: int | None = None, timeout: float = 5.0) -> list[Connection]:
        """Waits until at least `n` connections (default: all accepted so far, at least
        one) have ended, whatever way; returns all connections."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.connections()
            ended = sum(1 for c in found if c.end != "open")
            if ended >= (n if n is not None else max(1, len(found))):
                return found
            assert time.monotonic() < deadline, (
                f"{self.name}: {ended} of {n or len(found)} connections ended"
            )
            time.sleep(0.005)

    def stats(self) -> dict[str, Any]:
        """A JSON-able summary: per connection figures, and requests counted (not kept)."""
        connections = self.connections()
        return {
            "name": self.name,
            "address": self.address,
            "requests": len(self.requests()),
            "connections": [c.as_dict() for c in connections],
            "bytes_written": sum(c.bytes_written for c in connections),
            "closed_by_peer": sum(1 for c in connections if c.closed_by_peer),
        }

    def start(self) -> HostilePeer:
        """A no-op kept for symmetry: the peer listens and accepts once built."""
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Closes the listener and every connection (shut down at once, so that no thread
        stays blocked in a read or write), and waits for the threads."""
        self._stopping.set()
        with contextlib.suppress(OSError):  # wakes a blocked accept() at once (Linux)
            self._listener.shutdown(socket.SHUT_RDWR)
        self._acceptor.join(timeout)
        self._listener.close()
        with self._lock:
            for sock in self._live:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            threads = list(self._threads)
        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def __enter__(self) -> HostilePeer:
        """The peer itself (already listening)."""
        return self

    def __exit__(self, *exc: object) -> None:
        """Stops the peer: nothing it opened outlives the block."""
        self.stop()

    def _accept(self) -> None:
        """Accepts connections until stop(), each served on a thread of its own."""
        while not self._stopping.is_set():
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                if self._stopping.is_set():
                    sock.close()
                    return
                record = Connection(len(self._connections), time.monotonic())
                self._connections.append(record)
                self._live.add(sock)
                thread = threading.Thread(
                    target=self._serve,
                    args=(sock, record),
                    name=f"{self.name}-{record.index}",
                    daemon=True,
                )
                self._threads.append(thread)
            thread.start()

    def _serve(self, sock: socket.socket, record: Connection) -> None:
        """Reads each request whole, records it, answers it; until the answer ends the
        connection, the other side closes it, or stop()."""
        exchange = _Exchange(self, sock, record)
        try:
            sock.settimeout(1.0)  # a fallback only: stop() shuts the socket down
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._sndbuf:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self._sndbuf)
            while True:
                request = exchange.read_request()
                with self._lock:
                    self._requests.append(request)
                if not self._answer(exchange, request):
                    raise exchange._end("closed")
        except _Ended:
            pass
        finally:
            if record.end == "open":  # an unexpected error in this thread
                record.end, record.ended_at = "closed", time.monotonic()
            with self._lock:
                self._live.discard(sock)
                sock.close()


# ---- the answers ---------------------------------------------------------------------


def _fixed(data: bytes) -> Answer:
    """An answer of exactly `data` to every request, keeping the connection."""

    def answer(exchange: _Exchange, request: Request) -> bool:
        """Writes the fixed bytes; keep-alive."""
        exchange.write(data)
        return True

    return answer


def _huge_body(exchange: _Exchange, request: Request) -> bool:
    """HUGE_BODY_HEAD, then 64 KiB pieces of `x` up to the declared GiB (or the cap)."""
    exchange.write(HUGE_BODY_HEAD)
    declared = 1 << 30
    limit = min(exchange.peer.cap, declared)  # the cap counts body bytes here
    sent = 0
    while sent < limit:
        n = min(PIECE, limit - sent)
        exchange.write(HUGE_BODY_PIECE if n == PIECE else HUGE_BODY_PIECE[:n])
        sent += n
    if sent < declared:
        raise exchange._end("cap")
    return True  # the whole GiB went out: the answer is complete, keep-alive


def _endless_chunked(exchange: _Exchange, request: Request) -> bool:
    """CHUNKED_HEAD, then CHUNK after CHUNK until the cap; never a last chunk."""
    exchange.write(CHUNKED_HEAD)
    exchange.write_until_cap(CHUNK)
    return False


def _endless_headers(exchange: _Exchange, request: Request) -> bool:
    """STATUS_LINE, then JUNK_LINEs until the cap; never the blank line ending a head."""
    exchange.write(STATUS_LINE)
    # 64 lines a write: 64 KiB writes, as the bodies'.
    exchange.write_until_cap(JUNK_LINE * 64)
    return False


def _short_body_reset(exchange: _Exchange, request: Request) -> bool:
    """SHORT_BODY_HEAD and SHORT_BODY (1,000 of the 100,000 bytes), then a TCP reset."""
    exchange.write(SHORT_BODY_HEAD + SHORT_BODY)
    exchange.reset()
    return False


def huge_body(*, cap: int = CAP, sndbuf: int | None = None) -> HostilePeer:
    """Proves a proxy bounds what it reads of an answer that declares a huge body:
    `HTTP/1.1 200 OK`, `Content-Length: 1073741824`, then 64 KiB writes of `x` until the
    other side closes (or the whole GiB, or `cap`, is written)."""
    return HostilePeer("huge_body", _huge_body, cap=cap, sndbuf=sndbuf)


def endless_chunked(*, cap: int = CAP, sndbuf: int | None = None) -> HostilePeer:
    """Proves a proxy bounds what it reads of a chunked answer that never ends:
    `HTTP/1.1 200 OK`, `Transfer-Encoding: chunked`, then `10000\\r\\n` + 64 KiB of `x` +
    `\\r\\n` chunks until the other side closes (or `cap` bytes are written)."""
    return HostilePeer("endless_chunked", _endless_chunked, cap=cap, sndbuf=sndbuf)


def endless_headers(*, cap: int = CAP, sndbuf: int | None = None) -> HostilePeer:
    """Proves a proxy bounds an answer's head: `HTTP/1.1 200 OK` then `X-Junk: jjj...`
    header lines of 1 KiB each (JUNK_LINE), with no end of head, until the other side
    closes (or `cap` bytes are written)."""
    return HostilePeer("endless_headers", _endless_headers, cap=cap, sndbuf=sndbuf)


def short_body_reset(*, sndbuf: int | None = None) -> HostilePeer:
    """Proves a proxy counts a body cut short as failed, not answered:
    `Content-Length: 100000`, 1,000 bytes of `x`, then a TCP reset (SO_LINGER 0, close)."""
    return HostilePeer("short_body_reset", _short_body_reset, sndbuf=sndbuf)


def cl_and_te() -> HostilePeer:
    """Proves a proxy lets Transfer-Encoding win over Content-Length (RFC 9112 6.3): both
    `Content-Length: 3` and `Transfer-Encoding: chunked`, then one 10-byte chunk
    `0123456789`; a correct proxy forwards all 10 bytes and no `Content-Length: 3`.
    Keep-alive."""
    return HostilePeer("cl_and_te", _fixed(CL_AND_TE))


def cl_list_equal() -> HostilePeer:
    """Proves a proxy folds a Content-Length list of equal values into one: `Content-Length:
    2, 2` and body `ok`; the client should get `Content-Length: 2`. Keep-alive."""
    return HostilePeer("cl_list_equal", _fixed(CL_LIST_EQUAL))


def cl_conflict() -> HostilePeer:
    """Proves a proxy refuses conflicting lengths (a 502 to the user): `Content-Length:
    2, 3` and body `ok`. Keep-alive (the proxy is expected to close)."""
    return HostilePeer("cl_conflict", _fixed(CL_CONFLICT))


def cl_malformed() -> HostilePeer:
    """Proves a proxy refuses a malformed length (a 502 to the user): `Content-Length: 2x`
    and body `ok`. Keep-alive (the proxy is expected to close)."""
    return HostilePeer("cl_malformed", _fixed(CL_MALFORMED))


def fixed(name: str, data: bytes) -> HostilePeer:
    """An upstream answering exactly `data` (a whole answer) to every request, keep-alive:
    for answers whose exact bytes a test asserts on the user's side."""
    return HostilePeer(name, _fixed(data))


def healthy(
    body: bytes = b"ok\n", *, sndbuf: int | None = None, name: str = "healthy"
) -> HostilePeer:
    """The baseline: a well-behaved upstream answering `healthy_answer(body)` (200,
    Content-Length) to every request, keep-alive. What every hostile figure is compared
    with."""
    return HostilePeer(name, _fixed(healthy_answer(body)), sndbuf=sndbuf)


def healthy_sized(n: int, *, fill: bytes = b"h", sndbuf: int | None = None) -> HostilePeer:
    """A healthy upstream whose answer has an `n`-byte body (`fill` repeated): shows what
    large ordinary answers cost (the compare flood uses 60 KiB)."""
    return healthy(sized_body(n, fill), sndbuf=sndbuf, name="healthy_sized")


def sized_body(n: int, fill: bytes = b"h") -> bytes:
    """The body `healthy_sized(n, fill=fill)` answers."""
    return (fill * (n // len(fill) + 1))[:n]


#: Every peer by name, for parametrised tests and `spawn` (factories taking no argument).
PEERS: dict[str, Callable[[], HostilePeer]] = {
    "huge_body": huge_body,
    "endless_chunked": endless_chunked,
    "endless_headers": endless_headers,
    "short_body_reset": short_body_reset,
    "cl_and_te": cl_and_te,
    "cl_list_equal": cl_list_equal,
    "cl_conflict": cl_conflict,
    "cl_malformed": cl_malformed,
    "healthy": healthy,
}


# ---- a peer in a process of its own --------------------------------------------------


@dataclass
class SpawnedPeer:
    """A peer running in a child process (`spawn`): its own GIL and its own CPU time.
    `stats()` asks it for `HostilePeer.stats()`; `stop()` (or leaving the `with` block)
    stops it and waits for the process."""

    name: str
    process: subprocess.Popen[str]
    address: str
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def pid(self) -> int:
        """The child process's id (its CPU time is the peer's)."""
        return self.process.pid

    def stats(self) -> dict[str, Any]:
        """The child's `HostilePeer.stats()`, now."""
        assert self.process.stdin is not None and self.process.stdout is not None
        with self._lock:
            self.process.stdin.write("stats\n")
            self.process.stdin.flush()
            line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.name}: the peer process exited ({self.process.poll()})")
        result: dict[str, Any] = json.loads(line)
        return result

    def stop(self) -> None:
        """Ends the child's input (it stops its peer and exits) and waits for it; kills
        it past 10 s."""
        if self.process.poll() is None:
            with contextlib.suppress(OSError):
                assert self.process.stdin is not None
                self.process.stdin.close()  # EOF: the child stops its peer and exits
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()

    def __enter__(self) -> SpawnedPeer:
        """The spawned peer (already listening)."""
        return self

    def __exit__(self, *exc: object) -> None:
        """Stops the child process."""
        self.stop()


def spawn(name: str, size: int | None = None, body: bytes | None = None) -> SpawnedPeer:
    """Starts the peer `name` of PEERS (or `healthy_sized` with `size`, or `healthy` with
    `body`) in a child process and waits until it listens."""
    argv = [sys.executable, str(Path(__file__).resolve()), name]
    if size is not None:
        argv += ["--size", str(size)]
    if body is not None:
        argv += ["--body", body.decode("latin-1")]
    process = subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, encoding="latin-1"
    )
    assert process.stdout is not None
    address = process.stdout.readline().strip()
    if not address:
        process.wait(timeout=10)
        raise RuntimeError(f"hostile peer {name} did not start ({process.returncode})")
    return SpawnedPeer(name, process, address)


def _main(argv: list[str]) -> None:
    """`hostile.py NAME [--size N] [--body TEXT]`: prints the address, answers a line
    `stats` with one JSON line, stops at the end of its input."""
    name, options = argv[0], dict(zip(argv[1::2], argv[2::2], strict=True))
    if "--size" in options:
        peer = healthy_sized(int(options["--size"]))
    elif "--body" in options:
        peer = healthy(options["--body"].encode("latin-1"))
    else:
        peer = PEERS[name]()
    with peer:
        print(peer.address, flush=True)
        for line in sys.stdin:
            if line.strip() == "stats":
                print(json.dumps(peer.stats()), flush=True)


if __name__ == "__main__":
    _main(sys.argv[1:])
