//! Mirror feeds: a sampled connection (tcp route, upgraded session, tunnel)
//! feeds a mirror through a bounded queue drained by a task of its own, which
//! connects to the mirror (for an upgrade: sends the upgrade request and waits
//! for its 101), writes what is queued and discards whatever the mirror
//! answers. Cuts are counted by reason; the client never waits.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::body::MirrorBudget;
use crate::splice::queue::{queue, QueueReceiver, QueueSender, Refused};
use crate::telemetry::gauge::{Field, Held};
use crate::telemetry::{TcpCutReason, TcpMirrorStats};
use crate::transport::Stream;
use crate::upstream::cluster::Cluster;
use crate::upstream::dial::{dial, DialError};
use crate::upstream::gauges::{ConnectionGauges, Gauge, GaugeHold, Role};
use crate::upstream::MIRROR_RECEIVE_BUFFER;

// === one connection ===

/// What a tcp connection needs besides its sockets.
pub struct Context<'a> {
    pub connect_timeout: Duration,
    /// `None`: never closed for idleness.
    pub idle_timeout: Option<Duration>,
    pub gauges: &'a ConnectionGauges,
    pub budget: &'a Arc<MirrorBudget>,
}

// === mirrors ===

/// One mirror of one connection, as the splice sees it.
pub struct Feed {
    /// `None` once cut or finished.
    queue: Option<QueueSender>,
    /// Dropped when the client's side ends: the mirror's finish timeout starts.
    ended: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
    stats: Arc<TcpMirrorStats>,
}

impl Feed {
    /// Offers a chunk; on a full queue the mirror is cut at once. Never waits.
    pub(crate) fn offer(&mut self, chunk: &Bytes) {
        let Some(queue) = &self.queue else {
            self.stats
                .bytes_dropped
                .fetch_add(chunk.len() as u64, Relaxed);
            return;
        };
        match queue.offer(chunk) {
            Ok(()) => {}
            Err(refused) => {
                let mut dropped = chunk.len();
                if refused == Refused::Full && queue.close() {
                    // The mirror task may be stuck in a write to a stalled peer:
                    // aborting it closes its socket; what it held is dropped.
                    self.task.abort();
                    dropped += queue.queued();
                    self.stats.cut(TcpCutReason::BufferFull);
                }
                self.stats.bytes_dropped.fetch_add(dropped as u64, Relaxed);
                self.queue = None;
            }
        }
    }

    /// The client's stream has ended: the mirror gets a FIN after the rest.
    pub(crate) fn finish(&mut self) {
        self.queue = None;
        self.ended = None;
    }
}

/// What one mirror feed is opened with.
pub struct FeedSpec<'a> {
    pub cluster: &'a Arc<Cluster>,
    pub buffer_bytes: usize,
    /// Bounds the upgrade handshake, and the rest once the client has ended.
    pub timeout: Duration,
    pub stats: &'a Arc<TcpMirrorStats>,
    /// An upgrade request head written first; the bytes follow only once the
    /// mirror has answered it with 101 (they queue, bounded, meanwhile).
    pub handshake: Option<Bytes>,
}

pub fn start_feed(spec: FeedSpec<'_>, cx: &Context<'_>) -> Option<Feed> {
    let stats = spec.stats.clone();
    stats.opened.fetch_add(1, Relaxed);
    let Ok(endpoint) = spec.cluster.pick_for_mirror() else {
        stats.cut(TcpCutReason::NoEndpoint);
        return None;
    };
    let (tx, rx) = queue(spec.buffer_bytes, cx.budget.clone());
    let (ended, ended_rx) = oneshot::channel();
    let task = tokio::spawn(run_mirror(
        rx,
        ended_rx,
        MirrorTarget {
            cluster: spec.cluster.clone(),
            endpoint: endpoint.index,
            connect_timeout: cx.connect_timeout,
            finish_timeout: spec.timeout,
            handshake: spec.handshake,
        },
        cx.gauges.gauge(Role::Mirror, endpoint.authority.as_str()),
        stats.clone(),
    ));
    Some(Feed {
        queue: Some(tx),
        ended: Some(ended),
        task,
        stats,
    })
}

enum MirrorEnd {
    Failed,
    TimedOut,
}

/// Connects to the mirror (chunks queue meanwhile), writes every chunk, reads
/// and discards the mirror's answers. Once the client's side has ended
/// (`ended` fires), the rest must be written within `finish_timeout`.
struct MirrorTarget {
    /// The endpoint is `cluster.endpoint(endpoint)`: its connect back-off
    /// learns from each attempt, so a dead mirror costs one try per back-off.
    cluster: Arc<Cluster>,
    endpoint: usize,
    connect_timeout: Duration,
    finish_timeout: Duration,
    handshake: Option<Bytes>,
}

