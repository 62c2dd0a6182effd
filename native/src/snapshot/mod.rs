//! The Snapshot: the one contract between the Python control plane and this data plane.
//!
//! Python (`pymirror/resolve.py`) builds it as plain JSON; the core deserialises it
//! here and compiles it once into a `RouteTable`. Every name is already resolved to
//! an index into `clusters`; every subset is already a list of endpoint authorities.
//! Unknown fields are rejected so that the two halves cannot drift apart silently.
//! Bump `SCHEMA` (and `pymirror.snapshot.SCHEMA`) on any incompatible change.

use serde::{Deserialize, Serialize};

/// The schema version this core understands.
pub const SCHEMA: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Snapshot {
    /// Must equal [`SCHEMA`].
    pub schema: u32,
    /// The running config's version label (shown in stats and metrics), e.g. a checksum.
    pub version: String,
    pub listeners: Vec<Listener>,
    pub virtual_hosts: Vec<VirtualHost>,
    pub clusters: Vec<Cluster>,
    #[serde(default)]
    pub upstream: UpstreamSettings,
    /// What a client connection may do at most (every listener alike).
    #[serde(default)]
    pub limits: Limits,
    /// Routes for connections accepted on `tcp` listeners, tried in order; the
    /// first whose match holds takes the connection.
    #[serde(default)]
    pub tcp_routes: Vec<TcpRoute>,
    /// Routes for connections accepted on `tls` (passthrough) listeners, by
    /// their ClientHello's SNI; no mirrors (a copy could not complete a
    /// handshake meant for another server).
    #[serde(default)]
    pub tls_routes: Vec<TcpRoute>,
}

/// What a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// HTTP/1.1, routed by `virtual_hosts`.
    #[default]
    Http,
    /// Bytes spliced to an upstream picked by `tcp_routes`, per connection.
    Tcp,
    /// TLS passed through unterminated: the ClientHello's SNI picks one of
    /// `tls_routes`, and the bytes are spliced to it as they came.
    Tls,
}

/// One entry of an Istio VirtualService's `tcp:` list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpRoute {
    /// The VirtualService's name (a metrics label).
    pub virtual_service: String,
    /// The tcp entry's index (a metrics label).
    pub name: String,
    /// OR across entries. Empty: matches every connection.
    #[serde(default)]
    pub matches: Vec<TcpMatch>,
    /// Weighted destinations, picked once per connection.
    pub destinations: Vec<TcpDestination>,
    /// Each mirror samples every connection independently.
    #[serde(default)]
    pub mirrors: Vec<TcpMirror>,
}

/// Istio's L4MatchAttributes, the parts a proxy outside a mesh can judge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TcpMatch {
    /// The listener port the connection arrived on.
    #[serde(default)]
    pub port: Option<u16>,
    /// CIDRs (`10.0.0.0/8`, `::1/128`) the connection's destination address
    /// (the listener's local address) must fall in, any of them. Empty: any.
    #[serde(default)]
    pub destination_subnets: Vec<String>,
    /// `tls_routes` only: server names (`api.example.com`, `*.example.com`,
    /// `*`) the ClientHello's SNI must match, any of them. Empty: any.
    #[serde(default)]
    pub sni_hosts: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpDestination {
    /// Index into `clusters`.
    pub cluster: u32,
    pub weight: u32,
}

/// pymirror extension: the client -> upstream bytes of a sampled connection
/// are copied to a connection to this cluster; its replies are discarded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpMirror {
    /// Index into `clusters`.
    pub cluster: u32,
    /// Share of connections mirrored, out of 1,000,000.
    pub per_million: u32,
    /// Bytes queued for the mirror at most; past it the mirror connection is cut.
    #[serde(default = "defaults::mirror_max_body_bytes")]
    pub buffer_bytes: u64,
    /// How long the mirror may take to take the rest of the bytes once the
    /// client's side has ended, in ms; past it the mirror connection is cut.
    #[serde(default = "defaults::mirror_timeout_ms")]
    pub timeout_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_request_headers: defaults::max_request_headers(),
            idle_timeout_ms: defaults::idle_timeout_ms(),
            max_connections: defaults::max_connections(),
            http2: Http2Limits::default(),
        }
    }
}

