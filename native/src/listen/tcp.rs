//! A `tcp` listener's connection: matched once against the tcp routes of the
//! table loaded when it was accepted, then served by `proxy::tcp`. A `tls`
//! (passthrough) listener's: its ClientHello read first, within the header
//! read timeout, and matched against the tls routes by its SNI too.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use crate::proxy::tcp;
use crate::proxy::Shared;
use crate::splice::feed::Context;
use crate::tls::sni;
use crate::transport::Stream;

/// Which listener a spliced connection came on, and how it is read.
#[derive(Debug, Clone, Copy)]
pub struct Listening {
    pub index: usize,
    pub idle_timeout_ms: u64,
    /// A passthrough (`tls`) listener: how long its ClientHello may take.
    pub passthrough: Option<Duration>,
}

/// Serves one connection; `hold` keeps its place in the listener's count and
/// drain until it ends.
pub async fn serve(
    mut stream: Stream,
    shared: Arc<Shared>,
    listener: Listening,
    hold: Arc<dyn std::fmt::Debug + Send + Sync>,
) {
    let index = listener.index;
    let published = shared.published.load_full();
    let (routes, hello) = match listener.passthrough {
        None => (&published.table.tcp, None),
        Some(deadline) => match sni::read_hello(&mut stream, deadline).await {
            Ok(hello) => (&published.table.tls, Some(hello)),
            Err(_) => {
                // Not TLS, or too slow to say which server: nothing to route.
                shared.listeners[index].unrouted.fetch_add(1, Relaxed);
                return;
            }
        },
    };
    let sni = hello.as_ref().and_then(|h| h.server_name.as_deref());
    let route = stream
        .tcp_ref()
        .local_addr()
        .ok()
        .and_then(|local| routes.route_for(local, sni));
    let Some(route) = route else {
        shared.listeners[index].unrouted.fetch_add(1, Relaxed);
        return;
    };
    let idle_timeout_ms = listener.idle_timeout_ms;
    let cx = Context {
        connect_timeout: Duration::from_millis(published.upstreams.settings.connect_timeout_ms),
        idle_timeout: (idle_timeout_ms > 0).then(|| Duration::from_millis(idle_timeout_ms)),
        gauges: &shared.connections,
        budget: &shared.mirror_budget,
    };
    tcp::serve(stream, route, cx, hello.map(|h| h.read)).await;
    drop(hold);
}
