//! The closed lists of reasons the data plane counts by, each declared once:
//! the enum, its labels and `ALL` come from one declaration, so that counters
//! indexed by a reason are complete by construction and a reordering cannot
//! misreport (the place in `ALL` is the discriminant).

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// A list of reasons declared with `closed_list!`.
pub trait ClosedList: Copy + 'static {
    /// Every variant, in declaration order.
    const ALL: &'static [Self];
    /// The variant's place in `ALL`.
    fn index(self) -> usize;
    /// Its name in metrics and reports.
    fn label(self) -> &'static str;
    /// The variant at `index` in `ALL`.
    fn from_index(index: usize) -> Option<Self> {
        Self::ALL.get(index).copied()
    }
}

/// Declares a closed list: `pub enum Name { Variant => "label", ... }`.
macro_rules! closed_list {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $($(#[$vmeta:meta])* $variant:ident => $label:literal,)+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $crate::telemetry::reasons::ClosedList for $name {
            const ALL: &'static [Self] = &[$(Self::$variant),+];

            fn index(self) -> usize {
                self as usize
            }

            fn label(self) -> &'static str {
                match self {
                    $(Self::$variant => $label,)+
                }
            }
        }
    };
}
pub(crate) use closed_list;

/// One counter per reason of a closed list, bumped with `Relaxed`.
#[derive(Debug)]
pub struct Counts<E> {
    counts: Box<[AtomicU64]>,
    list: PhantomData<E>,
}

impl<E: ClosedList> Default for Counts<E> {
    fn default() -> Self {
        Self {
            counts: E::ALL.iter().map(|_| AtomicU64::new(0)).collect(),
            list: PhantomData,
        }
    }
}

impl<E: ClosedList> Counts<E> {
    #[inline]
    pub fn add(&self, reason: E) {
        self.counts[reason.index()].fetch_add(1, Relaxed);
    }

    pub fn get(&self, reason: E) -> u64 {
        self.counts[reason.index()].load(Relaxed)
    }

    /// Every reason by label, zeros included.
    pub fn report(&self) -> HashMap<String, u64> {
        E::ALL
            .iter()
            .map(|&r| (r.label().to_owned(), self.get(r)))
            .collect()
    }
}

closed_list! {
    /// Why a mirror copy was not sent, or was cut short.
    pub enum DropReason {
        /// The mirror already had `max_in_flight` copies outstanding.
        InFlightLimit => "in_flight_limit",
        /// The copy's body buffer filled up (the mirror read slower than the
        /// primary), or the body was larger than the buffer allows.
        BodyBuffer => "body_buffer",
        /// The mirror's cluster has no endpoint.
        NoEndpoint => "no_endpoint",
        /// The client's request body broke off before it was complete.
        RequestAborted => "request_aborted",
        /// `after_primary_success` is set and the primary failed (or never answered).
        PrimaryFailed => "primary_failed",
        /// The engine-wide budget of bytes queued for copies is spent.
        BufferBudget => "buffer_budget",
        /// Every mirror endpoint is ejected by outlier detection or backing off
        /// after refusing connections: no connect attempt is made.
        Ejected => "ejected",
    }
}

closed_list! {
    /// Why a copy failed: what went wrong with the mirror's answer.
    pub enum FailReason {
        /// No connection could be opened.
        Connect => "connect",
        /// Connected, but the TLS handshake failed (certificate not trusted,
        /// not for the name; no version or suite in common).
        Tls => "tls",
        /// The connection was reset or closed before the answer's head was complete.
        Reset => "reset",
        /// The answer's head does not parse as HTTP/1.1, or is larger than allowed.
        Protocol => "protocol",
        /// The answer's Content-Length is malformed or lists differing values.
        Framing => "framing",
        /// The body ended (closed or reset) short of what its framing announced.
        BodyIncomplete => "body_incomplete",
    }
}

closed_list! {
    /// Why a tcp mirror connection was cut (or never opened).
    pub enum TcpCutReason {
        /// The mirror read slower than the client wrote: its bounded buffer filled.
        BufferFull => "buffer_full",
        /// The mirror could not be connected to (refused, timed out).
        ConnectFailed => "connect_failed",
        /// Connected, but the TLS handshake with the mirror failed.
        TlsFailed => "tls_failed",
        /// Writing to (or reading from) the mirror failed: reset, closed.
        Failed => "failed",
        /// The client's side ended and the mirror did not take the rest in time.
        Timeout => "timeout",
        /// The mirror's cluster has no usable endpoint.
        NoEndpoint => "no_endpoint",
        /// An upgraded session's mirror did not answer its upgrade request with 101.
        NotUpgraded => "not_upgraded",
    }
}

closed_list! {
    /// Why a sampled comparison did not reach the queue.
    pub enum SkipReason {
        /// The queue was full: the control plane fell behind.
        QueueFull => "queue_full",
        /// The primary's body never ended (client gone, upstream broke off).
        PrimaryIncomplete => "primary_incomplete",
        /// The copy failed, timed out or was dropped: nothing to compare.
        MirrorFailed => "mirror_failed",
        /// The engine-wide compare budget (bytes held by captures) was spent.
        BufferBudget => "buffer_budget",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_has_its_place_and_label_once() {
        fn check<E: ClosedList + std::fmt::Debug + PartialEq>() {
            let labels: std::collections::HashSet<_> = E::ALL.iter().map(|r| r.label()).collect();
            assert_eq!(labels.len(), E::ALL.len(), "labels are unique");
            for (i, &r) in E::ALL.iter().enumerate() {
                assert_eq!(r.index(), i);
                assert_eq!(E::from_index(i), Some(r));
            }
            assert_eq!(E::from_index(E::ALL.len()), None);
        }
        check::<DropReason>();
        check::<FailReason>();
        check::<TcpCutReason>();
        check::<SkipReason>();
    }

    #[test]
    fn counts_report_every_reason() {
        let counts = Counts::<FailReason>::default();
        counts.add(FailReason::Framing);
        counts.add(FailReason::Framing);
        let report = counts.report();
        assert_eq!(report.len(), FailReason::ALL.len());
        assert_eq!(report["framing"], 2);
        assert_eq!(report["connect"], 0);
    }
}
