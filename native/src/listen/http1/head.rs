//! A client's request head, parsed with httparse into the `http` types the
//! request path uses, for the requests the connection's own session serves:
//! HTTP/1.1, no Transfer-Encoding, at most one plain Content-Length whose
//! body has arrived with the head, no upgrade, no CONNECT, no `Expect`, no
//! `TE`. Anything else is handed to hyper's connection with the bytes read so
//! far, and hyper (with the inspector) answers it as it always did: its
//! refusals, its 100-continue, its chunked decoding, its upgrades.

use std::mem::MaybeUninit;

use bytes::{Bytes, BytesMut};
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use http::{HeaderMap, Method, Request, Uri, Version};

use crate::http::headers::{
    X_FORWARDED_CLIENT_CERT, X_FORWARDED_FOR, X_FORWARDED_PROTO, X_REQUEST_ID,
};
use crate::http::raw_fields::RawFields;
use crate::http::request_head::{KeptFacts, RequestHead, ROOM_FOR_ADDED};
use crate::http::spans::{Room, Span};
use crate::http::{headers, names};

/// Header slots kept on the stack; a head with more is hyper's.
pub const MAX_FIELDS: usize = 128;

/// The longest request target hyper's server takes.
const MAX_TARGET: usize = u16::MAX as usize - 1;

/// What the start of the read buffer holds.
#[derive(Debug)]
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
    /// Its fields kept as they came where the head is plain (`Seen::plain`).
    pub head: RequestHead,
    pub body: Bytes,
    /// The client said `Connection: close`: the connection ends after the answer.
    pub close: bool,
}

/// Parses the request at the start of `buf`, taking its bytes when the
/// session serves it. `max_fields`: the listener's header count limit;
/// `keep`: a plain head's fields may be kept as they came (off, every
/// head's go into the map: the differential test's reference).
pub fn parse(buf: &mut BytesMut, max_fields: usize, keep: bool) -> Parsed {
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
    let (mut parts, ()) = Request::new(()).into_parts();
    parts.method = method;
    parts.uri = uri;
    parts.version = Version::HTTP_11;
    let raw = if keep {
        kept(&head, spans, &seen)
    } else {
        None
    };
    let head = match raw {
        Some(raw) => {
            let facts = KeptFacts {
                length: seen.length,
                ..seen.facts
            };
            RequestHead::kept(parts, raw, facts)
        }
        None => match mapped(&head, spans, count) {
            Some(headers) => {
                parts.headers = headers;
                RequestHead::new(parts)
            }
            None => return restore(buf, &head),
        },
    };
    Parsed::Request(Taken {
        head,
        body: buf.split_to(body as usize).freeze(),
        close: seen.close,
    })
}

/// The head's fields in a map; `None` where the map refuses one.
fn mapped(head: &Bytes, spans: &[Span], count: usize) -> Option<HeaderMap> {
    // Room for what the request's way adds (its id, x-forwarded-*): a map
    // that grows rehashes every field.
    let mut headers = HeaderMap::with_capacity(count + ROOM_FOR_ADDED);
    for span in spans {
        let name = names::field_name(&head[span.name()]).ok()?;
        let value = HeaderValue::from_maybe_shared(head.slice(span.value())).ok()?;
        headers.append(name, value);
    }
    Some(headers)
}

/// The head's fields kept as they came (`RequestHead::kept`), for a plain
/// head: no name that keeps it out (`Seen::plain`), none repeated apart
/// (the map puts a name's values together, at its first place).
fn kept(head: &Bytes, spans: &[Span], seen: &Seen) -> Option<RawFields> {
    if !seen.plain {
        return None;
    }
    for (i, span) in spans.iter().enumerate().skip(2) {
        let name = &head[span.name()];
        let same = |other: &Span| {
            let other = &head[other.name()];
            other.len() == name.len() && other.eq_ignore_ascii_case(name)
        };
        if !same(&spans[i - 1]) && spans[..i - 1].iter().any(same) {
            return None;
        }
    }
    Some(RawFields::new(head.clone(), spans.to_vec()))
}

