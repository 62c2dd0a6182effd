"""Stats -> Prometheus exposition: exact names, labels, values and cumulative buckets."""

from __future__ import annotations

import copy
import platform
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

import pymirror
from pymirror.metrics import Scrape, registry, render


def histogram(buckets: list[int], seconds: float) -> dict[str, Any]:
    return {"count": sum(buckets), "sum_seconds": seconds, "buckets": buckets}


def route_labels(vs: str, route: str, host: str, subset: str | None) -> dict[str, Any]:
    return {"virtual_service": vs, "route": route, "host": host, "subset": subset}


def outcome(
    code: str, flag: str, ms: list[int], ms_sum: float, request: list[int], response: list[int]
) -> dict[str, Any]:
    """One `requests` row; its byte sums are 1 per request-body byte bucket index (fixed
    values keep the expected exposition readable)."""
    return {
        "response_code": code,
        "response_flags": flag,
        "protocol": "http",
        "count": sum(ms),
        "duration_ms": ms,
        "duration_sum_ms": ms_sum,
        "request_bytes": request,
        "request_bytes_sum": 7 * sum(request),
        "response_bytes": response,
        "response_bytes_sum": 70 * sum(response),
    }


# Three bounds keep the exposition short; the core has more, the logic is the same.
STATS: Any = {
    "version": "abc123def456",
    "bucket_bounds_seconds": [0.005, 0.1, 1.0],
    "request_duration_bounds_ms": [1.0, 100.0],
    "request_bytes_bounds": [10, 1000],
    "listeners": [
        {
            "address": "127.0.0.1:8080",
            "connections_total": 4,
            "connections_active": 1,
            "connections_refused": 0,
            "unrouted": 2,
            "requests": [outcome("404", "NR", [2, 0, 0], 0.5, [2, 0, 0], [0, 2, 0])],
        }
    ],
    "destinations": [
        {
            **route_labels("reviews", "0", "reviews", "v1"),
            "responses": {"200": 7, "503": 1},
            "duration": histogram([3, 4, 0, 1], 2.5),
            "requests": [
                outcome("200", "-", [3, 4, 0], 120.0, [6, 1, 0], [0, 7, 0]),
                outcome("503", "UO", [1, 0, 0], 0.25, [1, 0, 0], [0, 1, 0]),
            ],
        },
        # The same label set again (two routes given one name): summed, never repeated.
        {
            **route_labels("reviews", "0", "reviews", "v1"),
            "responses": {"200": 2},
            "duration": histogram([0, 1, 1, 0], 0.5),
            "requests": [outcome("200", "-", [0, 1, 1], 500.0, [2, 0, 0], [0, 0, 2])],
        },
        {
            **route_labels("ratings", "api", "ratings.example", None),
            "responses": {},
            "duration": histogram([0, 0, 0, 0], 0.0),
        },
    ],
    "mirrors": [
        {
            **route_labels("reviews", "0", "reviews", "v2"),
            "answered": 6,
            "cut": 2,
            "failed": 1,
            "failures": {"connect": 0, "reset": 0, "protocol": 0, "body_incomplete": 1},
            "answer_bytes": 4096,
            "timed_out": 1,
            "in_flight": 2,
            "dropped": {
                "in_flight_limit": 3,
                "body_buffer": 1,
                "no_endpoint": 0,
                "request_aborted": 0,
            },
            "responses": {"200": 5, "500": 1},
            "duration": histogram([1, 5, 0, 0], 0.25),
            "requests": [
                outcome("200", "-", [1, 4, 0], 30.0, [5, 0, 0], [0, 5, 0]),
                outcome("0", "UF", [1, 0, 0], 0.5, [1, 0, 0], [1, 0, 0]),
            ],
        }
    ],
    "upstream_connections": [
        {"role": "primary", "endpoint": "10.0.0.1:9080", "open": 2, "opened_total": 5},
        {"role": "mirror", "endpoint": "10.0.0.2:9080", "open": 1, "opened_total": 1},
        # v2's endpoint as a primary (another route): not part of the mirror's count.
        {"role": "primary", "endpoint": "10.0.0.2:9080", "open": 7, "opened_total": 7},
    ],
    "access_log": {"written": 20, "dropped": 3},
    "outliers": [
        {"host": "reviews", "subset": "v1", "ejected": 1, "ejections_total": 3},
        {"host": "ratings.example", "subset": None, "ejected": 0, "ejections_total": 0},
        # The same label set again: summed, never repeated.
        {"host": "reviews", "subset": "v1", "ejected": 0, "ejections_total": 1},
    ],
}

