"""Users must not notice the mirror: throughput and p50/p99 with no mirror, with a
healthy mirror, and with a mirror that answers 500, answers after 200 ms, or is dead.
Side by side in one run, with the direct client -> v1 path as the limit."""

from __future__ import annotations

import http.client
from pathlib import Path

import pytest
from load import LoadResult, wrk
from peers import Process, cpu_seconds, free_port, pymirror_run

pytestmark = pytest.mark.benchmark(group="mirror-latency")

CONFIG = """
services:
  reviews:
    endpoints:
      - {{address: {v1}, labels: {{version: v1}}}}
      - {{address: {v2}, labels: {{version: v2}}}}
    subsets: {{v1: {{version: v1}}, v2: {{version: v2}}}}
virtualServices:
  - name: reviews
    hosts: [reviews]
    http:
      - route: [{{destination: {{host: reviews, subset: v1}}}}]
        mirror: {{host: reviews, subset: v2}}
        mirrorPercentage: {{value: {percentage}}}
"""

#: scenario -> (v2 flavour, or None for a dead port; mirror percentage)
SCENARIOS = {
    "pymirror, no mirror": ("v2", 0),
    "pymirror, 100% to healthy v2": ("v2", 100),
    "pymirror, 100% to v2 answering 500": ("v2-500", 100),
    "pymirror, 100% to v2 taking 200 ms": ("v2-slow", 100),
    "pymirror, 100% to dead v2": (None, 100),
}


def get(address: str) -> tuple[int, bytes]:
    host, port = address.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("GET", "/check", headers={"Host": "reviews"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def record(figures: dict, name: str, result: LoadResult, **extra: float | int) -> dict:
    row = {
        "rps": result.rps,
        "p50_ms": result.p50_ms,
        "p99_ms": result.p99_ms,
        "requests": result.requests,
        "user_errors": result.non_2xx + result.socket_errors,
        **extra,
    }
    figures[name] = row
    return row


def test_direct_to_v1(
    benchmark, backends: dict[str, Process], bench_seconds: float, figures
) -> None:
    assert get(backends["v1"].address) == (200, b"v1\n")
    result = benchmark.pedantic(
        wrk,
        args=(f"http://{backends['v1'].address}/",),
        kwargs={"seconds": bench_seconds},
        rounds=1,
        iterations=1,
    )
    benchmark.extra_info.update(record(figures, "direct to v1 (no proxy)", result))
    assert result.non_2xx == 0


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_pymirror(
    benchmark,
    backends: dict[str, Process],
    bench_seconds: float,
    figures,
    tmp_path: Path,
    scenario: str,
) -> None:
    flavour, percentage = SCENARIOS[scenario]
    v2 = backends[flavour] if flavour else None
    config = tmp_path / "routes.yaml"
    config.write_text(
        CONFIG.format(
            v1=backends["v1"].address,
            v2=v2.address if v2 else f"127.0.0.1:{free_port()}",
            percentage=percentage,
        )
    )
    proxy = pymirror_run(config)
    try:
        # Correctness first: users get v1; a healthy mirror receives the copy.
        seen_before = v2.requests_seen() if v2 else 0
        assert get(proxy.address) == (200, b"v1\n")
        if flavour == "v2" and percentage:
            import time

            deadline = time.monotonic() + 5
            while v2 and v2.requests_seen() == seen_before and time.monotonic() < deadline:
                time.sleep(0.02)
            assert v2 and v2.requests_seen() == seen_before + 1

        seen_before = v2.requests_seen() if v2 else 0
        cpu_before = cpu_seconds(proxy.pid)
        result = benchmark.pedantic(
            wrk,
            args=(f"http://{proxy.address}/",),
            kwargs={"seconds": bench_seconds},
            rounds=1,
            iterations=1,
        )
        cpu = cpu_seconds(proxy.pid) - cpu_before
    finally:
        proxy.stop()
    copies = (v2.requests_seen() - seen_before) if v2 else 0
    row = record(
        figures,
        scenario,
        result,
        cpu_us_per_request=cpu / max(1, result.requests) * 1e6,
        copies_at_v2=copies,
    )
    benchmark.extra_info.update(row)
    # Whatever the mirror does, users only ever see v1's 200s.
    assert result.non_2xx == 0 and result.socket_errors == 0
    if flavour == "v2" and percentage == 100:
        assert copies >= result.requests * 0.99  # copies still in flight at the end are not logged
