//! An upstream's response head, parsed with httparse into the `http` types
//! the rest of the proxy uses, and the framing of its body decided as
//! RFC 9112 6.3 says (and as hyper's client decides it: the differential
//! test holds the two together). Interim 1xx answers are skipped; header
//! values are slices of the read buffer, not copies.

use std::mem::MaybeUninit;

use bytes::{Bytes, BytesMut};
use http::header::{HeaderName, HeaderValue, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, Method, StatusCode, Version};

use super::decode::{Chunked, Decoder};
use super::{WireError, MAX_HEADERS};
use crate::http::headers::plain_length;
use crate::http::names;
use crate::http::raw_fields::{self, RawFields};
use crate::http::spans::{Room, Span};

/// A response head and how its body is framed.
#[derive(Debug)]
pub struct Head {
    pub status: StatusCode,
    pub version: Version,
    /// Empty where the fields are kept as they came (`raw`).
    pub headers: HeaderMap,
    pub raw: Option<RawFields>,
    /// A reason phrase other than the status code's own, passed on as is.
    pub reason: Option<Bytes>,
    pub decoder: Decoder,
    /// The upstream will keep the connection open after this answer.
    pub keep_alive: bool,
}

/// Parses the next final response head at the start of `buf`, taking its
/// bytes (and those of any interim 1xx answers before it). `Ok(None)`: the
/// head is not complete yet.
/// `raw_ok`: a plain head's fields may be kept as they came (`Head::raw`),
/// for an answer whose fields no rule reads.
pub fn head(buf: &mut BytesMut, method: &Method, raw_ok: bool) -> Result<Option<Head>, WireError> {
    loop {
        let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut []);
        let parsed = httparse::ParserConfig::default()
            .parse_response_with_uninit_headers(&mut response, buf, &mut fields)
            .map_err(WireError::Head)?;
        let httparse::Status::Complete(len) = parsed else {
            return Ok(None);
        };
        let code = response.code.unwrap_or_default();
        let status = StatusCode::from_u16(code).map_err(|_| WireError::Status)?;
        let version = match response.version {
            Some(1) => Version::HTTP_11,
            _ => Version::HTTP_10,
        };
        let reason = response
            .reason
            .filter(|r| Some(*r) != status.canonical_reason())
            .map(|r| Bytes::copy_from_slice(r.as_bytes()));
        let count = response.headers.len();
        let mut room = Room::new();
        let spans = room.spans(buf, response.headers);
        let bytes = buf.split_to(len).freeze();
        let mut seen = Seen::default();
        let kept = raw_ok.then(|| plain(&bytes, spans, &mut seen)).flatten();
        let (headers, raw) = match kept {
            Some(kept) => (HeaderMap::new(), Some(RawFields::new(bytes, kept))),
            None => {
                seen = Seen::default();
                (map(&bytes, spans, count, &mut seen)?, None)
            }
        };
        let Some(decoder) = decoder(status, version, &headers, seen, method)? else {
            // An interim answer (100 Continue...): the final one follows.
            continue;
        };
        // HTTP/1.1 stays open unless `close` is said; HTTP/1.0 closes unless
        // `keep-alive` is. Once any `Connection` field says close, it closes.
        let keep_alive = !seen.close && (version == Version::HTTP_11 || seen.keep_alive);
        return Ok(Some(Head {
            status,
            version,
            headers,
            raw,
            reason,
            decoder,
            keep_alive,
        }));
    }
}

/// The fields as a map, the hop's own `Connection` and `Keep-Alive` left out.
fn map(
    bytes: &Bytes,
    spans: &[Span],
    count: usize,
    seen: &mut Seen,
) -> Result<HeaderMap, WireError> {
    let mut headers = HeaderMap::with_capacity(count);
    for span in spans {
        let raw = &bytes[span.name()];
        if seen.hop(raw, &bytes[span.value()]) {
            continue;
        }
        let name = names::field_name(raw).map_err(|_| WireError::HeaderName)?;
        let value = HeaderValue::from_maybe_shared(bytes.slice(span.value()))
            .map_err(|_| WireError::HeaderValue)?;
        seen.note(&name, &value);
        headers.append(name, value);
    }
    Ok(headers)
}

