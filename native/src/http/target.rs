//! The request target sent to an upstream: origin form, always.

use http::uri::PathAndQuery;
use http::Uri;

/// The origin-form target sent upstream: only the path and query of what the
/// client asked for. Where it goes is always a configured endpoint.
pub fn origin_uri(path: Option<&PathAndQuery>) -> Uri {
    Uri::from(
        path.cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_keeps_only_the_path() {
        let target: Uri = "http://evil.example/steal?x=1".parse().unwrap();
        assert_eq!(origin_uri(target.path_and_query()), "/steal?x=1");
        assert_eq!(origin_uri(None), "/");
    }
}
