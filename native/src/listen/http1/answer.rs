//! The head of an answer to a request the connection's own session served,
//! written as hyper's server writes it (the differential test holds the two
//! together): status line (the upstream's own reason phrase kept), fields in
//! the map's order with lower-case names, the framing hyper would choose for
//! the body (its Content-Length, or chunked when its length is unknown), and
//! `date` unless the answer has one.

use http::header::{
    HeaderMap, HeaderName, CONNECTION, CONTENT_LENGTH, DATE, TRAILER, TRANSFER_ENCODING,
};
use http::response::Parts;
use http::{Method, StatusCode};

use super::date;
use crate::http::headers;
use crate::http::lowercase::extend_lowercase;
use crate::http::raw_fields::RawFields;

/// How the answer's body goes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Exactly this many bytes (0: none, whatever the body holds).
    Length(u64),
    /// Chunked; trailers are dropped (the session serves no request with `TE`).
    Chunked,
}

/// What the head says of what follows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    pub framing: Framing,
    /// The connection closes after this answer.
    pub last: bool,
}

/// The body as hyper's dispatcher sees it before the head is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyLength {
    /// Already at its end.
    Empty,
    Known(u64),
    Unknown,
}

/// Why an answer cannot be written as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unwritable {
    /// A 1xx: hyper's server writes a bare 500 instead (`refusal`), and closes.
    Interim,
    /// Framing fields that contradict each other or the body: hyper's server
    /// writes nothing and closes. `dst` may hold part of the head: drop it.
    Fields,
}

/// Writes the head of `parts` into `dst`.
pub fn head(
    parts: &Parts,
    method: &Method,
    body: BodyLength,
    dst: &mut Vec<u8>,
) -> Result<Written, Unwritable> {
    write(parts, method, body, dst, |chunks_allowed, dst| {
        fields(parts, method, body, chunks_allowed, dst)
    })
}

/// `head`, for an answer whose fields were kept as they came (a plain head,
/// `http::raw_fields`; its map is empty): the bytes `head` writes from the
/// map those fields make, which `raw_differential` holds it to.
pub fn head_raw(
    parts: &Parts,
    raw: &RawFields,
    method: &Method,
    body: BodyLength,
    dst: &mut Vec<u8>,
) -> Result<Written, Unwritable> {
    write(parts, method, body, dst, |_, dst| {
        raw_fields(raw, method, body, dst)
    })
}

/// The status line, the fields `write_fields` writes (told whether the
/// body may be chunked), the framing no field set, `date` when no field
/// had one, and the end of the head.
fn write(
    parts: &Parts,
    method: &Method,
    body: BodyLength,
    dst: &mut Vec<u8>,
    write_fields: impl FnOnce(bool, &mut Vec<u8>) -> Result<Fields, Unwritable>,
) -> Result<Written, Unwritable> {
    let status = parts.status;
    if status.is_informational() {
        return Err(Unwritable::Interim);
    }
    status_line(parts, dst);
    let chunks_allowed = can_chunk(method, status);
    let said = write_fields(chunks_allowed, dst)?;
    let mut framing = match said.framing {
        Some(framing) => framing,
        None => implicit(method, status, body, chunks_allowed, dst),
    };
    if !chunks_allowed {
        framing = Framing::Length(0);
    }
    if !said.date {
        dst.extend_from_slice(b"date: ");
        date::extend(dst);
        dst.extend_from_slice(b"\r\n");
    }
    dst.extend_from_slice(b"\r\n");
    Ok(Written {
        framing,
        last: said.close,
    })
}

/// The map of fields kept as they came with `added` after them: what the
/// session writes when it adds a field itself (`closing`). `None` where the
/// map would refuse a field, which a head httparse took does not hold.
pub fn merged(raw: &RawFields, added: HeaderMap) -> Option<HeaderMap> {
    let mut map = raw.to_map()?;
    let mut name = None;
    for (each, value) in added {
        name = each.or(name);
        map.append(name.clone()?, value);
    }
    Some(map)
}

