//! hyper's HTTP/1.1 server connection, for what the connection's own session
//! hands it (see `head`): over the client's stream with the bytes read so far
//! in front, followed by the inspector, with the listener's limits, upgrades
//! handed to their splice, and a graceful close on drain.

use std::sync::Arc;

use http::Request;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::sync::watch;

use crate::body::Received;
use crate::http::inspect::{Findings, Inspected, Tracker};
use crate::http::request_head::RequestHead;
use crate::proxy::{self, Connection};
use crate::snapshot::Limits;
use crate::transport::Stream;

use super::super::drain::serve_until_drained;
use super::super::idle::idle;
use super::super::ServerSettings;
use super::rewind::Rewind;

/// Serves the rest of one HTTP/1.1 connection until it closes, or, once
/// `stop` turns true, until its in-flight request is done. `session`: the
/// connection as the own session served it (its client, its activity).
pub async fn serve(
    builder: &http1::Builder,
    settings: &ServerSettings,
    limits: &Limits,
    stream: Rewind<Stream>,
    session: &Connection,
    stop: watch::Receiver<bool>,
) {
    // The inspector numbers requests from the first it sees: hyper's first.
    let findings = Arc::new(Findings::default());
    let tracker = Tracker::new(
        settings.max_header_bytes,
        limits.max_request_headers as usize,
        findings.clone(),
    );
    let stream = Inspected::new(stream, tracker, settings.header_read_timeout);
    let conn = Arc::new(Connection {
        findings,
        writes_raw_fields: false,
        ..session.clone()
    });
    let activity = conn.activity.clone();
    let service = service_fn(move |req: Request<Incoming>| {
        let (parts, body) = req.into_parts();
        proxy::handle(
            RequestHead::new(parts),
            Received::Streamed(body),
            conn.clone(),
        )
    });
    // `with_upgrades` lets a 101 hand the socket to its splice.
    let connection = builder
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    let _ = serve_until_drained(connection, stop, idle(activity, limits.idle_timeout())).await;
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