async fn run_mirror(
    mut rx: QueueReceiver,
    ended: oneshot::Receiver<()>,
    target: MirrorTarget,
    gauge: Arc<Gauge>,
    stats: Arc<TcpMirrorStats>,
) {
    let _active = Held::new(Field(stats.clone(), |s: &TcpMirrorStats| &s.active));
    // Held apart from `rx`, which the forwarding borrows.
    let state = rx.state();
    let give_up = |reason: TcpCutReason| {
        if state.close() {
            stats.cut(reason);
            stats
                .bytes_dropped
                .fetch_add(state.queued() as u64, Relaxed);
        }
    };
    let finish_timeout = target.finish_timeout;
    let mut stream = match open_mirror(target, &gauge).await {
        Ok(stream) => stream,
        Err(reason) => return give_up(reason),
    };
    let _open = GaugeHold::new(gauge);
    match pump(&mut stream, &mut rx, ended, finish_timeout, &stats).await {
        Ok(()) => {
            if state.close() {
                stats.completed.fetch_add(1, Relaxed);
            }
        }
        Err(MirrorEnd::Failed) => give_up(TcpCutReason::Failed),
        Err(MirrorEnd::TimedOut) => give_up(TcpCutReason::Timeout),
    }
}

/// Connects to the mirror endpoint (learning its back-off) and, for an
/// upgrade, sends the upgrade request and waits for the mirror's 101.
async fn open_mirror(target: MirrorTarget, gauge: &Gauge) -> Result<Stream, TcpCutReason> {
    let endpoint = target.cluster.endpoint(target.endpoint);
    let backoff = &endpoint.health.backoff;
    let tls = target.cluster.spliced_tls();
    let dialed = dial(
        &endpoint.authority,
        target.connect_timeout,
        Some(MIRROR_RECEIVE_BUFFER),
        tls,
        gauge,
    );
    let mut stream = match dialed.await {
        Ok(stream) => stream,
        Err(failed) => {
            backoff.connect_failed();
            return Err(match failed {
                DialError::Tls => TcpCutReason::TlsFailed,
                DialError::Failed | DialError::TimedOut => TcpCutReason::ConnectFailed,
            });
        }
    };
    backoff.connected();
    if let Some(head) = target.handshake {
        let handshake = upgrade_handshake(&mut stream, &head);
        match tokio::time::timeout(target.finish_timeout, handshake).await {
            Ok(Ok(true)) => {}
            Ok(Ok(false)) => return Err(TcpCutReason::NotUpgraded),
            Ok(Err(_)) => return Err(TcpCutReason::Failed),
            Err(_) => return Err(TcpCutReason::Timeout),
        }
    }
    Ok(stream)
}

/// Writes what is queued to the mirror and discards what it answers, until
/// the queue ends (then the mirror gets the rest of `finish_timeout` to read
/// it and close, so that it sees a whole session, not a reset), the mirror
/// fails, or the client's side ended more than `finish_timeout` ago.
async fn pump(
    stream: &mut Stream,
    rx: &mut QueueReceiver,
    mut ended: oneshot::Receiver<()>,
    finish_timeout: Duration,
    stats: &TcpMirrorStats,
) -> Result<(), MirrorEnd> {
    let (mut read, mut write) = stream.split();
    let discard = async {
        let mut sink = vec![0u8; DISCARD_CHUNK];
        loop {
            if read.read(&mut sink).await? == 0 {
                return Ok::<(), std::io::Error>(());
            }
        }
    };
    let forward = async {
        while let Some(chunk) = rx.next().await {
            let written = write.write_all(chunk.bytes()).await;
            if written.is_ok() {
                stats
                    .bytes_sent
                    .fetch_add(chunk.bytes().len() as u64, Relaxed);
            }
            rx.done(chunk);
            written?;
        }
        write.shutdown().await
    };
    tokio::pin!(forward, discard);
    let mut ended_at: Option<Instant> = None;
    let deadline = |at: Option<Instant>| at.unwrap_or_else(Instant::now) + finish_timeout;
    // Discarding runs alongside so that a chatty mirror never blocks on its
    // own send buffer; its early end (EOF) does not stop the forwarding.
    let mut discarding = true;
    loop {
        tokio::select! {
            r = &mut forward => {
                r.map_err(|_| MirrorEnd::Failed)?;
                break;
            }
            r = &mut discard, if discarding => match r {
                Ok(()) => discarding = false,
                Err(_) => return Err(MirrorEnd::Failed),
            },
            _ = &mut ended, if ended_at.is_none() => ended_at = Some(Instant::now()),
            () = tokio::time::sleep_until(deadline(ended_at).into()), if ended_at.is_some() => {
                return Err(MirrorEnd::TimedOut)
            }
        }
    }
    if discarding {
        let _ = tokio::time::timeout_at(deadline(ended_at).into(), &mut discard).await;
    }
    Ok(())
}

/// What a mirror's answer is read (and dropped) in.
const DISCARD_CHUNK: usize = 16 * 1024;

/// Longest response head an upgrade mirror may answer with.
const MAX_HANDSHAKE_HEAD: usize = 16 * 1024;

