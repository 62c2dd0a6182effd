//! Upstream connection pools: keep-alive HTTP/1.1 connections kept per worker
//! thread and per endpoint, so taking and returning one touches no lock and
//! hashes nothing (endpoints carry small integer ids); HTTP/2 streams on the
//! thread's shared connections (`multiplex`). Primaries and mirrors have
//! separate pools: a mirror can never take a primary's connection.

use std::collections::HashMap;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;

use crate::http::request_head::RequestHead;
use crate::tls::{Alpn, Originator};
use crate::upstream::dial::{dial, DialError, Originate};
use crate::upstream::either::Either;
use crate::upstream::gauges::{ConnectionGauges, Counted, Role};
use crate::upstream::http1::session::{self, Connection, Reading};
use crate::upstream::http1::{encode, WireError, MAX_HEAD_BYTES};
use crate::upstream::idle::{self, Kept, PooledBody};
use crate::upstream::multiplex::{self, Http2Settings, Sharing};
use crate::upstream::protocol::Wire;
use crate::upstream::response::PooledResponse;

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

/// How upstream connections are opened and kept.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    /// Idle connections kept per endpoint and worker thread.
    pub max_idle_per_endpoint: usize,
    /// Bytes an answer's head may take; `None`: `http1::MAX_HEAD_BYTES`
    /// (hyper's bound, also HTTP/2's). Set for mirrors, whose answers nobody
    /// waits for.
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
    /// An HTTP/1.1 answer's plain fields may be kept as they came
    /// (`http::raw_fields`): no rule reads them and the client hop writes
    /// them as they are.
    pub raw_answer: bool,
    /// When the connection is wanted: an idle one whose timeout ended
    /// before is not taken. A request's first try gives the moment its
    /// head was taken (the clock is not read again); `None`: now.
    pub wanted_at: Option<Instant>,
}

impl Target<'_> {
    fn name(&self) -> Option<&ServerName<'static>> {
        self.tls.map(|(_, name)| name)
    }
}

/// Why a request got no response.
#[derive(Debug)]
pub enum SendError {
    /// No connection could be opened (refused, unreachable, timed out, DNS).
    Connect,
    /// Connected, but the TLS handshake failed (the certificate was not
    /// trusted or not for the name; no version or suite in common).
    Tls,
    /// The answer was not HTTP as it must be (malformed, too large).
    Protocol,
    /// The connection failed after the request was handed to it.
    Reset,
}

impl From<hyper::Error> for SendError {
    fn from(e: hyper::Error) -> Self {
        if e.is_parse() {
            Self::Protocol
        } else {
            Self::Reset
        }
    }
}

impl From<WireError> for SendError {
    fn from(e: WireError) -> Self {
        if e.is_protocol() {
            Self::Protocol
        } else {
            Self::Reset
        }
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
    ) -> Result<Response<PooledResponse<B>>, SendError> {
        let (mut parts, body) = request.into_parts();
        super::protocol::to_wire(&mut parts, target.wire, target.authority);
        if target.tls.is_some() {
            super::protocol::secure(&mut parts);
        }
        match target.wire {
            Wire::Http1 => self.send_http1(target, parts, body).await,
            Wire::Http2 => {
                let request = Request::from_parts(parts, body);
                self.send_http2(target, request).await
            }
        }
    }

    async fn send_http1<B: PooledBody>(
        &self,
        target: Target<'_>,
        mut parts: http::request::Parts,
        body: B,
    ) -> Result<Response<PooledResponse<B>>, SendError> {
        let empty = body.is_end_stream();
        let framing = encode::framing(&mut parts, empty, body.size_hint().exact());
        let head = || encode::head(&parts);
        self.exchange_http1(target, &parts.method, head, body, framing)
            .await
    }

