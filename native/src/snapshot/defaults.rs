//! Defaults shared with `pymirror/defaults.py`; keep the two in step (a
//! Python test compares them).

pub fn mirror_max_in_flight() -> u32 {
    1024
}
pub fn mirror_timeout_ms() -> u64 {
    10_000
}
pub fn mirror_max_body_bytes() -> u64 {
    4 * 1024 * 1024
}
/// Enough for ordinary answers to keep their keep-alive connection;
/// closing after each would fill TIME_WAIT at a few hundred copies a second.
pub fn mirror_max_drain_bytes() -> u64 {
    256 * 1024
}
pub fn compare_max_body_bytes() -> u64 {
    64 * 1024
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
/// As many as a mirror may have copies in flight, so that a slow mirror's
/// connections are kept rather than reopened for every copy.
pub fn pool_max_idle_per_endpoint() -> u32 {
    1024
}
pub fn redirect_code() -> u16 {
    301
}
/// Envoy's and hyper's default as well.
pub fn max_request_headers() -> u32 {
    100
}
pub fn idle_timeout_ms() -> u64 {
    60_000
}
/// Far above what one proxy serves, far below the file-descriptor limits
/// that would otherwise be the bound.
pub fn max_connections() -> u32 {
    10_000
}
/// Istio's defaults for outlierDetection.
pub fn consecutive_5xx() -> u32 {
    5
}
pub fn outlier_interval_ms() -> u64 {
    10_000
}
pub fn base_ejection_time_ms() -> u64 {
    30_000
}
pub fn max_ejection_percent() -> u32 {
    10
}
/// HTTP/2 on the listener: streams at once per client connection (nginx
/// allows 128, Go 250; 100 is what RFC 9113 recommends as the least).
pub fn http2_max_concurrent_streams() -> u32 {
    100
}
/// Bytes a client may send on one stream before the proxy has read them.
pub fn http2_initial_stream_window_bytes() -> u32 {
    256 * 1024
}
/// Bytes a client may send on a connection, all streams together, before
/// the proxy has read them: the bound on what one connection buffers.
pub fn http2_initial_connection_window_bytes() -> u32 {
    1024 * 1024
}
/// A request's header list (HPACK-decoded, RFC 9113 6.5.2), as
/// `maxHeaderBytes` bounds an HTTP/1.1 head.
pub fn http2_max_header_list_bytes() -> u32 {
    64 * 1024
}
/// Streams a client may open and reset before they are accepted (rapid
/// reset, CVE-2023-44487): past it, GOAWAY. h2's own default.
pub fn http2_max_pending_accept_reset_streams() -> usize {
    20
}
/// Streams the proxy may reset for a client's protocol errors on one
/// connection (MadeYouReset, CVE-2025-8671): past it, GOAWAY. h2's default.
pub fn http2_max_local_error_reset_streams() -> usize {
    1024
}
/// Streams at once per HTTP/2 upstream connection (the peer's SETTINGS may
/// lower it); past it a request opens another connection.
pub fn upstream_max_concurrent_streams() -> u32 {
    100
}
/// A gRPC request body kept for retries, at most (Envoy's default buffer
/// limit is 1 MiB; unary calls are mostly far smaller).
pub fn retry_buffer_bytes() -> u64 {
    64 * 1024
}
