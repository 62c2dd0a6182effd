"""Nothing reaches a hop that the client did not send, and nothing the proxy depends on can
be taken away by a client: exact bytes from a raw client on one side, hostile upstreams on
the other, and what each hop received asserted as recorded there.

- `Connection` may not name Host, the framing headers, the request id or x-forwarded-*;
- an upstream's framing is passed on strictly (RFC 9112 6.3), primary and mirror side;
- no Host can remove the copy's shadow marker, and a Host that is not a valid authority
  is refused before routing;
- after a 101 the head inspector is out of the byte path.
"""

from __future__ import annotations

import http.client
import socket
import time
from dataclasses import dataclass

import pytest
from conftest import seed_config, settle
from support.hostile import (
    CL_AND_TE_BODY,
    HostilePeer,
    Request,
    cl_and_te,
    cl_conflict,
    cl_list_equal,
    cl_malformed,
    fixed,
    healthy,
)
from support.upgrade_peer import UpgradeEcho
from support.wire import read_answer

from pymirror import Proxy
from pymirror.engine import ServerOptions

pytestmark = pytest.mark.e2e


def send_raw(address: str, data: bytes) -> http.client.HTTPResponse:
    """Sends `data` as it is on a new connection; returns the read response."""
    host, port = address.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=10)
    try:
        sock.sendall(data)
        response = http.client.HTTPResponse(sock)
        response.begin()
        response.read()
        return response
    finally:
        sock.close()


def head(request_line: str, *lines: str, body: bytes = b"") -> bytes:
    return ("\r\n".join([request_line, *lines]) + "\r\n\r\n").encode("latin-1") + body


@dataclass(frozen=True)
class Hops:
    """What one raw request became: the user's status and what each hop received."""

    status: int
    primary: Request
    mirror: Request


def both_hops(raw: bytes) -> Hops:
    """Sends `raw` through a proxy mirroring 100% from a healthy v1 to a healthy v2."""
    with (
        healthy(b"v1") as v1,
        healthy(b"v2") as v2,
        Proxy(seed_config(v1.address, v2.address)) as proxy,
    ):
        got = send_raw(proxy.addresses[0], raw)
        settle(proxy)
        [primary], [mirror] = v1.wait_requests(1), v2.wait_requests(1)
    return Hops(got.status, primary, mirror)


# === Connection cannot remove what the proxy depends on ===


def test_connection_host_does_not_strip_the_host() -> None:
    hops = both_hops(head("GET / HTTP/1.1", "Host: reviews", "Connection: host"))
    assert hops.status == 200
    assert hops.primary.header("host") == [b"reviews"]
    assert hops.mirror.header("host") == [b"reviews-shadow"]


def test_connection_x_request_id_keeps_one_id_on_every_hop() -> None:
    hops = both_hops(
        head(
            "GET / HTTP/1.1",
            "Host: reviews",
            "X-Request-Id: abc-123",
            "Connection: x-request-id, x-forwarded-for",
        )
    )
    for request in (hops.primary, hops.mirror):
        assert request.header("x-request-id") == [b"abc-123"]
        assert request.header("x-forwarded-for") == [b"127.0.0.1"]


def test_connection_content_length_keeps_the_framing_on_both_hops() -> None:
    hops = both_hops(
        head(
            "POST / HTTP/1.1",
            "Host: reviews",
            "Content-Length: 5",
            "Connection: content-length, transfer-encoding",
            body=b"hello",
        )
    )
    assert hops.status == 200
    for request in (hops.primary, hops.mirror):
        assert request.header("content-length") == [b"5"]
        assert request.header("transfer-encoding") == []
        assert request.body == b"hello"


def test_connection_still_removes_what_it_names_otherwise() -> None:
    hops = both_hops(head("GET / HTTP/1.1", "Host: reviews", "X-Secret: 1", "Connection: x-secret"))
    for request in (hops.primary, hops.mirror):
        assert request.header("x-secret") == [] and request.header("connection") == []


# === an upstream's framing, primary side ===


def through(primary: HostilePeer) -> tuple[http.client.HTTPResponse, bytes]:
    with (
        healthy(b"v2") as v2,
        Proxy(seed_config(primary.address, v2.address, mirror=None)) as proxy,
    ):
        host, port = proxy.addresses[0].rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        try:
            conn.request("GET", "/", headers={"Host": "reviews"})
            response = conn.getresponse()
            return response, response.read()
        finally:
            conn.close()


