"""CONNECT tunnels, served only by routes that name CONNECT and only to their
destinations, with real HTTP clients and servers at both ends."""

from __future__ import annotations

import http.client
import socket
import time

import pytest
from conftest import subsets_config
from support.backend import Stall
from support.ports import closed_port

from pymirror import Proxy

pytestmark = pytest.mark.e2e

TUNNEL_ROUTE = """\
      - name: tunnel
        match: [{method: {exact: CONNECT}}]
        route: [{destination: {host: reviews, subset: v1}}]
        mirror: {host: reviews, subset: v2}
      - name: plain
        route: [{destination: {host: reviews, subset: v1}}]
"""


def tunneled_client(proxy: Proxy, target: str = "reviews:9080") -> http.client.HTTPConnection:
    """An HTTP client that speaks to `target` through a CONNECT to the proxy."""
    host, port = proxy.addresses[0].rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    name, target_port = target.rsplit(":", 1)
    conn.set_tunnel(name, int(target_port))
    return conn


def raw_connect(proxy: Proxy, target: str, host_header: str | None = None) -> bytes:
    """Sends one CONNECT (Host: the target unless given) and returns the proxy's whole
    answer up to its close."""
    host, port = proxy.addresses[0].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        head = f"CONNECT {target} HTTP/1.1\r\nHost: {host_header or target}\r\n\r\n"
        sock.sendall(head.encode())
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        return answer


def test_a_tunnel_carries_requests_to_the_destination_and_feeds_the_mirror(backend) -> None:
    v1, v2 = backend("v1", body=b"from v1"), backend("v2", body=b"from v2")
    with Proxy(subsets_config(v1.address, v2.address, TUNNEL_ROUTE)) as proxy:
        conn = tunneled_client(proxy)
        try:
            # Three requests on one tunnel: the bytes pass unread, keep-alive included.
            for i in range(3):
                conn.request("POST", f"/orders/{i}", body=f"order {i}".encode())
                response = conn.getresponse()
                assert (response.status, response.read()) == (200, b"from v1")
        finally:
            conn.close()
        primary = v1.wait_for(3)
        assert [(s.method, s.path, s.body) for s in primary] == [
            ("POST", f"/orders/{i}", f"order {i}".encode()) for i in range(3)
        ]
        # Through a tunnel the proxy adds nothing: no X-Forwarded-For, no request id.
        assert all("x-forwarded-for" not in s.headers for s in primary)
        # The mirror got the client's bytes as they were: the same three requests.
        mirrored = v2.wait_for(3)
        assert [(s.method, s.path, s.body) for s in mirrored] == [
            (s.method, s.path, s.body) for s in primary
        ]
        session = wait_for_session_end(proxy)
        assert session["connections_total"] == 1 and session["bytes_received"] > 0
        [mirror] = proxy.stats()["upgrade_mirrors"]
        assert mirror["opened"] == 1 and mirror["bytes_sent"] == session["bytes_received"]


def test_a_dead_mirror_changes_nothing_for_the_tunnel(backend) -> None:
    v1 = backend("v1", body=b"from v1")
    with Proxy(subsets_config(v1.address, closed_port(), TUNNEL_ROUTE)) as proxy:
        conn = tunneled_client(proxy)
        try:
            for _ in range(5):
                conn.request("GET", "/")
                response = conn.getresponse()
                assert (response.status, response.read()) == (200, b"from v1")
        finally:
            conn.close()
        wait_for_session_end(proxy)
        [mirror] = proxy.stats()["upgrade_mirrors"]
        assert mirror["cut"].get("connect_failed") == 1


def test_a_route_that_does_not_name_connect_takes_none(backend) -> None:
    """A tunnel carries requests no rule reads: a route that does not say
    `method: {exact: CONNECT}` refuses one, and nothing is dialled."""
    v1, v2 = backend("v1"), backend("v2")
    plain = "      - route: [{destination: {host: reviews, subset: v1}}]\n"
    with Proxy(subsets_config(v1.address, v2.address, plain)) as proxy:
        answer = raw_connect(proxy, "reviews:9080")
        assert answer.startswith(b"HTTP/1.1 405 "), answer
        assert b"method: {exact: CONNECT}" in answer
        assert v1.heads == 0 and v2.heads == 0
        assert proxy.stats()["listeners"][0]["unrouted"] == 1
        # The connection is still an HTTP one for other clients' requests.
        assert_plain_get_works(proxy)


