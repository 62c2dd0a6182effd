//! Header rules applied to every forwarded request and response.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::error::LocalReply;

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Hop-by-hop headers (RFC 9110 7.6.1, plus the legacy ones proxies still see).
/// Named once, so removing them parses nothing per request.
static HOP_BY_HOP: [&HeaderName; 9] = [
    &header::CONNECTION,
    &KEEP_ALIVE,
    &PROXY_CONNECTION,
    &header::PROXY_AUTHENTICATE,
    &header::PROXY_AUTHORIZATION,
    &header::TE,
    &header::TRAILER,
    &header::UPGRADE,
    &header::TRANSFER_ENCODING,
];

/// Removes hop-by-hop headers, including every header that `Connection` names.
/// `Transfer-Encoding` goes too: hyper re-frames the body on the next hop.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if let Some(connection) = headers.get(&header::CONNECTION) {
        let named: Vec<HeaderName> = connection
            .to_str()
            .unwrap_or("")
            .split(',')
            .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for name in HOP_BY_HOP {
        if headers.contains_key(name) {
            headers.remove(name);
        }
    }
}

/// Marks a body of unknown length (the client sent it chunked) as chunked on
/// the next hop. `strip_hop_by_hop` removed the client's `Transfer-Encoding`,
/// and without it hyper's client sends a GET, HEAD or CONNECT of unknown
/// length with no body at all (it assumes those have none); a proxy forwards
/// the body it got (RFC 9110 9.3.1 allows one on a GET). Called before the
/// mirror copies are made, so that they are framed alike. A sized body keeps
/// its Content-Length; an empty one needs no framing.
pub fn keep_chunked(headers: &mut HeaderMap, body: &impl http_body::Body) {
    if body.size_hint().exact().is_none() && !body.is_end_stream() {
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
    }
}

/// What hyper accepts and a proxy must not pass on: a transfer coding other
/// than one `chunked` (hyper only checks the last), Content-Length beside
/// Transfer-Encoding (hyper drops it; checked again here in case that
/// changes), and a missing or repeated Host on HTTP/1.1 (RFC 9112 3.2: 400).
pub fn framing_problem(headers: &HeaderMap, version: http::Version) -> Option<LocalReply> {
    let mut codings = headers.get_all(header::TRANSFER_ENCODING).iter();
    if let Some(first) = codings.next() {
        if codings.next().is_some() || !first.as_bytes().eq_ignore_ascii_case(b"chunked") {
            return Some(LocalReply::UnsupportedTransferEncoding);
        }
        if headers.contains_key(header::CONTENT_LENGTH) {
            return Some(LocalReply::AmbiguousFraming);
        }
    }
    let mut hosts = headers.get_all(header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (Some(_), Some(_)) => Some(LocalReply::BadHost),
        (None, _) if version == http::Version::HTTP_11 => Some(LocalReply::BadHost),
        _ => None,
    }
}

/// Appends the client's address to `x-forwarded-for` and states the scheme it used.
pub fn append_forwarded(headers: &mut HeaderMap, client: IpAddr) {
    let client = client.to_canonical().to_string();
    let value = match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(existing) if !existing.trim().is_empty() => format!("{existing}, {client}"),
        _ => client,
    };
    if let Ok(value) = HeaderValue::from_str(&value) {
        headers.insert(X_FORWARDED_FOR.clone(), value);
    }
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("http"));
}

/// Keeps a usable `x-request-id` or sets a fresh UUID v4, so that the primary
/// request and every copy carry the same one.
pub fn ensure_request_id(headers: &mut HeaderMap) {
    let usable = headers
        .get(&X_REQUEST_ID)
        .is_some_and(|v| !v.is_empty() && v.len() <= 256);
    if !usable {
        let id = uuid::Uuid::new_v4();
        let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
        let text = id.hyphenated().encode_lower(&mut buf);
        headers.insert(
            X_REQUEST_ID.clone(),
            HeaderValue::from_str(text).expect("a UUID is a valid header value"),
        );
    }
}

/// The Host a mirror copy carries: the suffix goes on the host name, before
/// any port (`reviews:8080` -> `reviews-shadow:8080`), so that the result is
/// still a valid Host. IPv6 literals are left alone: no suffix keeps them valid.
pub fn shadow_host(host: &str, suffix: &str) -> String {
    if host.starts_with('[') {
        return host.to_owned();
    }
    match host.rsplit_once(':') {
        Some((name, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => {
            format!("{name}{suffix}:{port}")
        }
        _ => format!("{host}{suffix}"),
    }
}

/// An authority without its port (`reviews:8080` -> `reviews`, `[::1]:80` -> `[::1]`).
pub fn strip_port(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        // IPv6 literal: keep the brackets, drop the port.
        return match rest.find(']') {
            Some(end) => &authority[..end + 2],
            None => authority,
        };
    }
    match authority.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => authority,
    }
}

