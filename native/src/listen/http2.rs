//! The HTTP/2 connection (h2c with prior knowledge; with TLS, chosen by ALPN):
//! hyper's server connection over the client stream, with the listener's
//! HTTP/2 limits, and GOAWAY on drain so that in-flight streams finish while
//! new ones go elsewhere. Requests reach the same `proxy::handle` as
//! HTTP/1.1's: one routing serves both.

use std::sync::Arc;
use std::time::Duration;

use http::Request;
use hyper::body::Incoming;
use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::sync::watch;

use crate::body::Received;
use crate::http::inspect::Findings;
use crate::http::request_head::RequestHead;
use crate::proxy::{self, Connection, Shared};
use crate::snapshot::Limits;

use super::accept::Accepted;
use super::drain::serve_until_drained;
use super::idle::idle;

/// A connection builder for the listener's current HTTP/2 limits.
pub fn builder(limits: &Limits) -> http2::Builder<TokioExecutor> {
    let h2 = &limits.http2;
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_concurrent_streams(h2.max_concurrent_streams)
        .initial_stream_window_size(h2.initial_stream_window_bytes)
        .initial_connection_window_size(h2.initial_connection_window_bytes)
        // Bounds the decoded header list, CONTINUATION frames included
        // (CVE-2024-27316): past it the stream is refused with 431.
        .max_header_list_size(h2.max_header_list_bytes)
        // Rapid reset (CVE-2023-44487) and MadeYouReset (CVE-2025-8671):
        // past these a connection gets GOAWAY instead of more work.
        .max_pending_accept_reset_streams(h2.max_pending_accept_reset_streams)
        .max_local_error_reset_streams(h2.max_local_error_reset_streams)
        // What the proxy queues to send per stream before it stops reading
        // the upstream's body: the response side's bound.
        .max_send_buf_size(h2.initial_stream_window_bytes as usize);
    builder
}

/// Serves one HTTP/2 connection until it closes, or, once `stop` turns true
/// or it has been idle for `idle_timeout`, sends GOAWAY and lets the streams
/// in flight finish.
pub async fn serve(
    builder: &http2::Builder<TokioExecutor>,
    accepted: Accepted,
    shared: &Arc<Shared>,
    limits: (usize, Option<Duration>),
    stop: watch::Receiver<bool>,
) {
    let (max_header_bytes, idle_timeout) = limits;
    let conn = Arc::new(Connection {
        shared: shared.clone(),
        listener: accepted.listener,
        port: accepted.port,
        max_header_bytes,
        peer: accepted.peer,
        forwarded_for: crate::http::headers::forwarded_for(accepted.peer.ip()),
        tls: accepted.tls.clone(),
        // Frames, not a byte stream of heads: nothing for the HTTP/1.1
        // inspector to find (h2 itself refuses malformed framing).
        findings: Arc::new(Findings::default()),
        hold: accepted.hold,
        activity: Arc::default(),
        writes_raw_fields: false,
    });
    let activity = conn.activity.clone();
    // Boxed: hyper spawns each stream as a task, and a task's future is moved
    // (copied) several times on the way in; the request's future is
    // kilobytes, a box is a pointer (memmove was a quarter of the CPU under
    // h2load before).
    let service = service_fn(move |req: Request<Incoming>| {
        let (parts, body) = req.into_parts();
        let head = RequestHead::new(parts);
        Box::pin(proxy::handle(head, Received::Streamed(body), conn.clone()))
    });
    let connection = builder.serve_connection(TokioIo::new(accepted.stream), service);
    let _ = serve_until_drained(connection, stop, idle(activity, idle_timeout)).await;
}
