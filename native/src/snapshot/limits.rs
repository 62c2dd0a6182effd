//! Bounds on client connections, HTTP/1.1 and HTTP/2.

use serde::{Deserialize, Serialize};

use super::defaults;

/// Bounds on client connections. Read when a connection is accepted, so a
/// reload applies them to new connections; open ones keep theirs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Request header fields accepted in one request head; past it: 431.
    #[serde(default = "defaults::max_request_headers")]
    pub max_request_headers: u32,
    /// A connection with no request begun or answered and none waiting for
    /// its answer is closed after this many ms. 0: never.
    #[serde(default = "defaults::idle_timeout_ms")]
    pub idle_timeout_ms: u64,
    /// Client connections open at once per listener; past it a new connection
    /// is closed as soon as it is accepted (counted as `connections_refused`).
    /// 0: unbounded.
    #[serde(default = "defaults::max_connections")]
    pub max_connections: u32,
    /// HTTP/2 connections' bounds.
    #[serde(default)]
    pub http2: Http2Limits,
}

impl Limits {
    /// `idle_timeout_ms` as a duration; `None`: never.
    pub fn idle_timeout(&self) -> Option<std::time::Duration> {
        (self.idle_timeout_ms > 0).then(|| std::time::Duration::from_millis(self.idle_timeout_ms))
    }
}

/// Bounds on each HTTP/2 client connection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Http2Limits {
    #[serde(default = "defaults::http2_max_concurrent_streams")]
    pub max_concurrent_streams: u32,
    #[serde(default = "defaults::http2_initial_stream_window_bytes")]
    pub initial_stream_window_bytes: u32,
    #[serde(default = "defaults::http2_initial_connection_window_bytes")]
    pub initial_connection_window_bytes: u32,
    #[serde(default = "defaults::http2_max_header_list_bytes")]
    pub max_header_list_bytes: u32,
    #[serde(default = "defaults::http2_max_pending_accept_reset_streams")]
    pub max_pending_accept_reset_streams: usize,
    #[serde(default = "defaults::http2_max_local_error_reset_streams")]
    pub max_local_error_reset_streams: usize,
}

impl Default for Http2Limits {
    fn default() -> Self {
        Self {
            max_concurrent_streams: defaults::http2_max_concurrent_streams(),
            initial_stream_window_bytes: defaults::http2_initial_stream_window_bytes(),
            initial_connection_window_bytes: defaults::http2_initial_connection_window_bytes(),
            max_header_list_bytes: defaults::http2_max_header_list_bytes(),
            max_pending_accept_reset_streams: defaults::http2_max_pending_accept_reset_streams(),
            max_local_error_reset_streams: defaults::http2_max_local_error_reset_streams(),
        }
    }
}
