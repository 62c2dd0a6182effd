//! Helpers the http modules' tests share.

use http::header::{HeaderMap, HeaderName, HeaderValue};

/// A header map of `pairs`, in order.
pub fn map(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut m = HeaderMap::new();
    for (k, v) in pairs {
        m.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    m
}
