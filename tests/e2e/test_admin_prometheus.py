"""pymirror's exposition as Prometheus itself sees it: `promtool check metrics` accepts it,
and a real Prometheus server scrapes the admin endpoint and answers a query for a counter.

Both need Debian's `prometheus` package (`apt-get install prometheus`); without it they
are skipped, saying so.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import seed_config
from support.client import Client
from support.ports import reserved_port
from support.process import PymirrorProcess

pytestmark = pytest.mark.e2e

N = 12
NEEDS = "needs Debian's `prometheus` package (apt-get install prometheus)"


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read().decode()


@pytest.fixture
def proxy_with_traffic(backend, tmp_path: Path) -> Iterator[PymirrorProcess]:
    """`pymirror run` that has served N requests, each mirrored to a healthy v2."""
    v1, v2 = backend("v1"), backend("v2")
    routes = tmp_path / "routes.yaml"
    routes.write_text(seed_config(v1.address, v2.address))
    proc = PymirrorProcess(routes)
    try:
        with Client(proc.address) as client:
            for i in range(N):
                assert client.request("GET", f"/{i}").status == 200
        v2.wait_for(N)
        yield proc
    finally:
        proc.stop()


@pytest.mark.skipif(shutil.which("promtool") is None, reason=f"promtool absent: {NEEDS}")
def test_promtool_accepts_the_exposition(proxy_with_traffic: PymirrorProcess) -> None:
    text = fetch(f"http://{proxy_with_traffic.admin_address}/metrics")
    assert "pymirror_mirror_request_duration_seconds_bucket" in text
    check = subprocess.run(
        ["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
    )
    # promtool prints lint findings for anything it dislikes, and a parse error for what it
    # cannot read. One finding is expected and only one: Istio's own duration family is in
    # milliseconds, and its dashboards query it by that name.
    istio_unit = (
        'istio_request_duration_milliseconds use base unit "seconds" instead of "milliseconds"'
    )
    findings = (check.stdout + check.stderr).splitlines()
    assert findings == [istio_unit], findings
    assert check.returncode == 3, "3: lint findings only (1 would be a parse error)"
    for family in (
        "istio_requests_total",
        "istio_request_bytes_bucket",
        "istio_response_bytes_bucket",
        "istio_request_duration_milliseconds_bucket",
    ):
        assert f"\n{family}{{" in text, family  # fmt: skip


@pytest.fixture
def prometheus(proxy_with_traffic: PymirrorProcess, tmp_path: Path) -> Iterator[str]:
    """A Prometheus server scraping the admin endpoint every second; its `host:port`."""
    config = tmp_path / "prometheus.yml"
    config.write_text(
        f"""
global: {{scrape_interval: 1s, evaluation_interval: 1s}}
scrape_configs:
  - job_name: pymirror
    static_configs: [{{targets: ["{proxy_with_traffic.admin_address}"]}}]
"""
    )
    # Prometheus cannot listen on port 0: it binds a port reserved for it (SO_REUSEADDR).
    address = f"127.0.0.1:{reserved_port()}"
    log = tmp_path / "prometheus.log"
    with log.open("w") as out:
        server = subprocess.Popen(
            [
                "prometheus",
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address={address}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                fetch(f"http://{address}/-/ready")
                break
            except (urllib.error.URLError, OSError):
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"Prometheus did not start:\n{log.read_text()}")
                time.sleep(0.2)
        yield address
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=5)


def query_until(prometheus: str, query: str, expected: list[float]) -> dict:
    """Prometheus' answer to `query` once its values are `expected` (scraped every second:
    a bounded wait until a scrape has seen every request and copy)."""
    url = f"http://{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    deadline = time.monotonic() + 30
    answer: dict = {}
    values: list[float] = []
    while time.monotonic() < deadline and values != expected:
        answer = json.loads(fetch(url))
        values = [float(r["value"][1]) for r in answer["data"]["result"]]
        time.sleep(0.5)
    assert answer.get("status") == "success", answer
    assert values == expected, (query, answer)
    return answer


@pytest.mark.skipif(shutil.which("prometheus") is None, reason=f"prometheus absent: {NEEDS}")
def test_prometheus_scrapes_and_queries_a_counter(prometheus: str) -> None:
    query_until(prometheus, 'sum(pymirror_mirror_requests_total{outcome="answered"})', [N])
    # The scrape itself was healthy: Prometheus' own view of the target.
    targets = json.loads(fetch(f"http://{prometheus}/api/v1/targets"))
    [target] = targets["data"]["activeTargets"]
    assert (target["health"], target["lastError"]) == ("up", "")


@pytest.mark.skipif(shutil.which("prometheus") is None, reason=f"prometheus absent: {NEEDS}")
def test_istio_dashboard_queries_read_the_istio_families(prometheus: str) -> None:
    """The queries of Istio's service dashboard, as it writes them, over pymirror's series:
    requests by destination, the copies apart, and a latency quantile from the buckets."""
    by_version = (
        'sum(istio_requests_total{reporter="source",destination_service_name="reviews",'
        'response_code="200"}) by (destination_version, pymirror_traffic)'
    )
    answer = query_until(prometheus, by_version, [N, N])
    found = {
        (r["metric"]["destination_version"], r["metric"]["pymirror_traffic"])
        for r in answer["data"]["result"]
    }
    assert found == {("v1", "primary"), ("v2", "mirror")}
    p50 = (
        "histogram_quantile(0.5, sum(istio_request_duration_milliseconds_bucket"
        '{reporter="source",pymirror_traffic="primary"}) by (le))'
    )
    url = f"http://{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": p50})
    [result] = json.loads(fetch(url))["data"]["result"]
    # Loopback requests to a local backend: well under a second, and a number (not NaN).
    assert 0 < float(result["value"][1]) < 1000
