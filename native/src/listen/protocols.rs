//! An `http` listener's connection builders, HTTP/1.1 and HTTP/2, for the
//! limits published now, and the choice between them for each connection:
//! by the connection preface in plaintext, by ALPN after a TLS handshake.

use std::sync::Arc;

use hyper::server::conn::{http1 as hyper_http1, http2 as hyper_http2};
use hyper_util::rt::TokioExecutor;
use tokio::sync::watch;

use crate::proxy::Shared;
use crate::snapshot::Limits;

use super::accept::Accepted;
use super::preface::{self, Spoken};
use super::{http1, http2, ServerSettings};
use crate::tls::{self, Negotiated};

/// Both builders for one set of limits; shared by the connections accepted
/// while those limits hold.
pub struct HttpServers {
    settings: ServerSettings,
    limits: Limits,
    http1: hyper_http1::Builder,
    http2: hyper_http2::Builder<TokioExecutor>,
}

impl HttpServers {
    pub fn new(settings: &ServerSettings, limits: Limits) -> Arc<Self> {
        Arc::new(Self {
            http1: http1::builder(settings, &limits),
            http2: http2::builder(&limits),
            settings: settings.clone(),
            limits,
        })
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The builders for the limits published now: these, unless a reload
    /// changed them.
    pub fn refresh(self: &mut Arc<Self>, shared: &Shared) {
        let published = shared.published.load();
        if published.limits != self.limits {
            *self = Self::new(&self.settings, published.limits.clone());
        }
    }

    /// Serves one client connection in the protocol it speaks, until it
    /// closes or a drain (`stop`) ends it.
    pub async fn serve(
        self: Arc<Self>,
        mut accepted: Accepted,
        shared: Arc<Shared>,
        stop: watch::Receiver<bool>,
    ) {
        let idle = self.limits.idle_timeout();
        let patience = self.settings.header_read_timeout;
        let terminator = shared
            .published
            .load()
            .tls
            .get(accepted.listener)
            .cloned()
            .flatten();
        let spoken = match terminator {
            // TLS: the handshake (within the header read timeout), then ALPN chooses.
            Some(terminator) => {
                let Some((stream, negotiated, bound)) =
                    tls::handshake(&terminator, accepted.stream, patience).await
                else {
                    return;
                };
                accepted.stream = stream;
                accepted.tls = Some(bound);
                match negotiated {
                    Negotiated::Http2 => Spoken::Http2,
                    Negotiated::Http1 => Spoken::Http1,
                }
            }
            None => preface::sniff(&accepted.stream, idle, patience).await,
        };
        match spoken {
            Spoken::Http1 => {
                let (settings, limits) = (&self.settings, &self.limits);
                http1::serve(&self.http1, settings, limits, accepted, &shared, stop).await;
            }
            Spoken::Http2 => {
                let limits = (self.limits.http2.max_header_list_bytes as usize, idle);
                http2::serve(&self.http2, accepted, &shared, limits, stop).await;
            }
            Spoken::Nothing => {}
        }
    }
}
