"""A mirror that fails, stalls or is gone changes nothing for users."""

from __future__ import annotations

import time

import pytest
from conftest import most_connect_attempts, seed_config, settle
from support.client import Client
from support.ports import closed_port

from pymirror import Proxy

pytestmark = pytest.mark.e2e

N = 40


def test_mirror_answering_500_is_invisible(backend) -> None:
    v1, v2 = backend("v1"), backend("v2", status=500)
    with Proxy(seed_config(v1.address, v2.address)) as proxy, Client(proxy.addresses[0]) as client:
        replies = [client.request("GET", f"/{i}") for i in range(N)]
        mirror = settle(proxy)
    assert {(r.status, r.body) for r in replies} == {(200, b"v1")}
    assert (mirror["answered"], mirror["responses"]) == (N, {"500": N})


def test_dead_mirror_is_invisible_and_backed_off(backend) -> None:
    """Copies to an endpoint that refuses connections are dropped (`ejected`) without a
    connect attempt each; every copy that did try counts as `failed`."""
    v1 = backend("v1")
    with (
        Proxy(seed_config(v1.address, closed_port())) as proxy,
        Client(proxy.addresses[0]) as client,
    ):
        started = time.monotonic()
        replies = [client.request("GET", f"/{i}") for i in range(N)]
        elapsed = time.monotonic() - started
        mirror = settle(proxy)
    assert {(r.status, r.body) for r in replies} == {(200, b"v1")}
    assert mirror["answered"] == 0
    assert mirror["failed"] + mirror["dropped"]["ejected"] == N
    assert 1 <= mirror["failed"] <= most_connect_attempts(elapsed), (mirror, elapsed)


def test_slow_mirror_does_not_hold_back_the_keep_alive_connection(backend) -> None:
    """Ordering, not wall-clock thresholds: every user answer on one keep-alive
    connection arrives before the slow mirror has answered even its first copy."""
    v1, v2 = backend("v1"), backend("v2", delay=1.0)
    with Proxy(seed_config(v1.address, v2.address)) as proxy, Client(proxy.addresses[0]) as client:
        replies = [client.request("GET", f"/{i}") for i in range(N)]
        last_user_answer = time.monotonic()
        copies = v2.wait_for(N, timeout=15)
        mirror = settle(proxy)
    assert {(r.status, r.body) for r in replies} == {(200, b"v1")}
    assert len(copies) == N
    assert last_user_answer < min(c.answered_at for c in copies)
    assert mirror["answered"] == N


def test_mirror_timeout_counts_the_copy_as_timed_out(backend) -> None:
    v1, v2 = backend("v1"), backend("v2", delay=2.0)
    config = seed_config(v1.address, v2.address) + "mirrorDefaults: {timeout: 200ms}\n"
    with Proxy(config) as proxy, Client(proxy.addresses[0]) as client:
        replies = [client.request("GET", f"/{i}") for i in range(5)]
        mirror = settle(proxy)
    assert {r.status for r in replies} == {200}
    assert (mirror["timed_out"], mirror["answered"]) == (5, 0)


def test_in_flight_bound_drops_copies_and_counts_them(backend) -> None:
    v1, v2 = backend("v1"), backend("v2", delay=2.0)
    config = seed_config(v1.address, v2.address) + "mirrorDefaults: {maxInFlight: 3}\n"
    with Proxy(config) as proxy, Client(proxy.addresses[0]) as client:
        replies = [client.request("GET", f"/{i}") for i in range(10)]
        mirror = settle(proxy)
    assert {r.status for r in replies} == {200}
    assert mirror["answered"] == 3
    assert mirror["dropped"]["in_flight_limit"] == 7


def test_body_larger_than_the_copy_buffer_is_cut_not_sent_short(backend) -> None:
    v1, v2 = backend("v1"), backend("v2")
    config = seed_config(v1.address, v2.address) + "mirrorDefaults: {maxBodyBytes: 1024}\n"
    body = b"x" * 300_000
    with Proxy(config) as proxy, Client(proxy.addresses[0]) as client:
        reply = client.request("POST", "/upload", body=body)
        mirror = settle(proxy)
    assert (reply.status, v1.seen[0].body) == (200, body)
    # Either the copy never reached v2, or it did whole; never a truncated body.
    assert all(s.body == body for s in v2.seen)
    assert mirror["dropped"]["body_buffer"] + mirror["answered"] == 1


def test_engine_wide_buffer_budget_cuts_copies_not_users(backend) -> None:
    from pymirror import ServerOptions

    v1, v2 = backend("v1"), backend("v2")
    body = b"y" * 200_000
    options = ServerOptions(mirror_buffer_budget=1024)
    with Proxy(seed_config(v1.address, v2.address), options=options) as proxy:
        with Client(proxy.addresses[0]) as client:
            reply = client.request("POST", "/big", body=body)
        mirror = settle(proxy)
        queued = proxy.stats()["mirror_buffer_queued_bytes"]
    assert (reply.status, v1.seen[0].body) == (200, body)
    assert mirror["dropped"]["buffer_budget"] == 1
    assert v2.seen == []
    assert queued == 0
