//! The request body types' own upstream pools: primaries' and mirrors' idle
//! connections are kept apart, per worker thread (a mirror can never take a
//! primary's connection), and swept by each worker.

use std::cell::RefCell;
use std::thread::LocalKey;

use crate::body::{MirrorBody, RequestBody};
use crate::upstream::idle::{self, IdleLists, PooledBody, IDLE_SWEEP_PERIOD};
use crate::upstream::multiplex::{self, Connections, Multiplexed};

thread_local! {
    static PRIMARY_IDLE: RefCell<IdleLists<RequestBody>> = RefCell::default();
    static MIRROR_IDLE: RefCell<IdleLists<MirrorBody>> = RefCell::default();
    static PRIMARY_HTTP2: RefCell<Connections<RequestBody>> = RefCell::default();
    static MIRROR_HTTP2: RefCell<Connections<MirrorBody>> = RefCell::default();
}

impl Multiplexed for RequestBody {
    fn connections() -> &'static LocalKey<RefCell<Connections<Self>>> {
        &PRIMARY_HTTP2
    }
}

impl Multiplexed for MirrorBody {
    fn connections() -> &'static LocalKey<RefCell<Connections<Self>>> {
        &MIRROR_HTTP2
    }
}

impl PooledBody for RequestBody {
    fn idle() -> &'static LocalKey<RefCell<IdleLists<Self>>> {
        &PRIMARY_IDLE
    }
}

impl PooledBody for MirrorBody {
    fn idle() -> &'static LocalKey<RefCell<IdleLists<Self>>> {
        &MIRROR_IDLE
    }
}

/// Closes this thread's idle connections whose idle timeout has passed and
/// those their peer has closed, so that a burst's connections do not stay
/// open until the next checkout. Run by each worker every `IDLE_SWEEP_PERIOD`.
pub fn sweep_idle() {
    idle::sweep::<RequestBody>();
    idle::sweep::<MirrorBody>();
    multiplex::sweep::<RequestBody>();
    multiplex::sweep::<MirrorBody>();
}

/// The sweep, forever, on the calling worker's runtime.
pub async fn sweep_idle_forever() {
    let mut ticks = tokio::time::interval(IDLE_SWEEP_PERIOD);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        sweep_idle();
    }
}
