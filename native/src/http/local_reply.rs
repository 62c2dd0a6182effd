//! `LocalReply`: the answers the proxy gives itself, and why (404, 502, ...).

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::Full;

/// Why the proxy answered a request itself instead of relaying an upstream's answer.
/// Where it came from decides the status: the downstream request (404), our own
/// capacity (503) or the upstream (502, 504).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalReply {
    /// Content-Length together with Transfer-Encoding: the body's framing is
    /// ambiguous (request smuggling), so the request is refused, never forwarded.
    AmbiguousFraming,
    /// Content-Length given more than once: hyper would keep one if they agree,
    /// another hop might not.
    RepeatedContentLength,
    /// A transfer coding other than one `chunked`: forwarding it re-framed
    /// would hand the next hop a body in a coding it was not told about.
    UnsupportedTransferEncoding,
    /// An HTTP/1.1 request without Host, or with more than one (RFC 9112 3.2).
    BadHost,
    /// A Host that is not a valid authority (RFC 3986 3.2): refused before
    /// any routing, so that no such value reaches a hop or a copy.
    InvalidHost,
    /// A CONNECT whose target is not `host:port` (RFC 9110 9.3.6).
    BadConnectTarget,
    /// A CONNECT no route takes: only a match that names CONNECT opens a
    /// tunnel, and only to its route's destination.
    ConnectRefused,
    /// The client's request body was malformed or cut short.
    BadRequestBody,
    /// The request head is larger than the listener accepts.
    HeadersTooLarge,
    /// The Host belongs to another certificate than the one the connection's
    /// TLS handshake chose by SNI (RFC 9110 15.5.20).
    Misdirected,
    NoVirtualHost,
    NoRoute,
    NoEndpoint,
    /// The destination's request limit (DestinationRule connectionPool) is reached.
    Overflow,
    UpstreamConnect,
    /// Connected, but the TLS handshake with the upstream failed.
    UpstreamTls,
    UpstreamReset,
    /// The upstream answered bytes that do not parse as an HTTP/1.1 response.
    UpstreamProtocol,
    /// The upstream's Content-Length is malformed, or lists differing values.
    UpstreamFraming,
    UpstreamTimeout,
}

/// Envoy's response flag for an answer that says why it is not (only) the upstream's:
/// `UF` upstream connection failure, `NR` no route, `FI` fault injected... Carried as a
/// response extension to the access log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseFlag(pub &'static str);

impl LocalReply {
    /// This answer's response flag, as Envoy names the same cause.
    pub fn flag(self) -> &'static str {
        match self {
            Self::ConnectRefused | Self::Misdirected | Self::NoVirtualHost | Self::NoRoute => "NR",
            Self::NoEndpoint => "UH",
            Self::Overflow => "UO",
            Self::UpstreamConnect | Self::UpstreamTls => "UF",
            Self::UpstreamReset => "UR",
            Self::UpstreamProtocol | Self::UpstreamFraming => "UPE",
            Self::UpstreamTimeout => "UT",
            // The rest refuse the request itself (400, 431): a downstream protocol error.
            _ => "DPE",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            Self::AmbiguousFraming
            | Self::RepeatedContentLength
            | Self::UnsupportedTransferEncoding
            | Self::BadHost
            | Self::InvalidHost
            | Self::BadConnectTarget
            | Self::BadRequestBody => StatusCode::BAD_REQUEST,
            Self::ConnectRefused => StatusCode::METHOD_NOT_ALLOWED,
            Self::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::Misdirected => StatusCode::MISDIRECTED_REQUEST,
            Self::NoVirtualHost | Self::NoRoute => StatusCode::NOT_FOUND,
            Self::NoEndpoint | Self::Overflow => StatusCode::SERVICE_UNAVAILABLE,
            Self::UpstreamConnect
            | Self::UpstreamTls
            | Self::UpstreamReset
            | Self::UpstreamProtocol
            | Self::UpstreamFraming => StatusCode::BAD_GATEWAY,
            Self::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The plain-text body: short, and naming the cause.
    pub fn message(self) -> &'static str {
        match self {
            Self::AmbiguousFraming => "content-length together with transfer-encoding is refused\n",
            Self::RepeatedContentLength => "content-length given more than once is refused\n",
            Self::UnsupportedTransferEncoding => {
                "transfer-encoding other than a single chunked is refused\n"
            }
            Self::BadHost => "a request needs exactly one host header\n",
            Self::InvalidHost => "the host header is not a valid authority\n",
            Self::BadConnectTarget => "a CONNECT names its target as host:port\n",
            Self::ConnectRefused => {
                "CONNECT is served only by a route matching `method: {exact: CONNECT}`\n"
            }
            Self::BadRequestBody => "malformed or incomplete request body\n",
            Self::HeadersTooLarge => "request header fields too large\n",
            Self::Misdirected => {
                "this host's certificate is not this connection's: open a new connection\n"
            }
            Self::NoVirtualHost => "no virtual service serves this host\n",
            Self::NoRoute => "no route matches this request\n",
            Self::NoEndpoint => "no endpoint available for the destination\n",
            Self::Overflow => "upstream overflow: the destination's request limit is reached\n",
            Self::UpstreamConnect => "upstream connection refused or failed\n",
            Self::UpstreamTls => {
                "upstream TLS handshake failed (certificate not trusted or not for its name)\n"
            }
            Self::UpstreamReset => "upstream reset the connection before answering\n",
            Self::UpstreamProtocol => "upstream answered with something that is not HTTP\n",
            Self::UpstreamFraming => {
                "upstream answered with a malformed or conflicting content-length\n"
            }
            Self::UpstreamTimeout => "upstream did not answer within the route timeout\n",
        }
    }

    pub fn into_response<B: From<Full<Bytes>>>(self) -> Response<B> {
        let mut response =
            plain_response(self.status(), Bytes::from_static(self.message().as_bytes()));
        if matches!(
            self,
            Self::AmbiguousFraming
                | Self::RepeatedContentLength
                | Self::UnsupportedTransferEncoding
                | Self::BadHost
                | Self::BadConnectTarget
                | Self::BadRequestBody
                | Self::HeadersTooLarge
                | Self::ConnectRefused
        ) {
            // Where this request's body ends is unknowable (or, after CONNECT, the
            // client may already be sending tunnel bytes): the connection cannot go on.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        // Marks the answer as the proxy's own, for a protocol that answers in
        // its own terms (gRPC) to find later, and for the access log.
        response.extensions_mut().insert(self);
        response.extensions_mut().insert(ResponseFlag(self.flag()));
        response
    }
}

/// A response the proxy makes itself; a non-empty body is plain text.
pub fn plain_response<B: From<Full<Bytes>>>(status: StatusCode, body: Bytes) -> Response<B> {
    let has_body = !body.is_empty();
    let mut response = Response::new(B::from(Full::new(body)));
    *response.status_mut() = status;
    if has_body {
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_refused_for_themselves_are_downstream_protocol_errors() {
        for reply in [
            LocalReply::AmbiguousFraming,
            LocalReply::BadHost,
            LocalReply::HeadersTooLarge,
            LocalReply::BadRequestBody,
        ] {
            assert_eq!(reply.flag(), "DPE", "{reply:?}");
        }
        assert_eq!(LocalReply::Misdirected.flag(), "NR");
        assert_eq!(LocalReply::UpstreamTls.flag(), "UF");
    }
}
