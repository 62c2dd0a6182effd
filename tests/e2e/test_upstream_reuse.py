"""Upstream connection reuse against an upstream that abuses keep-alive, with exact
bytes: an answer followed at once by the bytes of a second, unasked-for answer; the same
bytes sent later, onto the idle connection; and a connection closed without an answer as
the next request arrives (the keep-alive race). No user may ever be given the
unasked-for answer, and only a request that may be repeated (no body, an idempotent
method: RFC 9110 9.2.2) is sent again after the race."""

from __future__ import annotations

import http.client
import time

import pytest
from conftest import seed_config
from support.hostile import HostilePeer, Request, _Exchange

from pymirror import Proxy

pytestmark = pytest.mark.e2e

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
#: What a hostile upstream tries to have served as the answer to the next request.
POISON = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nPOISON"


def _trailing(exchange: _Exchange, request: Request) -> bool:
    """OK and POISON in one write; keep-alive."""
    exchange.write(OK + POISON)
    return True


def _late(exchange: _Exchange, request: Request) -> bool:
    """OK, then POISON 100 ms later on the (by then idle) connection; keep-alive."""
    exchange.write(OK)
    time.sleep(0.1)
    exchange.write(POISON)
    return True


def _drops_second(exchange: _Exchange, request: Request) -> bool:
    """OK to a connection's first request; its second is read and the connection
    closed without an answer, as an upstream's keep-alive timeout does."""
    on_this = [r for r in exchange.peer.requests() if r.connection == request.connection]
    if len(on_this) >= 2:
        return False
    exchange.write(OK)
    return True


def two_requests(peer: HostilePeer, method: str, pause: float = 0.0) -> list[tuple[int, bytes]]:
    """Two requests on one client connection (so one worker, one pool) through a proxy
    whose only destination is `peer`; the statuses and bodies the user got."""
    got = []
    with Proxy(seed_config(peer.address, peer.address, mirror=None)) as proxy:
        host, port = proxy.addresses[0].rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        try:
            for i in range(2):
                if i:
                    time.sleep(pause)
                conn.request(method, f"/r{i}", body=b"" if method == "POST" else None,
                             headers={"Host": "reviews"})  # fmt: skip
                response = conn.getresponse()
                got.append((response.status, response.read()))
        finally:
            conn.close()
    return got


def test_bytes_after_an_answer_are_never_served_as_the_next_answer() -> None:
    with HostilePeer("trailing", _trailing) as peer:
        got = two_requests(peer, "GET")
        connections = peer.connections()
    assert got == [(200, b"ok"), (200, b"ok")]
    # The first connection was not reused: its next "answer" had arrived unasked.
    assert len(connections) == 2


def test_bytes_sent_onto_an_idle_connection_retire_it() -> None:
    with HostilePeer("late", _late) as peer:
        got = two_requests(peer, "GET", pause=0.4)
        connections = peer.connections()
    assert got == [(200, b"ok"), (200, b"ok")]
    assert len(connections) == 2


def test_a_get_that_meets_the_keep_alive_race_goes_again_on_a_new_connection() -> None:
    with HostilePeer("drops_second", _drops_second) as peer:
        got = two_requests(peer, "GET")
        requests = peer.requests()
    assert got == [(200, b"ok"), (200, b"ok")]
    # r1 reached the first connection (closed unanswered), then the second.
    assert [(r.target, r.connection) for r in requests] == [("/r0", 0), ("/r1", 0), ("/r1", 1)]


def test_a_post_that_meets_the_keep_alive_race_is_not_sent_twice() -> None:
    with HostilePeer("drops_second", _drops_second) as peer:
        got = two_requests(peer, "POST")
        requests = peer.requests()
    assert got[0] == (200, b"ok")
    assert got[1][0] == 502
    assert [(r.target, r.connection) for r in requests] == [("/r0", 0), ("/r1", 0)]
