//! How a served connection ends on drain, whatever its protocol: polled until
//! it closes, or, once `stop` turns true, told to finish gracefully (HTTP/1.1:
//! after its in-flight request; HTTP/2: GOAWAY, then its open streams) and
//! polled to that end.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use hyper::body::Incoming;
use hyper::rt::{Read, Write};
use hyper::server::conn::{http1, http2};
use hyper::service::HttpService;
use tokio::sync::watch;

/// A server connection that can be asked to finish gracefully.
pub trait Drainable: Future {
    fn drain(self: Pin<&mut Self>);
}

impl<I, S> Drainable for http1::UpgradeableConnection<I, S>
where
    S: HttpService<Incoming>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: Read + Write + Unpin + Send + 'static,
    S::ResBody: http_body::Body + 'static,
    <S::ResBody as http_body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn drain(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

impl<I, S, E> Drainable for http2::Connection<I, S, E>
where
    S: HttpService<Incoming>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: Read + Write + Unpin,
    S::ResBody: http_body::Body + 'static,
    <S::ResBody as http_body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    E: hyper::rt::bounds::Http2ServerConnExec<S::Future, S::ResBody>,
{
    fn drain(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

/// Serves `connection` until it ends, draining it once `stop` turns true or
/// `idle` resolves (a connection that stays unused; pending forever where
/// the protocol's own timers see to that).
pub async fn serve_until_drained<C: Drainable>(
    connection: C,
    mut stop: watch::Receiver<bool>,
    idle: impl Future<Output = ()>,
) -> C::Output {
    let mut connection = std::pin::pin!(connection);
    let probe = stop.clone();
    let stopped = Stopped {
        changed: std::pin::pin!(stop.changed()),
        probe,
        registered: Registered::default(),
    };
    // Biased: the connection is polled first and no random branch order is
    // drawn per wake-up; `stop` only ever turns true.
    tokio::select! {
        biased;
        ended = connection.as_mut() => return ended,
        () = stopped => {}
        () = idle => {}
    }
    connection.as_mut().drain();
    connection.await
}

/// `stop.changed()`, registered with the task once: it is polled at every
/// wake-up of the connection (several per request), and each poll of the
/// watch's own future takes its waiters' lock to compare wakers (450
/// instructions per request, callgrind). Once registered by this task, a
/// poll reads the watch's version through `probe` (one atomic load); the
/// registration wakes the task when the version moves.
struct Stopped<'a, F> {
    changed: Pin<&'a mut F>,
    probe: watch::Receiver<bool>,
    registered: Registered,
}

/// The waker a wake-up source was registered with: while the task polling
/// it still wakes with that one, the source need not be polled again to
/// wake it (only asked, more cheaply, whether it has fired).
#[derive(Default)]
pub(super) struct Registered(Option<Waker>);

impl Registered {
    /// The source is registered with this task's waker.
    pub(super) fn holds(&self, cx: &Context<'_>) -> bool {
        self.0.as_ref().is_some_and(|w| w.will_wake(cx.waker()))
    }

    /// The source was just polled (pending) with this task's waker.
    pub(super) fn note(&mut self, cx: &Context<'_>) {
        self.0 = Some(cx.waker().clone());
    }
}

impl<F: Future> Future for Stopped<'_, F> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        if this.registered.holds(cx) {
            // A closed sender counts as changed, as `changed()` ends then too.
            return match this.probe.has_changed() {
                Ok(false) => Poll::Pending,
                _ => Poll::Ready(()),
            };
        }
        match this.changed.as_mut().poll(cx) {
            Poll::Ready(_) => Poll::Ready(()),
            Poll::Pending => {
                this.registered.note(cx);
                Poll::Pending
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    /// A connection that wakes itself `spurious` times (as a busy one is polled
    /// at every socket event), then waits until drained, and ends one poll
    /// after that.
    struct Busy {
        spurious: usize,
        drained: bool,
        polls: Arc<AtomicUsize>,
    }

    impl Future for Busy {
        type Output = ();

        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            self.polls.fetch_add(1, SeqCst);
            if self.drained {
                return Poll::Ready(());
            }
            if self.spurious > 0 {
                self.spurious -= 1;
                cx.waker().wake_by_ref();
            }
            Poll::Pending
        }
    }

    impl Drainable for Busy {
        fn drain(mut self: Pin<&mut Self>) {
            self.drained = true;
        }
    }

    #[tokio::test]
    async fn a_busy_connection_is_drained_once_stop_turns_true() {
        let (tx, rx) = watch::channel(false);
        let polls = Arc::new(AtomicUsize::new(0));
        let busy = Busy {
            spurious: 50,
            drained: false,
            polls: polls.clone(),
        };
        let served = tokio::spawn(serve_until_drained(busy, rx, std::future::pending()));
        // The connection's own wake-ups pass without stopping it.
        while polls.load(SeqCst) < 51 {
            tokio::task::yield_now().await;
        }
        assert!(!served.is_finished());
        tx.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), served)
            .await
            .expect("drained after stop")
            .unwrap();
    }

    #[tokio::test]
    async fn a_closed_stop_sender_drains_too() {
        let (tx, rx) = watch::channel(false);
        let busy = Busy {
            spurious: 3,
            drained: false,
            polls: Arc::default(),
        };
        let served = tokio::spawn(serve_until_drained(busy, rx, std::future::pending()));
        tokio::task::yield_now().await;
        drop(tx);
        tokio::time::timeout(Duration::from_secs(5), served)
            .await
            .expect("drained after the sender closed")
            .unwrap();
    }
}