/// An address to accept connections on (HTTP/1.1, or TCP spliced through).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    /// `ip:port`; port 0 picks a free port (see `Engine::addresses`).
    pub address: String,
    /// Index into `virtual_hosts` for requests whose Host matches no virtual host.
    /// `None`: such requests get 404.
    #[serde(default)]
    pub default_virtual_host: Option<u32>,
    /// `http` (default) or `tcp`.
    #[serde(default)]
    pub protocol: Protocol,
    /// TLS termination (an `http` listener): its certificate and key.
    #[serde(default)]
    pub tls: Option<ListenerTls>,
    /// The virtual hosts it serves (indexes into `virtual_hosts`); `None`:
    /// all of them. Istio Gateways bind virtual services to their listeners.
    #[serde(default)]
    pub virtual_hosts: Option<Vec<u32>>,
}

/// One VirtualService: the host patterns it serves and its ordered routes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VirtualHost {
    /// The VirtualService's name (a metrics label).
    pub name: String,
    /// Host patterns: `reviews`, `*.example.com`, or `*`. Matched case-insensitively,
    /// without the request's port.
    pub domains: Vec<String>,
    /// Tried in order; the first whose match holds wins.
    pub routes: Vec<Route>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// The http entry's name, or its index when unnamed (a metrics label).
    pub name: String,
    /// OR across entries, AND within one. Empty: matches every request.
    #[serde(default)]
    pub matches: Vec<RequestMatch>,
    /// Weighted primary destinations. Weights are relative: each gets
    /// weight / sum. Exactly one of `destinations` (non-empty), `redirect`
    /// and `direct_response` says what the route does.
    #[serde(default)]
    pub destinations: Vec<WeightedCluster>,
    /// Answer with a redirect instead of forwarding.
    #[serde(default)]
    pub redirect: Option<Redirect>,
    /// Answer with a fixed response instead of forwarding.
    #[serde(default)]
    pub direct_response: Option<DirectResponse>,
    /// Whole-route timeout for the primary's response headers (all tries), in ms.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Retries of the primary request. `None`: no retry.
    #[serde(default)]
    pub retries: Option<RetryPolicy>,
    /// Path and authority rewrites, applied before forwarding and mirroring.
    #[serde(default)]
    pub rewrite: Option<Rewrite>,
    /// Delay and abort injection (Istio's HTTPFaultInjection).
    #[serde(default)]
    pub fault: Option<Fault>,
    /// Header operations on the request to the destination (route level; the
    /// chosen destination's operations apply after these).
    #[serde(default)]
    pub request_headers: HeaderOps,
    /// Header operations on the response to the client (route level).
    #[serde(default)]
    pub response_headers: HeaderOps,
    /// Each mirror samples every request independently.
    #[serde(default)]
    pub mirrors: Vec<Mirror>,
}

/// Istio's HTTPRedirect. Unset parts keep the request's own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Redirect {
    /// Replaces the whole path (and drops nothing else; the query is kept).
    #[serde(default)]
    pub uri: Option<String>,
    /// Replaces the authority (host and port).
    #[serde(default)]
    pub authority: Option<String>,
    /// Replaces the port.
    #[serde(default)]
    pub port: Option<u16>,
    /// Replaces the scheme (`http` or `https`).
    #[serde(default)]
    pub scheme: Option<String>,
    /// 301 unless set (Istio's default).
    #[serde(default = "defaults::redirect_code")]
    pub code: u16,
}

/// Istio's HTTPDirectResponse: a fixed status and body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectResponse {
    pub status: u16,
    /// The body's bytes (JSON: an array of numbers; Python sends UTF-8 text as bytes).
    #[serde(default)]
    pub body: Vec<u8>,
}

