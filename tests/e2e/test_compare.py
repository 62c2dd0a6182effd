"""Comparison end to end: `pymirror run` in front of a real v1 and v2, v2 with seeded
differences; `pymirror report` must find exactly those, on the right endpoints, with
the right statuses and latencies."""

from __future__ import annotations

import json
import math
import random
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from support.backend import Backend, Behaviour
from support.client import Client
from support.load import fetch, poll
from support.process import PymirrorProcess

pytestmark = pytest.mark.e2e

ITEMS, USERS, ORDERS = 600, 150, 150
PRICE_CHANGE = 0.10  # share of v2's /items answers with another price
V2_USERS_DELAY = 0.040  # v2 answers /users this much slower


class Service:
    """v1 and v2 of a small JSON API. v2 differs on purpose: a changed price on ~10% of
    /items (seeded), 503 on every fifth /orders, and slower /users."""

    def __init__(self, version: str) -> None:
        self.version = version
        self.random = random.Random(7)
        self.lock = threading.Lock()
        self.changed: Counter[str] = Counter()

    def __call__(self, method: str, path: str) -> tuple[int, bytes, str, float]:
        kind, _, n = path.strip("/").partition("/")
        i = int(n.split("?")[0])
        status, delay = 200, 0.0
        body: dict[str, object] = {"id": i, "kind": kind, "tags": ["a", "b"]}
        if kind == "items":
            body["price"] = {"amount": 10 + i % 7, "currency": "EUR"}
            with self.lock:
                if self.version == "v2" and self.random.random() < PRICE_CHANGE:
                    body["price"] = {"amount": 10 + i % 7 + 1, "currency": "EUR"}
                    self.changed["items"] += 1
        elif kind == "users":
            body["name"] = f"user {i}"
            delay = V2_USERS_DELAY if self.version == "v2" else 0.0
        elif kind == "orders" and self.version == "v2" and i % 5 == 0:
            status = 503
            body = {"error": "unavailable"}
        return status, json.dumps(body).encode(), "application/json", delay


@pytest.fixture
def backends() -> Iterator[tuple[Backend, Backend, Service]]:
    v2_service = Service("v2")
    v1 = Backend("v1", Behaviour(respond=Service("v1"))).start()
    v2 = Backend("v2", Behaviour(respond=v2_service)).start()
    yield v1, v2, v2_service
    v1.stop()
    v2.stop()


def config(v1: str, v2: str) -> str:
    return f"""
listeners: [{{address: 127.0.0.1:0, host: shop}}]
services:
  shop:
    endpoints:
      - {{address: "{v1}", labels: {{version: v1}}}}
      - {{address: "{v2}", labels: {{version: v2}}}}
    subsets: {{v1: {{version: v1}}, v2: {{version: v2}}}}
virtualServices:
  - name: shop
    hosts: [shop]
    http:
      - name: api
        route: [{{destination: {{host: shop, subset: v1}}}}]
        mirror:
          host: shop
          subset: v2
          compare:
            percentage: {{value: 100}}
            ignoreHeaders: [x-backend]
"""


def within_binomial(hits: int, n: int, p: float, sigmas: float = 4.0) -> bool:
    return abs(hits - n * p) <= sigmas * math.sqrt(n * p * (1 - p))


