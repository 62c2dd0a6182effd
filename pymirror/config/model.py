"""The typed, frozen configuration model.

`virtualServices` follows Istio's VirtualService API (networking.istio.io), field for
field (`pymirror.config.istio`); `services` says what Istio's ServiceEntry and
DestinationRule say; the rest is pymirror's own. Field names are Istio's camelCase; the
snake_case spelling is accepted too, as protobuf JSON does. Istio resources compile to
this same model (`pymirror.config.resources`).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, PrivateAttr, model_validator

from .. import defaults
from .actions import (
    HTTPDirectResponse,
    HTTPFaultInjection,
    HTTPRedirect,
    HTTPRetry,
    HTTPRewrite,
)
from .base import U32_MAX, GrpcMethod, HostSuffix, Labels, Name, _Model, problem
from .hosts import host_matches
from .istio import (
    Delegate,
    HTTPMirrorPolicy,
    HTTPRoute,
    HTTPRouteDestination,
    L4MatchAttributes,
    MirrorDestination,
    MirrorHeaders,
    MirrorOptions,
    TCPRoute,
    TLSRoute,
    VirtualService,
)
from .limits import Http2Limits, Limits
from .matches import Destination, Headers, HTTPMatchRequest, Percent, PortSelector, StringMatch
from .policy_layers import Layered
from .protocols import Family, decide, family, listen_port
from .tcp_mirrors import TcpMirrorPolicy, effective_mirror
from .tls import ClientTls, ListenerTls
from .traffic import TrafficPolicy
from .types import (
    BindAuthority,
    ByteSize,
    Duration,
    HostName,
    ListenAddress,
    check_authority,
    check_hostname,
    is_ip,
)

__all__ = [
    "Admin",
    "Config",
    "Delegate",
    "Destination",
    "Endpoint",
    "HTTPDirectResponse",
    "HTTPFaultInjection",
    "HTTPMatchRequest",
    "HTTPMirrorPolicy",
    "HTTPRedirect",
    "HTTPRetry",
    "HTTPRewrite",
    "HTTPRoute",
    "HTTPRouteDestination",
    "Headers",
    "Http2Limits",
    "L4MatchAttributes",
    "Limits",
    "Listener",
    "MirrorDefaults",
    "MirrorDestination",
    "MirrorHeaders",
    "MirrorOptions",
    "MirrorPolicy",
    "Percent",
    "PortSelector",
    "Service",
    "ServicePort",
    "StringMatch",
    "TCPRoute",
    "TLSRoute",
    "TcpMirrorPolicy",
    "TrafficPolicy",
    "Upstream",
    "VirtualService",
    "_Model",
    "host_matches",
]


def is_bare_host(address: str) -> bool:
    """An address without a port: a name or an IP address (IPv6 unbracketed)."""
    return is_ip(address) or ":" not in address


def _endpoint_address(value: str) -> str:
    # `host:port`, or a bare host whose port comes from the service's `ports`.
    return check_hostname(value) if is_bare_host(value) else check_authority(value)


EndpointAddress = Annotated[str, AfterValidator(_endpoint_address)]


class ServicePort(_Model):
    """Istio ServicePort: a port the service answers on."""

    number: int = Field(ge=1, le=65535)
    """The service port, which destinations select with `port.number`."""
    name: str | None = None
    """Its name, which endpoint `ports` refer to. Without `protocol`, a name that Istio
    reads as `GRPC`, `GRPC-WEB` or `HTTP2` (`grpc-api`, `grpc-web`, `http2`) makes requests
    to this port go upstream over HTTP/2."""
    protocol: str | None = None
    """Istio's protocol name (`HTTP`, `GRPC`, `TCP`, `REDIS`...). `HTTP2`, `GRPC` and
    `GRPC-WEB` (any case) make requests to this port go upstream over HTTP/2
    (`pymirror.config.upstreams`). A listener that does not write its `protocol` and
    listens on this port number is `tcp` when it is `TCP`, `MONGO`, `MYSQL` or `REDIS`;
    other values decide nothing for listeners."""
    target_port: int | None = Field(default=None, ge=1, le=65535)
    """The port endpoints listen on. Default: `number`."""


class Endpoint(_Model):
    """One instance of a service."""

    address: EndpointAddress
    """`host:port` to connect to; a bare host when the service declares `ports`. A host
    name is resolved by DNS at connect time."""
    labels: Labels = Field(default_factory=dict)
    """Labels that subsets select by, such as `{version: v1}`."""
    weight: int | None = Field(default=None, ge=0, le=U32_MAX)
    """Relative share of the service's requests. Default (and 0): 1."""
    ports: dict[Name, int] = Field(default_factory=dict)
    """This endpoint's port for a service port, by the port's name."""


