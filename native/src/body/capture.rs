//! Capturing an answer for comparison: the primary's as it streams to the
//! client, a compared copy's as it is read. The body is copied into a buffer of
//! the capture's own up to the capture limit (past it only the length and a
//! streaming hash grow), charged against one engine-wide byte budget until the
//! pair is drained or dropped.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use tokio::sync::oneshot;

/// FNV-1a, 64 bits: streaming, deterministic across processes, no dependency.
/// It tells equal bodies from different ones; it is not a defence against
/// an adversary crafting collisions (nothing is decided on it but a report).
#[derive(Debug, Clone, Copy)]
struct Fnv(u64);

impl Fnv {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(Self::PRIME);
        }
    }
}

/// The engine-wide bound, in bytes, on what comparison holds: every captured
/// body and header section, from capture until the control plane drains the
/// pair (or the pair is dropped). Past it a capture keeps nothing more and its
/// pair is skipped (`buffer_budget`); the user's answer is never held back.
#[derive(Debug)]
pub struct CompareBudget {
    limit: u64,
    held: AtomicU64,
}

/// The budget unless the engine is told otherwise.
pub const DEFAULT_BUFFER_BUDGET: u64 = 64 * 1024 * 1024;

impl CompareBudget {
    pub fn new(limit: u64) -> Arc<Self> {
        Arc::new(Self {
            limit,
            held: AtomicU64::new(0),
        })
    }

    /// Bytes held now (a gauge).
    pub fn held(&self) -> u64 {
        self.held.load(Relaxed)
    }

    #[cfg(test)]
    pub fn limit(&self) -> u64 {
        self.limit
    }

    fn try_charge(&self, bytes: u64) -> bool {
        self.held
            .fetch_update(Relaxed, Relaxed, |held| {
                held.checked_add(bytes).filter(|&after| after <= self.limit)
            })
            .is_ok()
    }
}

/// Bytes held against the budget, given back when dropped.
#[derive(Debug)]
struct Charge {
    budget: Arc<CompareBudget>,
    bytes: u64,
}

impl Charge {
    fn try_add(&mut self, bytes: u64) -> bool {
        let ok = self.budget.try_charge(bytes);
        if ok {
            self.bytes += bytes;
        }
        ok
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.budget.held.fetch_sub(self.bytes, Relaxed);
    }
}

/// A body being captured: bytes copied into a buffer of the capture's own
/// (a `Bytes` view of a read buffer would keep the whole read buffer alive),
/// up to `limit` and within the budget; every byte pushed is hashed.
#[derive(Debug)]
pub struct BodyCapture {
    limit: u64,
    kept: Vec<u8>,
    len: u64,
    hash: Fnv,
    charge: Charge,
    over_budget: bool,
    trailers: HeaderMap,
}

impl BodyCapture {
    pub fn new(limit: u64, budget: &Arc<CompareBudget>) -> Self {
        Self {
            limit,
            kept: Vec::new(),
            len: 0,
            hash: Fnv(Fnv::OFFSET),
            charge: Charge {
                budget: budget.clone(),
                bytes: 0,
            },
            over_budget: false,
            trailers: HeaderMap::new(),
        }
    }

    /// The body's trailer fields (a gRPC answer's status is there), owned and
    /// charged as the header section is.
    pub fn trailers(&mut self, trailers: &HeaderMap) {
        let trailers = owned(trailers);
        if !self.charge.try_add(section_bytes(&trailers)) {
            self.over_budget = true;
            return;
        }
        self.trailers = trailers;
    }

    pub fn push(&mut self, chunk: &[u8]) {
        self.len += chunk.len() as u64;
        self.hash.write(chunk);
        let room = usize::try_from(self.limit)
            .unwrap_or(usize::MAX)
            .saturating_sub(self.kept.len());
        let take = chunk.len().min(room);
        if take == 0 || self.over_budget {
            return;
        }
        let need = self.kept.len() + take;
        if need > self.kept.capacity() {
            // Doubling, capped at the limit: what is charged is what is allocated.
            let limit = usize::try_from(self.limit).unwrap_or(usize::MAX);
            let target = need.max(self.kept.capacity() * 2).min(limit);
            let before = self.kept.capacity();
            if !self.charge.try_add((target - before) as u64) {
                self.over_budget = true;
                return;
            }
            self.kept.reserve_exact(target - self.kept.len());
            // reserve_exact may round up; the surplus is charged as held.
            let surplus = self.kept.capacity().saturating_sub(target) as u64;
            self.charge.budget.held.fetch_add(surplus, Relaxed);
            self.charge.bytes += surplus;
        }
        self.kept.extend_from_slice(&chunk[..take]);
    }

