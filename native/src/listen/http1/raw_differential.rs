//! Holds the answer head written from fields kept as they came
//! (`answer::head_raw`) to the one written from the map those fields make
//! (`answer::head`), byte for byte, for the same upstream answer: every
//! answer in the table and generated ones, each for GET, HEAD and POST and
//! every kind of body length. An answer the parser does not keep raw must
//! give the map it gives without the raw form.

use bytes::{Bytes, BytesMut};
use http::{Method, Response};
use proptest::prelude::*;

use super::answer::{self, BodyLength};
use crate::upstream::http1::parse;

/// The written head, or how it could not be written, with `date` values
/// masked (the writer's own `date` comes from a per-second clock).
fn written(result: Result<answer::Written, answer::Unwritable>, out: &[u8]) -> String {
    let text = String::from_utf8_lossy(out).into_owned();
    let masked: Vec<String> = text
        .split("\r\n")
        .map(|line| match line.get(..6) {
            Some(start) if start.eq_ignore_ascii_case("date: ") => "date: *".to_owned(),
            _ => line.to_owned(),
        })
        .collect();
    format!("{result:?} {}", masked.join("\r\n"))
}

fn parts_of(head: &parse::Head) -> http::response::Parts {
    let mut response = Response::new(());
    *response.status_mut() = head.status;
    *response.version_mut() = head.version;
    *response.headers_mut() = head.headers.clone();
    if let Some(reason) = &head.reason {
        if let Ok(reason) = hyper::ext::ReasonPhrase::try_from(reason.clone()) {
            response.extensions_mut().insert(reason);
        }
    }
    response.into_parts().0
}

/// Whether the answer was kept raw; panics on any difference.
fn agree(answer: &[u8]) -> bool {
    let methods = [Method::GET, Method::HEAD, Method::POST];
    let lengths = [
        BodyLength::Empty,
        BodyLength::Known(0),
        BodyLength::Known(5),
        BodyLength::Unknown,
    ];
    let parse = |method: &Method, raw_ok| {
        let mut buf = BytesMut::from(answer);
        parse::head(&mut buf, method, raw_ok)
    };
    let mut kept = false;
    for method in &methods {
        let (mapped, raw) = match (parse(method, false), parse(method, true)) {
            (Ok(Some(mapped)), Ok(Some(raw))) => (mapped, raw),
            (mapped, raw) => {
                // Refused, or not whole: alike either way.
                assert_eq!(format!("{mapped:?}"), format!("{raw:?}"), "{answer:?}");
                return false;
            }
        };
        assert!(mapped.raw.is_none());
        let Some(fields) = &raw.raw else {
            assert_eq!(mapped.headers, raw.headers, "not kept raw: the same map");
            continue;
        };
        kept = true;
        assert!(raw.headers.is_empty(), "kept raw: no map");
        assert_eq!(
            answer::merged(fields, http::HeaderMap::new()).as_ref(),
            Some(&mapped.headers),
            "the map the kept fields make"
        );
        for length in lengths {
            let (mut by_map, mut by_raw) = (Vec::new(), Vec::new());
            let from_map = answer::head(&parts_of(&mapped), method, length, &mut by_map);
            let from_raw = answer::head_raw(&parts_of(&raw), fields, method, length, &mut by_raw);
            assert_eq!(
                written(from_map, &by_map),
                written(from_raw, &by_raw),
                "{method} {length:?} {:?}",
                String::from_utf8_lossy(answer)
            );
        }
    }
    kept
}

#[test]
fn heads_written_from_kept_fields_are_those_written_from_the_map() {
    let answers: &[&str] = &[
        "HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Mon, 07 Dec 2026 18:00:00 GMT\r\nContent-Type: text/plain\r\nContent-Length: 3\r\nConnection: keep-alive\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n",
        "HTTP/1.1 200 OK\r\ncontent-length: 3\r\nKeep-Alive: timeout=5\r\nconnection: Close\r\n\r\n",
        "HTTP/1.1 200 OK\r\nX-A: 1\r\n\r\n",
        "HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n",
        "HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\nContent-Length: 10\r\n\r\n",
        "HTTP/1.1 404 Nicht Gefunden\r\nContent-Length: 0\r\n\r\n",
        "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 1\r\n\r\n",
        "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n",
        "HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nDATE: x\r\nContent-Length: 2\r\n\r\n",
        "HTTP/1.1 200 OK\r\nX-Obs: café\t!\r\nX-Empty:\r\nContent-Length: 2\r\n\r\n",
        "HTTP/1.1 200 OK\r\n!#$%&'*+-.^_`|~09AZaz: token\r\nContent-Length: 2\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 00000000000000000003\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 3, 3\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        "HTTP/1.1 200 OK\r\nConnection: close, X-Secret\r\nX-Secret: 1\r\nContent-Length: 0\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTrailer: X-T\r\nTransfer-Encoding: chunked\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTrailer: X-T\r\nContent-Length: 1\r\n\r\n",
        "HTTP/1.1 200 OK\r\nUpgrade: h2c\r\nContent-Length: 1\r\n\r\n",
        "HTTP/1.1 200 OK\r\nProxy-Authenticate: x\r\nContent-Length: 1\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTE: trailers\r\nContent-Length: 1\r\n\r\n",
        "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n",
    ];
    let kept = answers.iter().filter(|a| agree(a.as_bytes())).count();
    // Both forms are exercised: the plain heads kept, the others not.
    assert!(kept >= 10 && kept < answers.len(), "{kept} kept");
}

fn field() -> impl Strategy<Value = (String, String)> {
    let name = prop_oneof![
        Just("Content-Type".to_owned()),
        Just("content-length".to_owned()),
        Just("Date".to_owned()),
        Just("Connection".to_owned()),
        Just("Keep-Alive".to_owned()),
        Just("Transfer-Encoding".to_owned()),
        Just("Trailer".to_owned()),
        Just("Upgrade".to_owned()),
        "[A-Za-z0-9!#$%&'*+.^_`|~-]{1,12}",
    ];
    let value = "[ -~\t]{0,16}";
    (name, value)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]
    #[test]
    fn any_answer_is_written_alike_from_kept_fields_and_from_the_map(
        status in prop_oneof![Just(200u16), Just(204), Just(304), Just(404), Just(503)],
        fields in proptest::collection::vec(field(), 0..8),
    ) {
        let mut answer = format!("HTTP/1.1 {status} Whatever\r\n");
        for (name, value) in &fields {
            answer.push_str(&format!("{name}: {value}\r\n"));
        }
        answer.push_str("\r\n");
        agree(Bytes::from(answer).as_ref());
    }
}
