"""Hostile HTTP/1.1 input: refused with a 4xx or a close, never forwarded raw.

Each case is raw bytes on a fresh client connection. Per case: the answer is the
expected status (or the connection closes unanswered), neither the primary nor the
mirror backend saw any part of it (heads are counted as soon as they arrive, body or
not), and the proxy then serves the next connection.

Where the cases come from: RFC 9112 (sections 2.2, 3.2, 5.1, 5.2, 6.1, 6.3, 7.1);
llhttp's test vectors (test/request/{content-length,transfer-encoding,invalid}.md);
httparse's tests (tests/uri.rs, src/lib.rs header and chunk-size tests); and the
request-smuggling classes in HTTP Garden (github.com/narfindustries/http-garden:
CL.TE, TE.CL, chunk-size and whitespace discrepancies).
"""

from __future__ import annotations

import contextlib
import socket
import time

import pytest
from conftest import seed_config
from support.backend import Backend

from pymirror import Proxy

pytestmark = pytest.mark.e2e

HEAD = b"POST / HTTP/1.1\r\nHost: reviews\r\n"
CHUNKED = HEAD + b"Transfer-Encoding: chunked\r\n\r\n"
CLOSE = "close"  # the connection closes without an answer

#: name -> (raw request bytes, expected status or CLOSE)
REFUSED: dict[str, tuple[bytes, int | str]] = {
    # --- framing (RFC 9112 6.1, 6.3; llhttp content-length.md, transfer-encoding.md) ---
    "content-length then transfer-encoding": (
        HEAD + b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    "transfer-encoding then content-length": (
        HEAD + b"Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n",
        400,
    ),
    "duplicate equal content-length": (
        HEAD + b"Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
        400,
    ),
    "conflicting content-length": (
        HEAD + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        400,
    ),
    "content-length list": (HEAD + b"Content-Length: 5, 5\r\n\r\nhello", 400),
    "content-length with a plus sign": (HEAD + b"Content-Length: +5\r\n\r\nhello", 400),
    "negative content-length": (HEAD + b"Content-Length: -1\r\n\r\n", 400),
    "content-length overflow": (HEAD + b"Content-Length: 99999999999999999999\r\n\r\n", 400),
    "final transfer-encoding not chunked": (
        HEAD + b"Transfer-Encoding: gzip\r\n\r\nxx",
        400,
    ),
    "transfer-encoding gzip, chunked": (
        HEAD + b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    "transfer-encoding chunked twice in one line": (
        HEAD + b"Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    "transfer-encoding in two lines": (
        HEAD + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    "transfer-encoding xchunked": (HEAD + b"Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n", 400),
    "transfer-encoding on HTTP/1.0": (
        b"POST / HTTP/1.0\r\nHost: reviews\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    # --- chunk sizes and extensions (RFC 9112 7.1; httparse parse_chunk_size tests) ---
    "chunk size 0x10": (CHUNKED + b"0x10\r\nxxxxxxxxxxxxxxxx\r\n0\r\n\r\n", 400),
    "chunk size with underscore": (CHUNKED + b"1_0\r\nxxxxxxxxxxxxxxxx\r\n0\r\n\r\n", 400),
    "chunk size with plus sign": (CHUNKED + b"+10\r\nxxxxxxxxxxxxxxxx\r\n0\r\n\r\n", 400),
    "chunk size overflow": (CHUNKED + b"fffffffffffffffff1\r\nx\r\n0\r\n\r\n", 400),
    "bare CR in a chunk extension": (CHUNKED + b"1;a\rb\r\nx\r\n0\r\n\r\n", 400),
    # --- header syntax (RFC 9112 5.1, 5.2; llhttp invalid.md) ---
    "obs-fold": (b"GET / HTTP/1.1\r\nHost: reviews\r\nX-A: a\r\n b\r\n\r\n", 400),
    "whitespace before the colon": (b"GET / HTTP/1.1\r\nHost: reviews\r\nX-A : a\r\n\r\n", 400),
    "space in a header name": (b"GET / HTTP/1.1\r\nHost: reviews\r\nX A: a\r\n\r\n", 400),
    "NUL in a header value": (b"GET / HTTP/1.1\r\nHost: reviews\r\nX-A: a\x00b\r\n\r\n", 400),
    "bare CR in a header value": (b"GET / HTTP/1.1\r\nHost: reviews\r\nX-A: a\rb\r\n\r\n", 400),
    "two spaces in the request line": (b"GET  / HTTP/1.1\r\nHost: reviews\r\n\r\n", 400),
    "unknown HTTP version": (b"GET / HTTP/1.2\r\nHost: reviews\r\n\r\n", 400),
    "bad method token": (b"G(T / HTTP/1.1\r\nHost: reviews\r\n\r\n", 400),
    # --- Host (RFC 9112 3.2) ---
    "two Host headers": (b"GET / HTTP/1.1\r\nHost: reviews\r\nHost: evil\r\n\r\n", 400),
    "no Host on HTTP/1.1": (b"GET / HTTP/1.1\r\nX-A: a\r\n\r\n", 400),
    # --- limits ---
    "101 header fields": (
        b"GET / HTTP/1.1\r\nHost: reviews\r\n"
        + b"".join(b"X-%d: a\r\n" % i for i in range(100))
        + b"\r\n",
        431,
    ),
    "request head over 64 KiB": (
        b"GET / HTTP/1.1\r\nHost: reviews\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n",
        431,
    ),
    # --- not HTTP at all ---
    "TLS ClientHello on a plain listener": (
        bytes.fromhex("1603010200010001fc0303") + bytes(64),
        400,
    ),
    "garbage": (b"\x00\xff\xfe not http\r\n\r\n", 400),
    "CONNECT": (b"CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n", 405),
}


def send_raw(address: str, raw: bytes) -> bytes:
    """Sends `raw` and reads until the proxy closes (every case here ends in a close)."""
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as s:
        # Refused before the whole payload went out: reading says how.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            s.sendall(raw)
        received = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := s.recv(65536):
                received += chunk
        return received


def wait_heads(b: Backend, count: int, timeout: float = 10.0) -> int:
    deadline = time.monotonic() + timeout
    while b.heads < count and time.monotonic() < deadline:
        time.sleep(0.01)
    return b.heads


def served_afterwards(address: str) -> bytes:
    return send_raw(address, b"GET /after HTTP/1.1\r\nHost: reviews\r\nConnection: close\r\n\r\n")


@pytest.mark.parametrize("case", REFUSED)
def test_refused_and_never_forwarded(backend, case: str) -> None:
    raw, expected = REFUSED[case]
    v1, v2 = backend("v1"), backend("v2")
    with Proxy(seed_config(v1.address, v2.address)) as proxy:
        answer = send_raw(proxy.addresses[0], raw)
        if expected == CLOSE:
            assert answer == b"", answer[:80]
        else:
            assert answer.startswith(f"HTTP/1.1 {expected} ".encode()), answer[:120]
            # The proxy's own refusals end the connection: nothing can follow them.
            assert answer.count(b"HTTP/1.1 ") == 1, answer
        assert served_afterwards(proxy.addresses[0]).startswith(b"HTTP/1.1 200 ")
        # The mirror's copy of /after arrives on its own time; wait for it.
        assert wait_heads(v2, 1) == 1
    assert [s.path for s in v1.seen] == ["/after"]
    assert (v1.heads, v2.heads) == (1, 1)


def test_smuggled_request_behind_ambiguous_framing_never_arrives(backend) -> None:
    """CL.TE: a front end framing by Content-Length would pass the second request on
    as body; one framing by chunks would see two requests. Refused whole, and closed."""
    v1, v2 = backend("v1"), backend("v2")
    smuggled = b"GET /smuggled HTTP/1.1\r\nHost: reviews\r\n\r\n"
    raw = (
        b"POST /front HTTP/1.1\r\nHost: reviews\r\nContent-Length: 4\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + smuggled
    )
    with Proxy(seed_config(v1.address, v2.address)) as proxy:
        answer = send_raw(proxy.addresses[0], raw)
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert b"connection: close" in answer.lower()
    assert b"content-length together with transfer-encoding" in answer
    assert (v1.heads, v2.heads) == (0, 0)


def test_refusal_lands_on_the_bad_request_of_a_keep_alive_connection(backend) -> None:
    """Two pipelined requests: the clean first one is served, the ambiguous second one
    refused (the verdict follows the request it belongs to)."""
    v1, v2 = backend("v1"), backend("v2")
    raw = (
        b"POST /first HTTP/1.1\r\nHost: reviews\r\nContent-Length: 5\r\n\r\nhello"
        b"POST /second HTTP/1.1\r\nHost: reviews\r\nContent-Length: 1\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    )
    with Proxy(seed_config(v1.address, v2.address)) as proxy:
        answer = send_raw(proxy.addresses[0], raw)
        assert wait_heads(v2, 1) == 1
    first, _, second = answer.partition(b"HTTP/1.1 400 ")
    assert first.startswith(b"HTTP/1.1 200 ") and second, answer
    assert [(s.path, s.body) for s in v1.seen] == [("/first", b"hello")]


def test_bare_lf_line_endings_are_normalised(backend) -> None:
    """RFC 9112 2.2: a recipient may take a bare LF as a line end. hyper does; what
    the backend gets is rebuilt from the parsed message, with CRLF throughout."""
    v1, v2 = backend("v1"), backend("v2")
    raw = b"POST /lf HTTP/1.1\nHost: reviews\nX-A: a\nContent-Length: 2\nConnection: close\n\nhi"
    with Proxy(seed_config(v1.address, v2.address)) as proxy:
        answer = send_raw(proxy.addresses[0], raw)
    assert answer.startswith(b"HTTP/1.1 200 ")
    [seen] = v1.seen
    assert (seen.path, seen.headers["x-a"], seen.body) == ("/lf", "a", b"hi")


def test_a_chunked_body_is_forwarded_rechunked(backend) -> None:
    """The valid counterpart of the chunk cases: extensions and trailers are dropped,
    the body arrives whole."""
    v1, v2 = backend("v1"), backend("v2")
    raw = CHUNKED.replace(b"POST /", b"POST /chunked") + b"5;ext=1\r\nhello\r\n0\r\nX-T: 1\r\n\r\n"
    raw = raw.replace(b"Host: reviews\r\n", b"Host: reviews\r\nConnection: close\r\n")
    with Proxy(seed_config(v1.address, v2.address)) as proxy:
        answer = send_raw(proxy.addresses[0], raw)
    assert answer.startswith(b"HTTP/1.1 200 ")
    [seen] = v1.seen
    assert (seen.path, seen.body, seen.chunked) == ("/chunked", b"hello", True)


@pytest.mark.parametrize(
    "target",
    ["http://{evil}/steal", "http://{evil}:80/steal"],
)
def test_absolute_form_and_host_never_choose_the_destination(backend, target: str) -> None:
    """An absolute-form target or Host naming a host that is not configured is routed as
    the listener's default host says, to configured endpoints only: the server the
    request names sees nothing."""
    v1, v2, evil = backend("v1"), backend("v2"), backend("evil")
    named = target.format(evil=evil.address.split(":")[0] if ":80" in target else evil.address)
    raw = f"GET {named} HTTP/1.1\r\nHost: {evil.address}\r\nConnection: close\r\n\r\n".encode()
    with Proxy(seed_config(v1.address, v2.address)) as proxy:
        answer = send_raw(proxy.addresses[0], raw)
        assert wait_heads(v2, 1) == 1
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert [s.path for s in v1.seen] == ["/steal"]
    assert evil.heads == 0