    /// Whether more bytes arrived than are kept.
    #[cfg(test)]
    pub fn past_limit(&self) -> bool {
        self.len > self.limit
    }

    /// `cut`: the body was not read to its end (the capture stopped reading
    /// past its limit), so the hash and length cover only what was read.
    pub fn finish(
        mut self,
        status: u16,
        headers: HeaderMap,
        latency: Duration,
        cut: bool,
    ) -> Captured {
        let headers = owned(&headers);
        if !self.charge.try_add(section_bytes(&headers)) {
            self.over_budget = true;
        }
        Captured {
            status,
            headers,
            truncated: self.len > self.kept.len() as u64,
            cut,
            over_budget: self.over_budget,
            body_len: self.len,
            body_hash: self.hash.0,
            body: Bytes::from(self.kept),
            trailers: self.trailers,
            latency,
            _charge: self.charge,
        }
    }
}

/// What a header section is charged: its bytes plus HPACK's 32 per field.
fn section_bytes(headers: &HeaderMap) -> u64 {
    headers
        .iter()
        .map(|(n, v)| (n.as_str().len() + v.len() + 32) as u64)
        .sum()
}

/// The header section in buffers of its own. A parsed head's names and values
/// are views of the connection's read buffer, and one kept view keeps that
/// whole buffer (tens of KiB) alive for as long as the pair waits: measured,
/// that doubled what a compare flood held over the budget.
fn owned(headers: &HeaderMap) -> HeaderMap {
    let mut own = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        let name =
            HeaderName::from_bytes(name.as_str().as_bytes()).unwrap_or_else(|_| name.clone());
        let mut copy = HeaderValue::from_bytes(value.as_bytes()).unwrap_or_else(|_| value.clone());
        copy.set_sensitive(value.is_sensitive());
        own.append(name, copy);
    }
    own
}

/// One side's answer, as kept for comparison. Its bytes count against the
/// budget until it is dropped.
#[derive(Debug)]
pub struct Captured {
    pub status: u16,
    pub headers: HeaderMap,
    /// The body's first bytes (all of it unless `truncated`).
    pub body: Bytes,
    /// The trailer fields that ended the body, if any (gRPC's status).
    pub trailers: HeaderMap,
    /// Bytes of the body read (the whole body unless `cut`).
    pub body_len: u64,
    /// FNV-1a 64 of the body bytes read, kept or not.
    pub body_hash: u64,
    pub truncated: bool,
    /// Reading stopped past the capture limit: the rest of the body was never
    /// read, and `body_len` and `body_hash` cover only what was.
    pub cut: bool,
    /// The compare budget ran out while this was captured: it is incomplete.
    pub over_budget: bool,
    /// From the request's start to the body's end.
    pub latency: Duration,
    _charge: Charge,
}

impl Captured {
    /// The kept bytes (done off the hot path, when drained).
    pub fn body_bytes(&self) -> &[u8] {
        &self.body
    }

    /// Header fields in order, names lower-case, values as Latin-1 text.
    pub fn header_pairs(&self) -> Vec<(String, String)> {
        pairs(&self.headers)
    }

    /// Trailer fields, as `header_pairs`.
    pub fn trailer_pairs(&self) -> Vec<(String, String)> {
        pairs(&self.trailers)
    }
}

fn pairs(fields: &HeaderMap) -> Vec<(String, String)> {
    fields
        .iter()
        .map(|(n, v)| {
            let value = v.as_bytes().iter().map(|&b| char::from(b)).collect();
            (n.as_str().to_owned(), value)
        })
        .collect()
}

