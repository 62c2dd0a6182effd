//! Header rules applied to every forwarded request and response.

use std::net::IpAddr;

use http::header::{self, Entry, HeaderMap, HeaderName, HeaderValue};

use crate::http::local_reply::LocalReply;

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_FORWARDED_CLIENT_CERT: HeaderName = HeaderName::from_static("x-forwarded-client-cert");

pub(crate) static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Hop-by-hop headers (RFC 9110 7.6.1, plus the legacy ones proxies still see).
/// Named once, so removing them parses nothing per request. Not `Trailer`: it
/// is end-to-end (RFC 9110 6.6.2), and hyper sends HTTP/1.1 trailer fields
/// only when it declares them.
pub(crate) static HOP_BY_HOP: [&HeaderName; 8] = [
    &header::CONNECTION,
    &KEEP_ALIVE,
    &PROXY_CONNECTION,
    &header::PROXY_AUTHENTICATE,
    &header::PROXY_AUTHORIZATION,
    &header::TE,
    &header::UPGRADE,
    &header::TRANSFER_ENCODING,
];

/// Removes hop-by-hop headers, including every header that `Connection` names,
/// except those the proxy itself depends on (see `connection_may_remove`).
/// `Transfer-Encoding` goes too: hyper re-frames the body on the next hop.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most heads carry none of them: one scan of the names, with no hashing, says
    // so (a lookup per hop-by-hop name cost 3k instructions per request, callgrind).
    if headers.keys().any(is_hop_by_hop) {
        strip_present(headers);
    }
}

/// One of `HOP_BY_HOP`. Their names have lengths few others have: most
/// names are told apart by their length alone, with no comparison (the
/// eight comparisons per name cost 200 instructions per answer, callgrind).
pub fn is_hop_by_hop(name: &HeaderName) -> bool {
    hop_by_hop_length(name.as_str().len()) && HOP_BY_HOP.contains(&name)
}

/// `is_hop_by_hop` for a name as it came on the wire, in any case.
pub fn spells_hop_by_hop(raw: &[u8]) -> bool {
    hop_by_hop_length(raw.len())
        && HOP_BY_HOP
            .iter()
            .any(|hop| hop.as_str().as_bytes().eq_ignore_ascii_case(raw))
}

/// A length some name of `HOP_BY_HOP` has.
fn hop_by_hop_length(len: usize) -> bool {
    matches!(len, 2 | 7 | 10 | 16..=19)
}

/// `strip_hop_by_hop` once a hop-by-hop header is known to be present: one
/// scan of the names says which, and only those are looked up and removed.
fn strip_present(headers: &mut HeaderMap) {
    let mut present = 0u8;
    for name in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|h| *h == name) {
            present |= 1 << i;
        }
    }
    let has = |name: &HeaderName| {
        HOP_BY_HOP
            .iter()
            .position(|h| *h == name)
            .is_some_and(|i| present & (1 << i) != 0)
    };
    let trailers = has(&header::TE) && takes_trailers(headers);
    if has(&header::CONNECTION) {
        let named: Vec<HeaderName> = listed(headers)
            // A hop-by-hop name listed goes below anyway: no name to make for it.
            .filter(|token| {
                !HOP_BY_HOP
                    .iter()
                    .any(|h| h.as_str().eq_ignore_ascii_case(token))
            })
            .filter_map(|token| HeaderName::from_bytes(token.as_bytes()).ok())
            .filter(connection_may_remove)
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(*name);
        }
    }
    if trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

/// `te: trailers` says the sender takes trailers: true of the proxy on the
/// next hop too, as it passes them on, and gRPC requires it over HTTP/2
/// (RFC 9113 8.2.2 allows exactly this value there). Any other TE goes.
fn takes_trailers(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::TE)
        .iter()
        .flat_map(|v| v.to_str().unwrap_or("").split(','))
        .any(|t| {
            t.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .eq_ignore_ascii_case("trailers")
        })
}

