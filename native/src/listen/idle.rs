//! A client connection's idle timeout, one timer per connection: it resolves
//! once `timeout` has passed with no request begun or answered and none
//! waiting for its answer (a response still streaming finishes after the
//! drain it starts). hyper's own header timer did this for HTTP/1.1 by
//! arming a timer for every request (500 instructions per request,
//! callgrind); this one wakes once per timeout at most.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::proxy::Activity;

/// Never resolves without a timeout.
pub async fn idle(activity: Arc<Activity>, timeout: Option<Duration>) {
    let Some(timeout) = timeout else {
        return std::future::pending().await;
    };
    loop {
        let now = Instant::now();
        let due = activity.last() + timeout;
        if now >= due && !activity.busy() {
            return;
        }
        // Not idle yet; or due, but a request still waits for its answer:
        // look again once it could be.
        let next = if now >= due { now + timeout } else { due };
        tokio::time::sleep_until(next.into()).await;
    }
}
