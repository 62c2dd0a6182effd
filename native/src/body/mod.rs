//! Bodies: the client's request body teed to mirrors, each copy's bounded
//! stream, and the response body handed back to the client.
//!
//! The primary gets every chunk as it arrives. Each mirror copy gets the same
//! `Bytes` (a reference-count bump, no deep copy) through a bounded buffer;
//! when the buffer is full the copy is cut and counted, and the primary never
//! waits for it.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::{mpsc, oneshot};

use crate::telemetry::{ClosedList, DropReason};

pub mod capture;
mod pooled;
mod received;
pub mod replay;
mod response;

pub use pooled::sweep_idle_forever;
pub use received::Received;
pub use response::{
    both, grpc_counted, CapturedBody, ClientBody, OnEnd, ResponseBody, UpstreamBody, WatchedBody,
};

/// Chunks a copy may have queued; the byte bound usually bites first.
const TAP_CHUNKS: usize = 1024;

/// One budget of bytes queued for mirror copies across every copy of an
/// engine, so that many slow copies together stay bounded too.
#[derive(Debug)]
pub struct MirrorBudget {
    queued: AtomicU64,
    max: u64,
}

impl MirrorBudget {
    pub fn new(max: u64) -> Arc<Self> {
        Arc::new(Self {
            queued: AtomicU64::new(0),
            max,
        })
    }

    pub fn queued(&self) -> u64 {
        self.queued.load(Ordering::Relaxed)
    }

    pub(crate) fn reserve(self: &Arc<Self>, chunk: &Bytes) -> Option<Reserved> {
        let len = chunk.len() as u64;
        if self.queued.fetch_add(len, Ordering::Relaxed) + len > self.max {
            self.queued.fetch_sub(len, Ordering::Relaxed);
            return None;
        }
        Some(Reserved {
            chunk: chunk.clone(),
            len,
            budget: self.clone(),
        })
    }
}

/// A chunk on its way to a copy, holding its share of the budget until it is
/// taken or dropped (with the channel, or when a send fails): released once.
#[derive(Debug)]
pub(crate) struct Reserved {
    chunk: Bytes,
    /// Reserved bytes, kept apart: `take` empties `chunk`.
    len: u64,
    budget: Arc<MirrorBudget>,
}

impl Reserved {
    /// The chunk, still holding its share of the budget.
    pub(crate) fn bytes(&self) -> &Bytes {
        &self.chunk
    }

    fn take(mut self) -> Bytes {
        std::mem::take(&mut self.chunk)
    }
}

impl Drop for Reserved {
    fn drop(&mut self) {
        self.budget.queued.fetch_sub(self.len, Ordering::Relaxed);
    }
}

/// Shared between one tap and the copy it feeds.
#[derive(Debug)]
pub struct TapState {
    queued_bytes: AtomicU64,
    /// Body bytes the copy has taken so far (sent on, or being sent).
    sent_bytes: AtomicU64,
    max_bytes: u64,
    /// 0 while healthy, else the reason's place in `DropReason::ALL`, plus one.
    cut: AtomicU8,
}

/// A reason as `TapState::cut` stores it (0 stays "not cut").
fn place(reason: DropReason) -> u8 {
    u8::try_from(reason.index() + 1).expect("fewer than 255 drop reasons")
}

impl TapState {
    pub fn sent_bytes(&self) -> u64 {
        self.sent_bytes.load(Ordering::Relaxed)
    }

    /// Why the copy was cut short, if it was.
    pub fn cut_reason(&self) -> Option<DropReason> {
        match self.cut.load(Ordering::Acquire) {
            0 => None,
            n => DropReason::from_index(usize::from(n - 1)),
        }
    }

    fn cut(&self, reason: DropReason) {
        // Release: the copy's reader sees the reason once it sees the closed channel.
        let _ = self
            .cut
            .compare_exchange(0, place(reason), Ordering::Release, Ordering::Relaxed);
    }
}

/// What a copy's body carries: the client's chunks, then its trailer fields.
#[derive(Debug)]
enum Piece {
    Data(Reserved),
    Trailers(http::HeaderMap),
}