SNAPSHOT: Any = {
    "schema": 1,
    "version": "abc123def456",
    "listeners": [],
    "virtual_hosts": [
        {
            "name": "reviews",
            "domains": ["reviews"],
            "routes": [
                {
                    "name": "0",
                    "destinations": [{"cluster": 0, "weight": 100}],
                    "mirrors": [{"cluster": 1, "per_million": 1_000_000}],
                }
            ],
        },
        {
            "name": "ratings",
            "domains": ["ratings"],
            "routes": [{"name": "api", "destinations": [{"cluster": 2, "weight": 100}]}],
        },
    ],
    "clusters": [
        {"host": "reviews", "subset": "v1", "endpoints": ["10.0.0.1:9080"]},
        {"host": "reviews", "subset": "v2", "endpoints": ["10.0.0.2:9080"]},
        {"host": "ratings.example", "subset": None, "endpoints": ["ratings.example:80"]},
    ],
}

V1 = {"virtual_service": "reviews", "route": "0", "host": "reviews", "subset": "v1"}
V2 = {**V1, "subset": "v2"}
RATINGS = {"virtual_service": "ratings", "route": "api", "host": "ratings.example", "subset": ""}


#: pymirror_build_info's labels here.
BUILD = {
    "version": pymirror.__version__,
    "snapshot_schema": "1",
    "python": platform.python_version(),
}


def line(name: str, labels: dict[str, str], value: float, **extra: str) -> str:
    """One sample line as the text format writes it (label names sorted)."""
    pairs = sorted({**labels, **extra}.items())
    inner = ",".join(f'{k}="{v}"' for k, v in pairs)
    return f"{name}{{{inner}}} {float(value)!r}"


def samples(text: str) -> list[str]:
    return [row for row in text.splitlines() if row and not row.startswith("#")]


def buckets(name: str, labels: dict[str, str], cumulative: list[int], total: float) -> list[str]:
    les = ["0.005", "0.1", "1.0", "+Inf"]
    return [
        *(line(f"{name}_bucket", labels, n, le=le) for le, n in zip(les, cumulative, strict=True)),
        line(f"{name}_count", labels, cumulative[-1]),
        line(f"{name}_sum", labels, total),
    ]


