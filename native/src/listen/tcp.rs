//! A `tcp` listener's connection: matched once against the tcp routes of the
//! table loaded when it was accepted, then served by `proxy::tcp`.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use crate::proxy::tcp;
use crate::proxy::Shared;
use crate::splice::feed::Context;
use crate::transport::Stream;

/// Serves one connection; `hold` keeps its place in the listener's count and
/// drain until it ends.
pub async fn serve(
    stream: Stream,
    shared: Arc<Shared>,
    index: usize,
    idle_timeout_ms: u64,
    hold: Arc<dyn std::fmt::Debug + Send + Sync>,
) {
    let published = shared.published.load_full();
    let route = stream
        .tcp_ref()
        .local_addr()
        .ok()
        .and_then(|local| published.table.tcp.route_for(local));
    let Some(route) = route else {
        shared.listeners[index].unrouted.fetch_add(1, Relaxed);
        return;
    };
    let cx = Context {
        connect_timeout: Duration::from_millis(published.upstreams.settings.connect_timeout_ms),
        idle_timeout: (idle_timeout_ms > 0).then(|| Duration::from_millis(idle_timeout_ms)),
        gauges: &shared.connections,
        budget: &shared.mirror_budget,
    };
    tcp::serve(stream, route, cx).await;
    drop(hold);
}
