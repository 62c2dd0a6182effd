//! The HTTP/1.1 connection: hyper's server connection over the inspected
//! client stream, with the listener's limits, upgrades handed to their splice,
//! and a graceful close on drain. The HTTP/2 one stands beside it (`http2`),
//! chosen by the connection preface (or, with TLS, ALPN) in `protocols`.

use std::sync::Arc;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::sync::watch;

use crate::http::inspect::{Findings, Inspected, Tracker};
use crate::proxy::{self, Connection, Shared};
use crate::snapshot::Limits;

use super::accept::Accepted;
use super::drain::serve_until_drained;
use super::idle::idle;
use super::ServerSettings;

/// Serves one HTTP/1.1 connection until it closes, or, once `stop` turns
/// true, until its in-flight request is done.
pub async fn serve(
    builder: &http1::Builder,
    settings: &ServerSettings,
    limits: &Limits,
    accepted: Accepted,
    shared: &Arc<Shared>,
    stop: watch::Receiver<bool>,
) {
    let findings = Arc::new(Findings::default());
    let tracker = Tracker::new(
        settings.max_header_bytes,
        limits.max_request_headers as usize,
        findings.clone(),
    );
    let stream = Inspected::new(accepted.stream, tracker, settings.header_read_timeout);
    let conn = Arc::new(Connection {
        shared: shared.clone(),
        listener: accepted.listener,
        port: accepted.port,
        max_header_bytes: settings.max_header_bytes,
        peer: accepted.peer,
        forwarded_for: crate::http::headers::forwarded_for(accepted.peer.ip()),
        tls: accepted.tls.clone(),
        findings,
        hold: accepted.hold,
        activity: Arc::default(),
    });
    let activity = conn.activity.clone();
    let service = service_fn(move |req| proxy::handle(req, conn.clone()));
    // `with_upgrades` lets a 101 hand the socket to its splice.
    let connection = builder
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    serve_until_drained(connection, stop, idle(activity, limits.idle_timeout())).await;
}

/// A connection builder for the listener's current limits.
pub fn builder(settings: &ServerSettings, limits: &Limits) -> http1::Builder {
    let mut builder = http1::Builder::new();
    // No header timer of hyper's: it would arm a timer for every request. The
    // idle timeout is the connection's own (`listen::idle`), and `Inspected`
    // holds a head that has begun to the header read timeout.
    builder
        .header_read_timeout(None)
        .max_headers(limits.max_request_headers as usize)
        .max_buf_size(settings.max_header_bytes.max(8192))
        .keep_alive(true);
    builder
}