/// Istio's HTTPRetry, resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Retries after the first try (Istio's `attempts`). 0: no retry.
    pub attempts: u32,
    /// Deadline of each try, in ms; the route timeout still bounds them all.
    #[serde(default)]
    pub per_try_timeout_ms: Option<u64>,
    /// Envoy's retry_on conditions: `5xx`, `gateway-error`, `reset`,
    /// `connect-failure`, `refused-stream`, `retriable-4xx`,
    /// `retriable-status-codes`, and bare status codes such as `503`.
    #[serde(default)]
    pub retry_on: Vec<String>,
}

/// Istio's HTTPRewrite. `uri` replaces the prefix that matched (or the whole
/// path when the match was exact or a regex; `/` when no uri condition).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Rewrite {
    #[serde(default)]
    pub uri: Option<String>,
    #[serde(default)]
    pub authority: Option<String>,
    /// Istio's uriRegexRewrite: every match of `pattern` in the path is
    /// replaced by `substitution` (`\1` style groups).
    #[serde(default)]
    pub uri_regex: Option<RegexRewrite>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegexRewrite {
    pub pattern: String,
    pub substitution: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    #[serde(default)]
    pub delay: Option<FaultDelay>,
    #[serde(default)]
    pub abort: Option<FaultAbort>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultDelay {
    pub fixed_delay_ms: u64,
    /// Share of requests delayed, out of 1,000,000.
    pub per_million: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultAbort {
    pub status: u16,
    /// Share of requests aborted, out of 1,000,000.
    pub per_million: u32,
    /// Istio's `grpcStatus`: the abort is a gRPC answer (HTTP 200) with this
    /// `grpc-status`.
    #[serde(default)]
    pub grpc_status: Option<u32>,
}

/// Istio's Headers.HeaderOperations. Names are lower-case; `set` replaces,
/// `add` appends, `remove` deletes, applied in that order: remove, set, add.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct HeaderOps {
    #[serde(default)]
    pub set: Vec<HeaderPair>,
    #[serde(default)]
    pub add: Vec<HeaderPair>,
    #[serde(default)]
    pub remove: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderPair {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RequestMatch {
    #[serde(default)]
    pub uri: Option<StringMatch>,
    /// Compared with the listener's scheme (`http`).
    #[serde(default)]
    pub scheme: Option<StringMatch>,
    #[serde(default)]
    pub method: Option<StringMatch>,
    /// Compared with the request's Host (or absolute-form authority), port included.
    #[serde(default)]
    pub authority: Option<StringMatch>,
    /// Header names are lower-case.
    #[serde(default)]
    pub headers: Vec<HeaderMatch>,
    /// Headers that must not match (Istio's withoutHeaders).
    #[serde(default)]
    pub without_headers: Vec<HeaderMatch>,
    /// Query parameters, by name; `value: None` means present.
    #[serde(default)]
    pub query_params: Vec<HeaderMatch>,
    /// The listener port the request arrived on.
    #[serde(default)]
    pub port: Option<u16>,
    /// `uri` is compared case-insensitively (exact and prefix).
    #[serde(default)]
    pub ignore_uri_case: bool,
}

/// A header (or query parameter) condition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderMatch {
    pub name: String,
    /// `None`: the header only has to be present (Istio's empty StringMatch `{}`).
    #[serde(default)]
    pub value: Option<StringMatch>,
}

/// Istio's StringMatch: exactly one of exact, prefix, regex (RE2 syntax, full match).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum StringMatch {
    Exact(String),
    Prefix(String),
    Regex(String),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightedCluster {
    /// Index into `clusters`.
    pub cluster: u32,
    pub weight: u32,
    /// Istio's per-destination header operations, after the route's.
    #[serde(default)]
    pub request_headers: HeaderOps,
    #[serde(default)]
    pub response_headers: HeaderOps,
}

/// A mirror policy of one route: where copies go, how many, and their bounds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mirror {
    /// Index into `clusters`.
    pub cluster: u32,
    /// Share of requests copied, out of 1,000,000 (Envoy's FractionalPercent MILLION).
    pub per_million: u32,
    /// Copies in flight at once for this mirror; past it a copy is dropped.
    #[serde(default = "defaults::mirror_max_in_flight")]
    pub max_in_flight: u32,
    /// Deadline for the mirror's whole exchange, in milliseconds.
    #[serde(default = "defaults::mirror_timeout_ms")]
    pub timeout_ms: u64,
    /// Bytes of request body buffered for the copy; past it the copy is cut and dropped.
    #[serde(default = "defaults::mirror_max_body_bytes")]
    pub max_body_bytes: u64,
    /// Body bytes of the mirror's answer read and dropped; past it reading
    /// stops, the connection is closed and the copy counts as `cut`.
    #[serde(default = "defaults::mirror_max_drain_bytes")]
    pub max_drain_bytes: u64,
    /// Appended to the Host name, before any port.
    #[serde(default = "defaults::mirror_host_suffix")]
    pub host_suffix: String,
    /// Header operations on the copy alone (e.g. drop `authorization` and
    /// `cookie` before traffic leaves for a test environment).
    #[serde(default)]
    pub request_headers: HeaderOps,
    /// Copy only idempotent methods (RFC 9110 9.2.2: GET, HEAD, OPTIONS,
    /// TRACE, PUT, DELETE).
    #[serde(default)]
    pub only_idempotent: bool,
    /// With `only_idempotent`: gRPC methods (`/pkg.Service/Method`) or whole
    /// services (`/pkg.Service/`) copied all the same (every gRPC call is a POST).
    #[serde(default)]
    pub grpc_methods: Vec<String>,
    /// Send the copy only once the primary has answered with a 2xx or 3xx;
    /// its body waits in the bounded buffer until then.
    #[serde(default)]
    pub after_primary_success: bool,
    /// Compare a share of the copies' answers with the primary's (a pymirror
    /// extension). `None`: the copy's answer is drained and dropped.
    #[serde(default)]
    pub compare: Option<Compare>,
}

/// Which copies are compared and how much of each answer is kept for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Compare {
    /// Share of the copies compared, out of 1,000,000 (sampled apart from
    /// the mirror's own rate: 1% of the copies, say).
    pub per_million: u32,
    /// Body bytes kept per answer; past it only the length and a hash.
    #[serde(default = "defaults::compare_max_body_bytes")]
    pub max_body_bytes: u64,
    /// Read by the control plane's comparator, carried here so that the
    /// snapshot says everything about a mirror; the core does not use them.
    #[serde(default)]
    pub ignore_headers: Vec<String>,
    #[serde(default)]
    pub ignore_paths: Vec<String>,
    #[serde(default)]
    pub redact_headers: Vec<String>,
    #[serde(default)]
    pub redact_paths: Vec<String>,
    /// Set on a noise copy (Diffy's second primary): the index, in the same
    /// route's `mirrors`, of the mirror whose compared requests this mirror
    /// also receives. It is not sampled on its own (neither rate applies):
    /// it sends a copy exactly when that mirror's copy is compared, and
    /// compares it. The control plane counts what differs between the two
    /// primaries as noise.
    #[serde(default)]
    pub noise_for: Option<u32>,
}

