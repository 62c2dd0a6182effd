//! The HTTP/2 connection (h2c with prior knowledge; with TLS, chosen by ALPN):
//! hyper's server connection over the client stream, with the listener's
//! HTTP/2 limits, and GOAWAY on drain so that in-flight streams finish while
//! new ones go elsewhere. Requests reach the same `proxy::handle` as
//! HTTP/1.1's: one routing serves both.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::sync::watch;

use crate::http::inspect::Findings;
use crate::proxy::{self, Connection, Shared};
use crate::snapshot::Limits;

use super::accept::Accepted;
use super::drain::serve_until_drained;

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
    });
    let activity = Arc::new(Activity::default());
    let seen = activity.clone();
    let service = service_fn(move |req| {
        let open = Open::start(&seen);
        // Boxed: hyper spawns each stream as a task, and a task's future is
        // moved (copied) several times on the way in; the request's future
        // is kilobytes, a box is a pointer (memmove was a quarter of the
        // CPU under h2load before).
        let handled = Box::pin(proxy::handle(req, conn.clone()));
        async move {
            let response = handled.await;
            drop(open);
            response
        }
    });
    let connection = builder.serve_connection(TokioIo::new(accepted.stream), service);
    serve_until_drained(connection, stop, idle(activity, idle_timeout)).await;
}

/// What an idle timeout needs to know of a connection's streams.
#[derive(Debug)]
struct Activity {
    since: Instant,
    /// When a request last began or got its answer, in ms since `since`.
    last_ms: AtomicU64,
    /// Requests whose answer has not begun yet.
    open: AtomicU64,
}

impl Default for Activity {
    fn default() -> Self {
        Self {
            since: Instant::now(),
            last_ms: AtomicU64::new(0),
            open: AtomicU64::new(0),
        }
    }
}

impl Activity {
    fn touch(&self) {
        let ms = u64::try_from(self.since.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Relaxed);
    }
}

/// A request in progress, until its response head is handed back.
struct Open(Arc<Activity>);

impl Open {
    fn start(activity: &Arc<Activity>) -> Self {
        activity.open.fetch_add(1, Relaxed);
        activity.touch();
        Self(activity.clone())
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.touch();
        self.0.open.fetch_sub(1, Relaxed);
    }
}

/// Resolves once `timeout` has passed with no request begun or answered and
/// none waiting for its answer (a response still streaming finishes after
/// the GOAWAY); never without a timeout.
async fn idle(activity: Arc<Activity>, timeout: Option<Duration>) {
    let Some(timeout) = timeout else {
        return std::future::pending().await;
    };
    loop {
        let last = activity.since + Duration::from_millis(activity.last_ms.load(Relaxed));
        let now = Instant::now();
        let due = last + timeout;
        if now >= due && activity.open.load(Relaxed) == 0 {
            return;
        }
        // Not idle yet; or due, but a request still waits for its answer:
        // look again once it could be.
        let next = if now >= due { now + timeout } else { due };
        tokio::time::sleep_until(next.into()).await;
    }
}
