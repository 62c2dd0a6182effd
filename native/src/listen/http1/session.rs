//! The connection's own HTTP/1.1 session: one task reads a request head
//! (`head`), runs the request's way through the proxy, and writes its answer
//! (`answer`), on the socket directly, request after request. hyper's server
//! dispatcher did the same with its generic machinery around it: a read
//! buffer strategy, a body channel, a write queue, and the inspector parsing
//! every head a second time. Requests the session does not serve (see
//! `head`) hand the connection to hyper with what was read.

use std::convert::Infallible;
use std::future::{poll_fn, Future};
use std::io::{self, IoSlice, Write as _};
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use tokio::time::Instant;

use bytes::{Bytes, BytesMut};
use http::{Method, Response};
use http_body::Body;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::body::Received;
use crate::http::raw_fields::CarriesRawFields;
use crate::http::request_head::RequestHead;
use crate::transport::Stream;

use super::answer::{self, BodyLength, Framing, Unwritable};
use super::head::{self, Parsed, Taken};

/// Read buffer bytes to begin with (hyper's too).
const INITIAL_BUFFER: usize = 8192;

/// Data frames up to this size are copied behind the head (or the previous
/// frame) and written with it; larger ones are written in place. What waits
/// to be written is written once it reaches this size too.
const COPY_BELOW: usize = 16 * 1024;

/// How a session ended.
pub enum Ended {
    Closed,
    /// A request for hyper: what was read and not served, and the socket.
    HandOff(BytesMut, Stream),
}

/// What the session runs with.
pub struct Settings {
    pub max_head_bytes: usize,
    pub max_fields: usize,
    pub header_read_timeout: Duration,
}

/// Serves requests with `handle` until the client closes, a drain ends the
/// connection between two requests (`drained`), or a request is hyper's.
pub async fn run<H, F, B>(
    mut stream: Stream,
    mut handle: H,
    settings: Settings,
    drained: Arc<AtomicBool>,
) -> Ended
where
    H: FnMut(RequestHead, Received) -> F,
    F: Future<Output = Result<Response<B>, Infallible>>,
    B: Body<Data = Bytes> + Unpin + CarriesRawFields,
{
    let mut buf = BytesMut::with_capacity(INITIAL_BUFFER);
    let mut out = Vec::with_capacity(1024);
    loop {
        let taken = match next(&mut stream, &mut buf, &settings, &drained).await {
            Next::Request(taken) => taken,
            Next::HandOff => return Ended::HandOff(buf, stream),
            Next::Closed => return Ended::Closed,
        };
        let method = taken.head.method().clone();
        let close = taken.close;
        // Pinned where it is made: a request's future is large, and every
        // move of it is a copy.
        let response = {
            let respond = pin!(handle(taken.head, Received::whole(taken.body)));
            answered(respond, &mut stream, &mut buf).await
        };
        let Some(response) = response else {
            return Ended::Closed;
        };
        let closing = close || drained.load(Relaxed);
        // Taken apart here and lent: a future that owned them would hold
        // them twice (as its arguments and as its locals), copied at each call.
        let (mut parts, mut body) = response.into_parts();
        let kept = reply(
            &mut stream,
            &mut out,
            &mut parts,
            &mut body,
            &method,
            closing,
        )
        .await;
        if !kept {
            let _ = stream.shutdown().await;
            return Ended::Closed;
        }
    }
}

/// What the start of the connection's bytes turned out to be.
enum Next {
    Request(Taken),
    HandOff,
    Closed,
}

/// Reads until a request head is whole (or is hyper's).
async fn next(
    stream: &mut Stream,
    buf: &mut BytesMut,
    settings: &Settings,
    drained: &AtomicBool,
) -> Next {
    // A head that has begun must be whole by then (slowloris guard).
    let mut deadline = None;
    loop {
        if !buf.is_empty() {
            match head::parse(buf, settings.max_fields, true) {
                Parsed::Request(taken) => return Next::Request(taken),
                Parsed::HandOff => return Next::HandOff,
                // hyper answers a head over the limit (431).
                Parsed::Partial if buf.len() >= settings.max_head_bytes => return Next::HandOff,
                Parsed::Partial => {}
            }
            if deadline.is_none() {
                deadline = Some(Instant::now() + settings.header_read_timeout);
            }
        }
        match more(stream, buf, deadline, drained).await {
            More::Read => {}
            // A head cut off by the client's close is hyper's to answer.
            More::Closed if !buf.is_empty() => return Next::HandOff,
            More::Closed | More::Stop => return Next::Closed,
        }
    }
}

