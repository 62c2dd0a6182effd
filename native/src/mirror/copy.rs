//! One mirror copy, from send to count: held until the primary answers when
//! the policy says so, sent, its answer read within the drain limit (or kept
//! within the capture limit and the compare budget), its outcome counted, and
//! a compared copy's pair handed on. What a copy costs does not grow with what
//! the mirror sends.

use std::future::Future;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{HeaderValue, HOST};
use http::{Method, Request};
use http_body_util::BodyExt;
use tokio::sync::{oneshot, OwnedSemaphorePermit};

use crate::body::capture::{BodyCapture, Captured, CompareBudget, PrimaryReceiver};
use crate::body::MirrorBody;
use crate::body::{CutNotice, OnEnd};
use crate::http::grpc;
use crate::http::headers::{self};
use crate::http::request_head::RequestHead;
use crate::http::retry::TryOutcome;
use crate::mirror::compare::{CompareKey, CompareQueue, ComparedPair};
use crate::mirror::ended::{Answer, Ended};
use crate::telemetry::access_log::PendingLine;
use crate::telemetry::gauge::{Field, Held};
use crate::telemetry::SkipReason;
use crate::telemetry::{DropReason, FailReason, MirrorStats};
use crate::upstream::cluster::Cluster;
use crate::upstream::pool::{Pool, SendError, Target};
use crate::upstream::protocol::Wire;
use crate::upstream::response::PooledResponse;

/// A copy's place in its mirror's in-flight gauge.
pub type InFlight = Held<Field<MirrorStats>>;

/// A copy ready to go; `run` it on its own task.
#[derive(Debug)]
pub struct MirrorCopy {
    pub(super) head: CopyHead,
    pub(super) body: MirrorBody,
    /// The protocol it goes in (the mirror destination's, or the client's).
    pub(super) wire: Wire,
    pub(super) index: usize,
    pub(super) permit: OwnedSemaphorePermit,
    pub(super) in_flight: InFlight,
    pub(super) timeout: Duration,
    /// Body bytes of the answer read and dropped; past it the copy is cut.
    pub(super) max_drain_bytes: u64,
    pub(super) stats: Arc<MirrorStats>,
    pub(super) cluster: Arc<Cluster>,
    pub(super) line: Option<PendingLine>,
    /// With `after_primary_success`: opens once the primary's status is known.
    pub(super) gate: Option<oneshot::Receiver<bool>>,
    /// Set when this copy's answer is compared with the primary's.
    pub(super) compare: Option<CompareSlot>,
}

/// A copy's head, with its own edits made.
#[derive(Debug)]
pub enum CopyHead {
    /// In the map, the shadow Host and the copy's header rules applied.
    Map(http::request::Parts),
    /// The primary's fields kept as they came (shared, not copied), and the
    /// shadow Host written in place of the client's.
    Kept {
        head: RequestHead,
        host: HeaderValue,
    },
}

impl CopyHead {
    fn method(&self) -> &Method {
        match self {
            Self::Map(parts) => &parts.method,
            Self::Kept { head, .. } => head.method(),
        }
    }

    fn host(&self) -> Option<&HeaderValue> {
        match self {
            Self::Map(parts) => parts.headers.get(HOST),
            Self::Kept { host, .. } => Some(host),
        }
    }

    fn is_grpc(&self) -> bool {
        match self {
            Self::Map(parts) => grpc::is_grpc(&parts.headers),
            Self::Kept { head, .. } => grpc::is_grpc_call(head.fields()),
        }
    }
}

/// What a compared copy needs: its bound, the primary's answer to come, and
/// where the pair goes.
#[derive(Debug)]
pub struct CompareSlot {
    pub primary: PrimaryReceiver,
    pub max_body_bytes: u64,
    pub key: Arc<CompareKey>,
    pub path: String,
    pub queue: Arc<CompareQueue>,
}

/// Lets a held copy go (or not) once the primary has answered. Dropped
/// unopened (the primary never answered), the copy is dropped.
#[derive(Debug)]
pub struct Gate(pub(super) oneshot::Sender<bool>);

