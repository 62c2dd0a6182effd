"""The core's stats -> Prometheus metric families.

Plain functions of plain data: a `Scrape` (one bulk stats read plus what the control
plane knows) goes in, metric families or exposition text come out. Nothing here runs
per request; a scrape costs one `Engine.stats()` call however many series there are.
"""

from __future__ import annotations

import platform
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Any

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from pymirror.engine import (
    SNAPSHOT_SCHEMA,
    VERSION,
    DestinationStats,
    HistogramStats,
    MirrorStats,
    Stats,
    TcpMirrorStats,
    TcpStats,
)
from pymirror.istio_metrics import Source
from pymirror.istio_metrics import families as istio_families
from pymirror.snapshot import Snapshot

__all__ = ["Scrape", "StatsCollector", "families", "registry", "render"]

#: Labels of every per-destination series, taken from the Snapshot's names.
ROUTE_LABELS = ("virtual_service", "route", "host", "subset")
#: Mirror outcomes other than `dropped`, as the core counts them.
_OUTCOMES = ("answered", "cut", "failed", "timed_out")

_Labels = tuple[str, ...]
#: `le` as Prometheus' Go clients write it (`1.0`, `0.0005`); the library's own formatter.
_go_float: Callable[[float], str] = floatToGoString


@dataclass(frozen=True)
class Scrape:
    """Everything one `/metrics` answer is made of, read once."""

    stats: Stats | None
    """The core's counters; None when no proxy is running (only control-plane series)."""
    snapshot: Snapshot | None = None
    """The running snapshot: which endpoints make up each cluster, for the connection gauge."""
    reloads: Mapping[str, int] = field(default_factory=lambda: {"success": 0, "failure": 0})
    """SIGHUP reloads by result."""
    checksum: str = ""
    """Checksum of the configuration as written (see `pymirror.admin.config_checksum`)."""
    compare: Mapping[tuple[str, str, str], Mapping[str, int]] = field(default_factory=dict)
    """Compared pairs by (virtual service, route, endpoint) and result (`pymirror.compare`)."""
    versions: Mapping[tuple[str, str], str] = field(default_factory=dict)
    """(host, subset) -> the `version` label the subset selects by (Istio's
    `destination_version`)."""
    source: Source = field(default_factory=Source.from_environment)
    """Who pymirror is (Istio's `source_workload`), from the pod's environment."""


def families(scrape: Scrape) -> list[Metric]:
    """Every pymirror family for one scrape, in a stable order."""
    reloads = CounterMetricFamily(
        "pymirror_config_reloads", "Configuration reloads (SIGHUP) by result.", labels=["result"]
    )
    for result in ("success", "failure"):
        reloads.add_metric([result], scrape.reloads.get(result, 0))
    build = GaugeMetricFamily(
        "pymirror_build_info",
        "What runs: pymirror's version, the Snapshot schema its core reads, Python's "
        "version. Always 1.",
        labels=["version", "snapshot_schema", "python"],
    )
    build.add_metric([VERSION, str(SNAPSHOT_SCHEMA), platform.python_version()], 1)
    last_ok = GaugeMetricFamily(
        "pymirror_config_last_reload_successful",
        "1 when the last reload (SIGHUP, a changed TLS file) took effect, or none was "
        "tried; 0 when it was refused and an older configuration still serves.",
    )
    last_ok.add_metric([], scrape.reloads.get("last_ok", 1))
    last_at = GaugeMetricFamily(
        "pymirror_config_last_reload_success_timestamp_seconds",
        "When the running configuration was loaded (start, or the last reload that took "
        "effect), in seconds since the epoch.",
    )
    last_at.add_metric([], scrape.reloads.get("last_at", 0))
    out: list[Metric] = [reloads, build, last_ok, last_at]
    stats = scrape.stats
    if stats is None:
        return out
    info = GaugeMetricFamily(
        "pymirror_config_info",
        "The running configuration: version of the resolved snapshot, checksum of the "
        "configuration as written. Always 1.",
        labels=["version", "checksum"],
    )
    info.add_metric([stats["version"], scrape.checksum], 1)
    out.append(info)
    bounds = stats["bucket_bounds_seconds"]
    out += _destinations(stats["destinations"], bounds)
    out += _mirrors(stats["mirrors"], bounds)
    out += _upstream(stats, scrape.snapshot)
    out += _listeners(stats)
    out += _outliers(stats)
    out += _tcp(stats)
    out += _upgrades(stats)
    out.append(_compare(stats, scrape.compare))
    held = GaugeMetricFamily(
        "pymirror_compare_buffer_bytes",
        "Bytes held by compared answers now, waiting to be compared (bounded by "
        "`--compare-buffer-budget`).",
    )
    held.add_metric([], stats.get("compare_buffer_held_bytes", 0))
    out.append(held)
    access = CounterMetricFamily(
        "pymirror_access_log_lines",
        "Access log lines written, and dropped because the writer fell behind.",
        labels=["result"],
    )
    access.add_metric(["written"], stats["access_log"]["written"])
    access.add_metric(["dropped"], stats["access_log"]["dropped"])
    out.append(access)
    out += istio_families(stats, scrape.source, scrape.versions)
    return out


