//! A request's head on its way through the proxy: its `http` parts, with the
//! fields in the map, or, for a plain HTTP/1.1 head from the connection's
//! own session, kept as they came with the proxy's own fields beside them.
//! The map cost about 2.5k instructions per request (callgrind: each field
//! named, checked, hashed, written out and dropped, and the proxy's three
//! fields hashed in) for a head that most requests forward unread.
//!
//! Whatever edits the fields, or reads them beyond the views below, asks
//! for the map (`parts_mut`): the kept fields are put into it, then the
//! proxy's own, in the order the map's way sets them. So the two forms mean
//! one head, and a differential test holds their bytes together.

use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Method, Uri, Version};

use crate::http::headers::{self, X_FORWARDED_FOR, X_FORWARDED_PROTO, X_REQUEST_ID};
use crate::http::raw_fields::RawFields;

/// The proxy's own fields, in the order the map's way sets them: the
/// request id (`ensure_request_id`, first), then `x-forwarded-*` (`prepare`).
static ADDED_NAMES: [&HeaderName; 3] = [&X_REQUEST_ID, &X_FORWARDED_FOR, &X_FORWARDED_PROTO];

/// A request head, its fields in the map or kept. Boxed whole: the head is
/// moved from the parser through the session's steps into the request's
/// future and down its way (an `async fn` holds its arguments twice), and
/// each move copied its 232 bytes (eight copies a request, callgrind). A
/// kept head had a box for its fields already; that box now holds it all.
#[derive(Debug)]
pub struct RequestHead(Box<Head>);

#[derive(Debug)]
struct Head {
    /// Its map is empty while the fields are kept.
    parts: Parts,
    kept: Option<Kept>,
}

/// What the parser of a kept head learnt of its fields as it went, so that
/// nothing looks for them again.
#[derive(Debug, Default, Clone, Copy)]
pub struct KeptFacts {
    /// The fields' size as HTTP/1.1 writes them (`name: value\r\n`).
    pub bytes: usize,
    /// Where the first Host field is, and how many there are.
    pub host: Option<u32>,
    pub hosts: u32,
    /// Its one plain Content-Length.
    pub length: Option<u64>,
    /// It carries a (usable) `x-request-id`.
    pub request_id: bool,
    /// It carries `Connection` naming only `keep-alive` or `close`, or
    /// `Keep-Alive`: fields of this hop alone, which `strip_hop_by_hop`
    /// drops (a kept head carries no other hop-by-hop field).
    pub hops: bool,
}

/// A plain head's fields as they came, and the proxy's own (`ADDED_NAMES`).
///
/// Kept only where none of the added names but a usable `x-request-id`, no
/// hop-by-hop field but this hop's own (`KeptFacts::hops`), no
/// `x-forwarded-client-cert`, no gRPC content type and no name repeated
/// apart is in the head (the session's parser decides): so each added field
/// goes after the head's own, as the map's `insert` puts a name it does not
/// hold, and the fields' order is the map's.
#[derive(Debug, Clone)]
pub struct Kept {
    raw: RawFields,
    facts: KeptFacts,
    /// This hop's own fields are gone (`RequestHead::strip_hop_by_hop`):
    /// left out of every view, map and write from then on.
    stripped: bool,
    /// A fresh request id, in place (a `HeaderValue` was an allocation).
    request_id: Option<[u8; headers::REQUEST_ID_LENGTH]>,
    /// `x-forwarded-for`'s value, and whether the client's hop was TLS.
    forwarded: Option<(HeaderValue, bool)>,
}

/// Room for the fields the request's way may add before it goes upstream
/// (the proxy's own and a few of the rules'): a map that grows rehashes
/// every field.
pub const ROOM_FOR_ADDED: usize = ADDED_NAMES.len() + 3;

/// One of this hop's own fields a kept head may carry (`KeptFacts::hops`):
/// `Connection` or `Keep-Alive`, both ten bytes long.
fn is_hop(name: &[u8]) -> bool {
    name.len() == 10 && headers::spells_hop_by_hop(name)
}