/// The request's host name for virtual-host matching: no port, lower case.
/// Borrowed when it already is (the common case): no allocation.
pub fn host_for_matching(authority: &str) -> std::borrow::Cow<'_, str> {
    let name = strip_port(authority);
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(name.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        m
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_go() {
        let mut h = map(&[
            ("connection", "keep-alive, x-secret"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("transfer-encoding", "chunked"),
            ("te", "trailers"),
            ("upgrade", "websocket"),
            ("proxy-authorization", "Basic Zm9v"),
            ("x-kept", "yes"),
            ("content-length", "3"),
        ]);
        strip_hop_by_hop(&mut h);
        let left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["x-kept", "content-length"]);
    }

    #[test]
    fn a_body_of_unknown_length_stays_chunked() {
        use bytes::Bytes;
        use http_body_util::{Empty, Full};

        let mut h = map(&[("host", "a")]);
        keep_chunked(&mut h, &Chunked);
        assert_eq!(h["transfer-encoding"], "chunked");

        // Sized or empty: left to Content-Length (or to nothing).
        for body in [Full::new(Bytes::from("hello")), Full::new(Bytes::new())] {
            let mut h = map(&[("content-length", "5")]);
            keep_chunked(&mut h, &body);
            assert!(!h.contains_key("transfer-encoding"));
        }
        let mut h = HeaderMap::new();
        keep_chunked(&mut h, &Empty::<Bytes>::new());
        assert!(h.is_empty());
    }

    /// A body of unknown length, not yet read: what hyper makes of a chunked one.
    struct Chunked;

    impl http_body::Body for Chunked {
        type Data = bytes::Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
            std::task::Poll::Ready(None)
        }
    }

    #[test]
    fn framing_and_host_problems_are_named() {
        use http::Version;
        let ok = map(&[("host", "a"), ("transfer-encoding", "chunked")]);
        assert_eq!(framing_problem(&ok, Version::HTTP_11), None);
        let ok = map(&[("host", "a"), ("transfer-encoding", "Chunked")]);
        assert_eq!(framing_problem(&ok, Version::HTTP_11), None);
        for te in [
            &["gzip, chunked"][..],
            &["chunked, chunked"],
            &["chunked", "chunked"],
        ] {
            let mut h = map(&[("host", "a")]);
            for v in te {
                h.append("transfer-encoding", HeaderValue::from_static(v));
            }
            assert_eq!(
                framing_problem(&h, Version::HTTP_11),
                Some(LocalReply::UnsupportedTransferEncoding),
                "{te:?}"
            );
        }
        let both = map(&[
            ("host", "a"),
            ("transfer-encoding", "chunked"),
            ("content-length", "1"),
        ]);
        assert_eq!(
            framing_problem(&both, Version::HTTP_11),
            Some(LocalReply::AmbiguousFraming)
        );
        let two_hosts = map(&[("host", "a"), ("host", "b")]);
        assert_eq!(
            framing_problem(&two_hosts, Version::HTTP_10),
            Some(LocalReply::BadHost)
        );
        assert_eq!(
            framing_problem(&HeaderMap::new(), Version::HTTP_11),
            Some(LocalReply::BadHost)
        );
        assert_eq!(framing_problem(&HeaderMap::new(), Version::HTTP_10), None);
    }

    #[test]
    fn forwarded_for_appends_and_proto_is_set() {
        let mut h = map(&[
            ("x-forwarded-for", "10.0.0.1"),
            ("x-forwarded-proto", "https"),
        ]);
        append_forwarded(&mut h, "127.0.0.2".parse().unwrap());
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 127.0.0.2");
        assert_eq!(h["x-forwarded-proto"], "http");

        let mut h = HeaderMap::new();
        append_forwarded(&mut h, "::ffff:127.0.0.1".parse().unwrap());
        assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    }

    #[test]
    fn request_id_is_kept_or_generated() {
        let mut h = map(&[("x-request-id", "abc")]);
        ensure_request_id(&mut h);
        assert_eq!(h["x-request-id"], "abc");

        let mut h = HeaderMap::new();
        ensure_request_id(&mut h);
        let id = h["x-request-id"].to_str().unwrap();
        assert_eq!(uuid::Uuid::parse_str(id).unwrap().get_version_num(), 4);

        let mut h = map(&[("x-request-id", "")]);
        ensure_request_id(&mut h);
        assert_eq!(h["x-request-id"].len(), 36);
    }

    #[test]
    fn shadow_suffix_goes_before_the_port() {
        assert_eq!(shadow_host("reviews", "-shadow"), "reviews-shadow");
        assert_eq!(
            shadow_host("reviews:8080", "-shadow"),
            "reviews-shadow:8080"
        );
        assert_eq!(shadow_host("a.b.svc:80", "-v2"), "a.b.svc-v2:80");
        assert_eq!(shadow_host("[::1]:8080", "-shadow"), "[::1]:8080");
    }

    #[test]
    fn matching_host_drops_port_and_case() {
        assert_eq!(host_for_matching("Reviews:8080"), "reviews");
        assert_eq!(host_for_matching("REVIEWS"), "reviews");
        assert_eq!(host_for_matching("[::1]:80"), "[::1]");
        assert_eq!(host_for_matching("[::1]"), "[::1]");
    }
}