def test_exposition_is_exact() -> None:
    reloads = {"success": 2, "failure": 1, "last_ok": 0, "last_at": 1_700_000_000}
    text = render(Scrape(STATS, SNAPSHOT, reloads, "0123456789ab"))
    conn = {"host": "reviews", "subset": "v1", "role": "primary"}
    conn_v2 = {"host": "reviews", "subset": "v2", "role": "mirror"}
    conn_ratings = {"host": "ratings.example", "subset": "", "role": "primary"}
    listener = {"listener": "127.0.0.1:8080"}
    assert [row for row in samples(text) if not row.startswith("istio_")] == [
        line("pymirror_config_reloads_total", {"result": "success"}, 2),
        line("pymirror_config_reloads_total", {"result": "failure"}, 1),
        line("pymirror_build_info", BUILD, 1),
        "pymirror_config_last_reload_successful 0.0",
        "pymirror_config_last_reload_success_timestamp_seconds 1.7e+09",
        line("pymirror_config_info", {"version": "abc123def456", "checksum": "0123456789ab"}, 1),
        # The two v1 rows are one series: 7 + 2 answers of 200.
        line("pymirror_requests_total", V1, 9, code="200"),
        line("pymirror_requests_total", V1, 1, code="503"),
        # Per bucket [3,4,0,1] + [0,1,1,0] = [3,5,1,1]: cumulative 3, 8, 9, 10; count 10.
        *buckets("pymirror_request_duration_seconds", V1, [3, 8, 9, 10], 3.0),
        # No subset: subset="". No traffic yet: the series exists, at zero.
        *buckets("pymirror_request_duration_seconds", RATINGS, [0, 0, 0, 0], 0.0),
        line("pymirror_mirror_requests_total", V2, 6, outcome="answered"),
        line("pymirror_mirror_requests_total", V2, 2, outcome="cut"),
        line("pymirror_mirror_requests_total", V2, 1, outcome="failed"),
        line("pymirror_mirror_requests_total", V2, 1, outcome="timed_out"),
        # Dropped: the sum of the reasons, 3 + 1.
        line("pymirror_mirror_requests_total", V2, 4, outcome="dropped"),
        line("pymirror_mirror_dropped_total", V2, 1, reason="body_buffer"),
        line("pymirror_mirror_dropped_total", V2, 3, reason="in_flight_limit"),
        line("pymirror_mirror_dropped_total", V2, 0, reason="no_endpoint"),
        line("pymirror_mirror_dropped_total", V2, 0, reason="request_aborted"),
        line("pymirror_mirror_failures_total", V2, 1, reason="body_incomplete"),
        line("pymirror_mirror_failures_total", V2, 0, reason="connect"),
        line("pymirror_mirror_failures_total", V2, 0, reason="protocol"),
        line("pymirror_mirror_failures_total", V2, 0, reason="reset"),
        line("pymirror_mirror_answer_bytes_total", V2, 4096),
        line("pymirror_mirror_in_flight", V2, 2),
        line("pymirror_mirror_responses_total", V2, 5, code="200"),
        line("pymirror_mirror_responses_total", V2, 1, code="500"),
        *buckets("pymirror_mirror_request_duration_seconds", V2, [1, 6, 6, 6], 0.25),
        # Per cluster of the running snapshot and role: the 7 connections to v2's endpoint
        # as a primary are not the mirror's.
        line("pymirror_upstream_connections", conn_ratings, 0),
        line("pymirror_upstream_connections", conn, 2),
        line("pymirror_upstream_connections", conn_v2, 1),
        line("pymirror_upstream_connections_opened_total", conn_ratings, 0),
        line("pymirror_upstream_connections_opened_total", conn, 5),
        line("pymirror_upstream_connections_opened_total", conn_v2, 1),
        line("pymirror_listener_connections_total", listener, 4),
        line("pymirror_listener_connections_active", listener, 1),
        line("pymirror_listener_connections_refused_total", listener, 0),
        line("pymirror_listener_unrouted_requests_total", listener, 2),
        line("pymirror_outlier_ejections_total", {"host": "reviews", "subset": "v1"}, 4),
        line("pymirror_outlier_ejections_total", {"host": "ratings.example", "subset": ""}, 0),
        line("pymirror_outlier_ejected_endpoints", {"host": "reviews", "subset": "v1"}, 1),
        line("pymirror_outlier_ejected_endpoints", {"host": "ratings.example", "subset": ""}, 0),
        "pymirror_compare_buffer_bytes 0.0",
        line("pymirror_access_log_lines_total", {"result": "written"}, 20),
        line("pymirror_access_log_lines_total", {"result": "dropped"}, 3),
    ]


def istio(**labels: str) -> dict[str, str]:
    """Istio's label set for this test's stats (no pod environment: source unknown)."""
    return {
        "reporter": "source",
        "source_workload": "unknown",
        "source_workload_namespace": "unknown",
        "destination_service": labels["service"],
        "destination_service_name": labels["service"].split(".")[0],
        "destination_service_namespace": "unknown",
        "destination_workload": "unknown",
        "destination_workload_namespace": "unknown",
        "destination_version": labels.get("version", "unknown"),
        "request_protocol": "http",
        "response_code": labels["code"],
        "grpc_response_status": "unknown",
        "response_flags": labels["flag"],
        "connection_security_policy": "unknown",
        "pymirror_traffic": labels["traffic"],
    }


