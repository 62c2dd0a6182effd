//! What hyper normalises without telling: the client's byte stream is followed
//! here, head by head (httparse, the parser hyper itself uses), so that a
//! request whose framing is ambiguous is refused instead of silently repaired,
//! and a request head that trickles in is cut off after the header timeout.
//!
//! hyper accepts Content-Length together with Transfer-Encoding (RFC 9112 6.1
//! allows it) and hands the service the request with Content-Length removed;
//! it collapses repeated equal Content-Length lines into one. Neither is
//! visible after parsing, so the raw head is read here as it arrives, before
//! hyper parses the same bytes. Bodies are followed only by their framing
//! (lengths, chunk-size lines), never copied; a healthy request costs one extra
//! head parse. Anything this cannot follow is left to hyper, which refuses it.

use std::future::Future;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU8, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

use crate::telemetry::reasons::{closed_list, ClosedList};

closed_list! {
    /// Why a request head was refused here.
    pub enum Verdict {
        /// Content-Length together with Transfer-Encoding.
        AmbiguousFraming => "ambiguous_framing",
        /// Content-Length given more than once (even with equal values).
        RepeatedContentLength => "repeated_content_length",
        /// The chunked body's framing is broken where it arrived with the head.
        BadChunk => "bad_chunk",
    }
}

/// What the stream side found, for the service side of the same connection.
/// Requests are numbered from 1 in arrival order, as hyper hands them over.
#[derive(Debug, Default)]
pub struct Findings {
    /// The number of the first refused request; 0: none.
    refused: AtomicU32,
    verdict: AtomicU8,
    /// Requests the service has taken so far.
    taken: AtomicU32,
    /// Set once the connection is upgraded (101): what follows is no request.
    stopped: AtomicBool,
}

impl Findings {
    /// Called once per request by the service, in order: the verdict on it, if any.
    #[inline]
    pub fn take(&self) -> Option<Verdict> {
        let number = self.taken.fetch_add(1, Relaxed) + 1;
        if self.refused.load(Relaxed) != number {
            return None;
        }
        Verdict::from_index(usize::from(self.verdict.load(Relaxed)))
    }

    /// The connection was upgraded: its bytes leave the inspector's path,
    /// and the header-read deadline no longer applies (the session's idle
    /// timeout does).
    pub fn stop_inspecting(&self) {
        self.stopped.store(true, Relaxed);
    }

    fn refuse(&self, number: u32, verdict: Verdict) {
        // The first refusal is the one that counts: hyper closes after answering it.
        if self
            .refused
            .compare_exchange(0, number, Relaxed, Relaxed)
            .is_ok()
        {
            let place = u8::try_from(verdict.index()).expect("a few verdicts");
            self.verdict.store(place, Relaxed);
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before or inside a request head (its bytes so far in `partial`).
    Head,
    /// Body bytes still to come.
    Length(u64),
    /// Inside a chunk-size line.
    ChunkSize,
    /// Chunk data bytes still to come, then its CRLF.
    ChunkData(u64),
    /// Bytes of the CRLF after chunk data still to come.
    ChunkEnd(u8),
    /// Inside the trailer section.
    Trailers,
    /// Lost the thread (input hyper refuses, CONNECT): look no further.
    Off,
}

/// Follows one connection's request stream.
#[derive(Debug)]
pub struct Tracker {
    state: State,
    /// An unfinished head, chunk-size line or trailer section.
    partial: Vec<u8>,
    heads: u32,
    max_head_bytes: usize,
    max_headers: usize,
    findings: Arc<Findings>,
}

/// Header slots kept on the stack for a head parse (above: on the heap).
const STACK_HEADERS: usize = 128;

/// Longest chunk-size line (with extensions) followed; longer ones are left to hyper.
const MAX_CHUNK_LINE: usize = 4096;

impl Tracker {
    pub fn new(max_head_bytes: usize, max_headers: usize, findings: Arc<Findings>) -> Self {
        Self {
            state: State::Head,
            partial: Vec::new(),
            heads: 0,
            max_head_bytes,
            max_headers,
            findings,
        }
    }

    /// Whether part of a request head has arrived and the rest has not.
    pub fn head_started(&self) -> bool {
        self.state == State::Head && !self.partial.is_empty()
    }

    /// Follows `bytes`, the next ones read from the client.
    pub fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let used = match self.state {
                State::Off => return,
                State::Head => self.head(bytes),
                State::Length(left) => {
                    let n = left.min(bytes.len() as u64);
                    self.state = match left - n {
                        0 => State::Head,
                        left => State::Length(left),
                    };
                    n as usize
                }
                State::ChunkSize => self.chunk_size(bytes),
                State::ChunkData(left) => {
                    let n = left.min(bytes.len() as u64);
                    self.state = match left - n {
                        0 => State::ChunkEnd(2),
                        left => State::ChunkData(left),
                    };
                    n as usize
                }
                State::ChunkEnd(left) => {
                    // hyper checks these are CRLF; here they are only counted.
                    let n = usize::from(left).min(bytes.len());
                    self.state = match usize::from(left) - n {
                        0 => State::ChunkSize,
                        left => State::ChunkEnd(left as u8),
                    };
                    n
                }
                State::Trailers => self.trailers(bytes),
            };
            bytes = &bytes[used..];
        }
    }