/// `fields` for a plain head kept as it came: no Transfer-Encoding, no
/// `Connection`, no `Trailer`, at most one Content-Length (written as it
/// came, the framing taken from the body as `fields` takes it).
fn raw_fields(
    raw: &RawFields,
    method: &Method,
    body: BodyLength,
    dst: &mut Vec<u8>,
) -> Result<Fields, Unwritable> {
    let mut said = Fields::default();
    for (name, value) in raw.iter() {
        if name.eq_ignore_ascii_case(b"content-length") {
            let n = match body {
                BodyLength::Known(known) => known,
                BodyLength::Unknown => from_digits(value).ok_or(Unwritable::Fields)?,
                BodyLength::Empty if *method == Method::HEAD => 0,
                BodyLength::Empty => continue,
            };
            said.framing = Some(Framing::Length(n));
        } else {
            said.date |= name.eq_ignore_ascii_case(b"date");
        }
        // Lower case, as the map's names are.
        extend_lowercase(dst, name);
        dst.extend_from_slice(b": ");
        dst.extend_from_slice(value);
        dst.extend_from_slice(b"\r\n");
    }
    Ok(said)
}

/// What the answer's own fields said.
#[derive(Default)]
struct Fields {
    /// Set by a framing field written as it came.
    framing: Option<Framing>,
    close: bool,
    date: bool,
}

/// Writes the answer's fields, in the map's order, as hyper's server does.
fn fields(
    parts: &Parts,
    method: &Method,
    body: BodyLength,
    chunks_allowed: bool,
    dst: &mut Vec<u8>,
) -> Result<Fields, Unwritable> {
    let mut said = Fields::default();
    let mut length = None;
    // A field whose values share one line (Content-Length, Transfer-Encoding,
    // Connection, Trailer): its line is open until another name comes.
    let mut open: Option<&HeaderName> = None;
    let mut must_chunk = false;
    for (name, value) in &parts.headers {
        if open.is_some_and(|o| o != name) {
            end_line(dst, must_chunk);
            open = None;
        }
        let joins = open.is_some();
        let framing_field = *name == CONTENT_LENGTH || *name == TRANSFER_ENCODING;
        if framing_field && said.framing.is_some() && !joins {
            return Err(Unwritable::Fields);
        }
        if *name == CONTENT_LENGTH {
            let n = match body {
                BodyLength::Known(known) => known,
                BodyLength::Unknown => {
                    let n = from_digits(value.as_bytes()).ok_or(Unwritable::Fields)?;
                    match length {
                        Some(prev) if prev != n => return Err(Unwritable::Fields),
                        _ => n,
                    }
                }
                // No body to send: written as it is for HEAD, else hyper
                // writes `content-length: 0` after the fields.
                BodyLength::Empty if *method == Method::HEAD => {
                    said.framing = Some(Framing::Length(0));
                    field(dst, name, value.as_bytes());
                    continue;
                }
                BodyLength::Empty => continue,
            };
            if !joins {
                length = Some(n);
                said.framing = Some(Framing::Length(n));
                start_line(dst, name, value.as_bytes());
                open = Some(name);
            }
            continue;
        }
        if *name == TRANSFER_ENCODING {
            if !chunks_allowed {
                continue;
            }
            must_chunk = !ends_chunked(value.as_bytes());
            said.framing = Some(Framing::Chunked);
        } else if *name == CONNECTION {
            said.close |= headers::says_close(value.as_bytes());
        } else if *name == TRAILER {
            if !chunks_allowed {
                continue;
            }
        } else {
            said.date |= *name == DATE;
            field(dst, name, value.as_bytes());
            continue;
        }
        if joins {
            dst.extend_from_slice(b", ");
            dst.extend_from_slice(value.as_bytes());
        } else {
            start_line(dst, name, value.as_bytes());
            open = Some(name);
        }
    }
    if open.is_some() {
        end_line(dst, must_chunk);
    }
    Ok(said)
}

/// The framing hyper's server chooses when no field set it, and the field
/// it writes for it.
fn implicit(
    method: &Method,
    status: StatusCode,
    body: BodyLength,
    chunks_allowed: bool,
    dst: &mut Vec<u8>,
) -> Framing {
    match body {
        BodyLength::Unknown if chunks_allowed => {
            dst.extend_from_slice(b"transfer-encoding: chunked\r\n");
            Framing::Chunked
        }
        // Only HEAD, CONNECT, 1xx, 204 and 304 cannot be chunked; none of
        // them has a body either.
        BodyLength::Unknown => Framing::Length(0),
        BodyLength::Empty | BodyLength::Known(0) => {
            if can_have_length(method, status) && *method != Method::HEAD {
                dst.extend_from_slice(b"content-length: 0\r\n");
            }
            Framing::Length(0)
        }
        BodyLength::Known(n) if can_have_length(method, status) => {
            dst.extend_from_slice(b"content-length: ");
            dst.extend_from_slice(itoa(n, &mut [0; 20]));
            dst.extend_from_slice(b"\r\n");
            Framing::Length(n)
        }
        BodyLength::Known(_) => Framing::Length(0),
    }
}