def test_transfer_encoding_wins_over_content_length_from_the_primary() -> None:
    """The primary sends `Content-Length: 3` with a chunked 10-byte body: the user gets all
    10 bytes, never `Content-Length: 3` (a truncated answer that looks complete)."""
    with cl_and_te() as v1:
        response, body = through(v1)
    assert response.status == 200
    assert body == CL_AND_TE_BODY
    assert response.getheader("content-length") in (None, "10")


def test_an_equal_content_length_list_from_the_primary_becomes_one_value() -> None:
    with cl_list_equal() as v1:
        response, body = through(v1)
    assert response.status == 200 and body == b"ok"
    assert response.headers.get_all("content-length") == ["2"]


@pytest.mark.parametrize("peer", [cl_conflict, cl_malformed], ids=lambda p: p.__name__)
def test_a_conflicting_or_malformed_content_length_from_the_primary_is_a_502(peer) -> None:
    with peer() as v1:
        response, body = through(v1)
    assert response.status == 502, body
    assert b"ok" not in body


# === an answer whose fields only pass through ===

PASSING_ANSWER = (
    b"HTTP/1.1 200 OK\r\nServer: Peer/1\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n"
    b"X-Mixed-CASE: Value \xe9\t!\r\nKeep-Alive: timeout=5\r\nConnection: keep-alive\r\n"
    b"Content-Length: 2\r\n\r\nok"
)


@pytest.mark.parametrize(
    ("route_extra", "added"),
    [
        # No rule reads the answer: its fields are written as they came (`http::raw_fields`).
        ("", []),
        # A response rule: the fields go through the map and the rule, as before.
        ("\n        headers: {response: {set: {x-op: '1'}}}", [b"x-op: 1"]),
    ],
    ids=["kept as they came", "through the map"],
)
def test_an_answer_passing_through_is_written_as_its_fields_say(
    route_extra: str, added: list[bytes]
) -> None:
    """The primary's fields, mixed case, repeated, obs-text, with its own hop's Connection
    and Keep-Alive: the user gets them lower-cased in order, without the hop's fields, with
    the proxy's own `date` and, for a request that said close, `connection: close`; the
    proxy closes after that answer. The same bytes whether the fields are kept as they came
    or go through the map (a route rule), the rule's field aside."""
    with fixed("passing", PASSING_ANSWER) as v1, healthy(b"v2") as v2:
        config = seed_config(v1.address, v2.address, mirror=None, route_extra=route_extra)
        with Proxy(config) as proxy:
            host, port = proxy.addresses[0].rsplit(":", 1)
            with socket.create_connection((host, int(port)), timeout=10) as sock:
                sock.sendall(head("GET /a HTTP/1.1", "Host: reviews"))
                first, first_body = read_answer(sock)
                sock.sendall(head("GET /b HTTP/1.1", "Host: reviews", "Connection: close"))
                last, last_body = read_answer(sock)
                sock.settimeout(5)
                after = sock.recv(1)
    fields = [
        b"HTTP/1.1 200 OK",
        b"server: Peer/1",
        b"set-cookie: a=1",
        b"set-cookie: b=2",
        b"x-mixed-case: Value \xe9\t!",
        b"content-length: 2",
        *added,
    ]
    lines = first.split(b"\r\n")
    assert lines[:-1] == fields and lines[-1].startswith(b"date: "), first
    lines = last.split(b"\r\n")
    assert lines[:-2] == fields and lines[-2] == b"connection: close", last
    assert lines[-1].startswith(b"date: ")
    assert first_body == last_body == b"ok"
    assert after == b"", "the proxy closes after the answer to a request that said close"


# === an upstream's framing, mirror side ===


def test_a_mirror_answer_with_both_lengths_is_read_by_its_chunks() -> None:
    with (
        healthy(b"v1") as v1,
        cl_and_te() as v2,
        Proxy(seed_config(v1.address, v2.address)) as proxy,
    ):
        send_raw(proxy.addresses[0], head("GET / HTTP/1.1", "Host: reviews"))
        mirror = settle(proxy)
    assert mirror["answered"] == 1
    assert mirror["answer_bytes"] == len(CL_AND_TE_BODY)


@pytest.mark.parametrize(
    ("peer", "outcome"),
    [(cl_list_equal, "answered"), (cl_conflict, "failed"), (cl_malformed, "failed")],
    ids=["equal", "conflict", "malformed"],
)
def test_a_mirror_answer_framing_is_judged_as_the_primarys(peer, outcome) -> None:
    with (
        healthy(b"v1") as v1,
        peer() as v2,
        Proxy(seed_config(v1.address, v2.address)) as proxy,
    ):
        got = send_raw(proxy.addresses[0], head("GET / HTTP/1.1", "Host: reviews"))
        mirror = settle(proxy)
    assert got.status == 200
    assert mirror[outcome] == 1, mirror
    if outcome == "failed":
        assert mirror["failures"]["protocol"] + mirror["failures"]["framing"] == 1


