"""Istio's standard request metrics from a running `pymirror run`: the label set Istio's
dashboards query, the response flags of the proxy's own answers, copies told apart from
the users' requests, body sizes, and gRPC statuses. Each count is what the test sent."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from conftest import seed_config
from prometheus_client.parser import text_string_to_metric_families
from support.backend import Backend
from support.client import Client
from support.grpc_peer import GrpcPeer, method
from support.hostile import short_body_reset
from support.ports import closed_port
from support.process import PymirrorProcess

from pymirror import Proxy, metrics

pytestmark = pytest.mark.e2e

SERVICE = "reviews.shop.svc.cluster.local"
Series = dict[str, str]


def samples(text: str, name: str) -> list[tuple[Series, float]]:
    return [
        (s.labels, s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    ]


def count(text: str, name: str = "istio_requests_total", **labels: str) -> float:
    """The sum of `name` over the series whose labels include `labels`."""
    return sum(v for ls, v in samples(text, name) if labels.items() <= ls.items())


def wait_for(read: Callable[[], str], check: Callable[[str], bool], timeout: float = 10) -> str:
    """The exposition, read until `check` holds (bounded: copies and a client's
    disconnect are counted when they end)."""
    deadline = time.monotonic() + timeout
    while True:
        text = read()
        if check(text) or time.monotonic() > deadline:
            return text
        time.sleep(0.05)


def config(v1: Backend, v2: Backend, slow: Backend, big: Backend) -> str:
    return f"""
listeners: [{{address: 127.0.0.1:0}}]
services:
  {SERVICE}:
    endpoints:
      - {{address: {v1.address}, labels: {{version: v1}}}}
      - {{address: {v2.address}, labels: {{version: v2}}}}
    subsets: {{v1: {{version: v1}}, v2: {{version: v2}}}}
  dead: {{endpoints: [{{address: "{closed_port()}"}}]}}
  slow:
    endpoints: [{{address: {slow.address}}}]
    trafficPolicy: {{connectionPool: {{http: {{http2MaxRequests: 1}}}}}}
  big: {{endpoints: [{{address: {big.address}}}]}}
virtualServices:
  - name: reviews
    hosts: [reviews]
    http:
      - match: [{{uri: {{prefix: /dead}}}}]
        route: [{{destination: {{host: dead}}}}]
      - match: [{{uri: {{prefix: /slow}}}}]
        route: [{{destination: {{host: slow}}}}]
      - match: [{{uri: {{prefix: /big}}}}]
        route: [{{destination: {{host: big}}}}]
      - route: [{{destination: {{host: {SERVICE}, subset: v1}}}}]
        mirror: {{host: {SERVICE}, subset: v2}}
        mirrorPercentage: {{value: 100}}
"""


def test_requests_carry_istios_labels_flags_and_sizes(
    backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ISTIO_META_WORKLOAD_NAME", "frontend")
    monkeypatch.setenv("POD_NAMESPACE", "shop")
    v1, v2, slow = backend("v1"), backend("v2"), backend("slow", delay=1.0)
    big = backend("big", body=b"x" * (16 << 20))
    routes = tmp_path / "routes.yaml"
    routes.write_text(config(v1, v2, slow, big))
    proc = PymirrorProcess(routes)
    try:

        def read() -> str:
            url = f"http://{proc.admin_address}/metrics"
            with urllib.request.urlopen(url, timeout=5) as response:
                return str(response.read().decode())

        with Client(proc.address) as client:
            for i in range(10):
                assert client.request("GET", f"/ok/{i}").status == 200
            assert client.request("POST", "/ok/post", body=b"p" * 300).status == 200
            assert [client.request("GET", "/dead").status for _ in range(3)] == [502] * 3
            assert client.request("GET", "/", host="nowhere.example").status == 404

            # Overflow: a second request while the first holds slow's only slot.
            def hold() -> None:
                with Client(proc.address) as other:
                    other.request("GET", "/slow")

            first = threading.Thread(target=hold)
            first.start()
            assert slow.wait_for_arrivals(1) == 1
            assert client.request("GET", "/slow").status == 503
            first.join(timeout=10)
        # The client reads the head of a 16 MiB answer, then goes away.
        host, port = proc.address.rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=5) as raw:
            raw.sendall(b"GET /big HTTP/1.1\r\nHost: reviews\r\n\r\n")
            assert raw.recv(64).startswith(b"HTTP/1.1 200")
        v2.wait_for(11)
        text = wait_for(
            read,
            lambda t: (
                count(t, pymirror_traffic="mirror") == 11 and count(t, response_flags="DC") == 1
            ),
        )
    finally:
        proc.stop()

    istio = dict(reporter="source", source_workload="frontend", source_workload_namespace="shop")
    ok = dict(
        istio,
        destination_service=SERVICE,
        destination_service_name="reviews",
        destination_service_namespace="shop",
        destination_workload_namespace="shop",
        request_protocol="http",
        response_code="200",
        response_flags="-",
        grpc_response_status="unknown",
        connection_security_policy="unknown",
    )
    assert count(text, destination_version="v1", pymirror_traffic="primary", **ok) == 11
    assert count(text, destination_version="v2", pymirror_traffic="mirror", **ok) == 11
    # The proxy's own answers, by Envoy's flag: no connection (UF), overflow (UO), no
    # route (NR, no destination), the client gone before the end of the answer (DC).
    assert count(text, destination_service="dead", response_code="502", response_flags="UF") == 3
    assert count(text, destination_service="slow", response_code="503", response_flags="UO") == 1
    assert count(text, destination_service="slow", response_code="200", response_flags="-") == 1
    assert count(text, destination_service="unknown", response_code="404", response_flags="NR") == 1
    assert count(text, destination_service="big", response_code="200", response_flags="DC") == 1
    assert count(text, destination_service="big", response_flags="-") == 0
    assert count(text) == 11 + 11 + 3 + 2 + 1 + 1

    # Sizes and durations: one histogram sample per request, in its bucket.
    primary = dict(ok, destination_version="v1", pymirror_traffic="primary")
    request_bytes = "istio_request_bytes_bucket"
    assert count(text, request_bytes, le="1.0", **primary) == 10, "ten GETs have no body"
    assert count(text, request_bytes, le="100.0", **primary) == 10
    assert count(text, request_bytes, le="1000.0", **primary) == 11, "300 bytes: (100, 1000]"
    assert count(text, "istio_request_bytes_sum", **primary) == 300
    assert count(text, "istio_response_bytes_sum", **primary) == 11 * len(b"v1")
    assert count(text, "istio_request_duration_milliseconds_count", **primary) == 11
    assert count(text, "istio_request_duration_milliseconds_bucket", le="+Inf", **primary) == 11
    slow_ok = dict(destination_service="slow", response_code="200")
    slow_ms = count(text, "istio_request_duration_milliseconds_sum", **slow_ok)
    assert 1000 <= slow_ms < 10_000, "the slow backend's second, in milliseconds"
    assert count(text, "istio_request_duration_milliseconds_bucket", le="500.0", **slow_ok) == 0


def test_grpc_calls_count_by_grpc_status_on_both_hops() -> None:
    v1, v2 = GrpcPeer("v1"), GrpcPeer("v2")
    text = f"""
