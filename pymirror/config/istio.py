"""Istio's VirtualService (networking.istio.io), field for field, with Istio's validation.

The same models read the routes format's `virtualServices` entries and the `spec` of
VirtualService resources. Fields pymirror accepts without serving (mesh-only conditions,
`corsPolicy`, `tls`) are kept as written so `pymirror check` and `run` report them
(see `pymirror.config.findings`); none is dropped silently.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Any

from pydantic import AfterValidator, Field, model_validator
from pydantic.alias_generators import to_camel

from .. import defaults
from .actions import (
    HTTPDirectResponse,
    HTTPFaultInjection,
    HTTPRedirect,
    HTTPRetry,
    HTTPRewrite,
)
from .base import U32_MAX, GrpcMethod, Name, _Model, is_dns_label, problem
from .hosts import hosts_overlap
from .matches import Destination, HeaderOperations, Headers, HTTPMatchRequest, Percent
from .types import ByteSize, Duration, HostPattern


def relative_weights(weights: list[int | None]) -> list[int]:
    """A route's destination weights as Istio reads them: a lone destination takes all,
    an unset weight among several is 0."""
    return [100] if len(weights) == 1 else [w or 0 for w in weights]


def check_weights(weights: list[int]) -> None:
    """Istio's rule for a route's destinations (HTTP and TCP alike): relative weights, so
    only all-zero (with several destinations) and an overflowing sum are errors."""
    if len(weights) > 1 and sum(weights) == 0:
        raise problem(
            "the destinations' weights add up to 0; give each its share, "
            "such as `weight: 80` and `weight: 20`",
            "route",
        )
    if sum(weights) > U32_MAX:
        raise problem(f"the weights add up to more than {U32_MAX}", "route")


class HTTPRouteDestination(_Model):
    """Istio HTTPRouteDestination: a primary destination and its share of requests."""

    destination: Destination
    """Where matching requests are forwarded."""
    weight: int | None = Field(default=None, ge=0, le=2**31 - 1)
    """Relative share of requests among the route's destinations. A lone destination gets
    all requests; with several, an unset weight counts as 0."""
    headers: Headers | None = None
    """Header operations when this destination is picked, after the route's."""


#: The pymirror extension fields of a mirror, as written (camelCase, then snake_case).
MIRROR_EXTENSIONS = (
    "onlyIdempotent",
    "grpcMethods",
    "afterPrimarySuccess",
    "headers",
    "compare",
)


class MirrorHeaders(_Model):
    """pymirror extension: header operations on the copy alone (the primary keeps its
    headers). A copy's response is dropped, so there is no `response` part."""

    request: HeaderOperations | None = None
    """Applied to the copy after the route's and the destination's operations and after
    the Host suffix, in the order remove, set, add."""

    @model_validator(mode="before")
    @classmethod
    def _no_response(cls, data: Any) -> Any:
        if isinstance(data, dict) and "response" in data:
            raise problem(
                "a copy's response is dropped, so a mirror has only `request` operations",
                "response",
                at_key=True,
            )
        return data

    @model_validator(mode="after")
    def _keeps_host(self) -> MirrorHeaders:
        for i, name in enumerate(self.request.remove if self.request else ()):
            if name.lower() == "host":
                raise problem(
                    "a copy needs a Host; change it with `set` or `mirrorDefaults.hostSuffix`",
                    "request",
                    "remove",
                    i,
                )
        return self