# === the shadow marker and the Host ===


@pytest.mark.parametrize(
    ("host", "shadow"),
    [
        ("[::1]:80", b"reviews-shadow:80"),
        ("127.0.0.1:8080", b"reviews-shadow:8080"),
        ("127.0.0.1", b"reviews-shadow"),
        ("reviews.", b"reviews-shadow"),
        ("reviews:9080", b"reviews-shadow:9080"),
    ],
)
def test_no_host_removes_the_shadow_marker(host: str, shadow: bytes) -> None:
    hops = both_hops(head("GET / HTTP/1.1", f"Host: {host}"))
    assert hops.status == 200
    assert hops.primary.header("host") == [host.encode()], "the primary gets the Host as sent"
    assert hops.mirror.header("host") == [shadow]


@pytest.mark.parametrize(
    "host",
    [
        b"[reviews]:9080",
        b"[anything]",
        b"r\xc3\xa9views",
        b"re\xffviews",
        b"a\tb",
        b"a b",
        b"reviews:80:80",
        b"a@b",
    ],
)
def test_a_host_that_is_not_an_authority_is_refused_before_routing(host: bytes) -> None:
    with (
        healthy(b"v1") as v1,
        healthy(b"v2") as v2,
        Proxy(seed_config(v1.address, v2.address)) as proxy,
    ):
        got = send_raw(proxy.addresses[0], b"GET / HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")
        stats = proxy.stats()
        assert got.status == 400
        assert v1.requests() == [] and v2.requests() == []
        assert stats["mirrors"][0]["answered"] == 0


# === after 101, the bytes are the protocol's ===


def test_a_text_protocol_pausing_after_101_is_not_cut_by_the_header_timeout() -> None:
    """Bytes that look like the start of a request head (`PING`), then a pause longer than
    the header-read timeout: the session goes on (the idle timeout applies, not the
    header-read one)."""
    v1, v2 = UpgradeEcho().start(), UpgradeEcho().start()
    options = ServerOptions(header_read_timeout=0.3)
    try:
        with Proxy(seed_config(v1.address, v2.address), options=options) as proxy:
            host, port = proxy.addresses[0].rsplit(":", 1)
            with socket.create_connection((host, int(port)), timeout=10) as sock:
                sock.sendall(
                    b"GET / HTTP/1.1\r\nHost: reviews\r\nConnection: Upgrade\r\n"
                    b"Upgrade: echo/1\r\n\r\n"
                )
                answer = b""
                while b"\r\n\r\n" not in answer:
                    chunk = sock.recv(1)
                    assert chunk, answer
                    answer += chunk
                assert answer.startswith(b"HTTP/1.1 101 ")
                sock.sendall(b"PING")
                assert recv_exactly(sock, 4) == b"PING"
                time.sleep(1.0)  # > the 0.3 s header-read timeout
                sock.sendall(b" PONG\r\n")
                assert recv_exactly(sock, 7) == b" PONG\r\n", "the session was cut"
    finally:
        v1.stop()
        v2.stop()


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    got = b""
    while len(got) < n:
        chunk = sock.recv(n - len(got))
        if not chunk:
            break
        got += chunk
    return got


# === a request head whose fields only pass through ===


def passing_heads() -> tuple[bytes, bytes, bytes]:
    """Three requests for one connection: mixed-case, repeated and obs-text fields; a POST
    with its own id and length; a GET with this hop's own `Connection` and `Keep-Alive`."""
    first = head(
        "GET /items/1?q=2 HTTP/1.1",
        "Host: reviews",
        "X-Mixed-CASE: Value \xe9\t!",
        "accept: */*",
        "X-Tag: 1",
        "x-tag: 2",
        "User-Agent: raw/1",
    )
    second = head(
        "POST /p HTTP/1.1",
        "Host: reviews",
        "Content-Length: 5",
        "X-Request-Id: given-1",
        body=b"hello",
    )
    third = head(
        "GET /c HTTP/1.1",
        "Host: reviews",
        "Connection: keep-alive",
        "Keep-Alive: timeout=5",
        "Accept: */*",
    )
    return first, second, third


def on_one_connection(proxy: Proxy, requests: tuple[bytes, ...]) -> None:
    host, port = proxy.addresses[0].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        for request in requests:
            sock.sendall(request)
            answer, _ = read_answer(sock)
            assert answer.startswith(b"HTTP/1.1 200 "), answer


