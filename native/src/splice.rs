//! TCP routes: a connection accepted on a `tcp` listener is matched once, sent
//! to one weighted destination, and its bytes are spliced both ways (half-close
//! carried across) until both sides are done, an error, or the idle timeout.
//!
//! A sampled connection also feeds a mirror: every client -> upstream chunk is
//! offered to a byte-bounded queue drained by a task of its own, which writes
//! to the mirror and discards whatever the mirror answers. Offering never
//! waits: when the queue is full (or the engine-wide mirror budget is spent)
//! the mirror connection is cut and counted, and the client goes on untouched.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::body::{MirrorBudget, Reserved};
use crate::cluster::Cluster;
use crate::retry::TryOutcome;
use crate::sampling::{Sampler, WeightedPicker};
use crate::snapshot;
use crate::stats::{StatsKey, StatsRegistry, TcpCutReason, TcpMirrorStats, TcpStats};
use crate::upstream::{ConnectionGauges, GaugeHold, Role};

/// Bytes read from a socket at once, at first: small, so that the many quiet
/// connections a cache or database proxy holds cost little memory.
const MIN_CHUNK: usize = 16 * 1024;
/// What a read grows to while it keeps filling its buffer (a bulk transfer):
/// at 256 KiB the copy costs as little CPU per byte as splice(2) through a pipe
/// (examples/splice_vs_copy.rs), at 64 KiB about a third more.
const MAX_CHUNK: usize = 256 * 1024;

/// The next read size: doubled after a read that filled the last one.
fn grow(size: usize, read: usize) -> usize {
    if read >= size {
        (size * 2).min(MAX_CHUNK)
    } else {
        size
    }
}

// === compiled routes ===

/// An IP network: an address and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// `10.0.0.0/8`, `::1/128`, or a bare address (a host route).
    pub fn parse(text: &str) -> Result<Self, String> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let network: IpAddr = addr
            .parse()
            .map_err(|_| format!("{text:?} is not an IP address or CIDR"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{text:?}: prefix length must be 0..={max}"))?,
        };
        Ok(Self { network, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        // An IPv4 client on a dual-stack socket shows up as ::ffff:a.b.c.d.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        let (net, ip, bits) = match (self.network, ip) {
            (IpAddr::V4(n), IpAddr::V4(i)) => (
                u128::from(u32::from(n)) << 96,
                u128::from(u32::from(i)) << 96,
                self.prefix,
            ),
            (IpAddr::V6(n), IpAddr::V6(i)) => (u128::from(n), u128::from(i), self.prefix),
            _ => return false,
        };
        let mask = if bits == 0 {
            0
        } else {
            u128::MAX << (128 - u32::from(bits))
        };
        net & mask == ip & mask
    }
}

#[derive(Debug)]
struct TcpMatcher {
    port: Option<u16>,
    subnets: Vec<Cidr>,
}

impl TcpMatcher {
    fn is_match(&self, local: SocketAddr) -> bool {
        self.port.is_none_or(|p| p == local.port())
            && (self.subnets.is_empty() || self.subnets.iter().any(|c| c.contains(local.ip())))
    }
}

#[derive(Debug)]
pub struct TcpDestination {
    pub cluster: Arc<Cluster>,
    pub stats: Arc<TcpStats>,
}

#[derive(Debug)]
pub struct TcpMirror {
    pub cluster: Arc<Cluster>,
    sampler: Sampler,
    buffer_bytes: usize,
    timeout: Duration,
    pub stats: Arc<TcpMirrorStats>,
}

#[derive(Debug)]
pub struct TcpRoute {
    matchers: Vec<TcpMatcher>,
    picker: WeightedPicker,
    pub destinations: Vec<TcpDestination>,
    pub mirrors: Vec<TcpMirror>,
}

impl TcpRoute {
    /// The destination of one connection, by weight.
    pub fn pick(&self) -> &TcpDestination {
        &self.destinations[self.picker.pick()]
    }
}

/// Every tcp route of a snapshot, in order.
#[derive(Debug, Default)]
pub struct TcpRoutes {
    routes: Vec<TcpRoute>,
}

