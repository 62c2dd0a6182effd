"""100% mirroring: every copy reaches v2 intact, users only ever see v1."""

from __future__ import annotations

import os
import uuid

import pytest
from conftest import seed_config, settle
from support.client import Client

from pymirror import Proxy

pytestmark = pytest.mark.e2e

BODIES = {
    "empty GET": ("GET", None, False),
    "small POST": ("POST", b'{"rating": 5}', False),
    "1 MiB POST": ("POST", os.urandom(1024 * 1024), False),
    "chunked POST": ("POST", [b"first,", b"second,", os.urandom(200_000)], True),
}


@pytest.mark.parametrize("case", BODIES)
def test_copy_matches_request_and_user_sees_v1(backend, case: str) -> None:
    method, body, chunked = BODIES[case]
    v1, v2 = backend("v1"), backend("v2")
    with Proxy(seed_config(v1.address, v2.address)) as proxy, Client(proxy.addresses[0]) as client:
        reply = client.request(method, "/reviews/7?lang=en&x=1", body=body, chunked=chunked)
        assert (reply.status, reply.body, reply.headers["x-backend"]) == (200, b"v1", "v1")
        [copy] = v2.wait_for(1)
        [primary] = v1.seen

    expected = b"".join(body) if isinstance(body, list) else (body or b"")
    for seen in (primary, copy):
        assert (seen.method, seen.path, seen.query) == (method, "/reviews/7", "lang=en&x=1")
        assert seen.body == expected
    assert primary.headers["host"] == "reviews"
    assert copy.headers["host"] == "reviews-shadow"
    assert copy.headers["x-request-id"] == primary.headers["x-request-id"]
    assert uuid.UUID(primary.headers["x-request-id"]).version == 4


def test_host_port_keeps_its_place_and_request_id_is_kept(backend) -> None:
    v1, v2 = backend("v1"), backend("v2")
    with Proxy(seed_config(v1.address, v2.address)) as proxy, Client(proxy.addresses[0]) as client:
        reply = client.request("GET", "/", host="reviews:8080", headers={"x-request-id": "req-42"})
        assert reply.status == 200
        [copy] = v2.wait_for(1)
    assert copy.headers["host"] == "reviews-shadow:8080"
    assert copy.headers["x-request-id"] == v1.seen[0].headers["x-request-id"] == "req-42"


def test_hop_by_hop_headers_are_dropped_and_forwarded_for_added(backend) -> None:
    v1, v2 = backend("v1"), backend("v2")
    with Proxy(seed_config(v1.address, v2.address)) as proxy, Client(proxy.addresses[0]) as client:
        client.request(
            "GET",
            "/",
            headers={
                "Connection": "keep-alive, x-private",
                "X-Private": "1",
                "X-Kept": "yes",
                "Proxy-Authorization": "Basic Zm9vOmJhcg==",
            },
        )
        [copy] = v2.wait_for(1)
    for seen in (v1.seen[0], copy):
        assert "x-private" not in seen.headers
        assert "proxy-authorization" not in seen.headers
        assert seen.headers["x-kept"] == "yes"
        assert seen.headers["x-forwarded-for"] == "127.0.0.1"
        assert seen.headers["x-forwarded-proto"] == "http"


def test_every_copy_arrives_and_is_counted(backend) -> None:
    v1, v2 = backend("v1"), backend("v2")
    n = 300
    with Proxy(seed_config(v1.address, v2.address)) as proxy, Client(proxy.addresses[0]) as client:
        statuses = {client.request("GET", f"/r/{i}").status for i in range(n)}
        copies = v2.wait_for(n)
        mirror = settle(proxy)
    assert statuses == {200}
    assert sorted(int(c.path.rsplit("/", 1)[1]) for c in copies) == list(range(n))
    assert (mirror["answered"], mirror["failed"], sum(mirror["dropped"].values())) == (n, 0, 0)
    assert mirror["responses"] == {"200": n}
