//! The fan-out phase of a request: each mirror's sampled copy admitted within
//! its bounds and started on a task of its own, before the primary is sent.

use std::sync::Arc;

use crate::body::Received;
use crate::http::request_head::RequestHead;
use http_body::Body;
use tokio::sync::oneshot;

use crate::body::capture::Captured;
use crate::body::TapHandle;
use crate::mirror::{CompareSlot, Gate};
use crate::proxy::{Connection, Published};
use crate::route::Route;
use crate::telemetry::access_log::PendingLine;

/// What the copies of one request need from the primary's side.
#[derive(Default)]
pub(super) struct FannedOut {
    /// Attached to the client's body: each copy gets every chunk.
    pub(super) taps: Vec<TapHandle>,
    /// Copies held until the primary's status is known.
    pub(super) gates: Vec<Gate>,
    /// Compared copies waiting for the primary's capture, and its bound.
    pub(super) compared: Compared,
}

#[derive(Default)]
pub(super) struct Compared {
    pub(super) waiting: Vec<oneshot::Sender<Arc<Captured>>>,
    pub(super) limit: u64,
}

/// Admits each mirror's sampled copy within its bounds and starts it on a
/// task of its own. A noise copy (a second primary instance) goes only with a
/// compared copy of the mirror it follows, to see the same request.
/// A head kept as it came stays so: a copy shares its fields
/// (`MirrorPolicy::copy`), and only a copy that must edit them makes a map
/// of its own.
pub(super) fn fan_out(
    route: &Route,
    head: &RequestHead,
    body: &Received,
    conn: &Connection,
    published: &Published,
    mut line: Option<&mut PendingLine>,
) -> FannedOut {
    let mut out = FannedOut::default();
    let has_body = !body.is_end_stream();
    // Bit i: mirror i's copy of this request is compared.
    let mut compared_mirrors = 0u64;
    for (i, policy) in route.mirrors.iter().enumerate() {
        let noise_for = policy.compare.as_ref().and_then(|c| c.noise_for);
        let admission = match noise_for {
            Some(parent) if compared_mirrors & (1 << parent) == 0 => continue,
            Some(_) => policy.admit_chosen(),
            None => policy.admit(head.method(), head.uri().path(), head.fields()),
        };
        let Some(admission) = admission else {
            continue;
        };
        let (mut copy, tap, gate) =
            policy.copy(admission, head, has_body, &conn.shared.mirror_budget);
        out.gates.extend(gate);
        let spec = policy
            .compare
            .as_ref()
            .filter(|c| c.noise_for.is_some() || c.sampler.sample());
        if let Some(spec) = spec {
            if i < 64 {
                compared_mirrors |= 1 << i;
            }
            let (tx, rx) = oneshot::channel();
            out.compared.waiting.push(tx);
            out.compared.limit = out.compared.limit.max(spec.max_body_bytes);
            copy.compare_with(CompareSlot {
                primary: rx,
                max_body_bytes: spec.max_body_bytes,
                key: spec.key.clone(),
                path: head
                    .uri()
                    .path_and_query()
                    .map_or("/", |pq| pq.as_str())
                    .to_owned(),
                queue: conn.shared.compare_queue.clone(),
            });
        }
        if let Some(line) = line.as_deref_mut() {
            line.record.mirrored = true;
            copy.log_as(line);
        }
        out.taps.extend(tap);
        // Boxed, as a stream's future is (listen/http2.rs): spawning moves it.
        tokio::spawn(Box::pin(copy.run(published.upstreams.mirror.clone())));
    }
    out
}