impl TcpRoutes {
    pub fn compile(
        routes: &[snapshot::TcpRoute],
        cluster: &dyn Fn(u32) -> Result<Arc<Cluster>, String>,
        registry: &mut StatsRegistry,
    ) -> Result<Self, String> {
        let routes = routes
            .iter()
            .map(|r| {
                compile_route(r, cluster, registry).map_err(|e| {
                    format!(
                        "virtual service {:?}, tcp route {:?}: {e}",
                        r.virtual_service, r.name
                    )
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { routes })
    }

    /// The first route whose match holds for a connection to `local`.
    pub fn route_for(&self, local: SocketAddr) -> Option<&TcpRoute> {
        self.routes
            .iter()
            .find(|r| r.matchers.is_empty() || r.matchers.iter().any(|m| m.is_match(local)))
    }
}

fn compile_route(
    r: &snapshot::TcpRoute,
    cluster: &dyn Fn(u32) -> Result<Arc<Cluster>, String>,
    registry: &mut StatsRegistry,
) -> Result<TcpRoute, String> {
    let key = |c: &Cluster| StatsKey {
        virtual_service: r.virtual_service.clone(),
        route: r.name.clone(),
        host: c.host.clone(),
        subset: c.subset.clone(),
    };
    let matchers = r
        .matches
        .iter()
        .map(|m| {
            Ok(TcpMatcher {
                port: m.port,
                subnets: m
                    .destination_subnets
                    .iter()
                    .map(|s| Cidr::parse(s))
                    .collect::<Result<_, String>>()?,
            })
        })
        .collect::<Result<_, String>>()?;
    let picker = WeightedPicker::new(r.destinations.iter().map(|d| d.weight))
        .ok_or("no destination with a weight above 0")?;
    let destinations = r
        .destinations
        .iter()
        .map(|d| {
            let cluster = cluster(d.cluster)?;
            Ok(TcpDestination {
                stats: registry.tcp(key(&cluster)),
                cluster,
            })
        })
        .collect::<Result<_, String>>()?;
    let mirrors = r
        .mirrors
        .iter()
        .map(|m| {
            let cluster = cluster(m.cluster)?;
            if m.buffer_bytes == 0 {
                return Err("a mirror's buffer_bytes must be at least 1".to_owned());
            }
            Ok(TcpMirror {
                stats: registry.tcp_mirror(key(&cluster)),
                cluster,
                sampler: Sampler::new(m.per_million),
                buffer_bytes: usize::try_from(m.buffer_bytes).unwrap_or(usize::MAX),
                timeout: Duration::from_millis(m.timeout_ms),
            })
        })
        .collect::<Result<_, String>>()?;
    Ok(TcpRoute {
        matchers,
        picker,
        destinations,
        mirrors,
    })
}

// === the mirror's bounded queue ===

/// Shared by the splice (which offers chunks) and the mirror task (which writes them).
#[derive(Debug, Default)]
struct QueueState {
    /// Bytes offered and not yet written to the mirror.
    queued: AtomicUsize,
    /// Set once, by whichever side gives up first; that side counts the cut.
    closed: AtomicBool,
}

/// Why an offer was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Taking the chunk would pass the queue's bound (or the engine's budget):
    /// the caller must cut the mirror.
    Full,
    /// The mirror side has already given up (and counted why).
    Closed,
}

/// The splice's end of a mirror queue. `offer` never waits.
#[derive(Debug)]
pub struct QueueSender {
    tx: mpsc::UnboundedSender<Reserved>,
    state: Arc<QueueState>,
    max: usize,
    budget: Arc<MirrorBudget>,
}

/// The mirror task's end.
#[derive(Debug)]
pub struct QueueReceiver {
    rx: mpsc::UnboundedReceiver<Reserved>,
    state: Arc<QueueState>,
}

/// A queue that holds at most `max` bytes (and draws them from `budget`).
pub fn queue(max: usize, budget: Arc<MirrorBudget>) -> (QueueSender, QueueReceiver) {
    // Unbounded in chunks, bounded in bytes by `offer`: a count bound would
    // either waste room on small chunks or allow too much in large ones.
    let (tx, rx) = mpsc::unbounded_channel();
    let state = Arc::new(QueueState::default());
    (
        QueueSender {
            tx,
            state: state.clone(),
            max,
            budget,
        },
        QueueReceiver { rx, state },
    )
}

impl QueueSender {
    pub fn offer(&self, chunk: &Bytes) -> Result<(), Refused> {
        if self.state.closed.load(Relaxed) {
            return Err(Refused::Closed);
        }
        let len = chunk.len();
        if self.state.queued.load(Relaxed) + len > self.max {
            return Err(Refused::Full);
        }
        let reserved = self.budget.reserve(chunk).ok_or(Refused::Full)?;
        self.state.queued.fetch_add(len, Relaxed);
        self.tx.send(reserved).map_err(|_| Refused::Closed)
    }

    /// Bytes taken and not yet written to the mirror.
    pub fn queued(&self) -> usize {
        self.state.queued.load(Relaxed)
    }

    /// Marks the queue given up; true for the side that did it first.
    pub fn close(&self) -> bool {
        !self.state.closed.swap(true, Relaxed)
    }
}

impl QueueReceiver {
    /// The next chunk; `None` once the sender is gone and the queue is empty.
    pub(crate) async fn next(&mut self) -> Option<Reserved> {
        self.rx.recv().await
    }

    /// Call once a chunk from `next` is written (or given up).
    pub(crate) fn done(&self, chunk: Reserved) {
        self.state.queued.fetch_sub(chunk.bytes().len(), Relaxed);
    }

    pub fn queued(&self) -> usize {
        self.state.queued.load(Relaxed)
    }
}

// === one connection ===

/// What a tcp connection needs besides its sockets.
pub struct Context<'a> {
    pub connect_timeout: Duration,
    /// `None`: never closed for idleness.
    pub idle_timeout: Option<Duration>,
    pub gauges: &'a ConnectionGauges,
    pub budget: &'a Arc<MirrorBudget>,
}

/// Serves one accepted connection on `route` to the end.
pub async fn serve(mut client: TcpStream, route: &TcpRoute, cx: Context<'_>) {
    let destination = route.pick();
    let stats = &destination.stats;
    stats.connections_total.fetch_add(1, Relaxed);
    stats.connections_active.fetch_add(1, Relaxed);
    let _active = Decrement(&stats.connections_active);
    // The cluster's limit (DestinationRule tcp.maxConnections) counts connections here.
    let Ok(lease) = destination.cluster.acquire() else {
        stats.connect_failed.fetch_add(1, Relaxed);
        return;
    };
    let endpoint = lease.endpoint();
    let upstream = match connect(endpoint.authority.as_str(), cx.connect_timeout).await {
        Ok(stream) => stream,
        Err(()) => {
            stats.connect_failed.fetch_add(1, Relaxed);
            destination
                .cluster
                .record(endpoint, TryOutcome::ConnectFailure);
            return;
        }
    };
    let _open = GaugeHold::new(cx.gauges.gauge(Role::Primary, endpoint.authority.as_str()));
    let mut feeds: Vec<Feed> = route
        .mirrors
        .iter()
        .filter(|m| m.sampler.sample())
        .filter_map(|m| start_mirror(m, &cx))
        .collect();
    let mut upstream = upstream;
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

struct Decrement<'a>(&'a AtomicU64);

impl Drop for Decrement<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

pub(crate) async fn connect(authority: &str, timeout: Duration) -> Result<TcpStream, ()> {
    let stream = tokio::time::timeout(timeout, TcpStream::connect(authority))
        .await
        .map_err(drop)?
        .map_err(drop)?;
    // Spliced bytes are relayed as they come: no Nagle delay on top of the client's.
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// When the last byte went either way, for the idle timeout.
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Relaxed);
    }

    /// Resolves once nothing has moved for `idle`.
    async fn expired(&self, idle: Duration) {
        loop {
            let deadline = self.start + Duration::from_millis(self.last_ms.load(Relaxed)) + idle;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline.into()).await;
        }
    }
}

