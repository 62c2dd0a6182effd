//! Holds a request head whose fields are kept as they came to the same
//! head parsed into the map (`head::parse` with `keep` off: the way every
//! head went before), for what the request's way reads and writes: the
//! guard's facts, the matchers' and gRPC's views, the proxy's own fields,
//! the map a reader asks for, and the head written upstream, byte for
//! byte. A head the parser does not keep must give the same map either way.

use bytes::BytesMut;
use http::header::{HeaderName, HeaderValue, HOST};
use http::Version;
use proptest::prelude::*;

use super::head::{self, Parsed, Taken};
use crate::http::fields::FieldFacts;
use crate::http::grpc;
use crate::http::headers::X_REQUEST_ID;
use crate::http::request_head::RequestHead;
use crate::upstream::http1::encode;

fn parse(request: &[u8], keep: bool) -> Option<Taken> {
    match head::parse(&mut BytesMut::from(request), 100, keep) {
        Parsed::Request(taken) => Some(taken),
        _ => None,
    }
}

/// The fields as (name, value) text, in order.
fn pairs(head: &RequestHead) -> Vec<(String, Vec<u8>)> {
    let parts = head.to_parts();
    let fields = parts.headers.iter();
    fields
        .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
        .collect()
}

/// Names the request's way reads through its views.
fn read_names() -> Vec<HeaderName> {
    [
        "host",
        "content-length",
        "content-type",
        "x-request-id",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-tag",
        "accept",
    ]
    .map(HeaderName::from_static)
    .to_vec()
}

/// The head as it goes upstream from the primary's try (`replace`: `None`)
/// or as a mirror's copy (the shadow Host in place): its framing and bytes.
fn written(
    head: &RequestHead,
    body: usize,
    replace: Option<&encode::Field>,
) -> Option<(encode::Framing, Vec<u8>)> {
    let parts = head.parts_unmapped();
    let (empty, exact) = (body == 0, Some(body as u64));
    match head.kept_fields() {
        Some(kept) => {
            let (framing, append) = encode::plan_kept(kept, &parts.method, empty, exact)?;
            let bytes = encode::head_kept(parts, kept, replace, append.as_ref());
            Some((framing, bytes))
        }
        None => {
            let (framing, append) = encode::plan(parts, empty, exact)?;
            let bytes = encode::head_borrowed(parts, replace, append.as_ref());
            Some((framing, bytes))
        }
    }
}

/// A mirror's copy's own field.
fn shadow_host() -> encode::Field {
    (HOST, HeaderValue::from_static("a-shadow"))
}

/// Whether the head was kept; panics on any difference.
fn agree(request: &[u8]) -> bool {
    let text = String::from_utf8_lossy(request);
    let mut was_kept = false;
    for secure in [false, true] {
        let (Some(mapped), Some(kept)) = (parse(request, false), parse(request, true)) else {
            assert_eq!(
                parse(request, false).is_some(),
                parse(request, true).is_some()
            );
            return false;
        };
        let (mut mapped, mut head) = (mapped.head, kept.head);
        assert!(mapped.kept_fields().is_none());
        was_kept = head.kept_fields().is_some();
        assert_eq!(pairs(&mapped), pairs(&head), "the map: {text:?}");
        mapped.ensure_request_id();
        head.ensure_request_id();
        // Fresh ids differ: the kept head's is given to the other, in place.
        let ids = |head: &RequestHead| head.fields().values(&X_REQUEST_ID).count();
        assert!(ids(&head) > 0 && ids(&mapped) == ids(&head), "{text:?}");
        let id = head.fields().get(&X_REQUEST_ID).map(<[u8]>::to_vec);
        if mapped.fields().get(&X_REQUEST_ID) != id.as_deref() {
            let id = HeaderValue::from_bytes(&id.unwrap()).unwrap();
            mapped.parts_mut().headers.insert(&X_REQUEST_ID, id);
        }
        let (a, b) = (
            FieldFacts::of(mapped.fields()),
            FieldFacts::of(head.fields()),
        );
        assert_eq!((a.bytes, a.host), (b.bytes, b.host), "facts: {text:?}");
        assert_eq!(format!("{:?}", a.present), format!("{:?}", b.present));
        for version in [Version::HTTP_10, Version::HTTP_11] {
            assert_eq!(a.framing_problem(version), b.framing_problem(version));
        }
        let (given, reordered) = (a.present.forwarded_for, a.present.hop_by_hop);
        let grpc = grpc::is_grpc_call(mapped.fields());
        assert_eq!(grpc, grpc::is_grpc_call(head.fields()), "{text:?}");
        // As `prepare` goes: this hop's fields out, then the proxy's in.
        if reordered {
            mapped.strip_hop_by_hop();
            head.strip_hop_by_hop();
        }
        let client = HeaderValue::from_static("192.0.2.7");
        mapped.append_forwarded(&client, secure, given);
        head.append_forwarded(&client, secure, given);
        for name in &read_names() {
            let a: Vec<_> = mapped.fields().values(name).collect();
            let b: Vec<_> = head.fields().values(name).collect();
            assert_eq!(a, b, "{name}: {text:?}");
        }
        // The map's `remove` moves its last field into the gap: once this
        // hop's fields are stripped, its order of fields of different names
        // is not the head's (RFC 9110 5.3: that order carries no meaning).
        // The kept form keeps the head's; each name's own values keep theirs.
        let by_name = |mut fields: Vec<(String, Vec<u8>)>| {
            if reordered {
                fields.sort_by(|x, y| x.0.cmp(&y.0));
            }
            fields
        };
        assert_eq!(
            by_name(pairs(&mapped)),
            by_name(pairs(&head)),
            "edited: {text:?}"
        );
        let body = kept.body.len();
        let show = |head: &RequestHead, replace: Option<&encode::Field>| {
            written(head, body, replace).map(|(framing, bytes)| {
                let text = String::from_utf8_lossy(&bytes).into_owned();
                let mut lines: Vec<&str> = text.split("\r\n").collect();
                if reordered {
                    // The request line stays first; the fields sort by name.
                    lines[1..].sort_by_key(|line| line.split(':').next().unwrap_or("").to_owned());
                }
                format!("{framing:?} {}", lines.join("\r\n"))
            })
        };
        assert_eq!(show(&mapped, None), show(&head, None), "written: {text:?}");
        let copy = Some(shadow_host());
        let (a, b) = (show(&mapped, copy.as_ref()), show(&head, copy.as_ref()));
        assert_eq!(a, b, "a copy written: {text:?}");
        assert_eq!(head.into_parts().headers, mapped.into_parts().headers);
    }
    was_kept
}

