"""The Snapshot: the plain data the control plane hands to the native core.

These types mirror ``native/src/snapshot/`` field for field (serde's snake_case names);
the core rejects unknown fields, so the two must change together. ``NotRequired`` marks
fields the core defaults when absent (to the values in `pymirror.defaults`);
`pymirror.resolve` always writes them, except those it writes only where a config sets
them (a listener's `protocol`, `tcp_routes`, a cluster's `protocol` and connection
limits, `limits.http2`), so that a config without them keeps its snapshot and version.
"""

from __future__ import annotations

from typing import NotRequired, TypedDict

#: The schema version the core understands (`snapshot::SCHEMA`). Bump both on any
#: incompatible change.
SCHEMA = 1

#: Share of requests sampled is expressed out of this (Envoy's FractionalPercent MILLION).
PER_MILLION = 1_000_000


class StringMatch(TypedDict, total=False):
    """Exactly one key: ``{"exact": ...}``, ``{"prefix": ...}`` or ``{"regex": ...}``
    (RE2 syntax, full match)."""

    exact: str
    prefix: str
    regex: str


class HeaderMatch(TypedDict):
    """A header (or query parameter) condition."""

    name: str
    """Lower-case for headers."""
    value: NotRequired[StringMatch | None]
    """None: the header only has to be present."""


class RequestMatch(TypedDict):
    uri: NotRequired[StringMatch | None]
    scheme: NotRequired[StringMatch | None]
    method: NotRequired[StringMatch | None]
    authority: NotRequired[StringMatch | None]
    headers: NotRequired[list[HeaderMatch]]
    without_headers: NotRequired[list[HeaderMatch]]
    query_params: NotRequired[list[HeaderMatch]]
    port: NotRequired[int | None]
    ignore_uri_case: NotRequired[bool]


class HeaderPair(TypedDict):
    name: str
    value: str


class HeaderOps(TypedDict):
    """Applied in the order remove, set, add."""

    set: NotRequired[list[HeaderPair]]
    add: NotRequired[list[HeaderPair]]
    remove: NotRequired[list[str]]


class WeightedCluster(TypedDict):
    cluster: int
    """Index into `Snapshot.clusters`."""
    weight: int
    request_headers: NotRequired[HeaderOps]
    response_headers: NotRequired[HeaderOps]


class Redirect(TypedDict):
    uri: NotRequired[str | None]
    authority: NotRequired[str | None]
    port: NotRequired[int | None]
    scheme: NotRequired[str | None]
    code: NotRequired[int]


class DirectResponse(TypedDict):
    status: int
    body: NotRequired[list[int]]
    """The body's bytes."""


class RetryPolicy(TypedDict):
    attempts: int
    per_try_timeout_ms: NotRequired[int | None]
    retry_on: NotRequired[list[str]]


class RegexRewrite(TypedDict):
    pattern: str
    substitution: str


class Rewrite(TypedDict):
    uri: NotRequired[str | None]
    authority: NotRequired[str | None]
    uri_regex: NotRequired[RegexRewrite | None]


class FaultDelay(TypedDict):
    fixed_delay_ms: int
    per_million: int


class FaultAbort(TypedDict):
    status: int
    per_million: int
    grpc_status: NotRequired[int]
    """Istio's `grpcStatus`, as its number: answered as a gRPC failure (HTTP 200)."""


class Fault(TypedDict):
    delay: NotRequired[FaultDelay | None]
    abort: NotRequired[FaultAbort | None]


class Compare(TypedDict):
    """Which copies are compared with the primary (pymirror extension)."""

    per_million: int
    """Share of the mirror's copies compared, out of 1,000,000."""
    max_body_bytes: NotRequired[int]
    # Read by the comparator in Python (`pymirror.compare`); the core carries them.
    ignore_headers: NotRequired[list[str]]
    ignore_paths: NotRequired[list[str]]
    redact_headers: NotRequired[list[str]]
    redact_paths: NotRequired[list[str]]
    noise_for: NotRequired[int | None]
    """On a noise copy (to a second primary instance): the index of the mirror, in the
    same route, whose compared requests it also receives."""


