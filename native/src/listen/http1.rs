//! The HTTP/1.1 connection: hyper's server connection over the inspected
//! client stream, with the listener's limits, upgrades handed to their splice,
//! and a graceful close on drain. An HTTP/2 connection builder stands beside
//! this one, chosen by the connection preface (or ALPN) in `listen::serve`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::watch;

use crate::http::inspect::{Findings, Inspected, Tracker};
use crate::proxy::{self, Connection, Shared};
use crate::snapshot::Limits;
use crate::transport::Stream;

use super::ServerSettings;

/// The listener's HTTP/1.1 side: a connection builder for its current limits.
pub struct Http1 {
    settings: ServerSettings,
    limits: Limits,
    builder: http1::Builder,
}

/// Where an accepted connection belongs.
pub struct Accepted {
    pub stream: Stream,
    pub peer: SocketAddr,
    pub listener: usize,
    pub port: u16,
    /// Held by whatever serves this client, an upgraded session included: it
    /// counts as open (and against the limit) and a drain waits for it.
    pub hold: Arc<dyn std::fmt::Debug + Send + Sync>,
}

impl Http1 {
    pub fn new(settings: &ServerSettings, limits: Limits) -> Self {
        let builder = builder(settings, &limits);
        Self {
            settings: settings.clone(),
            limits,
            builder,
        }
    }

    /// The limits of the table published now; the builder is rebuilt only
    /// when a reload changed them.
    pub fn refresh(&mut self, shared: &Shared) -> &Limits {
        let published = shared.published.load();
        if published.limits != self.limits {
            self.limits = published.limits.clone();
            self.builder = builder(&self.settings, &self.limits);
        }
        &self.limits
    }

    /// Serves one connection on a task of its own until it closes, or, once
    /// `stop` turns true, until its in-flight request is done.
    pub fn serve(&self, accepted: Accepted, shared: &Arc<Shared>, mut stop: watch::Receiver<bool>) {
        let findings = Arc::new(Findings::default());
        let tracker = Tracker::new(
            self.settings.max_header_bytes,
            self.limits.max_request_headers as usize,
            findings.clone(),
        );
        let stream = Inspected::new(accepted.stream, tracker, self.settings.header_read_timeout);
        let conn = Arc::new(Connection {
            shared: shared.clone(),
            listener: accepted.listener,
            port: accepted.port,
            max_header_bytes: self.settings.max_header_bytes,
            peer: accepted.peer,
            findings,
            hold: accepted.hold,
        });
        let service = service_fn(move |req| proxy::handle(req, conn.clone()));
        // `with_upgrades` lets a 101 hand the socket to its splice.
        let connection = self
            .builder
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        tokio::spawn(async move {
            let mut connection = std::pin::pin!(connection);
            // Biased: the connection is polled first and no random branch
            // order is drawn per wake-up; `changed` is a version check, and
            // `stop` only ever turns true.
            tokio::select! {
                biased;
                _ = connection.as_mut() => {}
                _ = stop.changed() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
        });
    }
}

fn builder(settings: &ServerSettings, limits: &Limits) -> http1::Builder {
    let mut builder = http1::Builder::new();
    // hyper's header timer runs from the moment a connection waits for its
    // next request head, so it is the idle timeout here; `Inspected` holds a
    // head that has begun to the (shorter) header read timeout.
    let idle = (limits.idle_timeout_ms > 0).then(|| Duration::from_millis(limits.idle_timeout_ms));
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(idle)
        .max_headers(limits.max_request_headers as usize)
        .max_buf_size(settings.max_header_bytes.max(8192))
        .keep_alive(true);
    builder
}
