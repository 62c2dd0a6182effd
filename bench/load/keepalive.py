"""Closed-loop load over keep-alive connections, in Python (no wrk needed), for the
scenarios that must check every answer's body: one user sending sequential GETs on one
connection, each timed alone (`KeepAliveClient`), and a flood of several connections
for a while (`flood`). Answers framed by Content-Length or chunked are both read."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from dataclasses import dataclass, field


def _request(path: str, host: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: pymirror-bench\r\n\r\n".encode()


def _head(head: bytes) -> tuple[int, int | None, bool]:
    """(status, content length or None, chunked) of a response head."""
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length, chunked = None, False
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name, value = name.strip().lower(), value.strip().lower()
        if name == "content-length":
            length = int(value)
        elif name == "transfer-encoding":
            chunked = "chunked" in value
    return status, length, chunked


class KeepAliveClient:
    """One keep-alive connection to `address`; `get()` sends one GET and reads its whole
    answer: (status, body). Blocking, TCP_NODELAY, nothing else in the way."""

    def __init__(self, address: str, host: str = "reviews", timeout: float = 10.0) -> None:
        ip, port = address.rsplit(":", 1)
        self.host = host
        self._sock = socket.create_connection((ip, int(port)), timeout=timeout)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._buf = bytearray()

    def _fill(self) -> None:
        chunk = self._sock.recv(1 << 18)
        if not chunk:
            raise ConnectionError("the proxy closed the connection")
        self._buf += chunk

    def _take(self, n: int) -> bytes:
        while len(self._buf) < n:
            self._fill()
        data = bytes(self._buf[:n])
        del self._buf[:n]
        return data

    def _line(self) -> bytes:
        while (end := self._buf.find(b"\r\n")) < 0:
            self._fill()
        return self._take(end + 2)[:-2]

    def get(self, path: str = "/") -> tuple[int, bytes]:
        self._sock.sendall(_request(path, self.host))
        while (end := self._buf.find(b"\r\n\r\n")) < 0:
            self._fill()
        status, length, chunked = _head(self._take(end + 4)[:-4])
        if not chunked:
            return status, self._take(length or 0)
        body = bytearray()
        while size := int(self._line().split(b";")[0], 16):
            body += self._take(size)
            self._take(2)
        while self._line():  # trailers, then the blank line
            pass
        return status, bytes(body)

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> KeepAliveClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class FloodResult:
    seconds: float
    requests: int = 0
    """Answers read whole."""
    wrong: int = 0
    """Answers that were not a 200 with the expected body, or connections that failed."""
    examples: list[str] = field(default_factory=list)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


async def _flood_one(
    address: str, host: str, body: bytes, until: float, result: FloodResult
) -> None:
    ip, port = address.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(ip, int(port))
    request = _request("/flood", host)
    try:
        while time.monotonic() < until:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status, length, chunked = _head(head[:-4])
            if chunked:  # not expected from these backends: counted as wrong and ended
                raise ValueError("chunked answer")
            got = await reader.readexactly(length or 0)
            result.requests += 1
            if status != 200 or got != body:
                result.wrong += 1
                if len(result.examples) < 3:
                    result.examples.append(f"{status} {len(got)} bytes {got[:40]!r}")
    except (OSError, ValueError, asyncio.IncompleteReadError) as exc:
        result.wrong += 1
        if len(result.examples) < 3:
            result.examples.append(repr(exc))
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


def flood(
    address: str, seconds: float, connections: int, body: bytes, host: str = "reviews"
) -> FloodResult:
    """`connections` keep-alive connections sending GETs back to back for `seconds`;
    every answer must be a 200 with `body` (counted in `wrong` otherwise)."""
    started = time.monotonic()
    result = FloodResult(seconds)

    async def main() -> None:
        until = time.monotonic() + seconds
        await asyncio.gather(
            *(_flood_one(address, host, body, until, result) for _ in range(connections))
        )

    asyncio.run(main())
    result.seconds = time.monotonic() - started
    return result
