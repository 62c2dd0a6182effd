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
}

/// An address to accept HTTP/1.1 connections on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    /// `ip:port`; port 0 picks a free port (see `Engine::addresses`).
    pub address: String,
    /// Index into `virtual_hosts` for requests whose Host matches no virtual host.
    /// `None`: such requests get 404.
    #[serde(default)]
    pub default_virtual_host: Option<u32>,
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
    /// Weighted primary destinations. Weights are relative (Istio: they sum to 100).
    pub destinations: Vec<WeightedCluster>,
    /// Whole-route timeout for the primary's response headers, in milliseconds.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Each mirror samples every request independently.
    #[serde(default)]
    pub mirrors: Vec<Mirror>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RequestMatch {
    #[serde(default)]
    pub uri: Option<StringMatch>,
    #[serde(default)]
    pub method: Option<StringMatch>,
    /// Header names are lower-case.
    #[serde(default)]
    pub headers: Vec<HeaderMatch>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderMatch {
    pub name: String,
    pub value: StringMatch,
}

/// Istio's StringMatch: exactly one of exact, prefix, regex (RE2 syntax, full match).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum StringMatch {
    Exact(String),
    Prefix(String),
    Regex(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightedCluster {
    /// Index into `clusters`.
    pub cluster: u32,
    pub weight: u32,
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
    /// Appended to the Host name, before any port.
    #[serde(default = "defaults::mirror_host_suffix")]
    pub host_suffix: String,
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
}

impl Default for UpstreamSettings {
    fn default() -> Self {
        Self {
            connect_timeout_ms: defaults::connect_timeout_ms(),
            pool_idle_timeout_ms: defaults::pool_idle_timeout_ms(),
            pool_max_idle_per_endpoint: defaults::pool_max_idle_per_endpoint(),
        }
    }
}

/// Defaults shared with `pymirror/snapshot.py`; keep the two in step.
pub mod defaults {
    pub fn mirror_max_in_flight() -> u32 {
        1024
    }
    pub fn mirror_timeout_ms() -> u64 {
        10_000
    }
    pub fn mirror_max_body_bytes() -> u64 {
        4 * 1024 * 1024
    }
    pub fn mirror_host_suffix() -> String {
        "-shadow".to_owned()
    }
    pub fn connect_timeout_ms() -> u64 {
        1_000
    }
    pub fn pool_idle_timeout_ms() -> u64 {
        60_000
    }
    pub fn pool_max_idle_per_endpoint() -> u32 {
        256
    }
}

impl Snapshot {
    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }
}