class Service(_Model):
    """A service's endpoints and subsets (Istio's ServiceEntry + DestinationRule)."""

    ports: list[ServicePort] = Field(default_factory=list)
    """The service's ports (a ServiceEntry's). Empty: endpoints carry `host:port`."""
    endpoints: list[Endpoint] = Field(default_factory=list)
    """The service's instances. Empty: the service name is resolved by DNS."""
    subsets: dict[Name, Labels] = Field(default_factory=dict)
    """Named subsets: each selects the endpoints whose labels include all of its labels."""
    traffic_policy: TrafficPolicy | None = None
    """Load balancing and request limits (DestinationRule `trafficPolicy`)."""
    subset_policies: dict[Name, TrafficPolicy] = Field(default_factory=dict)
    """pymirror's spelling of a DestinationRule subset's `trafficPolicy`, by subset name;
    each part set replaces the service's."""

    # The resource this service was compiled from (`ServiceEntry default/reviews`), if any.
    _source: str | None = PrivateAttr(default=None)
    # The DestinationRule its subsets and policies come from (`DestinationRule
    # default/reviews`), if any.
    _rule_source: str | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _check(self) -> Service:
        numbers: dict[int, int] = {}
        for i, port in enumerate(self.ports):
            # A destination's `port.number` (and so its protocol) must name one port.
            if port.number in numbers:
                raise problem(f"port {port.number} is already defined", "ports", i, "number")
            numbers[port.number] = i
        names = {p.name for p in self.ports if p.name}
        for i, e in enumerate(self.endpoints):
            bare = is_bare_host(e.address)
            if self.ports and not bare:
                raise problem(
                    "with `ports`, an endpoint address is a bare host; its port comes from "
                    "`ports` (or the endpoint's own `ports`)",
                    "endpoints",
                    i,
                    "address",
                )
            if not self.ports and bare:
                raise problem(
                    f"write IPv6 addresses in brackets, as in `[::1]:8080` (got {e.address!r})"
                    if ":" in e.address
                    else f"expected `host:port`, such as `127.0.0.1:8080` (got {e.address!r})",
                    "endpoints",
                    i,
                    "address",
                )
            for name in e.ports:
                if name not in names:
                    raise problem(
                        f"no service port is named `{name}`", "endpoints", i, "ports", name
                    )
        for name in self.subset_policies:
            if name not in self.subsets:
                raise problem(f"no subset `{name}`", "subsetPolicies", name, at_key=True)
        return self

    def select(self, subset: str | None) -> list[Endpoint]:
        """The endpoints of a subset (all of them for ``None``)."""
        if subset is None:
            return list(self.endpoints)
        labels = self.subsets[subset].items()
        return [e for e in self.endpoints if labels <= e.labels.items()]

    def policy(self, subset: str | None, port: int | None = None) -> TrafficPolicy | None:
        """The traffic policy of a subset at service port ``port``: the service's, with the
        subset's on top, each with its `portLevelSettings` entry for the port."""
        return self.layered_policy(subset, port).policy

    def tls_settings(self) -> list[ClientTls]:
        """Every TLS setting its policies write (service, subsets, their ports)."""
        policies = [self.traffic_policy, *self.subset_policies.values()]
        found: list[ClientTls | None] = []
        for policy in policies:
            if policy is not None:
                found += [policy.tls, *(e.tls for e in policy.port_level_settings)]
        return [tls for tls in found if tls is not None]

    def layered_policy(self, subset: str | None, port: int | None) -> Layered:
        """`policy`, with where each of its parts was written (paths below the service)."""
        own = self.subset_policies.get(subset) if subset is not None else None
        return (
            Layered()
            .over(self.traffic_policy, ("trafficPolicy",), port)
            .over(own, ("subsetPolicies", subset or ""), port)
        )

    def port(self, number: int | None) -> ServicePort | None:
        """The service port a destination selects (its only one when unnamed); None when
        the service declares no ports, or ``number`` is not one, or is needed."""
        if number is None:
            return self.ports[0] if len(self.ports) == 1 else None
        return next((p for p in self.ports if p.number == number), None)