    /// Runs `parse` over the unfinished piece plus `bytes`. Returns how many of
    /// `bytes` were used, and what `parse` made of it (`None`: incomplete).
    /// Copies only when a piece spans reads.
    fn gather<T>(
        &mut self,
        bytes: &[u8],
        limit: usize,
        parse: impl FnOnce(&[u8]) -> Result<Option<(usize, T)>, ()>,
    ) -> (usize, Option<T>) {
        let held = self.partial.len();
        let result = if held == 0 {
            parse(bytes)
        } else {
            self.partial.extend_from_slice(bytes);
            parse(&self.partial)
        };
        match result {
            Ok(Some((end, found))) => {
                self.partial.clear();
                (end - held, Some(found))
            }
            Ok(None) if held + bytes.len() <= limit => {
                if held == 0 {
                    self.partial.extend_from_slice(bytes);
                }
                (bytes.len(), None)
            }
            // Too long or malformed: hyper answers 400 or 431 on the same bytes.
            _ => {
                self.off();
                (bytes.len(), None)
            }
        }
    }

    fn off(&mut self) {
        self.state = State::Off;
        self.partial = Vec::new();
    }

    fn head(&mut self, bytes: &[u8]) -> usize {
        let max_headers = self.max_headers;
        let (used, head) = self.gather(bytes, self.max_head_bytes, |buf| {
            // On the stack for the usual limits: no allocation per request.
            let mut stack = [const { MaybeUninit::uninit() }; STACK_HEADERS];
            let mut heap = Vec::new();
            let headers = if max_headers <= STACK_HEADERS {
                &mut stack[..max_headers]
            } else {
                heap.resize_with(max_headers, MaybeUninit::uninit);
                &mut heap[..]
            };
            let mut request = httparse::Request::new(&mut []);
            match request.parse_with_uninit_headers(buf, headers) {
                Ok(httparse::Status::Complete(end)) => Ok(Some((end, Head::read(&request)))),
                Ok(httparse::Status::Partial) => Ok(None),
                Err(_) => Err(()),
            }
        });
        let Some(head) = head else { return used };
        self.heads += 1;
        if head.content_lengths > 0 && head.transfer_encoding.is_some() {
            self.findings.refuse(self.heads, Verdict::AmbiguousFraming);
        } else if head.content_lengths > 1 {
            self.findings
                .refuse(self.heads, Verdict::RepeatedContentLength);
        }
        // The body is framed as hyper frames it: chunked wins over a length.
        self.state = match head {
            Head { connect: true, .. } => State::Off,
            Head {
                transfer_encoding: Some(true),
                ..
            } => State::ChunkSize,
            // Not chunked last: hyper refuses the request.
            Head {
                transfer_encoding: Some(false),
                ..
            } => State::Off,
            Head {
                length: Some(0), ..
            } => State::Head,
            Head {
                length: Some(n), ..
            } => State::Length(n),
            Head {
                content_lengths: 0, ..
            } => State::Head,
            // A length hyper will refuse (not digits, or differing values).
            Head { .. } => State::Off,
        };
        used
    }

    fn chunk_size(&mut self, bytes: &[u8]) -> usize {
        let (used, size) = self.gather(
            bytes,
            MAX_CHUNK_LINE,
            |buf| match httparse::parse_chunk_size(buf) {
                Ok(httparse::Status::Complete((end, size))) => Ok(Some((end, size))),
                Ok(httparse::Status::Partial) => Ok(None),
                Err(_) => Err(()),
            },
        );
        match size {
            Some(0) => self.state = State::Trailers,
            Some(size) => self.state = State::ChunkData(size),
            None if self.state == State::Off => {
                // Refused only if the service has not taken this request yet.
                self.findings.refuse(self.heads, Verdict::BadChunk);
            }
            None => {}
        }
        used
    }

    fn trailers(&mut self, bytes: &[u8]) -> usize {
        let max_headers = self.max_headers;
        let (used, done) = self.gather(bytes, self.max_head_bytes, |buf| {
            let mut headers = vec![httparse::EMPTY_HEADER; max_headers];
            match httparse::parse_headers(buf, &mut headers) {
                Ok(httparse::Status::Complete((end, _))) => Ok(Some((end, ()))),
                Ok(httparse::Status::Partial) => Ok(None),
                Err(_) => Err(()),
            }
        });
        if done.is_some() {
            self.state = State::Head;
        }
        used
    }
}

/// What the framing of one parsed head says.
struct Head {
    content_lengths: u32,
    /// The Content-Length value, when there is exactly one and it is digits.
    length: Option<u64>,
    /// `Some(chunked is the final coding)` when Transfer-Encoding is present.
    transfer_encoding: Option<bool>,
    connect: bool,
}

