"""Warnings about what is accepted but served differently from Istio, or not yet, and
Istio's own warnings on rules that can never match. None of them stops pymirror; each is
reported by `check` and logged by `run`, so nothing written is dropped silently."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

from pydantic import BaseModel
from pydantic.alias_generators import to_camel

from .binding import MESH, gateway_names, named_gateways
from .errors import Path, Problem
from .istio import HTTPRoute, L4MatchAttributes, TCPRoute, TLSRoute, VirtualService
from .matches import IGNORED_HEADER_KEYS
from .model import Config
from .resources import Resources
from .traffic import PortTrafficPolicy, TrafficPolicy
from .validate import Issue

#: retryOn conditions Istio accepts that the core does not act on (left out of the snapshot).
RETRY_NOT_SERVED = frozenset(
    {"retriable-headers", "envoy-ratelimited", "reset-before-request", "http3-post-connect-failure"}
)
_MESH_ONLY = "does not apply outside a mesh"


def _warn(path: Path, message: str, code: str, *, at_key: bool = True) -> Issue:
    return Issue(path, message, at_key, "warning", code)


def config_warnings(config: Config) -> list[Issue]:
    """Warnings on what the model holds (both the routes format and resources)."""
    issues: list[Issue] = []
    protocols = {config.listener_protocol(lst.address, lst.protocol) for lst in config.listeners}
    tcp_listener, tls_listener = "tcp" in protocols, "tls" in protocols
    defined = gateway_names(config)
    for i, vs in enumerate(config.virtual_services):
        issues += _gateways(("virtualServices", i), vs, defined)
        issues += _virtual_service(("virtualServices", i), vs, tcp_listener, tls_listener)
        issues += unreachable(("virtualServices", i), vs)
    for name, service in config.services.items():
        here: Path = ("services", name)
        if service.traffic_policy is not None:
            issues += _policy((*here, "trafficPolicy"), service.traffic_policy)
        for subset, policy in service.subset_policies.items():
            issues += _policy((*here, "subsetPolicies", subset), policy)
    return issues


def _gateways(here: Path, vs: VirtualService, defined: frozenset[str]) -> Iterator[Issue]:
    """A VirtualService's `gateways` that no Gateway here defines."""
    named = named_gateways(vs)
    if named and not defined:
        yield _warn(
            (*here, "gateways"),
            "no Gateway is defined here: pymirror serves this virtual service on every listener",
            "unknown-gateway",
        )
        return
    for j, name in enumerate(vs.gateways):
        if (
            name != MESH
            and named_gateways(vs.model_copy(update={"gateways": [name]}))[0] not in defined
        ):
            yield _warn(
                (*here, "gateways", j),
                f"gateway `{name}` is not defined here: no listener serves this virtual "
                "service for it",
                "unknown-gateway",
                at_key=False,
            )


def _virtual_service(
    here: Path, vs: VirtualService, tcp_listener: bool, tls_listener: bool
) -> Iterator[Issue]:
    if vs.tls and not tls_listener:
        yield _warn(
            (*here, "tls"),
            "`tls` routes serve connections on passthrough listeners (`protocol: tls`, or a "
            "Gateway server with `mode: PASSTHROUGH`), and no listener is one: these routes "
            "take no connection",
            "not-served",
        )
    if vs.tcp and not tcp_listener:
        yield _warn(
            (*here, "tcp"),
            "`tcp` routes serve connections on listeners with `protocol: tcp` (written, or "
            "from a service port declared TCP), and no listener has it: these routes take no "
            "connection",
            "not-served",
        )
    l4: list[tuple[str, int, int, L4MatchAttributes]] = [
        *(("tcp", j, k, m) for j, r in enumerate(vs.tcp) for k, m in enumerate(r.match)),
        *(("tls", j, k, m) for j, r in enumerate(vs.tls) for k, m in enumerate(r.match)),
    ]
    for kind, j, k, match in l4:
        for field in ("source_labels", "gateways", "source_namespace"):
            if getattr(match, field):
                yield _warn(
                    (*here, kind, j, "match", k, to_camel(field)),
                    f"`{to_camel(field)}` {_MESH_ONLY}: this condition is ignored",
                    "not-applicable",
                )
    for j, route in enumerate(vs.http):
        yield from _route((*here, "http", j), route)


