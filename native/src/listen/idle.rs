//! A client connection's idle timeout, one timer per connection: it resolves
//! once `timeout` has passed with no request begun or answered and none
//! waiting for its answer (a response still streaming finishes after the
//! drain it starts). hyper's own header timer did this for HTTP/1.1 by
//! arming a timer for every request (500 instructions per request,
//! callgrind); this one wakes once per timeout at most.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::time::Sleep;

use super::drain::Registered;
use crate::proxy::Activity;

/// Never resolves without a timeout.
pub fn idle(activity: Arc<Activity>, timeout: Option<Duration>) -> Idle {
    Idle {
        timer: timeout.map(|timeout| Timer {
            sleep: Box::pin(tokio::time::sleep_until((activity.last() + timeout).into())),
            activity,
            timeout,
        }),
        registered: Registered::default(),
    }
}

/// The idle timeout as a future. It is polled at every wake-up of its
/// connection (several per request), and a poll of tokio's `Sleep` costs
/// about 130 instructions (callgrind). Once the sleep is registered with
/// this task, a poll only asks whether it has fired: the timer wakes the
/// task when it does.
pub struct Idle {
    timer: Option<Timer>,
    registered: Registered,
}

struct Timer {
    // Boxed once per connection: `Sleep` is not `Unpin`.
    sleep: Pin<Box<Sleep>>,
    activity: Arc<Activity>,
    timeout: Duration,
}

impl Future for Idle {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        let Some(timer) = &mut this.timer else {
            return Poll::Pending;
        };
        if this.registered.holds(cx) && !timer.sleep.is_elapsed() {
            return Poll::Pending;
        }
        loop {
            if timer.sleep.as_mut().poll(cx).is_pending() {
                this.registered.note(cx);
                return Poll::Pending;
            }
            let now = Instant::now();
            let due = timer.activity.last() + timer.timeout;
            if now >= due && !timer.activity.busy() {
                return Poll::Ready(());
            }
            // Not idle yet; or due, but a request still waits for its
            // answer: look again once it could be.
            let next = if now >= due { now + timer.timeout } else { due };
            timer.sleep.as_mut().reset(next.into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::activity::Open;

    const TIMEOUT: Duration = Duration::from_millis(400);

    #[tokio::test]
    async fn resolves_once_the_connection_stays_unused_for_its_timeout() {
        let activity = Arc::new(Activity::default());
        let started = Instant::now();
        let resolved = tokio::time::timeout(TIMEOUT * 5, idle(activity, Some(TIMEOUT))).await;
        assert!(resolved.is_ok(), "still not idle after five timeouts");
        // Never early; late by at most the activity's millisecond rounding
        // and the timer wheel's granularity (a generous bound on a busy machine).
        let waited = started.elapsed();
        assert!(waited >= TIMEOUT && waited < TIMEOUT * 3, "{waited:?}");
    }

    #[tokio::test]
    async fn a_request_waiting_for_its_answer_holds_it_off_and_its_end_restarts_it() {
        let activity = Arc::new(Activity::default());
        let timer = tokio::spawn(idle(activity.clone(), Some(TIMEOUT)));
        let open = Open::start(&activity);
        tokio::time::sleep(TIMEOUT * 3).await;
        assert!(!timer.is_finished(), "busy for three timeouts: not idle");
        drop(open);
        let answered = Instant::now();
        let resolved = tokio::time::timeout(TIMEOUT * 5, timer).await;
        assert!(
            resolved.is_ok(),
            "still not idle five timeouts after the answer"
        );
        assert!(
            answered.elapsed() >= TIMEOUT,
            "idle only a whole timeout after the answer"
        );
    }

    #[tokio::test]
    async fn without_a_timeout_it_never_resolves() {
        let activity = Arc::new(Activity::default());
        let never = idle(activity, None);
        assert!(tokio::time::timeout(TIMEOUT, never).await.is_err());
    }
}
