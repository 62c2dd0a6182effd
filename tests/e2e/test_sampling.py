"""Sampling and weighted routing follow their rates within 4 sigma of the binomial."""

from __future__ import annotations

import math

import pytest
from conftest import seed_config, settle, subsets_config
from support.client import Client

from pymirror import Proxy

pytestmark = pytest.mark.e2e


def assert_within_4_sigma(hits: int, n: int, p: float) -> None:
    mean, sigma = n * p, math.sqrt(n * p * (1 - p))
    assert abs(hits - mean) <= 4 * sigma, (
        f"{hits} of {n} at p={p}: mean {mean:.1f} +- 4 x {sigma:.1f}"
    )


@pytest.mark.parametrize("percentage", [20.0, 2.5])
def test_mirror_percentage_follows_the_binomial(backend, percentage: float) -> None:
    v1, v2 = backend("v1"), backend("v2")
    n = 4000
    config = seed_config(
        v1.address, v2.address, mirror=f"mirrorPercentage: {{value: {percentage}}}"
    )
    with Proxy(config) as proxy, Client(proxy.addresses[0]) as client:
        assert all(client.request("GET", f"/{i}").status == 200 for i in range(n))
        mirror = settle(proxy)
        copies = len(v2.seen)
    assert len(v1.seen) == n
    assert copies == mirror["answered"]
    assert_within_4_sigma(copies, n, percentage / 100)


def test_zero_percent_sends_no_copy(backend) -> None:
    v1, v2 = backend("v1"), backend("v2")
    config = seed_config(v1.address, v2.address, mirror="mirrorPercentage: {value: 0}")
    with Proxy(config) as proxy, Client(proxy.addresses[0]) as client:
        for i in range(200):
            client.request("GET", f"/{i}")
        # As in Istio, an explicit 0% is no mirror policy at all.
        assert proxy.stats()["mirrors"] == []
    assert (len(v1.seen), len(v2.seen)) == (200, 0)


def test_weighted_destinations_follow_their_weights(backend) -> None:
    v1, v2 = backend("v1"), backend("v2")
    config = subsets_config(
        v1.address,
        v2.address,
        """\
      - route:
          - {destination: {host: reviews, subset: v1}, weight: 80}
          - {destination: {host: reviews, subset: v2}, weight: 20}
""",
    )
    n = 3000
    with Proxy(config) as proxy, Client(proxy.addresses[0]) as client:
        served = [client.request("GET", "/").headers["x-backend"] for _ in range(n)]
    assert served.count("v1") + served.count("v2") == n
    assert_within_4_sigma(served.count("v2"), n, 0.2)
