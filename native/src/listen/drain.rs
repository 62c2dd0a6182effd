//! How a served connection ends on drain, whatever its protocol: polled until
//! it closes, or, once `stop` turns true, told to finish gracefully (HTTP/1.1:
//! after its in-flight request; HTTP/2: GOAWAY, then its open streams) and
//! polled to that end.

use std::future::Future;
use std::pin::Pin;

use hyper::body::Incoming;
use hyper::rt::{Read, Write};
use hyper::server::conn::{http1, http2};
use hyper::service::HttpService;
use tokio::sync::watch;

/// A server connection that can be asked to finish gracefully.
pub trait Drainable: Future {
    fn drain(self: Pin<&mut Self>);
}

impl<I, S> Drainable for http1::UpgradeableConnection<I, S>
where
    S: HttpService<Incoming>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: Read + Write + Unpin + Send + 'static,
    S::ResBody: http_body::Body + 'static,
    <S::ResBody as http_body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn drain(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

impl<I, S, E> Drainable for http2::Connection<I, S, E>
where
    S: HttpService<Incoming>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: Read + Write + Unpin,
    S::ResBody: http_body::Body + 'static,
    <S::ResBody as http_body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    E: hyper::rt::bounds::Http2ServerConnExec<S::Future, S::ResBody>,
{
    fn drain(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

/// Serves `connection` until it ends, draining it once `stop` turns true or
/// `idle` resolves (a connection that stays unused; pending forever where
/// the protocol's own timers see to that).
pub async fn serve_until_drained<C: Drainable>(
    connection: C,
    mut stop: watch::Receiver<bool>,
    idle: impl Future<Output = ()>,
) {
    let mut connection = std::pin::pin!(connection);
    // Biased: the connection is polled first and no random branch order is
    // drawn per wake-up; `changed` is a version check, and `stop` only ever
    // turns true.
    tokio::select! {
        biased;
        _ = connection.as_mut() => return,
        _ = stop.changed() => {}
        () = idle => {}
    }
    connection.as_mut().drain();
    let _ = connection.await;
}