/// The primary's side of one compared request: captures the response body as
/// it streams to the client, then hands the result to every waiting copy.
#[derive(Debug)]
pub struct PrimaryCapture {
    body: BodyCapture,
    status: u16,
    headers: HeaderMap,
    started: Instant,
    waiting: Vec<oneshot::Sender<Arc<Captured>>>,
}

/// What a compared copy awaits from its primary.
pub type PrimaryReceiver = oneshot::Receiver<Arc<Captured>>;

impl PrimaryCapture {
    pub fn new(
        limit: u64,
        budget: &Arc<CompareBudget>,
        status: u16,
        headers: HeaderMap,
        started: Instant,
        waiting: Vec<oneshot::Sender<Arc<Captured>>>,
    ) -> Self {
        Self {
            body: BodyCapture::new(limit, budget),
            status,
            headers,
            started,
            waiting,
        }
    }

    #[inline]
    pub fn push(&mut self, chunk: &Bytes) {
        self.body.push(chunk);
    }

    pub fn trailers(&mut self, trailers: &HeaderMap) {
        self.body.trailers(trailers);
    }

    /// The body ended: every copy waiting gets the same capture.
    pub fn finish(self) {
        let captured =
            Arc::new(
                self.body
                    .finish(self.status, self.headers, self.started.elapsed(), false),
            );
        for tx in self.waiting {
            let _ = tx.send(captured.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fnv(bytes: &[u8]) -> u64 {
        let mut h = Fnv(Fnv::OFFSET);
        h.write(bytes);
        h.0
    }

    #[test]
    fn fnv_matches_the_reference_values() {
        assert_eq!(fnv(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv(b"foobar"), 0x8594_4171_f739_67e8);
    }

    fn budget() -> Arc<CompareBudget> {
        CompareBudget::new(DEFAULT_BUFFER_BUDGET)
    }

    #[test]
    fn captured_headers_do_not_keep_the_read_buffer_alive() {
        // As hyper parses a head: names and values are views of one read buffer.
        let buffer = Bytes::from(vec![b'v'; 64 * 1024]);
        let range = buffer.as_ptr() as usize..buffer.as_ptr() as usize + buffer.len();
        let mut headers = HeaderMap::new();
        let value = HeaderValue::from_maybe_shared(buffer.slice(0..10)).unwrap();
        headers.insert("x-from-buffer", value.clone());
        headers.append("x-from-buffer", value);
        let captured = BodyCapture::new(100, &budget()).finish(200, headers, Duration::ZERO, false);
        assert_eq!(captured.headers.get_all("x-from-buffer").iter().count(), 2);
        for value in &captured.headers {
            assert_eq!(value.1.as_bytes(), b"vvvvvvvvvv");
            assert!(
                !range.contains(&(value.1.as_bytes().as_ptr() as usize)),
                "a view of the buffer"
            );
        }
    }

    #[test]
    fn a_body_within_the_limit_is_kept_whole_in_its_own_buffer() {
        let budget = budget();
        let mut c = BodyCapture::new(100, &budget);
        let a = Bytes::from_static(b"hello ");
        let b = Bytes::from_static(b"world");
        c.push(&a);
        c.push(&b);
        let got = c.finish(200, HeaderMap::new(), Duration::ZERO, false);
        assert!(!got.truncated && !got.cut && !got.over_budget);
        assert_eq!(got.body_bytes(), b"hello world");
        assert_eq!(got.body_len, 11);
        assert_eq!(got.body_hash, fnv(b"hello world"));
        // Copied: the read buffer is not kept alive by the capture.
        assert_ne!(got.body.as_ptr(), a.as_ptr());
        // What is held is what was allocated, and it is given back on drop.
        assert!(
            budget.held() >= 11 && budget.held() <= 100,
            "{}",
            budget.held()
        );
        drop(got);
        assert_eq!(budget.held(), 0);
    }

    #[test]
    fn past_the_limit_only_length_and_hash_grow() {
        let budget = budget();
        let mut c = BodyCapture::new(4, &budget);
        for chunk in [&b"abc"[..], b"def", b"ghi"] {
            c.push(chunk);
        }
        assert!(c.past_limit());
        let got = c.finish(200, HeaderMap::new(), Duration::ZERO, false);
        assert!(got.truncated);
        assert_eq!(got.body_bytes(), b"abcd");
        assert_eq!(got.body_len, 9);
        // However the body was split, the hash is the whole body's.
        assert_eq!(got.body_hash, fnv(b"abcdefghi"));
        // Never more than the limit is allocated for the body.
        assert!(budget.held() <= 4 + 64, "{}", budget.held());
    }

    #[test]
    fn a_zero_limit_keeps_only_the_hash() {
        let budget = budget();
        let mut c = BodyCapture::new(0, &budget);
        c.push(b"xyz");
        let got = c.finish(200, HeaderMap::new(), Duration::ZERO, false);
        assert!(got.truncated && got.body.is_empty());
        assert_eq!(got.body_hash, fnv(b"xyz"));
    }

    #[test]
    fn the_budget_bounds_what_captures_hold_together() {
        let budget = CompareBudget::new(100_000);
        let chunk = vec![7u8; 60 * 1024];
        let first = {
            let mut c = BodyCapture::new(64 * 1024, &budget);
            c.push(&chunk);
            c.finish(200, HeaderMap::new(), Duration::ZERO, false)
        };
        assert!(!first.over_budget);
        let second = {
            let mut c = BodyCapture::new(64 * 1024, &budget);
            c.push(&chunk);
            c.finish(200, HeaderMap::new(), Duration::ZERO, false)
        };
        assert!(
            second.over_budget,
            "60 KiB twice does not fit 100,000 bytes"
        );
        assert!(second.body.is_empty());
        assert_eq!(second.body_len, chunk.len() as u64);
        assert!(budget.held() <= budget.limit());
        drop(first);
        drop(second);
        assert_eq!(budget.held(), 0, "every charge is given back");
    }

    #[test]
    fn trailers_are_kept_owned_and_charged() {
        let budget = budget();
        let mut c = BodyCapture::new(100, &budget);
        c.push(b"\0\0\0\0\x02hi");
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("14"));
        trailers.insert("grpc-message", HeaderValue::from_static("unavailable"));
        let before = budget.held();
        c.trailers(&trailers);
        assert_eq!(
            budget.held() - before,
            ("grpc-status".len() + 2 + 32 + "grpc-message".len() + 11 + 32) as u64
        );
        let got = c.finish(200, HeaderMap::new(), Duration::ZERO, false);
        assert_eq!(
            got.trailer_pairs(),
            [
                ("grpc-status".to_owned(), "14".to_owned()),
                ("grpc-message".to_owned(), "unavailable".to_owned())
            ]
        );
        drop(got);
        assert_eq!(budget.held(), 0);
    }

    #[test]
    fn trailers_past_the_budget_mark_the_capture_incomplete() {
        let budget = CompareBudget::new(10);
        let mut c = BodyCapture::new(0, &budget);
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        c.trailers(&trailers);
        let got = c.finish(200, HeaderMap::new(), Duration::ZERO, false);
        assert!(got.over_budget && got.trailers.is_empty());
    }

    #[test]
    fn every_waiting_copy_gets_the_primary_capture() {
        let (tx1, mut rx1) = oneshot::channel();
        let (tx2, mut rx2) = oneshot::channel();
        let mut p = PrimaryCapture::new(
            8,
            &budget(),
            200,
            HeaderMap::new(),
            Instant::now(),
            vec![tx1, tx2],
        );
        p.push(&Bytes::from_static(b"body"));
        p.finish();
        let a = rx1.try_recv().unwrap();
        let b = rx2.try_recv().unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(a.body_bytes(), b"body");
    }

    #[test]
    fn an_unfinished_primary_leaves_the_copy_with_nothing() {
        let (tx, mut rx) = oneshot::channel();
        let p = PrimaryCapture::new(
            8,
            &budget(),
            200,
            HeaderMap::new(),
            Instant::now(),
            vec![tx],
        );
        drop(p);
        assert!(rx.try_recv().is_err());
    }
}