listeners: [{{address: 127.0.0.1:0}}]
services:
  reviews:
    ports: [{{number: 9090, name: grpc-api, protocol: GRPC}}]
    endpoints:
      - {{address: 127.0.0.1, ports: {{grpc-api: {v1.port}}}, labels: {{version: v1}}}}
      - {{address: 127.0.0.1, ports: {{grpc-api: {v2.port}}}, labels: {{version: v2}}}}
    subsets: {{v1: {{version: v1}}, v2: {{version: v2}}}}
virtualServices:
  - name: reviews
    hosts: [reviews]
    http:
      - route: [{{destination: {{host: reviews, subset: v1}}}}]
        mirror: {{host: reviews, subset: v2}}
        mirrorPercentage: {{value: 100}}
"""
    options = [("grpc.default_authority", "reviews"), ("grpc.enable_http_proxy", 0)]
    try:
        with Proxy(text) as proxy:
            with grpc.insecure_channel(proxy.addresses[0], options=options) as ch:
                for _ in range(4):
                    assert ch.unary_unary(method("Unary"))(b"x", timeout=10) == b"v1:x"
                for _ in range(2):
                    with pytest.raises(grpc.RpcError):
                        ch.unary_unary(method("Fail"))(b"x", timeout=10)
            v2.wait_for(6)
            read = lambda: metrics.render(metrics.Scrape(proxy.stats()))  # noqa: E731
            exposition = wait_for(read, lambda t: count(t, pymirror_traffic="mirror") == 6)
    finally:
        v1.stop()
        v2.stop()
    grpc_calls = dict(request_protocol="grpc", response_code="200", response_flags="-")
    for traffic in ("primary", "mirror"):
        at = dict(grpc_calls, pymirror_traffic=traffic)
        assert count(exposition, grpc_response_status="0", **at) == 4, traffic
        assert count(exposition, grpc_response_status="5", **at) == 2, traffic  # NOT_FOUND
    assert count(exposition, request_protocol="http") == 0


def test_an_upstream_body_cut_short_is_flagged_ur_on_both_hops(tmp_path: Path) -> None:
    """Primary and mirror both answer `Content-Length: 100000`, send 1,000 bytes and reset
    (exact bytes: `support.hostile.short_body_reset`). The user's answer ends short, and
    both hops count `UR`, in the metrics and in the access log."""
    log = tmp_path / "access.log"
    with short_body_reset() as v1, short_body_reset() as v2:
        routes = tmp_path / "routes.yaml"
        routes.write_text(seed_config(v1.address, v2.address))
        proc = PymirrorProcess(routes, "--access-log", str(log))
        try:
            host, port = proc.address.rsplit(":", 1)
            with socket.create_connection((host, int(port)), timeout=10) as raw:
                raw.sendall(b"GET /cut HTTP/1.1\r\nHost: reviews\r\n\r\n")
                got = b""
                while chunk := raw.recv(65536):
                    got += chunk
            head, _, body = got.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200") and len(body) < 100_000
            v2.wait_requests(1)

            def read() -> str:
                url = f"http://{proc.admin_address}/metrics"
                with urllib.request.urlopen(url, timeout=5) as response:
                    return str(response.read().decode())

            text = wait_for(read, lambda t: count(t, response_flags="UR") == 2)
        finally:
            proc.stop()
    assert count(text, pymirror_traffic="primary", response_code="200", response_flags="UR") == 1
    assert count(text, pymirror_traffic="mirror", response_flags="UR") == 1
    assert count(text) == 2
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert sorted((line["hop"], line.get("response_flags")) for line in lines) == [
        ("mirror", "UR"),
        ("primary", "UR"),
    ]