impl Gate {
    fn decide(self, open: bool) {
        // The copy may be gone already (dropped at admission, timed out).
        let _ = self.0.send(open);
    }

    /// Opens or closes `gates` on the primary's answer: its HTTP status; for
    /// a gRPC answer its `grpc-status` too (a gRPC failure comes as HTTP
    /// 200), which a trailers-only answer has in its headers and any other
    /// in its trailers. Returns what to call when the body ends, for the
    /// gates that wait for trailers.
    pub fn open_on(gates: Vec<Gate>, status: u16, headers: &http::HeaderMap) -> Option<OnEnd> {
        if gates.is_empty() {
            return None;
        }
        let in_headers = grpc::status_in(headers);
        if !grpc::is_grpc(headers) || !(200..400).contains(&status) || in_headers.is_some() {
            let ok = (200..400).contains(&status) && in_headers.is_none_or(|s| s == 0);
            gates.into_iter().for_each(|g| g.decide(ok));
            return None;
        }
        Some(Box::new(move |trailers| {
            let ok = trailers.and_then(grpc::status_in) == Some(0);
            gates.into_iter().for_each(|g| g.decide(ok));
        }))
    }
}

impl MirrorCopy {
    /// Keeps this copy's answer for comparison with the primary's.
    pub fn compare_with(&mut self, slot: CompareSlot) {
        self.stats.compare.sampled.fetch_add(1, Relaxed);
        self.compare = Some(slot);
    }

    /// Writes an access-log line for this copy, linked to the primary's by request id.
    pub fn log_as(&mut self, primary: &PendingLine) {
        let authority = self
            .head
            .host()
            .and_then(|h| h.to_str().ok())
            .unwrap_or("")
            .to_owned();
        self.line = Some(primary.for_mirror(
            &self.cluster.host,
            self.cluster.subset.as_deref(),
            authority,
            self.wire.label(),
        ));
    }

    /// Sends the copy, reads its answer within the drain limit (or keeps it
    /// for comparison), and counts the outcome. The in-flight permit is held
    /// until the exchange is over.
    ///
    /// Not an `async fn`: one would keep `self` and the fields taken out of
    /// it side by side in its future, which is moved (copied) when spawned.
    pub fn run(self, pool: Pool) -> impl Future<Output = ()> {
        let Self {
            head,
            mut body,
            wire,
            index,
            permit,
            in_flight,
            timeout,
            max_drain_bytes,
            stats,
            cluster,
            line,
            gate,
            compare,
        } = self;
        async move {
            // Held (moved in) until the copy is over.
            let _in_flight = in_flight;
            if let Some(gate) = gate {
                if !gate.await.unwrap_or(false) {
                    stats.dropped(DropReason::PrimaryFailed);
                    if compare.is_some() {
                        stats.compare.skipped(SkipReason::MirrorFailed);
                    }
                    if let Some(mut line) = line {
                        line.record.outcome = Some("dropped");
                        line.finish(0);
                    }
                    return;
                }
            }
            let tap = body.state();
            let cut = body.take_cut_notice();
            let method = head.method().clone();
            let grpc = head.is_grpc();
            let started = Instant::now();
            let reading = Reading {
                limit: compare
                    .as_ref()
                    .map_or(max_drain_bytes, |c| c.max_body_bytes),
                budget: compare.as_ref().map(|c| c.queue.budget.clone()),
                fields_read: compare.is_some() || grpc,
                stats: &stats,
                started,
            };
            let target = cluster.endpoint(index);
            // Boxed: an argument awaited in place is kept twice in the future.
            let request = (head, body);
            let exchange = Box::pin(exchange(&pool, &cluster, target, wire, request, reading));
            let ended = within(timeout, exchange, cut).await;
            if matches!(ended, Ended::TimedOut) {
                cluster.record(target, TryOutcome::Timeout);
            }
            // A copy whose request body was cut is dropped for that reason, whatever came back.
            let sent = tap.as_ref().map_or(0, |t| t.sent_bytes());
            let mut ended = match (ended, tap.and_then(|t| t.cut_reason())) {
                (Ended::Failed(_), Some(reason)) => Ended::Dropped(reason),
                (ended, _) => ended,
            };
            let mut finished = ended.record(&stats, started, sent, grpc);
            if let Some(slot) = compare {
                let left = timeout.saturating_sub(started.elapsed());
                let mine = finished.captured.take();
                // Boxed: only compared copies wait here.
                Box::pin(slot.hand_over(mine, method, &stats, left)).await;
            }
            if let Some(mut line) = line {
                ended.log(&mut line, &finished, target);
                line.finish(finished.bytes);
            }
            drop(permit);
        }
    }
}

