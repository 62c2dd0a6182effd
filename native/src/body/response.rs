//! The response body handed back to the client: an upstream's (or a captured
//! one, for comparison), or the proxy's own; logged when it ends.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;

use super::capture::PrimaryCapture;
use super::RequestBody;
use std::sync::Arc;

use crate::error::BodyError;
use crate::http::grpc;
use crate::http::raw_fields::{CarriesRawFields, RawFields};
use crate::telemetry::access_log::PendingLine;
use crate::telemetry::{DestinationStats, Observed};
use crate::upstream::response::PooledResponse;

/// The primary's response body: it returns its connection to the pool once read.
pub type UpstreamBody = PooledResponse<RequestBody>;

// === impl ClientBody ===

/// The body the client receives. When it ends (or is dropped because the client
/// went away) its request is counted by outcome and its access-log line written.
#[derive(Debug)]
pub struct ClientBody {
    inner: ResponseBody,
    /// Taken when counted (once: at the end, or on drop).
    observed: Option<Observed>,
    line: Option<Box<PendingLine>>,
    bytes_out: u64,
}

impl CarriesRawFields for ClientBody {
    fn raw_fields(&self) -> Option<&RawFields> {
        match &self.inner {
            ResponseBody::Upstream(body) => body.raw_fields(),
            _ => None,
        }
    }

    fn take_raw_fields(&mut self) -> Option<RawFields> {
        match &mut self.inner {
            ResponseBody::Upstream(body) => body.take_raw_fields(),
            _ => None,
        }
    }
}

impl ClientBody {
    pub fn new(inner: ResponseBody, observed: Observed, line: Option<PendingLine>) -> Self {
        Self {
            inner,
            observed: Some(observed),
            line: line.map(Box::new),
            bytes_out: 0,
        }
    }

    /// `complete`: the body ended as it should; else the client went away first.
    fn finish(&mut self, complete: bool) {
        let Some(mut observed) = self.observed.take() else {
            return;
        };
        if !complete {
            observed.flag_unless_flagged("DC");
        }
        if let Some(mut line) = self.line.take() {
            // The line says what the metrics say: the answer's flag, or DC, UR.
            line.record.response_flags = observed.flag();
            line.finish(self.bytes_out);
        }
        observed.finish(self.bytes_out);
    }

