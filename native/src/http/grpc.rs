//! What gRPC needs of an HTTP proxy: telling a gRPC request apart, answering
//! it in gRPC's terms when the proxy answers itself (HTTP 200, the status in
//! `grpc-status`, as Envoy does: a gRPC client reads no HTTP status), and its
//! deadline (`grpc-timeout`), honoured and passed on less the time spent.

use std::time::Duration;

use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderValue, Response, StatusCode};

use crate::http::headers::visible_text;
use crate::http::local_reply::LocalReply;
use crate::http::request_head::Fields;

pub const GRPC_STATUS: &str = "grpc-status";
pub const GRPC_MESSAGE: &str = "grpc-message";
pub const GRPC_TIMEOUT: &str = "grpc-timeout";

/// gRPC status codes the proxy answers with.
pub const UNKNOWN: u32 = 2;
pub const DEADLINE_EXCEEDED: u32 = 4;
pub const PERMISSION_DENIED: u32 = 7;
pub const RESOURCE_EXHAUSTED: u32 = 8;
pub const UNIMPLEMENTED: u32 = 12;
pub const INTERNAL: u32 = 13;
pub const UNAVAILABLE: u32 = 14;
pub const UNAUTHENTICATED: u32 = 16;

/// A gRPC request (or gRPC-Web): its content type says so.
pub fn is_grpc(headers: &HeaderMap) -> bool {
    is_grpc_call(Fields::Map(headers))
}

/// `is_grpc`, for the fields in either form. A head kept as it came is no
/// gRPC call's: its parser keeps none.
pub fn is_grpc_call(fields: Fields<'_>) -> bool {
    match fields {
        Fields::Map(map) => map
            .get(CONTENT_TYPE)
            .and_then(|v| visible_text(v.as_bytes()))
            .is_some_and(|v| v.starts_with("application/grpc")),
        Fields::Kept(_) => false,
    }
}

/// An answer to a gRPC request in gRPC's terms: the proxy's own as a gRPC
/// error (a gRPC client reads `grpc-status`, not the HTTP status); an
/// upstream's with its trailer fields declared for an HTTP/1.1 client.
pub fn in_its_terms<B: Default>(mut response: Response<B>, http1: bool) -> Response<B> {
    if let Some(&reply) = response.extensions().get::<LocalReply>() {
        return answer(status_for(reply), reply.message());
    }
    if http1 {
        declare_trailers(response.headers_mut());
    }
    response
}

/// Declares gRPC's trailer fields on an answer going to an HTTP/1.1 client,
/// which otherwise receives none (an HTTP/2 answer need not declare them, and
/// HTTP/1.1 sends only declared trailer fields). A trailers-only answer, whose
/// status is in its headers, needs none.
pub fn declare_trailers(headers: &mut HeaderMap) {
    if headers.contains_key(GRPC_STATUS) || headers.contains_key(http::header::TRAILER) {
        return;
    }
    headers.insert(
        http::header::TRAILER,
        HeaderValue::from_static("grpc-status, grpc-message, grpc-status-details-bin"),
    );
}

/// The `grpc-status` in a header or trailer map, if any.
pub fn status_in(fields: &HeaderMap) -> Option<u32> {
    // An empty map (an answer's fields kept as they came) hashes no name.
    if fields.is_empty() {
        return None;
    }
    fields.get(GRPC_STATUS)?.to_str().ok()?.trim().parse().ok()
}

/// Whether a gRPC call to `path` (`/pkg.Service/Method`) is one of `listed`:
/// a method named in full, or a service named with its trailing slash.
pub fn method_listed(path: &str, listed: &[String]) -> bool {
    listed.iter().any(|entry| {
        if entry.ends_with('/') {
            path.strip_prefix(entry.as_str())
                .is_some_and(|method| !method.is_empty() && !method.contains('/'))
        } else {
            path == entry
        }
    })
}

/// The gRPC status for one of the proxy's own answers.
pub fn status_for(reply: LocalReply) -> u32 {
    match reply {
        LocalReply::UpstreamTimeout => DEADLINE_EXCEEDED,
        LocalReply::NoVirtualHost | LocalReply::NoRoute => UNIMPLEMENTED,
        LocalReply::HeadersTooLarge => RESOURCE_EXHAUSTED,
        LocalReply::NoEndpoint
        | LocalReply::Overflow
        | LocalReply::UpstreamConnect
        | LocalReply::UpstreamTls
        | LocalReply::UpstreamReset
        | LocalReply::UpstreamProtocol
        | LocalReply::UpstreamFraming => UNAVAILABLE,
        _ => status_for_http(reply.status()),
    }
}

/// gRPC's mapping of an HTTP status (doc/http-grpc-status-mapping.md), for
/// answers such as a fault abort that carry only an HTTP status.
pub fn status_for_http(status: StatusCode) -> u32 {
    match status.as_u16() {
        400 => INTERNAL,
        401 => UNAUTHENTICATED,
        403 => PERMISSION_DENIED,
        404 => UNIMPLEMENTED,
        429 | 502 | 503 | 504 => UNAVAILABLE,
        _ => UNKNOWN,
    }
}

