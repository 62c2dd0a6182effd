//! Serving a tcp route's connection: pick the destination, dial it within the
//! cluster's connection limit, start the sampled mirrors' feeds, and relay
//! until both sides are done or the idle timeout.

use std::sync::atomic::Ordering::Relaxed;

use bytes::Bytes;
use tokio::io::AsyncWriteExt;

use crate::http::retry::TryOutcome;
use crate::route::tcp::{TcpMirror, TcpRoute};
use crate::splice::feed::{start_feed, Context, Feed, FeedSpec};
use crate::splice::relay::splice;
use crate::telemetry::Held;
use crate::transport::Stream;
use crate::upstream::dial::dial;
use crate::upstream::gauges::{GaugeHold, Role};

/// Serves one accepted connection on `route` to the end. `passthrough`: the
/// bytes already read of a TLS connection passed through unterminated (its
/// ClientHello), sent first; the destination gets them as they came, so no
/// TLS is originated over them.
pub async fn serve(
    mut client: Stream,
    route: &TcpRoute,
    cx: Context<'_>,
    passthrough: Option<Bytes>,
) {
    let destination = route.pick();
    let stats = &destination.stats;
    stats.connections_total.fetch_add(1, Relaxed);
    let _active = Held::new(&stats.connections_active);
    // The cluster's limit (DestinationRule tcp.maxConnections) counts connections here.
    let Ok(lease) = destination.cluster.acquire() else {
        stats.connect_failed.fetch_add(1, Relaxed);
        return;
    };
    let endpoint = lease.endpoint();
    let gauge = cx.gauges.gauge(Role::Primary, endpoint.authority.as_str());
    let tls = match passthrough {
        None => destination.cluster.spliced_tls(),
        Some(_) => None,
    };
    let dialed = dial(&endpoint.authority, cx.connect_timeout, None, tls, &gauge).await;
    let sent = match (dialed, &passthrough) {
        (Ok(mut stream), Some(first)) => stream.write_all(first).await.map(|()| stream),
        (Ok(stream), None) => Ok(stream),
        (Err(_), _) => Err(std::io::ErrorKind::NotConnected.into()),
    };
    let mut upstream = match sent {
        Ok(stream) => stream,
        Err(_) => {
            stats.connect_failed.fetch_add(1, Relaxed);
            destination
                .cluster
                .record(endpoint, TryOutcome::ConnectFailure);
            return;
        }
    };
    let _open = GaugeHold::new(gauge);
    let mut feeds: Vec<Feed> = route
        .mirrors
        .iter()
        .filter(|m| m.sampler.sample())
        .filter_map(|m| start_mirror(m, &cx))
        .collect();
    let idle = splice(
        &mut client,
        &mut upstream,
        &mut feeds,
        cx.idle_timeout,
        stats,
    )
    .await;
    if idle {
        stats.idle_timeouts.fetch_add(1, Relaxed);
    }
    // Dropping the feeds ends the mirror queues: each mirror task writes what
    // is queued, then closes (bounded by the mirror's timeout).
    drop(feeds);
}