    /// Sends a request over HTTP/1.1 from a head the caller keeps (one that
    /// another try may need), with a field of its own (`replace`: a try's
    /// `grpc-timeout`, a copy's Host) in place of the head's: the head is written from the
    /// borrowed fields, in the map or kept as they came, never copied. The
    /// rare head whose framing fields must change goes as an edited copy.
    pub fn send_borrowed<'a, B: PooledBody>(
        &'a self,
        target: Target<'a>,
        head: &'a RequestHead,
        replace: Option<encode::Field>,
        body: B,
    ) -> impl Future<Output = Result<Response<PooledResponse<B>>, SendError>> + 'a {
        let empty = body.is_end_stream();
        let exact = body.size_hint().exact();
        let parts = head.parts_unmapped();
        // The exchange's own future, not one wrapped around it (`Either`).
        let planned = match head.kept_fields() {
            Some(kept) => encode::plan_kept(kept, &parts.method, empty, exact),
            None => encode::plan(parts, empty, exact),
        };
        match planned {
            Some((framing, append)) => {
                let head = move || match head.kept_fields() {
                    Some(kept) => encode::head_kept(parts, kept, replace.as_ref(), append.as_ref()),
                    None => encode::head_borrowed(parts, replace.as_ref(), append.as_ref()),
                };
                let future = self.exchange_http1(target, &parts.method, head, body, framing);
                Either::Usual { future }
            }
            None => {
                let copy = super::protocol::try_head(head.to_parts(), replace);
                let future = Box::pin(self.send(target, Request::from_parts(copy, body)));
                Either::Rare { future }
            }
        }
    }

    /// One HTTP/1.1 exchange on a pooled or new connection; `head` encodes
    /// the request head (again only for a request sent a second time).
    async fn exchange_http1<B: PooledBody>(
        &self,
        target: Target<'_>,
        method: &http::Method,
        head: impl Fn() -> Vec<u8>,
        body: B,
        framing: encode::Framing,
    ) -> Result<Response<PooledResponse<B>>, SendError> {
        let empty = body.is_end_stream();
        let mut encoded = Some(head());
        // An empty body is never polled (as hyper's client never polls one).
        let mut body = (!empty).then_some((body, framing));
        let max_head = self.settings.max_head_bytes.unwrap_or(MAX_HEAD_BYTES);
        loop {
            let (mut conn, sent, reused) = match self.checkout::<B>(target) {
                Some((conn, sent)) => (conn, sent, true),
                // Boxed, being rare (see `send_http2`).
                None => (Box::pin(self.connect(target)).await?, 0, false),
            };
            let resend = reused && body.is_none() && method.is_idempotent();
            let encoded = encoded.take().unwrap_or_else(&head);
            let exchanged = session::exchange(
                &mut conn,
                encoded,
                method,
                body.take(),
                max_head,
                target.raw_answer,
            )
            .await;
            let (answer, sending) = match exchanged {
                Ok(exchanged) => exchanged,
                // A reused connection the upstream closed as the request went
                // out (its keep-alive timeout): nothing of it was read, and a
                // request without a body that may be repeated goes again.
                Err(failed) if resend && !failed.answered => continue,
                Err(failed) => return Err(failed.error.into()),
            };
            let kept = Kept {
                name: target.name().cloned(),
                endpoint: target.endpoint,
                sent: sent + 1,
                max_requests: target.sharing.max_requests,
                max_idle: self.settings.max_idle_per_endpoint,
                idle_timeout: self.settings.idle_timeout,
                role: PhantomData,
            };
            let reading = Reading::new(conn, answer.decoder, answer.keep_alive, sending);
            let mut response = Response::new(PooledResponse::http1(reading, kept, answer.raw));
            *response.status_mut() = answer.status;
            *response.version_mut() = answer.version;
            *response.headers_mut() = answer.headers;
            if let Some(reason) = answer.reason {
                if let Ok(reason) = hyper::ext::ReasonPhrase::try_from(reason) {
                    response.extensions_mut().insert(reason);
                }
            }
            return Ok(response);
        }
    }

    async fn send_http2<B: PooledBody>(
        &self,
        target: Target<'_>,
        mut request: Request<B>,
    ) -> Result<Response<PooledResponse<B>>, SendError> {
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
                Ok(response) => return Ok(response.map(|body| PooledResponse::http2(body, slot))),
                Err(mut failed) => match failed.take_message() {
                    // Refused before it was sent (GOAWAY, closed): another
                    // connection may take it.
                    Some(unsent) if reused => request = unsent,
                    _ => return Err(failed.into_error().into()),
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
            .map_err(SendError::from)
    }

    fn checkout<B: PooledBody>(&self, target: Target<'_>) -> Option<(Connection, u64)> {
        idle::take::<B>(target.endpoint, target.name(), target.wanted_at)
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

    async fn connect(&self, target: Target<'_>) -> Result<Connection, SendError> {
        let io = self.dial(target, Alpn::Http1).await?;
        Ok(Connection::new(io))
    }
}