class CompareOptions(_Model):
    """pymirror extension: compare a share of a mirror's answers with the primary's
    (status, headers, body, latency), off the request path. See `pymirror report`."""

    percentage: Percent = Field(default_factory=lambda: Percent(value=100.0))
    """Share of the mirror's copies compared, apart from the mirror's own percentage
    (`mirrorPercentage: 10` and `compare: {percentage: {value: 1}}` compare 0.1% of
    requests). Default: 100%."""
    max_body_bytes: ByteSize = Field(
        default=defaults.COMPARE_MAX_BODY_BYTES, ge=0, le=defaults.COMPARE_MAX_BODY_BYTES_LIMIT
    )
    """Body bytes kept of each answer, at most 16 MiB. Past it, the primary's answer is
    compared by length and hash; the mirror's is read no further (its connection is
    closed), and the pair is marked truncated: only the kept prefixes are compared.
    Default: 64 KiB."""
    ignore_headers: list[str] = Field(default_factory=list)
    """Response headers not compared, on top of the default list (`date`, `server`,
    `x-request-id`, `set-cookie`, ...). Case-insensitive."""
    ignore_paths: list[str] = Field(default_factory=list)
    """JSON fields not compared, as paths such as `$.updatedAt` or `$.items[*].etag`."""
    redact_headers: list[str] = Field(default_factory=list)
    """Headers whose values are never kept in mismatch samples (`authorization`, `cookie`
    and `set-cookie` always are)."""
    redact_paths: list[str] = Field(default_factory=list)
    """JSON fields whose values are never kept in mismatch samples, such as `$.email`."""
    second_primary: Destination | None = None
    """Noise filtering in Diffy's manner: another instance of the primary (a subset such
    as `v1-candidate`, running the primary's version). Each compared request is also
    copied there and compared with the primary's answer; a field that differs between
    the two primaries as often as between primary and mirror is noise for that endpoint
    (`noise_only`), not a regression. Default: none, every difference is reported."""


class MirrorOptions(_Model):
    """pymirror extension: guards and header operations of one mirror. Unset fields come
    from a MirrorProxy's `mirrorPolicies`, then from `mirrorDefaults`."""

    only_idempotent: bool | None = None
    """Copy only GET, HEAD, OPTIONS, TRACE, PUT and DELETE requests. Default: every method."""
    grpc_methods: list[GrpcMethod] | None = None
    """With `onlyIdempotent`: gRPC methods safe to copy all the same (every gRPC call is a
    POST): `/package.Service/Method`, or `/package.Service/` for all of a service's."""
    after_primary_success: bool | None = None
    """Send the copy only once the primary answered 2xx or 3xx (its body waits in the
    bounded copy buffer). Default: at once."""
    headers: MirrorHeaders | None = None
    """Header operations on the copy alone, such as removing `authorization` and `cookie`."""
    compare: CompareOptions | None = None
    """Compare a share of the copies' answers with the primary's. Default: not compared."""

    @property
    def options(self) -> MirrorOptions:
        """Only the extension fields (a `mirror` also carries its destination's)."""
        return MirrorOptions(
            only_idempotent=self.only_idempotent,
            grpc_methods=self.grpc_methods,
            after_primary_success=self.after_primary_success,
            headers=self.headers,
            compare=self.compare,
        )


class MirrorDestination(Destination, MirrorOptions):
    """What `mirror` holds: Istio's Destination, plus pymirror's mirror extension fields."""


class HTTPMirrorPolicy(MirrorOptions):
    """Istio HTTPMirrorPolicy: one entry of `mirrors` (plus pymirror's extension fields)."""

    destination: Destination
    """Where copies go; their responses are dropped."""
    percentage: Percent | None = None
    """Share of requests copied. Default: 100%; 0 sends none."""


class Delegate(_Model):
    """Istio Delegate: the VirtualService whose http routes serve this entry."""

    name: Name
    """The delegate VirtualService's name."""
    namespace: str | None = None
    """Its namespace. Default: this VirtualService's."""


