//! Comparison, the core's side: which copies are compared, and the bounded
//! queue that hands each pair (the primary's capture and the copy's) to the
//! control plane, which compares off the hot path. The user's response never
//! waits: when the queue or the compare budget is full the pair is skipped and
//! counted.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};

use http::Method;

use crate::body::capture::{Captured, CompareBudget};
use crate::sampling::Sampler;
use crate::snapshot;

/// Pairs waiting for the control plane unless the engine is told otherwise.
pub const DEFAULT_QUEUE_CAPACITY: usize = 4096;

/// One mirror policy's comparison settings, as the core needs them.
#[derive(Debug)]
pub struct CompareSpec {
    pub sampler: Sampler,
    pub max_body_bytes: u64,
    pub key: Arc<CompareKey>,
    /// A noise copy: the mirror (index in the route) whose compared copies it follows.
    pub noise_for: Option<usize>,
}

/// Noise copies follow their mirror through a bit set of one request's
/// compared mirrors (no allocation per request): mirrors past it can't be followed.
pub const MAX_NOISE_PARENT: u32 = 63;

impl CompareSpec {
    pub fn new(spec: &snapshot::Compare, key: CompareKey) -> Self {
        Self {
            sampler: Sampler::new(spec.per_million),
            max_body_bytes: spec.max_body_bytes,
            key: Arc::new(key),
            noise_for: spec.noise_for.map(|i| i as usize),
        }
    }
}

/// Which mirror policy a pair belongs to: names, stable across reloads, so
/// the control plane finds the settings even if a reload landed meanwhile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompareKey {
    pub virtual_service: String,
    pub route: String,
    /// The mirror's place in its route's `mirrors`.
    pub mirror: u32,
}

/// A compared copy's two answers, with what identifies the request.
#[derive(Debug)]
pub struct ComparedPair {
    pub key: Arc<CompareKey>,
    pub method: Method,
    /// The path and query as forwarded.
    pub path: String,
    pub primary: Arc<Captured>,
    pub mirror: Captured,
}

/// The bounded hand-over to the control plane. `offer` never blocks; the
/// receiver is locked only by `drain`, which the control plane calls.
#[derive(Debug)]
pub struct CompareQueue {
    tx: SyncSender<ComparedPair>,
    rx: Mutex<Receiver<ComparedPair>>,
    /// Pairs queued and not yet drained (a gauge).
    pub depth: AtomicU64,
    /// Bytes held by captures, queued or not yet.
    pub budget: Arc<CompareBudget>,
}

impl CompareQueue {
    pub fn new(capacity: usize, budget_bytes: u64) -> Arc<Self> {
        let (tx, rx) = sync_channel(capacity);
        Arc::new(Self {
            tx,
            rx: Mutex::new(rx),
            depth: AtomicU64::new(0),
            budget: CompareBudget::new(budget_bytes),
        })
    }

    /// Queues a pair; false (and the pair dropped) when the queue is full.
    pub fn offer(&self, pair: ComparedPair) -> bool {
        match self.tx.try_send(pair) {
            Ok(()) => {
                self.depth.fetch_add(1, Relaxed);
                true
            }
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => false,
        }
    }

    /// Takes up to `max` pairs, oldest first, without waiting.
    pub fn drain(&self, max: usize) -> Vec<ComparedPair> {
        let rx = self.rx.lock().unwrap_or_else(PoisonError::into_inner);
        let pairs: Vec<_> = rx.try_iter().take(max).collect();
        self.depth.fetch_sub(pairs.len() as u64, Relaxed);
        pairs
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::capture::{BodyCapture, DEFAULT_BUFFER_BUDGET};
    use http::HeaderMap;
    use std::time::Duration;

    fn budget() -> Arc<CompareBudget> {
        CompareBudget::new(DEFAULT_BUFFER_BUDGET)
    }

    fn pair(key: &Arc<CompareKey>, n: u16) -> ComparedPair {
        let budget = budget();
        let captured =
            || BodyCapture::new(10, &budget).finish(n, HeaderMap::new(), Duration::ZERO, false);
        ComparedPair {
            key: key.clone(),
            method: Method::GET,
            path: "/".into(),
            primary: Arc::new(captured()),
            mirror: captured(),
        }
    }

    #[test]
    fn the_queue_is_bounded_and_drains_in_order() {
        let key = Arc::new(CompareKey {
            virtual_service: "vs".into(),
            route: "0".into(),
            mirror: 0,
        });
        let q = CompareQueue::new(2, DEFAULT_BUFFER_BUDGET);
        assert!(q.offer(pair(&key, 200)));
        assert!(q.offer(pair(&key, 201)));
        assert!(!q.offer(pair(&key, 202)), "full: dropped, never waits");
        assert_eq!(q.depth.load(Relaxed), 2);
        let got = q.drain(1);
        assert_eq!(got[0].primary.status, 200);
        let got = q.drain(10);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].primary.status, 201);
        assert_eq!(q.depth.load(Relaxed), 0);
        assert!(q.offer(pair(&key, 203)), "room again once drained");
    }
}
