"""Idle pooled upstream connections are closed by the pool itself once their idle timeout
has passed, not only when the next request checks one out: after a burst, the
connections it opened do not stay open indefinitely."""

from __future__ import annotations

import threading

import pytest
from conftest import seed_config, settle
from support.client import Client
from support.hostile import healthy

from pymirror import Proxy

pytestmark = pytest.mark.e2e

CLIENTS = 12


def burst(address: str) -> list[int]:
    """One request on each of `CLIENTS` connections, all at once."""
    statuses: list[int] = []
    start = threading.Barrier(CLIENTS)

    def one(i: int) -> None:
        with Client(address) as client:
            start.wait()
            statuses.append(client.request("GET", f"/{i}").status)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return statuses


def test_a_bursts_connections_close_after_the_pool_idle_timeout() -> None:
    with healthy(b"v1") as v1, healthy(b"v2") as v2:
        config = seed_config(v1.address, v2.address) + "upstream: {poolIdleTimeout: 1s}\n"
        with Proxy(config) as proxy:
            assert burst(proxy.addresses[0]) == [200] * CLIENTS
            settle(proxy)
            opened = len(v1.connections())
            # Kept for reuse at first: an idle timeout, not a close after each answer.
            assert all(c.end == "open" for c in v1.connections() + v2.connections())
            # Idle timeout (1 s) plus the sweep period (1 s), with room for a loaded machine;
            # without the sweep they would stay open until the next checkout.
            for peer in (v1, v2):
                ended = peer.wait_ended(timeout=6.0)
                assert all(c.closed_by_peer for c in ended), [c.end for c in ended]
            stats = proxy.stats()
    assert opened >= 2, "the burst needed several connections to the primary"
    assert sum(c["open"] for c in stats["upstream_connections"]) == 0, stats["upstream_connections"]
