//! One HTTP/1.1 exchange on an upstream connection, driven by the task of
//! the request it carries: no connection task, no channel between them, no
//! wake-up of one by the other. The request's head and body are written
//! while its answer's head is awaited (an upstream may answer before it has
//! read the whole body); the answer's body is read as the client takes it,
//! sending whatever is left of the request's on the way.

use std::future::{poll_fn, Future};
use std::io;
use std::pin::{pin, Pin};
use std::task::{ready, Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Method};
use http_body::{Body, Frame};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

use super::decode::{Decoded, Decoder};
use super::encode::{self, Framing};
use super::parse::{self, Head};
use super::WireError;
use crate::transport::Stream;
use crate::upstream::gauges::Counted;

/// A read's first size; doubled while reads fill it, up to `MAX_READ`.
const FIRST_READ: usize = 8 * 1024;
const MAX_READ: usize = 64 * 1024;
/// Request body bytes gathered into one write with the head (or with each
/// other) before it goes out.
const GATHER: usize = 16 * 1024;

/// An open upstream connection and what has been read from it. Boxed once
/// when opened: it moves in and out of the pool and the answer's body at
/// every request, as one pointer.
#[derive(Debug)]
pub struct Connection(Box<Open>);

#[derive(Debug)]
pub struct Open {
    io: Counted,
    read: BytesMut,
    next_read: usize,
}

impl std::ops::Deref for Connection {
    type Target = Open;
    fn deref(&self) -> &Open {
        &self.0
    }
}

impl std::ops::DerefMut for Connection {
    fn deref_mut(&mut self) -> &mut Open {
        &mut self.0
    }
}

impl Connection {
    pub fn new(io: Counted) -> Self {
        Self(Box::new(Open {
            io,
            read: BytesMut::new(),
            next_read: FIRST_READ,
        }))
    }
}

impl Open {
    /// Whether an idle connection may carry a request: nothing arrived
    /// while it was idle (an unasked-for byte would be taken for the next
    /// answer) and its peer has not closed it. Costs a read only when the
    /// socket was reported readable.
    pub fn is_usable(&mut self) -> bool {
        if !self.read.is_empty() {
            return false;
        }
        let mut cx = Context::from_waker(Waker::noop());
        let mut byte = [0u8; 1];
        let mut buf = ReadBuf::new(&mut byte);
        // Pending: nothing to read, the connection is quiet. A TLS session
        // ticket is taken by rustls and leaves it quiet too.
        Pin::new(self.stream())
            .poll_read(&mut cx, &mut buf)
            .is_pending()
    }

    fn stream(&mut self) -> &mut Stream {
        self.io.stream_mut()
    }

    /// Reads more into the buffer; `Ok(0)`: the peer closed.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.read.capacity() - self.read.len() < self.next_read / 2 {
            self.read.reserve(self.next_read);
        }
        let spare = self.read.capacity() - self.read.len();
        let n = {
            let read = pin!(self.io.stream_mut().read_buf(&mut self.read));
            ready!(read.poll(cx))?
        };
        if n == spare && self.next_read < MAX_READ {
            self.next_read *= 2;
        }
        Poll::Ready(Ok(n))
    }
}

/// How an exchange failed, and whether the request may go again on another
/// connection: it never reached an upstream that read it (the reused
/// connection was closed before any answer) and can be sent whole again.
#[derive(Debug)]
pub struct Failure {
    pub error: WireError,
    pub answered: bool,
}

/// Writes the request and reads its answer's head. `head` is the encoded
/// request head (`encode::head`); `body` is `None` for a request without one.
pub async fn exchange<B>(
    conn: &mut Connection,
    head: Vec<u8>,
    method: &Method,
    body: Option<(B, Framing)>,
    max_head: usize,
    raw_ok: bool,
) -> Result<(Head, Option<Sending<B>>), Failure>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut sending = Some(Sending::new(head, body));
    let mut write_failed = None;
    let head = poll_fn(|cx| {
        if let Some(s) = sending.as_mut() {
            match s.poll(conn.stream(), cx) {
                Poll::Ready(Ok(())) => sending = None,
                // The client's own body broke, or does not fit its framing:
                // nothing more to wait for.
                Poll::Ready(Err(e @ (WireError::RequestBody(_) | WireError::RequestFraming))) => {
                    return Poll::Ready(Err(e))
                }
                // The upstream may have answered before it stopped reading
                // (a 413...): its answer is still read.
                Poll::Ready(Err(e)) => {
                    write_failed = Some(e);
                    sending = None;
                }
                Poll::Pending => {}
            }
        }
        poll_head(conn, method, max_head, raw_ok, cx)
    })
    .await;
    match head {
        Ok(head) => Ok((head, sending)),
        Err(WireError::Closed) if conn.read.is_empty() => Err(Failure {
            error: write_failed.unwrap_or(WireError::Closed),
            answered: false,
        }),
        Err(error) => Err(Failure {
            answered: !matches!(
                error,
                WireError::RequestBody(_) | WireError::RequestFraming | WireError::Io(_)
            ),
            error,
        }),
    }
}