#: What a listener serves: HTTP, spliced TCP, or TLS passed through by SNI.
ListenerProtocol = Literal["http", "tcp", "tls"]


class ListenerGateway(_Model):
    """Which Gateway (and server) made a listener."""

    name: str
    """`namespace/name` of the Gateway."""
    bind: bool = False
    """Whether the server wrote its address (`bind`); else the listener takes the IP of
    the configured listeners or `--listen`, keeping its port."""
    redirect_port: int | None = None
    """`httpsRedirect`: the gateway's HTTPS port, where clients are sent (else 443)."""


class Listener(_Model):
    """An address to accept connections on: HTTP/1.1, or TCP spliced through."""

    address: ListenAddress
    """`ip:port` to listen on; port 0 picks a free port."""
    host: HostName | None = None
    """The host that a request whose Host matches no virtual service is routed as.
    Default: such requests get 404. Not on a `tcp` listener."""
    protocol: ListenerProtocol | None = None
    """`http`: requests are routed by the virtual services' `http` routes. `tcp`: each
    connection goes where the first matching `tcp` route (of any virtual service) sends
    it, and its bytes are spliced through unread. `tls`: TLS passed through unterminated,
    each connection going where the first `tls` route whose `sniHosts` match its
    ClientHello's server name sends it. Default: as Istio's sidecar, from the
    service ports with the listener's port number: `tcp` when they declare `TCP`, `MONGO`,
    `MYSQL` or `REDIS`, else `http` (see `Config.listener_protocol`)."""
    tls: ListenerTls | None = None
    """Terminate TLS with this certificate: HTTPS, HTTP/2 chosen by ALPN."""
    gateway: ListenerGateway | None = None
    """The Istio Gateway this listener is a server of (written by a Gateway resource):
    it serves the virtual services bound to that gateway, and only those."""
    https_redirect: bool = False
    """Answer every request 301 with its `https://` URL (a Gateway's `httpsRedirect`)."""

    @model_validator(mode="after")
    def _check(self) -> Listener:
        if self.https_redirect and (self.protocol == "tcp" or self.tls is not None):
            raise problem(
                "`httpsRedirect` is for a plain `http` listener", "httpsRedirect", at_key=True
            )
        if self.protocol == "tcp" and self.tls is not None:
            raise problem(
                "TLS on a `protocol: tcp` listener is not served yet; terminate on an "
                "`http` listener",
                "tls",
                at_key=True,
            )
        if self.protocol == "tls" and self.tls is not None:
            raise problem(
                "a `protocol: tls` listener passes TLS through unterminated: it takes no "
                "certificate (terminate on an `http` listener instead)",
                "tls",
                at_key=True,
            )
        if self.protocol in ("tcp", "tls") and self.host is not None:
            raise problem(
                f"a `protocol: {self.protocol}` listener has no requests to route by host; "
                "remove `host`",
                "host",
                at_key=True,
            )
        return self


class Admin(_Model):
    """The admin endpoint (metrics, health, config)."""

    address: BindAuthority
    """`host:port` to serve it on; port 0 picks a free port."""


