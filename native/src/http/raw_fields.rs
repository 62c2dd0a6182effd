//! An answer's fields kept as they came, for an answer whose fields only
//! pass through: no rule of the route reads or edits them, and the client
//! hop is the connection's own HTTP/1.1 session. Each field put into a
//! `HeaderMap` and written out again cost about 350 instructions (callgrind:
//! its name, its value's check, its hash and slot, its drop, its line);
//! kept as the head's bytes and where each field lies, it costs its line.
//!
//! Only a plain head is kept so: no framing field but at most one
//! Content-Length, no hop-by-hop field left, no `Trailer`. Anything else
//! goes through the map and the rules that edit it, as before.

use bytes::Bytes;
use http::header::{HeaderMap, HeaderValue, TRAILER};

use crate::http::spans::Span;
use crate::http::{headers, names};

/// The head's bytes and its fields' places in them, in order.
#[derive(Debug, Clone)]
pub struct RawFields {
    head: Bytes,
    spans: Vec<Span>,
}

impl RawFields {
    /// `spans` are places in `head`, as `spans::Room` gives them.
    pub fn new(head: Bytes, spans: Vec<Span>) -> Self {
        Self { head, spans }
    }

    /// Each field's name (as it came, any case) and value, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.spans
            .iter()
            .map(|span| (&self.head[span.name()], &self.head[span.value()]))
    }

    /// How many fields there are.
    pub fn count(&self) -> usize {
        self.spans.len()
    }

    /// Field `i`'s name (as it came) and value.
    pub fn field(&self, i: usize) -> (&[u8], &[u8]) {
        let span = &self.spans[i];
        (&self.head[span.name()], &self.head[span.value()])
    }

    /// The map the fields would have made: the same names, values and order.
    /// `None` where the map would refuse a field, which a head httparse
    /// accepted does not hold (the differential test says so too).
    pub fn to_map(&self) -> Option<HeaderMap> {
        self.to_map_with_room(0)
    }

    /// `to_map`, with room for `extra` fields more: a map that grows
    /// rehashes every field.
    pub fn to_map_with_room(&self, extra: usize) -> Option<HeaderMap> {
        self.to_map_where(extra, |_| true)
    }

    /// `to_map_with_room` of the fields whose name `keep` keeps.
    pub fn to_map_where(&self, extra: usize, keep: impl Fn(&[u8]) -> bool) -> Option<HeaderMap> {
        let mut map = HeaderMap::with_capacity(self.spans.len() + extra);
        for span in self
            .spans
            .iter()
            .filter(|span| keep(&self.head[span.name()]))
        {
            let name = names::field_name(&self.head[span.name()]).ok()?;
            let value = HeaderValue::from_maybe_shared(self.head.slice(span.value())).ok()?;
            map.append(name, value);
        }
        Some(map)
    }
}

/// A response body that may carry its answer's fields as they came: the
/// client session writes them from there when the map is empty.
pub trait CarriesRawFields {
    fn raw_fields(&self) -> Option<&RawFields> {
        None
    }

    fn take_raw_fields(&mut self) -> Option<RawFields> {
        None
    }
}

/// A field name that keeps a head out of the raw form: a hop-by-hop field
/// (Transfer-Encoding among them), or `Trailer` (whose values the writer
/// joins).
pub fn keeps_out(name: &[u8]) -> bool {
    headers::spells_hop_by_hop(name) || name.eq_ignore_ascii_case(TRAILER.as_str().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::headers::is_hop_by_hop;
    use http::header::{HeaderName, TRANSFER_ENCODING};

    #[test]
    fn what_keeps_a_head_out_is_every_hop_by_hop_name_and_trailer() {
        for name in crate::http::headers::HOP_BY_HOP
            .iter()
            .copied()
            .chain([&TRAILER])
        {
            let lower = name.as_str().as_bytes();
            assert!(keeps_out(lower), "{name}");
            assert!(keeps_out(&lower.to_ascii_uppercase()), "{name}");
        }
        assert!(keeps_out(TRANSFER_ENCODING.as_str().as_bytes()));
        for name in [
            "content-length",
            "date",
            "server",
            "x-upgrade",
            "trailers",
            "tee",
        ] {
            assert!(!keeps_out(name.as_bytes()), "{name}");
            assert!(!is_hop_by_hop(&HeaderName::from_static(name)), "{name}");
        }
    }
}
