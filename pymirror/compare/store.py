"""Bounded figures per endpoint: results, differing fields, statuses, latencies, and a
few recent mismatches per field with both values (redacted where configured).

Every collection here has a bound, so a proxy that runs for months with many endpoints
keeps a fixed amount of memory: endpoints past `max_endpoints` per route are folded into
`OTHER`, fields past `max_fields` per endpoint into `OTHER`, latencies are the last
`max_latencies` per side, samples the last `max_samples` per field.
"""

from __future__ import annotations

import json
import math
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from pymirror.compare.diff import (
    ABSENT,
    REDACTED,
    Difference,
    Outcome,
    Settings,
    result_of,
    status_label,
)
from pymirror.compare.noise import REGRESSION, classify, z_score

#: Where endpoints or fields past their bound are counted.
OTHER = "(other)"

Key = tuple[str, str, str]  # virtual service, route, endpoint


@dataclass
class Sample:
    field: str
    path: str
    request: str
    primary: Any
    mirror: Any

    def to_json(self) -> dict[str, Any]:
        return {
            "field": self.field,
            "path": self.path,
            "request": self.request,
            "primary": _jsonable(self.primary),
            "mirror": _jsonable(self.mirror),
        }


def _jsonable(value: Any, limit: int = 300) -> Any:
    if value is ABSENT:
        return "<absent>"
    text = json.dumps(value, default=str)
    # Long values are cut so that one sample cannot make a report unreadable.
    return value if len(text) <= limit else text[:limit] + "..."


@dataclass
class Figures:
    """What is known of one endpoint."""

    max_latencies: int
    max_samples: int
    max_fields: int
    compared: int = 0
    truncated: int = 0
    """Pairs compared on their kept prefixes only: a side was cut at the capture limit."""
    results: Counter[str] = field(default_factory=Counter)
    fields: Counter[str] = field(default_factory=Counter)
    statuses: Counter[tuple[int | str, int | str]] = field(default_factory=Counter)
    """(primary, mirror) as `status_label` gives them: gRPC answers with their grpc-status."""
    primary_latency: deque[float] = field(init=False)
    mirror_latency: deque[float] = field(init=False)
    samples: dict[str, deque[Sample]] = field(default_factory=dict)
    # With a second primary (noise filtering): the same, for its pairs with the primary.
    second_primary: bool = False
    noise_compared: int = 0
    noise_fields: Counter[str] = field(default_factory=Counter)
    noise_samples: dict[str, deque[Sample]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.primary_latency = deque(maxlen=self.max_latencies)
        self.mirror_latency = deque(maxlen=self.max_latencies)

    def field_class(self, name: str) -> str:
        """`regression` or `noise` (see `pymirror.compare.noise`), from the counts so far."""
        if not self.second_primary:
            return REGRESSION
        return classify(
            self.fields[name], self.compared, self.noise_fields[name], self.noise_compared
        )

    def add(self, pair: dict[str, Any], outcome: Outcome, settings: Settings) -> None:
        self.second_primary |= settings.second_primary
        by_field = self._fold(self.fields, outcome.differences)
        # Judged on the counts before this pair, as the next pair would be.
        regressions = [d for name, d in by_field.items() if self.field_class(name) == REGRESSION]
        result = result_of(regressions) if regressions or not by_field else "noise_only"
        self.compared += 1
        self.truncated += outcome.truncated
        self.results[result] += 1
        p, m = pair["primary"], pair["mirror_response"]
        self.statuses[(status_label(p), status_label(m))] += 1
        self.primary_latency.append(p["latency"])
        self.mirror_latency.append(m["latency"])
        self._count(self.fields, self.samples, by_field, pair, settings)

    def add_noise(self, pair: dict[str, Any], outcome: Outcome, settings: Settings) -> None:
        """A pair of the primary and the second primary: what differs is noise."""
        self.second_primary = True
        self.noise_compared += 1
        by_field = self._fold(self.noise_fields, outcome.differences)
        self._count(self.noise_fields, self.noise_samples, by_field, pair, settings)

    def _fold(self, counts: Counter[str], diffs: tuple[Difference, ...]) -> dict[str, Difference]:
        """One difference per field (a field counts once per pair, however many list items
        differ in it), fields past the bound folded into `OTHER`."""
        out: dict[str, Difference] = {}
        new = 0
        for d in diffs:
            name = d.field
            if name not in counts and name not in out:
                if len(counts) + new >= self.max_fields:
                    name = OTHER
                new += name not in counts and name not in out
            out.setdefault(name, d)
        return out

    def _count(
        self,
        counts: Counter[str],
        samples: dict[str, deque[Sample]],
        by_field: dict[str, Difference],
        pair: dict[str, Any],
        settings: Settings,
    ) -> None:
        request = f"{pair['method']} {pair['path']}"
        for name, d in by_field.items():
            counts[name] += 1
            kept = samples.setdefault(name, deque(maxlen=self.max_samples))
            kept.append(_sample(d, request, settings))


def _sample(d: Difference, request: str, settings: Settings) -> Sample:
    if settings.redacted(d):
        return Sample(d.field, d.path, request, REDACTED, REDACTED)
    return Sample(d.field, d.path, request, d.primary, d.mirror)


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in [0, 100]); None without values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))  # ceil, at least the first
    return ordered[int(rank) - 1]