class HTTPRoute(_Model):
    """Istio HTTPRoute: conditions, what answers (route, redirect, direct response), mirrors."""

    name: str | None = None
    """The route's name (a metrics label). Default: its index in `http`."""
    match: list[HTTPMatchRequest] = Field(default_factory=list)
    """Conditions, any of which selects this route (OR). Default: every request."""
    route: list[HTTPRouteDestination] = Field(default_factory=list)
    """Primary destinations; the request goes to one of them, by weight."""
    redirect: HTTPRedirect | None = None
    """Answer with a redirect instead."""
    direct_response: HTTPDirectResponse | None = None
    """Answer with a fixed response instead."""
    delegate: Delegate | None = None
    """Serve this entry with another VirtualService's http routes."""
    rewrite: HTTPRewrite | None = None
    """Path and Host rewrites before forwarding."""
    timeout: Duration | None = None
    """Deadline for the primary's response headers (`10s`, `500ms`). Default: none."""
    retries: HTTPRetry | None = None
    """Retries of the primary. Default: Istio's (2 attempts on connection failures)."""
    fault: HTTPFaultInjection | None = None
    """Delays and aborts injected into a share of requests."""
    mirror: MirrorDestination | None = None
    """Where copies of the requests go; responses are dropped. pymirror extension fields
    (`onlyIdempotent`, `afterPrimarySuccess`, `headers`) may sit beside `host`."""
    mirror_percentage: Percent | None = None
    """Share of requests copied to `mirror`. Default: 100%; 0 sends none."""
    mirror_percent: int | None = Field(default=None, ge=0, le=100)
    """Deprecated Istio field: `mirrorPercentage` as a whole number."""
    mirrors: list[HTTPMirrorPolicy] = Field(default_factory=list)
    """Several mirrors, each sampling requests on its own. Not with `mirror`."""
    cors_policy: dict[str, Any] | None = None
    """Accepted, not supported (reported): preflight requests reach the destination."""
    headers: Headers | None = None
    """Header operations on the request and the response."""

    @model_validator(mode="after")
    def _check(self) -> HTTPRoute:
        self._check_action()
        if self.mirror is not None and self.mirrors:
            raise problem("set `mirror` or `mirrors`, not both", "mirrors", at_key=True)
        if self.mirror_percentage is not None and self.mirror_percent is not None:
            raise problem(
                "set `mirrorPercentage` or the deprecated `mirrorPercent`, not both",
                "mirrorPercent",
                at_key=True,
            )
        if self.mirror is None:
            for field in ("mirror_percentage", "mirror_percent"):
                if getattr(self, field) is not None:
                    alias = to_camel(field)
                    hint = "each `mirrors` entry's `percentage`" if self.mirrors else "`mirror`"
                    raise problem(
                        f"`{alias}` without `mirror` has no effect; use {hint}", alias, at_key=True
                    )
        check_weights(self.weights)
        if self.rewrite and self.rewrite.authority and self.headers and self.headers.authority():
            op, name = self.headers.authority() or ("", "")
            raise problem(
                "the Host is set twice: by `rewrite.authority` and here; keep one",
                "headers",
                "request",
                op,
                name,
                at_key=True,
            )
        return self

    def _check_action(self) -> None:
        """Istio's rules on what answers: a route, a redirect or a direct response."""
        given = [
            name
            for name, value in (
                ("route", self.route),
                ("redirect", self.redirect),
                ("directResponse", self.direct_response),
            )
            if value
        ]
        if self.delegate is not None:
            if given:
                raise problem(
                    f"an entry with `delegate` is answered by the delegate; remove `{given[0]}`",
                    given[0],
                    at_key=True,
                )
            return
        if not given:
            raise problem(
                "an http entry needs `route`, `redirect` or `directResponse`"
                + (
                    "; a mirror only copies what a `route` serves"
                    if self.mirrors or self.mirror
                    else ""
                )
            )
        if len(given) > 1:
            raise problem(f"set `{given[0]}` or `{given[1]}`, not both", given[1], at_key=True)
        if not self.route:
            for field in ("fault", "rewrite"):
                if getattr(self, field) is not None:
                    raise problem(
                        f"`{field}` applies to a `route`, not to `{given[0]}`", field, at_key=True
                    )

    @property
    def weights(self) -> list[int]:
        """The primary destinations' weights, as Istio reads them."""
        return relative_weights([d.weight for d in self.route])

    @property
    def mirror_policies(self) -> list[tuple[Destination, float]]:
        """Every mirror with the percentage of requests it gets, whichever way written."""
        if self.mirror is not None:
            if self.mirror_percentage is not None:
                return [(self.mirror, self.mirror_percentage.value)]
            if self.mirror_percent is not None:
                return [(self.mirror, float(self.mirror_percent))]
            return [(self.mirror, 100.0)]
        return [
            (m.destination, m.percentage.value if m.percentage else 100.0) for m in self.mirrors
        ]

    @property
    def mirror_options(self) -> list[MirrorOptions]:
        """The extension fields of each mirror, in the order of `mirror_policies`."""
        if self.mirror is not None:
            return [self.mirror.options]
        return [m.options for m in self.mirrors]

    def destinations(self) -> list[tuple[tuple[str | int, ...], Destination]]:
        """Every destination named here, primaries and mirrors, with its path below the route."""
        found: list[tuple[tuple[str | int, ...], Destination]] = [
            (("route", i, "destination"), d.destination) for i, d in enumerate(self.route)
        ]
        if self.mirror is not None:
            found.append((("mirror",), self.mirror))
        found += [
            (("mirrors", i, "destination"), m.destination) for i, m in enumerate(self.mirrors)
        ]
        owners: list[tuple[tuple[str | int, ...], MirrorOptions]] = [
            (("mirror",), self.mirror) if self.mirror is not None else ((), MirrorOptions()),
            *((("mirrors", i), m) for i, m in enumerate(self.mirrors)),
        ]
        found += [
            ((*at, "compare", "secondPrimary"), m.compare.second_primary)
            for at, m in owners
            if m.compare is not None and m.compare.second_primary is not None
        ]
        return found