/// A destination host (and subset) resolved to endpoints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    /// The destination host as configured (a metrics label).
    pub host: String,
    /// The subset, if any (a metrics label).
    #[serde(default)]
    pub subset: Option<String>,
    /// `host:port` authorities; names are resolved by DNS at connect time.
    pub endpoints: Vec<String>,
    /// Relative endpoint weights (ServiceEntry endpoint `weight`), one per
    /// endpoint; empty means all equal.
    #[serde(default)]
    pub weights: Vec<u32>,
    /// How an endpoint is picked (DestinationRule loadBalancer.simple).
    #[serde(default)]
    pub load_balancer: LoadBalancer,
    /// Requests in flight to this cluster at once (DestinationRule
    /// connectionPool: tcp.maxConnections / http.http2MaxRequests). Past it:
    /// 503 overflow. `None`: unbounded.
    #[serde(default)]
    pub max_requests: Option<u32>,
    /// Passive health checking (DestinationRule trafficPolicy.outlierDetection).
    /// `None`: endpoints are never ejected for their answers.
    #[serde(default)]
    pub outlier_detection: Option<OutlierDetection>,
    /// The protocol requests go upstream with (DestinationRule
    /// useClientProtocol / h2UpgradePolicy, the service port's protocol).
    #[serde(default)]
    pub protocol: UpstreamProtocol,
    /// Requests over one connection's lifetime, then it is retired
    /// (connectionPool.http.maxRequestsPerConnection). `None`: no bound.
    #[serde(default)]
    pub max_requests_per_connection: Option<u64>,
    /// Streams at once per HTTP/2 connection (connectionPool.http.
    /// maxConcurrentStreams); the peer's SETTINGS may lower it.
    #[serde(default)]
    pub max_concurrent_streams: Option<u32>,
    /// TLS to the endpoints (DestinationRule `tls` SIMPLE or MUTUAL); `None`:
    /// plaintext.
    #[serde(default)]
    pub tls: Option<UpstreamTls>,
}

