//! Field names as peers usually spell them, known without parsing. http's
//! `HeaderName::from_bytes` lowercases every name into a scratch buffer and
//! then matches it: about 115 instructions per field (callgrind), seven or so
//! fields per request on its two hops, and an allocation for a name that is
//! not one of its standard ones. Most peers write a name in one of two
//! spellings (`Content-Type`, `content-type`): those bytes are compared as
//! they came, and anything else goes to `from_bytes`, whose answer is the same
//! (a differential test below holds both to it).

use http::header::{self, HeaderName, InvalidHeaderName};

/// The name `raw` spells, as `HeaderName::from_bytes(raw)` gives it.
pub fn field_name(raw: &[u8]) -> Result<HeaderName, InvalidHeaderName> {
    match known(raw) {
        Some(name) => Ok(name.clone()),
        None => HeaderName::from_bytes(raw),
    }
}

/// A name spelled as in `SPELLED`: its usual form, or lower case. Only
/// the names of the same length are looked at, first byte first.
fn known(raw: &[u8]) -> Option<&'static HeaderName> {
    let first = *raw.first()?;
    let same_length: &[Spelling] = match raw.len() {
        4 => &LENGTH_4,
        6 => &LENGTH_6,
        7 => &LENGTH_7,
        10 => &LENGTH_10,
        12 => &LENGTH_12,
        13 => &LENGTH_13,
        14 => &LENGTH_14,
        15 => &LENGTH_15,
        16 => &LENGTH_16,
        17 => &LENGTH_17,
        _ => return None,
    };
    same_length
        .iter()
        .find(|(usual, lower, _)| {
            (first == usual[0] || first == lower[0]) && (raw == *usual || raw == *lower)
        })
        .map(|(_, _, name)| name)
}

type Spelling = (&'static [u8], &'static [u8], HeaderName);

// The fields most requests and answers carry, by length, most frequent first.
static LENGTH_4: [Spelling; 4] = [
    (b"Host", b"host", header::HOST),
    (b"Date", b"date", header::DATE),
    (b"ETag", b"etag", header::ETAG),
    (b"Vary", b"vary", header::VARY),
];
static LENGTH_6: [Spelling; 4] = [
    (b"Server", b"server", header::SERVER),
    (b"Accept", b"accept", header::ACCEPT),
    (b"Cookie", b"cookie", header::COOKIE),
    (b"Origin", b"origin", header::ORIGIN),
];
static LENGTH_7: [Spelling; 2] = [
    (b"Expires", b"expires", header::EXPIRES),
    (b"Referer", b"referer", header::REFERER),
];
static LENGTH_10: [Spelling; 3] = [
    (b"Connection", b"connection", header::CONNECTION),
    (b"User-Agent", b"user-agent", header::USER_AGENT),
    (b"Set-Cookie", b"set-cookie", header::SET_COOKIE),
];
static LENGTH_12: [Spelling; 2] = [
    (b"Content-Type", b"content-type", header::CONTENT_TYPE),
    (
        b"X-Request-Id",
        b"x-request-id",
        HeaderName::from_static("x-request-id"),
    ),
];
static LENGTH_13: [Spelling; 4] = [
    (b"Last-Modified", b"last-modified", header::LAST_MODIFIED),
    (b"Accept-Ranges", b"accept-ranges", header::ACCEPT_RANGES),
    (b"Cache-Control", b"cache-control", header::CACHE_CONTROL),
    (b"Authorization", b"authorization", header::AUTHORIZATION),
];
static LENGTH_14: [Spelling; 1] = [(b"Content-Length", b"content-length", header::CONTENT_LENGTH)];
static LENGTH_15: [Spelling; 3] = [
    (
        b"Accept-Encoding",
        b"accept-encoding",
        header::ACCEPT_ENCODING,
    ),
    (
        b"Accept-Language",
        b"accept-language",
        header::ACCEPT_LANGUAGE,
    ),
    (
        b"X-Forwarded-For",
        b"x-forwarded-for",
        HeaderName::from_static("x-forwarded-for"),
    ),
];
static LENGTH_16: [Spelling; 1] = [(
    b"Content-Encoding",
    b"content-encoding",
    header::CONTENT_ENCODING,
)];
static LENGTH_17: [Spelling; 2] = [
    (
        b"Transfer-Encoding",
        b"transfer-encoding",
        header::TRANSFER_ENCODING,
    ),
    (
        b"X-Forwarded-Proto",
        b"x-forwarded-proto",
        HeaderName::from_static("x-forwarded-proto"),
    ),
];

/// Every spelling known, for the tests.
#[cfg(test)]
static SPELLED: [&[Spelling]; 10] = [
    &LENGTH_4, &LENGTH_6, &LENGTH_7, &LENGTH_10, &LENGTH_12, &LENGTH_13, &LENGTH_14, &LENGTH_15,
    &LENGTH_16, &LENGTH_17,
];

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn same(raw: &[u8]) {
        let ours = field_name(raw).map_err(|_| ());
        let theirs = HeaderName::from_bytes(raw).map_err(|_| ());
        assert_eq!(ours, theirs, "{:?}", String::from_utf8_lossy(raw));
    }

    #[test]
    fn every_spelling_is_the_name_from_bytes_gives() {
        for (usual, lower, name) in SPELLED.iter().copied().flatten() {
            assert_eq!(*lower, name.as_str().as_bytes(), "lower case is the name");
            assert!(usual.eq_ignore_ascii_case(lower));
            assert!(known(usual).is_some() && known(lower).is_some());
            same(usual);
            same(lower);
            // Other spellings take the long way, to the same name.
            let upper = usual.to_ascii_uppercase();
            same(&upper);
        }
        for raw in [
            &b""[..],
            b"Host ",
            b"Ho st",
            b"hosT",
            b"x",
            b"Content-Length:",
        ] {
            same(raw);
        }
    }

    proptest! {
        #[test]
        fn any_bytes_get_from_bytes_answer(raw in proptest::collection::vec(any::<u8>(), 0..20)) {
            same(&raw);
        }

        #[test]
        fn any_spelling_of_a_usual_name_gets_from_bytes_answer(
            pick in 0..26usize,
            flips in proptest::collection::vec(any::<bool>(), 20),
        ) {
            let all: Vec<&Spelling> = SPELLED.iter().copied().flatten().collect();
            let raw: Vec<u8> = all[pick % all.len()].0.iter().zip(&flips)
                .map(|(b, &up)| if up { b.to_ascii_uppercase() } else { b.to_ascii_lowercase() })
                .collect();
            same(&raw);
        }
    }
}