/// The names the (first) `Connection` header lists, trimmed.
fn listed(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get(&header::CONNECTION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(',')
        .map(str::trim)
}

/// Whether a name listed in `Connection` may be removed. Host, the framing
/// headers, the request id and the proxy's own `x-forwarded-*` may not: a
/// client could otherwise strip the Host from what reaches the primary, the
/// request id that links a copy to its primary, or the Content-Length that
/// frames the body (the class of Apache's CVE-2022-31813). The header
/// `Connection` itself still goes.
fn connection_may_remove(name: &HeaderName) -> bool {
    let protected = name == header::HOST
        || name == header::CONTENT_LENGTH
        || name == header::TRANSFER_ENCODING
        || name == X_REQUEST_ID
        || name.as_str().starts_with("x-forwarded-");
    !protected
}

/// Marks a body of unknown length (the client sent it chunked) as chunked on
/// the next hop. `strip_hop_by_hop` removed the client's `Transfer-Encoding`,
/// and without it hyper's client sends a GET, HEAD or CONNECT of unknown
/// length with no body at all (it assumes those have none); a proxy forwards
/// the body it got (RFC 9110 9.3.1 allows one on a GET). Called before the
/// mirror copies are made, so that they are framed alike. A sized body keeps
/// its Content-Length; an empty one needs no framing.
pub fn keep_chunked(headers: &mut HeaderMap, body: &impl http_body::Body) {
    if needs_chunked(body) {
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
    }
}

/// A body `keep_chunked` sends chunked: one of unknown length, not ended.
pub fn needs_chunked(body: &impl http_body::Body) -> bool {
    body.size_hint().exact().is_none() && !body.is_end_stream()
}

/// A plain Content-Length value: 1 to 19 digits (always within a u64). The
/// one form read as it comes on both hops; anything else takes the long way
/// (a list, a refusal, or hyper's connection).
pub fn plain_length(value: &[u8]) -> Option<u64> {
    ((1..=19).contains(&value.len()) && value.iter().all(u8::is_ascii_digit))
        .then(|| value.iter().fold(0, |n, d| n * 10 + u64::from(d - b'0')))
}

/// A comma-separated field value lists `token` (trimmed, any case).
pub fn lists(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

/// What `HeaderValue::to_str` accepts: hyper reads tokens only in such values.
pub fn visible(value: &[u8]) -> bool {
    value
        .iter()
        .all(|&b| b == b'\t' || (0x20..0x7f).contains(&b))
}

/// A value as text where it is visible ASCII (or tabs), as
/// `HeaderValue::to_str` takes one.
pub fn visible_text(value: &[u8]) -> Option<&str> {
    if visible(value) {
        std::str::from_utf8(value).ok()
    } else {
        None
    }
}

/// A `Connection` value says `close`, as hyper reads one.
pub fn says_close(value: &[u8]) -> bool {
    visible(value) && lists(value, b"close")
}

/// What the proxy passes on of an upstream response's framing (RFC 9112
/// 6.3). hyper decodes a body by Transfer-Encoding when both headers are
/// present and accepts a Content-Length list of equal values, but leaves the
/// headers as they came: passed on, a stale `Content-Length: 3` beside a
/// chunked body would make the client take a truncated answer for a complete
/// one. With Transfer-Encoding (`chunked`: the body is re-framed on the next
/// hop) Content-Length is dropped; a list of equal values becomes one value;
/// differing or malformed values are refused (the caller answers 502).
/// Call before `strip_hop_by_hop`, which removes Transfer-Encoding.
pub fn response_framing(headers: &mut HeaderMap) -> Result<(), LocalReply> {
    // Most answers carry one plain Content-Length and no Transfer-Encoding:
    // one scan of the names says so, with no hashing (three lookups cost 700
    // instructions per request, callgrind).
    let (mut lengths, mut coded, mut plain) = (0, false, false);
    for (name, value) in headers.iter() {
        if *name == header::CONTENT_LENGTH {
            lengths += 1;
            plain = plain_length(value.as_bytes()).is_some();
        } else if *name == header::TRANSFER_ENCODING {
            coded = true;
        }
    }
    if lengths == 0 || (lengths == 1 && plain && !coded) {
        return Ok(());
    }
    if coded {
        headers.remove(header::CONTENT_LENGTH);
        return Ok(());
    }
    let mut length: Option<u64> = None;
    let mut single = true;
    for (n, value) in headers.get_all(header::CONTENT_LENGTH).iter().enumerate() {
        let text = value.to_str().map_err(|_| LocalReply::UpstreamFraming)?;
        for (m, item) in text.split(',').enumerate() {
            let item = item.trim_matches([' ', '\t']);
            if item.is_empty() || item.len() > 19 || !item.bytes().all(|b| b.is_ascii_digit()) {
                return Err(LocalReply::UpstreamFraming);
            }
            let parsed: u64 = item.parse().map_err(|_| LocalReply::UpstreamFraming)?;
            if length.is_some_and(|l| l != parsed) {
                return Err(LocalReply::UpstreamFraming);
            }
            single &= n == 0 && m == 0 && item.len() == text.len();
            length = Some(parsed);
        }
    }
    if let (Some(length), false) = (length, single) {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    }
    Ok(())
}

/// Appends the client's address to `x-forwarded-for` and states the scheme it used.
/// `given`: the request carries an `x-forwarded-for` (else none is looked for).
pub fn append_forwarded(headers: &mut HeaderMap, client: &HeaderValue, secure: bool, given: bool) {
    let existing = given.then(|| headers.get(&X_FORWARDED_FOR)).flatten();
    let value = match existing.and_then(|v| v.to_str().ok()) {
        Some(existing) if !existing.trim().is_empty() => {
            let client = client.to_str().unwrap_or("");
            HeaderValue::from_str(&format!("{existing}, {client}")).ok()
        }
        // The common case: the connection's own value, made once per connection.
        _ => Some(client.clone()),
    };
    if let Some(value) = value {
        headers.insert(X_FORWARDED_FOR.clone(), value);
    }
    headers.insert(X_FORWARDED_PROTO.clone(), forwarded_proto(secure));
}

/// The scheme the client used, as `x-forwarded-proto` says it.
pub fn forwarded_proto(secure: bool) -> HeaderValue {
    HeaderValue::from_static(if secure { "https" } else { "http" })
}

/// A client's address as `x-forwarded-for` names it (an IPv4-mapped IPv6
/// address as plain IPv4): made once per connection, not per request.
pub fn forwarded_for(client: IpAddr) -> HeaderValue {
    HeaderValue::from_str(&client.to_canonical().to_string())
        .expect("an IP address is a valid header value")
}

/// `x-forwarded-client-cert` is the proxy's to say: whatever the client sent
/// is removed, and a verified client certificate (MUTUAL) is set.
/// `given`: the request carries one (else none is looked for).
pub fn set_client_cert(headers: &mut HeaderMap, verified: Option<&HeaderValue>, given: bool) {
    if given {
        headers.remove(&X_FORWARDED_CLIENT_CERT);
    }
    if let Some(value) = verified {
        headers.insert(X_FORWARDED_CLIENT_CERT.clone(), value.clone());
    }
}

/// Keeps a usable `x-request-id` or sets a fresh UUID v4, so that the primary
/// request and every copy carry the same one.
pub fn ensure_request_id(headers: &mut HeaderMap) {
    // One lookup (an entry), not a get and an insert: two hashes of the name.
    match headers.entry(X_REQUEST_ID.clone()) {
        Entry::Occupied(mut given) => {
            if !usable_request_id(given.get().as_bytes()) {
                given.insert(fresh_request_id());
            }
        }
        Entry::Vacant(slot) => {
            slot.insert(fresh_request_id());
        }
    }
}

/// An `x-request-id` the proxy passes on as the client set it.
pub fn usable_request_id(value: &[u8]) -> bool {
    !value.is_empty() && value.len() <= 256
}

/// A fresh request id: a UUID v4, in lower case.
fn fresh_request_id() -> HeaderValue {
    HeaderValue::from_bytes(&fresh_request_id_bytes()).expect("a UUID is a valid header value")
}

/// The length of a request id the proxy makes.
pub const REQUEST_ID_LENGTH: usize = uuid::fmt::Hyphenated::LENGTH;

/// `fresh_request_id`'s bytes, in place (no allocation).
pub fn fresh_request_id_bytes() -> [u8; REQUEST_ID_LENGTH] {
    let mut id = [0u8; REQUEST_ID_LENGTH];
    uuid::Uuid::new_v4().hyphenated().encode_lower(&mut id);
    id
}

/// The Host a mirror copy carries: the suffix goes on the host name, before
/// any port (`reviews:8080` -> `reviews-shadow:8080`), so that the result is
/// still a valid Host. A host that cannot take the suffix and stay valid (an IP
/// literal, a bracketed one, a name that is not a DNS name) is replaced by
/// `fallback`, the mirror destination's own name, with the suffix: no client
/// input can make a copy look like production traffic.
pub fn shadow_host(host: &str, suffix: &str, fallback: &str) -> String {
    let (name, port) = split_port(host);
    let name = if is_dns_name(name) { name } else { fallback };
    // Pushed, not `format!`ted: its machinery cost 600 instructions a copy.
    let mut shadow =
        String::with_capacity(name.len() + suffix.len() + 1 + port.map_or(0, str::len));
    shadow.push_str(name);
    shadow.push_str(suffix);
    if let Some(port) = port {
        shadow.push(':');
        shadow.push_str(port);
    }
    shadow
}

/// `name:port` -> (`name`, `port`); a bracketed IPv6 literal keeps its brackets.
fn split_port(authority: &str) -> (&str, Option<&str>) {
    let name = strip_port(authority);
    match authority[name.len()..].strip_prefix(':') {
        Some(port) if !port.is_empty() => (name, Some(port)),
        _ => (name, None),
    }
}

/// A name made of DNS labels (letters, digits, `-`, `_`, each label 1..=63
/// bytes, not starting or ending with `-`), that is not an IPv4 address.
fn is_dns_name(name: &str) -> bool {
    if name.is_empty() || name.len() > 253 {
        return false;
    }
    // Only digits and dots can spell an IPv4 address: the parser, run on
    // every copy's Host, cost more than the rest of the test.
    let ipv4_spelling = name.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    if ipv4_spelling && name.parse::<std::net::Ipv4Addr>().is_ok() {
        return false;
    }
    name.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

/// Whether a Host value is a valid authority (RFC 9110 7.2, RFC 3986 3.2):
/// a bracketed IPv6 address, or a reg-name / IPv4 address of unreserved,
/// sub-delims and percent-encoded bytes; then an optional `:port` of digits.
/// An empty Host is allowed (RFC 9112 3.2: the target has no authority).
pub fn valid_authority(text: &str) -> bool {
    let (name, port) = split_port(text);
    if name.len() + port.map_or(0, |p| p.len() + 1) != text.len() {
        // A colon with nothing after it, or bytes after a bracketed literal.
        return text.len() == name.len() + 1 && text.ends_with(':');
    }
    if port.is_some_and(|p| p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit())) {
        return false;
    }
    if let Some(inner) = name.strip_prefix('[') {
        return inner
            .strip_suffix(']')
            .is_some_and(|ip| ip.parse::<std::net::Ipv6Addr>().is_ok());
    }
    let bytes = name.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3);
                if !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                    return false;
                }
                i += 3;
            }
            b if REG_NAME[usize::from(b)] => i += 1,
            _ => return false,
        }
    }
    true
}