/// A copy of `parts` (`Parts` itself is not `Clone`) with `headers`.
fn copy_with(parts: &Parts, headers: HeaderMap) -> Parts {
    let (mut copy, ()) = http::Request::new(()).into_parts();
    copy.method = parts.method.clone();
    copy.uri = parts.uri.clone();
    copy.version = parts.version;
    copy.headers = headers;
    copy
}

/// A copy of a head in the map.
pub fn copy_of(parts: &Parts) -> Parts {
    copy_with(parts, parts.headers.clone())
}

impl Kept {
    /// A field of the head's own still shown: all of them, but this hop's
    /// once stripped.
    fn shows(&self, name: &[u8]) -> bool {
        !(self.stripped && is_hop(name))
    }

    /// The proxy's field `i` (of `ADDED_NAMES`), where it is set.
    fn added(&self, i: usize) -> Option<&[u8]> {
        match i {
            0 => self.request_id.as_ref().map(|id| &id[..]),
            1 => self.forwarded.as_ref().map(|(value, _)| value.as_bytes()),
            _ => {
                let secure = self.forwarded.as_ref()?.1;
                Some(if secure { b"https" } else { b"http" })
            }
        }
    }

    /// The head's own fields only (names as they came), without this hop's
    /// once stripped.
    pub fn own(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.raw.iter().filter(|(name, _)| self.shows(name))
    }

    /// The proxy's fields only (names in lower case).
    pub fn added_fields(&self) -> impl Iterator<Item = (&'static HeaderName, &[u8])> {
        (0..ADDED_NAMES.len()).filter_map(|i| Some((ADDED_NAMES[i], self.added(i)?)))
    }

    pub fn facts(&self) -> &KeptFacts {
        &self.facts
    }

    /// This hop's own fields are gone (`RequestHead::strip_hop_by_hop`).
    pub fn stripped(&self) -> bool {
        self.stripped
    }

    /// The first Host value.
    pub fn host(&self) -> Option<&[u8]> {
        Some(self.raw.field(self.facts.host? as usize).1)
    }

    /// The values of `name`, in order, as the map's `get_all` gives them.
    pub fn values<'a>(&'a self, name: &'a HeaderName) -> KeptValues<'a> {
        KeptValues {
            kept: self,
            wanted: name.as_str().as_bytes(),
            at: 0,
        }
    }

    fn to_map(&self) -> HeaderMap {
        // httparse takes no name or value the map refuses (the raw
        // differential tests hold it over arbitrary bytes).
        let mut map = self
            .raw
            .to_map_where(ROOM_FOR_ADDED, |name| self.shows(name))
            .expect("httparse takes no field the map refuses");
        for (name, value) in self.added_fields() {
            let value = HeaderValue::from_bytes(value).expect("the proxy's own values are valid");
            map.insert(name.clone(), value);
        }
        map
    }
}

/// `Kept::values`: a named type, so that `Values` holds it with no box.
#[derive(Debug)]
pub struct KeptValues<'a> {
    kept: &'a Kept,
    wanted: &'a [u8],
    /// The next field to look at: the head's own, then the added ones.
    at: usize,
}

impl<'a> Iterator for KeptValues<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let own = self.kept.raw.count();
        while self.at < own + ADDED_NAMES.len() {
            let at = self.at;
            self.at += 1;
            let (name, value) = if at < own {
                let (name, value) = self.kept.raw.field(at);
                if !self.kept.shows(name) {
                    continue;
                }
                (name, value)
            } else {
                let Some(value) = self.kept.added(at - own) else {
                    continue;
                };
                (ADDED_NAMES[at - own].as_str().as_bytes(), value)
            };
            if name.len() == self.wanted.len() && name.eq_ignore_ascii_case(self.wanted) {
                return Some(value);
            }
        }
        None
    }
}

/// `Fields::values`, in either form.
#[derive(Debug)]
pub enum Values<'a> {
    Map(http::header::ValueIter<'a, HeaderValue>),
    Kept(KeptValues<'a>),
}

impl<'a> Iterator for Values<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        match self {
            Values::Map(values) => values.next().map(HeaderValue::as_bytes),
            Values::Kept(values) => values.next(),
        }
    }
}

