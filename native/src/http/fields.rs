//! What a request's fields say that the first phases need, read in one pass
//! of them: looking each name up would hash it (the guard's three lookups and
//! sum cost a thousand instructions per request, callgrind; `prepare`'s four
//! more for fields most requests do not carry).

use http::header::{self, HeaderMap};

use crate::http::headers::{is_hop_by_hop, X_FORWARDED_CLIENT_CERT, X_FORWARDED_FOR};
use crate::http::local_reply::LocalReply;
use crate::http::request_head::{Fields, Kept};

#[derive(Debug, Default)]
pub struct FieldFacts<'a> {
    /// The fields' size as HTTP/1.1 writes them (`name: value\r\n`).
    pub bytes: usize,
    /// The first Host field's value.
    pub host: Option<&'a [u8]>,
    hosts: u32,
    coding: Option<&'a [u8]>,
    codings: u32,
    length: bool,
    pub present: Present,
}

/// Fields whose absence spares `prepare` a lookup each.
#[derive(Debug, Default, Clone, Copy)]
pub struct Present {
    /// A hop-by-hop field (one of `headers::HOP_BY_HOP`).
    pub hop_by_hop: bool,
    pub upgrade: bool,
    pub forwarded_for: bool,
    pub client_cert: bool,
}

impl<'a> FieldFacts<'a> {
    pub fn of(fields: Fields<'a>) -> Self {
        match fields {
            Fields::Map(map) => Self::of_map(map),
            Fields::Kept(kept) => Self::of_kept(kept),
        }
    }

    fn of_map(headers: &'a HeaderMap) -> Self {
        let mut facts = Self::default();
        for (name, value) in headers {
            facts.bytes += name.as_str().len() + value.len() + 4;
            let value = value.as_bytes();
            if *name == header::HOST {
                facts.host(value);
            } else if *name == header::CONTENT_LENGTH {
                facts.length = true;
            } else if *name == X_FORWARDED_FOR {
                facts.present.forwarded_for = true;
            } else if *name == X_FORWARDED_CLIENT_CERT {
                facts.present.client_cert = true;
            } else if is_hop_by_hop(name) {
                facts.hop_by_hop(
                    *name == header::TRANSFER_ENCODING,
                    *name == header::UPGRADE,
                    value,
                );
            }
        }
        facts
    }

    /// `of_map` for the fields as they came, from what their parser noted
    /// (`KeptFacts`) and the proxy's own: a kept head carries no field
    /// that `Present` names but this hop's own, and no Transfer-Encoding.
    fn of_kept(kept: &'a Kept) -> Self {
        let facts = kept.facts();
        let added: usize = kept
            .added_fields()
            .map(|(name, value)| name.as_str().len() + value.len() + 4)
            .sum();
        Self {
            bytes: facts.bytes + added,
            host: kept.host(),
            hosts: facts.hosts,
            length: facts.length.is_some(),
            present: Present {
                hop_by_hop: facts.hops && !kept.stripped(),
                ..Present::default()
            },
            ..Self::default()
        }
    }

    fn host(&mut self, value: &'a [u8]) {
        self.hosts += 1;
        self.host = self.host.or(Some(value));
    }

    fn hop_by_hop(&mut self, coding: bool, upgrade: bool, value: &'a [u8]) {
        self.present.hop_by_hop = true;
        if coding {
            self.codings += 1;
            self.coding = self.coding.or(Some(value));
        } else if upgrade {
            self.present.upgrade = true;
        }
    }

    /// What hyper accepts and a proxy must not pass on: a transfer coding
    /// other than one `chunked` (hyper only checks the last), Content-Length
    /// beside Transfer-Encoding (hyper drops it; checked again here in case
    /// that changes), and a missing or repeated Host on HTTP/1.1 (RFC 9112
    /// 3.2: 400).
    pub fn framing_problem(&self, version: http::Version) -> Option<LocalReply> {
        if let Some(first) = self.coding {
            if self.codings > 1 || !first.eq_ignore_ascii_case(b"chunked") {
                return Some(LocalReply::UnsupportedTransferEncoding);
            }
            if self.length {
                return Some(LocalReply::AmbiguousFraming);
            }
        }
        match self.hosts {
            0 if version == http::Version::HTTP_11 => Some(LocalReply::BadHost),
            0 | 1 => None,
            _ => Some(LocalReply::BadHost),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::test_support::map;
    use http::header::HeaderValue;

    #[test]
    fn framing_and_host_problems_are_named() {
        use http::Version;
        let ok = map(&[("host", "a"), ("transfer-encoding", "chunked")]);
        assert_eq!(
            FieldFacts::of(Fields::Map(&ok)).framing_problem(Version::HTTP_11),
            None
        );
        let ok = map(&[("host", "a"), ("transfer-encoding", "Chunked")]);
        assert_eq!(
            FieldFacts::of(Fields::Map(&ok)).framing_problem(Version::HTTP_11),
            None
        );
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
                FieldFacts::of(Fields::Map(&h)).framing_problem(Version::HTTP_11),
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
            FieldFacts::of(Fields::Map(&both)).framing_problem(Version::HTTP_11),
            Some(LocalReply::AmbiguousFraming)
        );
        let two_hosts = map(&[("host", "a"), ("host", "b")]);
        assert_eq!(
            FieldFacts::of(Fields::Map(&two_hosts)).framing_problem(Version::HTTP_10),
            Some(LocalReply::BadHost)
        );
        assert_eq!(
            FieldFacts::of(Fields::Map(&HeaderMap::new())).framing_problem(Version::HTTP_11),
            Some(LocalReply::BadHost)
        );
        assert_eq!(
            FieldFacts::of(Fields::Map(&HeaderMap::new())).framing_problem(Version::HTTP_10),
            None
        );
    }

    #[test]
    fn present_says_which_fields_a_lookup_would_find() {
        let plain =
            FieldFacts::of(Fields::Map(&map(&[("host", "a"), ("x-request-id", "1")]))).present;
        assert!(!(plain.hop_by_hop || plain.upgrade || plain.forwarded_for || plain.client_cert));
        let all = map(&[
            ("Connection", "upgrade"),
            ("upgrade", "websocket"),
            ("X-Forwarded-For", "10.0.0.1"),
            ("x-forwarded-client-cert", "By=a"),
        ]);
        let all = FieldFacts::of(Fields::Map(&all)).present;
        assert!(all.hop_by_hop && all.upgrade && all.forwarded_for && all.client_cert);
        for hop in [
            "keep-alive",
            "proxy-connection",
            "te",
            "transfer-encoding",
            "proxy-authorization",
        ] {
            assert!(
                FieldFacts::of(Fields::Map(&map(&[(hop, "x")])))
                    .present
                    .hop_by_hop,
                "{hop}"
            );
        }
    }
}