/// The bytes a reg-name or IPv4 address is made of, besides `%` escapes:
/// unreserved and sub-delims (RFC 3986 3.2.2). A table: the test of each
/// byte against the list cost 15 instructions a byte (callgrind).
static REG_NAME: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric();
        b += 1;
    }
    let mut i = 0;
    let others = b"-._~!$&'()*+,;=";
    while i < others.len() {
        table[others[i] as usize] = true;
        i += 1;
    }
    table
};

/// An authority without its port (`reviews:8080` -> `reviews`, `[::1]:80` -> `[::1]`).
pub fn strip_port(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        // IPv6 literal: keep the brackets, drop the port.
        return match rest.find(']') {
            Some(end) => &authority[..end + 2],
            None => authority,
        };
    }
    // Digits back from the end, then a colon: one pass over the port only
    // (`rsplit_once` and a second look at the port cost 170 instructions
    // per request, twice, callgrind).
    let bytes = authority.as_bytes();
    let digits = bytes
        .iter()
        .rev()
        .take_while(|b| b.is_ascii_digit())
        .count();
    match bytes.len().checked_sub(digits + 1) {
        Some(colon) if bytes[colon] == b':' => &authority[..colon],
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
    use crate::http::test_support::map;

    #[test]
    fn hop_by_hop_and_connection_named_headers_go() {
        let mut h = map(&[
            ("connection", "keep-alive, x-secret"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("transfer-encoding", "chunked"),
            ("te", "gzip"),
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
    fn te_trailers_alone_goes_on() {
        // gRPC needs it on HTTP/2; the proxy does pass trailers on.
        for te in ["trailers", "gzip, trailers", "Trailers;q=1"] {
            let mut h = map(&[("connection", "te"), ("te", te)]);
            strip_hop_by_hop(&mut h);
            assert_eq!(h.get("te").unwrap(), "trailers", "{te:?}");
            assert!(h.get("connection").is_none());
        }
        let mut h = map(&[("te", "gzip, deflate")]);
        strip_hop_by_hop(&mut h);
        assert!(h.get("te").is_none());
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

    /// Which fields the request carries, as the guard tells `prepare`.
    fn given(h: &HeaderMap) -> crate::http::fields::Present {
        crate::http::fields::FieldFacts::of(crate::http::request_head::Fields::Map(h)).present
    }

    #[test]
    fn a_client_sent_forwarded_client_cert_never_passes() {
        let mut h = map(&[
            ("x-forwarded-client-cert", "Hash=forged"),
            ("x-forwarded-client-cert", "Subject=\"CN=admin\""),
        ]);
        let carried = given(&h).client_cert;
        set_client_cert(&mut h, None, carried);
        assert!(h.get("x-forwarded-client-cert").is_none());
        let mut h = map(&[("x-forwarded-client-cert", "Hash=forged")]);
        let verified = HeaderValue::from_static("Hash=ab");
        let carried = given(&h).client_cert;
        set_client_cert(&mut h, Some(&verified), carried);
        assert_eq!(
            h.get_all("x-forwarded-client-cert")
                .iter()
                .collect::<Vec<_>>(),
            ["Hash=ab"]
        );
    }

    #[test]
    fn forwarded_for_appends_and_proto_is_set() {
        let mut h = map(&[
            ("x-forwarded-for", "10.0.0.1"),
            ("x-forwarded-proto", "https"),
        ]);
        let client = forwarded_for("127.0.0.2".parse().unwrap());
        let carried = given(&h).forwarded_for;
        append_forwarded(&mut h, &client, false, carried);
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 127.0.0.2");
        assert_eq!(h["x-forwarded-proto"], "http");

        let mut h = HeaderMap::new();
        let client = forwarded_for("::ffff:127.0.0.1".parse().unwrap());
        let carried = given(&h).forwarded_for;
        append_forwarded(&mut h, &client, true, carried);
        assert_eq!(h["x-forwarded-for"], "127.0.0.1");
        // The scheme is the one the client used with us, whatever it claimed.
        assert_eq!(h["x-forwarded-proto"], "https");
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

        // Past 256 bytes: replaced, every value of it.
        let long = "a".repeat(257);
        let mut h = map(&[("x-request-id", long.as_str()), ("x-request-id", "b")]);
        ensure_request_id(&mut h);
        assert_eq!(h.get_all("x-request-id").iter().count(), 1);
        assert_eq!(h["x-request-id"].len(), 36);
        // A usable one is kept as it came.
        let mut h = map(&[("x-request-id", "a"), ("x-request-id", "b")]);
        ensure_request_id(&mut h);
        assert_eq!(h.get_all("x-request-id").iter().count(), 2);
    }

    #[test]
    fn shadow_suffix_goes_before_the_port() {
        let shadow = |host| shadow_host(host, "-shadow", "reviews");
        assert_eq!(shadow("reviews"), "reviews-shadow");
        assert_eq!(shadow("reviews:8080"), "reviews-shadow:8080");
        assert_eq!(shadow_host("a.b.svc:80", "-v2", "x"), "a.b.svc-v2:80");
        assert_eq!(shadow("my_svc.local"), "my_svc.local-shadow");
    }

    #[test]
    fn a_host_that_cannot_take_the_suffix_becomes_the_mirror_name() {
        let shadow = |host| shadow_host(host, "-shadow", "reviews");
        // IP literals, bracketed anything, non-DNS names: the marker stays.
        assert_eq!(shadow("[::1]:8080"), "reviews-shadow:8080");
        assert_eq!(shadow("[reviews]:9080"), "reviews-shadow:9080");
        assert_eq!(shadow("[anything]"), "reviews-shadow");
        assert_eq!(shadow("127.0.0.1:8080"), "reviews-shadow:8080");
        assert_eq!(shadow("10.1.2.3"), "reviews-shadow");
        assert_eq!(shadow("a..b"), "reviews-shadow");
        assert_eq!(shadow("-a"), "reviews-shadow");
        assert_eq!(shadow("a!b:1"), "reviews-shadow:1");
        assert_eq!(shadow("reviews.:80"), "reviews-shadow:80");
        assert_eq!(shadow(""), "reviews-shadow");
    }

    #[test]
    fn authorities_are_validated() {
        for good in [
            "reviews",
            "reviews:9080",
            "a.b-c_d~e",
            "127.0.0.1:80",
            "[::1]",
            "[::1]:8080",
            "[2001:db8::1]",
            "x%41y",
            "",
            "reviews:",
        ] {
            assert!(valid_authority(good), "{good:?}");
        }
        for bad in [
            "[reviews]:9080",
            "[anything]",
            "[::1",
            "[::1]x",
            "[::1]:80:80",
            "a:b",
            "a:123456",
            "r\u{e9}views",
            "a b",
            "a/b",
            "a@b",
            "x%4",
            "x%zz",
            "a:80:80",
        ] {
            assert!(!valid_authority(bad), "{bad:?}");
        }
    }

    #[test]
    fn connection_cannot_name_what_the_proxy_depends_on() {
        let mut h = map(&[
            (
                "connection",
                "host, content-length, transfer-encoding, x-request-id, x-forwarded-for, x-forwarded-proto, x-other",
            ),
            ("host", "reviews"),
            ("content-length", "5"),
            ("x-request-id", "abc"),
            ("x-forwarded-for", "10.0.0.1"),
            ("x-forwarded-proto", "http"),
            ("x-other", "1"),
        ]);
        strip_hop_by_hop(&mut h);
        let mut left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(
            left,
            [
                "content-length",
                "host",
                "x-forwarded-for",
                "x-forwarded-proto",
                "x-request-id",
            ]
        );
    }

    #[test]
    fn response_framing_follows_rfc_9112() {
        // Transfer-Encoding wins; Content-Length goes.
        let mut h = map(&[("content-length", "3"), ("transfer-encoding", "chunked")]);
        assert_eq!(response_framing(&mut h), Ok(()));
        assert!(!h.contains_key("content-length"));
        // Equal values, as a list or as lines, become one.
        for pairs in [
            &[("content-length", "2, 2")][..],
            &[("content-length", "2"), ("content-length", "2")],
            &[("content-length", " 2 ")],
        ] {
            let mut h = map(pairs);
            assert_eq!(response_framing(&mut h), Ok(()), "{pairs:?}");
            let all: Vec<_> = h.get_all("content-length").iter().collect();
            assert_eq!(all, ["2"], "{pairs:?}");
        }
        // One plain value passes as it is, up to the 19 digits a u64 always holds.
        for plain in ["7", "0", "9999999999999999999"] {
            let mut h = map(&[("content-length", plain), ("x-other", "1")]);
            assert_eq!(response_framing(&mut h), Ok(()));
            assert_eq!(h["content-length"], plain);
        }
        for bad in [
            &[("content-length", "2, 3")][..],
            &[("content-length", "2"), ("content-length", "3")],
            &[("content-length", "2x")],
            &[("content-length", "")],
            &[("content-length", "-1")],
            &[("content-length", "+2")],
            &[("content-length", "99999999999999999999")],
        ] {
            let mut h = map(bad);
            assert_eq!(
                response_framing(&mut h),
                Err(LocalReply::UpstreamFraming),
                "{bad:?}"
            );
        }
        let mut h = HeaderMap::new();
        assert_eq!(response_framing(&mut h), Ok(()));
    }

    #[test]
    fn matching_host_drops_port_and_case() {
        assert_eq!(host_for_matching("Reviews:8080"), "reviews");
        assert_eq!(host_for_matching("REVIEWS"), "reviews");
        assert_eq!(host_for_matching("[::1]:80"), "[::1]");
        assert_eq!(host_for_matching("[::1]"), "[::1]");
    }

    /// The port-stripping rule as it was written first, kept as the
    /// reference the faster one is checked against.
    fn strip_port_reference(authority: &str) -> &str {
        if let Some(rest) = authority.strip_prefix('[') {
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

    proptest::proptest! {
        #[test]
        fn strip_port_agrees_with_its_reference(authority in "[a-z0-9:\\[\\]\\.é]{0,12}") {
            proptest::prop_assert_eq!(strip_port(&authority), strip_port_reference(&authority));
        }
    }

    #[test]
    fn the_reg_name_table_is_the_rule_it_stands_for() {
        for b in 0..=u8::MAX {
            let rule = b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=".contains(&b);
            assert_eq!(REG_NAME[usize::from(b)], rule, "{b:#x}");
        }
    }

    #[test]
    fn hop_by_hop_names_are_told_apart_by_length_first() {
        for name in HOP_BY_HOP {
            assert!(is_hop_by_hop(name), "{name}");
        }
        for name in [
            "content-length",
            "date",
            "server",
            "x-upgrade",
            "connections",
            "tee",
        ] {
            assert!(!is_hop_by_hop(&HeaderName::from_static(name)), "{name}");
        }
    }

    /// The strip as it was before the scans: a lookup per hop-by-hop name. The
    /// reference the fast paths are checked against.
    fn strip_reference(headers: &mut HeaderMap) {
        let trailers = takes_trailers(headers);
        if let Some(connection) = headers.get(&header::CONNECTION) {
            let named: Vec<HeaderName> = connection
                .to_str()
                .unwrap_or("")
                .split(',')
                .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
                .filter(connection_may_remove)
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
        if trailers {
            headers.insert(header::TE, HeaderValue::from_static("trailers"));
        }
    }

    /// The scans that skip work must never skip what the reference does: every
    /// subset of these headers (4,096 heads) gives what the reference gives.
    #[test]
    fn the_fast_path_agrees_with_the_full_strip_on_every_subset() {
        let pool: [(&str, &str); 12] = [
            ("host", "reviews"),
            (
                "connection",
                "x-secret, Keep-Alive, close, host, content-length, te",
            ),
            ("close", "a header named as a connection option"),
            ("content-length", "0"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers, gzip"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("proxy-connection", "keep-alive"),
            ("accept", "*/*"),
            ("proxy-authorization", "Basic x"),
        ];
        for mask in 0u32..(1 << pool.len()) {
            let mut head = HeaderMap::new();
            for (i, (name, value)) in pool.iter().enumerate() {
                if mask & (1 << i) != 0 {
                    head.append(*name, HeaderValue::from_static(value));
                }
            }
            let (mut fast, mut reference) = (head.clone(), head);
            strip_hop_by_hop(&mut fast);
            strip_reference(&mut reference);
            assert_eq!(fast, reference, "mask {mask:#b}");
        }
    }
}
