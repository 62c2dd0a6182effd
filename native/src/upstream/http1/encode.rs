//! A request head in HTTP/1.1's wire form, with its body's framing decided
//! as hyper's client decides it (the differential test holds the two
//! together): no body, a length, or chunks; and the chunks themselves.

use std::io::Write;

use http::header::{self, HeaderName, HeaderValue};
use http::request::Parts;
use http::{HeaderMap, Method};

use crate::http::lowercase::extend_lowercase;
use crate::http::request_head::Kept;

/// How a request body goes on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Framing {
    /// Exactly this many bytes (0: none at all).
    Length(u64),
    /// Chunked; the trailer fields the `Trailer` header declares may follow.
    Chunked { trailers: Vec<HeaderName> },
}

/// Decides the body's framing and makes the head say it: an empty body is
/// sent with no framing header, a body of unknown length chunked (a GET,
/// HEAD or CONNECT without one: no body), a set `Transfer-Encoding` or
/// `Content-Length` respected.
pub fn framing(parts: &mut Parts, empty: bool, exact: Option<u64>) -> Framing {
    let headers = &mut parts.headers;
    if empty {
        headers.remove(header::TRANSFER_ENCODING);
        return Framing::Length(0);
    }
    let declared = super::parse::content_length(headers);
    if let http::header::Entry::Occupied(mut codings) = headers.entry(header::TRANSFER_ENCODING) {
        // A coding not ending in chunked gets chunked added to its last
        // field (a request's must end in it).
        if let Some(last) = codings.iter_mut().next_back() {
            if !is_chunked(last) {
                let mut value = last.as_bytes().to_vec();
                value.extend_from_slice(b", chunked");
                if let Ok(value) = HeaderValue::from_bytes(&value) {
                    *last = value;
                }
            }
        }
    } else if let Some(n) = declared {
        return Framing::Length(n);
    } else if let Some(n) = exact {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
        return Framing::Length(n);
    } else if matches!(parts.method, Method::GET | Method::HEAD | Method::CONNECT) {
        return Framing::Length(0);
    } else {
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
    }
    headers.remove(header::CONTENT_LENGTH);
    Framing::Chunked {
        trailers: declared_trailers(headers),
    }
}

fn is_chunked(value: &HeaderValue) -> bool {
    value
        .to_str()
        .ok()
        .and_then(|v| v.rsplit(',').next())
        .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"))
}

fn declared_trailers(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(header::TRAILER)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect()
}

/// A field a borrowed head is written with that it does not carry itself.
pub type Field = (HeaderName, HeaderValue);

/// `framing` for a head that is borrowed, not changed: the framing field it
/// lacks is returned, to be written after its own. `None` where `framing`
/// would remove or rewrite one of its fields (a Transfer-Encoding on an empty
/// body, a Content-Length beside chunking or not a number, a coding that does
/// not end in chunked): rare heads, sent as a copy that `framing` edits.
pub fn plan(parts: &Parts, empty: bool, exact: Option<u64>) -> Option<(Framing, Option<Field>)> {
    let headers = &parts.headers;
    // One scan of the names, with no hashing: the last Transfer-Encoding
    // value (a name's values come together, in order) and whether any
    // Content-Length is there. Two lookups cost 170 instructions per request
    // (callgrind).
    let (mut coding, mut has_length) = (None, false);
    for (name, value) in headers {
        if *name == header::TRANSFER_ENCODING {
            coding = Some(value);
        } else if *name == header::CONTENT_LENGTH {
            has_length = true;
        }
    }
    if empty {
        return coding.is_none().then_some((Framing::Length(0), None));
    }
    let chunked = || Framing::Chunked {
        trailers: declared_trailers(headers),
    };
    if let Some(last) = coding {
        return (!has_length && is_chunked(last)).then(|| (chunked(), None));
    }
    let declared = if has_length {
        super::parse::content_length(headers)
    } else {
        None
    };
    let is_bodiless = matches!(parts.method, Method::GET | Method::HEAD | Method::CONNECT);
    match (declared, exact) {
        (Some(n), _) => Some((Framing::Length(n), None)),
        // An invalid Content-Length that `framing` replaces or removes.
        (None, Some(_)) if has_length => None,
        (None, Some(n)) => Some((
            Framing::Length(n),
            Some((header::CONTENT_LENGTH, HeaderValue::from(n))),
        )),
        (None, None) if is_bodiless => Some((Framing::Length(0), None)),
        (None, None) if has_length => None,
        (None, None) => Some((
            chunked(),
            Some((
                header::TRANSFER_ENCODING,
                HeaderValue::from_static("chunked"),
            )),
        )),
    }
}