fn start_mirror(mirror: &TcpMirror, cx: &Context<'_>) -> Option<Feed> {
    let spec = FeedSpec {
        cluster: &mirror.cluster,
        buffer_bytes: mirror.buffer_bytes,
        timeout: mirror.timeout,
        stats: &mirror.stats,
        handshake: None,
    };
    start_feed(spec, cx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::MirrorBudget;
    use crate::route::tcp::TcpRoutes;
    use crate::snapshot;
    use crate::telemetry::{StatsRegistry, TcpCutReason};
    use crate::upstream::cluster::Cluster;
    use crate::upstream::gauges::ConnectionGauges;
    use crate::upstream::pool::EndpointIds;
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::time::{Duration, Instant};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::task::JoinHandle;

    fn one_route(upstream: SocketAddr, mirror: Option<(SocketAddr, u64)>) -> TcpRoutes {
        let cluster = |addr: SocketAddr, host: &str| snapshot::Cluster {
            host: host.into(),
            subset: None,
            endpoints: vec![addr.to_string()],
            weights: vec![],
            load_balancer: Default::default(),
            max_requests: None,
            outlier_detection: None,
            protocol: Default::default(),
            max_requests_per_connection: None,
            max_concurrent_streams: None,
            tls: None,
        };
        let mut clusters = vec![cluster(upstream, "primary")];
        let mut mirrors = vec![];
        if let Some((addr, buffer_bytes)) = mirror {
            clusters.push(cluster(addr, "mirror"));
            mirrors.push(snapshot::TcpMirror {
                cluster: 1,
                per_million: 1_000_000,
                buffer_bytes,
                timeout_ms: 2_000,
            });
        }
        let ids = EndpointIds::default();
        let compiled: Vec<Arc<Cluster>> = clusters
            .iter()
            .map(|c| Arc::new(Cluster::compile(c, &ids).unwrap()))
            .collect();
        TcpRoutes::compile(
            &[snapshot::TcpRoute {
                virtual_service: "vs".into(),
                name: "0".into(),
                matches: vec![],
                destinations: vec![snapshot::TcpDestination {
                    cluster: 0,
                    weight: 1,
                }],
                mirrors,
            }],
            &|i| Ok(compiled[i as usize].clone()),
            &mut StatsRegistry::default(),
        )
        .unwrap()
    }

    /// Accepts one connection and answers it with what `respond` makes of
    /// everything the client sent before its FIN.
    async fn peer(respond: fn(Vec<u8>) -> Vec<u8>) -> (SocketAddr, JoinHandle<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).await.unwrap();
            s.write_all(&respond(got.clone())).await.unwrap();
            s.shutdown().await.unwrap();
            got
        });
        (addr, task)
    }

    /// Runs one proxied connection: the client sends `data`, half-closes, and reads to the end.
    async fn through(routes: Arc<TcpRoutes>, data: Vec<u8>) -> Vec<u8> {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let proxy = tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            let route = routes.route_for(s.local_addr().unwrap(), None).unwrap();
            let gauges = ConnectionGauges::default();
            let budget = MirrorBudget::new(1 << 30);
            let cx = Context {
                connect_timeout: Duration::from_secs(1),
                idle_timeout: Some(Duration::from_secs(5)),
                gauges: &gauges,
                budget: &budget,
            };
            serve(Stream::tcp(s), route, cx, None).await;
        });
        let mut client = TcpStream::connect(addr).await.unwrap();
        let (mut r, mut w) = client.split();
        let send = async {
            w.write_all(&data).await.unwrap();
            // Half-close: the upstream must see EOF and still be able to answer.
            w.shutdown().await.unwrap();
        };
        let mut answer = Vec::new();
        let recv = r.read_to_end(&mut answer);
        let ((), n) = tokio::join!(send, recv);
        n.unwrap();
        proxy.await.unwrap();
        answer
    }

    fn reversed(mut v: Vec<u8>) -> Vec<u8> {
        v.reverse();
        v
    }

    #[tokio::test]
    async fn bytes_and_half_close_cross_both_ways() {
        let (upstream, got) = peer(reversed).await;
        let routes = Arc::new(one_route(upstream, None));
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let answer = through(routes.clone(), data.clone()).await;
        assert_eq!(got.await.unwrap(), data);
        assert_eq!(answer, reversed(data.clone()));
        let stats = &routes.routes[0].destinations[0].stats;
        assert_eq!(stats.bytes_received.load(Relaxed), data.len() as u64);
        assert_eq!(stats.bytes_sent.load(Relaxed), data.len() as u64);
        assert_eq!(stats.connections_active.load(Relaxed), 0);
    }

    #[tokio::test]
    async fn a_mirror_gets_the_client_bytes_and_its_answer_is_dropped() {
        let (upstream, got) = peer(|_| b"primary".to_vec()).await;
        let (mirror, mirror_got) = peer(|_| b"mirror says no".to_vec()).await;
        let routes = Arc::new(one_route(upstream, Some((mirror, 1 << 20))));
        let data = b"SET k v\r\n".repeat(1000);
        let answer = through(routes.clone(), data.clone()).await;
        assert_eq!(answer, b"primary");
        assert_eq!(got.await.unwrap(), data);
        assert_eq!(mirror_got.await.unwrap(), data);
        let stats = &routes.routes[0].mirrors[0].stats;
        for _ in 0..100 {
            if stats.active.load(Relaxed) == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(stats.opened.load(Relaxed), 1);
        assert_eq!(stats.completed.load(Relaxed), 1);
        assert_eq!(stats.bytes_sent.load(Relaxed), data.len() as u64);
        assert_eq!(stats.bytes_dropped.load(Relaxed), 0);
    }

    #[tokio::test]
    async fn a_stalled_mirror_is_cut_and_the_client_goes_on() {
        let (upstream, got) = peer(|v| v.len().to_string().into_bytes()).await;
        // Accepts, never reads: its socket buffers fill, then the queue.
        let stalled = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mirror = stalled.local_addr().unwrap();
        let hold = tokio::spawn(async move {
            let (s, _) = stalled.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(30)).await;
            drop(s);
        });
        let routes = Arc::new(one_route(upstream, Some((mirror, 64 * 1024))));
        let data = vec![7u8; 32 * 1024 * 1024];
        let answer = through(routes.clone(), data.clone()).await;
        assert_eq!(answer, data.len().to_string().into_bytes());
        assert_eq!(got.await.unwrap().len(), data.len());
        let stats = &routes.routes[0].mirrors[0].stats;
        assert_eq!(stats.cut_count(TcpCutReason::BufferFull), 1);
        assert_eq!(stats.completed.load(Relaxed), 0);
        let sent = stats.bytes_sent.load(Relaxed);
        let dropped = stats.bytes_dropped.load(Relaxed);
        assert!(
            dropped > 0 && sent + dropped <= data.len() as u64,
            "{sent} + {dropped}"
        );
        hold.abort();
    }

    #[tokio::test]
    async fn a_quiet_connection_is_closed_after_the_idle_timeout() {
        let upstream = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let routes = one_route(upstream.local_addr().unwrap(), None);
        let front = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(front.local_addr().unwrap())
            .await
            .unwrap();
        let (accepted, _) = front.accept().await.unwrap();
        let route = routes
            .route_for(accepted.local_addr().unwrap(), None)
            .unwrap();
        let (gauges, budget) = (ConnectionGauges::default(), MirrorBudget::new(1));
        let cx = Context {
            connect_timeout: Duration::from_secs(1),
            idle_timeout: Some(Duration::from_millis(100)),
            gauges: &gauges,
            budget: &budget,
        };
        let started = Instant::now();
        serve(Stream::tcp(accepted), route, cx, None).await;
        assert!(started.elapsed() >= Duration::from_millis(100));
        let mut rest = Vec::new();
        assert_eq!(client.read_to_end(&mut rest).await.unwrap(), 0);
        let stats = &route.destinations[0].stats;
        assert_eq!(stats.idle_timeouts.load(Relaxed), 1);
        drop(upstream);
    }

    #[tokio::test]
    async fn a_refused_upstream_closes_the_client_and_is_counted() {
        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let routes = Arc::new(one_route(closed.local_addr().unwrap(), None));
        drop(closed);
        let front = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(front.local_addr().unwrap())
            .await
            .unwrap();
        let (accepted, _) = front.accept().await.unwrap();
        let (gauges, budget) = (ConnectionGauges::default(), MirrorBudget::new(1));
        let cx = Context {
            connect_timeout: Duration::from_secs(1),
            idle_timeout: None,
            gauges: &gauges,
            budget: &budget,
        };
        serve(Stream::tcp(accepted), &routes.routes[0], cx, None).await;
        let mut rest = Vec::new();
        assert_eq!(client.read_to_end(&mut rest).await.unwrap(), 0);
        let stats = &routes.routes[0].destinations[0].stats;
        assert_eq!(stats.connect_failed.load(Relaxed), 1);
    }

    #[tokio::test]
    async fn a_refusing_mirror_is_counted_and_changes_nothing() {
        let (upstream, got) = peer(reversed).await;
        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mirror = closed.local_addr().unwrap();
        drop(closed);
        let routes = Arc::new(one_route(upstream, Some((mirror, 1 << 20))));
        let answer = through(routes.clone(), b"hello".to_vec()).await;
        assert_eq!(answer, b"olleh");
        assert_eq!(got.await.unwrap(), b"hello");
        let stats = &routes.routes[0].mirrors[0].stats;
        for _ in 0..100 {
            if stats.active.load(Relaxed) == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(stats.cut_count(TcpCutReason::ConnectFailed), 1);
    }
}