def test_a_tunnel_goes_only_to_the_routes_destination(backend) -> None:
    """The authority asked for picks the virtual service, as a Host does; the proxy
    never dials it: an unknown one is refused, a known one reaches the destination."""
    v1, v2 = backend("v1", body=b"from v1"), backend("v2")
    bystander = Stall().start()
    try:
        with Proxy(subsets_config(v1.address, v2.address, TUNNEL_ROUTE)) as proxy:
            answer = raw_connect(proxy, bystander.address)
            assert answer.startswith(b"HTTP/1.1 405 "), answer
            # The known host with the bystander's port still goes to reviews v1.
            bystander_port = bystander.address.rsplit(":", 1)[1]
            conn = tunneled_client(proxy, f"reviews:{bystander_port}")
            try:
                conn.request("GET", "/")
                assert conn.getresponse().read() == b"from v1"
            finally:
                conn.close()
            assert bystander.accepted == 0
    finally:
        bystander.stop()


@pytest.mark.parametrize("target", ["reviews", "/orders"])
def test_a_connect_target_must_be_host_and_port(backend, target: str) -> None:
    """RFC 9110 9.3.6: `CONNECT host:port`. A bare host, or a path with the host in a
    Host header, is refused as malformed, not tunnelled somewhere guessed."""
    v1, v2 = backend("v1"), backend("v2")
    with Proxy(subsets_config(v1.address, v2.address, TUNNEL_ROUTE)) as proxy:
        answer = raw_connect(proxy, target, host_header="reviews")
        assert answer.startswith(b"HTTP/1.1 400 "), answer
        assert b"host:port" in answer
        assert proxy.stats()["upgrades"] == []


def test_a_refused_destination_answers_the_connect_with_502(backend) -> None:
    v2 = backend("v2")
    with Proxy(subsets_config(closed_port(), v2.address, TUNNEL_ROUTE)) as proxy:
        answer = raw_connect(proxy, "reviews:9080")
        assert answer.startswith(b"HTTP/1.1 502 "), answer
        assert v2.heads == 0, "no mirror feed without a tunnel"
        [session] = proxy.stats()["upgrades"]
        assert session["connect_failed"] == 1 and session["connections_total"] == 0


def assert_plain_get_works(proxy: Proxy) -> None:
    host, port = proxy.addresses[0].rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("GET", "/", headers={"Host": "reviews"})
        assert conn.getresponse().status == 200
    finally:
        conn.close()


def wait_for_session_end(proxy: Proxy, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sessions = proxy.stats()["upgrades"]
        if sessions and sessions[0]["connections_active"] == 0:
            return sessions[0]
        time.sleep(0.02)
    raise AssertionError(f"tunnel still open: {proxy.stats()['upgrades']}")


def test_an_open_tunnel_holds_its_place_in_the_destinations_connection_limit(backend) -> None:
    v1, v2 = backend("v1", body=b"from v1"), backend("v2")
    config = subsets_config(v1.address, v2.address, TUNNEL_ROUTE).replace(
        "    subsets: {v1: {version: v1}, v2: {version: v2}}",
        "    subsets: {v1: {version: v1}, v2: {version: v2}}\n"
        "    trafficPolicy: {connectionPool: {tcp: {maxConnections: 1}}}",
    )
    assert "maxConnections" in config
    with Proxy(config) as proxy:
        first = tunneled_client(proxy)
        try:
            first.request("GET", "/")
            assert first.getresponse().read() == b"from v1"
            # While the tunnel is open, a second one overflows.
            assert raw_connect(proxy, "reviews:9080").startswith(b"HTTP/1.1 503 ")
        finally:
            first.close()
        wait_for_session_end(proxy)
        again = tunneled_client(proxy)
        try:
            again.request("GET", "/")
            assert again.getresponse().read() == b"from v1"
        finally:
            again.close()