/// The sending end of one mirror copy's body.
#[derive(Debug)]
struct Tap {
    tx: Option<mpsc::Sender<Piece>>,
    state: Arc<TapState>,
    budget: Arc<MirrorBudget>,
    /// Tells the copy at once that it was cut: a copy whose mirror reads
    /// nothing would otherwise learn it only at its timeout.
    notice: Option<oneshot::Sender<()>>,
}

impl Tap {
    fn offer(&mut self, chunk: &Bytes) {
        let Some(tx) = &self.tx else { return };
        let len = chunk.len() as u64;
        let queued = self.state.queued_bytes.fetch_add(len, Ordering::Relaxed) + len;
        if queued > self.state.max_bytes {
            return self.cut(DropReason::BodyBuffer);
        }
        let Some(reserved) = self.budget.reserve(chunk) else {
            return self.cut(DropReason::BufferBudget);
        };
        match tx.try_send(Piece::Data(reserved)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => self.cut(DropReason::BodyBuffer),
            // The copy already ended (failed, timed out): stop feeding it.
            Err(mpsc::error::TrySendError::Closed(_)) => self.tx = None,
        }
    }

    /// The client's trailer fields: the last piece; a full buffer cuts the
    /// copy as a chunk would.
    fn offer_trailers(&mut self, trailers: &http::HeaderMap) {
        let Some(tx) = self.tx.take() else { return };
        if let Err(mpsc::error::TrySendError::Full(_)) =
            tx.try_send(Piece::Trailers(trailers.clone()))
        {
            self.cut(DropReason::BodyBuffer);
        }
    }

    fn cut(&mut self, reason: DropReason) {
        self.state.cut(reason);
        self.tx = None;
        if let Some(notice) = self.notice.take() {
            let _ = notice.send(());
        }
    }
}

/// Resolves when a copy's body is cut; never, if it is not.
#[derive(Debug)]
pub struct CutNotice(oneshot::Receiver<()>);

impl CutNotice {
    pub async fn cut(self) {
        if self.0.await.is_err() {
            // The body ended whole (the tap is gone uncut): nothing will come.
            std::future::pending::<()>().await;
        }
    }
}

/// Creates a mirror copy's body and the tap that feeds it.
pub fn tap(max_bytes: u64, budget: &Arc<MirrorBudget>) -> (TapHandle, MirrorBody) {
    let (tx, rx) = mpsc::channel(TAP_CHUNKS);
    let (notice, cut_notice) = oneshot::channel();
    let state = Arc::new(TapState {
        queued_bytes: AtomicU64::new(0),
        sent_bytes: AtomicU64::new(0),
        max_bytes,
        cut: AtomicU8::new(0),
    });
    (
        TapHandle(Tap {
            tx: Some(tx),
            state: state.clone(),
            budget: budget.clone(),
            notice: Some(notice),
        }),
        MirrorBody {
            rx: Some(rx),
            state: Some(state),
            cut_notice: Some(CutNotice(cut_notice)),
        },
    )
}

/// A tap not yet attached to a request body.
#[derive(Debug)]
pub struct TapHandle(Tap);

// === impl RequestBody ===

/// The client's request body on its way to the primary, copied to any taps.
///
/// Generic over the client's body only so that tests can stand in for
/// `Received` (whose streamed side, hyper's `Incoming`, has no public
/// constructor).
#[derive(Debug)]
pub struct RequestBody<B = Received> {
    /// Frames already read (and copied to the taps), sent before `inner`'s:
    /// a body read ahead for a retry, or replayed for one.
    prefix: VecDeque<Frame<Bytes>>,
    /// `None`: no more body than `prefix` (a retried request's).
    inner: Option<B>,
    taps: Vec<Tap>,
    /// Bytes read from the client, for the access log.
    counter: Option<Arc<AtomicU64>>,
    /// Set when the client's body broke (bad chunk framing, early close), so
    /// that the failure is answered as the client's (400), not the upstream's.
    client_failed: Option<Arc<AtomicBool>>,
}

impl<B> RequestBody<B> {
    pub fn new(inner: B, taps: Vec<TapHandle>) -> Self {
        Self {
            prefix: VecDeque::new(),
            inner: Some(inner),
            taps: taps.into_iter().map(|t| t.0).collect(),
            counter: None,
            client_failed: None,
        }
    }