/// Writes the answer; false: the connection closes after it.
async fn reply<B: Body<Data = Bytes> + Unpin + CarriesRawFields>(
    stream: &mut Stream,
    out: &mut Vec<u8>,
    parts: &mut http::response::Parts,
    body: &mut B,
    method: &Method,
    closing: bool,
) -> bool {
    // Fields kept as they came are written from there, unless the session
    // adds one of its own (or the map has any): then all go into the map.
    if closing || !parts.headers.is_empty() {
        if let Some(raw) = body.take_raw_fields() {
            let added = std::mem::take(&mut parts.headers);
            let Some(merged) = answer::merged(&raw, added) else {
                return false;
            };
            parts.headers = merged;
        }
    }
    if closing {
        answer::closing(&mut parts.headers);
    }
    let length = if body.is_end_stream() {
        BodyLength::Empty
    } else {
        body.size_hint()
            .exact()
            .map_or(BodyLength::Unknown, BodyLength::Known)
    };
    out.clear();
    let written = match body.raw_fields() {
        Some(raw) => answer::head_raw(parts, raw, method, length, out),
        None => answer::head(parts, method, length, out),
    };
    let written = match written {
        Ok(written) => written,
        Err(unwritable) => {
            out.clear();
            if unwritable == Unwritable::Interim {
                answer::refusal(out);
                let _ = stream.write_all(out).await;
            }
            return false;
        }
    };
    let sent = match written.framing {
        // Not polled, as hyper's server does not (HEAD, 204, 304).
        Framing::Length(0) => write(stream, out, None).await.is_ok(),
        framing => send_body(stream, out, body, framing).await.is_ok(),
    };
    sent && !written.last && !closing
}

/// What reading more of a head gave.
enum More {
    Read,
    /// The client closed (or the read failed).
    Closed,
    /// The head did not complete by its deadline, or the connection is
    /// drained (between requests, or in a head that has begun: hyper closes
    /// those too).
    Stop,
}

/// Reads more of a request head, by `deadline` once one has begun.
async fn more(
    stream: &mut Stream,
    buf: &mut BytesMut,
    deadline: Option<Instant>,
    drained: &AtomicBool,
) -> More {
    make_room(buf);
    // Checked at each poll: the drain is signalled by the connection's own
    // task, which polls the session again right after.
    let drain = poll_fn(|_| {
        if drained.load(Relaxed) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    });
    let read = async {
        let read = match deadline {
            Some(deadline) => match tokio::time::timeout_at(deadline, stream.read_buf(buf)).await {
                Ok(read) => read,
                Err(_) => return More::Stop,
            },
            None => stream.read_buf(buf).await,
        };
        match read {
            Ok(n) if n > 0 => More::Read,
            _ => More::Closed,
        }
    };
    tokio::select! {
        biased;
        () = drain => More::Stop,
        more = read => more,
    }
}

/// Runs the request to its answer's head. Meanwhile the client's next bytes
/// are read ahead (a pipelined request); a client that closes meanwhile ends
/// the request, as hyper's server did (`None`).
async fn answered<F, B>(
    mut respond: Pin<&mut F>,
    stream: &mut Stream,
    buf: &mut BytesMut,
) -> Option<Response<B>>
where
    F: Future<Output = Result<Response<B>, Infallible>>,
{
    while buf.is_empty() {
        make_room(buf);
        tokio::select! {
            biased;
            response = respond.as_mut() => return response.ok(),
            read = stream.read_buf(buf) => {
                if !matches!(read, Ok(n) if n > 0) {
                    return None;
                }
            }
        }
    }
    let Ok(response) = respond.await;
    Some(response)
}

/// Room for the next read: at least 1 KiB free, else another 8 KiB.
fn make_room(buf: &mut BytesMut) {
    if buf.capacity() - buf.len() < 1024 {
        buf.reserve(INITIAL_BUFFER);
    }
}

/// Streams the body in `framing` after the head in `out`.
async fn send_body<B: Body<Data = Bytes> + Unpin>(
    stream: &mut Stream,
    out: &mut Vec<u8>,
    body: &mut B,
    framing: Framing,
) -> io::Result<()> {
    let mut left = match framing {
        Framing::Length(n) => Some(n),
        Framing::Chunked => None,
    };
    loop {
        // What is ready now joins what waits to be written; only a frame
        // that must be waited for sends what waits first.
        let frame = match poll_fn(|cx| Poll::Ready(Pin::new(&mut *body).poll_frame(cx))).await {
            Poll::Ready(frame) => frame,
            Poll::Pending => {
                write(stream, out, None).await?;
                poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await
            }
        };
        let data = match frame {
            None => break,
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => data,
                // Trailers: not sent (the request did not ask with `TE`).
                Err(_) => continue,
            },
            // The answer broke off: the client must not take it for whole.
            Some(Err(_)) => return Err(io::ErrorKind::UnexpectedEof.into()),
        };
        if data.is_empty() {
            continue;
        }
        match &mut left {
            Some(left) => {
                *left = left
                    .checked_sub(data.len() as u64)
                    .ok_or(io::ErrorKind::InvalidData)?;
                put(stream, out, data).await?;
            }
            None => {
                let _ = write!(out, "{:X}\r\n", data.len());
                put(stream, out, data).await?;
                out.extend_from_slice(b"\r\n");
            }
        }
        if body.is_end_stream() {
            break;
        }
        // Bounded in bytes: an upstream faster than the client (every frame
        // ready) must not pile its answer up here.
        if out.len() >= COPY_BELOW {
            write(stream, out, None).await?;
        }
    }
    match left {
        // Shorter than its Content-Length: hyper closes, and so does this.
        Some(left) if left > 0 => return Err(io::ErrorKind::UnexpectedEof.into()),
        Some(_) => {}
        None => out.extend_from_slice(b"0\r\n\r\n"),
    }
    write(stream, out, None).await
}