class Upstream(_Model):
    """pymirror extension: settings for connections to destinations."""

    connect_timeout: Duration = timedelta(milliseconds=defaults.CONNECT_TIMEOUT_MS)
    """Deadline for opening a connection to an endpoint. Default: 1s."""
    pool_idle_timeout: Duration = timedelta(milliseconds=defaults.POOL_IDLE_TIMEOUT_MS)
    """How long a kept-alive upstream connection (primary or mirror) may stay idle in the
    pool; each worker closes those past it within a second, so a burst's connections do not
    stay open. Default: 60s."""
    retry_buffer_size: ByteSize = Field(
        default=defaults.RETRY_BUFFER_BYTES, ge=0, le=defaults.RETRY_BUFFER_BYTES_LIMIT
    )
    """A gRPC call's request body is read whole up to this before its first try, so that
    a route's retries can send it again; a larger one goes on streamed, not retried. 0:
    gRPC calls are not retried. Default: 64KiB; at most 16MiB."""


class MirrorDefaults(_Model):
    """pymirror extension: the bounds that keep every mirror from hurting the primary."""

    max_in_flight: int = Field(default=defaults.MIRROR_MAX_IN_FLIGHT, ge=1, le=U32_MAX)
    """Copies in flight at once per mirror; past it a copy is dropped. Default: 1024."""
    timeout: Duration = timedelta(milliseconds=defaults.MIRROR_TIMEOUT_MS)
    """Deadline for a copy's whole exchange; past it the copy is abandoned. Default: 10s."""
    max_body_bytes: ByteSize = Field(default=defaults.MIRROR_MAX_BODY_BYTES, ge=0)
    """Request body bytes a copy may hold queued while the mirror reads slower than the
    primary (a number or `4MiB`, `512KiB`); past it the copy is cut and counted as
    dropped (`body_buffer`), never sent short. Default: 4 MiB."""
    max_drain_bytes: ByteSize = Field(default=defaults.MIRROR_MAX_DRAIN_BYTES, ge=0)
    """Body bytes of a mirror's answer read and dropped (a number or `256KiB`): answers
    within it keep their keep-alive connection; past it reading stops, the mirror
    connection is closed and the copy is counted as `cut`, so that a mirror answering
    huge or endless bodies costs each copy a bounded amount. A compared copy reads up to
    its `compare.maxBodyBytes` instead. Default: 256 KiB."""
    host_suffix: HostSuffix = defaults.MIRROR_HOST_SUFFIX
    """Appended to the copy's Host name, before any port. A Host that cannot take it and
    stay valid (an IP address, a bracketed literal, a name that is not a DNS name) is
    replaced on the copy by the mirror destination's own name with the suffix.
    Default: `-shadow`."""
    only_idempotent: bool = False
    """Copy only idempotent methods (GET, HEAD, OPTIONS, TRACE, PUT, DELETE), for every
    mirror that does not say otherwise. Default: every method."""
    grpc_methods: list[GrpcMethod] | None = None
    """With `onlyIdempotent`: the gRPC methods safe to copy all the same (every gRPC call
    is a POST), as `/package.Service/Method` or a whole service, `/package.Service/`, for
    every mirror that does not say otherwise. Default: none."""
    after_primary_success: bool = False
    """Send each copy only once the primary answered 2xx or 3xx, for every mirror that
    does not say otherwise. Default: at once."""
    headers: MirrorHeaders | None = None
    """Header operations on every copy (such as `request: {remove: [authorization,
    cookie]}`); a mirror's own operations are added to these. Default: none."""


class MirrorPolicy(MirrorOptions):
    """pymirror extension: guards and copy-only header operations for the mirrors of one
    virtual service's routes, where the routes themselves keep Istio's fields (a MirrorProxy
    resource's `mirrorPolicies`)."""

    virtual_service: str = Field(min_length=1)
    """The virtual service whose mirrors this applies to: `namespace/name`, or `name` (in a
    MirrorProxy: the MirrorProxy's namespace; in the routes format: any namespace)."""
    route: str | None = Field(default=None, min_length=1)
    """The http route (its `name`, or its index when unnamed) whose mirrors this applies to.
    Default: every route of the virtual service."""

    def selects(self, vs: VirtualService) -> bool:
        return vs.is_named(self.virtual_service)

    def route_index(self, vs: VirtualService) -> int | None:
        """The index in `vs.http` of the route this names (None: not found, or no route)."""
        if self.route is None:
            return None
        return next(
            (i for i, r in enumerate(vs.http) if (r.name or str(i)) == self.route),
            None,
        )


