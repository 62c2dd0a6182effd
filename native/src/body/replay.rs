//! Request bodies a retry can send again. A streamed body is gone once the
//! first try has read it; a gRPC call's body, small and always there, is
//! read whole up to a bound before the first try (as Envoy buffers for its
//! retries), copied to the mirrors on the way as any body is, and replayed
//! for each try. Past the bound the call goes on streamed, without retries.

use std::collections::VecDeque;

use bytes::Bytes;
use http::HeaderMap;
use http_body::Frame;
use http_body_util::BodyExt;

use super::RequestBody;

/// A whole request body, ready to be sent as often as needed.
#[derive(Debug, Default)]
pub struct Whole {
    chunks: Vec<Bytes>,
    trailers: Option<HeaderMap>,
}

/// What reading ahead found.
#[derive(Debug)]
pub enum ReadAhead {
    /// The body ended within the bound.
    Whole(Whole),
    /// Larger than the bound: what was read comes first, then the rest.
    Streamed(RequestBody),
    /// The client's body broke while it was read.
    Broken,
}

impl Whole {
    /// A body that sends these chunks and trailers (a retry's; nothing is
    /// copied to mirrors or counted again).
    pub fn replay(&self) -> RequestBody {
        let mut body = RequestBody::empty();
        body.prefix = self.frames();
        body
    }

    fn frames(&self) -> VecDeque<Frame<Bytes>> {
        let data = self.chunks.iter().cloned().map(Frame::data);
        let trailers = self.trailers.clone().map(Frame::trailers);
        data.chain(trailers).collect()
    }
}

/// Reads `body` to its end if it ends within `limit` bytes.
pub async fn read_ahead(mut body: RequestBody, limit: u64) -> ReadAhead {
    let mut whole = Whole::default();
    let mut read = 0u64;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return ReadAhead::Broken;
        };
        let frame = match frame.into_data() {
            Ok(data) => {
                read += data.len() as u64;
                whole.chunks.push(data);
                if read > limit {
                    body.prefix = whole.frames();
                    return ReadAhead::Streamed(body);
                }
                continue;
            }
            Err(frame) => frame,
        };
        if let Ok(trailers) = frame.into_trailers() {
            whole.trailers = Some(trailers);
        }
    }
    ReadAhead::Whole(whole)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body::Body;
    use http_body_util::BodyExt;

    fn chunks(body: &RequestBody) -> u64 {
        body.size_hint().exact().unwrap_or(u64::MAX)
    }

    #[tokio::test]
    async fn an_empty_body_is_whole_and_replays_empty() {
        let ReadAhead::Whole(whole) = read_ahead(RequestBody::empty(), 10).await else {
            panic!("not whole");
        };
        let replay = whole.replay();
        assert!(replay.is_end_stream());
        assert_eq!(chunks(&replay), 0);
    }

    #[tokio::test]
    async fn a_replay_sends_the_same_bytes_and_trailers_each_time() {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-x", "1".parse().unwrap());
        let whole = Whole {
            chunks: vec![Bytes::from("hel"), Bytes::from("lo")],
            trailers: Some(trailers.clone()),
        };
        for _ in 0..2 {
            let replay = whole.replay();
            assert_eq!(chunks(&replay), 5);
            let collected = replay.collect().await.unwrap();
            assert_eq!(collected.trailers(), Some(&trailers));
            assert_eq!(collected.to_bytes(), "hello");
        }
    }
}