class StatsCollector(Collector):
    """A prometheus_client collector calling `read` once per scrape."""

    def __init__(self, read: Callable[[], Scrape]) -> None:
        self._read = read

    def collect(self) -> Iterable[Metric]:
        return families(self._read())

    def describe(self) -> Iterable[Metric]:
        # Registering must not read the core (it may not run yet); the names are fixed
        # and nothing else in our registry could collide with them.
        return ()


def registry(read: Callable[[], Scrape], *, process: bool = True) -> CollectorRegistry:
    """A registry of pymirror's families and, unless told not to, the process's own
    (CPU, memory, open files: prometheus_client's ProcessCollector)."""
    result = CollectorRegistry(auto_describe=False)
    result.register(StatsCollector(read))
    if process:
        ProcessCollector(registry=result)
    return result


def render(scrape: Scrape) -> str:
    """Prometheus text exposition of one scrape (pymirror's families only)."""
    return generate_latest(registry(lambda: scrape, process=False)).decode()


# === per destination ===


@dataclass
class _Series:
    """One label set's counts, summed: the core may report a label set more than once
    (two routes given the same name, one destination listed twice), and a valid
    exposition has each label set once."""

    bounds: Sequence[float]
    codes: Counter[str] = field(default_factory=Counter)
    grpc: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    dropped: Counter[str] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)
    answer_bytes: int = 0
    in_flight: int = 0
    buckets: list[int] = field(init=False)
    sum_seconds: float = 0.0

    def __post_init__(self) -> None:
        self.buckets = [0] * (len(self.bounds) + 1)

    def add_duration(self, h: HistogramStats) -> None:
        if len(h["buckets"]) != len(self.buckets):
            raise ValueError(
                f"the core reported {len(h['buckets'])} histogram buckets for "
                f"{len(self.bounds)} bounds (expected one more, for +Inf)"
            )
        self.buckets = [a + b for a, b in zip(self.buckets, h["buckets"], strict=True)]
        self.sum_seconds += h["sum_seconds"]

    def histogram(self) -> tuple[list[tuple[str, float]], float]:
        """Cumulative buckets, as Prometheus wants them, from the core's per-bucket counts.
        The +Inf bucket (the series' count) is their total, so it always agrees with them."""
        les = [_go_float(b) for b in self.bounds] + ["+Inf"]
        return list(zip(les, map(float, accumulate(self.buckets)), strict=True)), self.sum_seconds


def _labels(row: DestinationStats | MirrorStats | TcpStats | TcpMirrorStats) -> _Labels:
    return (row["virtual_service"], row["route"], row["host"], row["subset"] or "")