def _route(at: Path, route: HTTPRoute) -> Iterator[Issue]:
    if route.cors_policy is not None:
        yield _warn(
            (*at, "corsPolicy"),
            "`corsPolicy` is not supported: CORS requests, preflights included, reach the "
            "destination unchanged",
            "not-served",
        )
    if route.mirror_percent is not None:
        yield _warn(
            (*at, "mirrorPercent"),
            "`mirrorPercent` is deprecated (by Istio); use `mirrorPercentage: {value: ...}`",
            "deprecated",
        )
    if (route.mirror or route.mirrors) and not route.route:
        answer = "redirect" if route.redirect else "directResponse"
        yield _warn(
            (*at, "mirror" if route.mirror else "mirrors"),
            f"a mirror copies what a `route` forwards; with `{answer}` no copy is sent (as in "
            "Istio)",
            "not-served",
        )
    for k, match in enumerate(route.match):
        here = (*at, "match", k)
        for field in ("source_labels", "gateways", "source_namespace"):
            if getattr(match, field):
                yield _warn(
                    (*here, to_camel(field)),
                    f"`{to_camel(field)}` {_MESH_ONLY}: this condition is ignored",
                    "not-applicable",
                )
        if match.stat_prefix is not None:
            yield _warn((*here, "statPrefix"), "`statPrefix` is not served: ignored", "not-served")
        for name in match.headers:
            if name in IGNORED_HEADER_KEYS:
                yield _warn(
                    (*here, "headers", name),
                    f"header key `{name}` is ignored, as Istio does; use the match's `{name}`",
                    "ignored",
                )
    if route.retries is not None:
        retries = (*at, "retries")
        for field in ("retry_remote_localities", "backoff"):
            if getattr(route.retries, field) is not None:
                yield _warn(
                    (*retries, to_camel(field)),
                    f"`{to_camel(field)}` is not served yet",
                    "not-served",
                )
        for condition in route.retries.conditions:
            if condition in RETRY_NOT_SERVED:
                yield _warn(
                    (*retries, "retryOn"),
                    f"retryOn condition `{condition}` is not served yet: ignored",
                    "not-served",
                    at_key=False,
                )
    if route.fault and route.fault.delay and route.fault.delay.percent is not None:
        yield _warn(
            (*at, "fault", "delay", "percent"),
            "`percent` is deprecated (by Istio); use `percentage: {value: ...}`",
            "deprecated",
        )


#: The connection pool settings served: request limits, the upstream protocol.
_HTTP_SERVED = (
    "http2_max_requests",
    "max_requests_per_connection",
    "h2_upgrade_policy",
    "use_client_protocol",
    "max_concurrent_streams",
)


def _policy(at: Path, policy: TrafficPolicy) -> Iterator[Issue]:
    yield from _not_served(
        at,
        policy,
        ("load_balancer", "connection_pool", "outlier_detection", "tls", "port_level_settings"),
    )
    yield from _parts(at, policy)
    for i, entry in enumerate(policy.port_level_settings):
        here = (*at, "portLevelSettings", i)
        served = ("port", "load_balancer", "connection_pool", "outlier_detection", "tls")
        yield from _not_served(here, entry, served)
        yield from _parts(here, entry)


