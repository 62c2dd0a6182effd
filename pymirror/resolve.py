"""Model -> Snapshot: every name resolved to an index, every subset to endpoint addresses.

The result is the plain, JSON-serialisable data that the native core compiles once
(see `pymirror.snapshot` and ``native/src/snapshot.rs``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import timedelta

from . import snapshot as snap
from .config.errors import ConfigError, Problem
from .config.model import Config, Destination, HTTPRoute, StringMatch, host_matches
from .config.types import check_listen_address, duration_ms, format_duration
from .config.validate import check_references, locate

__all__ = ["build_snapshot", "describe", "per_million"]

_DNS_PORT = 80  # what a destination host resolved by DNS is connected to without `port`


def build_snapshot(config: Config, *, listen: Sequence[str] | None = None) -> snap.Snapshot:
    """Resolve ``config`` into a Snapshot for the core.

    ``listen`` (``--listen``) replaces the configured listeners' addresses; they keep the
    default host of the first configured listener. Raises `ConfigError` when the config
    does not resolve (for instance: no listener at all).
    """
    problems = [
        Problem("--listen", None, None, (), str(exc))
        for address in listen or ()
        for exc in _address_error(address)
    ]
    problems += locate(config, check_references(config, need_listener=not listen))
    if problems:
        raise ConfigError(problems)
    return _Resolver(config).snapshot(listen)


def per_million(percent: float) -> int:
    """A percentage as a share out of 1,000,000: 20 -> 200000, 0.01 -> 100."""
    if not 0 <= percent <= 100:
        raise ValueError(f"percentage out of [0, 100]: {percent}")
    return round(percent * 10_000)


def _address_error(address: str) -> list[ValueError]:
    try:
        check_listen_address(address)
    except ValueError as exc:
        return [exc]
    return []


class _Resolver:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.clusters: list[snap.Cluster] = []
        self.cluster_ids: dict[tuple[str, str | None, tuple[str, ...]], int] = {}
        self.virtual_hosts: list[snap.VirtualHost] = []

    def snapshot(self, listen: Sequence[str] | None) -> snap.Snapshot:
        config = self.config
        self.virtual_hosts = [
            {
                "name": vs.name,
                "domains": list(vs.hosts),
                "routes": [self.route(str(j), r) for j, r in enumerate(vs.http)],
            }
            for vs in config.virtual_services
        ]
        if listen:
            host = config.listeners[0].host if config.listeners else None
            pairs = [(address, host) for address in listen]
        else:
            pairs = [(lst.address, lst.host) for lst in config.listeners]
        listeners: list[snap.Listener] = [
            {"address": address, "default_virtual_host": self.default_host(host)}
            for address, host in pairs
        ]
        upstream: snap.UpstreamSettings = {
            "connect_timeout_ms": duration_ms(config.upstream.connect_timeout),
            "pool_idle_timeout_ms": snap.POOL_IDLE_TIMEOUT_MS,
            "pool_max_idle_per_endpoint": snap.POOL_MAX_IDLE_PER_ENDPOINT,
        }
        result: snap.Snapshot = {
            "schema": snap.SCHEMA,
            "version": "",
            "listeners": listeners,
            "virtual_hosts": self.virtual_hosts,
            "clusters": self.clusters,
            "upstream": upstream,
        }
        # The version labels what the core runs: equal snapshots get equal versions.
        canonical = json.dumps({**result, "version": None}, sort_keys=True, separators=(",", ":"))
        result["version"] = hashlib.sha256(canonical.encode()).hexdigest()[:12]
        return result

    def route(self, default_name: str, route: HTTPRoute) -> snap.Route:
        limits = self.config.mirror_defaults
        return {
            "name": route.name or default_name,
            "matches": [
                {
                    "uri": _string_match(m.uri),
                    "method": _string_match(m.method),
                    # The core compares header names lower-cased, as HTTP says they are.
                    "headers": [
                        {"name": name.lower(), "value": _match(value)}
                        for name, value in m.headers.items()
                    ],
                }
                for m in route.match
            ],
            "destinations": [
                {"cluster": self.cluster(d.destination), "weight": weight}
                for d, weight in zip(route.route, route.weights, strict=True)
            ],
            "timeout_ms": duration_ms(route.timeout) if route.timeout is not None else None,
            "mirrors": [
                {
                    "cluster": self.cluster(destination),
                    "per_million": per_million(percent),
                    "max_in_flight": limits.max_in_flight,
                    "timeout_ms": duration_ms(limits.timeout),
                    "max_body_bytes": limits.max_body_bytes,
                    "host_suffix": limits.host_suffix,
                }
                for destination, percent in route.mirror_policies
            ],
        }

    def cluster(self, dest: Destination) -> int:
        service = self.config.services.get(dest.host)
        subset: str | None
        if service is not None and service.endpoints:
            subset = dest.subset
            endpoints = [e.address for e in service.select(subset)]
        else:
            # No declared endpoints: like a ServiceEntry with DNS resolution.
            subset = None
            port = dest.port.number if dest.port is not None else _DNS_PORT
            host = f"[{dest.host}]" if ":" in dest.host else dest.host
            endpoints = [f"{host}:{port}"]
        key = (dest.host, subset, tuple(endpoints))
        if key not in self.cluster_ids:
            self.cluster_ids[key] = len(self.clusters)
            self.clusters.append({"host": dest.host, "subset": subset, "endpoints": endpoints})
        return self.cluster_ids[key]

    def default_host(self, host: str | None) -> int | None:
        """The virtual host serving ``host``: exact domain first, then the longest wildcard;
        else an implicit one for the service of that name (validation ensured one exists)."""
        if host is None:
            return None
        best: tuple[int, int] | None = None  # (specificity, index)
        for i, vh in enumerate(self.virtual_hosts):
            for domain in vh["domains"]:
                if host_matches(domain, host):
                    rank = 1 << 16 if "*" not in domain else len(domain)
                    if best is None or rank > best[0]:
                        best = (rank, i)
        if best is not None:
            return best[1]
        for i, vh in enumerate(self.virtual_hosts[len(self.config.virtual_services) :]):
            if vh["domains"] == [host]:
                return len(self.config.virtual_services) + i
        self.virtual_hosts.append(
            {
                "name": host,
                "domains": [host],
                "routes": [
                    {
                        "name": "0",
                        "matches": [],
                        "destinations": [
                            {"cluster": self.cluster(Destination(host=host)), "weight": 100}
                        ],
                        "timeout_ms": None,
                        "mirrors": [],
                    }
                ],
            }
        )
        return len(self.virtual_hosts) - 1


def _match(m: StringMatch) -> snap.StringMatch:
    kind, value = m.kind
    return {kind: value}  # type: ignore[misc]


def _string_match(m: StringMatch | None) -> snap.StringMatch | None:
    return None if m is None else _match(m)


# === describe ===


def describe(config: Config, *, listen: Sequence[str] | None = None) -> list[str]:
    """Readable lines saying what would run, for ``pymirror check`` and startup logs."""
    s = build_snapshot(config, listen=listen)
    lines = []
    hosts = [lst.host for lst in config.listeners]
    for i, listener in enumerate(s["listeners"]):
        host = (hosts[0] if hosts else None) if listen else hosts[i]
        extra = f" (default host {host})" if host else ""
        lines.append(f"listener {listener['address']}{extra}")
    if config.admin is not None:
        lines.append(f"admin {config.admin.address}")
    clusters = s["clusters"]

    def where(index: int) -> str:
        c = clusters[index]
        name = f"{c['host']} {c['subset']}" if c.get("subset") else c["host"]
        return f"{name} ({', '.join(c['endpoints'])})"

    for vh in s["virtual_hosts"]:
        for route in vh["routes"]:
            dests = route["destinations"]
            total = sum(d["weight"] for d in dests)
            primary = ", ".join(
                where(d["cluster"])
                + (f" {d['weight'] * 100 / total:.4g}%" if len(dests) > 1 else "")
                for d in dests
            )
            text = f"{vh['name']}/{route['name']}: {_describe_matches(route)} -> {primary}"
            if timeout_ms := route.get("timeout_ms"):
                text += f"; timeout {format_duration(timedelta(milliseconds=timeout_ms))}"
            for m in route.get("mirrors", []):
                text += f"; mirror {m['per_million'] / 10_000:g}% -> {where(m['cluster'])}"
            lines.append(text)
    return lines


def _describe_matches(route: snap.Route) -> str:
    alternatives = []
    for m in route.get("matches", []):
        parts = []
        if m.get("method"):
            parts.append(_describe_string("method", m["method"], bare=True))
        if m.get("uri"):
            parts.append(_describe_string("uri", m["uri"], bare=True))
        parts += [_describe_string(h["name"], h["value"]) for h in m.get("headers", [])]
        alternatives.append(" ".join(parts) or "*")
    return " or ".join(alternatives) or "*"


def _describe_string(name: str, m: snap.StringMatch | None, *, bare: bool = False) -> str:
    assert m is not None
    if "exact" in m:
        return m["exact"] if bare else f"{name}={m['exact']}"
    if "prefix" in m:
        return f"{m['prefix']}*" if bare else f"{name}={m['prefix']}*"
    return f"{name}~{m['regex']}"
