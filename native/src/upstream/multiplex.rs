//! HTTP/2 upstream connections: per worker thread and endpoint, a few
//! connections, each carrying many streams at once, up to the cluster's
//! `max_concurrent_streams`; past that a request opens another connection. (A
//! peer whose SETTINGS allow fewer makes the extra streams wait in h2 for one
//! to end.) A connection that has carried its
//! lifetime's requests (`maxRequestsPerConnection`) takes no more and closes
//! once its open streams end. As with HTTP/1.1, taking a stream touches no
//! lock: the lists are the thread's own.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::LocalKey;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::Body;
use hyper::client::conn::http2::{self, SendRequest};
use hyper::rt::{Read, Write};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::pki_types::ServerName;

/// A request body type with its own per-thread HTTP/2 connections.
pub trait Multiplexed:
    Body<Data = Bytes, Error: Into<Box<dyn std::error::Error + Send + Sync>>>
    + Send
    + Unpin
    + Sized
    + 'static
{
    fn connections() -> &'static LocalKey<RefCell<Connections<Self>>>;
}

/// How far one connection may be shared.
#[derive(Debug, Clone, Copy)]
pub struct Sharing {
    /// Streams at once.
    pub max_streams: u32,
    /// Requests over the connection's lifetime; `None`: no bound.
    pub max_requests: Option<u64>,
}

/// How HTTP/2 connections are opened.
#[derive(Debug, Clone, Copy)]
pub struct Http2Settings {
    /// Bytes the upstream may send on one stream, and on the connection,
    /// before the proxy reads them.
    pub stream_window: u32,
    pub connection_window: u32,
    /// An answer's decoded header list, at most.
    pub max_header_list: u32,
}

impl Default for Http2Settings {
    fn default() -> Self {
        Self {
            stream_window: 1024 * 1024,
            connection_window: 4 * 1024 * 1024,
            max_header_list: 64 * 1024,
        }
    }
}

struct Shared<B> {
    sender: SendRequest<B>,
    /// The name its TLS session was made for (`None`: plaintext).
    name: Option<ServerName<'static>>,
    open: Arc<AtomicU32>,
    sent: u64,
    last_used: Instant,
    /// Closed after this long with no stream open.
    idle_timeout: Duration,
}

/// One thread's HTTP/2 connections, by endpoint id.
pub struct Connections<B> {
    by_endpoint: Vec<Vec<Shared<B>>>,
}

impl<B> Default for Connections<B> {
    fn default() -> Self {
        Self {
            by_endpoint: Vec::new(),
        }
    }
}

/// A stream's place among its connection's open streams, left when dropped
/// (its response read to the end, or abandoned).
#[derive(Debug)]
pub struct StreamSlot(Arc<AtomicU32>);

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

/// A stream on one of this thread's connections to `endpoint` (made for
/// `name`, over TLS) that has room for it, if any. Closed connections are
/// dropped on the way.
pub fn checkout<B: Multiplexed>(
    endpoint: u32,
    name: Option<&ServerName<'static>>,
    sharing: Sharing,
) -> Option<(SendRequest<B>, StreamSlot)> {
    B::connections().with(|all| {
        let mut all = all.borrow_mut();
        let list = all.by_endpoint.get_mut(endpoint as usize)?;
        list.retain(|c| !c.sender.is_closed());
        let index = list
            .iter()
            .position(|c| c.name.as_ref() == name && has_room(c, sharing))?;
        let taken = take_stream(&mut list[index]);
        if sharing
            .max_requests
            .is_some_and(|max| list[index].sent >= max)
        {
            // Retired: the streams it carries finish, then it closes.
            list.swap_remove(index);
        }
        Some(taken)
    })
}

/// Keeps a new connection for the next requests and takes its first stream.
pub fn add<B: Multiplexed>(
    endpoint: u32,
    name: Option<ServerName<'static>>,
    sender: SendRequest<B>,
    sharing: Sharing,
    idle_timeout: Duration,
) -> (SendRequest<B>, StreamSlot) {
    let mut shared = Shared {
        sender,
        name,
        open: Arc::new(AtomicU32::new(0)),
        sent: 0,
        last_used: Instant::now(),
        idle_timeout,
    };
    let taken = take_stream(&mut shared);
    if sharing.max_requests.is_none_or(|max| shared.sent < max) {
        B::connections().with(|all| {
            let mut all = all.borrow_mut();
            let index = endpoint as usize;
            if all.by_endpoint.len() <= index {
                all.by_endpoint.resize_with(index + 1, Vec::new);
            }
            all.by_endpoint[index].push(shared);
        });
    }
    taken
}

fn has_room<B>(c: &Shared<B>, sharing: Sharing) -> bool {
    c.open.load(Relaxed) < sharing.max_streams
        && sharing.max_requests.is_none_or(|max| c.sent < max)
}

fn take_stream<B>(c: &mut Shared<B>) -> (SendRequest<B>, StreamSlot) {
    c.open.fetch_add(1, Relaxed);
    c.sent += 1;
    c.last_used = Instant::now();
    (c.sender.clone(), StreamSlot(c.open.clone()))
}

/// Closes this thread's connections that have had no open stream for their
/// idle timeout, and forgets those already closed.
pub fn sweep<B: Multiplexed>() {
    let now = Instant::now();
    B::connections().with(|all| {
        for list in &mut all.borrow_mut().by_endpoint {
            list.retain(|c| {
                let idle = c.open.load(Relaxed) == 0 && now - c.last_used >= c.idle_timeout;
                !idle && !c.sender.is_closed()
            });
        }
    });
}

/// The HTTP/2 handshake over a dialed stream; the connection runs on a task
/// of its own until the last stream and sender are gone.
pub async fn handshake<B, I>(io: I, settings: Http2Settings) -> Result<SendRequest<B>, hyper::Error>
where
    B: Multiplexed,
    I: Read + Write + Unpin + Send + 'static,
{
    let (sender, connection) = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .initial_stream_window_size(settings.stream_window)
        .initial_connection_window_size(settings.connection_window)
        .max_header_list_size(settings.max_header_list)
        .handshake(io)
        .await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}