#: Buckets of the latency histograms (`histogram`), log-spaced.
HISTOGRAM_BUCKETS = 24


def histogram(primary: list[float], mirror: list[float]) -> dict[str, list[Any]]:
    """Both sides' latencies counted in the same log-spaced buckets (from the fastest to
    the slowest of either), so that their distributions can be drawn side by side.
    `edges` has one more entry than each side's counts (seconds)."""
    both = [v for v in primary + mirror if v > 0]
    if not both:
        return {"edges": [], "primary": [], "mirror": []}
    lo, hi = min(both), max(both)
    hi = max(hi, lo * 1.01)  # one value: still a bucket with some width
    ratio = (hi / lo) ** (1 / HISTOGRAM_BUCKETS)
    edges = [lo * ratio**i for i in range(HISTOGRAM_BUCKETS + 1)]

    def counts(values: list[float]) -> list[int]:
        out = [0] * HISTOGRAM_BUCKETS
        for v in values:
            i = int(math.log(max(v, lo) / lo) / math.log(ratio)) if ratio > 1 else 0
            out[min(max(i, 0), HISTOGRAM_BUCKETS - 1)] += 1
        return out

    return {"edges": edges, "primary": counts(primary), "mirror": counts(mirror)}


class Store:
    """Comparison figures by (virtual service, route, endpoint)."""

    def __init__(
        self,
        *,
        max_endpoints: int = 200,
        max_fields: int = 100,
        max_samples: int = 5,
        max_latencies: int = 1024,
    ) -> None:
        self.max_endpoints = max_endpoints
        self._limits = (max_latencies, max_samples, max_fields)
        self._by_key: dict[Key, Figures] = {}
        self._per_route: Counter[tuple[str, str]] = Counter()

    def _figures(self, key: Key) -> Figures:
        vs, route, _ = key
        if key not in self._by_key and self._per_route[(vs, route)] >= self.max_endpoints:
            key = (vs, route, OTHER)
        figures = self._by_key.get(key)
        if figures is None:
            figures = self._by_key[key] = Figures(*self._limits)
            self._per_route[(vs, route)] += 1
        return figures

    def add(self, key: Key, pair: dict[str, Any], outcome: Outcome, settings: Settings) -> None:
        self._figures(key).add(pair, outcome, settings)

    def add_noise(
        self, key: Key, pair: dict[str, Any], outcome: Outcome, settings: Settings
    ) -> None:
        """A pair of the primary and the second primary (noise filtering)."""
        self._figures(key).add_noise(pair, outcome, settings)

    def counts(self) -> dict[Key, Counter[str]]:
        """Results by endpoint, for metrics (monotonic: nothing is ever forgotten)."""
        return {k: f.results for k, f in self._by_key.items()}

    def get(self, key: Key) -> Figures | None:
        return self._by_key.get(key)

    def to_json(self) -> list[dict[str, Any]]:
        """Per endpoint: results, field rates, statuses, latency percentiles, samples."""
        out = []
        for (vs, route, endpoint), f in sorted(self._by_key.items()):
            lat: dict[str, Any] = {}
            for side, values in (("primary", f.primary_latency), ("mirror", f.mirror_latency)):
                v = list(values)
                lat[side] = {
                    "p50": percentile(v, 50),
                    "p99": percentile(v, 99),
                    "mean": sum(v) / len(v) if v else None,
                    "samples": len(v),
                }
            lat["histogram"] = histogram(list(f.primary_latency), list(f.mirror_latency))
            fields = []
            for name in f.fields.keys() | f.noise_fields.keys():
                n = f.fields[name]
                row: dict[str, Any] = {
                    "field": name,
                    "count": n,
                    "rate": n / f.compared if f.compared else 0.0,
                    "class": f.field_class(name),
                }
                if f.second_primary:
                    x1, n1 = f.noise_fields[name], f.noise_compared
                    row["noise_count"] = x1
                    row["noise_rate"] = x1 / n1 if n1 else 0.0
                    row["z"] = round(z_score(n, f.compared, x1, n1), 2)
                fields.append(row)
            # Regressions first, then by how often they differ.
            fields.sort(key=lambda r: (r["class"] != REGRESSION, -r["count"], r["field"]))
            agree = sum(n for (p, m), n in f.statuses.items() if p == m)
            doc: dict[str, Any] = {
                "virtual_service": vs,
                "route": route,
                "endpoint": endpoint,
                "compared": f.compared,
                "truncated": f.truncated,
                "results": dict(f.results),
                "fields": fields,
                "statuses": [
                    {"primary": p, "mirror": m, "count": n}
                    for (p, m), n in f.statuses.most_common()
                ],
                "status_agreement": agree / f.compared if f.compared else None,
                "latency": lat,
                "samples": [s.to_json() for kept in f.samples.values() for s in kept],
                "second_primary": f.second_primary,
            }
            if f.second_primary:
                doc["noise_compared"] = f.noise_compared
                doc["noise_samples"] = [
                    s.to_json() for kept in f.noise_samples.values() for s in kept
                ]
            out.append(doc)
        return out
