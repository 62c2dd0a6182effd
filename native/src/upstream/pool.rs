//! Upstream connection pools: keep-alive HTTP/1.1 connections kept per worker
//! thread and per endpoint, so taking and returning one touches no lock and
//! hashes nothing (endpoints carry small integer ids); HTTP/2 streams on the
//! thread's shared connections (`multiplex`). Primaries and mirrors have
//! separate pools: a mirror can never take a primary's connection.

use std::cell::RefCell;
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::thread::LocalKey;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;

use crate::tls::{Alpn, Originator};
use crate::upstream::dial::{dial, DialError, Originate};
use crate::upstream::gauges::{ConnectionGauges, Counted, Role};
use crate::upstream::multiplex::{self, Http2Settings, Multiplexed, Sharing, StreamSlot};
use crate::upstream::protocol::Wire;

/// Stable small ids for endpoint authorities, shared by every snapshot of an
/// engine so that a reload keeps its warm connections.
#[derive(Debug, Default)]
pub struct EndpointIds {
    ids: Mutex<HashMap<String, u32>>,
}

impl EndpointIds {
    pub fn id(&self, authority: &str) -> u32 {
        let mut ids = self.ids.lock().unwrap_or_else(PoisonError::into_inner);
        let next = ids.len() as u32;
        *ids.entry(authority.to_owned()).or_insert(next)
    }
}

struct IdleConn<B> {
    sender: SendRequest<B>,
    /// The name its TLS session was made for (`None`: plaintext).
    name: Option<ServerName<'static>>,
    /// Requests it has carried.
    sent: u64,
    /// When the pool's idle timeout closes it, checked out or not.
    expires: Instant,
}

/// One thread's idle connections, by endpoint id.
pub struct IdleLists<B> {
    by_endpoint: Vec<Vec<IdleConn<B>>>,
}

impl<B> Default for IdleLists<B> {
    fn default() -> Self {
        Self {
            by_endpoint: Vec::new(),
        }
    }
}

/// A request body type with its own per-thread pool.
pub trait PooledBody: Multiplexed {
    fn idle() -> &'static LocalKey<RefCell<IdleLists<Self>>>;
}

/// How upstream connections are opened and kept.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    /// Idle connections kept per endpoint and worker thread.
    pub max_idle_per_endpoint: usize,
    /// Bytes an answer's head may take (hyper's read buffer bound); `None`:
    /// hyper's default. Set for mirrors, whose answers nobody waits for.
    pub max_head_bytes: Option<usize>,
    /// The kernel receive buffer of each connection; `None`: autotuned.
    pub receive_buffer: Option<usize>,
    /// How HTTP/2 connections are opened.
    pub http2: Http2Settings,
}

/// Where one request goes, in which protocol, and how far its connection
/// may be shared.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub endpoint: u32,
    pub authority: &'a http::uri::Authority,
    pub wire: Wire,
    pub sharing: Sharing,
    /// TLS to originate, and the name the connection is made for: only a
    /// connection made for the same name is reused.
    pub tls: Option<(&'a Originator, &'a ServerName<'static>)>,
}

impl Target<'_> {
    fn name(&self) -> Option<&ServerName<'static>> {
        self.tls.map(|(_, name)| name)
    }
}

/// How often each worker closes its idle connections past their timeout.
pub const IDLE_SWEEP_PERIOD: Duration = Duration::from_secs(1);

/// Closes this thread's idle connections of one body type whose idle timeout
/// has passed and those their peer has closed.
pub fn sweep<B: PooledBody>() {
    let now = Instant::now();
    B::idle().with(|idle| {
        for list in &mut idle.borrow_mut().by_endpoint {
            // Dropping the last sender ends hyper's connection task: the socket closes.
            list.retain(|conn| conn.expires > now && !conn.sender.is_closed());
        }
    });
}

/// Why a request got no response.
#[derive(Debug)]
pub enum SendError {
    /// No connection could be opened (refused, unreachable, timed out, DNS).
    Connect,
    /// Connected, but the TLS handshake failed (the certificate was not
    /// trusted or not for the name; no version or suite in common).
    Tls,
    /// The connection failed after the request was handed to it.
    Exchange(hyper::Error),
}

/// What an exchange holds of its connection until its response is read.
pub enum Loan<B: PooledBody> {
    /// An HTTP/1.1 connection; it goes back to the pool of the thread that
    /// finishes reading the response.
    Http1(Kept<B>),
    /// A stream on a shared HTTP/2 connection: its place among the open ones.
    Http2(StreamSlot),
}

