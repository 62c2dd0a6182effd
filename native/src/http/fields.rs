//! What a request's fields say that the first phases need, read in one pass
//! of them: looking each name up would hash it (the guard's three lookups and
//! sum cost a thousand instructions per request, callgrind; `prepare`'s four
//! more for fields most requests do not carry).

use http::header::{self, HeaderMap, HeaderValue};

use crate::http::headers::{is_hop_by_hop, X_FORWARDED_CLIENT_CERT, X_FORWARDED_FOR};
use crate::http::local_reply::LocalReply;

#[derive(Debug, Default)]
pub struct FieldFacts<'a> {
    /// The fields' size as HTTP/1.1 writes them (`name: value\r\n`).
    pub bytes: usize,
    /// The first Host field.
    pub host: Option<&'a HeaderValue>,
    hosts: u32,
    coding: Option<&'a HeaderValue>,
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
    pub fn of(headers: &'a HeaderMap) -> Self {
        let mut facts = Self::default();
        for (name, value) in headers {
            facts.bytes += name.as_str().len() + value.len() + 4;
            if *name == header::HOST {
                facts.hosts += 1;
                facts.host = facts.host.or(Some(value));
            } else if *name == header::CONTENT_LENGTH {
                facts.length = true;
            } else if *name == X_FORWARDED_FOR {
                facts.present.forwarded_for = true;
            } else if *name == X_FORWARDED_CLIENT_CERT {
                facts.present.client_cert = true;
            } else if is_hop_by_hop(name) {
                facts.present.hop_by_hop = true;
                if *name == header::TRANSFER_ENCODING {
                    facts.codings += 1;
                    facts.coding = facts.coding.or(Some(value));
                } else if *name == header::UPGRADE {
                    facts.present.upgrade = true;
                }
            }
        }
        facts
    }

    /// What hyper accepts and a proxy must not pass on: a transfer coding
    /// other than one `chunked` (hyper only checks the last), Content-Length
    /// beside Transfer-Encoding (hyper drops it; checked again here in case
    /// that changes), and a missing or repeated Host on HTTP/1.1 (RFC 9112
    /// 3.2: 400).
    pub fn framing_problem(&self, version: http::Version) -> Option<LocalReply> {
        if let Some(first) = self.coding {
            if self.codings > 1 || !first.as_bytes().eq_ignore_ascii_case(b"chunked") {
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

    #[test]
    fn framing_and_host_problems_are_named() {
        use http::Version;
        let ok = map(&[("host", "a"), ("transfer-encoding", "chunked")]);
        assert_eq!(FieldFacts::of(&ok).framing_problem(Version::HTTP_11), None);
        let ok = map(&[("host", "a"), ("transfer-encoding", "Chunked")]);
        assert_eq!(FieldFacts::of(&ok).framing_problem(Version::HTTP_11), None);
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
                FieldFacts::of(&h).framing_problem(Version::HTTP_11),
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
            FieldFacts::of(&both).framing_problem(Version::HTTP_11),
            Some(LocalReply::AmbiguousFraming)
        );
        let two_hosts = map(&[("host", "a"), ("host", "b")]);
        assert_eq!(
            FieldFacts::of(&two_hosts).framing_problem(Version::HTTP_10),
            Some(LocalReply::BadHost)
        );
        assert_eq!(
            FieldFacts::of(&HeaderMap::new()).framing_problem(Version::HTTP_11),
            Some(LocalReply::BadHost)
        );
        assert_eq!(
            FieldFacts::of(&HeaderMap::new()).framing_problem(Version::HTTP_10),
            None
        );
    }

    #[test]
    fn present_says_which_fields_a_lookup_would_find() {
        let plain = FieldFacts::of(&map(&[("host", "a"), ("x-request-id", "1")])).present;
        assert!(!(plain.hop_by_hop || plain.upgrade || plain.forwarded_for || plain.client_cert));
        let all = map(&[
            ("Connection", "upgrade"),
            ("upgrade", "websocket"),
            ("X-Forwarded-For", "10.0.0.1"),
            ("x-forwarded-client-cert", "By=a"),
        ]);
        let all = FieldFacts::of(&all).present;
        assert!(all.hop_by_hop && all.upgrade && all.forwarded_for && all.client_cert);
        for hop in [
            "keep-alive",
            "proxy-connection",
            "te",
            "transfer-encoding",
            "proxy-authorization",
        ] {
            assert!(
                FieldFacts::of(&map(&[(hop, "x")])).present.hop_by_hop,
                "{hop}"
            );
        }
    }
}