def istio_histogram(
    name: str, labels: dict[str, str], cumulative: list[int], total: float
) -> list[str]:
    les = {"istio_request_duration_milliseconds": ["1.0", "100.0", "+Inf"]}.get(
        name, ["10.0", "1000.0", "+Inf"]
    )
    return [
        *(line(f"{name}_bucket", labels, n, le=le) for le, n in zip(les, cumulative, strict=True)),
        line(f"{name}_count", labels, cumulative[-1]),
        line(f"{name}_sum", labels, total),
    ]


def test_istio_exposition_is_exact() -> None:
    """Summed by Istio's label set (two routes to reviews v1 are one series), sorted by it;
    the subset's `version` label names the destination version; copies and the requests
    that reached no destination are series of their own."""
    scrape = Scrape(STATS, SNAPSHOT, versions={("reviews", "v1"): "v1", ("reviews", "v2"): "v2"})
    text = render(scrape)
    ok_v1 = istio(service="reviews", version="v1", code="200", flag="-", traffic="primary")
    uo_v1 = istio(service="reviews", version="v1", code="503", flag="UO", traffic="primary")
    ok_v2 = istio(service="reviews", version="v2", code="200", flag="-", traffic="mirror")
    uf_v2 = istio(service="reviews", version="v2", code="0", flag="UF", traffic="mirror")
    nr = istio(service="unknown", code="404", flag="NR", traffic="primary")
    order = [ok_v1, uo_v1, ok_v2, uf_v2, nr]
    order.sort(key=lambda labels: tuple(labels.values()))
    counts = {id(ok_v1): 9, id(uo_v1): 1, id(ok_v2): 5, id(uf_v2): 1, id(nr): 2}
    durations = {
        id(ok_v1): ([3, 8, 9], 620.0),
        id(uo_v1): ([1, 1, 1], 0.25),
        id(ok_v2): ([1, 5, 5], 30.0),
        id(uf_v2): ([1, 1, 1], 0.5),
        id(nr): ([2, 2, 2], 0.5),
    }
    requests = {
        id(ok_v1): ([8, 9, 9], 63.0),
        id(uo_v1): ([1, 1, 1], 7.0),
        id(ok_v2): ([5, 5, 5], 35.0),
        id(uf_v2): ([1, 1, 1], 7.0),
        id(nr): ([2, 2, 2], 14.0),
    }
    responses = {
        id(ok_v1): ([0, 7, 9], 630.0),
        id(uo_v1): ([0, 1, 1], 70.0),
        id(ok_v2): ([0, 5, 5], 350.0),
        id(uf_v2): ([1, 1, 1], 70.0),
        id(nr): ([0, 2, 2], 140.0),
    }
    expected = [line("istio_requests_total", labels, counts[id(labels)]) for labels in order]
    for name, table in (
        ("istio_request_duration_milliseconds", durations),
        ("istio_request_bytes", requests),
        ("istio_response_bytes", responses),
    ):
        for labels in order:
            expected += istio_histogram(name, labels, *table[id(labels)])
    assert [row for row in samples(text) if row.startswith("istio_")] == expected


