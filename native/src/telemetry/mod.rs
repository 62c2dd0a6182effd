//! What the data plane counts and logs: counters and histograms, the closed
//! lists of reasons (declared once), per-route counter sets, their reports,
//! the access log, and one gauge guard type. The aggregate report is
//! assembled by the engine.

pub mod access_log;
pub mod counters;
pub mod gauge;
pub mod key;
pub mod reasons;
pub mod report;
pub mod requests;
pub mod stats;

pub use counters::BUCKET_BOUNDS_SECONDS;
pub use gauge::Held;
pub use key::StatsKey;
pub use reasons::{ClosedList, DropReason, FailReason, SkipReason, TcpCutReason};
pub use report::{
    DestinationReport, ListenerReport, MirrorReport, OutlierReport, TcpMirrorReport, TcpReport,
};
pub use requests::{flag_index, Observed, Outcome, RequestSeries};
pub use stats::{
    DestinationStats, ListenerStats, MirrorStats, StatsRegistry, TcpMirrorStats, TcpStats,
};