def _group(
    rows: Iterable[DestinationStats | MirrorStats], bounds: Sequence[float]
) -> dict[_Labels, _Series]:
    series: dict[_Labels, _Series] = {}
    for row in rows:
        s = series.setdefault(_labels(row), _Series(bounds))
        s.codes.update(row["responses"])
        s.grpc.update(row.get("grpc_responses", {}))
        s.add_duration(row["duration"])
    return series


def _histogram(name: str, doc: str, series: Mapping[_Labels, _Series]) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=list(ROUTE_LABELS))
    for labels, s in series.items():
        buckets, total = s.histogram()
        family.add_metric(list(labels), buckets, total)
    return family


def _codes(name: str, doc: str, series: Mapping[_Labels, _Series]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=[*ROUTE_LABELS, "code"])
    for labels, s in series.items():
        for code, count in sorted(s.codes.items()):
            family.add_metric([*labels, code], count)
    return family


def _grpc_codes(name: str, doc: str, series: Mapping[_Labels, _Series]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=[*ROUTE_LABELS, "grpc_status"])
    for labels, s in series.items():
        for status, count in sorted(s.grpc.items()):
            family.add_metric([*labels, status], count)
    return family


def _destinations(rows: Sequence[DestinationStats], bounds: Sequence[float]) -> list[Metric]:
    series = _group(rows, bounds)
    return [
        _codes("pymirror_requests", "Primary responses by status code.", series),
        _grpc_codes(
            "pymirror_grpc_requests",
            "Primary gRPC answers by grpc-status (a gRPC call's HTTP status is 200 whatever "
            "its outcome).",
            series,
        ),
        _histogram(
            "pymirror_request_duration_seconds",
            "Time from a request's arrival to the primary's response headers (or the "
            "proxy's own error answer: 502, 503, 504).",
            series,
        ),
    ]


def _mirrors(rows: Sequence[MirrorStats], bounds: Sequence[float]) -> list[Metric]:
    series = _group(rows, bounds)
    for row in rows:
        s = series[_labels(row)]
        s.outcomes.update({o: row[o] for o in _OUTCOMES})  # type: ignore[literal-required]
        s.dropped.update(row["dropped"])
        s.failures.update(row.get("failures", {}))
        s.answer_bytes += row.get("answer_bytes", 0)
        s.in_flight += row["in_flight"]
    outcomes = CounterMetricFamily(
        "pymirror_mirror_requests",
        "Mirror copies by outcome: answered (read to its end within the drain limit), cut "
        "(past the drain limit: reading stopped, connection closed), failed (see "
        "pymirror_mirror_failures_total for why), timed_out, dropped (never sent; see "
        "pymirror_mirror_dropped_total for why).",
        labels=[*ROUTE_LABELS, "outcome"],
    )
    dropped = CounterMetricFamily(
        "pymirror_mirror_dropped",
        "Mirror copies dropped before or while being sent, by reason.",
        labels=[*ROUTE_LABELS, "reason"],
    )
    failures = CounterMetricFamily(
        "pymirror_mirror_failures",
        "Mirror copies failed, by reason: connect, tls (the handshake failed), reset "
        "(before the answer's head was "
        "complete), protocol (a head that does not parse or is too large), framing (a "
        "malformed or conflicting Content-Length), body_incomplete (the body ended short "
        "of its framing).",
        labels=[*ROUTE_LABELS, "reason"],
    )
    answer_bytes = CounterMetricFamily(
        "pymirror_mirror_answer_bytes",
        "Body bytes read from mirrors' answers (each copy reads at most its drain limit).",
        labels=list(ROUTE_LABELS),
    )
    in_flight = GaugeMetricFamily(
        "pymirror_mirror_in_flight", "Mirror copies in flight now.", labels=list(ROUTE_LABELS)
    )
    for labels, s in series.items():
        for outcome in _OUTCOMES:
            outcomes.add_metric([*labels, outcome], s.outcomes[outcome])
        outcomes.add_metric([*labels, "dropped"], sum(s.dropped.values()))
        for reason, count in sorted(s.dropped.items()):
            dropped.add_metric([*labels, reason], count)
        for reason, count in sorted(s.failures.items()):
            failures.add_metric([*labels, reason], count)
        answer_bytes.add_metric(list(labels), s.answer_bytes)
        in_flight.add_metric(list(labels), s.in_flight)
    return [
        outcomes,
        dropped,
        failures,
        answer_bytes,
        in_flight,
        _codes("pymirror_mirror_responses", "Mirror responses by status code.", series),
        _grpc_codes(
            "pymirror_mirror_grpc_responses", "Mirror gRPC answers by grpc-status.", series
        ),
        _histogram(
            "pymirror_mirror_request_duration_seconds",
            "Time of an answered copy's whole exchange with the mirror, its response "
            "read to the end.",
            series,
        ),
    ]


