"""Model -> Snapshot: every name resolved to an index, every subset to endpoint addresses.

The result is the plain, JSON-serialisable data that the native core compiles once
(see `pymirror.snapshot` and ``native/src/snapshot.rs``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import timedelta
from typing import TypedDict

from . import snapshot as snap
from . import translate as tr
from .config.errors import ConfigError, Problem
from .config.hosts import domains, host_matches
from .config.istio import CompareOptions
from .config.matches import HeaderOperations
from .config.model import (
    Config,
    Destination,
    HTTPMatchRequest,
    HTTPRoute,
    MirrorOptions,
    MirrorPolicy,
    Service,
    VirtualService,
)
from .config.types import check_listen_address, duration_ms, format_duration, split_host_port
from .config.validate import check_references, locate, port_origin, protocol_conflict
from .delegates import merge_matches

__all__ = ["build_snapshot", "describe", "per_million"]

_DNS_PORT = 80  # what a destination host resolved by DNS is connected to without `port`
per_million = tr.per_million


def build_snapshot(
    config: Config, *, listen: Sequence[str] | None = None, strict: bool = True
) -> snap.Snapshot:
    """Resolve ``config`` into a Snapshot for the core.

    ``listen`` (``--listen``) replaces the configured listeners' addresses; they keep the
    default host of the first configured listener, and its `protocol` when it writes one
    (else each address takes its own port's, see `Config.listener_protocol`). Raises
    `ConfigError` when the config does not resolve (for instance: no listener at all).
    ``strict=False`` (what `pymirror check` shows) needs no listener and resolves what may
    still be missing (a subset whose endpoints are in a file not given) to empty endpoint
    lists.
    """
    problems = [
        Problem("--listen", None, None, (), str(exc))
        for address in listen or ()
        for exc in _address_error(address)
    ]
    # A `--listen` address takes its protocol from its own port unless the first
    # configured listener writes one: service ports that disagree there need it written.
    written = config.listeners[0].protocol if listen and config.listeners else None
    problems += [
        Problem("--listen", None, None, (), f"{address}: {conflict}")
        for address in listen or ()
        if written is None and not _address_error(address)
        if (conflict := protocol_conflict(config, split_host_port(address)[1]))
    ]
    issues = check_references(config, need_listener=strict and not listen, strict=strict)
    problems += locate(config, [i for i in issues if i.severity == "error"])
    if problems:
        raise ConfigError(problems)
    return _Resolver(config).snapshot(listen)


def _address_error(address: str) -> list[ValueError]:
    try:
        check_listen_address(address)
    except ValueError as exc:
        return [exc]
    return []


def virtual_host_domains(vs: VirtualService) -> list[str]:
    """The request hosts a virtual service answers: its hosts, and for short names in a
    namespace, the names Kubernetes' DNS gives them there."""
    found: list[str] = []
    for host in vs.hosts:
        found += [d for d in domains(host, vs.namespace) if d not in found]
    return found


class _Resolver:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.clusters: list[snap.Cluster] = []
        self.cluster_ids: dict[str, int] = {}
        self.virtual_hosts: list[snap.VirtualHost] = []
        self.served = [vs for vs in config.virtual_services if vs.serves_http]

    def snapshot(self, listen: Sequence[str] | None) -> snap.Snapshot:
        config = self.config
        self.virtual_hosts = [
            {"name": vs.name, "domains": virtual_host_domains(vs), "routes": self.routes(vs)}
            for vs in self.served
        ]
        if listen:
            first = config.listeners[0] if config.listeners else None
            host, written = (first.host, first.protocol) if first else (None, None)
            protocols = [config.listener_protocol(address, written) for address in listen]
            # A tcp listener routes no requests, so it has no default host.
            triples = [
                (address, host if protocol == "http" else None, protocol)
                for address, protocol in zip(listen, protocols, strict=True)
            ]
        else:
            triples = [
                (lst.address, lst.host, config.listener_protocol(lst.address, lst.protocol))
                for lst in config.listeners
            ]
        # `protocol` and `tcp_routes` are written only when used, so that an HTTP-only
        # config keeps the snapshot (and version) it had before tcp routes existed.
        listeners: list[snap.Listener] = []
        for address, host, protocol in triples:
            listener: snap.Listener = {
                "address": address,
                "default_virtual_host": self.default_host(host),
            }
            if protocol == "tcp":
                listener["protocol"] = "tcp"
            listeners.append(listener)
        upstream: snap.UpstreamSettings = {
            "connect_timeout_ms": duration_ms(config.upstream.connect_timeout),
            "pool_idle_timeout_ms": duration_ms(config.upstream.pool_idle_timeout),
            "pool_max_idle_per_endpoint": snap.POOL_MAX_IDLE_PER_ENDPOINT,
        }
        limits = config.limits
        result: snap.Snapshot = {
            "schema": snap.SCHEMA,
            "version": "",
            "listeners": listeners,
            "virtual_hosts": self.virtual_hosts,
            "clusters": self.clusters,
            "upstream": upstream,
            "limits": {
                "max_request_headers": limits.max_request_headers,
                "idle_timeout_ms": duration_ms(limits.idle_timeout),
                "max_connections": limits.max_connections,
            },
        }
        if tcp_routes := self.tcp_routes():
            result["tcp_routes"] = tcp_routes
        # The version labels what the core runs: equal snapshots get equal versions.
        canonical = json.dumps({**result, "version": None}, sort_keys=True, separators=(",", ":"))
        result["version"] = hashlib.sha256(canonical.encode()).hexdigest()[:12]
        return result

    def routes(self, vs: VirtualService) -> list[snap.Route]:
        routes: list[snap.Route] = []
        for i, route in enumerate(vs.http):
            name = route.name or str(i)
            if route.delegate is None:
                routes.append(self.route(name, route, route.match, (vs, i)))
                continue
            # Istio merges the delegate's routes in place of this entry, each match
            # narrowed by this entry's.
            namespace = route.delegate.namespace or vs.namespace
            delegate = next(
                (
                    d
                    for d in self.config.virtual_services
                    if (d.namespace, d.name) == (namespace, route.delegate.name) and d.is_delegate
                ),
                None,
            )
            for j, inner in enumerate(delegate.http if delegate else ()):
                matches = merge_matches(route.match, inner.match)
                if matches is not None:
                    label = f"{name}/{route.delegate.name}/{inner.name or j}"
                    assert delegate is not None
                    routes.append(self.route(label, inner, matches, (delegate, j)))
        return routes

    def route(
        self,
        name: str,
        route: HTTPRoute,
        matches: Sequence[HTTPMatchRequest],
        owner: tuple[VirtualService, int] | None = None,
    ) -> snap.Route:
        limits = self.config.mirror_defaults
        forwards = bool(route.route)
        policies = self.policies(*owner) if owner is not None else []
        # Clusters are numbered as first named: destinations, then mirrors.
        destinations: list[snap.WeightedCluster] = [
            {
                "cluster": self.cluster(d.destination),
                "weight": weight,
                "request_headers": tr.header_ops(d.headers, "request"),
                "response_headers": tr.header_ops(d.headers, "response"),
            }
            for d, weight in zip(route.route, route.weights, strict=True)
        ]
        written = [
            (destination, rate, [own, *policies])
            for (destination, percent), own in (
                zip(route.mirror_policies, route.mirror_options, strict=True) if forwards else []
            )
            if (rate := per_million(percent)) > 0
        ]
        mirrors: list[snap.Mirror] = [
            {
                "cluster": self.cluster(destination),
                "per_million": rate,
                "max_in_flight": limits.max_in_flight,
                "timeout_ms": duration_ms(limits.timeout),
                "max_body_bytes": limits.max_body_bytes,
                "max_drain_bytes": limits.max_drain_bytes,
                "host_suffix": limits.host_suffix,
                **self.mirror_guards(levels),
            }
            for destination, rate, levels in written
        ]
        # A second primary is one more mirror, after the others, that the core sends a
        # copy to exactly when its mirror's copy is compared (`noise_for`).
        for i, (_, _, levels) in enumerate(written):
            options = next((x.compare for x in levels if x.compare is not None), None)
            compare = mirrors[i].get("compare")
            if compare is not None and options is not None and options.second_primary:
                mirrors.append(
                    {
                        **mirrors[i],
                        "cluster": self.cluster(options.second_primary),
                        "per_million": 1_000_000,
                        "compare": {**compare, "noise_for": i},
                    }
                )
        return {
            "name": name,
            "matches": [tr.request_match(m) for m in matches],
            "destinations": destinations,
            "redirect": tr.redirect(route.redirect),
            "direct_response": tr.direct_response(route.direct_response),
            "timeout_ms": duration_ms(route.timeout) if route.timeout is not None else None,
            "retries": tr.retries(route.retries) if forwards else None,
            "rewrite": tr.rewrite(route.rewrite),
            "fault": tr.fault(route.fault),
            "request_headers": tr.header_ops(route.headers, "request"),
            "response_headers": tr.header_ops(route.headers, "response"),
            # Istio mirrors only what a route forwards; an explicit 0% is no mirror at all.
            "mirrors": mirrors,
        }

    def tcp_routes(self) -> list[snap.TcpRoute]:
        """Every virtual service's `tcp` routes, in order (first match wins per connection)."""
        limits = self.config.mirror_defaults
        routes: list[snap.TcpRoute] = []
        for vs in self.config.virtual_services:
            for i, route in enumerate(vs.tcp):
                mirrors: list[snap.TcpMirror] = []
                # Written on the route or given by `tcpMirrors`: served the same way.
                found = self.config.tcp_mirror(vs, i)
                if found is not None and (rate := per_million(found[1])) > 0:
                    mirrors.append(
                        {
                            "cluster": self.cluster(found[0]),
                            "per_million": rate,
                            "buffer_bytes": max(1, limits.max_body_bytes),
                            "timeout_ms": duration_ms(limits.timeout),
                        }
                    )
                routes.append(
                    {
                        "virtual_service": vs.name,
                        "name": str(i),
                        "matches": [
                            {"port": m.port, "destination_subnets": list(m.destination_subnets)}
                            for m in route.match
                        ],
                        "destinations": [
                            {"cluster": self.cluster(d.destination), "weight": weight}
                            for d, weight in zip(route.route, route.weights, strict=True)
                        ],
                        "mirrors": mirrors,
                    }
                )
        return routes

    def policies(self, vs: VirtualService, index: int) -> list[MirrorPolicy]:
        """The `mirrorPolicies` for route ``index`` of ``vs``: its route's, then its own."""
        mine = [p for p in self.config.mirror_policies if p.selects(vs)]
        return [p for p in mine if p.route is not None and p.route_index(vs) == index] + [
            p for p in mine if p.route is None
        ]

    def mirror_guards(self, levels: Sequence[MirrorOptions]) -> _Guards:
        """A mirror's guards and copy-only header operations from ``levels`` (most specific
        first), then `mirrorDefaults`: each guard from the first level that sets it; header
        operations from every level, a more specific one winning for the same header."""
        defaults = self.config.mirror_defaults
        idempotent = next(
            (x.only_idempotent for x in levels if x.only_idempotent is not None), None
        )
        after = next(
            (x.after_primary_success for x in levels if x.after_primary_success is not None), None
        )
        ops = [defaults.headers, *(x.headers for x in reversed(levels))]
        compare = next((x.compare for x in levels if x.compare is not None), None)
        return {
            "compare": _compare(compare),
            "request_headers": _merged_ops([h.request for h in ops if h and h.request]),
            "only_idempotent": defaults.only_idempotent if idempotent is None else idempotent,
            "after_primary_success": (defaults.after_primary_success if after is None else after),
        }

    def cluster(self, dest: Destination) -> int:
        service = self.config.services.get(dest.host)
        subset = dest.subset
        weights: list[int] = []
        if service is not None and (service.endpoints or service.ports):
            endpoints, weights = _endpoints(service, dest)
        elif subset is not None:
            # Only `check` gets here: no endpoint carries this subset's labels yet.
            endpoints = []
        else:
            # No declared endpoints: like a ServiceEntry with DNS resolution.
            port = dest.port.number if dest.port is not None else _DNS_PORT
            endpoints = [f"{_bracket(dest.host)}:{port}"]
        policy = service.policy(subset) if service is not None else None
        cluster: snap.Cluster = {
            "host": dest.host,
            "subset": subset,
            "endpoints": endpoints,
            "weights": weights,
            "load_balancer": (policy.balancer if policy else None) or "round_robin",
            "max_requests": policy.max_requests if policy else None,
        }
        if policy and policy.outlier_detection:
            cluster["outlier_detection"] = policy.outlier_detection.resolved()
        key = json.dumps(cluster, sort_keys=True)
        if key not in self.cluster_ids:
            self.cluster_ids[key] = len(self.clusters)
            self.clusters.append(cluster)
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
        implicit = len(self.served)
        for i, vh in enumerate(self.virtual_hosts[implicit:]):
            if vh["domains"] == [host]:
                return implicit + i
        route = HTTPRoute.model_validate({"route": [{"destination": {"host": host}}]})
        self.virtual_hosts.append(
            {"name": host, "domains": [host], "routes": [self.route("0", route, [])]}
        )
        return len(self.virtual_hosts) - 1


class _Guards(TypedDict):
    compare: snap.Compare | None
    request_headers: snap.HeaderOps
    only_idempotent: bool
    after_primary_success: bool


def _compare(c: CompareOptions | None) -> snap.Compare | None:
    if c is None:
        return None
    return {
        "per_million": per_million(c.percentage.value),
        "max_body_bytes": c.max_body_bytes,
        "ignore_headers": [h.lower() for h in c.ignore_headers],
        "ignore_paths": list(c.ignore_paths),
        "redact_headers": [h.lower() for h in c.redact_headers],
        "redact_paths": list(c.redact_paths),
    }


def _merged_ops(levels: Sequence[HeaderOperations]) -> snap.HeaderOps:
    """Header operations of several levels (least specific first) as one: every removal;
    for `set` and `add`, the last level's value of a header."""
    remove: list[str] = []
    set_: dict[str, str] = {}
    add: dict[str, str] = {}
    for ops in levels:
        remove += [n.lower() for n in ops.remove if n.lower() not in remove]
        set_.update({k.lower(): v for k, v in ops.set.items()})
        add.update({k.lower(): v for k, v in ops.add.items()})
    return {
        "set": [{"name": k, "value": v} for k, v in set_.items()],
        "add": [{"name": k, "value": v} for k, v in add.items()],
        "remove": remove,
    }


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _endpoints(service: Service, dest: Destination) -> tuple[list[str], list[int]]:
    """A destination's endpoint authorities and (when not all equal) their weights."""
    subset = dest.subset
    chosen = service.select(subset) if subset is None or subset in service.subsets else []
    if service.ports:
        # The destination's port, or the service's only one (validation ensured one).
        port = service.port(dest.port.number if dest.port else None) or service.ports[0]
        default = port.target_port or port.number
        endpoints = [
            f"{_bracket(e.address)}:{e.ports.get(port.name or '') or default}" for e in chosen
        ]
    else:
        endpoints = [e.address for e in chosen]
    weights = [e.weight or 1 for e in chosen]
    return endpoints, (weights if len(set(weights)) > 1 else [])


# === describe ===


def describe(config: Config, *, listen: Sequence[str] | None = None) -> list[str]:
    """Readable lines saying what would run, for ``pymirror check`` and startup logs."""
    s = build_snapshot(config, listen=listen)
    lines = []
    hosts = [lst.host for lst in config.listeners]
    written = written_protocols(config, listen)
    for i, listener in enumerate(s["listeners"]):
        host = (hosts[0] if hosts else None) if listen else hosts[i]
        extra = f" (default host {host})" if host else ""
        if listener.get("protocol") == "tcp":
            extra = tcp_note(config, listener["address"], written[i])
        lines.append(f"listener {listener['address']}{extra}")
    if config.admin is not None:
        lines.append(f"admin {config.admin.address}")
    for vh in s["virtual_hosts"]:
        for route in vh["routes"]:
            lines.append(f"{vh['name']}/{route['name']}: {describe_route(s, route)}")
    for tcp in s.get("tcp_routes", []):
        lines.append(f"{tcp['virtual_service']}/tcp/{tcp['name']}: {describe_tcp_route(s, tcp)}")
    return lines


def written_protocols(config: Config, listen: Sequence[str] | None) -> list[str | None]:
    """The `protocol` written for each snapshot listener (None: taken from its port)."""
    if listen:
        return [config.listeners[0].protocol if config.listeners else None] * len(listen)
    return [lst.protocol for lst in config.listeners]


def tcp_note(config: Config, address: str, written: str | None) -> str:
    """How a tcp listener is labelled: ` (tcp)`, with the service port that made it tcp
    when it writes no `protocol`."""
    if written is not None:
        return " (tcp)"
    return f" (tcp: {port_origin(config, split_host_port(address)[1])})"


def describe_tcp_route(s: snap.Snapshot, route: snap.TcpRoute) -> str:
    """One line: conditions -> destinations; mirrors."""
    conditions = []
    for match in route.get("matches", []):
        parts = [f"port {match['port']}"] if match.get("port") else []
        if subnets := match.get("destination_subnets"):
            parts.append(f"to {', '.join(subnets)}")
        conditions.append(" ".join(parts) or "*")
    dests = route["destinations"]
    total = sum(d["weight"] for d in dests)
    answer = ", ".join(
        cluster_label(s, d["cluster"])
        + (f" {d['weight'] * 100 / total:.4g}%" if len(dests) > 1 else "")
        for d in dests
    )
    text = f"tcp {' | '.join(conditions) or '*'} -> {answer}"
    for m in route.get("mirrors", []):
        text += f"; mirror {m['per_million'] / 10_000:g}% -> {cluster_label(s, m['cluster'])}"
    return text


def cluster_label(s: snap.Snapshot, index: int) -> str:
    """`reviews v1 (127.0.0.1:9081)`: a cluster as `check` and the logs name it."""
    c = s["clusters"][index]
    name = f"{c['host']} {c['subset']}" if c.get("subset") else c["host"]
    return f"{name} ({', '.join(c['endpoints']) or 'no endpoint'})"


def describe_route(s: snap.Snapshot, route: snap.Route) -> str:
    """One line: matches -> what answers; timeout; mirrors."""
    dests = route.get("destinations", [])
    total = sum(d["weight"] for d in dests)
    if dests:
        answer = ", ".join(
            cluster_label(s, d["cluster"])
            + (f" {d['weight'] * 100 / total:.4g}%" if len(dests) > 1 else "")
            for d in dests
        )
    elif redirect := route.get("redirect"):
        target = (redirect.get("authority") or "") + (redirect.get("uri") or "")
        answer = f"redirect {redirect.get('code', snap.REDIRECT_CODE)} {target}"
    elif direct := route.get("direct_response"):
        answer = f"direct response {direct['status']}"
    else:
        answer = "nothing"
    text = f"{_describe_matches(route)} -> {answer.rstrip()}"
    if timeout_ms := route.get("timeout_ms"):
        text += f"; timeout {format_duration(timedelta(milliseconds=timeout_ms))}"
    for m in route.get("mirrors", []):
        text += f"; mirror {m['per_million'] / 10_000:g}% -> {cluster_label(s, m['cluster'])}"
        text += mirror_guards_text(m)
    return text


def mirror_guards_text(m: snap.Mirror) -> str:
    """` (only idempotent, after primary success, headers -authorization)`, or nothing."""
    parts = []
    if m.get("only_idempotent"):
        parts.append("only idempotent")
    if m.get("after_primary_success"):
        parts.append("after primary success")
    ops = m.get("request_headers") or {}
    changes = [f"-{n}" for n in ops.get("remove", [])]
    changes += [f"={h['name']}" for h in ops.get("set", [])]
    changes += [f"+{h['name']}" for h in ops.get("add", [])]
    if changes:
        parts.append("headers " + " ".join(changes))
    compare = m.get("compare")
    if compare and (parent := compare.get("noise_for")) is not None:
        parts.append(f"second primary beside mirror {parent + 1}, every compared request")
    elif compare:
        parts.append(f"compare {compare['per_million'] / 10_000:g}%")
    return f" ({', '.join(parts)})" if parts else ""


def _describe_matches(route: snap.Route) -> str:
    alternatives = []
    for m in route.get("matches", []):
        parts = []
        if method := m.get("method"):
            parts.append(_describe_string("method", method, bare=True))
        if uri := m.get("uri"):
            parts.append(_describe_string("uri", uri, bare=True))
        if scheme := m.get("scheme"):
            parts.append(_describe_string("scheme", scheme))
        if authority := m.get("authority"):
            parts.append(_describe_string("authority", authority))
        parts += [_describe_string(h["name"], h.get("value")) for h in m.get("headers", [])]
        parts += [
            f"!{_describe_string(h['name'], h.get('value'))}" for h in m.get("without_headers", [])
        ]
        parts += [
            f"?{_describe_string(q['name'], q.get('value'))}" for q in m.get("query_params", [])
        ]
        if m.get("port"):
            parts.append(f"port={m.get('port')}")
        alternatives.append(" ".join(parts) or "*")
    return " or ".join(alternatives) or "*"


def _describe_string(name: str, m: snap.StringMatch | None, *, bare: bool = False) -> str:
    if m is None:
        return name  # a presence test
    if "exact" in m:
        return m["exact"] if bare else f"{name}={m['exact']}"
    if "prefix" in m:
        return f"{m['prefix']}*" if bare else f"{name}={m['prefix']}*"
    return f"{name}~{m['regex']}"
