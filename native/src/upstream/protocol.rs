//! The HTTP version a request is sent upstream with, chosen in one place for
//! every path (primaries, mirror copies, upgrades): HTTP/1.1 today. An HTTP/2
//! client joins the pools here, chosen per destination, without the callers
//! changing.

use http::request::Parts;
use http::Version;

use crate::http::target::origin_uri;

/// Makes `parts` what goes upstream: an origin-form target (where it goes is
/// always a configured endpoint, never what the client named) and the
/// upstream's protocol version.
pub fn for_upstream(parts: &mut Parts) {
    parts.uri = origin_uri(parts.uri.path_and_query());
    parts.version = Version::HTTP_11;
}