# === tcp routes ===


def _tcp(stats: Stats) -> list[Metric]:
    """Spliced connections per tcp route destination, and what their mirrors got."""
    return _spliced(stats, "tcp", "TCP connections")


def _upgrades(stats: Stats) -> list[Metric]:
    """Upgraded (WebSocket) sessions per HTTP route destination, and their mirrors."""
    return _spliced(stats, "upgrade", "Upgraded sessions")


def _spliced(stats: Stats, kind: str, what: str) -> list[Metric]:
    """One set of families for spliced streams: `kind` names the metrics."""
    rows, mirror_rows = (
        (stats.get("tcp", []), stats.get("tcp_mirrors", []))
        if kind == "tcp"
        else (stats.get("upgrades", []), stats.get("upgrade_mirrors", []))
    )

    def family(
        cls: type[CounterMetricFamily | GaugeMetricFamily], name: str, doc: str, *extra: str
    ) -> Any:
        return cls(name, doc, labels=[*ROUTE_LABELS, *extra])

    conns = family(CounterMetricFamily, f"pymirror_{kind}_connections", f"{what} routed.")
    active = family(GaugeMetricFamily, f"pymirror_{kind}_connections_active", f"{what} open.")
    failed = family(
        CounterMetricFamily,
        f"pymirror_{kind}_connect_failures",
        f"{what} closed because no upstream connection could be opened (refused, "
        "timed out, no endpoint, or the destination's connection limit).",
    )
    idle = family(
        CounterMetricFamily,
        f"pymirror_{kind}_idle_timeouts",
        f"{what} closed after the idle timeout without a byte either way.",
    )
    moved = family(
        CounterMetricFamily,
        f"pymirror_{kind}_bytes",
        "Bytes spliced: `to_upstream` from the client, `to_client` from the upstream.",
        "direction",
    )
    # Summed by label set: two virtual services of one name (in two namespaces) report
    # apart, and an exposition must have each label set once.
    routes: dict[_Labels, Counter[str]] = {}
    for row in rows:
        routes.setdefault(_labels(row), Counter()).update(
            {k: v for k, v in row.items() if isinstance(v, int)}
        )
    for key, sums in routes.items():
        labels = list(key)
        conns.add_metric(labels, sums["connections_total"])
        active.add_metric(labels, sums["connections_active"])
        failed.add_metric(labels, sums["connect_failed"])
        idle.add_metric(labels, sums["idle_timeouts"])
        moved.add_metric([*labels, "to_upstream"], sums["bytes_received"])
        moved.add_metric([*labels, "to_client"], sums["bytes_sent"])
    opened = family(
        CounterMetricFamily,
        f"pymirror_{kind}_mirror_connections",
        f"{what}: mirror connections ended, by outcome: `completed` (the mirror took the whole "
        "client stream) or `cut` (see pymirror_tcp_mirror_cut_total); open ones are "
        f"pymirror_{kind}_mirror_connections_active.",
        "outcome",
    )
    cut = family(
        CounterMetricFamily,
        f"pymirror_{kind}_mirror_cut",
        "Mirror connections cut, by reason: buffer_full (the mirror fell behind), "
        "connect_failed, tls_failed (the handshake failed), failed (reset, closed), timeout "
        "(after the client ended), "
        "no_endpoint, not_upgraded (an upgrade mirror that did not answer 101). The "
        "client's connection is never affected.",
        "reason",
    )
    mirror_active = family(
        GaugeMetricFamily, f"pymirror_{kind}_mirror_connections_active", "Mirror connections open."
    )
    mirror_bytes = family(
        CounterMetricFamily,
        f"pymirror_{kind}_mirror_bytes",
        "Client bytes `sent` to the mirror, and `dropped` (never sent: the mirror was cut).",
        "result",
    )
    mirrors: dict[_Labels, tuple[Counter[str], Counter[str]]] = {}
    for mirror in mirror_rows:
        counts, cuts = mirrors.setdefault(_labels(mirror), (Counter(), Counter()))
        counts.update({k: v for k, v in mirror.items() if isinstance(v, int)})
        cuts.update(mirror["cut"])
    for key, (m, cuts) in mirrors.items():
        labels = list(key)
        opened.add_metric([*labels, "completed"], m["completed"])
        opened.add_metric([*labels, "cut"], sum(cuts.values()))
        for reason, count in sorted(cuts.items()):
            cut.add_metric([*labels, reason], count)
        mirror_active.add_metric(labels, m["active"])
        mirror_bytes.add_metric([*labels, "sent"], m["bytes_sent"])
        mirror_bytes.add_metric([*labels, "dropped"], m["bytes_dropped"])
    return [conns, active, failed, idle, moved, opened, cut, mirror_active, mirror_bytes]


