//! Listeners: the accept loop (`serve`), the step from an accepted socket to
//! the stream it is served on (`accept`: the connection limit, and where TLS
//! will stand), the choice of protocol (`protocols`, by the HTTP/2 `preface`)
//! and its connection (`http1`, `http2`; `tcp` for spliced listeners), and the
//! worker threads that run them (`workers`), with graceful drain on shutdown.

pub mod accept;
pub mod drain;
pub mod http1;
pub mod http2;
pub mod idle;
pub mod preface;
pub mod protocols;
pub mod tcp;
pub mod workers;

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::proxy::Shared;
use crate::snapshot::Protocol;
use accept::Accepted;
use protocols::HttpServers;
use workers::DrainSignal;

/// How connections are served.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// A client must send its whole request head within this once it has
    /// begun (slowloris guard); waiting for a head to begin is the idle timeout.
    pub header_read_timeout: Duration,
    /// Request head bytes read at most; past it the client gets 431.
    pub max_header_bytes: usize,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(30),
            max_header_bytes: 64 * 1024,
        }
    }
}

/// Accepts until told to drain, then waits for open connections to finish
/// their in-flight requests (keep-alive connections close after them).
pub async fn serve(
    listener: TcpListener,
    index: usize,
    protocol: Protocol,
    shared: Arc<Shared>,
    settings: ServerSettings,
    mut drain: DrainSignal,
) {
    // Set once draining: each HTTP connection then finishes its in-flight
    // request and closes. (hyper-util's GracefulShutdown cannot watch a
    // connection that may be upgraded.)
    let (stop, stop_rx) = watch::channel(false);
    // Every connection (and upgraded session) holds a clone; once the accept loop has
    // dropped this one, `recv` returns `None` when the last of them is done.
    let (spliced, mut spliced_done) = mpsc::channel::<()>(1);
    let port = listener.local_addr().map_or(0, |a| a.port());
    let mut servers = HttpServers::new(&settings, shared.published.load().limits.clone());
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, peer)) = accepted else {
                    // Out of file descriptors and the like: back off
                    // instead of spinning, then keep serving.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                };
                servers.refresh(&shared);
                let limits = servers.limits();
                let idle_timeout_ms = limits.idle_timeout_ms;
                let Some(active) = accept::admit(&shared, index, limits.max_connections) else {
                    continue;
                };
                let stream = accept::accepted(stream);
                let hold = Arc::new((active, spliced.clone()));
                match protocol {
                    Protocol::Tcp | Protocol::Tls => {
                        let passthrough = (protocol == Protocol::Tls).then_some(settings.header_read_timeout);
                        let listening = tcp::Listening { index, idle_timeout_ms, passthrough };
                        tokio::spawn(tcp::serve(stream, shared.clone(), listening, hold));
                    }
                    Protocol::Http => {
                        let accepted = Accepted { stream, peer, listener: index, port, hold, tls: None };
                        // The protocol is read on the connection's own task:
                        // a client slow to speak cannot stall the accepts.
                        let serving = servers.clone().serve(accepted, shared.clone(), stop_rx.clone());
                        tokio::spawn(serving);
                    }
                }
            }
            _ = draining(&mut drain) => break,
        }
    }
    drop(listener);
    let _ = stop.send(true);
    drop(spliced);
    // Spliced connections have no request boundary to stop at: they run until
    // their ends close them or the drain deadline cuts them.
    spliced_done.recv().await;
}

/// Resolves once the drain signal fires (or its sender is gone).
async fn draining(drain: &mut DrainSignal) {
    let _ = drain.wait_for(Option::is_some).await;
}