/// Sends an upgrade request head and reads the response head: true on 101.
/// Whatever the mirror sends after its head is its own session's output,
/// discarded like the rest of what it says.
async fn upgrade_handshake(stream: &mut Stream, head: &[u8]) -> std::io::Result<bool> {
    stream.write_all(head).await?;
    let mut got = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(false);
        }
        got.extend_from_slice(&buf[..n]);
        if let Some(status) = response_status(&got) {
            return Ok(status == 101);
        }
        if got.len() > MAX_HANDSHAKE_HEAD {
            return Ok(false);
        }
    }
}

/// The status of a complete response head; `None` while it is incomplete.
fn response_status(got: &[u8]) -> Option<u16> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut response = httparse::Response::new(&mut headers);
    match response.parse(got) {
        Ok(httparse::Status::Complete(_)) => response.code,
        Ok(httparse::Status::Partial) => None,
        // Not HTTP: not an accepted upgrade.
        Err(_) => Some(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot;
    use crate::upstream::pool::EndpointIds;
    use tokio::net::TcpListener;

    /// What a feed needs of a mirror: its cluster (one endpoint) and its stats.
    struct Mirror {
        cluster: Arc<Cluster>,
        stats: Arc<TcpMirrorStats>,
    }

    fn mirror_at(addr: std::net::SocketAddr) -> Mirror {
        let spec = snapshot::Cluster {
            host: "mirror".into(),
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
        let cluster = Cluster::compile(&spec, &EndpointIds::default()).unwrap();
        Mirror {
            cluster: Arc::new(cluster),
            stats: Arc::default(),
        }
    }

    #[test]
    fn an_upgrade_mirror_is_accepted_only_on_a_whole_101_head() {
        assert_eq!(response_status(b"HTTP/1.1 101 Switching"), None);
        assert_eq!(
            response_status(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81"),
            Some(101)
        );
        assert_eq!(response_status(b"HTTP/1.1 200 OK\r\n\r\n"), Some(200));
        assert_eq!(response_status(b"\x00\x01garbage\r\n\r\n"), Some(0));
    }

    #[tokio::test]
    async fn an_upgrade_mirror_gets_the_head_then_the_bytes_after_its_101() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mirror = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            while !head.ends_with(b"\r\n\r\n") {
                let mut byte = [0u8; 1];
                s.read_exact(&mut byte).await.unwrap();
                head.push(byte[0]);
            }
            s.write_all(b"HTTP/1.1 101 Switching Protocols\r\n\r\nhello from the mirror")
                .await
                .unwrap();
            let mut rest = Vec::new();
            s.read_to_end(&mut rest).await.unwrap();
            (head, rest)
        });
        let m = mirror_at(addr);
        let (gauges, budget) = (ConnectionGauges::default(), MirrorBudget::new(1 << 20));
        let cx = Context {
            connect_timeout: Duration::from_secs(1),
            idle_timeout: None,
            gauges: &gauges,
            budget: &budget,
        };
        let spec = FeedSpec {
            cluster: &m.cluster,
            buffer_bytes: 1 << 20,
            timeout: Duration::from_secs(2),
            stats: &m.stats,
            handshake: Some(Bytes::from_static(
                b"GET /ws HTTP/1.1\r\nupgrade: websocket\r\n\r\n",
            )),
        };
        let mut feed = start_feed(spec, &cx).unwrap();
        // Offered before the handshake is done: queued, sent after the 101.
        feed.offer(&Bytes::from_static(b"frame one,"));
        feed.offer(&Bytes::from_static(b"frame two"));
        feed.finish();
        let (head, rest) = mirror.await.unwrap();
        assert_eq!(head, b"GET /ws HTTP/1.1\r\nupgrade: websocket\r\n\r\n");
        assert_eq!(rest, b"frame one,frame two");
        for _ in 0..100 {
            if m.stats.active.load(Relaxed) == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(m.stats.completed.load(Relaxed), 1);
    }

    #[tokio::test]
    async fn an_upgrade_mirror_that_refuses_is_cut_as_not_upgraded() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let refusing = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 256];
            let _ = s.read(&mut buf).await.unwrap();
            s.write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
                .await
                .unwrap();
            let mut rest = Vec::new();
            let _ = s.read_to_end(&mut rest).await;
            rest
        });
        let m = mirror_at(addr);
        let (gauges, budget) = (ConnectionGauges::default(), MirrorBudget::new(1 << 20));
        let cx = Context {
            connect_timeout: Duration::from_secs(1),
            idle_timeout: None,
            gauges: &gauges,
            budget: &budget,
        };
        let spec = FeedSpec {
            cluster: &m.cluster,
            buffer_bytes: 1 << 20,
            timeout: Duration::from_secs(2),
            stats: &m.stats,
            handshake: Some(Bytes::from_static(b"GET / HTTP/1.1\r\n\r\n")),
        };
        let mut feed = start_feed(spec, &cx).unwrap();
        feed.offer(&Bytes::from_static(b"never sent"));
        assert_eq!(refusing.await.unwrap(), b"", "nothing follows a refusal");
        for _ in 0..100 {
            if m.stats.active.load(Relaxed) == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(m.stats.cut_count(TcpCutReason::NotUpgraded), 1);
        assert_eq!(m.stats.bytes_dropped.load(Relaxed), 10);
        drop(feed);
    }
}
