"""The proxy's own answers: 404 unrouted, 502 refused, 504 timeout, each naming its cause."""

from __future__ import annotations

import pytest
from conftest import seed_config, subsets_config
from support.client import Client
from support.ports import closed_port

from pymirror import Proxy

pytestmark = pytest.mark.e2e


def test_unknown_host_without_default_is_404_and_never_forwarded(backend) -> None:
    v1, v2 = backend("v1"), backend("v2")
    config = seed_config(v1.address, v2.address).replace("    host: reviews\n", "")
    with Proxy(config) as proxy, Client(proxy.addresses[0]) as client:
        reply = client.request("GET", "http://evil.example/steal", host="evil.example")
        ok = client.request("GET", "/", host="REVIEWS:80")
        [listener] = proxy.stats()["listeners"]
    assert reply.status == 404
    assert b"no virtual service" in reply.body
    assert ok.status == 200
    assert len(v1.seen) == 1 and v1.seen[0].path == "/"
    assert listener["unrouted"] == 1


def test_unmatched_route_is_404(backend) -> None:
    v1, v2 = backend("v1"), backend("v2")
    config = seed_config(v1.address, v2.address).replace(
        "      - route:", "      - match: [{uri: {prefix: /api/}}]\n        route:"
    )
    with Proxy(config) as proxy, Client(proxy.addresses[0]) as client:
        assert client.request("GET", "/api/x").status == 200
        reply = client.request("GET", "/other")
    assert (reply.status, reply.body) == (404, b"no route matches this request\n")


def test_refused_primary_is_502_with_its_cause(backend) -> None:
    v2 = backend("v2")
    with (
        Proxy(seed_config(closed_port(), v2.address)) as proxy,
        Client(proxy.addresses[0]) as client,
    ):
        reply = client.request("GET", "/")
        [dest] = proxy.stats()["destinations"]
    assert reply.status == 502
    assert b"refused" in reply.body
    assert reply.headers["content-type"].startswith("text/plain")
    assert dest["responses"] == {"502": 1}


def test_slow_primary_past_the_route_timeout_is_504(backend) -> None:
    v1, v2 = backend("v1", delay=2.0), backend("v2")
    config = seed_config(v1.address, v2.address, route_extra="\n        timeout: 0.2s")
    with Proxy(config) as proxy, Client(proxy.addresses[0]) as client:
        reply = client.request("GET", "/")
    assert reply.status == 504
    assert b"timeout" in reply.body


def test_matching_by_method_and_header(backend) -> None:
    v1, v2 = backend("v1"), backend("v2")
    config = subsets_config(
        v1.address,
        v2.address,
        """\
      - match: [{headers: {end-user: {exact: jason}}, method: {exact: POST}}]
        route: [{destination: {host: reviews, subset: v2}}]
      - route: [{destination: {host: reviews, subset: v1}}]
""",
        hosts='["*.svc.local", reviews]',
    )
    with Proxy(config) as proxy, Client(proxy.addresses[0]) as client:
        jason_post = client.request("POST", "/", body=b"", headers={"end-user": "jason"})
        jason_get = client.request("GET", "/", headers={"end-user": "jason"})
        wildcard = client.request("GET", "/", host="reviews.svc.local")
    assert jason_post.headers["x-backend"] == "v2"
    assert jason_get.headers["x-backend"] == "v1"
    assert wildcard.headers["x-backend"] == "v1"
