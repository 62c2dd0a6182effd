//! Listeners: the accept loop and per-connection HTTP/1.1 serving, with
//! connection limits, idle and header timeouts, and graceful drain on shutdown.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::inspect::{Findings, Inspected, Tracker};
use crate::proxy::{self, Connection, Shared};
use crate::snapshot::{Limits, Protocol};
use crate::splice;
use crate::workers::DrainSignal;

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

/// Keeps the active-connections gauge right however a connection ends.
#[derive(Debug)]
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
    // Rebuilt only when a reload changes the limits.
    let mut limits = shared.published.load().limits.clone();
    let mut builder = connection_builder(&settings, &limits);
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
                {
                    let published = shared.published.load();
                    if published.limits != limits {
                        limits = published.limits.clone();
                        builder = connection_builder(&settings, &limits);
                    }
                }
                let stats = &shared.listeners[index];
                let max = limits.max_connections;
                // Past the limit the connection is closed unread: cheaper than
                // any answer, and the client sees at once that it was refused.
                if max > 0 && stats.connections_active.load(Relaxed) >= u64::from(max) {
                    stats.connections_refused.fetch_add(1, Relaxed);
                    drop(stream);
                    continue;
                }
                let _ = stream.set_nodelay(true);
                stats.connections_total.fetch_add(1, Relaxed);
                stats.connections_active.fetch_add(1, Relaxed);
                let guard = ActiveGuard(shared.clone(), index);
                if protocol == Protocol::Tcp {
                    tokio::spawn(serve_tcp(stream, shared.clone(), index, limits.idle_timeout_ms, guard, spliced.clone()));
                    continue;
                }
                let findings = Arc::new(Findings::default());
                let tracker = Tracker::new(
                    settings.max_header_bytes,
                    limits.max_request_headers as usize,
                    findings.clone(),
                );
                let stream = Inspected::new(stream, tracker, settings.header_read_timeout);
                let conn = Arc::new(Connection {
                    shared: shared.clone(),
                    listener: index,
                    port,
                    max_header_bytes: settings.max_header_bytes,
                    peer,
                    findings,
                    // Held by whatever serves this client, an upgraded session
                    // included: it counts as open (and against the limit) and
                    // a drain waits for it.
                    hold: Arc::new((guard, spliced.clone())),
                });
                let service = service_fn(move |req| proxy::handle(req, conn.clone()));
                // `with_upgrades` lets a 101 hand the socket to its splice.
                let connection = builder.serve_connection(TokioIo::new(stream), service).with_upgrades();
                let mut stop = stop_rx.clone();
                tokio::spawn(async move {
                    let mut connection = std::pin::pin!(connection);
                    // Biased: the connection is polled first and no random
                    // branch order is drawn per wake-up; `changed` is a version
                    // check, and `stop` only ever turns true.
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

/// One connection on a `tcp` listener, on the table loaded when it was accepted.
async fn serve_tcp(
    stream: tokio::net::TcpStream,
    shared: Arc<Shared>,
    index: usize,
    idle_timeout_ms: u64,
    guard: ActiveGuard,
    _open: mpsc::Sender<()>,
) {
    let published = shared.published.load_full();
    let route = stream
        .local_addr()
        .ok()
        .and_then(|local| published.table.tcp.route_for(local));
    let Some(route) = route else {
        shared.listeners[index].unrouted.fetch_add(1, Relaxed);
        return;
    };
    let cx = splice::Context {
        connect_timeout: Duration::from_millis(published.upstreams.settings.connect_timeout_ms),
        idle_timeout: (idle_timeout_ms > 0).then(|| Duration::from_millis(idle_timeout_ms)),
        gauges: &shared.connections,
        budget: &shared.mirror_budget,
    };
    splice::serve(stream, route, cx).await;
    drop(guard);
}

fn connection_builder(settings: &ServerSettings, limits: &Limits) -> http1::Builder {
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

/// Resolves once the drain signal fires (or its sender is gone).
async fn draining(drain: &mut DrainSignal) {
    let _ = drain.wait_for(Option::is_some).await;
}
