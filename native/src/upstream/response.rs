//! An upstream's answer body as the proxy reads it, whichever protocol
//! carried it: its connection (HTTP/1.1) goes back to the pool, or its stream
//! slot (HTTP/2) is freed, once it has been read to the end.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::error::BodyError;
use crate::http::raw_fields::RawFields;
use crate::upstream::http1::session::Reading;
use crate::upstream::idle::{Kept, PooledBody};
use crate::upstream::multiplex::StreamSlot;

/// A response body that returns its connection to the pool once read to the end.
///
/// Boxed: the answer goes back through every layer of the request's way by
/// value, and each move copied its 256 bytes (about 40 copies per request,
/// 1.5k instructions, callgrind); a box is one allocation and a pointer.
pub struct PooledResponse<B: PooledBody> {
    pooled: Box<Pooled<B>>,
}

struct Pooled<B: PooledBody> {
    inner: Inner<B>,
    /// The answer's fields as they came, where the exchange kept them so
    /// (its `http::Response` then has none in its map).
    raw: Option<RawFields>,
}

enum Inner<B: PooledBody> {
    Http1 {
        reading: Reading<B>,
        kept: Option<Kept<B>>,
    },
    Http2 {
        body: Incoming,
        slot: Option<StreamSlot>,
    },
    /// Its connection goes back to no pool (an upgrade's own connection).
    Unpooled(Incoming),
}

impl<B: PooledBody> PooledResponse<B> {
    fn of(inner: Inner<B>, raw: Option<RawFields>) -> Self {
        Self {
            pooled: Box::new(Pooled { inner, raw }),
        }
    }

    pub fn unpooled(inner: Incoming) -> Self {
        Self::of(Inner::Unpooled(inner), None)
    }

    pub(crate) fn http1(reading: Reading<B>, kept: Kept<B>, raw: Option<RawFields>) -> Self {
        let kept = Some(kept);
        Self::of(Inner::Http1 { reading, kept }, raw)
    }

    pub(crate) fn http2(body: Incoming, slot: StreamSlot) -> Self {
        let slot = Some(slot);
        Self::of(Inner::Http2 { body, slot }, None)
    }

    /// The fields kept as they came, if the exchange kept them so.
    pub fn raw_fields(&self) -> Option<&RawFields> {
        self.pooled.raw.as_ref()
    }

    pub fn take_raw_fields(&mut self) -> Option<RawFields> {
        self.pooled.raw.take()
    }
}

impl<B: PooledBody> std::fmt::Debug for PooledResponse<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PooledResponse").finish_non_exhaustive()
    }
}

fn give_back<B: PooledBody>(reading: &mut Reading<B>, kept: &mut Option<Kept<B>>) {
    if let (Some(conn), Some(kept)) = (reading.take_reusable(), kept.take()) {
        kept.give_back(conn);
    }
}

impl<B: PooledBody> Body for PooledResponse<B> {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match &mut self.pooled.inner {
            Inner::Http1 { reading, kept } => {
                let frame = std::task::ready!(reading.poll_frame(cx));
                match &frame {
                    None => give_back(reading, kept),
                    // A broken body leaves the connection unusable.
                    Some(Err(_)) => *kept = None,
                    Some(Ok(_)) => {}
                }
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Inner::Http2 { body, slot } => {
                let frame = std::task::ready!(Pin::new(body).poll_frame(cx));
                if !matches!(frame, Some(Ok(_))) {
                    *slot = None;
                }
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Inner::Unpooled(body) => Pin::new(body)
                .poll_frame(cx)
                .map(|f| f.map(|f| f.map_err(Into::into))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.pooled.inner {
            Inner::Http1 { reading, .. } => reading.is_end_stream(),
            Inner::Http2 { body, .. } | Inner::Unpooled(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.pooled.inner {
            Inner::Http1 { reading, .. } => match reading.exact_len() {
                Some(n) => SizeHint::with_exact(n),
                None => SizeHint::default(),
            },
            Inner::Http2 { body, .. } | Inner::Unpooled(body) => body.size_hint(),
        }
    }
}

impl<B: PooledBody> Drop for PooledResponse<B> {
    fn drop(&mut self) {
        // An empty body may never be polled: it is complete all the same.
        if let Inner::Http1 { reading, kept } = &mut self.pooled.inner {
            reading.end_if_complete();
            give_back(reading, kept);
        }
    }
}