# === upstream connections and listeners ===


def _cluster_endpoints(snapshot: Snapshot) -> dict[tuple[str, str, str], set[str]]:
    """(host, subset, role) -> the endpoints of the running snapshot's clusters used in
    that role. Clusters with the same labels (a DNS host on two ports) are united."""
    result: dict[tuple[str, str, str], set[str]] = {}
    clusters = snapshot["clusters"]

    def add(index: int, role: str) -> None:
        c = clusters[index]
        key = (c["host"], c.get("subset") or "", role)
        result.setdefault(key, set()).update(c["endpoints"])

    for vh in snapshot["virtual_hosts"]:
        for route in vh["routes"]:
            for d in route["destinations"]:
                add(d["cluster"], "primary")
            for m in route.get("mirrors", []):
                add(m["cluster"], "mirror")
    return result


def _upstream(stats: Stats, snapshot: Snapshot | None) -> Iterator[Metric]:
    if snapshot is None:
        return
    # The core counts connections per endpoint and role, not per cluster: two clusters
    # sharing an endpoint (a subset and the whole service, say) both show its count.
    by_endpoint = {(c["role"], c["endpoint"]): c for c in stats["upstream_connections"]}
    tls_hosts = {c["host"] for c in snapshot["clusters"] if "tls" in c}
    open_ = GaugeMetricFamily(
        "pymirror_upstream_connections",
        "Open connections to a destination's endpoints, by role (primary or mirror: the two "
        "never share a connection). Clusters sharing an endpoint share its count.",
        labels=["host", "subset", "role"],
    )
    opened = CounterMetricFamily(
        "pymirror_upstream_connections_opened",
        "Connections opened to a destination's endpoints, by role.",
        labels=["host", "subset", "role"],
    )
    handshakes = CounterMetricFamily(
        "pymirror_upstream_tls_handshakes",
        "TLS handshakes to a destination's endpoints, by role and result: `full`, `resumed` "
        "(a cached session) or `failed` (certificate not trusted or not for the name, no "
        "version or suite in common). Clusters sharing an endpoint share its count.",
        labels=["host", "subset", "role", "result"],
    )
    for (host, subset, role), endpoints in sorted(_cluster_endpoints(snapshot).items()):
        rows = [by_endpoint[(role, e)] for e in sorted(endpoints) if (role, e) in by_endpoint]
        open_.add_metric([host, subset, role], sum(r["open"] for r in rows))
        opened.add_metric([host, subset, role], sum(r["opened_total"] for r in rows))
        if host in tls_hosts:
            counts = {
                "full": sum(r["tls_full"] for r in rows),
                "resumed": sum(r["tls_resumed"] for r in rows),
                "failed": sum(r["tls_failed"] for r in rows),
            }
            for result, count in counts.items():
                handshakes.add_metric([host, subset, role, result], count)
    yield open_
    yield opened
    yield handshakes


