"""The hostile peers of tests/support/hostile.py send exactly the bytes they promise, keep
the connection alive where their answer ends, count what they wrote and how each
connection ended, and record what reached them. Raw sockets, no proxy."""

from __future__ import annotations

import socket
import time

import pytest
from support import hostile
from support.hostile import HostilePeer

GET = b"GET /a?b=1 HTTP/1.1\r\nHost: reviews\r\nX-Test: one\r\n\r\n"


def connect(peer: HostilePeer) -> socket.socket:
    """A client socket to `peer` (closed by the caller's `with`)."""
    host, port = peer.address.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=5)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_exactly(sock: socket.socket, n: int) -> bytes:
    """Exactly `n` bytes from `sock`, or fails (the peer sent fewer)."""
    data = bytearray()
    while len(data) < n:
        chunk = sock.recv(min(1 << 20, n - len(data)))
        assert chunk, f"connection closed after {len(data)} of {n} bytes"
        data += chunk
    return bytes(data)


def read_to_end(sock: socket.socket) -> tuple[bytes, str]:
    """Everything until the connection ends, and how it ended: `eof` or `reset`."""
    data = bytearray()
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return bytes(data), "reset"
        if not chunk:
            return bytes(data), "eof"
        data += chunk


def stream(prefix: bytes, piece: bytes, n: int) -> bytes:
    """The first `n` bytes of `prefix` followed by `piece` forever."""
    return (prefix + piece * (n // len(piece) + 1))[:n]


ENDLESS = [
    ("huge_body", hostile.HUGE_BODY_HEAD, hostile.HUGE_BODY_PIECE),
    ("endless_chunked", hostile.CHUNKED_HEAD, hostile.CHUNK),
    ("endless_headers", hostile.STATUS_LINE, hostile.JUNK_LINE),
]


@pytest.mark.parametrize(("name", "prefix", "piece"), ENDLESS, ids=[e[0] for e in ENDLESS])
def test_endless_peers_send_their_stream_until_the_client_closes(
    name: str, prefix: bytes, piece: bytes
) -> None:
    """The endless peers answer their exact stream, and see the client's close: the
    connection ends `peer_closed`, having written at least what the client read."""
    n = 512 * 1024
    with hostile.PEERS[name]() as peer:
        with connect(peer) as sock:
            sock.sendall(GET)
            assert read_exactly(sock, n) == stream(prefix, piece, n)
        [conn] = peer.wait_ended(1, timeout=2)
        assert conn.closed_by_peer, conn
        assert conn.bytes_written >= n
        assert conn.bytes_read == len(GET) and conn.requests == 1
        [request] = peer.requests()
        assert (request.method, request.target, request.path) == ("GET", "/a?b=1", "/a")
        assert request.lines == (b"Host: reviews", b"X-Test: one")
        assert request.header("x-test") == [b"one"]


def test_endless_peers_stop_at_their_cap() -> None:
    """A capped endless peer writes its cap at most, then closes (`cap`)."""
    with hostile.endless_chunked(cap=200_000) as peer:
        with connect(peer) as sock:
            sock.sendall(GET)
            data, how = read_to_end(sock)
        assert how == "eof"
        assert data == stream(hostile.CHUNKED_HEAD, hostile.CHUNK, len(data))
        assert len(data) <= 200_000
        [conn] = peer.wait_ended(1)
        assert conn.end == "cap" and conn.bytes_written == len(data)


def test_huge_body_completes_its_declared_length_at_a_small_cap_and_closes() -> None:
    """With a cap below the declared GiB, huge_body writes `cap` body bytes and closes."""
    with hostile.huge_body(cap=100_000) as peer:
        with connect(peer) as sock:
            sock.sendall(GET)
            data, how = read_to_end(sock)
        assert (how, data) == ("eof", hostile.HUGE_BODY_HEAD + b"x" * 100_000)
        assert peer.wait_ended(1)[0].end == "cap"


def test_short_body_reset_sends_a_thousand_bytes_then_resets() -> None:
    """short_body_reset: head declaring 100,000 bytes, exactly 1,000 of them, then a TCP
    reset (not a FIN)."""
    with hostile.short_body_reset() as peer:
        with connect(peer) as sock:
            sock.sendall(GET)
            data, how = read_to_end(sock)
        assert data == hostile.SHORT_BODY_HEAD + b"x" * 1000
        assert how == "reset"
        [conn] = peer.wait_ended(1)
        assert conn.end == "reset" and not conn.closed_by_peer
        assert conn.bytes_written == len(data)


FIXED = [
    ("cl_and_te", hostile.CL_AND_TE),
    ("cl_list_equal", hostile.CL_LIST_EQUAL),
    ("cl_conflict", hostile.CL_CONFLICT),
    ("cl_malformed", hostile.CL_MALFORMED),
    ("healthy", hostile.healthy_answer(b"ok\n")),
]


@pytest.mark.parametrize(("name", "answer"), FIXED, ids=[f[0] for f in FIXED])
def test_fixed_answers_are_exact_and_keep_alive(name: str, answer: bytes) -> None:
    """Each framing peer answers its exact bytes to every request on a keep-alive
    connection, a POST's body read first; the client's close is seen."""
    post = b"POST /p HTTP/1.1\r\nHost: reviews\r\nContent-Length: 5\r\n\r\nhello"
    with hostile.PEERS[name]() as peer:
        with connect(peer) as sock:
            sock.sendall(GET)
            assert read_exactly(sock, len(answer)) == answer
            sock.sendall(post)
            assert read_exactly(sock, len(answer)) == answer
        [conn] = peer.wait_ended(1)
        assert conn.closed_by_peer and conn.requests == 2
        assert conn.bytes_written == 2 * len(answer)
        first, second = peer.requests()
        assert (first.method, first.body) == ("GET", b"")
        assert (second.method, second.path, second.body) == ("POST", "/p", b"hello")
        assert second.header("Content-Length") == [b"5"]


def test_cl_and_te_answer_is_the_issue_bytes() -> None:
    """The CL+TE answer is byte for byte the one of issue 14, with a 10-byte chunk."""
    assert hostile.CL_AND_TE == (
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"a\r\n0123456789\r\n0\r\n\r\n"
    )
    assert len(hostile.JUNK_LINE) == 1024 and hostile.JUNK_LINE.startswith(b"X-Junk: j")


def test_healthy_sized_reads_chunked_requests_and_answers_n_bytes() -> None:
    """healthy_sized(n) answers an n-byte body; a chunked request body is read whole
    (trailers too) and recorded."""
    body = hostile.sized_body(60 * 1024)
    request = (
        b"POST /c HTTP/1.1\r\nHost: reviews\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\nX-Trailer: t\r\n\r\n"
    )
    with hostile.healthy_sized(len(body)) as peer:
        with connect(peer) as sock:
            sock.sendall(request)
            assert read_exactly(sock, len(hostile.healthy_answer(body))).endswith(b"\r\n" + body)
        [seen] = peer.wait_requests(1)
        assert (seen.body, seen.chunked) == (b"abcde", True)


def test_stop_closes_every_connection_and_the_listener() -> None:
    """stop() ends live connections at once (`stopped`, even mid-write) and the port is
    closed afterwards."""
    peer = hostile.endless_headers()
    idle = hostile.healthy()
    try:
        with connect(peer) as sock, connect(idle) as quiet:
            sock.sendall(GET)
            read_exactly(sock, 1024)
            quiet.sendall(GET)
            read_exactly(quiet, len(hostile.healthy_answer(b"ok\n")))
            started = time.monotonic()
            peer.stop()
            idle.stop()
            assert time.monotonic() - started < 1.5
            assert [c.end for c in peer.connections()] == ["stopped"]
            assert [c.end for c in idle.connections()] == ["stopped"]
            assert read_to_end(quiet) == (b"", "eof")
        with pytest.raises(ConnectionRefusedError):
            connect(idle).close()
    finally:
        peer.stop()
        idle.stop()


def test_spawned_peer_serves_from_its_own_process() -> None:
    """spawn() runs a peer in a child process; stats() reports its connections."""
    with hostile.spawn("healthy", body=b"primary\n") as peer:
        host, port = peer.address.rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            sock.sendall(GET)
            answer = hostile.healthy_answer(b"primary\n")
            assert read_exactly(sock, len(answer)) == answer
        deadline = time.monotonic() + 2
        while (stats := peer.stats())["connections"][0]["end"] == "open":
            assert time.monotonic() < deadline, stats
            time.sleep(0.005)
        assert stats["connections"][0]["closed_by_peer"]
        assert stats["requests"] == 1 and len(stats["connections"]) == 1
        assert stats["bytes_written"] == len(answer)
    assert peer.process.returncode == 0
