//! A client's request head, parsed with httparse into the `http` types the
//! request path uses, for the requests the connection's own session serves:
//! HTTP/1.1, no Transfer-Encoding, at most one plain Content-Length whose
//! body has arrived with the head, no upgrade, no CONNECT, no `Expect`, no
//! `TE`. Anything else is handed to hyper's connection with the bytes read so
//! far, and hyper (with the inspector) answers it as it always did: its
//! refusals, its 100-continue, its chunked decoding, its upgrades.

use std::mem::MaybeUninit;

use bytes::{Bytes, BytesMut};
use http::header::HeaderValue;
use http::request::Parts;
use http::{HeaderMap, Method, Request, Uri, Version};

use crate::http::spans::Room;
use crate::http::{headers, names};

/// Header slots kept on the stack; a head with more is hyper's.
pub const MAX_FIELDS: usize = 128;

/// The longest request target hyper's server takes.
const MAX_TARGET: usize = u16::MAX as usize - 1;

/// Fields the request's way may add before it goes upstream.
const ADDED_FIELDS: usize = 6;

/// What the start of the read buffer holds.
#[derive(Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "returned once per request, never kept: a box would allocate for each"
)]
pub enum Parsed {
    /// A request the session serves, with its whole body (taken from the buffer).
    Request(Taken),
    /// The head is not complete yet.
    Partial,
    /// Not one for the session (or not valid): hyper's from here on.
    HandOff,
}

#[derive(Debug)]
pub struct Taken {
    pub parts: Parts,
    pub body: Bytes,
    /// The client said `Connection: close`: the connection ends after the answer.
    pub close: bool,
}

/// Parses the request at the start of `buf`, taking its bytes when the
/// session serves it. `max_fields`: the listener's header count limit.
pub fn parse(buf: &mut BytesMut, max_fields: usize) -> Parsed {
    let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_FIELDS];
    let mut request = httparse::Request::new(&mut []);
    let slots = &mut fields[..max_fields.min(MAX_FIELDS)];
    let len = match request.parse_with_uninit_headers(buf, slots) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::HandOff,
    };
    if request.version != Some(1) {
        return Parsed::HandOff;
    }
    let Some(method) = request
        .method
        .and_then(|m| Method::from_bytes(m.as_bytes()).ok())
    else {
        return Parsed::HandOff;
    };
    let (Some(target), count) = (request.path, request.headers.len()) else {
        return Parsed::HandOff;
    };
    // hyper answers these 414.
    if target.len() > MAX_TARGET {
        return Parsed::HandOff;
    }
    let mut seen = Seen::default();
    let mut room = Room::new();
    let note = |name: &[u8], value: &[u8]| seen.note(name, value);
    let Some(spans) = room.spans_checked(buf, request.headers, note) else {
        return Parsed::HandOff;
    };
    let base = buf.as_ptr() as usize;
    let target = target.as_ptr() as usize - base..target.as_ptr() as usize - base + target.len();
    let body = seen.length.unwrap_or(0);
    if method == Method::CONNECT {
        return Parsed::HandOff;
    }
    // The body must have come with the head: a longer one is streamed by hyper.
    if ((buf.len() - len) as u64) < body {
        return Parsed::HandOff;
    }
    let head = buf.split_to(len).freeze();
    let Ok(uri) = Uri::from_maybe_shared(head.slice(target)) else {
        // Not this session's to refuse: hyper answers it (400) as before.
        return restore(buf, &head);
    };
    // Room for what the request's way adds (its id, x-forwarded-*): a map
    // that grows rehashes every field.
    let mut headers = HeaderMap::with_capacity(count + ADDED_FIELDS);
    for span in spans {
        let Ok(name) = names::field_name(&head[span.name()]) else {
            return restore(buf, &head);
        };
        let Ok(value) = HeaderValue::from_maybe_shared(head.slice(span.value())) else {
            return restore(buf, &head);
        };
        headers.append(name, value);
    }
    let body = buf.split_to(body as usize).freeze();
    let (mut parts, ()) = Request::new(()).into_parts();
    parts.method = method;
    parts.uri = uri;
    parts.version = Version::HTTP_11;
    parts.headers = headers;
    Parsed::Request(Taken {
        parts,
        body,
        close: seen.close,
    })
}

/// Puts a head taken from `buf` back in front of it, for hyper to read: a
/// copy, on the way to hyper's refusal only.
fn restore(buf: &mut BytesMut, head: &Bytes) -> Parsed {
    let mut whole = BytesMut::with_capacity(head.len() + buf.len());
    whole.extend_from_slice(head);
    whole.extend_from_slice(buf);
    *buf = whole;
    Parsed::HandOff
}

/// What the fields say of the request's framing and of the connection.
#[derive(Debug, Default)]
struct Seen {
    length: Option<u64>,
    close: bool,
}

impl Seen {
    /// Notes one field; false: the request is hyper's (a field that asks
    /// for what only hyper's connection does, or framing it must refuse).
    /// Names are told apart by their length first: one compare for most.
    fn note(&mut self, name: &[u8], value: &[u8]) -> bool {
        let is = |other: &[u8]| name.eq_ignore_ascii_case(other);
        match name.len() {
            2 => !is(b"te"),
            6 => !is(b"expect"),
            7 => !is(b"upgrade"),
            10 if is(b"connection") => self.connection(value),
            14 if is(b"content-length") => {
                let first = self.length.is_none();
                self.length = self.length.or(headers::plain_length(value));
                first && self.length.is_some()
            }
            17 => !is(b"transfer-encoding"),
            _ => true,
        }
    }

    /// `close` ends the connection after the answer; `upgrade` is hyper's.
    fn connection(&mut self, value: &[u8]) -> bool {
        self.close |= headers::says_close(value);
        !headers::lists(value, b"upgrade")
    }
}