def _parts(at: Path, policy: TrafficPolicy | PortTrafficPolicy) -> Iterator[Issue]:
    """What is not served inside a policy's (or port entry's) served parts."""
    if policy.outlier_detection is not None:
        yield from _not_served(
            (*at, "outlierDetection"),
            policy.outlier_detection,
            (
                "consecutive_5xx_errors",
                "consecutive_gateway_errors",
                "consecutive_errors",
                "interval",
                "base_ejection_time",
                "max_ejection_percent",
            ),
        )
    lb = policy.load_balancer
    if lb is not None:
        yield from _not_served((*at, "loadBalancer"), lb, ("simple",))
        if lb.simple == "PASSTHROUGH":
            yield _warn(
                (*at, "loadBalancer", "simple"),
                "PASSTHROUGH is not served: endpoints are picked round robin",
                "not-served",
                at_key=False,
            )
    pool = policy.connection_pool
    if pool is not None and pool.tcp is not None:
        yield from _not_served((*at, "connectionPool", "tcp"), pool.tcp, ("max_connections",))
    if pool is not None and pool.http is not None:
        http = pool.http
        yield from _not_served((*at, "connectionPool", "http"), http, _HTTP_SERVED)
        if http.use_client_protocol and http.h2_upgrade_policy in ("UPGRADE", "DO_NOT_UPGRADE"):
            yield _warn(
                (*at, "connectionPool", "http", "h2UpgradePolicy"),
                "`h2UpgradePolicy` has no effect beside `useClientProtocol: true`: each request "
                "goes upstream in the client's own protocol (as in Istio)",
                "ignored",
            )


def _not_served(at: Path, model: BaseModel, served: Sequence[str]) -> Iterator[Issue]:
    for field in sorted(model.model_fields_set):
        value = getattr(model, field)
        if field not in served and value not in (None, [], {}):
            name = to_camel(field)
            yield _warn((*at, name), f"`{name}` is accepted but not served yet", "not-served")


# === rules that can never match (Istio's analyzeUnreachable*Rules) ===


def unreachable(here: Path, vs: VirtualService) -> list[Issue]:
    """Istio's warnings: a rule after a rule without match is unreachable; a match equal to
    an earlier one is ineffective, and a rule whose matches all are is unreachable."""
    issues: list[Issue] = []
    for kind in ("http", "tcp", "tls"):
        routes: Sequence[HTTPRoute | TCPRoute | TLSRoute] = getattr(vs, kind)
        seen: dict[str, int] = {}
        catch_all = False
        for j, route in enumerate(routes):
            at = (*here, kind, j)
            name = _rule_name(route, j)
            if not route.match:
                if catch_all:
                    issues.append(
                        _warn(
                            at,
                            f"rule {name} is unreachable: only the last rule can have no match",
                            "unreachable-rule",
                            at_key=False,
                        )
                    )
                catch_all = True
                continue
            duplicates = 0
            for k, match in enumerate(route.match):
                key = _match_key(match)
                if key in seen:
                    duplicates += 1
                    earlier = _rule_name(routes[seen[key]], seen[key])
                    issues.append(
                        _warn(
                            (*at, "match", k),
                            f"this match is ineffective: rule {earlier} has the same one",
                            "ineffective-match",
                            at_key=False,
                        )
                    )
                else:
                    seen[key] = j
            if duplicates == len(route.match):
                issues.append(
                    _warn(
                        at,
                        f"rule {name} is unreachable: earlier rules have all its matches",
                        "unreachable-rule",
                        at_key=False,
                    )
                )
    return issues


def _rule_name(route: HTTPRoute | TCPRoute | TLSRoute, index: int) -> str:
    name = getattr(route, "name", None)
    return f"`{name}`" if name else str(index)


def _match_key(match: Any) -> str:
    """A match as comparable text, without its `name` (Istio compares them so)."""
    if isinstance(match, BaseModel):
        data = match.model_dump(mode="json", exclude={"name"}, exclude_defaults=True)
    else:
        data = {k: v for k, v in match.items() if k != "name"}
    return json.dumps(data, sort_keys=True)


# === resources ===


def resource_warnings(resources: Resources) -> list[Problem]:
    """Warnings on resource fields that have no place in the model."""
    found: list[Problem] = []
    for r, rule in resources.rules:
        if rule.workload_selector is not None:
            found.append(
                r.problem(
                    ("spec", "workloadSelector"),
                    f"`workloadSelector` {_MESH_ONLY}: the rule applies to every use of its host",
                    at_key=True,
                    severity="warning",
                    code="not-applicable",
                )
            )
    for r, entry in resources.entries:
        if entry.workload_selector is not None:
            found.append(
                r.problem(
                    ("spec", "workloadSelector"),
                    "`workloadSelector` is not served: pymirror reads no Kubernetes workloads, "
                    "give `endpoints`",
                    at_key=True,
                    severity="warning",
                    code="not-served",
                )
            )
    return found
