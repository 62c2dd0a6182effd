//! What happens to a connection between `accept` and the protocol: the
//! listener's connection limit, the place it takes in the open-connection
//! gauge, and the one step that turns the accepted socket into the stream the
//! rest of the proxy reads (where a TLS handshake, or an SNI peek, will stand
//! before the protocol is chosen).

use crate::tls::Bound;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use tokio::net::TcpStream;

use crate::proxy::Shared;
use crate::telemetry::gauge::{Gauge, Held};
use crate::transport::Stream;

/// A listener's open-connection gauge, reached through the shared state.
#[derive(Debug)]
pub struct ListenerActive(Arc<Shared>, usize);

impl Gauge for ListenerActive {
    fn gauge(&self) -> &AtomicU64 {
        &self.0.listeners[self.1].connections_active
    }
}

/// A connection's place among its listener's open ones, however it ends.
pub type Active = Held<ListenerActive>;

/// Counts an accepted connection in, or refuses it (`None`) when the listener
/// already has `max_connections` open (0: no limit). A refused connection is
/// closed unread: cheaper than any answer, and the client sees at once.
pub fn admit(shared: &Arc<Shared>, listener: usize, max_connections: u32) -> Option<Active> {
    let stats = &shared.listeners[listener];
    let max = u64::from(max_connections);
    if max > 0 && stats.connections_active.load(Relaxed) >= max {
        stats.connections_refused.fetch_add(1, Relaxed);
        return None;
    }
    stats.connections_total.fetch_add(1, Relaxed);
    Some(Held::new(ListenerActive(shared.clone(), listener)))
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
    /// On a TLS listener: the certificate entry the handshake chose.
    pub tls: Option<Bound>,
}

/// The accepted socket as the stream the protocol is served on.
pub fn accepted(stream: TcpStream) -> Stream {
    Stream::tcp(stream)
}