/// A field that keeps a head from being kept as it came (`Seen::plain`).
fn keeps_out(name: &[u8], value: &[u8]) -> bool {
    let is = |other: &HeaderName| name.eq_ignore_ascii_case(other.as_str().as_bytes());
    match name.len() {
        // `Connection: keep-alive` (or `close`) and `Keep-Alive` only say
        // how this hop goes: a kept head leaves them out when it is
        // stripped. A `Connection` naming anything else removes that field
        // (`Seen::connection` reads its tokens).
        10 => false,
        // The field `Connection: close` would remove from the map.
        5 => name.eq_ignore_ascii_case(b"close"),
        12 if is(&X_REQUEST_ID) => !headers::usable_request_id(value),
        12 => is(&CONTENT_TYPE) && value.starts_with(b"application/grpc"),
        15 => is(&X_FORWARDED_FOR),
        17 => is(&X_FORWARDED_PROTO) || headers::spells_hop_by_hop(name),
        23 => is(&X_FORWARDED_CLIENT_CERT),
        _ => headers::spells_hop_by_hop(name),
    }
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
#[derive(Debug)]
struct Seen {
    length: Option<u64>,
    close: bool,
    /// What a kept head's way needs of its fields, noted as they go by.
    facts: KeptFacts,
    /// Fields noted so far.
    fields: u32,
    /// No field keeps the head from being kept as it came: none that the
    /// request's way edits or looks up by the map (hop-by-hop fields,
    /// `x-forwarded-*`, an `x-request-id` it replaces) and no gRPC call
    /// (whose way reads and edits its fields).
    plain: bool,
}

impl Default for Seen {
    fn default() -> Self {
        Self {
            length: None,
            close: false,
            facts: KeptFacts::default(),
            fields: 0,
            plain: true,
        }
    }
}

impl Seen {
    /// Notes one field; false: the request is hyper's (a field that asks
    /// for what only hyper's connection does, or framing it must refuse).
    /// Names are told apart by their length first: one compare for most.
    fn note(&mut self, name: &[u8], value: &[u8]) -> bool {
        let is = |other: &[u8]| name.eq_ignore_ascii_case(other);
        let facts = &mut self.facts;
        facts.bytes += name.len() + value.len() + 4;
        let at = self.fields;
        self.fields += 1;
        let served = match name.len() {
            4 if is(b"host") => {
                facts.hosts += 1;
                facts.host = facts.host.or(Some(at));
                true
            }
            2 => !is(b"te"),
            6 => !is(b"expect"),
            7 => !is(b"upgrade"),
            10 if is(b"connection") => {
                facts.hops = true;
                self.connection(value)
            }
            // This hop's own: `strip_hop_by_hop` drops it.
            10 if is(b"keep-alive") => {
                facts.hops = true;
                true
            }
            14 if is(b"content-length") => {
                let first = self.length.is_none();
                self.length = self.length.or(headers::plain_length(value));
                first && self.length.is_some()
            }
            17 => !is(b"transfer-encoding"),
            _ => true,
        };
        if self.plain && keeps_out(name, value) {
            self.plain = false;
        }
        // A kept head's `x-request-id` is a usable one (`keeps_out`).
        self.facts.request_id |= name.len() == 12 && is(b"x-request-id");
        served
    }

    /// `close` ends the connection after the answer (in a visible value,
    /// as `headers::says_close` reads it); `upgrade` is hyper's. A value
    /// naming anything but `keep-alive` and `close` names a field the map's
    /// strip would remove: the head is not kept. One pass over the tokens
    /// (four, one per question, cost 700 instructions, callgrind).
    fn connection(&mut self, value: &[u8]) -> bool {
        let (mut close, mut upgrade, mut other) = (false, false, false);
        for token in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
            match token.len() {
                0 => {}
                5 if token.eq_ignore_ascii_case(b"close") => close = true,
                7 if token.eq_ignore_ascii_case(b"upgrade") => upgrade = true,
                10 if token.eq_ignore_ascii_case(b"keep-alive") => {}
                _ => other = true,
            }
        }
        self.close |= close && headers::visible(value);
        self.plain &= !other;
        !upgrade
    }
}