/// `plan` for a head whose fields are kept as they came: no
/// Transfer-Encoding (its parser hands those to hyper) and at most one
/// plain Content-Length. `None` for what only the map's way plans (a body
/// of unknown length, whose chunking may bring trailers).
pub fn plan_kept(
    kept: &Kept,
    method: &Method,
    empty: bool,
    exact: Option<u64>,
) -> Option<(Framing, Option<Field>)> {
    if empty {
        return Some((Framing::Length(0), None));
    }
    match (kept.facts().length, exact) {
        (Some(n), _) => Some((Framing::Length(n), None)),
        (None, Some(n)) => Some((
            Framing::Length(n),
            Some((header::CONTENT_LENGTH, HeaderValue::from(n))),
        )),
        (None, None) if matches!(*method, Method::GET | Method::HEAD | Method::CONNECT) => {
            Some((Framing::Length(0), None))
        }
        (None, None) => None,
    }
}

/// `head_borrowed` for a head whose fields are kept as they came: names in
/// lower case, as the map's are, `replace`'s value in place of that name's
/// own, then `append`. `replace` is a name the proxy never adds itself (a
/// copy's Host), so the map writes it after the added ones when the head
/// has none.
pub fn head_kept(
    parts: &Parts,
    kept: &Kept,
    replace: Option<&Field>,
    append: Option<&Field>,
) -> Vec<u8> {
    // Room for the request line and the proxy's own fields too: growing
    // the vector cost a copy of the head (330 instructions, callgrind).
    let mut out = Vec::with_capacity(320 + kept.facts().bytes);
    request_line(parts, &mut out);
    let mut replaced = false;
    for (name, value) in kept.own() {
        let value = match replace {
            Some((own, new)) if name.eq_ignore_ascii_case(own.as_str().as_bytes()) => {
                if replaced {
                    continue;
                }
                replaced = true;
                new.as_bytes()
            }
            _ => value,
        };
        extend_lowercase(&mut out, name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    for (name, value) in kept.added_fields() {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    if let Some((name, value)) = replace.filter(|_| !replaced) {
        field(name, value, &mut out);
    }
    if let Some((name, value)) = append {
        field(name, value, &mut out);
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// The request line of a head made the upstream's (origin-form target).
fn request_line(parts: &Parts, out: &mut Vec<u8>) {
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
}

/// What `head` writes for a copy of `parts` made the upstream's (origin-form
/// target, HTTP/1.1) and edited with `insert(replace)`, then `insert(append)`:
/// `replace`'s value in place of that name's own (or after the fields when it
/// has none), `append` last. No copy of the head is made.
pub fn head_borrowed(parts: &Parts, replace: Option<&Field>, append: Option<&Field>) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + parts.headers.len() * 40);
    request_line(parts, &mut out);
    let mut replaced = false;
    for (name, value) in &parts.headers {
        match replace {
            Some((own, _)) if own == name && replaced => continue,
            Some((own, new)) if own == name => {
                field(own, new, &mut out);
                replaced = true;
            }
            _ => field(name, value, &mut out),
        }
    }
    if let Some((name, value)) = replace.filter(|_| !replaced) {
        field(name, value, &mut out);
    }
    if let Some((name, value)) = append {
        field(name, value, &mut out);
    }
    out.extend_from_slice(b"\r\n");
    out
}

fn field(name: &HeaderName, value: &HeaderValue, out: &mut Vec<u8>) {
    out.extend_from_slice(name.as_str().as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Writes the request line and the header fields, names in lower case.
pub fn head(parts: &Parts) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + parts.headers.len() * 40);
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    match parts.uri.path_and_query() {
        Some(pq) if parts.uri.scheme().is_none() => out.extend_from_slice(pq.as_str().as_bytes()),
        _ => {
            let _ = write!(out, "{}", parts.uri);
        }
    }
    out.extend_from_slice(b" HTTP/1.1\r\n");
    fields(&parts.headers, &mut out);
    out.extend_from_slice(b"\r\n");
    out
}

fn fields(headers: &HeaderMap, out: &mut Vec<u8>) {
    for (name, value) in headers {
        field(name, value, out);
    }
}

/// A chunk's size line.
pub fn chunk_size(len: usize, out: &mut Vec<u8>) {
    let _ = write!(out, "{len:X}\r\n");
}

/// The last chunk, with the trailer fields that were declared and may be
/// trailers at all (RFC 9110 6.5.1).
pub fn last_chunk(trailers: Option<&HeaderMap>, allowed: &[HeaderName], out: &mut Vec<u8>) {
    out.extend_from_slice(b"0\r\n");
    if let Some(trailers) = trailers {
        for (name, value) in trailers {
            if allowed.contains(name) && may_trail(name) {
                out.extend_from_slice(name.as_str().as_bytes());
                out.extend_from_slice(b": ");
                out.extend_from_slice(value.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
        }
    }
    out.extend_from_slice(b"\r\n");
}

fn may_trail(name: &HeaderName) -> bool {
    !matches!(
        *name,
        header::AUTHORIZATION
            | header::CACHE_CONTROL
            | header::CONTENT_ENCODING
            | header::CONTENT_LENGTH
            | header::CONTENT_RANGE
            | header::CONTENT_TYPE
            | header::HOST
            | header::MAX_FORWARDS
            | header::SET_COOKIE
            | header::TRAILER
            | header::TRANSFER_ENCODING
            | header::TE
    )
}