/// A name seen before, but not just before: the map puts a name's values
/// together at its first place, so such a head is not written as it came.
fn regrouped(bytes: &Bytes, kept: &[Span], name: &[u8]) -> bool {
    let same = |span: &Span| {
        let other = &bytes[span.name()];
        other.len() == name.len() && other.eq_ignore_ascii_case(name)
    };
    match kept.split_last() {
        Some((last, before)) => !same(last) && before.iter().any(same),
        None => false,
    }
}

/// The places of a plain head's fields, the hop's own `Connection` and
/// `Keep-Alive` left out; `None` for a head that is not plain
/// (`raw_fields::keeps_out`, or Content-Length other than one plain field).
fn plain(bytes: &Bytes, spans: &[Span], seen: &mut Seen) -> Option<Vec<Span>> {
    let mut kept = Vec::with_capacity(spans.len());
    for span in spans {
        let (name, value) = (&bytes[span.name()], &bytes[span.value()]);
        if seen.hop(name, value) {
            continue;
        }
        if raw_fields::keeps_out(name) || regrouped(bytes, &kept, name) {
            return None;
        }
        if name.eq_ignore_ascii_case(b"content-length") {
            seen.lengths += 1;
            seen.length = plain_length(value);
            if seen.lengths > 1 || seen.length.is_none() {
                return None;
            }
        }
        kept.push(*span);
    }
    Some(kept)
}

/// The framing fields a head carries, noted as it is parsed: most heads
/// have only Content-Length, and looking the others up would hash their names.
#[derive(Debug, Default, Clone, Copy)]
struct Seen {
    transfer_encoding: bool,
    /// Content-Length fields, and the first one's number when it is a
    /// plain one (1 to 19 digits: always a u64).
    lengths: u32,
    length: Option<u64>,
    /// A `Connection` field said `close` / `keep-alive`.
    close: bool,
    keep_alive: bool,
}

impl Seen {
    fn note(&mut self, name: &HeaderName, value: &HeaderValue) {
        if *name == TRANSFER_ENCODING {
            self.transfer_encoding = true;
        } else if *name == CONTENT_LENGTH {
            self.lengths += 1;
            if self.lengths == 1 {
                self.length = plain_length(value.as_bytes());
            }
        }
    }

    /// The body's length by its Content-Length fields: read as they came
    /// when there is one plain field, else by `content_length`'s rules.
    fn length(&self, headers: &HeaderMap) -> Option<u64> {
        match (self.lengths, self.length) {
            (1, Some(n)) => Some(n),
            _ => content_length(headers),
        }
    }

    /// Notes what a `Connection` field says of this connection; true when
    /// the field is for this hop only and goes no further: a `Connection`
    /// that names no other field (nginx's `keep-alive` on every answer), or
    /// `Keep-Alive`. Dropped here, they cost no name, no entry and no strip
    /// (`headers::strip_hop_by_hop` still sees a `Connection` that names
    /// end-to-end fields, and removes those).
    fn hop(&mut self, name: &[u8], value: &[u8]) -> bool {
        if name.eq_ignore_ascii_case(b"keep-alive") {
            return true;
        }
        if !name.eq_ignore_ascii_case(b"connection") {
            return false;
        }
        let mut only_these = true;
        for token in value.split(|&b| b == b',').map(|t| t.trim_ascii()) {
            if token.eq_ignore_ascii_case(b"close") {
                self.close = true;
            } else if token.eq_ignore_ascii_case(b"keep-alive") {
                self.keep_alive = true;
            } else if !token.is_empty() {
                only_these = false;
            }
        }
        only_these
    }
}

/// RFC 9112 6.3, as hyper's client applies it. `None`: an interim answer.
fn decoder(
    status: StatusCode,
    version: Version,
    headers: &HeaderMap,
    seen: Seen,
    method: &Method,
) -> Result<Option<Decoder>, WireError> {
    match status.as_u16() {
        // Only an upgrade request may be answered 101, and those go
        // upstream on a connection of their own (`proxy::upgrade`).
        101 => return Err(WireError::Status),
        100..=199 => return Ok(None),
        204 | 304 => return Ok(Some(Decoder::Length(0))),
        _ if method == Method::HEAD => return Ok(Some(Decoder::Length(0))),
        _ => {}
    }
    if seen.transfer_encoding {
        if version == Version::HTTP_10 {
            return Err(WireError::Framing(
                "Transfer-Encoding in an HTTP/1.0 answer",
            ));
        }
        return Ok(Some(if chunked_last(headers) {
            Decoder::Chunked(Chunked::default())
        } else {
            Decoder::Eof
        }));
    }
    if seen.lengths == 0 {
        return Ok(Some(Decoder::Eof));
    }
    match seen.length(headers) {
        Some(n) if n <= u64::MAX - 2 => Ok(Some(Decoder::Length(n))),
        _ => Err(WireError::Framing("invalid Content-Length")),
    }
}

