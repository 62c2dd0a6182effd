//! What a client connection's requests are doing, for its idle timeout: when
//! one last began or was answered, and how many wait for their answer. Kept
//! by the request path itself (`Open`), read by the connection's one idle
//! timer (`listen::idle`), so that no timer is armed per request.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct Activity {
    since: Instant,
    /// When a request last began or got its answer, in ms since `since`.
    last_ms: AtomicU64,
    /// Requests whose answer has not begun yet.
    open: AtomicU64,
}

impl Default for Activity {
    fn default() -> Self {
        Self {
            since: Instant::now(),
            last_ms: AtomicU64::new(0),
            open: AtomicU64::new(0),
        }
    }
}

impl Activity {
    /// Rounded up to the millisecond: the idle timeout may end a little
    /// late, never before its whole length has passed (truncated, it closed
    /// connections up to 1 ms early).
    fn touch(&self, at: Instant) {
        let since = at.saturating_duration_since(self.since);
        let ms = since.as_millis() + u128::from(since.subsec_nanos() % 1_000_000 != 0);
        self.last_ms
            .store(u64::try_from(ms).unwrap_or(u64::MAX), Relaxed);
    }

    fn answered(&self, at: Instant) {
        self.touch(at);
        self.open.fetch_sub(1, Relaxed);
    }

    /// When the connection was last active.
    pub fn last(&self) -> Instant {
        self.since + Duration::from_millis(self.last_ms.load(Relaxed))
    }

    /// Some request still waits for its answer.
    pub fn busy(&self) -> bool {
        self.open.load(Relaxed) > 0
    }
}

/// A request in progress, until its response head is handed back
/// (`end`, or dropped). Only the end moves the last activity: while a request is open
/// the connection is busy, which the idle timer looks at first, so a mark at
/// its start would never be read.
pub struct Open<'a>(&'a Activity);

impl<'a> Open<'a> {
    pub fn start(activity: &'a Activity) -> Self {
        activity.open.fetch_add(1, Relaxed);
        Self(activity)
    }

    /// Answered at `at`: the clock read the request's way made for its own
    /// count (one read fewer per request); `None`, now.
    pub fn end(self, at: Option<Instant>) {
        let activity = self.0;
        std::mem::forget(self);
        activity.answered(at.unwrap_or_else(Instant::now));
    }
}

impl Drop for Open<'_> {
    fn drop(&mut self) {
        self.0.answered(Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_busy_until_answered_and_moves_the_last_activity() {
        let activity = Activity::default();
        assert!(!activity.busy());
        let begun = Instant::now();
        let open = Open::start(&activity);
        assert!(activity.busy());
        drop(open);
        let ended = Instant::now();
        assert!(!activity.busy());
        // Kept to the millisecond, never earlier than it was.
        let last = activity.last();
        assert!(last >= begun && last <= ended + Duration::from_millis(1));
    }
}
