"""Virtual services' routes -> the Snapshot's routes: http routes (delegates merged in
place), their destinations and mirrors with each mirror's guards, and tcp routes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NotRequired, TypedDict

from .. import snapshot as snap
from ..config.istio import CompareOptions
from ..config.matches import HeaderOperations
from ..config.model import (
    Config,
    Destination,
    HTTPMatchRequest,
    HTTPRoute,
    MirrorOptions,
    MirrorPolicy,
    VirtualService,
)
from ..config.types import duration_ms
from . import route_parts as parts
from .clusters import Clusters
from .delegates import merge_matches
from .route_parts import per_million


class Routes:
    """Builds routes whose destinations and mirrors are numbered in ``clusters``."""

    def __init__(self, config: Config, clusters: Clusters) -> None:
        self.config = config
        self.clusters = clusters

    def http(self, vs: VirtualService) -> list[snap.Route]:
        """The http routes ``vs`` serves, in order."""
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
        cluster = self.clusters.id
        # Clusters are numbered as first named: destinations, then mirrors.
        destinations: list[snap.WeightedCluster] = [
            {
                "cluster": cluster(d.destination),
                "weight": weight,
                "request_headers": parts.header_ops(d.headers, "request"),
                "response_headers": parts.header_ops(d.headers, "response"),
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
                "cluster": cluster(destination),
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
                        "cluster": cluster(options.second_primary),
                        "per_million": 1_000_000,
                        "compare": {**compare, "noise_for": i},
                    }
                )
        return {
            "name": name,
            "matches": [parts.request_match(m) for m in matches],
            "destinations": destinations,
            "redirect": parts.redirect(route.redirect),
            "direct_response": parts.direct_response(route.direct_response),
            "timeout_ms": duration_ms(route.timeout) if route.timeout is not None else None,
            "retries": parts.retries(route.retries) if forwards else None,
            "rewrite": parts.rewrite(route.rewrite),
            "fault": parts.fault(route.fault),
            "request_headers": parts.header_ops(route.headers, "request"),
            "response_headers": parts.header_ops(route.headers, "response"),
            # Istio mirrors only what a route forwards; an explicit 0% is no mirror at all.
            "mirrors": mirrors,
        }

    def tcp(self) -> list[snap.TcpRoute]:
        """Every virtual service's `tcp` routes, in order (first match wins per connection)."""
        limits = self.config.mirror_defaults
        routes: list[snap.TcpRoute] = []

        def cluster(dest: Destination) -> int:
            return self.clusters.id(dest, http=False)  # bytes are spliced: no HTTP settings

        for vs in self.config.virtual_services:
            for i, route in enumerate(vs.tcp):
                mirrors: list[snap.TcpMirror] = []
                # Written on the route or given by `tcpMirrors`: served the same way.
                found = self.config.tcp_mirror(vs, i)
                if found is not None and (rate := per_million(found[1])) > 0:
                    mirrors.append(
                        {
                            "cluster": cluster(found[0]),
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
                            {"cluster": cluster(d.destination), "weight": weight}
                            for d, weight in zip(route.route, route.weights, strict=True)
                        ],
                        "mirrors": mirrors,
                    }
                )
        return routes

    def tls(self) -> list[snap.TcpRoute]:
        """Every virtual service's `tls` routes, in order (first match wins per connection,
        by its ClientHello's SNI); never mirrored."""
        routes: list[snap.TcpRoute] = []
        for vs in self.config.virtual_services:
            for i, route in enumerate(vs.tls):
                routes.append(
                    {
                        "virtual_service": vs.name,
                        "name": f"tls/{i}",
                        "matches": [
                            {
                                "port": m.port,
                                "destination_subnets": list(m.destination_subnets),
                                "sni_hosts": [h.lower() for h in m.sni_hosts],
                            }
                            for m in route.match
                        ],
                        "destinations": [
                            {"cluster": self.clusters.id(d.destination, http=False), "weight": w}
                            for d, w in zip(route.route, route.weights, strict=True)
                        ],
                        "mirrors": [],
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
        grpc_methods = next(
            (x.grpc_methods for x in levels if x.grpc_methods is not None),
            defaults.grpc_methods,
        )
        after = next(
            (x.after_primary_success for x in levels if x.after_primary_success is not None), None
        )
        ops = [defaults.headers, *(x.headers for x in reversed(levels))]
        compare = next((x.compare for x in levels if x.compare is not None), None)
        guards: _Guards = {
            "compare": _compare(compare),
            "request_headers": _merged_ops([h.request for h in ops if h and h.request]),
            "only_idempotent": defaults.only_idempotent if idempotent is None else idempotent,
            "after_primary_success": (defaults.after_primary_success if after is None else after),
        }
        if grpc_methods:
            guards["grpc_methods"] = list(grpc_methods)
        return guards


class _Guards(TypedDict):
    compare: snap.Compare | None
    request_headers: snap.HeaderOps
    only_idempotent: bool
    after_primary_success: bool
    grpc_methods: NotRequired[list[str]]


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
