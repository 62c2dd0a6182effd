//! How one mirror copy ended, and what is counted and logged of it.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use crate::body::capture::Captured;
use crate::telemetry::access_log::PendingLine;
use crate::telemetry::{flag_index, ClosedList, DropReason, FailReason, MirrorStats, Outcome};
use crate::upstream::cluster::Endpoint;

/// How one copy ended, as counted.
#[derive(Debug)]
pub(super) enum Ended {
    /// Read to its end within the limit.
    Answered(Answer),
    /// Past the limit: reading stopped and the connection was closed.
    Cut(Answer),
    Failed(FailReason),
    TimedOut,
    Dropped(DropReason),
}

#[derive(Debug)]
pub(super) struct Answer {
    pub(super) status: u16,
    pub(super) bytes: u64,
    pub(super) captured: Option<Captured>,
    /// A gRPC answer's status (trailers, or headers when it had no body).
    pub(super) grpc_status: Option<u32>,
}

impl Ended {
    /// Envoy's response flag for how the copy ended; `None` for a copy never sent.
    pub(super) fn flag(&self) -> Option<&'static str> {
        Some(match self {
            Self::Answered(_) | Self::Cut(_) => "-",
            Self::Failed(FailReason::Connect | FailReason::Tls) => "UF",
            Self::Failed(FailReason::Reset | FailReason::BodyIncomplete) => "UR",
            Self::Failed(_) => "UPE",
            Self::TimedOut => "UT",
            Self::Dropped(_) => return None,
        })
    }

    pub(super) fn label(&self) -> &'static str {
        match self {
            Self::Answered(_) => "answered",
            Self::Cut(_) => "cut",
            Self::Failed(_) => "failed",
            Self::TimedOut => "timed_out",
            Self::Dropped(_) => "dropped",
        }
    }

    /// Counts the outcome; returns the status, the body bytes read and the capture.
    pub(super) fn count(
        &mut self,
        stats: &MirrorStats,
        started: Instant,
    ) -> (u16, u64, Option<Captured>) {
        let counter = match self {
            Self::Answered(_) => &stats.answered,
            _ => &stats.cut,
        };
        match self {
            Self::Answered(answer) | Self::Cut(answer) => {
                counter.fetch_add(1, Relaxed);
                stats.responses.record(answer.status);
                if let Some(status) = answer.grpc_status {
                    stats.grpc.record(status);
                }
                stats.duration.record(started.elapsed());
                (answer.status, answer.bytes, answer.captured.take())
            }
            Self::Failed(reason) => {
                stats.failed(*reason);
                (0, 0, None)
            }
            Self::TimedOut => {
                stats.timed_out.fetch_add(1, Relaxed);
                (0, 0, None)
            }
            Self::Dropped(reason) => {
                stats.dropped(*reason);
                (0, 0, None)
            }
        }
    }
}

/// What a finished copy was: counted once, then written to its log line.
pub(super) struct Finished {
    pub(super) status: u16,
    pub(super) grpc_status: Option<u32>,
    /// Body bytes read from the mirror's answer.
    pub(super) bytes: u64,
    pub(super) captured: Option<Captured>,
}

impl Ended {
    /// Counts the copy in its mirror's stats, outcome and Istio series both:
    /// `sent` body bytes went to the mirror, `grpc` says whether it was a gRPC call.
    pub(super) fn record(
        &mut self,
        stats: &MirrorStats,
        started: Instant,
        sent: u64,
        grpc: bool,
    ) -> Finished {
        let grpc_status = match self {
            Self::Answered(a) | Self::Cut(a) => a.grpc_status,
            _ => None,
        };
        let (status, bytes, captured) = self.count(stats, started);
        if let Some(flag) = self.flag() {
            let outcome = Outcome {
                status,
                grpc_status,
                flag: flag_index(Some(flag)),
                grpc,
            };
            stats
                .requests
                .record(outcome, started.elapsed(), sent, bytes);
        }
        Finished {
            status,
            grpc_status,
            bytes,
            captured,
        }
    }

    /// Fills in the copy's access-log line.
    pub(super) fn log(&self, line: &mut PendingLine, finished: &Finished, target: &Endpoint) {
        line.record.status = finished.status;
        line.record.grpc_status = finished.grpc_status;
        line.record.outcome = Some(self.label());
        line.record.upstream = Some(target.authority.to_string());
        line.record.response_flags = self.flag().filter(|&f| f != "-");
        if let Self::Failed(reason) = self {
            line.record.reason = Some(reason.label());
        }
    }
}
