"""Runtime overrides: what an operator changes on a running proxy without editing its
files (Envoy's runtime does the same). Today: a mirror's percentage.

Plain functions of plain data. An override names mirrors by the names the operator sees
in `/config` and the metrics (virtual service, route, mirror destination); `apply` puts
the overrides on a freshly resolved snapshot, so they hold across reloads for as long as
the mirrors they name exist.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from pymirror.resolve import per_million, snapshot_version
from pymirror.snapshot import Mirror, Snapshot

__all__ = ["MirrorPercentage", "apply", "matching", "parse_mirror_percentage"]


@dataclass(frozen=True)
class MirrorPercentage:
    """The share of requests copied to the mirrors it names, in place of the configured one."""

    virtual_service: str
    route: str | None
    """A route's name (its index when unnamed); None: every route of the virtual service."""
    mirror: str | None
    """The mirror's destination, `host` or `host/subset`; None: every mirror of the routes."""
    percentage: float | None
    """0 to 100, fractional; None: remove the override, the configured share is back."""

    @property
    def key(self) -> tuple[str, str | None, str | None]:
        return (self.virtual_service, self.route, self.mirror)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def parse_mirror_percentage(body: bytes) -> MirrorPercentage:
    """The JSON body of `POST /runtime/mirror_percentage`; ValueError says what is wrong."""
    try:
        doc = json.loads(body or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"the body is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ValueError('expected a JSON object, e.g. {"virtual_service": "reviews", '
                         '"percentage": 5}')  # fmt: skip
    known = {"virtual_service", "route", "mirror", "percentage"}
    if unknown := sorted(set(doc) - known):
        raise ValueError(f"unknown field(s) {', '.join(unknown)}; the fields are: "
                         f"{', '.join(sorted(known))}")  # fmt: skip
    vs = doc.get("virtual_service")
    if not isinstance(vs, str) or not vs:
        raise ValueError("`virtual_service` (a name) is required")
    for name in ("route", "mirror"):
        if doc.get(name) is not None and not isinstance(doc[name], str):
            raise ValueError(f"`{name}` must be a string")
    if "percentage" not in doc:
        raise ValueError("`percentage` is required: 0 to 100, or null to remove the override")
    value = doc["percentage"]
    if value is not None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError("`percentage` must be a number from 0 to 100, or null")
        if not (math.isfinite(value) and 0 <= value <= 100):
            raise ValueError(f"`percentage` must be from 0 to 100, not {value}")
    return MirrorPercentage(vs, doc.get("route"), doc.get("mirror"), value)


def _destination(snapshot: Snapshot, mirror: Mirror) -> tuple[str, str]:
    cluster = snapshot["clusters"][mirror["cluster"]]
    host, subset = cluster["host"], cluster.get("subset")
    return host, f"{host}/{subset}" if subset else host


def matching(snapshot: Snapshot, override: MirrorPercentage) -> Iterator[Mirror]:
    """The snapshot's mirrors that `override` names (those of tcp routes are not HTTP
    copies and keep their share)."""
    for vh in snapshot["virtual_hosts"]:
        if vh["name"] != override.virtual_service:
            continue
        for route in vh["routes"]:
            if override.route is not None and route["name"] != override.route:
                continue
            for mirror in route.get("mirrors", []):
                host, named = _destination(snapshot, mirror)
                if override.mirror is None or override.mirror in (host, named):
                    yield mirror


def apply(snapshot: Snapshot, overrides: Sequence[MirrorPercentage]) -> Snapshot:
    """`snapshot` with each override's share on the mirrors it names, later overrides
    over earlier ones, and the version of what then runs; the snapshot given is not
    changed."""
    if not overrides:
        return snapshot
    out = copy.deepcopy(snapshot)
    for override in overrides:
        if override.percentage is None:
            continue
        for mirror in matching(out, override):
            mirror["per_million"] = per_million(override.percentage)
    out["version"] = snapshot_version(out)
    return out