class RouteDestination(_Model):
    """Istio RouteDestination (of a TCP or TLS route)."""

    destination: Destination
    """Where connections go."""
    weight: int | None = Field(default=None, ge=0, le=2**31 - 1)
    """Relative share of connections."""


def _subnet(value: str) -> str:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ValueError(
            f"expected an IP address or CIDR, such as `10.0.0.0/8` or `::1` (got {value!r})"
        ) from None
    return value


Subnet = Annotated[str, AfterValidator(_subnet)]


class L4MatchAttributes(_Model):
    """Istio L4MatchAttributes: conditions on a TCP connection."""

    destination_subnets: list[Subnet] = Field(default_factory=list)
    """The address the connection arrived at (the listener's) is in one of these (IP
    addresses or CIDRs). Default: any."""
    port: int | None = Field(default=None, ge=1, le=65535)
    """The port of the listener the connection arrived on. Default: any."""
    source_labels: dict[Name, str] = Field(default_factory=dict)
    """Accepted, not applicable outside a mesh (reported; the condition is ignored)."""
    gateways: list[str] = Field(default_factory=list)
    """Accepted, not applicable outside a mesh (reported; the condition is ignored)."""
    source_namespace: str | None = None
    """Accepted, not applicable outside a mesh (reported; the condition is ignored)."""


class TCPRoute(_Model):
    """Istio TCPRoute: connections that match go to one destination, by weight, for their
    whole life. `mirror` and `mirrorPercentage` are pymirror extensions (which Istio
    refuses: a MirrorProxy's `tcpMirrors` keeps a VirtualService resource Istio's)."""

    match: list[L4MatchAttributes] = Field(default_factory=list)
    """Conditions, any of which selects this route (OR). Default: every connection."""
    route: list[RouteDestination] = Field(min_length=1)
    """Destinations; each connection goes to one of them, by weight."""
    mirror: Destination | None = None
    """pymirror extension: the client's bytes of sampled connections are also sent to a
    connection to this destination; what it answers is discarded. A mirror that falls
    behind (`mirrorDefaults.maxBodyBytes` queued) or fails is cut; the client is never
    held back."""
    mirror_percentage: Percent | None = None
    """pymirror extension: share of connections mirrored. Default: 100%."""

    @model_validator(mode="after")
    def _check(self) -> TCPRoute:
        if self.mirror_percentage is not None and self.mirror is None:
            raise problem(
                "`mirrorPercentage` without `mirror` has no effect", "mirrorPercentage", at_key=True
            )
        check_weights(self.weights)
        return self

    @property
    def weights(self) -> list[int]:
        """The destinations' weights, as Istio reads them."""
        return relative_weights([d.weight for d in self.route])

    @property
    def mirror_rate(self) -> float:
        """The percentage of connections mirrored (0 without a mirror)."""
        if self.mirror is None:
            return 0.0
        return self.mirror_percentage.value if self.mirror_percentage is not None else 100.0


class TLSMatchAttributes(L4MatchAttributes):
    """Istio TLSMatchAttributes: an L4 match and the server names the ClientHello asks for."""

    sni_hosts: list[HostPattern] = Field(min_length=1)
    """SNI names (`api.example.com`, `*.example.com`, `*`), any of which selects the route."""