/// Runs the exchange within the copy's timeout, and no longer than its body
/// stays whole: a copy cut while the mirror is still taking it (or taking
/// nothing at all) ends now, its connection or stream with it.
async fn within(
    timeout: Duration,
    exchange: impl Future<Output = Ended>,
    cut: Option<CutNotice>,
) -> Ended {
    let cut = async {
        match cut {
            Some(notice) => notice.cut().await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        biased;
        result = tokio::time::timeout(timeout, exchange) => result.unwrap_or(Ended::TimedOut),
        // Counted as dropped for the cut's reason by the caller.
        () = cut => Ended::Failed(FailReason::Reset),
    }
}

/// How a copy's answer is read: up to `limit` body bytes, kept within the
/// compare budget when the copy is compared.
struct Reading<'a> {
    limit: u64,
    budget: Option<Arc<CompareBudget>>,
    /// The answer's fields are read (its capture's, its gRPC status): made
    /// into a map. Else a plain answer's are kept as they came and never
    /// looked at (`upstream::pool::Target::raw_answer`).
    fields_read: bool,
    stats: &'a MirrorStats,
    /// When the copy started: a capture's latency runs from here.
    started: Instant,
}

/// Sends the copy and reads its answer as `reading` says. Every byte read is
/// counted; a body past the limit is left unread and its connection closed
/// (dropping it unfinished keeps it out of the pool), so the worker's time on
/// a copy does not grow with what the mirror sends.
async fn exchange(
    pool: &Pool,
    cluster: &Cluster,
    target: &crate::upstream::cluster::Endpoint,
    wire: Wire,
    (head, body): (CopyHead, MirrorBody),
    reading: Reading<'_>,
) -> Ended {
    // No name given: a copy's TLS is named for the mirror destination's
    // host, never the `-shadow` Host that no certificate names.
    let to = Target {
        raw_answer: !reading.fields_read,
        ..cluster.target(target, wire, None)
    };
    let sent = match head {
        CopyHead::Map(parts) => pool.send(to, Request::from_parts(parts, body)).await,
        CopyHead::Kept { head, host } => {
            // `send` puts a head in the wire's form; a kept head goes over
            // HTTP/1.1 only, already in its form.
            pool.send_borrowed(to, &head, Some((HOST, host)), body)
                .await
        }
    };
    // A refused connection (or handshake) backs this endpoint off for the
    // next copies; any connection made ends the back-off.
    match &sent {
        Err(SendError::Connect | SendError::Tls) => target.health.backoff.connect_failed(),
        _ => target.health.backoff.connected(),
    }
    let mut response = match sent {
        Ok(sent) => sent,
        Err(failed @ (SendError::Connect | SendError::Tls)) => {
            cluster.record(target, TryOutcome::ConnectFailure);
            let tls = matches!(failed, SendError::Tls);
            return Ended::Failed(if tls {
                FailReason::Tls
            } else {
                FailReason::Connect
            });
        }
        Err(failed @ (SendError::Protocol | SendError::Reset)) => {
            cluster.record(target, TryOutcome::Reset);
            return Ended::Failed(match failed {
                SendError::Protocol => FailReason::Protocol,
                _ => FailReason::Reset,
            });
        }
    };
    let status = response.status().as_u16();
    cluster.record(target, TryOutcome::Status(status));
    if headers::response_framing(response.headers_mut()).is_err() {
        return Ended::Failed(FailReason::Framing);
    }
    let (parts, body) = response.into_parts();
    // Fields kept as they came are plain: their one Content-Length is the
    // body's length as read.
    let declared = match body.raw_fields() {
        Some(_) => http_body::Body::size_hint(&body).exact(),
        None => declared_length(&parts.headers),
    };
    if reading.budget.is_none() && declared.is_some_and(|n| n > reading.limit) {
        // Past the limit by its own account: nothing to read for. Dropping the
        // body unread (and the connection with it) ends the mirror's sending.
        drop(body);
        return Ended::Cut(Answer {
            status,
            bytes: 0,
            captured: None,
            grpc_status: None,
        });
    }
    read_body(status, parts.headers, body, &reading).await
}

