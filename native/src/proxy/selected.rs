//! Where routing sent a request: what the phases after routing read.

use http::uri::Authority;

use crate::http::matcher::StringMatcher;
use crate::route::{Destination, Route};

/// Where routing sent a request.
pub(super) struct Selected<'p> {
    pub(super) route: &'p Route,
    pub(super) destination: &'p Destination,
    /// The route's URI match, for a prefix rewrite.
    pub(super) uri: Option<&'p StringMatcher>,
    /// An absolute-form target's authority: it overrides Host (RFC 9112 3.2.2).
    pub(super) absolute: Option<Authority>,
}