class TLSRoute(_Model):
    """Istio TLSRoute: on a passthrough (`protocol: tls`) listener, a connection whose
    ClientHello names one of `sniHosts` goes, unterminated, to one destination by weight."""

    match: list[TLSMatchAttributes] = Field(min_length=1)
    """Conditions, any of which selects this route (OR)."""
    route: list[RouteDestination] = Field(min_length=1)
    """Destinations; each connection goes to one of them, by weight."""
    mirror: Any = None
    """Refused: see the error it gives."""
    mirror_percentage: Any = None
    """Refused, with `mirror`."""

    @model_validator(mode="after")
    def _check(self) -> TLSRoute:
        for field in ("mirror", "mirror_percentage"):
            if getattr(self, field) is not None:
                raise problem(
                    "a `tls` route passes TLS through unread: a copy could not complete a "
                    "handshake meant for another server, so it cannot be mirrored; terminate "
                    "TLS on a listener and mirror an `http` route instead",
                    to_camel(field),
                    at_key=True,
                )
        check_weights(self.weights)
        return self

    @property
    def weights(self) -> list[int]:
        """The destinations' weights, as Istio reads them."""
        return relative_weights([d.weight for d in self.route])


class VirtualService(_Model):
    """Istio VirtualService, with `metadata.name` and `metadata.namespace` written as `name`
    and `namespace`."""

    name: Name
    """Unique name (a metrics label)."""
    namespace: str | None = None
    """The Kubernetes namespace: qualifies short host names as Istio does (`reviews` in
    `default` also serves `reviews.default.svc.cluster.local`). Default: none."""
    hosts: list[HostPattern] = Field(default_factory=list)
    """Request hosts served (`reviews`, `*.example.com`, `*`), matched against the
    request's Host without port, case-insensitively. None: a delegate, served only through
    another VirtualService's `delegate`."""
    gateways: list[str] = Field(default_factory=list)
    """The Istio Gateways (`name` or `namespace/name`; `mesh` for the other listeners)
    whose listeners serve it. Default: the listeners that are no gateway's."""
    http: list[HTTPRoute] = Field(default_factory=list)
    """Routes, tried in order; the first whose match holds serves the request."""
    tcp: list[TCPRoute] = Field(default_factory=list)
    """TCP routes, tried in order for each connection on a `protocol: tcp` listener."""
    tls: list[TLSRoute] = Field(default_factory=list)
    """TLS routes, tried in order for each connection on a passthrough (`protocol: tls`)
    listener, by its ClientHello's SNI."""
    export_to: list[str] = Field(default_factory=list)
    """Namespaces this VirtualService is visible to (decides which ServiceEntries its
    destinations see, as in Istio)."""

    @model_validator(mode="after")
    def _check(self) -> VirtualService:
        if not (self.http or self.tcp or self.tls):
            raise problem("a virtual service needs `http`, `tcp` or `tls` routes")
        if self.namespace is not None and not is_dns_label(self.namespace):
            raise problem(f"not a valid namespace name: {self.namespace!r}", "namespace")
        if not self.hosts:
            for field in ("gateways", "tcp", "tls"):
                if getattr(self, field):
                    raise problem(
                        f"a delegate (a virtual service without `hosts`) cannot have `{field}`",
                        field,
                        at_key=True,
                    )
            for i, route in enumerate(self.http):
                if route.delegate is not None:
                    raise problem(
                        "a delegate cannot delegate further", "http", i, "delegate", at_key=True
                    )
        for i, a in enumerate(self.hosts):
            for j in range(i):
                if hosts_overlap(a, self.hosts[j]):
                    raise problem(
                        f"duplicate hosts in one virtual service: `{self.hosts[j]}` and `{a}`",
                        "hosts",
                        i,
                    )
        return self

    @property
    def is_delegate(self) -> bool:
        return not self.hosts

    def is_named(self, ref: str) -> bool:
        """Whether ``ref`` names this virtual service: `namespace/name`, or `name` in any
        namespace (a MirrorProxy qualifies its bare names first)."""
        namespace, _, name = ref.rpartition("/")
        if not namespace:
            return self.name == name
        return (self.namespace, self.name) == (namespace, name)

    @property
    def serves_http(self) -> bool:
        """Whether it is a virtual host of its own: it has hosts and HTTP routes."""
        return bool(self.hosts and self.http)
