"""Passive health: endpoints that keep failing leave the pick; mirror endpoints that refuse
connections are backed off instead of costing a connect attempt per copy."""

from __future__ import annotations

import time

import pytest
from conftest import most_connect_attempts, settle
from support.client import Client
from support.ports import closed_port

from pymirror import Proxy
from pymirror.metrics import Scrape, render

pytestmark = pytest.mark.e2e


def two_endpoint_config(first: str, second: str, *, policy: str = "", mirror: str = "") -> str:
    return f"""
listeners: [{{address: 127.0.0.1:0}}]
services:
  reviews:
    endpoints:
      - {{address: {first}, labels: {{version: v1}}}}
      - {{address: {second}, labels: {{version: v1}}}}
    subsets: {{v1: {{version: v1}}}}
{policy}
{mirror}
virtualServices:
  - name: reviews
    hosts: [reviews]
    http:
      - route: [{{destination: {{host: reviews, subset: v1}}}}]
"""


OUTLIERS = """    trafficPolicy:
      outlierDetection: {consecutive5xxErrors: 2, baseEjectionTime: 60s, maxEjectionPercent: 50}
"""


def test_an_endpoint_answering_500s_is_ejected(backend) -> None:
    good, bad = backend("good"), backend("bad", status=500)
    config = two_endpoint_config(good.address, bad.address, policy=OUTLIERS)
    with Proxy(config) as proxy, Client(proxy.addresses[0]) as client:
        statuses = [client.request("GET", f"/{i}").status for i in range(12)]
        outliers = proxy.stats()["outliers"]
        text = render(Scrape(proxy.stats(), proxy.snapshot))
    # Round robin alternates until the second 500 in a row ejects `bad`; then only
    # `good` answers.
    assert outliers == [{"host": "reviews", "subset": "v1", "ejected": 1, "ejections_total": 1}]
    assert 'pymirror_outlier_ejections_total{host="reviews",subset="v1"} 1.0' in text
    assert 'pymirror_outlier_ejected_endpoints{host="reviews",subset="v1"} 1.0' in text
    assert statuses.count(500) == 2
    last_failure = max(i for i, s in enumerate(statuses) if s == 500)
    assert set(statuses[last_failure + 1 :]) == {200}
    assert len(statuses[last_failure + 1 :]) >= 8
    assert bad.heads == 2


def test_without_outlier_detection_nothing_is_ejected(backend) -> None:
    good, bad = backend("good"), backend("bad", status=500)
    with (
        Proxy(two_endpoint_config(good.address, bad.address)) as proxy,
        Client(proxy.addresses[0]) as client,
    ):
        statuses = [client.request("GET", f"/{i}").status for i in range(12)]
        assert proxy.stats()["outliers"] == []
    assert statuses.count(500) == 6
    assert bad.heads == 6


def test_a_refusing_mirror_endpoint_is_skipped_for_the_live_one(backend) -> None:
    """The mirror's two endpoints: one refuses connections. After its first refusal,
    copies go to the live endpoint instead of each trying the dead one; none is lost."""
    v1, shadow = backend("v1"), backend("shadow")
    config = f"""
listeners: [{{address: 127.0.0.1:0}}]
services:
  reviews:
    endpoints: [{{address: {v1.address}}}]
  shadow:
    endpoints: [{{address: {closed_port()}}}, {{address: {shadow.address}}}]
virtualServices:
  - name: reviews
    hosts: [reviews]
    http:
      - route: [{{destination: {{host: reviews}}}}]
        mirror: {{host: shadow}}
"""
    n = 30
    with Proxy(config) as proxy, Client(proxy.addresses[0]) as client:
        started = time.monotonic()
        assert {client.request("GET", f"/{i}").status for i in range(n)} == {200}
        elapsed = time.monotonic() - started
        mirror = settle(proxy)
    # Every copy either reached the live endpoint or failed trying the dead one; the
    # dead one was tried at most a few times (once, then once per expired back-off).
    assert mirror["answered"] + mirror["failed"] == n
    assert mirror["answered"] == shadow.heads
    assert 1 <= mirror["failed"] <= most_connect_attempts(elapsed), (mirror, elapsed)
    assert sum(mirror["dropped"].values()) == 0
