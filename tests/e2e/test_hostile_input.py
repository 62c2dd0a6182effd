"""Hostile HTTP/1.1 input: refused with a 4xx or a close, never forwarded raw."""

from __future__ import annotations

import socket

import pytest
from conftest import seed_config

from pymirror import Proxy

pytestmark = pytest.mark.e2e

#: name -> (raw request bytes, expected status)
CASES = {
    "conflicting content-length": (
        b"POST / HTTP/1.1\r\nHost: reviews\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        400,
    ),
    "final transfer-encoding not chunked": (
        b"POST / HTTP/1.1\r\nHost: reviews\r\nTransfer-Encoding: gzip\r\n\r\nxx",
        400,
    ),
    "invalid chunk size": (
        b"POST / HTTP/1.1\r\nHost: reviews\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"0x10\r\nxxxxxxxxxxxxxxxx\r\n0\r\n\r\n",
        400,
    ),
    "obs-fold": (b"GET / HTTP/1.1\r\nHost: reviews\r\nX-A: a\r\n b\r\n\r\n", 400),
    "whitespace before the colon": (b"GET / HTTP/1.1\r\nHost: reviews\r\nX-A : a\r\n\r\n", 400),
    "TLS ClientHello on a plain listener": (
        bytes.fromhex("1603010200010001fc0303") + bytes(64),
        400,
    ),
    "garbage": (b"\x00\xff\xfe not http\r\n\r\n", 400),
    "request head over 64 KiB": (
        b"GET / HTTP/1.1\r\nHost: reviews\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n",
        431,
    ),
    "CONNECT": (b"CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n", 405),
}


def exchange(address: str, raw: bytes) -> bytes:
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(raw)
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = s.recv(4096)
            if not chunk:
                break
            received += chunk
        return received


@pytest.mark.parametrize("case", CASES)
def test_refused_and_never_forwarded(backend, case: str) -> None:
    raw, status = CASES[case]
    v1, v2 = backend("v1"), backend("v2")
    with Proxy(seed_config(v1.address, v2.address)) as proxy:
        answer = exchange(proxy.addresses[0], raw)
        assert answer.startswith(f"HTTP/1.1 {status} ".encode()), answer[:80]
        # The proxy still serves afterwards.
        ok = exchange(proxy.addresses[0], b"GET /after HTTP/1.1\r\nHost: reviews\r\n\r\n")
        assert ok.startswith(b"HTTP/1.1 200 ")
    assert [s.path for s in v1.seen] == ["/after"]
    assert v1.wait_for_arrivals(1) == 1


def test_content_length_with_transfer_encoding_is_framed_by_chunks_and_closed(backend) -> None:
    """RFC 9112 6.1's second option (hyper's): the body is framed by
    Transfer-Encoding alone, Content-Length never travels on, and the connection
    closes after the answer so nothing can be smuggled behind the body."""
    v1, v2 = backend("v1"), backend("v2")
    smuggled = b"GET /smuggled HTTP/1.1\r\nHost: reviews\r\n\r\n"
    raw = (
        b"POST /front HTTP/1.1\r\nHost: reviews\r\nContent-Length: 4\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + smuggled
    )
    with Proxy(seed_config(v1.address, v2.address)) as proxy:
        answer = exchange(proxy.addresses[0], raw)
    assert b"connection: close" in answer.lower()
    assert [s.path for s in v1.seen] == ["/front"]
    assert "content-length" not in v1.seen[0].headers or v1.seen[0].headers["content-length"] == "0"