impl<B: PooledBody> Loan<B> {
    fn give_back(self) {
        match self {
            Self::Http1(kept) => kept.give_back(),
            Self::Http2(slot) => drop(slot),
        }
    }
}

/// An HTTP/1.1 connection on loan to one exchange.
pub struct Kept<B: PooledBody> {
    sender: SendRequest<B>,
    name: Option<ServerName<'static>>,
    endpoint: u32,
    sent: u64,
    max_requests: Option<u64>,
    max_idle: usize,
    idle_timeout: Duration,
}

impl<B: PooledBody> Kept<B> {
    fn give_back(self) {
        if self.sender.is_closed() || self.max_requests.is_some_and(|max| self.sent >= max) {
            // Closed by the peer, or retired after its lifetime's requests.
            return;
        }
        let Self {
            sender,
            name,
            endpoint,
            sent,
            max_idle,
            idle_timeout,
            ..
        } = self;
        B::idle().with(|idle| {
            let mut idle = idle.borrow_mut();
            let index = endpoint as usize;
            if idle.by_endpoint.len() <= index {
                idle.by_endpoint.resize_with(index + 1, Vec::new);
            }
            let list = &mut idle.by_endpoint[index];
            if list.len() < max_idle {
                list.push(IdleConn {
                    sender,
                    name,
                    sent,
                    expires: Instant::now() + idle_timeout,
                });
            }
        });
    }
}

/// A pool user: one role's settings and gauges.
#[derive(Debug, Clone)]
pub struct Pool {
    pub role: Role,
    pub settings: PoolSettings,
    pub gauges: Arc<ConnectionGauges>,
}

impl Pool {
    /// Sends `request` (a head made by `protocol::for_upstream`) to the
    /// target's endpoint in its protocol, on a pooled connection (HTTP/1.1)
    /// or stream (HTTP/2) of this thread when there is one. A pooled
    /// connection that turns out closed before the request went out is
    /// skipped transparently.
    pub async fn send<B: PooledBody>(
        &self,
        target: Target<'_>,
        request: Request<B>,
    ) -> Result<(Response<Incoming>, Loan<B>), SendError> {
        let (mut parts, body) = request.into_parts();
        super::protocol::to_wire(&mut parts, target.wire, target.authority);
        if target.tls.is_some() {
            super::protocol::secure(&mut parts);
        }
        let request = Request::from_parts(parts, body);
        match target.wire {
            Wire::Http1 => self.send_http1(target, request).await,
            Wire::Http2 => self.send_http2(target, request).await,
        }
    }

    async fn send_http1<B: PooledBody>(
        &self,
        target: Target<'_>,
        mut request: Request<B>,
    ) -> Result<(Response<Incoming>, Loan<B>), SendError> {
        loop {
            let (mut sender, sent, reused) = match self.checkout::<B>(target) {
                Some((sender, sent)) => (sender, sent, true),
                // Boxed, being rare (see `send_http2`).
                None => (Box::pin(self.connect::<B>(target)).await?, 0, false),
            };
            match sender.try_send_request(request).await {
                Ok(response) => {
                    let loan = Kept {
                        sender,
                        name: target.name().cloned(),
                        endpoint: target.endpoint,
                        sent: sent + 1,
                        max_requests: target.sharing.max_requests,
                        max_idle: self.settings.max_idle_per_endpoint,
                        idle_timeout: self.settings.idle_timeout,
                    };
                    return Ok((response, Loan::Http1(loan)));
                }
                Err(mut failed) => match failed.take_message() {
                    // Never written: safe to send on another connection.
                    Some(unsent) if reused => request = unsent,
                    _ => return Err(SendError::Exchange(failed.into_error())),
                },
            }
        }
    }

    async fn send_http2<B: PooledBody>(
        &self,
        target: Target<'_>,
        mut request: Request<B>,
    ) -> Result<(Response<Incoming>, Loan<B>), SendError> {
        loop {
            let (mut sender, slot, reused) =
                match multiplex::checkout::<B>(target.endpoint, target.name(), target.sharing) {
                    Some((sender, slot)) => (sender, slot, true),
                    None => {
                        // Boxed, being rare: an async fn's future is as large as
                        // its largest await, and every request's future is
                        // moved (copied whole) on its way in.
                        let sender = Box::pin(self.open_http2::<B>(target)).await?;
                        let idle = self.settings.idle_timeout;
                        let name = target.name().cloned();
                        let (sender, slot) =
                            multiplex::add(target.endpoint, name, sender, target.sharing, idle);
                        (sender, slot, false)
                    }
                };
            match sender.try_send_request(request).await {
                Ok(response) => return Ok((response, Loan::Http2(slot))),
                Err(mut failed) => match failed.take_message() {
                    // Refused before it was sent (GOAWAY, closed): another
                    // connection may take it.
                    Some(unsent) if reused => request = unsent,
                    _ => return Err(SendError::Exchange(failed.into_error())),
                },
            }
        }
    }

