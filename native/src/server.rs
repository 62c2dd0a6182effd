//! Listeners: the accept loop and per-connection HTTP/1.1 serving, with
//! graceful drain on shutdown.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::proxy::{self, Connection, Shared};
use crate::workers::DrainSignal;

/// How connections are served.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// A client must send its whole request head within this (slowloris guard).
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

/// Keeps the active-connections gauge right however a connection ends.
struct ActiveGuard(Arc<Shared>, usize);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.listeners[self.1]
            .connections_active
            .fetch_sub(1, Relaxed);
    }
}

/// Accepts until told to drain, then waits for open connections to finish
/// their in-flight requests (keep-alive connections close after them).
pub async fn serve(
    listener: TcpListener,
    index: usize,
    shared: Arc<Shared>,
    settings: ServerSettings,
    mut drain: DrainSignal,
) {
    let graceful = GracefulShutdown::new();
    let port = listener.local_addr().map_or(0, |a| a.port());
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        .max_buf_size(settings.max_header_bytes.max(8192))
        .keep_alive(true);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(pair) => pair,
                    Err(_) => {
                        // Out of file descriptors and the like: back off
                        // instead of spinning, then keep serving.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let stats = &shared.listeners[index];
                stats.connections_total.fetch_add(1, Relaxed);
                stats.connections_active.fetch_add(1, Relaxed);
                let guard = ActiveGuard(shared.clone(), index);
                let conn = Arc::new(Connection {
                    shared: shared.clone(),
                    listener: index,
                    port,
                    max_header_bytes: settings.max_header_bytes,
                    peer,
                });
                let service = service_fn(move |req| proxy::handle(req, conn.clone()));
                let served = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
                tokio::spawn(async move {
                    let _ = served.await;
                    drop(guard);
                });
            }
            _ = draining(&mut drain) => break,
        }
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Resolves once the drain signal fires (or its sender is gone).
async fn draining(drain: &mut DrainSignal) {
    let _ = drain.wait_for(Option::is_some).await;
}