fn poll_head(
    conn: &mut Connection,
    method: &Method,
    max_head: usize,
    raw_ok: bool,
    cx: &mut Context<'_>,
) -> Poll<Result<Head, WireError>> {
    loop {
        if !conn.read.is_empty() {
            if let Some(head) = parse::head(&mut conn.read, method, raw_ok)? {
                return Poll::Ready(Ok(head));
            }
            if conn.read.len() >= max_head {
                return Poll::Ready(Err(WireError::HeadTooLarge));
            }
        }
        match ready!(conn.poll_fill(cx)) {
            Ok(0) => return Poll::Ready(Err(WireError::Closed)),
            Ok(_) => {}
            Err(e) => return Poll::Ready(Err(WireError::Io(e))),
        }
    }
}

/// A request on its way out: bytes encoded and not yet written, and the
/// body frames still to come.
#[derive(Debug)]
pub struct Sending<B> {
    out: Vec<u8>,
    written: usize,
    body: Option<B>,
    framing: Framing,
    flush: bool,
}

impl<B> Sending<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn new(head: Vec<u8>, body: Option<(B, Framing)>) -> Self {
        let (body, framing) = match body {
            // Framed as having none (a GET of unknown length): not polled,
            // as hyper's client does not poll it.
            Some((_, Framing::Length(0))) | None => (None, Framing::Length(0)),
            Some((body, framing)) => (Some(body), framing),
        };
        Self {
            out: head,
            written: 0,
            body,
            framing,
            flush: false,
        }
    }

    /// Writes what it can; `Ready(Ok)`: the whole request is written.
    pub fn poll(&mut self, io: &mut Stream, cx: &mut Context<'_>) -> Poll<Result<(), WireError>> {
        loop {
            if self.out.len() - self.written < GATHER {
                if let Some(body) = self.body.as_mut() {
                    if let Poll::Ready(frame) = Pin::new(body).poll_frame(cx) {
                        self.encode(frame)?;
                        continue;
                    }
                }
            }
            if self.written < self.out.len() {
                let n = ready!(Pin::new(&mut *io).poll_write(cx, &self.out[self.written..]))
                    .map_err(WireError::Io)?;
                if n == 0 {
                    return Poll::Ready(Err(WireError::Closed));
                }
                self.written += n;
                self.flush = true;
                continue;
            }
            self.out.clear();
            self.written = 0;
            if self.flush {
                ready!(Pin::new(&mut *io).poll_flush(cx)).map_err(WireError::Io)?;
                self.flush = false;
            }
            return match self.body {
                // Waiting for the client's next frame (its waker is set).
                Some(_) => Poll::Pending,
                None => Poll::Ready(Ok(())),
            };
        }
    }

    fn encode(&mut self, frame: Option<Result<Frame<Bytes>, B::Error>>) -> Result<(), WireError> {
        let frame = match frame {
            None => return self.end(None),
            Some(Err(e)) => {
                self.body = None;
                return Err(WireError::RequestBody(e.into()));
            }
            Some(Ok(frame)) => frame,
        };
        let frame = match frame.into_data() {
            Ok(data) => {
                self.data(&data)?;
                // A sized body may not be polled past its end (as hyper's
                // client does not): its last chunk ends it.
                if self.body.as_ref().is_some_and(Body::is_end_stream) {
                    return self.end(None);
                }
                return Ok(());
            }
            Err(frame) => frame,
        };
        match frame.into_trailers() {
            Ok(trailers) => self.end(Some(&trailers)),
            Err(_) => Ok(()),
        }
    }

    fn data(&mut self, data: &[u8]) -> Result<(), WireError> {
        match &mut self.framing {
            Framing::Length(left) => {
                let len = data.len() as u64;
                if len > *left {
                    return Err(WireError::RequestFraming);
                }
                *left -= len;
                self.out.extend_from_slice(data);
            }
            Framing::Chunked { .. } if data.is_empty() => {}
            Framing::Chunked { .. } => {
                encode::chunk_size(data.len(), &mut self.out);
                self.out.extend_from_slice(data);
                self.out.extend_from_slice(b"\r\n");
            }
        }
        Ok(())
    }

    fn end(&mut self, trailers: Option<&HeaderMap>) -> Result<(), WireError> {
        self.body = None;
        match &self.framing {
            Framing::Length(0) => Ok(()),
            // Shorter than its Content-Length said.
            Framing::Length(_) => Err(WireError::RequestFraming),
            Framing::Chunked { trailers: allowed } => {
                encode::last_chunk(trailers, allowed, &mut self.out);
                Ok(())
            }
        }
    }
}

