"""Client connection limits: header count, idle and header timeouts, connections per listener."""

from __future__ import annotations

import contextlib
import socket
import time

import pytest
from conftest import seed_config
from support.client import Client
from support.wire import read_answer

from pymirror import Proxy, ServerOptions

pytestmark = pytest.mark.e2e


def connect(address: str, timeout: float = 10.0) -> socket.socket:
    host, port = address.rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=timeout)


def closed_by_peer(s: socket.socket) -> bool:
    """Whether the proxy closes `s` (bounded by the socket's timeout)."""
    try:
        return s.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_header_count_limit_is_configurable(backend) -> None:
    v1, v2 = backend("v1"), backend("v2")
    config = seed_config(v1.address, v2.address, mirror=None) + "limits: {maxRequestHeaders: 5}\n"

    def head(path: str, fields: int) -> bytes:
        # Host plus `fields - 1` more.
        extra = b"".join(b"X-%d: a\r\n" % i for i in range(fields - 1))
        return b"GET %s HTTP/1.1\r\nHost: reviews\r\n%s\r\n" % (path.encode(), extra)

    with Proxy(config) as proxy:
        with connect(proxy.addresses[0]) as s:
            s.sendall(head("/fits", 5))
            assert read_answer(s)[0].startswith(b"HTTP/1.1 200 ")
        with connect(proxy.addresses[0]) as s:
            s.sendall(head("/over", 6))
            assert read_answer(s)[0].startswith(b"HTTP/1.1 431 ")
    assert [s.path for s in v1.seen] == ["/fits"]


def test_idle_keep_alive_connections_are_closed(backend) -> None:
    v1, v2 = backend("v1"), backend("v2")
    config = seed_config(v1.address, v2.address, mirror=None) + "limits: {idleTimeout: 300ms}\n"
    with Proxy(config) as proxy, connect(proxy.addresses[0]) as s:
        s.sendall(b"GET /one HTTP/1.1\r\nHost: reviews\r\n\r\n")
        assert read_answer(s)[0].startswith(b"HTTP/1.1 200 ")
        answered = time.monotonic()
        assert closed_by_peer(s)
        assert time.monotonic() - answered >= 0.3


def test_a_connection_in_use_outlives_the_idle_timeout(backend) -> None:
    """Requests 50 ms apart for longer than the 400 ms idle timeout: each one is activity,
    so the connection stays open (the timer is the connection's, re-armed from its last
    request, not one per request)."""
    v1, v2 = backend("v1"), backend("v2")
    config = seed_config(v1.address, v2.address, mirror=None) + "limits: {idleTimeout: 400ms}\n"
    with Proxy(config) as proxy, connect(proxy.addresses[0]) as s:
        started = time.monotonic()
        for i in range(12):
            s.sendall(b"GET /%d HTTP/1.1\r\nHost: reviews\r\n\r\n" % i)
            assert read_answer(s)[0].startswith(b"HTTP/1.1 200 "), i
            time.sleep(0.05)
        assert time.monotonic() - started > 0.4
        assert [r.path for r in v1.seen] == [f"/{i}" for i in range(12)]


def test_a_request_in_flight_is_not_idle(backend) -> None:
    """The backend takes longer than the idle timeout: the request is answered all the same."""
    v1, v2 = backend("v1", delay=0.8), backend("v2")
    config = seed_config(v1.address, v2.address, mirror=None) + "limits: {idleTimeout: 300ms}\n"
    with Proxy(config) as proxy, connect(proxy.addresses[0]) as s:
        s.sendall(b"GET /slow HTTP/1.1\r\nHost: reviews\r\n\r\n")
        assert read_answer(s)[0].startswith(b"HTTP/1.1 200 ")


def test_a_head_that_trickles_in_is_cut_at_the_header_read_timeout(backend) -> None:
    """The slowloris guard: the head began, and is not complete in time."""
    v1, v2 = backend("v1"), backend("v2")
    options = ServerOptions(header_read_timeout=0.3)
    with (
        Proxy(seed_config(v1.address, v2.address, mirror=None), options=options) as proxy,
        connect(proxy.addresses[0]) as s,
    ):
        s.sendall(b"GET /slow HTTP/1.1\r\nHost: reviews\r\n")
        started = time.monotonic()
        assert closed_by_peer(s)
        # Well before the 60 s idle timeout, not before the header read timeout.
        assert 0.3 <= time.monotonic() - started < 10
    assert v1.heads == 0


def test_connections_past_the_listener_limit_are_closed_at_accept(backend) -> None:
    v1, v2 = backend("v1"), backend("v2")
    config = seed_config(v1.address, v2.address, mirror=None) + "limits: {maxConnections: 2}\n"
    with Proxy(config) as proxy, contextlib.ExitStack() as stack:
        address = proxy.addresses[0]
        # Closed on every path; `first` is closed early below, on purpose.
        first = stack.enter_context(connect(address))
        second = stack.enter_context(connect(address))
        for s in (first, second):
            s.sendall(b"GET /held HTTP/1.1\r\nHost: reviews\r\n\r\n")
            assert read_answer(s)[0].startswith(b"HTTP/1.1 200 ")
        with connect(address) as third:
            assert closed_by_peer(third)
        [listener] = proxy.stats()["listeners"]
        assert (listener["connections_refused"], listener["connections_active"]) == (1, 2)
        first.close()
        deadline = time.monotonic() + 10
        while proxy.stats()["listeners"][0]["connections_active"] > 1:
            assert time.monotonic() < deadline, "the closed connection is still counted"
            time.sleep(0.01)
        with Client(address) as client:
            assert client.request("GET", "/fourth").status == 200
        second.close()
    assert [s.path for s in v1.seen] == ["/held", "/held", "/fourth"]