    async fn open_http2<B: PooledBody>(
        &self,
        target: Target<'_>,
    ) -> Result<hyper::client::conn::http2::SendRequest<B>, SendError> {
        let io = self.dial(target, Alpn::Http2).await?;
        multiplex::handshake(io, self.settings.http2)
            .await
            .map_err(SendError::Exchange)
    }

    fn checkout<B: PooledBody>(&self, target: Target<'_>) -> Option<(SendRequest<B>, u64)> {
        let now = Instant::now();
        B::idle().with(|idle| {
            let mut idle = idle.borrow_mut();
            let list = idle.by_endpoint.get_mut(target.endpoint as usize)?;
            // Most recently used first: the warmest connection, and the
            // stale ones age out at the bottom.
            let mut found = None;
            let mut busy = Vec::new();
            while let Some(mut conn) = list.pop() {
                if conn.expires <= now {
                    list.clear();
                    break;
                }
                if conn.name.as_ref() != target.name() {
                    // Made for another name (auto SNI from another Host).
                    busy.push(conn);
                    continue;
                }
                let mut cx = Context::from_waker(Waker::noop());
                match conn.sender.poll_ready(&mut cx) {
                    Poll::Ready(Ok(())) => {
                        found = Some((conn.sender, conn.sent));
                        break;
                    }
                    // Still finishing its last exchange (its task has not run
                    // since the response ended): keep it for the next request
                    // instead of closing a good connection.
                    Poll::Pending => busy.push(conn),
                    Poll::Ready(Err(_)) => {}
                }
            }
            list.extend(busy.into_iter().rev());
            found
        })
    }

    /// A connection to the target's endpoint (TLS when it says so), counted
    /// in the role's gauges.
    async fn dial(&self, target: Target<'_>, alpn: Alpn) -> Result<Counted, SendError> {
        let gauge = self.gauges.gauge(self.role, target.authority.as_str());
        let tls = target.tls.map(|(originator, name)| Originate {
            originator,
            name: name.clone(),
            alpn,
        });
        let stream = dial(
            target.authority,
            self.settings.connect_timeout,
            self.settings.receive_buffer,
            tls,
            &gauge,
        )
        .await
        .map_err(|e| match e {
            DialError::Tls => SendError::Tls,
            DialError::Failed | DialError::TimedOut => SendError::Connect,
        })?;
        Ok(Counted::new(TokioIo::new(stream), gauge))
    }

    async fn connect<B: PooledBody>(
        &self,
        target: Target<'_>,
    ) -> Result<SendRequest<B>, SendError> {
        let io = self.dial(target, Alpn::Http1).await?;
        let mut builder = http1::Builder::new();
        if let Some(max) = self.settings.max_head_bytes {
            // hyper's floor for its read buffer is 8 KiB.
            builder.max_buf_size(max.max(8192));
        }
        let (sender, connection) = builder.handshake(io).await.map_err(SendError::Exchange)?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(sender)
    }
}

/// A response body that returns its connection to the pool once read to the end.
pub struct PooledResponse<B: PooledBody> {
    inner: Incoming,
    loan: Option<Loan<B>>,
}

impl<B: PooledBody> PooledResponse<B> {
    /// A body whose connection goes back to no pool (an upgrade's own connection).
    pub fn unpooled(inner: Incoming) -> Self {
        Self { inner, loan: None }
    }

    pub fn new(inner: Incoming, loan: Loan<B>) -> Self {
        Self {
            inner,
            loan: Some(loan),
        }
    }
}

impl<B: PooledBody> std::fmt::Debug for PooledResponse<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PooledResponse").finish_non_exhaustive()
    }
}

impl<B: PooledBody> Body for PooledResponse<B> {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let frame = std::task::ready!(Pin::new(&mut this.inner).poll_frame(cx));
        match &frame {
            None => {
                if let Some(loan) = this.loan.take() {
                    loan.give_back();
                }
            }
            // A broken body leaves the connection unusable.
            Some(Err(_)) => this.loan = None,
            Some(Ok(_)) => {}
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

impl<B: PooledBody> Drop for PooledResponse<B> {
    fn drop(&mut self) {
        // An empty body may never be polled: it is complete all the same.
        if self.inner.is_end_stream() {
            if let Some(loan) = self.loan.take() {
                loan.give_back();
            }
        }
    }
}