/// Reads a copy's answer body to its end or past the limit (then dropped,
/// its connection closed), capturing it when the copy is compared.
async fn read_body(
    status: u16,
    headers: http::HeaderMap,
    mut body: PooledResponse<MirrorBody>,
    reading: &Reading<'_>,
) -> Ended {
    let started = reading.started;
    let mut capture = reading
        .budget
        .as_ref()
        .map(|budget| BodyCapture::new(reading.limit, budget));
    let mut bytes = 0u64;
    let mut grpc_status = grpc::status_in(&headers);
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return Ended::Failed(FailReason::BodyIncomplete);
        };
        let Some(data) = frame.data_ref() else {
            if let Some(trailers) = frame.trailers_ref() {
                grpc_status = grpc::status_in(trailers).or(grpc_status);
                if let Some(c) = capture.as_mut() {
                    c.trailers(trailers);
                }
            }
            continue;
        };
        bytes += data.len() as u64;
        reading
            .stats
            .answer_bytes
            .fetch_add(data.len() as u64, Relaxed);
        if let Some(c) = capture.as_mut() {
            c.push(data);
        }
        if bytes > reading.limit {
            drop(body);
            let captured = capture.map(|c| c.finish(status, headers, started.elapsed(), true));
            return Ended::Cut(Answer {
                status,
                bytes,
                captured,
                grpc_status,
            });
        }
    }
    let captured = capture.map(|c| c.finish(status, headers, started.elapsed(), false));
    Ended::Answered(Answer {
        status,
        bytes,
        captured,
        grpc_status,
    })
}

/// The body length an answer declares (framing already checked: at most one
/// valid Content-Length, none with Transfer-Encoding).
fn declared_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

impl CompareSlot {
    /// Pairs the copy's capture with the primary's and queues the pair. Waiting
    /// for the primary's body is bounded by what is left of the copy's
    /// deadline; the permit is held meanwhile, as the copy is not over until
    /// its pair is handed on.
    async fn hand_over(
        self,
        mine: Option<Captured>,
        method: Method,
        stats: &MirrorStats,
        left: Duration,
    ) {
        let Some(mirror) = mine else {
            stats.compare.skipped(SkipReason::MirrorFailed);
            return;
        };
        let Ok(Ok(primary)) = tokio::time::timeout(left, self.primary).await else {
            stats.compare.skipped(SkipReason::PrimaryIncomplete);
            return;
        };
        if mirror.over_budget || primary.over_budget {
            stats.compare.skipped(SkipReason::BufferBudget);
            return;
        }
        let pair = ComparedPair {
            key: self.key,
            method,
            path: self.path,
            primary,
            mirror,
        };
        if self.queue.offer(pair) {
            stats.compare.queued.fetch_add(1, Relaxed);
        } else {
            stats.compare.skipped(SkipReason::QueueFull);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::declared_length;
    use http::HeaderMap;

    #[test]
    fn declared_length_reads_one_valid_value_only() {
        let with = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(http::header::CONTENT_LENGTH, v.parse().unwrap());
            declared_length(&h)
        };
        assert_eq!(with("1073741824"), Some(1 << 30));
        assert_eq!(with("0"), Some(0));
        assert_eq!(with("-1"), None);
        assert_eq!(with("12x"), None);
        assert_eq!(declared_length(&HeaderMap::new()), None);
    }
}