class Mirror(TypedDict):
    cluster: int
    """Index into `Snapshot.clusters`."""
    per_million: int
    """Share of requests copied, out of 1,000,000."""
    max_in_flight: NotRequired[int]
    timeout_ms: NotRequired[int]
    max_body_bytes: NotRequired[int]
    max_drain_bytes: NotRequired[int]
    """Body bytes of the mirror's answer read and dropped; past it the copy is `cut`."""
    host_suffix: NotRequired[str]
    request_headers: NotRequired[HeaderOps]
    """Header operations on the copy alone."""
    only_idempotent: NotRequired[bool]
    grpc_methods: NotRequired[list[str]]
    """With `only_idempotent`: gRPC methods (`/pkg.Service/Method`) or services
    (`/pkg.Service/`) copied all the same."""
    after_primary_success: NotRequired[bool]
    compare: NotRequired[Compare | None]


class Route(TypedDict):
    name: str
    matches: NotRequired[list[RequestMatch]]
    """OR across entries, AND within one; empty matches every request."""
    destinations: NotRequired[list[WeightedCluster]]
    redirect: NotRequired[Redirect | None]
    direct_response: NotRequired[DirectResponse | None]
    timeout_ms: NotRequired[int | None]
    retries: NotRequired[RetryPolicy | None]
    rewrite: NotRequired[Rewrite | None]
    fault: NotRequired[Fault | None]
    request_headers: NotRequired[HeaderOps]
    response_headers: NotRequired[HeaderOps]
    mirrors: NotRequired[list[Mirror]]


class VirtualHost(TypedDict):
    name: str
    domains: list[str]
    """`reviews`, `*.example.com` or `*`."""
    routes: list[Route]


class Listener(TypedDict):
    address: str
    """`ip:port`; port 0 picks a free port."""
    default_virtual_host: NotRequired[int | None]
    """Index into `Snapshot.virtual_hosts` for requests whose Host matches none."""
    protocol: NotRequired[str]
    """`http` (default), `tcp` (connections routed by `Snapshot.tcp_routes`) or `tls`
    (passed through, routed by `Snapshot.tls_routes` on their SNI)."""
    tls: NotRequired[ListenerTls]
    """TLS termination: the certificate and key, as PEM text."""
    virtual_hosts: NotRequired[list[int]]
    """The virtual hosts it serves (indexes); absent: all of them. Written when Istio
    Gateways bind virtual services to listeners."""


class ListenerTls(TypedDict):
    certificates: list[TlsCertificate]
    """The first is the default; the others are chosen by SNI."""
    min_protocol_version: str
    """`1.2` or `1.3`."""
    client_ca_pem: NotRequired[str]
    """MUTUAL: the CAs clients' certificates must chain to."""
    client_ca_file: NotRequired[str]
    cipher_suites: NotRequired[list[str]]
    """TLS 1.2 suites by IANA name, in order (TLS 1.3's always offered)."""


class TlsCertificate(TypedDict):
    certificate_pem: str
    private_key_pem: str
    certificate_file: str
    """Names for error messages."""
    private_key_file: str
    sni_hosts: list[str]


class TcpMatch(TypedDict):
    """Istio L4MatchAttributes: the parts judged outside a mesh."""

    port: NotRequired[int | None]
    """The listener port the connection arrived on."""
    destination_subnets: NotRequired[list[str]]
    """CIDRs or addresses; the listener's address must be in one. Empty: any."""
    sni_hosts: NotRequired[list[str]]
    """`tls_routes` only: server names the ClientHello's SNI must match. Empty: any."""


class TcpDestination(TypedDict):
    cluster: int
    """Index into `Snapshot.clusters`."""
    weight: int


class TcpMirror(TypedDict):
    cluster: int
    """Index into `Snapshot.clusters`."""
    per_million: int
    """Share of connections mirrored, out of 1,000,000."""
    buffer_bytes: NotRequired[int]
    """Bytes queued for the mirror at most; past it the mirror connection is cut."""
    timeout_ms: NotRequired[int]
    """Time the mirror has to take the rest once the client's side has ended."""


class TcpRoute(TypedDict):
    virtual_service: str
    name: str
    """The tcp entry's index (a metrics label)."""
    matches: NotRequired[list[TcpMatch]]
    """OR across entries; empty matches every connection."""
    destinations: list[TcpDestination]
    mirrors: NotRequired[list[TcpMirror]]


class OutlierDetection(TypedDict):
    """Istio's outlierDetection: an endpoint failing N times in a row leaves the pick for
    `base_ejection_time_ms` times its ejections so far. Connect failures, resets and
    timeouts count as gateway errors (and so as 5xx)."""

    consecutive_5xx: NotRequired[int]
    """5xx answers in a row that eject; 0: not by this count. Default 5."""
    consecutive_gateway_errors: NotRequired[int]
    """502/503/504 answers in a row that eject; 0 (default): not by this count."""
    interval_ms: NotRequired[int]
    """Each interval an endpoint stays in service forgives one past ejection."""
    base_ejection_time_ms: NotRequired[int]
    max_ejection_percent: NotRequired[int]
    """At most this share of the cluster is ejected at once (0-100). Default 10."""