/// Copies both ways until both sides have ended (each end's FIN passed on as
/// a shutdown of the other's write side), either fails, or the connection is
/// idle for `idle`. Returns whether the idle timeout ended it.
pub async fn splice(
    client: &mut TcpStream,
    upstream: &mut TcpStream,
    feeds: &mut [Feed],
    idle: Option<Duration>,
    stats: &TcpStats,
) -> bool {
    // Borrowed halves: no lock between the two directions of a plain socket.
    let (client_read, client_write) = client.split();
    let (upstream_read, upstream_write) = upstream.split();
    let ends = Ends {
        client_read,
        client_write,
        upstream_read,
        upstream_write,
    };
    splice_ends(ends, feeds, idle, stats).await
}

/// `splice` for any two byte streams (upgraded HTTP connections).
pub async fn splice_io<C, U>(
    client: C,
    upstream: U,
    feeds: &mut [Feed],
    idle: Option<Duration>,
    stats: &TcpStats,
) -> bool
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let (client_read, client_write) = tokio::io::split(client);
    let (upstream_read, upstream_write) = tokio::io::split(upstream);
    let ends = Ends {
        client_read,
        client_write,
        upstream_read,
        upstream_write,
    };
    splice_ends(ends, feeds, idle, stats).await
}

/// The four halves a splice copies between.
struct Ends<CR, CW, UR, UW> {
    client_read: CR,
    client_write: CW,
    upstream_read: UR,
    upstream_write: UW,
}