/// How requests to a cluster are sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamProtocol {
    #[default]
    Http1,
    Http2,
    /// The client's own: HTTP/2 for an HTTP/2 request, else HTTP/1.1.
    Client,
}

/// Istio's OutlierDetection: an endpoint that fails N times in a row is taken
/// out of the pick for a while. A connect failure, reset or timeout counts as
/// a gateway error (and so as a 5xx), as Envoy maps local failures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutlierDetection {
    /// Consecutive 5xx answers that eject an endpoint. 0: not by this count.
    #[serde(default = "defaults::consecutive_5xx")]
    pub consecutive_5xx: u32,
    /// Consecutive 502/503/504 answers that eject an endpoint. 0: not by this count.
    #[serde(default)]
    pub consecutive_gateway_errors: u32,
    /// How long an endpoint stays clear of ejections before one ejection is
    /// forgiven (the next one lasts less), in ms.
    #[serde(default = "defaults::outlier_interval_ms")]
    pub interval_ms: u64,
    /// An ejection lasts this many ms times the endpoint's ejections so far.
    #[serde(default = "defaults::base_ejection_time_ms")]
    pub base_ejection_time_ms: u64,
    /// At most this share of the cluster's endpoints is ejected at once, in percent.
    #[serde(default = "defaults::max_ejection_percent")]
    pub max_ejection_percent: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LoadBalancer {
    #[default]
    RoundRobin,
    LeastRequest,
    Random,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSettings {
    #[serde(default = "defaults::connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    #[serde(default = "defaults::pool_idle_timeout_ms")]
    pub pool_idle_timeout_ms: u64,
    #[serde(default = "defaults::pool_max_idle_per_endpoint")]
    pub pool_max_idle_per_endpoint: u32,
    /// A gRPC call's request body is read whole up to this many bytes before
    /// its first try, so that a retry can send it again. 0: never.
    #[serde(default = "defaults::retry_buffer_bytes")]
    pub retry_buffer_bytes: u64,
}

impl Default for UpstreamSettings {
    fn default() -> Self {
        Self {
            connect_timeout_ms: defaults::connect_timeout_ms(),
            pool_idle_timeout_ms: defaults::pool_idle_timeout_ms(),
            pool_max_idle_per_endpoint: defaults::pool_max_idle_per_endpoint(),
            retry_buffer_bytes: defaults::retry_buffer_bytes(),
        }
    }
}

/// Defaults shared with `pymirror/defaults.py`; keep the two in step.
pub mod defaults;
mod limits;
pub mod tls;

pub use limits::{Http2Limits, Limits};
pub use tls::{ListenerTls, TlsVersion, UpstreamTls};

impl Snapshot {
    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }
}