class Cluster(TypedDict):
    host: str
    subset: NotRequired[str | None]
    endpoints: list[str]
    """`host:port` authorities; names are resolved by DNS at connect time."""
    weights: NotRequired[list[int]]
    """Relative endpoint weights, one per endpoint; empty: all equal."""
    load_balancer: NotRequired[str]
    """`round_robin` (default), `least_request` or `random`."""
    max_requests: NotRequired[int | None]
    """Requests in flight to the cluster at once; past it, 503."""
    outlier_detection: NotRequired[OutlierDetection | None]
    """Passive health checking; None: endpoints are never ejected."""
    protocol: NotRequired[str]
    """How requests go upstream: `http1` (default), `http2`, or `client` (the client's
    own: HTTP/2 for an HTTP/2 request, else HTTP/1.1)."""
    max_requests_per_connection: NotRequired[int | None]
    """Requests over one upstream connection's lifetime, then it is retired; None
    (default): no bound."""
    max_concurrent_streams: NotRequired[int | None]
    """Streams at once per HTTP/2 upstream connection (the peer's SETTINGS may lower it);
    None: the core's default, 100."""
    tls: NotRequired[UpstreamTls]
    """TLS to the endpoints; absent: plaintext."""


class UpstreamTls(TypedDict, total=False):
    """TLS origination (DestinationRule `tls`). PEM text, with the files' names for
    error messages."""

    client_certificate_pem: str
    client_certificate_file: str
    private_key_pem: str
    private_key_file: str
    ca_pem: str
    """The CAs the server must chain to; absent: the system's."""
    ca_file: str
    crl_pem: str
    crl_file: str
    sni: str
    """Sent and verified; absent: the request's Host (primaries) or the destination
    host (copies, tcp)."""
    subject_alt_names: list[str]
    insecure_skip_verify: bool


class UpstreamSettings(TypedDict):
    connect_timeout_ms: NotRequired[int]
    pool_idle_timeout_ms: NotRequired[int]
    pool_max_idle_per_endpoint: NotRequired[int]
    retry_buffer_bytes: NotRequired[int]
    """A gRPC request body read whole before its first try, for retries. 0: none."""


class Http2Limits(TypedDict, total=False):
    """Bounds on each HTTP/2 client connection. Written only when configured."""

    max_concurrent_streams: int
    """Streams open at once. Default 100."""
    initial_stream_window_bytes: int
    """Bytes a client may send on one stream before the proxy reads them. Default 256 KiB."""
    initial_connection_window_bytes: int
    """The same for all streams of a connection together. Default 1 MiB."""
    max_header_list_bytes: int
    """A request's decoded header list. Default 64 KiB."""
    max_pending_accept_reset_streams: int
    """Streams opened and reset before accepted (rapid reset, CVE-2023-44487); past it,
    GOAWAY. Default 20."""
    max_local_error_reset_streams: int
    """Streams reset for the client's errors (MadeYouReset, CVE-2025-8671); past it,
    GOAWAY. Default 1024."""


class Limits(TypedDict):
    """Bounds on client connections, applied to connections accepted after a reload."""

    max_request_headers: NotRequired[int]
    """Header fields in one request head; past it, 431. Default 100."""
    idle_timeout_ms: NotRequired[int]
    """A connection waiting for its next request is closed after this; 0: never."""
    max_connections: NotRequired[int]
    """Client connections open at once per listener; past it new ones are closed at
    accept. 0: unbounded."""
    http2: NotRequired[Http2Limits]
    """HTTP/2 connections' bounds; absent: the core's defaults."""


class Snapshot(TypedDict):
    schema: int
    version: str
    listeners: list[Listener]
    virtual_hosts: list[VirtualHost]
    clusters: list[Cluster]
    upstream: NotRequired[UpstreamSettings]
    limits: NotRequired[Limits]
    tcp_routes: NotRequired[list[TcpRoute]]
    """Tried in order for each connection on a `tcp` listener."""
    tls_routes: NotRequired[list[TcpRoute]]
    """Tried in order for each connection on a `tls` (passthrough) listener; no mirrors."""