async fn splice_ends<CR, CW, UR, UW>(
    ends: Ends<CR, CW, UR, UW>,
    feeds: &mut [Feed],
    idle: Option<Duration>,
    stats: &TcpStats,
) -> bool
where
    CR: AsyncRead + Unpin,
    CW: AsyncWrite + Unpin,
    UR: AsyncRead + Unpin,
    UW: AsyncWrite + Unpin,
{
    let activity = Activity::new();
    let Ends {
        mut client_read,
        mut client_write,
        mut upstream_read,
        mut upstream_write,
    } = ends;
    let to_upstream = async {
        let mut size = MIN_CHUNK;
        let mut buf = BytesMut::with_capacity(size);
        loop {
            // Reuses the allocation once every earlier chunk has been written
            // (and the mirrors are done with it): no copy per chunk.
            buf.reserve(size);
            let n = client_read.read_buf(&mut buf).await?;
            size = grow(size, n);
            if n == 0 {
                upstream_write.shutdown().await?;
                for feed in feeds.iter_mut() {
                    feed.finish();
                }
                return Ok::<(), std::io::Error>(());
            }
            activity.touch();
            let chunk = buf.split().freeze();
            for feed in feeds.iter_mut() {
                feed.offer(&chunk);
            }
            upstream_write.write_all(&chunk).await?;
            stats.bytes_received.fetch_add(n as u64, Relaxed);
        }
    };
    let to_client = async {
        let mut buf = vec![0u8; MIN_CHUNK];
        loop {
            let n = upstream_read.read(&mut buf).await?;
            let size = grow(buf.len(), n);
            if size > buf.len() {
                buf.resize(size, 0);
            }
            if n == 0 {
                client_write.shutdown().await?;
                return Ok::<(), std::io::Error>(());
            }
            activity.touch();
            client_write.write_all(&buf[..n]).await?;
            stats.bytes_sent.fetch_add(n as u64, Relaxed);
        }
    };
    let both = async {
        // An error either way ends both: the sockets are dropped (closed) by the caller.
        let _ = tokio::try_join!(to_upstream, to_client);
    };
    match idle {
        None => {
            both.await;
            false
        }
        Some(idle) => {
            tokio::select! {
                () = both => false,
                () = activity.expired(idle) => true,
            }
        }
    }
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
    fn offer(&mut self, chunk: &Bytes) {
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
    fn finish(&mut self) {
        self.queue = None;
        self.ended = None;
    }
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
    mut ended: oneshot::Receiver<()>,
    target: MirrorTarget,
    gauge: Arc<crate::upstream::Gauge>,
    stats: Arc<TcpMirrorStats>,
) {
    let MirrorTarget {
        cluster,
        endpoint,
        connect_timeout,
        finish_timeout,
        handshake,
    } = target;
    stats.active.fetch_add(1, Relaxed);
    let _active = DecrementArc(stats.clone());
    // Held apart from `rx`, which the forwarding borrows.
    let state = rx.state.clone();
    let give_up = |reason: TcpCutReason| {
        if !state.closed.swap(true, Relaxed) {
            stats.cut(reason);
            stats
                .bytes_dropped
                .fetch_add(state.queued.load(Relaxed) as u64, Relaxed);
        }
    };
    let endpoint = cluster.endpoint(endpoint);
    let backoff = &endpoint.health.backoff;
    let Ok(mut stream) = connect(endpoint.authority.as_str(), connect_timeout).await else {
        backoff.connect_failed();
        give_up(TcpCutReason::ConnectFailed);
        return;
    };
    backoff.connected();
    let _open = GaugeHold::new(gauge);
    if let Some(head) = handshake {
        match tokio::time::timeout(finish_timeout, upgrade_handshake(&mut stream, &head)).await {
            Ok(Ok(true)) => {}
            Ok(Ok(false)) => return give_up(TcpCutReason::NotUpgraded),
            Ok(Err(_)) => return give_up(TcpCutReason::Failed),
            Err(_) => return give_up(TcpCutReason::Timeout),
        }
    }
    let (mut read, mut write) = stream.split();
    let discard = async {
        let mut sink = vec![0u8; MIN_CHUNK];
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
    let result = loop {
        tokio::select! {
            r = &mut forward => break r.map_err(|_| MirrorEnd::Failed),
            r = &mut discard, if discarding => match r {
                Ok(()) => discarding = false,
                Err(_) => break Err(MirrorEnd::Failed),
            },
            _ = &mut ended, if ended_at.is_none() => ended_at = Some(Instant::now()),
            () = tokio::time::sleep_until(deadline(ended_at).into()), if ended_at.is_some() => {
                break Err(MirrorEnd::TimedOut)
            }
        }
    };
    match result {
        Ok(()) => {
            // Everything is written; the mirror gets the rest of its time to
            // read it and close, so that it sees a whole session, not a reset.
            if discarding {
                let _ = tokio::time::timeout_at(deadline(ended_at).into(), &mut discard).await;
            }
            if !state.closed.swap(true, Relaxed) {
                stats.completed.fetch_add(1, Relaxed);
            }
        }
        Err(MirrorEnd::Failed) => give_up(TcpCutReason::Failed),
        Err(MirrorEnd::TimedOut) => give_up(TcpCutReason::Timeout),
    }
}

/// Longest response head an upgrade mirror may answer with.
const MAX_HANDSHAKE_HEAD: usize = 16 * 1024;

/// Sends an upgrade request head and reads the response head: true on 101.
/// Whatever the mirror sends after its head is its own session's output,
/// discarded like the rest of what it says.
async fn upgrade_handshake(stream: &mut TcpStream, head: &[u8]) -> std::io::Result<bool> {
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

struct DecrementArc(Arc<TcpMirrorStats>);

impl Drop for DecrementArc {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::EndpointIds;
    use tokio::net::TcpListener;

    #[test]
    fn cidrs_match_by_prefix() {
        let net = Cidr::parse("10.1.0.0/16").unwrap();
        assert!(net.contains("10.1.200.3".parse().unwrap()));
        assert!(!net.contains("10.2.0.1".parse().unwrap()));
        assert!(net.contains("::ffff:10.1.0.9".parse().unwrap()));
        assert!(!net.contains("::1".parse().unwrap()));
        assert!(Cidr::parse("0.0.0.0/0")
            .unwrap()
            .contains("8.8.8.8".parse().unwrap()));
        assert!(Cidr::parse("::1").unwrap().contains("::1".parse().unwrap()));
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("ten/8").is_err());
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
        let routes = one_route(addr, Some((addr, 1 << 20)));
        let m = &routes.routes[0].mirrors[0];
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
        let routes = one_route(addr, Some((addr, 1 << 20)));
        let m = &routes.routes[0].mirrors[0];
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

    #[test]
    fn reads_grow_only_while_they_fill_the_buffer() {
        assert_eq!(grow(MIN_CHUNK, 10), MIN_CHUNK);
        assert_eq!(grow(MIN_CHUNK, MIN_CHUNK), 2 * MIN_CHUNK);
        assert_eq!(grow(MAX_CHUNK, MAX_CHUNK), MAX_CHUNK);
    }

    #[test]
    fn routes_match_on_port_and_subnet() {
        let m = TcpMatcher {
            port: Some(6379),
            subnets: vec![Cidr::parse("127.0.0.0/8").unwrap()],
        };
        assert!(m.is_match("127.0.0.1:6379".parse().unwrap()));
        assert!(!m.is_match("127.0.0.1:6380".parse().unwrap()));
        assert!(!m.is_match("10.0.0.1:6379".parse().unwrap()));
    }

    #[tokio::test]
    async fn the_queue_is_bounded_in_bytes_and_never_waits() {
        let budget = MirrorBudget::new(1 << 20);
        let (tx, mut rx) = queue(10, budget.clone());
        assert_eq!(tx.offer(&Bytes::from_static(b"123456")), Ok(()));
        assert_eq!(tx.offer(&Bytes::from_static(b"12345")), Err(Refused::Full));
        assert_eq!(tx.offer(&Bytes::from_static(b"1234")), Ok(()));
        assert_eq!((tx.queued(), budget.queued()), (10, 10));
        let first = rx.next().await.unwrap();
        assert_eq!(first.bytes().as_ref(), b"123456");
        rx.done(first);
        // Written bytes leave the queue's count; the budget is released on drop.
        assert_eq!((tx.queued(), budget.queued()), (4, 4));
        assert_eq!(tx.offer(&Bytes::from_static(b"abcdef")), Ok(()));
        assert!(tx.close());
        assert!(!tx.close(), "the cut is counted once");
        assert_eq!(tx.offer(&Bytes::from_static(b"x")), Err(Refused::Closed));
    }

    #[tokio::test]
    async fn the_engine_budget_bounds_every_queue_together() {
        let budget = MirrorBudget::new(8);
        let (a, _ra) = queue(100, budget.clone());
        let (b, _rb) = queue(100, budget.clone());
        assert_eq!(a.offer(&Bytes::from_static(b"12345")), Ok(()));
        assert_eq!(b.offer(&Bytes::from_static(b"12345")), Err(Refused::Full));
    }

    fn one_route(upstream: SocketAddr, mirror: Option<(SocketAddr, u64)>) -> TcpRoutes {
        let cluster = |addr: SocketAddr, host: &str| snapshot::Cluster {
            host: host.into(),
            subset: None,
            endpoints: vec![addr.to_string()],
            weights: vec![],
            load_balancer: Default::default(),
            max_requests: None,
            outlier_detection: None,
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
            let route = routes.route_for(s.local_addr().unwrap()).unwrap();
            let gauges = ConnectionGauges::default();
            let budget = MirrorBudget::new(1 << 30);
            let cx = Context {
                connect_timeout: Duration::from_secs(1),
                idle_timeout: Some(Duration::from_secs(5)),
                gauges: &gauges,
                budget: &budget,
            };
            serve(s, route, cx).await;
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
        let route = routes.route_for(accepted.local_addr().unwrap()).unwrap();
        let (gauges, budget) = (ConnectionGauges::default(), MirrorBudget::new(1));
        let cx = Context {
            connect_timeout: Duration::from_secs(1),
            idle_timeout: Some(Duration::from_millis(100)),
            gauges: &gauges,
            budget: &budget,
        };
        let started = Instant::now();
        serve(accepted, route, cx).await;
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
        serve(accepted, &routes.routes[0], cx).await;
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
