//! HTTP/1.1 Upgrade detection: which requests become spliced sessions, and the
//! head a mirror of one is sent as (see `proxy::upgrade` for the sessions).

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;
use http::{Response, StatusCode, Version};

use crate::http::target::origin_uri;

/// The `Upgrade` value of an upgrade request to splice (HTTP/1.1, `Connection`
/// naming `upgrade`, no body): WebSocket, or any protocol the upstream agrees
/// to with a 101 (`spdy/3.1` of `kubectl exec`, a custom one). Not `h2c`: its
/// upgraded connection is HTTP/2, whose requests this proxy would no longer
/// route; such a request loses its upgrade headers and is served as HTTP/1.1.
pub fn requested(headers: &HeaderMap, version: Version, has_body: bool) -> Option<HeaderValue> {
    if version != Version::HTTP_11 || has_body {
        return None;
    }
    let connection_upgrade = headers.get_all(header::CONNECTION).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
        })
    });
    let upgrade = headers.get(header::UPGRADE)?;
    let spliceable = upgrade.to_str().is_ok_and(|v| {
        let protocols: Vec<&str> = v
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .collect();
        let h2c = |p: &&str| {
            p.split('/')
                .next()
                .is_some_and(|n| n.eq_ignore_ascii_case("h2c"))
        };
        !protocols.is_empty() && !protocols.iter().any(h2c)
    });
    (connection_upgrade && spliceable).then(|| upgrade.clone())
}

/// Puts the upgrade headers back on a request whose hop-by-hop headers went.
pub fn restore(headers: &mut HeaderMap, upgrade: HeaderValue) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, upgrade);
}

/// The request head as bytes, for a mirror spoken to without an HTTP client.
pub fn head_bytes(parts: &Parts) -> Bytes {
    let target = origin_uri(parts.uri.path_and_query());
    let mut head = BytesMut::with_capacity(512);
    head.put_slice(parts.method.as_str().as_bytes());
    head.put_u8(b' ');
    head.put_slice(target.to_string().as_bytes());
    head.put_slice(b" HTTP/1.1\r\n");
    for (name, value) in &parts.headers {
        head.put_slice(name.as_str().as_bytes());
        head.put_slice(b": ");
        head.put_slice(value.as_bytes());
        head.put_slice(b"\r\n");
    }
    head.put_slice(b"\r\n");
    head.freeze()
}

/// Whether an upstream answer accepts the upgrade.
pub fn accepted<B>(response: &Response<B>) -> bool {
    response.status() == StatusCode::SWITCHING_PROTOCOLS
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn upgrades_on_http_11_without_a_body_but_h2c() {
        let ws = headers(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "WebSocket"),
        ]);
        assert_eq!(
            requested(&ws, Version::HTTP_11, false).unwrap(),
            "WebSocket"
        );
        assert!(requested(&ws, Version::HTTP_10, false).is_none());
        assert!(requested(&ws, Version::HTTP_11, true).is_none());
        let h2c = headers(&[("connection", "upgrade"), ("upgrade", "h2c")]);
        assert!(requested(&h2c, Version::HTTP_11, false).is_none());
        let offered = headers(&[("connection", "upgrade"), ("upgrade", "websocket, H2C")]);
        assert!(requested(&offered, Version::HTTP_11, false).is_none());
        let spdy = headers(&[("connection", "Upgrade"), ("upgrade", "SPDY/3.1")]);
        assert_eq!(
            requested(&spdy, Version::HTTP_11, false).unwrap(),
            "SPDY/3.1"
        );
        let empty = headers(&[("connection", "upgrade"), ("upgrade", " , ")]);
        assert!(requested(&empty, Version::HTTP_11, false).is_none());
        let no_token = headers(&[("connection", "keep-alive"), ("upgrade", "websocket")]);
        assert!(requested(&no_token, Version::HTTP_11, false).is_none());
    }

    #[test]
    fn the_mirror_head_is_origin_form_with_every_header() {
        let mut request = Request::new(());
        *request.uri_mut() = "http://x.example/chat?room=1".parse().unwrap();
        request
            .headers_mut()
            .insert(header::HOST, HeaderValue::from_static("x-shadow"));
        restore(request.headers_mut(), HeaderValue::from_static("websocket"));
        let (parts, ()) = request.into_parts();
        let head = head_bytes(&parts);
        let text = std::str::from_utf8(&head).unwrap();
        assert!(text.starts_with("GET /chat?room=1 HTTP/1.1\r\n"), "{text}");
        assert!(text.contains("host: x-shadow\r\n"));
        assert!(text.contains("connection: upgrade\r\n"));
        assert!(text.contains("upgrade: websocket\r\n"));
        assert!(text.ends_with("\r\n\r\n"));
    }
}
