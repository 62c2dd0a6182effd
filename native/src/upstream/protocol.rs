//! The protocol a request goes upstream with, chosen in one place for every
//! path (primaries, mirror copies, upgrades): per destination, as Istio
//! chooses it (the snapshot's `UpstreamProtocol`), against the client's own
//! for `client`. And the head in that protocol's form.

use http::header::{HeaderName, HeaderValue, HOST};
use http::request::Parts;
use http::uri::{Authority, Scheme};
use http::{Uri, Version};

use crate::http::request_head::RequestHead;
use crate::http::target::origin_uri;
use crate::snapshot::UpstreamProtocol;

/// How one request travels to its upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    Http1,
    Http2,
}

impl Wire {
    /// The destination's protocol; for `client`, the client's (HTTP/2 stays
    /// HTTP/2, anything else goes as HTTP/1.1).
    pub fn choose(destination: UpstreamProtocol, client: Version) -> Self {
        match destination {
            UpstreamProtocol::Http1 => Self::Http1,
            UpstreamProtocol::Http2 => Self::Http2,
            UpstreamProtocol::Client if client == Version::HTTP_2 => Self::Http2,
            UpstreamProtocol::Client => Self::Http1,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::Http1 => "HTTP/1.1",
            Self::Http2 => "HTTP/2",
        }
    }
}

/// Makes `parts` what goes upstream, apart from the wire: an origin-form
/// target (where it goes is always a configured endpoint, never what the
/// client named), Host carrying the authority (an HTTP/2 client's
/// `:authority` is already in Host: RFC 9113 8.3.1).
pub fn for_upstream(parts: &mut Parts) {
    parts.uri = origin_uri(parts.uri.path_and_query());
    parts.version = Version::HTTP_11;
}

/// `for_upstream` for a copy of a head kept as it came (its fields shared
/// with the primary's); `None` for a head in the map.
pub fn kept_for_upstream(head: &RequestHead) -> Option<RequestHead> {
    head.kept_copy(origin_uri(head.uri().path_and_query()), Version::HTTP_11)
}

/// Puts a head made by `for_upstream` (and the copies' Host edits) in the
/// wire's form. For HTTP/2, Host becomes `:authority` (the absolute target
/// hyper's HTTP/2 client sends as pseudo-headers; `endpoint` when the request
/// has no Host, as HTTP/1.0 may) and the Host header goes.
pub fn to_wire(parts: &mut Parts, wire: Wire, endpoint: &Authority) {
    match wire {
        Wire::Http1 => parts.version = Version::HTTP_11,
        Wire::Http2 => {
            let authority = parts
                .headers
                .remove(HOST)
                .and_then(|h| Authority::try_from(h.as_bytes()).ok())
                .unwrap_or_else(|| endpoint.clone());
            let mut uri = Uri::builder().scheme(Scheme::HTTP).authority(authority);
            if let Some(pq) = parts.uri.path_and_query() {
                uri = uri.path_and_query(pq.clone());
            }
            // Scheme, authority and an origin-form path always build.
            if let Ok(uri) = uri.build() {
                parts.uri = uri;
            }
            parts.version = Version::HTTP_2;
        }
    }
}

/// A try's head for a send that takes it whole (HTTP/2, or an HTTP/1.1 head
/// whose framing fields change): the try's own field (`replace`: its
/// `grpc-timeout`) set, then made the upstream's (`for_upstream`).
pub fn try_head(mut parts: Parts, replace: Option<(HeaderName, HeaderValue)>) -> Parts {
    if let Some((name, value)) = replace {
        parts.headers.insert(name, value);
    }
    for_upstream(&mut parts);
    parts
}

/// Marks an HTTP/2 head as going over TLS (`:scheme` https); an HTTP/1.1
/// head carries no scheme.
pub fn secure(parts: &mut Parts) {
    if parts.uri.scheme().is_some() {
        let mut uri = parts.uri.clone().into_parts();
        uri.scheme = Some(Scheme::HTTPS);
        if let Ok(uri) = Uri::from_parts(uri) {
            parts.uri = uri;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(target: &str, host: Option<&str>) -> Parts {
        let mut request = http::Request::builder().uri(target);
        if let Some(host) = host {
            request = request.header(HOST, host);
        }
        request.body(()).unwrap().into_parts().0
    }

    #[test]
    fn the_destination_decides_and_client_follows_the_client() {
        use UpstreamProtocol::*;
        assert_eq!(Wire::choose(Http1, Version::HTTP_2), Wire::Http1);
        assert_eq!(Wire::choose(Http2, Version::HTTP_11), Wire::Http2);
        assert_eq!(Wire::choose(Client, Version::HTTP_2), Wire::Http2);
        assert_eq!(Wire::choose(Client, Version::HTTP_11), Wire::Http1);
        assert_eq!(Wire::choose(Client, Version::HTTP_10), Wire::Http1);
    }

    #[test]
    fn http2_carries_host_as_authority() {
        let endpoint: Authority = "10.0.0.1:9080".parse().unwrap();
        let mut parts = head("http://ignored.example/x?y=1", Some("reviews-shadow:9080"));
        for_upstream(&mut parts);
        to_wire(&mut parts, Wire::Http2, &endpoint);
        assert_eq!(parts.uri.to_string(), "http://reviews-shadow:9080/x?y=1");
        assert!(parts.headers.get(HOST).is_none());
        assert_eq!(parts.version, Version::HTTP_2);
    }

    #[test]
    fn http2_without_host_names_the_endpoint() {
        let endpoint: Authority = "10.0.0.1:9080".parse().unwrap();
        let mut parts = head("/x", None);
        for_upstream(&mut parts);
        to_wire(&mut parts, Wire::Http2, &endpoint);
        assert_eq!(parts.uri.to_string(), "http://10.0.0.1:9080/x");
    }

    #[test]
    fn http1_keeps_host_and_the_origin_form() {
        let endpoint: Authority = "10.0.0.1:9080".parse().unwrap();
        let mut parts = head("http://a.example/x", Some("reviews"));
        for_upstream(&mut parts);
        to_wire(&mut parts, Wire::Http1, &endpoint);
        assert_eq!(parts.uri.to_string(), "/x");
        assert_eq!(parts.headers[HOST], "reviews");
        assert_eq!(parts.version, Version::HTTP_11);
    }
}