/// Adds `data` behind what waits in `out`: copied when small, else written
/// with it at once.
async fn put(stream: &mut Stream, out: &mut Vec<u8>, data: Bytes) -> io::Result<()> {
    if data.len() < COPY_BELOW {
        out.extend_from_slice(&data);
        Ok(())
    } else {
        write(stream, out, Some(&data)).await
    }
}

/// Writes `out`, then `data`, in as few calls as the socket takes; `out` is
/// empty after.
async fn write(stream: &mut Stream, out: &mut Vec<u8>, data: Option<&[u8]>) -> io::Result<()> {
    let data = data.unwrap_or_default();
    let mut head = 0;
    let mut tail = 0;
    while head < out.len() || tail < data.len() {
        let slices = [IoSlice::new(&out[head..]), IoSlice::new(&data[tail..])];
        let n = poll_fn(|cx| Pin::new(&mut *stream).poll_write_vectored(cx, &slices)).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        let from_head = n.min(out.len() - head);
        head += from_head;
        tail += n - from_head;
    }
    out.clear();
    stream.flush().await
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

    use http_body::Frame;
    use tokio::net::TcpListener;

    use super::*;

    const FRAME: usize = 1024;

    /// An answer whose frames are always ready (an upstream faster than the
    /// client). At frame `check` it waits, up to 5 s, for the client to have
    /// read half of what came before: ready frames must not pile up unwritten.
    struct Flood {
        sent: usize,
        frames: usize,
        check: usize,
        received: Arc<AtomicUsize>,
        piled_up: Arc<AtomicBool>,
    }

    impl crate::http::raw_fields::CarriesRawFields for Flood {}

    impl Body for Flood {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            if self.sent == self.check {
                let half = self.check * FRAME / 2;
                let deadline = std::time::Instant::now() + Duration::from_secs(5);
                while self.received.load(SeqCst) < half && std::time::Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(1));
                }
                if self.received.load(SeqCst) < half {
                    self.piled_up.store(true, SeqCst);
                }
            }
            if self.sent == self.frames {
                return Poll::Ready(None);
            }
            self.sent += 1;
            Poll::Ready(Some(Ok(Frame::data(Bytes::from(vec![b'x'; FRAME])))))
        }

        fn is_end_stream(&self) -> bool {
            self.sent == self.frames
        }
    }

    #[test]
    fn ready_frames_are_written_as_they_come_not_piled_up() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let frames = 256;
        let received = Arc::new(AtomicUsize::new(0));
        let piled_up = Arc::new(AtomicBool::new(false));
        runtime.block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let address = listener.local_addr().unwrap();
            // A client on a thread of its own, reading as the bytes come.
            let counter = received.clone();
            let client = std::thread::spawn(move || {
                let mut socket = std::net::TcpStream::connect(address).unwrap();
                let request = b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
                socket.write_all(request).unwrap();
                let mut chunk = [0u8; 65536];
                while let Ok(n @ 1..) = socket.read(&mut chunk) {
                    counter.fetch_add(n, SeqCst);
                }
            });
            let (socket, _) = listener.accept().await.unwrap();
            let mut answer = Some(Flood {
                sent: 0,
                frames,
                check: frames / 2,
                received: received.clone(),
                piled_up: piled_up.clone(),
            });
            let handle = move |_: RequestHead, _: Received| {
                let body = answer.take().expect("one request");
                async move { Ok::<_, Infallible>(Response::new(body)) }
            };
            let settings = Settings {
                max_head_bytes: 65536,
                max_fields: 100,
                header_read_timeout: Duration::from_secs(5),
            };
            let drained = Arc::new(AtomicBool::new(false));
            let ended = run(Stream::tcp(socket), handle, settings, drained).await;
            assert!(matches!(ended, Ended::Closed));
            client.join().unwrap();
        });
        assert!(
            !piled_up.load(SeqCst),
            "half the answer was ready and still unwritten"
        );
        assert!(
            received.load(SeqCst) > frames * FRAME,
            "the whole answer arrived"
        );
    }
}