    pub fn empty() -> Self {
        Self {
            prefix: VecDeque::new(),
            inner: None,
            taps: Vec::new(),
            counter: None,
            client_failed: None,
        }
    }

    pub fn counted(mut self, counter: Arc<AtomicU64>) -> Self {
        self.counter = Some(counter);
        self
    }

    /// A flag raised if the client's body fails; `None` for a body that has
    /// ended already (nothing of it can fail, and no flag is allocated).
    pub fn watched(mut self) -> (Self, Option<Arc<AtomicBool>>)
    where
        B: Body<Data = Bytes> + Unpin,
    {
        if self.is_end_stream() {
            return (self, None);
        }
        let flag = Arc::new(AtomicBool::new(false));
        self.client_failed = Some(flag.clone());
        (self, Some(flag))
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for RequestBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = &mut *self;
        if let Some(frame) = this.prefix.pop_front() {
            return Poll::Ready(Some(Ok(frame)));
        }
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let frame = ready!(Pin::new(&mut *inner).poll_frame(cx));
        match &frame {
            Some(Ok(frame)) => {
                if let Some(chunk) = frame.data_ref() {
                    this.taps.iter_mut().for_each(|t| t.offer(chunk));
                    if let Some(counter) = &this.counter {
                        counter.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                    }
                    // A sized body's last chunk: hyper's client stops polling
                    // here and drops the body, so end the copies now.
                    if inner.is_end_stream() {
                        this.taps.clear();
                    }
                } else if let Some(trailers) = frame.trailers_ref() {
                    // Trailers are the last frame; hyper's client drops the body
                    // after them without polling to the end. The copies end
                    // whole, with the same fields as the primary (over HTTP/1.1
                    // hyper sends those its `Trailer` header declares).
                    this.taps
                        .iter_mut()
                        .for_each(|t| t.offer_trailers(trailers));
                    this.taps.clear();
                }
            }
            // Complete: dropping the senders ends each copy's body cleanly.
            None => this.taps.clear(),
            Some(Err(_)) => {
                this.taps
                    .iter_mut()
                    .for_each(|t| t.cut(DropReason::RequestAborted));
                if let Some(flag) = &this.client_failed {
                    flag.store(true, Ordering::Relaxed);
                }
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.is_empty() && self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        let ahead: u64 = self
            .prefix
            .iter()
            .filter_map(Frame::data_ref)
            .map(|d| d.len() as u64)
            .sum();
        match &self.inner {
            None => SizeHint::with_exact(ahead),
            Some(inner) if ahead == 0 => inner.size_hint(),
            Some(_) => SizeHint::default(),
        }
    }
}

impl<B> Drop for RequestBody<B> {
    fn drop(&mut self) {
        // Dropped before its end: a copy must not pass a truncated body as whole.
        for tap in &mut self.taps {
            if tap.tx.is_some() {
                tap.cut(DropReason::RequestAborted);
            }
        }
    }
}

// === impl MirrorBody ===

/// A mirror copy's request body: what the tap passed on, then the end, or an
/// error if the tap was cut (so the copy is abandoned, never sent short).
#[derive(Debug, Default)]
pub struct MirrorBody {
    rx: Option<mpsc::Receiver<Piece>>,
    state: Option<Arc<TapState>>,
    cut_notice: Option<CutNotice>,
}

impl MirrorBody {
    pub fn empty() -> Self {
        Self::default()
    }
}

/// The copy's body was cut; the reason is on its `TapState`.
#[derive(Debug, thiserror::Error)]
#[error("mirror copy body cut short")]
pub struct BodyCut;

impl Body for MirrorBody {
    type Data = Bytes;
    type Error = BodyCut;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyCut>>> {
        let Some(rx) = self.rx.as_mut() else {
            return Poll::Ready(None);
        };
        match ready!(rx.poll_recv(cx)) {
            Some(Piece::Data(reserved)) => {
                let chunk = reserved.take();
                if let Some(state) = &self.state {
                    let len = chunk.len() as u64;
                    state.queued_bytes.fetch_sub(len, Ordering::Relaxed);
                    state.sent_bytes.fetch_add(len, Ordering::Relaxed);
                }
                Poll::Ready(Some(Ok(Frame::data(chunk))))
            }
            Some(Piece::Trailers(trailers)) => {
                self.rx = None;
                Poll::Ready(Some(Ok(Frame::trailers(trailers))))
            }
            None => {
                self.rx = None;
                let cut = self.state.as_ref().and_then(|s| s.cut_reason()).is_some();
                Poll::Ready(cut.then_some(Err(BodyCut)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.rx.is_none()
    }
}

impl MirrorBody {
    pub fn state(&self) -> Option<Arc<TapState>> {
        self.state.clone()
    }

    /// What tells the copy that this body was cut (taken once).
    pub fn take_cut_notice(&mut self) -> Option<CutNotice> {
        self.cut_notice.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn chunk(n: usize) -> Bytes {
        Bytes::from(vec![b'x'; n])
    }

    #[tokio::test]
    async fn a_finished_tap_ends_the_copy_cleanly() {
        let (TapHandle(mut tap), body) = tap(1024, &MirrorBudget::new(u64::MAX));
        let state = body.state().unwrap();
        tap.offer(&Bytes::from_static(b"hello "));
        tap.offer(&Bytes::from_static(b"world"));
        drop(tap);
        let collected = body.collect().await.unwrap().to_bytes();
        assert_eq!(collected, "hello world");
        assert_eq!(state.cut_reason(), None);
        assert_eq!(state.queued_bytes.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn a_full_buffer_cuts_the_copy_which_then_fails() {
        let (TapHandle(mut tap), mut body) = tap(100, &MirrorBudget::new(u64::MAX));
        let state = body.state().unwrap();
        tap.offer(&chunk(60));
        tap.offer(&chunk(60)); // 120 queued > 100: cut
        tap.offer(&chunk(1)); // ignored once cut
        assert!(tap.tx.is_none());
        assert_eq!(state.cut_reason(), Some(DropReason::BodyBuffer));
        let first = body.frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap().len(), 60);
        assert!(
            body.frame().await.unwrap().is_err(),
            "never a short body passed as whole"
        );
    }

    #[tokio::test]
    async fn a_copy_that_ended_stops_being_fed() {
        let (TapHandle(mut tap), body) = tap(1024, &MirrorBudget::new(u64::MAX));
        let state = body.state().unwrap();
        drop(body);
        tap.offer(&chunk(10));
        assert!(tap.tx.is_none());
        assert_eq!(state.cut_reason(), None);
    }

    #[tokio::test]
    async fn the_shared_budget_cuts_copies_and_is_given_back() {
        let budget = MirrorBudget::new(100);
        let (TapHandle(mut a), body_a) = tap(1000, &budget);
        let (TapHandle(mut b), body_b) = tap(1000, &budget);
        let state_b = body_b.state().unwrap();
        a.offer(&chunk(80));
        assert_eq!(budget.queued(), 80);
        b.offer(&chunk(30)); // 110 > 100: b is cut, a goes on
        assert_eq!(state_b.cut_reason(), Some(DropReason::BufferBudget));
        assert_eq!(budget.queued(), 80);
        drop(a);
        assert_eq!(body_a.collect().await.unwrap().to_bytes().len(), 80);
        assert_eq!(budget.queued(), 0, "a chunk taken gives its bytes back");
        let (TapHandle(mut c), body_c) = tap(1000, &budget);
        c.offer(&chunk(50));
        drop(body_c); // a copy that ends with chunks queued gives them back too
        assert_eq!(budget.queued(), 0);
    }

    /// Stands in for hyper's `Incoming`: its frames, then the end. With a
    /// length (Content-Length) it is at its end once that much was read.
    struct Client {
        frames: std::collections::VecDeque<Frame<Bytes>>,
        left: Option<u64>,
    }

    impl Client {
        fn chunked(frames: Vec<Frame<Bytes>>) -> Self {
            Self {
                frames: frames.into(),
                left: None,
            }
        }

        fn sized(chunks: &[&'static str]) -> Self {
            Self {
                frames: chunks
                    .iter()
                    .map(|c| Frame::data(Bytes::from(*c)))
                    .collect(),
                left: Some(chunks.iter().map(|c| c.len() as u64).sum()),
            }
        }
    }

    impl Body for Client {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            let frame = self.frames.pop_front();
            if let (Some(left), Some(data)) = (self.left.as_mut(), frame.as_ref()) {
                *left -= data.data_ref().map_or(0, |d| d.len() as u64);
            }
            Poll::Ready(frame.map(Ok))
        }

        fn is_end_stream(&self) -> bool {
            self.left == Some(0)
        }
    }

    fn trailers() -> Frame<Bytes> {
        let mut fields = http::HeaderMap::new();
        fields.insert("x-trailer", http::HeaderValue::from_static("1"));
        Frame::trailers(fields)
    }

    /// Reads `body` as hyper's HTTP/1 client does (`proto/h1/dispatch.rs`):
    /// it stops at the end, after trailers, or after the data frame that
    /// leaves the body at its end, and drops the body there. Returns the data.
    async fn send_as_hyper_does(mut body: RequestBody<Client>) -> Bytes {
        let mut sent = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.unwrap();
            if frame.is_trailers() {
                break;
            }
            sent.extend_from_slice(frame.data_ref().unwrap());
            if body.is_end_stream() {
                break;
            }
        }
        drop(body);
        sent.into()
    }

    #[tokio::test]
    async fn a_chunked_body_with_trailers_ends_the_copy_whole_with_them() {
        let (handle, copy) = tap(1024, &MirrorBudget::new(u64::MAX));
        let state = copy.state().unwrap();
        let client = Client::chunked(vec![
            Frame::data(Bytes::from("hel")),
            Frame::data(Bytes::from("lo")),
            trailers(),
        ]);
        let sent = send_as_hyper_does(RequestBody::new(client, vec![handle])).await;
        assert_eq!(sent, "hello");
        let collected = copy.collect().await.unwrap();
        let expected = trailers().into_trailers().unwrap();
        assert_eq!(collected.trailers(), Some(&expected));
        assert_eq!(collected.to_bytes(), "hello");
        assert_eq!(state.cut_reason(), None, "not taken for an aborted request");
    }

    #[tokio::test]
    async fn a_sized_body_ends_the_copy_at_its_last_chunk() {
        let (handle, copy) = tap(1024, &MirrorBudget::new(u64::MAX));
        let state = copy.state().unwrap();
        let client = Client::sized(&["hel", "lo"]);
        let sent = send_as_hyper_does(RequestBody::new(client, vec![handle])).await;
        assert_eq!(sent, "hello");
        assert_eq!(state.cut_reason(), None);
        assert_eq!(copy.collect().await.unwrap().to_bytes(), "hello");
    }

    #[tokio::test]
    async fn an_empty_chunked_body_ends_the_copy_empty() {
        let (handle, copy) = tap(1024, &MirrorBudget::new(u64::MAX));
        let sent =
            send_as_hyper_does(RequestBody::new(Client::chunked(vec![]), vec![handle])).await;
        assert!(sent.is_empty());
        assert!(copy.collect().await.unwrap().to_bytes().is_empty());
    }

    #[tokio::test]
    async fn a_body_dropped_before_its_end_still_cuts_the_copy() {
        let (handle, mut copy) = tap(1024, &MirrorBudget::new(u64::MAX));
        let state = copy.state().unwrap();
        let client = Client::chunked(vec![Frame::data(Bytes::from("hel")), trailers()]);
        let mut body = RequestBody::new(client, vec![handle]);
        body.frame().await.unwrap().unwrap();
        drop(body); // the primary's exchange failed mid-body
        assert_eq!(state.cut_reason(), Some(DropReason::RequestAborted));
        assert_eq!(
            copy.frame().await.unwrap().unwrap().into_data().unwrap(),
            "hel"
        );
        assert!(copy.frame().await.unwrap().is_err());
    }

    #[tokio::test]
    async fn an_empty_copy_body_ends_at_once() {
        let body = MirrorBody::empty();
        assert!(body.is_end_stream());
        assert!(body.collect().await.unwrap().to_bytes().is_empty());
    }
}
