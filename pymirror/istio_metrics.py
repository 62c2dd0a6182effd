"""Istio's standard request metrics, from the core's requests by outcome.

`istio_requests_total`, `istio_request_duration_milliseconds`, `istio_request_bytes` and
`istio_response_bytes`, with Istio's label set, so that its dashboards and alerts work on
pymirror as they do on a sidecar. pymirror reports as the caller (`reporter="source"`): it
sends the requests to the destinations it names. One extra label, `pymirror_traffic`,
tells the primary's requests (`primary`) from the copies (`mirror`), so that a dashboard
summing over it counts each request the users made once only if it filters on `primary`.

Plain functions of plain data: no request ever passes here; a scrape reads the core once.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import accumulate

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

from pymirror.engine import OutcomeStats, Stats

__all__ = ["LABELS", "Source", "families"]

#: Istio's standard labels, in its order, then pymirror's own.
LABELS = (
    "reporter",
    "source_workload",
    "source_workload_namespace",
    "destination_service",
    "destination_service_name",
    "destination_service_namespace",
    "destination_workload",
    "destination_workload_namespace",
    "destination_version",
    "request_protocol",
    "response_code",
    "grpc_response_status",
    "response_flags",
    "connection_security_policy",
    "pymirror_traffic",
)
UNKNOWN = "unknown"

_Key = tuple[str, ...]
_go_float: Callable[[float], str] = floatToGoString


@dataclass(frozen=True)
class Source:
    """Who pymirror is, as Istio's sidecar reads it from its pod's environment."""

    workload: str = UNKNOWN
    namespace: str = UNKNOWN

    @classmethod
    def from_environment(cls, env: Mapping[str, str] = os.environ) -> Source:
        """`ISTIO_META_WORKLOAD_NAME` and `POD_NAMESPACE`, the variables Istio's injector
        sets (the manifests in deploy/kubernetes set them too)."""
        return cls(
            env.get("ISTIO_META_WORKLOAD_NAME") or UNKNOWN,
            env.get("POD_NAMESPACE") or UNKNOWN,
        )


def _service(host: str) -> tuple[str, str]:
    """A host's service name and namespace: Kubernetes names (`name.namespace`,
    `name.namespace.svc...`) say both; another name gives its first label only, and an
    IP address itself."""
    try:
        ipaddress.ip_address(host.strip("[]"))
        return host, UNKNOWN  # an address has no labels to split
    except ValueError:
        pass
    parts = host.split(".")
    if len(parts) == 2 or (len(parts) > 2 and parts[2] == "svc"):
        return parts[0], parts[1]
    return parts[0], UNKNOWN


@dataclass
class _Sums:
    count: int = 0
    duration: list[int] = field(default_factory=list)
    duration_sum: float = 0.0
    request: list[int] = field(default_factory=list)
    request_sum: int = 0
    response: list[int] = field(default_factory=list)
    response_sum: int = 0

    def add(self, row: OutcomeStats) -> None:
        def plus(a: list[int], b: Sequence[int]) -> list[int]:
            return [x + y for x, y in zip(a, b, strict=True)] if a else list(b)

        self.count += row["count"]
        self.duration = plus(self.duration, row["duration_ms"])
        self.duration_sum += row["duration_sum_ms"]
        self.request = plus(self.request, row["request_bytes"])
        self.request_sum += row["request_bytes_sum"]
        self.response = plus(self.response, row["response_bytes"])
        self.response_sum += row["response_bytes_sum"]


def _rows(
    stats: Stats, source: Source, version_of: Mapping[tuple[str, str], str]
) -> Iterable[tuple[_Key, OutcomeStats]]:
    def key(host: str | None, subset: str | None, traffic: str, row: OutcomeStats) -> _Key:
        name, namespace = _service(host) if host else (UNKNOWN, UNKNOWN)
        version = version_of.get((host or "", subset or ""), UNKNOWN)
        return (
            "source",
            source.workload,
            source.namespace,
            host or UNKNOWN,
            name,
            namespace,
            UNKNOWN,  # the workload behind an endpoint is not known to pymirror
            namespace,
            version,
            row["protocol"],
            row["response_code"],
            row.get("grpc_status", UNKNOWN),
            row["response_flags"],
            UNKNOWN,  # a source reporter cannot know the destination's policy (as Istio)
            traffic,
        )

    for d in stats["destinations"]:
        for row in d.get("requests", []):
            yield key(d["host"], d["subset"], "primary", row), row
    for m in stats["mirrors"]:
        for row in m.get("requests", []):
            yield key(m["host"], m["subset"], "mirror", row), row
    for listener in stats["listeners"]:
        for row in listener.get("requests", []):
            yield key(None, None, "primary", row), row


def _buckets(bounds: Sequence[float], counts: Sequence[int]) -> list[tuple[str, float]]:
    les = [_go_float(float(b)) for b in bounds] + ["+Inf"]
    return list(zip(les, map(float, accumulate(counts)), strict=True))


def families(
    stats: Stats,
    source: Source | None = None,
    version_of: Mapping[tuple[str, str], str] | None = None,
) -> list[Metric]:
    """The four families for one stats read."""
    sums: dict[_Key, _Sums] = {}
    for key, row in _rows(stats, source or Source(), version_of or {}):
        sums.setdefault(key, _Sums()).add(row)
    labels = list(LABELS)
    total = CounterMetricFamily(
        "istio_requests_total",
        "Requests by destination and outcome, as Istio counts them (at the end of the "
        "answer); pymirror_traffic tells copies from the users' requests.",
        labels=labels,
    )
    duration = HistogramMetricFamily(
        "istio_request_duration_milliseconds",
        "From the request's head to the end of its answer.",
        labels=labels,
    )
    request = HistogramMetricFamily(
        "istio_request_bytes", "Request body sizes in bytes.", labels=labels
    )
    response = HistogramMetricFamily(
        "istio_response_bytes", "Response body sizes in bytes.", labels=labels
    )
    ms, sizes = stats["request_duration_bounds_ms"], stats["request_bytes_bounds"]
    for key, s in sorted(sums.items()):
        values = list(key)
        total.add_metric(values, s.count)
        duration.add_metric(values, _buckets(ms, s.duration), s.duration_sum)
        request.add_metric(values, _buckets(sizes, s.request), s.request_sum)
        response.add_metric(values, _buckets(sizes, s.response), s.response_sum)
    return [total, duration, request, response]