/// `chunked` is the last transfer coding.
fn chunked_last(headers: &HeaderMap) -> bool {
    headers
        .get_all(TRANSFER_ENCODING)
        .iter()
        .next_back()
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit(',').next())
        .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"))
}

/// Every Content-Length value, comma lists included, agreeing on one number.
pub fn content_length(headers: &HeaderMap) -> Option<u64> {
    let mut length = None;
    for value in headers.get_all(CONTENT_LENGTH) {
        for item in value.to_str().ok()?.split(',') {
            let item = item.trim().as_bytes();
            if item.is_empty() || !item.iter().all(u8::is_ascii_digit) {
                return None;
            }
            let n = item.iter().try_fold(0u64, |n, d| {
                n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
            })?;
            if length.is_some_and(|l| l != n) {
                return None;
            }
            length = Some(n);
        }
    }
    length
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(answer: &str) -> Head {
        let mut buf = BytesMut::from(answer);
        head(&mut buf, &Method::GET, false).unwrap().unwrap()
    }

    fn names(head: &Head) -> Vec<&str> {
        head.headers.keys().map(HeaderName::as_str).collect()
    }

    #[test]
    fn a_connection_field_for_this_hop_only_is_read_and_dropped() {
        let kept = parsed("HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nContent-Length: 0\r\n\r\n");
        assert!(kept.keep_alive);
        assert_eq!(names(&kept), ["content-length"]);
        let closed = parsed("HTTP/1.1 200 OK\r\nconnection: Close\r\nContent-Length: 0\r\n\r\n");
        assert!(!closed.keep_alive);
        assert_eq!(names(&closed), ["content-length"]);
        // HTTP/1.0 closes unless told otherwise; once told close, it closes.
        assert!(!parsed("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n").keep_alive);
        assert!(
            parsed("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n")
                .keep_alive
        );
        let both = "HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";
        assert!(!parsed(both).keep_alive);
    }

    #[test]
    fn a_plain_length_read_as_it_comes_agrees_with_the_full_rules() {
        let answers = [
            ("Content-Length: 3", Some(3)),
            (
                "Content-Length: 9999999999999999999",
                Some(9_999_999_999_999_999_999),
            ),
            // 20 digits, a list, repeats, spaces: the full rules decide.
            ("Content-Length: 00000000000000000003", Some(3)),
            ("Content-Length: 3, 3", Some(3)),
            ("Content-Length: 3\r\nContent-Length: 3", Some(3)),
            ("Content-Length: 3\r\nContent-Length: 4", None),
            ("Content-Length: 3, 4", None),
            ("Content-Length: x", None),
        ];
        for (field, length) in answers {
            let answer = format!("HTTP/1.1 200 OK\r\n{field}\r\n\r\n");
            let mut buf = BytesMut::from(answer.as_str());
            match (head(&mut buf, &Method::GET, false), length) {
                (Ok(Some(head)), Some(n)) => {
                    assert!(
                        matches!(head.decoder, Decoder::Length(m) if m == n),
                        "{field}"
                    )
                }
                (Err(WireError::Framing(_)), None) => {}
                (other, _) => panic!("{field}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_connection_field_that_names_other_fields_stays_for_the_strip() {
        let answer = "HTTP/1.1 200 OK\r\nConnection: close, X-Secret\r\nX-Secret: 1\r\nContent-Length: 0\r\n\r\n";
        let mut head = parsed(answer);
        assert!(!head.keep_alive);
        assert_eq!(names(&head), ["connection", "x-secret", "content-length"]);
        crate::http::headers::strip_hop_by_hop(&mut head.headers);
        assert_eq!(names(&head), ["content-length"]);
    }
}