#: Every result a comparison can have; `skipped` is counted by the core, per mirror.
COMPARE_RESULTS = (
    "match",
    "status_mismatch",
    "header_mismatch",
    "body_mismatch",
    "noise_only",
    "skipped",
)


def _compare(stats: Stats, compared: Mapping[tuple[str, str, str], Mapping[str, int]]) -> Metric:
    family = CounterMetricFamily(
        "pymirror_compare",
        "Compared mirror answers by endpoint (method and path template) and result. "
        "`skipped`: sampled for comparison but not compared (queue full, primary "
        "unfinished, copy failed); the core does not know endpoints, so their endpoint is "
        "empty.",
        labels=["virtual_service", "route", "endpoint", "result"],
    )
    for (vs, route, endpoint), results in sorted(compared.items()):
        for result in COMPARE_RESULTS[:-1]:
            if results.get(result):
                family.add_metric([vs, route, endpoint, result], results[result])
    skipped: Counter[tuple[str, str]] = Counter()
    for m in stats["mirrors"]:
        c = m.get("compare")
        if c and c["sampled"]:
            skipped[(m["virtual_service"], m["route"])] += sum(c["skipped"].values())
    for (vs, route), n in sorted(skipped.items()):
        family.add_metric([vs, route, "", "skipped"], n)
    return family


def _outliers(stats: Stats) -> list[Metric]:
    ejections = CounterMetricFamily(
        "pymirror_outlier_ejections",
        "Endpoints ejected by outlier detection, by destination, since the configuration "
        "was applied (starts over on reload).",
        labels=["host", "subset"],
    )
    ejected = GaugeMetricFamily(
        "pymirror_outlier_ejected_endpoints",
        "Endpoints of the destination out of the pick now (outlier detection).",
        labels=["host", "subset"],
    )
    # Summed per label set: a valid exposition has each once, whatever the core lists.
    totals: dict[tuple[str, str], list[int]] = {}
    for row in stats.get("outliers", []):
        sums = totals.setdefault((row["host"], row["subset"] or ""), [0, 0])
        sums[0] += row["ejections_total"]
        sums[1] += row["ejected"]
    for labels, (total, now) in totals.items():
        ejections.add_metric(list(labels), total)
        ejected.add_metric(list(labels), now)
    return [ejections, ejected]


def _listeners(stats: Stats) -> list[Metric]:
    accepted = CounterMetricFamily(
        "pymirror_listener_connections",
        "Client connections accepted by listener.",
        labels=["listener"],
    )
    active = GaugeMetricFamily(
        "pymirror_listener_connections_active",
        "Client connections open now, by listener.",
        labels=["listener"],
    )
    refused = CounterMetricFamily(
        "pymirror_listener_connections_refused",
        "Client connections closed at accept because the listener had its maximum open.",
        labels=["listener"],
    )
    unrouted = CounterMetricFamily(
        "pymirror_listener_unrouted_requests",
        "Requests that no virtual service or route took (404; 405 for a CONNECT), and "
        "connections on a tcp listener that no tcp route took (closed at once).",
        labels=["listener"],
    )
    for lst in stats["listeners"]:
        accepted.add_metric([lst["address"]], lst["connections_total"])
        active.add_metric([lst["address"]], lst["connections_active"])
        refused.add_metric([lst["address"]], lst["connections_refused"])
        unrouted.add_metric([lst["address"]], lst["unrouted"])
    return [accepted, active, refused, unrouted]