/// What hyper's server writes for a 1xx answer: a bare 500, and the
/// connection closes.
pub fn refusal(dst: &mut Vec<u8>) {
    dst.extend_from_slice(b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\ndate: ");
    date::extend(dst);
    dst.extend_from_slice(b"\r\n\r\n");
}

fn status_line(parts: &Parts, dst: &mut Vec<u8>) {
    let reason = parts.extensions.get::<hyper::ext::ReasonPhrase>();
    if parts.status == StatusCode::OK && reason.is_none() {
        dst.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
        return;
    }
    dst.extend_from_slice(b"HTTP/1.1 ");
    dst.extend_from_slice(parts.status.as_str().as_bytes());
    dst.push(b' ');
    match reason {
        Some(reason) => dst.extend_from_slice(reason.as_bytes()),
        None => {
            let canonical = parts.status.canonical_reason().unwrap_or("<none>");
            dst.extend_from_slice(canonical.as_bytes());
        }
    }
    dst.extend_from_slice(b"\r\n");
}

/// A body may be chunked (and so may be at all).
fn can_chunk(method: &Method, status: StatusCode) -> bool {
    !(*method == Method::HEAD
        || *method == Method::CONNECT && status.is_success()
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED)
}

fn can_have_length(method: &Method, status: StatusCode) -> bool {
    !(status.is_informational()
        || *method == Method::CONNECT && status.is_success()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED)
}

fn field(dst: &mut Vec<u8>, name: &HeaderName, value: &[u8]) {
    start_line(dst, name, value);
    dst.extend_from_slice(b"\r\n");
}

fn start_line(dst: &mut Vec<u8>, name: &HeaderName, value: &[u8]) {
    dst.extend_from_slice(name.as_str().as_bytes());
    dst.extend_from_slice(b": ");
    dst.extend_from_slice(value);
}

/// Ends a joined line. hyper adds `chunked` where the last Transfer-Encoding
/// value did not end with it (and does so for whichever joined line ends
/// after that; the same here, byte for byte).
fn end_line(dst: &mut Vec<u8>, must_chunk: bool) {
    if must_chunk {
        dst.extend_from_slice(b", chunked\r\n");
    } else {
        dst.extend_from_slice(b"\r\n");
    }
}

/// A Content-Length value as hyper's server reads one in an answer: digits
/// only, within a u64, however many (leading zeros too). Wider than
/// `headers::plain_length`, so that the bytes written stay hyper's.
fn from_digits(value: &[u8]) -> Option<u64> {
    if value.is_empty() {
        return None;
    }
    value.iter().try_fold(0u64, |n, &d| {
        d.is_ascii_digit()
            .then_some(())
            .and_then(|()| n.checked_mul(10)?.checked_add(u64::from(d - b'0')))
    })
}

/// The last coding of a Transfer-Encoding value is `chunked`.
fn ends_chunked(value: &[u8]) -> bool {
    headers::visible(value)
        && value
            .rsplit(|&b| b == b',')
            .next()
            .is_some_and(|t| t.trim_ascii().eq_ignore_ascii_case(b"chunked"))
}

/// `n` in decimal, in `buf`.
pub fn itoa(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[at..];
        }
    }
}

/// The answer of a connection that closes after it says so (hyper's server
/// does when the request asked, or a drain came), unless it already does.
pub fn closing(fields: &mut http::HeaderMap) {
    match fields.entry(CONNECTION) {
        http::header::Entry::Occupied(mut entry) => {
            if !entry.iter().any(|v| headers::says_close(v.as_bytes())) {
                entry.append(http::HeaderValue::from_static("close"));
            }
        }
        http::header::Entry::Vacant(entry) => {
            entry.insert(http::HeaderValue::from_static("close"));
        }
    }
}
