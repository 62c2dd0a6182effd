//! An HTTP/1.1 client connection. The connection's own session (`session`)
//! serves the requests it can read whole with their head (`head`) and writes
//! their answers (`answer`, with its `date`); the first request it cannot
//! (chunked or streamed bodies, upgrades, CONNECT, `Expect`, `TE`, HTTP/1.0,
//! anything malformed) hands the connection to hyper's server (`handed`),
//! the bytes read so far replayed in front of the socket (`rewind`). The
//! HTTP/2 connection stands beside it (`super::http2`). `differential` (a
//! test) holds the session's wire behaviour to hyper's.

mod answer;
mod date;
#[cfg(test)]
mod differential;
mod handed;
pub mod head;
#[cfg(test)]
mod kept_differential;
#[cfg(test)]
mod raw_differential;
mod rewind;
mod session;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper::server::conn::http1;
use tokio::sync::watch;

use crate::http::inspect::Findings;
use crate::proxy::{self, Connection, Shared};
use crate::snapshot::Limits;

use super::accept::Accepted;
use super::drain::{serve_until_drained, Drainable};
use super::idle::idle;
use super::ServerSettings;
pub use handed::builder;
use session::Ended;

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
    let conn = Arc::new(Connection {
        shared: shared.clone(),
        listener: accepted.listener,
        port: accepted.port,
        max_header_bytes: settings.max_header_bytes,
        peer: accepted.peer,
        forwarded_for: crate::http::headers::forwarded_for(accepted.peer.ip()),
        tls: accepted.tls,
        // The session refuses no framing itself: what the inspector would
        // find is hyper's (`head`).
        findings: Arc::new(Findings::default()),
        hold: accepted.hold,
        activity: Arc::default(),
        writes_raw_fields: true,
    });
    let drained = Arc::new(AtomicBool::new(false));
    let handler = conn.clone();
    let run = session::run(
        accepted.stream,
        move |head, body| proxy::handle(head, body, handler.clone()),
        session::Settings {
            max_head_bytes: settings.max_header_bytes,
            max_fields: limits.max_request_headers as usize,
            header_read_timeout: settings.header_read_timeout,
        },
        drained.clone(),
    );
    let session = Session {
        run: Box::pin(run),
        drained,
    };
    let idle = idle(conn.activity.clone(), limits.idle_timeout());
    let ended = serve_until_drained(session, stop.clone(), idle).await;
    if let Ended::HandOff(read, stream) = ended {
        let stream = rewind::Rewind::new(read.freeze(), stream);
        handed::serve(builder, settings, limits, stream, &conn, stop).await;
    }
}

/// The session as a connection a drain can end.
struct Session<F> {
    run: Pin<Box<F>>,
    drained: Arc<AtomicBool>,
}

impl<F: Future> Future for Session<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.run.as_mut().poll(cx)
    }
}

impl<F: Future> Drainable for Session<F> {
    /// Seen by the session at its next poll, which follows at once.
    fn drain(self: Pin<&mut Self>) {
        self.drained.store(true, Relaxed);
    }
}
