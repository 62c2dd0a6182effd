//! The head that goes upstream, made from the client's: the phase between
//! routing and forwarding (`request`), done once for the primary and every
//! copy.

use http::header::{HeaderValue, HOST};
use http_body::Body;

use crate::body::Received;
use crate::http::fields::Present;
use crate::http::headers;
use crate::http::request_head::RequestHead;
use crate::http::upgrade;
use crate::proxy::selected::Selected;
use crate::proxy::Connection;

/// Makes the head what goes upstream: hop-by-hop headers out, framing kept,
/// x-forwarded-*, the Host an absolute-form target names, the route's rewrite
/// and header rules. Done before the copies are made: a mirror receives what
/// the primary receives, Host suffix aside. Returns the `Upgrade` value of an
/// upgrade request (read before the hop-by-hop headers go).
pub(super) fn prepare(
    head: &mut RequestHead,
    body: &Received,
    present: Present,
    conn: &Connection,
    selected: &Selected<'_>,
) -> Option<HeaderValue> {
    let client = &conn.forwarded_for;
    let secure = conn.tls.is_some();
    let cert = conn.client().map(|c| &c.forwarded);
    // A head kept as it came takes the proxy's fields beside its own; one
    // that anything else edits goes into the map first.
    let route = selected.route;
    // (A kept head's hop-by-hop fields are this hop's own only: they are
    // left out in place, not edited.)
    let edited = present.upgrade
        || present.forwarded_for
        || present.client_cert
        || cert.is_some()
        || selected.absolute.is_some()
        || route.rewrite.is_some()
        || !route.request_headers.is_empty()
        || !selected.destination.request_headers.is_empty()
        || headers::needs_chunked(body);
    if !edited && head.kept_fields().is_some() {
        if present.hop_by_hop {
            head.strip_hop_by_hop();
        }
        head.append_forwarded(client, secure, false);
        return None;
    }
    let parts = head.parts_mut();
    // Each rule looks only for a field the request carries (`present`).
    let upgrade = present
        .upgrade
        .then(|| upgrade::requested(&parts.headers, parts.version, !body.is_end_stream()))
        .flatten();
    if present.hop_by_hop {
        headers::strip_hop_by_hop(&mut parts.headers);
    }
    headers::keep_chunked(&mut parts.headers, body);
    headers::append_forwarded(&mut parts.headers, client, secure, present.forwarded_for);
    headers::set_client_cert(&mut parts.headers, cert, present.client_cert);
    if let Some(a) = &selected.absolute {
        if let Ok(value) = HeaderValue::from_str(a.as_str()) {
            parts.headers.insert(HOST, value);
        }
    }
    if let Some(rewrite) = &route.rewrite {
        rewrite.apply(parts, selected.uri);
    }
    route.request_headers.apply(&mut parts.headers);
    selected
        .destination
        .request_headers
        .apply(&mut parts.headers);
    upgrade
}