/// Sends the rest of a request whose answer has ended, then drops (closes)
/// the connection. Its pace is the request body's: the client's, or for a
/// copy the primary's, each ended by its own timeouts and bounds.
fn finish_sending<B>(mut conn: Connection, mut sending: Box<Sending<B>>)
where
    B: Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    // Outside a runtime (a body dropped at shutdown) there is nothing to send on.
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    runtime.spawn(async move {
        let _ = poll_fn(|cx| sending.poll(conn.stream(), cx)).await;
    });
}

/// An answer's body being read, and what is left of the request to send.
#[derive(Debug)]
pub struct Reading<B> {
    conn: Option<Connection>,
    decoder: Decoder,
    /// Boxed: rare (only an answer that came before the whole request went
    /// out), and the body moves at every hand-off.
    sending: Option<Box<Sending<B>>>,
    keep_alive: bool,
    /// Set when the body ended and the connection may carry another request.
    reusable: Option<Connection>,
    /// A failure held back for one poll (see `broken`).
    failed: Option<WireError>,
}

impl<B> Reading<B>
where
    B: Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    pub fn new(
        conn: Connection,
        decoder: Decoder,
        keep_alive: bool,
        sending: Option<Sending<B>>,
    ) -> Self {
        Self {
            conn: Some(conn),
            decoder,
            sending: sending.map(Box::new),
            keep_alive,
            reusable: None,
            failed: None,
        }
    }

    pub fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, WireError>>> {
        if let Some(error) = self.failed.take() {
            return Poll::Ready(Some(Err(error)));
        }
        let Some(conn) = self.conn.as_mut() else {
            return Poll::Ready(None);
        };
        if let Some(sending) = self.sending.as_mut() {
            match sending.poll(conn.stream(), cx) {
                Poll::Ready(Ok(())) => self.sending = None,
                Poll::Ready(Err(_)) => {
                    self.sending = None;
                    self.keep_alive = false;
                }
                Poll::Pending => {}
            }
        }
        loop {
            let decoded = self.decoder.decode(&mut conn.read);
            match decoded {
                Ok(Decoded::Data(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                Ok(Decoded::Trailers(t)) => return Poll::Ready(Some(Ok(Frame::trailers(t)))),
                Ok(Decoded::End) => {
                    self.end();
                    return Poll::Ready(None);
                }
                Ok(Decoded::More) => {}
                Err(e) => return self.broken(e, cx),
            }
            match ready!(conn.poll_fill(cx)) {
                Ok(0) => match self.decoder.at_eof() {
                    Ok(_) => {
                        self.keep_alive = false;
                        self.end();
                        return Poll::Ready(None);
                    }
                    Err(e) => return self.broken(e, cx),
                },
                Ok(_) => {}
                Err(e) => return self.broken(WireError::Io(e), cx),
            }
        }
    }

    /// The body broke. The failure is reported on the next poll, not this
    /// one: the client's side writes what it was given so far when a body
    /// returns `Pending`, and a failure now would have it drop that (the
    /// answer's head among it) instead of passing on what arrived before
    /// the upstream broke off.
    fn broken(
        &mut self,
        error: WireError,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, WireError>>> {
        self.conn = None;
        self.failed = Some(error);
        // Woken at once: the failure is only deferred, never lost.
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// The body is complete: the connection is kept if the upstream keeps it
    /// open, the request was written whole and nothing follows the answer.
    fn end(&mut self) {
        let Some(conn) = self.conn.take() else {
            return;
        };
        if let Some(sending) = self.sending.take() {
            // Answered before the whole request went out (an upstream that
            // answers without reading the body, as nginx's `return` does):
            // the rest is still sent, as the request's own (a copy's body
            // whole at the mirror), on a task of its own, and the connection
            // is closed after it.
            finish_sending(conn, sending);
            return;
        }
        if self.keep_alive && !matches!(self.decoder, Decoder::Eof) && conn.read.is_empty() {
            self.reusable = Some(conn);
        }
    }

    /// Ends a body that needs no reading (a HEAD's, a 204's) when it is
    /// dropped unpolled.
    pub fn end_if_complete(&mut self) {
        if self.conn.is_some() && self.decoder.is_end() {
            self.end();
        }
    }

    pub fn take_reusable(&mut self) -> Option<Connection> {
        self.reusable.take()
    }

    pub fn is_end_stream(&self) -> bool {
        self.failed.is_none() && (self.conn.is_none() || self.decoder.is_end())
    }

    pub fn exact_len(&self) -> Option<u64> {
        self.decoder.exact_len()
    }
}