def test_report_shows_the_seeded_differences(
    backends: tuple[Backend, Backend, Service], tmp_path: Path
) -> None:
    v1, v2, v2_service = backends
    path = tmp_path / "shop.yaml"
    path.write_text(config(v1.address, v2.address))
    proxy = PymirrorProcess(path)
    try:
        admin = proxy.admin_address
        paths = (
            [f"/items/{i}" for i in range(ITEMS)]
            + [f"/users/{i}" for i in range(USERS)]
            + [f"/orders/{i}" for i in range(ORDERS)]
        )
        with Client(proxy.address) as client:
            for p in paths:
                reply = client.request("GET", p, host="shop")
                # The user always gets v1's answer.
                assert reply.status == 200, (p, reply)
        total = len(paths)

        def compared() -> int:
            doc = json.loads(fetch(admin, "/compare")[1])
            return sum(e["compared"] for e in doc["endpoints"])

        poll(lambda: compared() == total, 20, lambda: f"{total} compared (have {compared()})")

        out = subprocess.run(
            [sys.executable, "-m", "pymirror.cli", "report", "--admin", admin, "--format", "json"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        doc = json.loads(out.stdout)
        by = {e["endpoint"]: e for e in doc["endpoints"]}
        assert set(by) == {"GET /items/{id}", "GET /users/{id}", "GET /orders/{id}"}

        # /items: the price amount, at the rate v2 changed it, and nothing else.
        items = by["GET /items/{id}"]
        changed = v2_service.changed["items"]
        assert within_binomial(changed, ITEMS, PRICE_CHANGE), changed
        assert items["fields"] == [
            {
                "field": "$.price.amount",
                "count": changed,
                "rate": changed / ITEMS,
                "class": "regression",
            }
        ]
        assert items["results"] == {"match": ITEMS - changed, "body_mismatch": changed}
        assert items["status_agreement"] == 1.0
        assert all(s["field"] == "$.price.amount" for s in items["samples"])
        assert all(s["mirror"] == s["primary"] + 1 for s in items["samples"])

        # /users: same answers, v2 slower by the injected delay.
        users = by["GET /users/{id}"]
        assert users["results"] == {"match": USERS}
        lat = users["latency"]
        # Lower bounds only: a loaded machine may add to either side, never take away.
        assert lat["mirror"]["p50"] >= V2_USERS_DELAY
        assert lat["primary"]["p50"] < V2_USERS_DELAY
        assert lat["mirror"]["p50"] - lat["primary"]["p50"] >= V2_USERS_DELAY * 0.8

        # /orders: every fifth is 503 on v2 (and its body differs with it).
        orders = by["GET /orders/{id}"]
        assert orders["results"] == {"match": ORDERS * 4 // 5, "status_mismatch": ORDERS // 5}
        assert orders["status_agreement"] == pytest.approx(0.8)
        assert {(s["primary"], s["mirror"], s["count"]) for s in orders["statuses"]} == {
            (200, 200, ORDERS * 4 // 5),
            (200, 503, ORDERS // 5),
        }

        # Nothing sampled went uncompared.
        [sampling] = doc["sampling"]
        assert sampling["sampled"] == total and sampling["queued"] == total
        assert not any(sampling["skipped"].values())

        # The same figures as metrics.
        # (parsed properly: the endpoint label holds braces, which `metric` cannot read)
        series = {
            (s.labels["endpoint"], s.labels["result"]): s.value
            for f in text_string_to_metric_families(fetch(admin, "/metrics")[1])
            for s in f.samples
            if s.name == "pymirror_compare_total" and s.labels["route"] == "api"
        }
        assert series[("GET /items/{id}", "body_mismatch")] == changed
        assert series[("GET /items/{id}", "match")] == ITEMS - changed
        assert series[("GET /orders/{id}", "status_mismatch")] == ORDERS // 5
        assert series[("", "skipped")] == 0

        # And as text.
        text = subprocess.run(
            [sys.executable, "-m", "pymirror.cli", "report", "--admin", admin],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
        assert re.search(rf"\$\.price\.amount\s+{changed}\s+{changed / ITEMS:.1%}", text), text
        assert "200 -> 503: 30" in text
    finally:
        proxy.stop()


class Stamped:
    """A version of a small API whose every answer carries the time it was made (noise:
    no two instances agree on it); v2 also paints /items' star red (a real change)."""

    def __init__(self, version: str) -> None:
        self.version = version

    def __call__(self, method: str, path: str) -> tuple[int, bytes, str, float]:
        kind, _, n = path.strip("/").partition("/")
        body = {"id": int(n), "kind": kind, "ts": time.time_ns(), "star": "black"}
        if self.version == "v2" and kind == "items":
            body["star"] = "red"
        return 200, json.dumps(body).encode(), "application/json", 0.0


def test_a_second_primary_tells_noise_from_regressions(tmp_path: Path) -> None:
    v1, v1b, v2 = (Backend(v, Behaviour(respond=Stamped(v))).start() for v in ("v1", "v1b", "v2"))
    path = tmp_path / "shop.yaml"
    path.write_text(
        f"""
listeners: [{{address: 127.0.0.1:0, host: shop}}]
services:
  shop:
    endpoints:
      - {{address: "{v1.address}", labels: {{version: v1}}}}
      - {{address: "{v1b.address}", labels: {{version: v1b}}}}
      - {{address: "{v2.address}", labels: {{version: v2}}}}
    subsets: {{v1: {{version: v1}}, v1b: {{version: v1b}}, v2: {{version: v2}}}}
virtualServices:
  - name: shop
    hosts: [shop]
    http:
      - name: api
        route: [{{destination: {{host: shop, subset: v1}}}}]
        mirror:
          host: shop
          subset: v2
          compare:
            percentage: {{value: 50}}
            secondPrimary: {{host: shop, subset: v1b}}
"""
    )
    proxy = PymirrorProcess(path)
    n = 200
    try:
        admin = proxy.admin_address
        with Client(proxy.address) as client:
            for i in range(n):
                for kind in ("items", "users"):
                    assert client.request("GET", f"/{kind}/{i}", host="shop").status == 200

        def done() -> bool:
            stats = json.loads(fetch(admin, "/stats")[1])
            mirrors = {m["subset"]: m for m in stats["mirrors"]}
            sampled = mirrors["v2"]["compare"]["sampled"]
            doc = json.loads(fetch(admin, "/compare")[1])
            return sum(e["compared"] + e["noise_compared"] for e in doc["endpoints"]) == 2 * sampled

        poll(done, 20, lambda: "every compared request compared on both sides")
        stats = json.loads(fetch(admin, "/stats")[1])
        mirrors = {m["subset"]: m for m in stats["mirrors"]}
        sampled = mirrors["v2"]["compare"]["sampled"]
        # The second primary gets exactly the compared requests, not a sample of its own.
        assert within_binomial(sampled, 2 * n, 0.5), sampled
        assert mirrors["v1b"]["compare"]["sampled"] == sampled
        assert mirrors["v1b"]["compare"]["queued"] == sampled

        doc = json.loads(fetch(admin, "/compare")[1])
        by = {e["endpoint"]: e for e in doc["endpoints"]}
        items, users = by["GET /items/{id}"], by["GET /users/{id}"]
        for e in (items, users):
            assert e["second_primary"] and e["noise_compared"] == e["compared"]
            fields = {f["field"]: f for f in e["fields"]}
            assert fields["$.ts"]["class"] == "noise"
            assert fields["$.ts"]["count"] == e["compared"]
            assert fields["$.ts"]["noise_count"] == e["noise_compared"]
        assert [f["field"] for f in items["fields"] if f["class"] == "regression"] == ["$.star"]
        assert not [f for f in users["fields"] if f["class"] == "regression"]
        assert items["results"] == {"body_mismatch": items["compared"]}
        # Pairs judged before their noise arrived may count as mismatches; the report's
        # figures above are recomputed from all counts, these are the metric's.
        assert users["results"].get("noise_only", 0) >= users["compared"] * 0.9

        text = subprocess.run(
            [sys.executable, "-m", "pymirror.cli", "report", "--admin", admin],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
        # The HTML report: at the admin `/report`, and from `pymirror report`.
        status, page = fetch(admin, "/report")
        assert status == 200 and page.count('<svg class="chart latency"') == 2
        assert 'data-endpoint="GET /items/{id}" data-rate="1.0000"' in page
        html = subprocess.run(
            [sys.executable, "-m", "pymirror.cli", "report", "--admin", admin, "--format", "html"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
        assert html.startswith("<!DOCTYPE html>") and 'class="chart mismatch-rate"' in html
        assert re.search(r"\$\.star\s+\d+\s+100\.0%", text), text
        assert re.search(r"noise .*\n\s+\$\.ts\s", text), text
    finally:
        proxy.stop()
        for b in (v1, v1b, v2):
            b.stop()
