"""Istio's TrafficPolicy (a DestinationRule's, or a subset's): what pymirror serves of it
(load balancing, request limits, the upstream protocol, outlier detection, TLS, per port)
and what it accepts and reports as not served yet. The model only: `policy_layers` merges
a service's policies, `pymirror.resolve.clusters` turns them into the core's settings."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from .base import I32_MAX, U32_MAX, _Model, problem
from .matches import PortSelector
from .tls import ClientTls
from .types import Duration

#: The parts of a policy that a `portLevelSettings` entry replaces, whole.
PORT_PARTS = ("load_balancer", "connection_pool", "outlier_detection", "tls")


class LoadBalancer(_Model):
    """Istio LoadBalancerSettings."""

    simple: (
        Literal[
            "UNSPECIFIED", "ROUND_ROBIN", "LEAST_REQUEST", "LEAST_CONN", "RANDOM", "PASSTHROUGH"
        ]
        | None
    ) = None
    """How an endpoint is picked. Default: round robin (Istio's default is LEAST_REQUEST)."""
    consistent_hash: dict[str, Any] | None = None
    """Accepted, not served yet (reported)."""
    locality_lb_setting: dict[str, Any] | None = None
    """Accepted, not served yet (reported)."""
    warmup_duration_secs: Duration | None = None
    """Accepted, not served yet (reported)."""
    warmup: dict[str, Any] | None = None
    """Accepted, not served yet (reported)."""


class TCPSettings(_Model):
    """Istio ConnectionPoolSettings.TCPSettings."""

    max_connections: int | None = Field(default=None, ge=0, le=U32_MAX)
    """Bounds the requests in flight to the destination (pymirror's connections carry one
    request each). 0 or unset: unbounded."""
    connect_timeout: Duration | None = None
    """Accepted, not served yet (reported): see `upstream.connectTimeout`."""
    tcp_keepalive: dict[str, Any] | None = None
    """Accepted, not served yet (reported)."""
    max_connection_duration: Duration | None = None
    """Accepted, not served yet (reported)."""
    idle_timeout: Duration | None = None
    """Accepted, not served yet (reported)."""


class HTTPSettings(_Model):
    """Istio ConnectionPoolSettings.HTTPSettings."""

    http2_max_requests: int | None = Field(default=None, ge=0, le=U32_MAX)
    """Requests in flight to the destination at once; past it, 503. 0 or unset: unbounded."""
    http1_max_pending_requests: int | None = Field(default=None, ge=0)
    """Accepted, not served yet (reported)."""
    max_requests_per_connection: int | None = Field(default=None, ge=0, le=I32_MAX)
    """Requests over one upstream connection's lifetime, then it is retired (1: no
    keep-alive). 0 or unset: unbounded."""
    max_retries: int | None = Field(default=None, ge=0)
    """Accepted, not served yet (reported)."""
    idle_timeout: Duration | None = None
    """Accepted, not served yet (reported)."""
    h2_upgrade_policy: Literal["DEFAULT", "DO_NOT_UPGRADE", "UPGRADE"] | None = None
    """`UPGRADE`: requests go upstream over HTTP/2 even when the service port does not say
    HTTP/2 (`HTTP2`, `GRPC`, `GRPC-WEB`). `DEFAULT` (the mesh's default) and
    `DO_NOT_UPGRADE`: no upgrade."""
    use_client_protocol: bool | None = None
    """`true`: each request goes upstream in the client's own protocol (HTTP/2 for an
    HTTP/2 request, else HTTP/1.1), whatever the port or `h2UpgradePolicy` say."""
    max_concurrent_streams: int | None = Field(default=None, ge=0, le=I32_MAX)
    """Streams at once per HTTP/2 upstream connection (the peer's SETTINGS may lower it);
    past it a request opens another connection. 0 or unset: 100."""


class ConnectionPool(_Model):
    """Istio ConnectionPoolSettings."""

    tcp: TCPSettings | None = None
    """TCP-level limits."""
    http: HTTPSettings | None = None
    """HTTP-level limits."""


class OutlierDetection(_Model):
    """Istio OutlierDetection: passive health checking. An endpoint that fails this many
    times in a row leaves the pick for `baseEjectionTime` times its ejections so far.
    Connect failures, resets and timeouts count as gateway errors, as Envoy counts them."""

    consecutive_5xx_errors: int | None = Field(
        default=None, ge=0, le=U32_MAX, alias="consecutive5xxErrors"
    )
    """5xx answers in a row that eject an endpoint; 0 turns this count off. Default: 5
    (none when only the deprecated `consecutiveErrors` is given)."""
    consecutive_gateway_errors: int | None = Field(default=None, ge=0, le=U32_MAX)
    """502, 503 and 504 answers in a row that eject an endpoint. Default: 0 (off)."""
    consecutive_errors: int | None = Field(default=None, ge=0, le=U32_MAX)
    """Deprecated by Istio; read as `consecutiveGatewayErrors`, as Istio does."""
    interval: Duration | None = None
    """Each interval an endpoint stays in service forgives one past ejection. Default: 10s."""
    base_ejection_time: Duration | None = None
    """An ejection lasts this long times the endpoint's ejections so far (at most 300s).
    Default: 30s."""
    max_ejection_percent: int | None = Field(default=None, ge=0, le=100)
    """At most this share of a destination's endpoints is ejected at once. Default (and
    0): 10."""
    min_health_percent: int | None = Field(default=None, ge=0, le=100)
    """Accepted, not served yet (reported)."""
    split_external_local_origin_errors: bool | None = None
    """Accepted, not served yet (reported)."""
    consecutive_local_origin_failures: int | None = Field(default=None, ge=0)
    """Accepted, not served yet (reported)."""


class PortTrafficPolicy(_Model):
    """Istio TrafficPolicy.PortTrafficPolicy: the policy for one service port. Where it
    applies, its four parts replace the policy's whole: a part it leaves out is the
    default, not the policy's (Istio's rule, see `pymirror.config.policy_layers`)."""

    port: PortSelector
    """The service port it applies to: a destination's `port.number`, or the service's
    only port."""
    load_balancer: LoadBalancer | None = None
    """How endpoints are picked."""
    connection_pool: ConnectionPool | None = None
    """Limits on requests in flight, and the upstream protocol."""
    outlier_detection: OutlierDetection | None = None
    """Passive health checking."""
    tls: ClientTls | None = None
    """TLS to the port's endpoints."""

    @model_validator(mode="after")
    def _check(self) -> PortTrafficPolicy:
        # Istio's rule: an entry with none would reset the port's policy to defaults.
        if all(getattr(self, p) is None for p in PORT_PARTS):
            raise problem(
                "a port's traffic policy needs `loadBalancer`, `connectionPool`, "
                "`outlierDetection` or `tls`"
            )
        return self


class TrafficPolicy(_Model):
    """Istio TrafficPolicy."""

    load_balancer: LoadBalancer | None = None
    """How endpoints are picked."""
    connection_pool: ConnectionPool | None = None
    """Limits on requests in flight, and the upstream protocol."""
    outlier_detection: OutlierDetection | None = None
    """Passive health checking: endpoints that keep failing leave the pick for a while."""
    tls: ClientTls | None = None
    """TLS to the destination's endpoints (SIMPLE or MUTUAL); default: plaintext."""
    port_level_settings: list[PortTrafficPolicy] = Field(default_factory=list)
    """Policies for single service ports; the first entry for a destination's port applies."""
    tunnel: dict[str, Any] | None = None
    """Accepted, not served yet (reported)."""
    proxy_protocol: dict[str, Any] | None = None
    """Accepted, not served yet (reported)."""

    def under(self, subset: TrafficPolicy | None) -> TrafficPolicy:
        """This policy with a subset's on top: each part the subset sets replaces the
        rule's (Istio's MergeTrafficPolicy)."""
        if subset is None:
            return self
        return self.model_copy(update={k: getattr(subset, k) for k in subset.model_fields_set})

    def port_entry(self, number: int | None) -> tuple[int, PortTrafficPolicy] | None:
        """The first `portLevelSettings` entry for service port ``number``, with its index
        (Istio takes the first)."""
        return next(
            ((i, e) for i, e in enumerate(self.port_level_settings) if e.port.number == number),
            None,
        )

    @property
    def max_requests(self) -> int | None:
        """The tightest of `tcp.maxConnections` and `http.http2MaxRequests` given (0: none)."""
        pool = self.connection_pool
        limits = [
            limit
            for limit in (
                pool.tcp.max_connections if pool and pool.tcp else None,
                pool.http.http2_max_requests if pool and pool.http else None,
            )
            if limit
        ]
        return min(limits) if limits else None
