"""Request bodies reach primary and mirror exactly as the client framed them.

Raw requests over one keep-alive loopback connection (each followed by a plain GET on
the same connection, so that a body framed wrong on the next hop would show up as a
broken follow-up). Both backends must receive the exact body, every copy must be
answered (none dropped), and the answer must be the primary's.

Trailer fields are received but forwarded to neither backend: the core strips the
`Trailer` header as hop-by-hop, and hyper's client only sends the fields it declares.
The copy gets what the primary gets.
"""

from __future__ import annotations

import socket

import pytest
from conftest import seed_config, settle
from support.wire import read_answer

from pymirror import Proxy

pytestmark = pytest.mark.e2e

HOST = b"Host: reviews\r\n"
CHUNKED = b"Transfer-Encoding: chunked\r\n"

#: name -> (method, raw head fields after the request line, raw body, body received,
#: chunked on the next hop)
CASES: dict[str, tuple[str, bytes, bytes, bytes, bool]] = {
    "chunked GET": ("GET", CHUNKED, b"5\r\nhello\r\n0\r\n\r\n", b"hello", True),
    "chunked GET in two chunks, with an extension": (
        "GET",
        CHUNKED,
        b"3;ext=1\r\nhel\r\n2\r\nlo\r\n0\r\n\r\n",
        b"hello",
        True,
    ),
    "chunked POST with a trailer": (
        "POST",
        CHUNKED,
        b"5\r\nhello\r\n0\r\nx-trailer: 1\r\n\r\n",
        b"hello",
        True,
    ),
    "chunked POST with a declared trailer": (
        "POST",
        b"Trailer: x-trailer\r\n" + CHUNKED,
        b"5\r\nhello\r\n0\r\nx-trailer: 1\r\n\r\n",
        b"hello",
        True,
    ),
    "chunked GET with a trailer": (
        "GET",
        CHUNKED,
        b"5\r\nhello\r\n0\r\nx-trailer: 1\r\nx-other: 2\r\n\r\n",
        b"hello",
        True,
    ),
    "chunked DELETE": ("DELETE", CHUNKED, b"5\r\nhello\r\n0\r\n\r\n", b"hello", True),
    "Content-Length GET": ("GET", b"Content-Length: 5\r\n", b"hello", b"hello", False),
    "Content-Length POST": ("POST", b"Content-Length: 5\r\n", b"hello", b"hello", False),
    "empty chunked GET": ("GET", CHUNKED, b"0\r\n\r\n", b"", True),
    "empty chunked POST": ("POST", CHUNKED, b"0\r\n\r\n", b"", True),
    "empty chunked POST with a trailer": ("POST", CHUNKED, b"0\r\nx-trailer: 1\r\n\r\n", b"", True),
}


def status_and_body(s: socket.socket) -> tuple[int, bytes]:
    """One Content-Length-framed answer (the backends frame theirs so)."""
    head, body = read_answer(s)
    return int(head.split(b"\r\n")[0].split()[1]), body


@pytest.mark.parametrize("name", list(CASES))
def test_the_body_reaches_primary_and_mirror_as_sent(backend, name: str) -> None:
    method, fields, raw_body, expected, chunked = CASES[name]
    v1, v2 = backend("v1"), backend("v2")
    with Proxy(seed_config(v1.address, v2.address)) as proxy:
        host, port = proxy.addresses[0].rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=5) as s:
            s.sendall(f"{method} /body HTTP/1.1\r\n".encode() + HOST + fields + b"\r\n" + raw_body)
            assert status_and_body(s) == (200, b"v1")
            s.sendall(b"GET /after HTTP/1.1\r\n" + HOST + b"\r\n")
            assert status_and_body(s) == (200, b"v1")
        v1.wait_for(2)
        v2.wait_for(2)
        copies = settle(proxy)

    assert copies["answered"] == 2, copies
    assert not any(copies["dropped"].values()), copies["dropped"]
    for label, b in (("primary", v1), ("mirror", v2)):
        seen = sorted(b.seen, key=lambda r: r.path)
        got = [(r.method, r.path, r.body) for r in seen]
        assert got == [("GET", "/after", b""), (method, "/body", expected)], (label, got)
        first = seen[1]
        assert first.chunked is chunked, (label, first.headers)
        # Trailer fields go on where the client declared them (`Trailer`, which HTTP/1.1
        # needs to send them), to the primary and the copy alike.
        declared = {"x-trailer": "1"} if b"Trailer: x-trailer" in fields else {}
        assert first.trailers == declared, (label, first.trailers)
        if not chunked:
            assert first.headers["content-length"] == str(len(expected)), (label, first.headers)