/// Heads the parser keeps as they came.
const KEPT: &[&[u8]] = &[
    b"GET / HTTP/1.1\r\nHost: reviews\r\n\r\n",
    b"GET /a?b=1 HTTP/1.1\r\nHost: reviews:8080\r\nAccept-Encoding: identity\r\n\r\n",
    b"GET / HTTP/1.1\r\nhost: a\r\nUser-Agent: curl/8\r\nAccept: */*\r\n\r\n",
    b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc",
    b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
    b"POST /p HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nX-Request-Id: given-1\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nX-Tag: 1\r\nx-tag: 2\r\nAccept: x\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nX-Obs: caf\xc3\xa9\t!\r\nX-Empty:\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\n!#$%&'*+-.^_`|~09AZaz: token\r\n\r\n",
    b"GET / HTTP/1.1\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\tb\r\n\r\n",
    // This hop's own fields: kept, and left out once stripped.
    b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nKeep-Alive: 5\r\nConnection: Keep-Alive\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nKeep-Alive: 5\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\nAccept: x\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, close,\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nConnection:\r\nConnection: close\r\n\r\n",
];

/// Heads the map's way edits or reads: not kept.
const NOT_KEPT: &[&[u8]] = &[
    b"GET / HTTP/1.1\r\nHost: a\r\nX-Request-Id:\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 10.0.0.1\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nx-forwarded-proto: https\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-Client-Cert: By=x\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close, X-Secret\r\nX-Secret: 1\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, x-tag\r\nX-Tag: 1\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\nClose: 1\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nProxy-Connection: keep-alive\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nProxy-Authorization: x\r\n\r\n",
    b"POST /s.S/M HTTP/1.1\r\nHost: a\r\nContent-Type: application/grpc\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nX-Tag: 1\r\nAccept: x\r\nx-tag: 2\r\n\r\n",
];

#[test]
fn kept_heads_read_and_write_as_the_map_does() {
    for (heads, kept) in [(KEPT, true), (NOT_KEPT, false)] {
        for request in heads {
            let text = String::from_utf8_lossy(request);
            assert_eq!(agree(request), kept, "{text:?}");
        }
    }
}

fn field() -> impl Strategy<Value = (String, String)> {
    let name = prop_oneof![
        Just("Host".to_owned()),
        Just("host".to_owned()),
        Just("Accept".to_owned()),
        Just("X-Tag".to_owned()),
        Just("x-tag".to_owned()),
        Just("X-Request-Id".to_owned()),
        Just("X-Forwarded-For".to_owned()),
        Just("X-Forwarded-Proto".to_owned()),
        Just("Content-Type".to_owned()),
        Just("Connection".to_owned()),
        Just("Keep-Alive".to_owned()),
        Just("Close".to_owned()),
        "[A-Za-z0-9!#$%&'*+.^_`|~-]{1,12}",
    ];
    let value = prop_oneof![
        Just("keep-alive".to_owned()),
        Just("close, Keep-Alive".to_owned()),
        Just("application/grpc".to_owned()),
        Just("text/plain".to_owned()),
        "[ -~\t]{0,16}",
        "[a-z\u{80}-\u{ff}]{0,6}",
    ];
    (name, value)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]
    #[test]
    fn any_head_reads_and_writes_alike_kept_and_in_the_map(
        method in prop_oneof![Just("GET"), Just("HEAD"), Just("POST"), Just("DELETE")],
        target in prop_oneof![Just("/"), Just("/a/b?c=d"), Just("http://h:1/x")],
        fields in proptest::collection::vec(field(), 0..8),
        body in prop_oneof![Just(""), Just("abc")],
    ) {
        let mut request = format!("{method} {target} HTTP/1.1\r\n");
        for (name, value) in &fields {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        if !body.is_empty() {
            request.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        request.push_str("\r\n");
        request.push_str(body);
        // Latin-1 bytes for the \u{80}-\u{ff} values: obs-text, not UTF-8.
        let bytes: Vec<u8> = request.chars().map(|c| c as u32 as u8).collect();
        agree(&bytes);
    }
}
