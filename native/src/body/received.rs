//! The client's request body as the listener received it: hyper's stream (the
//! HTTP/2 connection, and HTTP/1.1 requests the proxy's own session hands to
//! hyper), or the whole body the own HTTP/1.1 session read with the head.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

#[derive(Debug)]
pub enum Received {
    Streamed(Incoming),
    /// Read whole with its head; `None`: no body, or already handed on.
    Whole(Option<Bytes>),
}

impl Received {
    /// A body already read whole (empty: none).
    pub fn whole(bytes: Bytes) -> Self {
        Self::Whole((!bytes.is_empty()).then_some(bytes))
    }
}

impl From<Incoming> for Received {
    fn from(incoming: Incoming) -> Self {
        Self::Streamed(incoming)
    }
}

impl Body for Received {
    type Data = Bytes;
    // A whole body cannot fail: only hyper's stream has errors to give.
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            Self::Streamed(incoming) => Pin::new(incoming).poll_frame(cx),
            Self::Whole(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Streamed(incoming) => incoming.is_end_stream(),
            Self::Whole(bytes) => bytes.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Streamed(incoming) => incoming.size_hint(),
            Self::Whole(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn a_whole_body_is_one_frame_of_its_exact_length_then_the_end() {
        let body = Received::whole(Bytes::from_static(b"hello"));
        assert!(!body.is_end_stream());
        assert_eq!(body.size_hint().exact(), Some(5));
        let collected = body.collect().await.unwrap().to_bytes();
        assert_eq!(&collected[..], b"hello");
        let empty = Received::whole(Bytes::new());
        assert!(empty.is_end_stream());
        assert_eq!(empty.size_hint().exact(), Some(0));
    }
}