impl Head {
    fn read(request: &httparse::Request<'_, '_>) -> Self {
        let mut head = Head {
            content_lengths: 0,
            length: None,
            transfer_encoding: None,
            connect: request.method == Some("CONNECT"),
        };
        for header in request.headers.iter() {
            if header.name.eq_ignore_ascii_case("content-length") {
                head.content_lengths += 1;
                head.length = std::str::from_utf8(header.value)
                    .ok()
                    .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|v| v.parse().ok());
            } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
                let last = header.value.rsplit(|&b| b == b',').next().unwrap_or(b"");
                head.transfer_encoding = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            }
        }
        if head.content_lengths != 1 {
            head.length = None;
        }
        head
    }
}

/// A client connection, read through a [`Tracker`], with a deadline on each
/// request head once its first byte has arrived (the slowloris guard; hyper's
/// own timer covers the idle wait before it).
#[derive(Debug)]
pub struct Inspected<S> {
    inner: S,
    tracker: Tracker,
    header_timeout: Duration,
    deadline: Option<Pin<Box<Sleep>>>,
}

impl<S> Inspected<S> {
    pub fn new(inner: S, tracker: Tracker, header_timeout: Duration) -> Self {
        Self {
            inner,
            tracker,
            header_timeout,
            deadline: None,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Inspected<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.tracker.findings.stopped.load(Relaxed) {
            this.deadline = None;
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                this.tracker.feed(&buf.filled()[before..]);
                if !this.tracker.head_started() {
                    this.deadline = None;
                } else if this.deadline.is_none() {
                    this.deadline = Some(Box::pin(tokio::time::sleep(this.header_timeout)));
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                if let Some(deadline) = &mut this.deadline {
                    if deadline.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "request head not complete within the header read timeout",
                        )));
                    }
                }
                Poll::Pending
            }
            other => other,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Inspected<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn follow(pieces: &[&[u8]]) -> (Vec<Option<Verdict>>, Tracker) {
        let findings = Arc::new(Findings::default());
        let mut t = Tracker::new(64 * 1024, 100, findings.clone());
        for piece in pieces {
            t.feed(piece);
        }
        let verdicts = (0..t.heads).map(|_| findings.take()).collect();
        (verdicts, t)
    }

    #[test]
    fn content_length_with_transfer_encoding_is_refused_in_either_order() {
        for raw in [
            &b"POST / HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
                [..],
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n",
        ] {
            let (verdicts, _) = follow(&[raw]);
            assert_eq!(verdicts, [Some(Verdict::AmbiguousFraming)]);
        }
    }

    #[test]
    fn repeated_equal_content_length_is_refused() {
        let (verdicts, _) =
            follow(&[b"POST / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nhi"]);
        assert_eq!(verdicts, [Some(Verdict::RepeatedContentLength)]);
    }

    #[test]
    fn keep_alive_requests_are_followed_across_bodies_and_reads() {
        // A sized body, a chunked body with an extension and a trailer, then a
        // bad request: the verdict lands on the third request, not the first.
        let stream: &[u8] = b"POST /a HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello\
            POST /b HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n\
            5;ext=1\r\nhello\r\n0\r\nx-t: 1\r\n\r\n\
            GET /c HTTP/1.1\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        for split in [1, 3, 7, 40, stream.len()] {
            let pieces: Vec<&[u8]> = stream.chunks(split).collect();
            let (verdicts, t) = follow(&pieces);
            assert_eq!(
                verdicts,
                [None, None, Some(Verdict::AmbiguousFraming)],
                "split {split}"
            );
            assert!(!t.head_started());
        }
    }

    #[test]
    fn broken_chunk_sizes_refuse_the_request_they_came_with() {
        for size in [&b"0x10"[..], b"_1", b"+1", b"fffffffffffffffff", b"1;a\rb"] {
            let mut raw = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            raw.extend_from_slice(size);
            raw.extend_from_slice(b"\r\nx\r\n0\r\n\r\n");
            let (verdicts, t) = follow(&[&raw]);
            assert_eq!(verdicts, [Some(Verdict::BadChunk)], "{size:?}");
            assert_eq!(t.state, State::Off);
        }
    }

    #[test]
    fn a_partial_head_is_held_until_complete() {
        let (verdicts, t) = follow(&[b"GET / HTTP/1.1\r\nHost: a\r\n"]);
        assert!(verdicts.is_empty());
        assert!(t.head_started());
        let (_, t) = follow(&[b"GET / HTTP/1.1\r\nHost: a\r\n", b"\r\n"]);
        assert!(!t.head_started());
    }

    #[test]
    fn what_hyper_refuses_is_left_to_hyper() {
        for raw in [
            &b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"[..],
            b"GET / HTTP/1.1\r\nX-A : b\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 1, 1\r\n\r\n",
        ] {
            let (verdicts, t) = follow(&[raw]);
            assert!(verdicts.iter().all(Option::is_none), "{raw:?}");
            assert_eq!(t.state, State::Off, "{raw:?}");
        }
        // An endless head stops being copied at the head limit.
        let findings = Arc::new(Findings::default());
        let mut t = Tracker::new(1024, 100, findings);
        t.feed(b"GET / HTTP/1.1\r\n");
        for _ in 0..100 {
            t.feed(b"X-Long: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        assert_eq!(t.state, State::Off);
        assert!(t.partial.capacity() == 0);
    }
}