/// A trailers-only gRPC answer: HTTP 200, the status and message as headers
/// of a response with no body (gRPC's "Trailers-Only" form).
pub fn answer<B: Default>(status: u32, message: &str) -> Response<B> {
    let mut response = Response::new(B::default());
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    headers.insert(GRPC_STATUS, HeaderValue::from(status));
    // grpc-message is percent-encoded (gRPC's PROTOCOL-HTTP2.md): keep the
    // printable ASCII that needs no encoding, encode the rest.
    if let Ok(value) = HeaderValue::from_str(&percent_encode(message.trim_end())) {
        headers.insert(GRPC_MESSAGE, value);
    }
    response
}

fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if (0x20..0x7f).contains(&byte) && byte != b'%' {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The deadline a gRPC client set (`grpc-timeout`: at most 8 digits and a
/// unit, H M S m u n); `None` when absent or malformed (then the route's
/// timeout alone applies, as for any request).
pub fn timeout(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(GRPC_TIMEOUT)?.to_str().ok()?;
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// `grpc-timeout`'s value for what is left of a deadline, in the finest unit
/// that fits gRPC's eight digits, truncated: the upstream's deadline is never
/// later than the client's.
pub fn timeout_value(left: Duration) -> Option<HeaderValue> {
    let micros = left.as_micros();
    let value = if micros < 100_000_000 {
        format!("{}u", micros.max(1))
    } else if left.as_millis() < 100_000_000 {
        format!("{}m", left.as_millis())
    } else {
        format!("{}S", left.as_secs().min(99_999_999))
    };
    HeaderValue::from_str(&value).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(name: &'static str, value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(name, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn listed_methods_match_in_full_or_by_service() {
        let listed = vec![
            "/reviews.Reviews/Get".to_owned(),
            "/reviews.Ratings/".to_owned(),
        ];
        assert!(method_listed("/reviews.Reviews/Get", &listed));
        assert!(!method_listed("/reviews.Reviews/Delete", &listed));
        assert!(!method_listed("/reviews.Reviews/GetMore", &listed));
        assert!(method_listed("/reviews.Ratings/Any", &listed));
        assert!(!method_listed("/reviews.Ratings/", &listed));
        assert!(!method_listed("/reviews.Ratings/a/b", &listed));
        assert!(!method_listed("/reviews.RatingsX/Any", &listed));
        assert!(!method_listed("/reviews.Reviews/Get", &[]));
    }

    #[test]
    fn grpc_requests_are_told_by_their_content_type() {
        assert!(is_grpc(&with("content-type", "application/grpc")));
        assert!(is_grpc(&with("content-type", "application/grpc+proto")));
        assert!(is_grpc(&with("content-type", "application/grpc-web-text")));
        assert!(!is_grpc(&with("content-type", "application/json")));
        assert!(!is_grpc(&HeaderMap::new()));
    }

    #[test]
    fn local_replies_map_as_envoy_maps_them() {
        assert_eq!(status_for(LocalReply::NoEndpoint), UNAVAILABLE);
        assert_eq!(status_for(LocalReply::UpstreamTimeout), DEADLINE_EXCEEDED);
        assert_eq!(status_for(LocalReply::NoRoute), UNIMPLEMENTED);
        assert_eq!(status_for(LocalReply::BadRequestBody), INTERNAL);
        assert_eq!(status_for_http(StatusCode::TOO_MANY_REQUESTS), UNAVAILABLE);
        assert_eq!(status_for_http(StatusCode::IM_A_TEAPOT), UNKNOWN);
    }

    #[test]
    fn an_answer_is_trailers_only_with_an_encoded_message() {
        let response: Response<String> = answer(UNAVAILABLE, "no endpoint for reviews/v1 ☃\n");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[GRPC_STATUS], "14");
        assert_eq!(response.headers()[CONTENT_TYPE], "application/grpc");
        assert_eq!(
            response.headers()[GRPC_MESSAGE],
            "no endpoint for reviews/v1 %E2%98%83"
        );
        assert!(response.body().is_empty());
    }

    #[test]
    fn timeouts_parse_in_every_unit_and_refuse_the_malformed() {
        let t = |v: &str| timeout(&with(GRPC_TIMEOUT, v));
        assert_eq!(t("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(t("2M"), Some(Duration::from_secs(120)));
        assert_eq!(t("3S"), Some(Duration::from_secs(3)));
        assert_eq!(t("500m"), Some(Duration::from_millis(500)));
        assert_eq!(t("250u"), Some(Duration::from_micros(250)));
        assert_eq!(t("99999999n"), Some(Duration::from_nanos(99_999_999)));
        for bad in ["", "m", "123456789m", "10x", "-1S", "1.5S", " 1S"] {
            assert_eq!(t(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_forwarded_timeout_is_what_is_left() {
        let value = |d| timeout_value(d).unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(GRPC_TIMEOUT, value(Duration::from_millis(1234)));
        assert_eq!(headers[GRPC_TIMEOUT], "1234000u");
        assert_eq!(timeout(&headers), Some(Duration::from_millis(1234)));
        assert_eq!(value(Duration::from_secs(200)), "200000m");
        assert_eq!(value(Duration::ZERO), "1u");
    }
}