@pytest.mark.parametrize(
    ("route_extra", "added"),
    [
        # No rule edits the request: its fields go upstream as they came
        # (`http::request_head`), the proxy's own after them.
        ("", []),
        # A request rule: the fields go through the map and the rule, as before.
        ("\n        headers: {request: {set: {x-op: '1'}}}", [b"x-op: 1"]),
    ],
    ids=["kept as they came", "through the map"],
)
def test_a_request_passing_through_reaches_the_upstream_as_its_fields_say(
    route_extra: str, added: list[bytes]
) -> None:
    """The client's fields, mixed case, repeated, obs-text: the upstream gets them
    lower-cased, in order, then the proxy's fresh `x-request-id` and `x-forwarded-*`; a
    client's own usable id and Content-Length pass in their place; `Connection: keep-alive`
    and `Keep-Alive`, this hop's own, do not pass. The same bytes whether the fields are
    kept as they came or go through the map (a route rule), the rule's field aside (and,
    once the hop's fields are removed from the map, the map's order of fields)."""
    first, second, third = passing_heads()
    with healthy(b"v1") as v1, healthy(b"v2") as v2:
        config = seed_config(v1.address, v2.address, mirror=None, route_extra=route_extra)
        with Proxy(config) as proxy:
            on_one_connection(proxy, (first, second, third))
            got = v1.wait_requests(3)
    forwarded = [b"x-forwarded-for: 127.0.0.1", b"x-forwarded-proto: http"]
    ids = [line for line in got[0].lines if line.startswith(b"x-request-id: ")]
    assert len(ids) == 1 and len(ids[0]) == len(b"x-request-id: ") + 36, got[0].lines
    assert (got[0].method, got[0].target, got[0].version) == ("GET", "/items/1?q=2", "HTTP/1.1")
    assert list(got[0].lines) == [
        b"host: reviews",
        b"x-mixed-case: Value \xe9\t!",
        b"accept: */*",
        b"x-tag: 1",
        b"x-tag: 2",
        b"user-agent: raw/1",
        ids[0],
        *forwarded,
        *added,
    ]
    assert (got[1].method, got[1].target, got[1].body) == ("POST", "/p", b"hello")
    assert list(got[1].lines) == [
        b"host: reviews",
        b"content-length: 5",
        b"x-request-id: given-1",
        *forwarded,
        *added,
    ]
    [third_id] = [line for line in got[2].lines if line.startswith(b"x-request-id: ")]
    expected = [b"host: reviews", b"accept: */*", third_id, *forwarded, *added]
    if added:
        # The map's removal of the hop's fields moves its last field into their place
        # (field order across names carries no meaning, RFC 9110 5.3).
        assert sorted(got[2].lines) == sorted(expected), got[2].lines
    else:
        assert list(got[2].lines) == expected


@pytest.mark.parametrize(
    ("copy_rule", "added"),
    [
        # No rule of the copy's: its fields are the primary's, shared as they came.
        ("", []),
        # A rule of the copy's: its fields go through a map of its own and the rule.
        (", headers: {request: {set: {x-copy: '1'}}}", [b"x-copy: 1"]),
    ],
    ids=["kept as they came", "through the map"],
)
def test_a_copy_reaches_the_mirror_as_the_primary_reaches_v1_with_the_shadow_host(
    copy_rule: str, added: list[bytes]
) -> None:
    """Each copy of the three requests reaches the mirror with the lines v1 got, in their
    order, the same request id among them, but `host: reviews-shadow` in Host's place (and
    the copy's own rule's field last); method, target and body as the primary's."""
    with healthy(b"v1") as v1, healthy(b"v2") as v2:
        plain = seed_config(v1.address, v2.address)
        mirror = "mirror: {host: reviews, subset: v2"
        config = plain.replace(mirror + "}", mirror + copy_rule + "}")
        assert config.count(mirror + copy_rule + "}") == 1
        with Proxy(config) as proxy:
            on_one_connection(proxy, passing_heads())
            settle(proxy)
            primaries, copies = v1.wait_requests(3), v2.wait_requests(3)
    # Copies run on tasks of their own: they may reach the mirror in another order.
    copies = sorted(copies, key=lambda r: [p.target for p in primaries].index(r.target))
    for primary, copy in zip(primaries, copies, strict=True):
        assert (copy.method, copy.target, copy.body) == (
            primary.method,
            primary.target,
            primary.body,
        )
        assert b"host: reviews" in primary.lines
        shadowed = [b"host: reviews-shadow" if x == b"host: reviews" else x for x in primary.lines]
        assert list(copy.lines) == [*shadowed, *added], (primary.lines, copy.lines)