class Config(_Model):
    """A whole pymirror configuration."""

    listeners: list[Listener] = Field(default_factory=list)
    """Where the proxy accepts connections. At least one (here or from `--listen`)."""
    admin: Admin | None = None
    """The admin endpoint. Default: none."""
    limits: Limits = Field(default_factory=Limits)
    """pymirror extension: bounds on client connections."""
    services: dict[HostName, Service] = Field(default_factory=dict)
    """Services by host name. A destination host not declared here is resolved by DNS."""
    virtual_services: list[VirtualService] = Field(default_factory=list)
    """Istio VirtualServices: which requests go where, and what is mirrored."""
    upstream: Upstream = Field(default_factory=Upstream)
    """pymirror extension: upstream connection settings."""
    mirror_defaults: MirrorDefaults = Field(default_factory=MirrorDefaults)
    """pymirror extension: bounds applied to every mirror."""
    mirror_policies: list[MirrorPolicy] = Field(default_factory=list)
    """pymirror extension: guards and copy-only header operations for the mirrors of
    named virtual services and routes (what a MirrorProxy says for Istio resources)."""
    tcp_mirrors: list[TcpMirrorPolicy] = Field(default_factory=list)
    """pymirror extension: mirrors for the tcp routes of named virtual services (what a
    MirrorProxy says for Istio resources, whose TCPRoute has no mirror)."""

    # Where each value was written (a `pymirror.config.merge.Origin`), for error messages.
    _origin: Any = PrivateAttr(default=None)
    # What was reported without stopping the load (`Problem`s of severity warning).
    _warnings: Any = PrivateAttr(default=())
    # For each virtual service compiled from a resource: `VirtualService ns/name`.
    _sources: Any = PrivateAttr(default=())
    # The reference check its load ran (`pymirror.config.references.References`), which
    # resolution reuses; None for a Config built in code.
    _references: Any = PrivateAttr(default=None)

    @property
    def warnings(self) -> list[Any]:
        """The warnings found while loading (`Problem`s), for logs and `pymirror check`."""
        return list(self._warnings)

    def port_protocols(self, number: int) -> list[tuple[str, int, Family]]:
        """The service ports numbered ``number`` whose protocol decides a listener's: each
        as (service name, index in its `ports`, `tcp` or `http`)."""
        return [
            (name, i, found)
            for name, service in self.services.items()
            for i, port in enumerate(service.ports)
            if port.number == number and (found := family(port.protocol))
        ]

    def listener_protocol(
        self, address: str, written: ListenerProtocol | None = None
    ) -> ListenerProtocol:
        """The protocol a listener on ``address`` serves: ``written`` (its `protocol`) when
        given; else `tcp` when the service ports with its port number declare a TCP-family
        protocol and none an HTTP-family one (disagreeing ports are a validation error);
        else `http`. A listener on port 0 is `http` unless it writes `tcp`."""
        if written is not None:
            return written
        port = listen_port(address)
        return decide(f for _, _, f in self.port_protocols(port)) if port else "http"

    def tcp_mirror_policies(
        self, vs: VirtualService, index: int
    ) -> list[tuple[int, TcpMirrorPolicy]]:
        """The `tcpMirrors` entries (with their index) that select tcp route ``index`` of
        ``vs``."""
        return [
            (i, p)
            for i, p in enumerate(self.tcp_mirrors)
            if vs.is_named(p.virtual_service) and index in p.route_indexes(vs)
        ]

    def tcp_mirror(self, vs: VirtualService, index: int) -> tuple[Destination, float] | None:
        """The mirror of tcp route ``index`` of ``vs`` and its percentage, whether the route
        writes it or a `tcpMirrors` entry gives it; None without one."""
        policies = [p for _, p in self.tcp_mirror_policies(vs, index)]
        return effective_mirror(vs.tcp[index], policies)

    def source(self, index: int) -> str | None:
        """The resource virtual service ``index`` came from (`VirtualService ns/name`), or
        None for the routes format."""
        sources: tuple[str | None, ...] = tuple(self._sources)
        return sources[index] if index < len(sources) else None