/// The fields as a reader sees them, in either form.
#[derive(Debug, Clone, Copy)]
pub enum Fields<'a> {
    Map(&'a HeaderMap),
    Kept(&'a Kept),
}

impl<'a> Fields<'a> {
    /// The values of `name`, in order (`HeaderMap::get_all`).
    pub fn values(self, name: &'a HeaderName) -> Values<'a> {
        match self {
            Fields::Map(map) => Values::Map(map.get_all(name).iter()),
            Fields::Kept(kept) => Values::Kept(kept.values(name)),
        }
    }

    /// The first value of `name` (`HeaderMap::get`).
    pub fn get(self, name: &'a HeaderName) -> Option<&'a [u8]> {
        match self {
            Fields::Map(map) => map.get(name).map(HeaderValue::as_bytes),
            Fields::Kept(kept) => kept.values(name).next(),
        }
    }
}

impl RequestHead {
    pub fn new(parts: Parts) -> Self {
        Self(Box::new(Head { parts, kept: None }))
    }

    /// A head whose fields are kept as they came (`parts` has none in its
    /// map), with what its parser learnt of them. Only for a head `Kept`
    /// allows: the session's parser decides.
    pub fn kept(parts: Parts, raw: RawFields, facts: KeptFacts) -> Self {
        debug_assert!(parts.headers.is_empty());
        Self(Box::new(Head {
            parts,
            kept: Some(Kept {
                raw,
                facts,
                stripped: false,
                request_id: None,
                forwarded: None,
            }),
        }))
    }

    pub fn method(&self) -> &Method {
        &self.0.parts.method
    }

    pub fn uri(&self) -> &Uri {
        &self.0.parts.uri
    }

    pub fn version(&self) -> Version {
        self.0.parts.version
    }

    /// The parts with no fields in the map while they are kept: for the
    /// method, target and version, and the writers of the kept form.
    pub fn parts_unmapped(&self) -> &Parts {
        &self.0.parts
    }

    pub fn kept_fields(&self) -> Option<&Kept> {
        self.0.kept.as_ref()
    }

    pub fn fields(&self) -> Fields<'_> {
        match &self.0.kept {
            Some(kept) => Fields::Kept(kept),
            None => Fields::Map(&self.0.parts.headers),
        }
    }

    /// The parts with every field in the map, put there now if kept.
    pub fn parts_mut(&mut self) -> &mut Parts {
        if let Some(kept) = self.0.kept.take() {
            self.0.parts.headers = kept.to_map();
        }
        &mut self.0.parts
    }

    pub fn into_parts(mut self) -> Parts {
        self.parts_mut();
        self.0.parts
    }

    /// A copy of a head kept as it came, for a mirror's copy, going to
    /// `uri` in `version`: its fields are this head's bytes, shared (not
    /// copied, not put in a map). `None` for a head in the map.
    pub fn kept_copy(&self, uri: Uri, version: Version) -> Option<RequestHead> {
        let kept = self.0.kept.as_ref()?;
        let mut parts = copy_with(&self.0.parts, HeaderMap::new());
        parts.uri = uri;
        parts.version = version;
        Some(RequestHead(Box::new(Head {
            parts,
            kept: Some(kept.clone()),
        })))
    }

    /// A copy with every field in the map, the head left as it is.
    pub fn to_parts(&self) -> Parts {
        match &self.0.kept {
            Some(kept) => copy_with(&self.0.parts, kept.to_map()),
            None => copy_of(&self.0.parts),
        }
    }

    /// Keeps a usable `x-request-id` or sets a fresh one
    /// (`headers::ensure_request_id`). A kept head's own is usable (its
    /// parser keeps no other).
    pub fn ensure_request_id(&mut self) {
        match &mut self.0.kept {
            Some(kept) if !kept.facts.request_id => {
                kept.request_id = Some(headers::fresh_request_id_bytes());
            }
            Some(_) => {}
            None => headers::ensure_request_id(&mut self.0.parts.headers),
        }
    }

    /// Removes the hop-by-hop fields (`headers::strip_hop_by_hop`). A kept
    /// head's are this hop's own only, which name no other field: they are
    /// left out from here on.
    pub fn strip_hop_by_hop(&mut self) {
        match &mut self.0.kept {
            Some(kept) => kept.stripped = true,
            None => headers::strip_hop_by_hop(&mut self.0.parts.headers),
        }
    }

    /// `headers::append_forwarded`; a kept head carries no `x-forwarded-for`
    /// (`given` is false for it).
    pub fn append_forwarded(&mut self, client: &HeaderValue, secure: bool, given: bool) {
        match &mut self.0.kept {
            Some(kept) if !given => kept.forwarded = Some((client.clone(), secure)),
            _ => headers::append_forwarded(&mut self.parts_mut().headers, client, secure, given),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::spans::Room;
    use bytes::Bytes;

    /// A head of `fields` in both forms.
    fn both(fields: &[(&str, &str)]) -> (RequestHead, RequestHead) {
        let mut text = String::from("GET /a?b HTTP/1.1\r\n");
        for (name, value) in fields {
            text.push_str(&format!("{name}: {value}\r\n"));
        }
        text.push_str("\r\n");
        let bytes = Bytes::from(text);
        let mut slots = vec![httparse::EMPTY_HEADER; fields.len()];
        let mut parsed = httparse::Request::new(&mut slots);
        parsed.parse(&bytes).unwrap();
        let mut room = Room::new();
        let spans = room.spans(&bytes, parsed.headers).to_vec();
        let raw = RawFields::new(bytes.clone(), spans);
        let (mut parts, ()) = http::Request::new(()).into_parts();
        parts.uri = Uri::from_static("/a?b");
        let mut mapped = parts;
        let (mut parts, ()) = http::Request::new(()).into_parts();
        parts.uri = Uri::from_static("/a?b");
        mapped.headers = raw.to_map().unwrap();
        let facts = KeptFacts {
            host: fields
                .iter()
                .position(|(n, _)| n.eq_ignore_ascii_case("host"))
                .map(|i| i as u32),
            request_id: fields
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case("x-request-id")),
            ..KeptFacts::default()
        };
        (
            RequestHead::new(mapped),
            RequestHead::kept(parts, raw, facts),
        )
    }

    fn pairs(map: &HeaderMap) -> Vec<(String, String)> {
        map.iter()
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_owned()))
            .collect()
    }

    #[test]
    fn the_kept_form_maps_to_what_the_map_form_holds() {
        let client = HeaderValue::from_static("10.0.0.7");
        for fields in [
            &[("Host", "a"), ("Accept", "*/*")][..],
            &[
                ("host", "a"),
                ("X-Request-Id", "given"),
                ("x-tag", "1"),
                ("X-Tag", "2"),
            ],
            &[],
        ] {
            let (mut mapped, mut kept) = both(fields);
            for head in [&mut mapped, &mut kept] {
                head.ensure_request_id();
                head.append_forwarded(&client, true, false);
            }
            // The fresh ids differ; the rest is the same, in the same order.
            let id = kept.fields().get(&X_REQUEST_ID).unwrap().to_vec();
            mapped
                .parts_mut()
                .headers
                .insert(&X_REQUEST_ID, HeaderValue::from_bytes(&id).unwrap());
            let from_kept = kept.to_parts().headers;
            assert_eq!(
                pairs(&from_kept),
                pairs(&mapped.parts_mut().headers),
                "{fields:?}"
            );
            assert_eq!(pairs(&kept.parts_mut().headers), pairs(&from_kept));
            assert!(kept.kept_fields().is_none(), "mapped once asked");
        }
    }

    #[test]
    fn views_read_both_forms_alike() {
        let (mut mapped, mut kept) = both(&[("Host", "a"), ("x-tag", "1"), ("X-TAG", "2")]);
        let client = HeaderValue::from_static("10.0.0.7");
        for head in [&mut mapped, &mut kept] {
            head.append_forwarded(&client, false, false);
        }
        let tag = HeaderName::from_static("x-tag");
        for name in [&tag, &http::header::HOST, &X_FORWARDED_PROTO, &X_REQUEST_ID] {
            let a: Vec<_> = mapped.fields().values(name).collect();
            let b: Vec<_> = kept.fields().values(name).collect();
            assert_eq!(a, b, "{name}");
            assert_eq!(mapped.fields().get(name), kept.fields().get(name), "{name}");
        }
        assert_eq!(kept.fields().get(&X_FORWARDED_PROTO), Some(&b"http"[..]));
    }
}
