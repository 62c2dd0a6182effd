//! A mirror's byte queue: bounded in bytes (and drawn from the engine-wide
//! mirror budget), offered to by the relay without ever waiting, drained by the
//! mirror's own task. When it is full the mirror is cut, never the client.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::body::{MirrorBudget, Reserved};

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

/// The mirror task's end.
#[derive(Debug)]
pub struct QueueReceiver {
    rx: mpsc::UnboundedReceiver<Reserved>,
    state: Arc<QueueState>,
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

    /// The queue's shared state, for the mirror task to give up on apart
    /// from the receiver its forwarding borrows.
    pub(crate) fn state(&self) -> QueueEnd {
        QueueEnd(self.state.clone())
    }
}

/// The mirror task's hold on the queue's state.
#[derive(Debug, Clone)]
pub struct QueueEnd(Arc<QueueState>);

impl QueueEnd {
    /// Marks the queue given up; true for the side that did it first.
    pub fn close(&self) -> bool {
        !self.0.closed.swap(true, Relaxed)
    }

    /// Bytes taken and not yet written to the mirror.
    pub fn queued(&self) -> usize {
        self.0.queued.load(Relaxed)
    }
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