    fn trailers(&mut self, trailers: &http::HeaderMap) {
        let Some(status) = grpc::status_in(trailers) else {
            return;
        };
        if let Some(observed) = self.observed.as_mut() {
            observed.outcome.grpc_status = Some(status);
        }
        if let Some(line) = self.line.as_mut() {
            line.record.grpc_status = Some(status);
        }
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        match &frame {
            Some(Ok(f)) => match f.data_ref() {
                Some(data) => this.bytes_out += data.len() as u64,
                None => {
                    if let Some(trailers) = f.trailers_ref() {
                        this.trailers(trailers);
                    }
                }
            },
            None => this.finish(true),
            Some(Err(_)) => {
                // The upstream's body broke off: the client's answer is cut short.
                if let Some(observed) = this.observed.as_mut() {
                    observed.flag_unless_flagged("UR");
                }
                this.finish(true);
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for ClientBody {
    fn drop(&mut self) {
        // An empty body may never be polled: it is complete all the same.
        let complete = self.inner.is_end_stream();
        self.finish(complete);
    }
}

// === impl ResponseBody ===

/// What the client receives: the upstream's body streamed through, or the
/// proxy's own short reply.
#[derive(Debug)]
pub enum ResponseBody {
    Upstream(UpstreamBody),
    /// The upstream's body, also captured for comparison with mirror copies.
    Captured(Box<CapturedBody>),
    /// A body whose end someone waits for (its trailers decide something).
    Watched(Box<WatchedBody>),
    Local(Full<Bytes>),
}

/// Called once when a watched body ends: with its trailer fields, or `None`
/// when it ended without any, broke, or was dropped unfinished.
pub type OnEnd = Box<dyn FnOnce(Option<&http::HeaderMap>) + Send>;

/// Counts a primary's gRPC answer by its `grpc-status` in `stats`: now when
/// its headers carry it (a trailers-only answer), else when its trailers come
/// (what to call then is returned).
pub fn grpc_counted(headers: &http::HeaderMap, stats: &Arc<DestinationStats>) -> Option<OnEnd> {
    if !grpc::is_grpc(headers) {
        return None;
    }
    if let Some(status) = grpc::status_in(headers) {
        stats.grpc.record(status);
        return None;
    }
    let stats = stats.clone();
    Some(Box::new(move |trailers| {
        if let Some(status) = trailers.and_then(grpc::status_in) {
            stats.grpc.record(status);
        }
    }))
}

/// Both calls, one after the other, as one.
pub fn both(first: Option<OnEnd>, second: Option<OnEnd>) -> Option<OnEnd> {
    match (first, second) {
        (Some(a), Some(b)) => Some(Box::new(move |trailers| {
            a(trailers);
            b(trailers);
        })),
        (a, b) => a.or(b),
    }
}

/// A response body that reports how it ended (a gRPC answer's status comes
/// in its trailers).
pub struct WatchedBody {
    inner: ResponseBody,
    on_end: Option<OnEnd>,
}

impl std::fmt::Debug for WatchedBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchedBody")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl WatchedBody {
    pub fn new(inner: ResponseBody, on_end: OnEnd) -> Self {
        Self {
            inner,
            on_end: Some(on_end),
        }
    }

    fn end(&mut self, trailers: Option<&http::HeaderMap>) {
        if let Some(on_end) = self.on_end.take() {
            on_end(trailers);
        }
    }

    fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        match &frame {
            Some(Ok(f)) => {
                if let Some(trailers) = f.trailers_ref() {
                    self.end(Some(trailers));
                }
            }
            None | Some(Err(_)) => self.end(None),
        }
        Poll::Ready(frame)
    }
}

impl Drop for WatchedBody {
    fn drop(&mut self) {
        self.end(None);
    }
}

/// A primary's body streamed to the client and captured on the way (a
/// reference-count bump per chunk up to the bound; see `compare`).
#[derive(Debug)]
pub struct CapturedBody {
    inner: UpstreamBody,
    capture: Option<PrimaryCapture>,
}

impl CapturedBody {
    pub fn new(inner: UpstreamBody, capture: PrimaryCapture) -> Self {
        Self {
            inner,
            capture: Some(capture),
        }
    }

    fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        match &frame {
            Some(Ok(f)) => {
                if let Some(c) = self.capture.as_mut() {
                    if let Some(data) = f.data_ref() {
                        c.push(data);
                    } else if let Some(trailers) = f.trailers_ref() {
                        c.trailers(trailers);
                    }
                }
            }
            None => {
                if let Some(c) = self.capture.take() {
                    c.finish();
                }
            }
            // A broken body is not an answer to compare: the copy is told so
            // when the capture is dropped unfinished.
            Some(Err(_)) => self.capture = None,
        }
        Poll::Ready(frame)
    }
}

impl Drop for CapturedBody {
    fn drop(&mut self) {
        // An empty body may never be polled: it is complete all the same.
        if self.inner.is_end_stream() {
            if let Some(c) = self.capture.take() {
                c.finish();
            }
        }
    }
}

impl From<Full<Bytes>> for ResponseBody {
    fn from(body: Full<Bytes>) -> Self {
        Self::Local(body)
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            Self::Upstream(body) => Pin::new(body).poll_frame(cx),
            Self::Captured(body) => body.poll_frame(cx),
            Self::Watched(body) => body.poll_frame(cx),
            Self::Local(body) => Pin::new(body)
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(|never| match never {}))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Upstream(body) => body.is_end_stream(),
            Self::Captured(body) => body.inner.is_end_stream(),
            Self::Watched(body) => body.inner.is_end_stream(),
            Self::Local(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Upstream(body) => body.size_hint(),
            Self::Captured(body) => body.inner.size_hint(),
            Self::Watched(body) => body.inner.size_hint(),
            Self::Local(body) => body.size_hint(),
        }
    }
}

impl Default for ResponseBody {
    fn default() -> Self {
        Self::Local(Full::new(Bytes::new()))
    }
}