def test_family_types_and_histogram_consistency() -> None:
    text = render(Scrape(STATS, SNAPSHOT))
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert {name: f.type for name, f in families.items()} == {
        "pymirror_config_reloads": "counter",
        "pymirror_config_info": "gauge",
        "pymirror_build_info": "gauge",
        "pymirror_config_last_reload_successful": "gauge",
        "pymirror_config_last_reload_success_timestamp_seconds": "gauge",
        "pymirror_requests": "counter",
        "pymirror_grpc_requests": "counter",
        "pymirror_request_duration_seconds": "histogram",
        "pymirror_mirror_requests": "counter",
        "pymirror_mirror_dropped": "counter",
        "pymirror_mirror_failures": "counter",
        "pymirror_mirror_answer_bytes": "counter",
        "pymirror_mirror_in_flight": "gauge",
        "pymirror_mirror_responses": "counter",
        "pymirror_mirror_grpc_responses": "counter",
        "pymirror_mirror_request_duration_seconds": "histogram",
        "pymirror_upstream_connections": "gauge",
        "pymirror_upstream_connections_opened": "counter",
        "pymirror_upstream_tls_handshakes": "counter",
        "pymirror_listener_connections": "counter",
        "pymirror_listener_connections_active": "gauge",
        "pymirror_listener_connections_refused": "counter",
        "pymirror_listener_unrouted_requests": "counter",
        "pymirror_outlier_ejections": "counter",
        "pymirror_outlier_ejected_endpoints": "gauge",
        "pymirror_tcp_connections": "counter",
        "pymirror_tcp_connections_active": "gauge",
        "pymirror_tcp_connect_failures": "counter",
        "pymirror_tcp_idle_timeouts": "counter",
        "pymirror_tcp_bytes": "counter",
        "pymirror_tcp_mirror_connections": "counter",
        "pymirror_tcp_mirror_cut": "counter",
        "pymirror_tcp_mirror_connections_active": "gauge",
        "pymirror_tcp_mirror_bytes": "counter",
        "pymirror_upgrade_connections": "counter",
        "pymirror_upgrade_connections_active": "gauge",
        "pymirror_upgrade_connect_failures": "counter",
        "pymirror_upgrade_idle_timeouts": "counter",
        "pymirror_upgrade_bytes": "counter",
        "pymirror_upgrade_mirror_connections": "counter",
        "pymirror_upgrade_mirror_cut": "counter",
        "pymirror_upgrade_mirror_connections_active": "gauge",
        "pymirror_upgrade_mirror_bytes": "counter",
        "pymirror_access_log_lines": "counter",
        "pymirror_compare": "counter",
        "pymirror_compare_buffer_bytes": "gauge",
        "istio_requests": "counter",
        "istio_request_duration_milliseconds": "histogram",
        "istio_request_bytes": "histogram",
        "istio_response_bytes": "histogram",
    }
    for name in (
        "pymirror_request_duration_seconds",
        "pymirror_mirror_request_duration_seconds",
        "istio_request_duration_milliseconds",
        "istio_request_bytes",
    ):
        by_series: dict[tuple[tuple[str, str], ...], list[float]] = {}
        for s in families[name].samples:
            if s.name.endswith("_bucket"):
                key = tuple(sorted((k, v) for k, v in s.labels.items() if k != "le"))
                by_series.setdefault(key, []).append(s.value)
        for values in by_series.values():
            assert values == sorted(values)  # cumulative: never decreasing


def test_without_a_running_proxy_only_control_plane_series() -> None:
    text = render(Scrape(None, reloads={"success": 0, "failure": 3}))
    assert samples(text) == [
        line("pymirror_config_reloads_total", {"result": "success"}, 0),
        line("pymirror_config_reloads_total", {"result": "failure"}, 3),
        line("pymirror_build_info", BUILD, 1),
        # Not given: no reload was tried (1), and no load time is known (0).
        "pymirror_config_last_reload_successful 1.0",
        "pymirror_config_last_reload_success_timestamp_seconds 0.0",
    ]


def test_bucket_count_mismatch_is_an_error_not_a_wrong_histogram() -> None:
    stats = copy.deepcopy(STATS)
    stats["destinations"][0]["duration"]["buckets"] = [1, 2, 3]  # +Inf bucket missing
    with pytest.raises(ValueError, match="expected one more, for \\+Inf"):
        render(Scrape(stats, SNAPSHOT))


def test_registry_adds_process_metrics_and_reads_once_per_scrape() -> None:
    from prometheus_client import generate_latest

    reads: list[int] = []

    def read() -> Scrape:
        reads.append(1)
        return Scrape(STATS, SNAPSHOT)

    reg = registry(read)
    assert reads == []  # registering reads nothing: the core may not run yet
    text = generate_latest(reg).decode()
    assert len(reads) == 1
    assert "process_cpu_seconds_total" in text and "pymirror_requests_total" in text
