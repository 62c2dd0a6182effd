//! The first phase of a request: what may not be forwarded at all, answered
//! before routing sees it.

use crate::http::fields::{FieldFacts, Present};
use crate::http::headers;
use crate::http::inspect::Verdict;
use crate::http::local_reply::LocalReply;
use crate::http::request_head::RequestHead;
use crate::proxy::Connection;

/// What may not be forwarded at all: framing the inspector refused on the
/// byte stream, framing or Host problems in the parsed head, a head over the
/// listener's limit, a Host that is not a valid authority. Passed, it tells
/// which fields the request carries that the head's preparation looks for,
/// and the authority the request names (an absolute-form target's, or its
/// Host; empty for none), found in the same pass.
pub fn guard<'r>(
    request: &'r RequestHead,
    conn: &Connection,
) -> Result<(Present, &'r str), LocalReply> {
    // Taken for every request, in order, before anything else can answer.
    if let Some(verdict) = conn.findings.take() {
        return Err(match verdict {
            Verdict::AmbiguousFraming => LocalReply::AmbiguousFraming,
            Verdict::RepeatedContentLength => LocalReply::RepeatedContentLength,
            Verdict::BadChunk => LocalReply::BadRequestBody,
        });
    }
    let facts = FieldFacts::of(request.fields());
    if let Some(refused) = facts.framing_problem(request.version()) {
        return Err(refused);
    }
    let head_bytes = facts.bytes
        + request
            .uri()
            .path_and_query()
            .map_or(1, |pq| pq.as_str().len());
    if head_bytes > conn.max_header_bytes {
        return Err(LocalReply::HeadersTooLarge);
    }
    // No Host that is not a valid authority reaches routing, a hop or a copy
    // (an absolute-form target's authority stands in for it, RFC 9112 3.2.2).
    // A value that is not visible ASCII is no authority: refused as one
    // (`to_str` checks that much with no UTF-8 validation to pay for).
    let host = match request.uri().authority() {
        Some(absolute) => Some(absolute.as_str()),
        None => match facts.host.map(headers::visible_text) {
            Some(Some(host)) => Some(host),
            Some(None) => return Err(LocalReply::InvalidHost),
            None => None,
        },
    };
    if host.is_some_and(|h| !headers::valid_authority(h)) {
        return Err(LocalReply::InvalidHost);
    }
    // A host whose certificate is another than this connection's (RFC 9110
    // 15.5.20): the client must open a connection for it.
    if let (Some(bound), Some(host)) = (&conn.tls, host) {
        if !bound.allows(host) {
            return Err(LocalReply::Misdirected);
        }
    }
    Ok((facts.present, host.unwrap_or("")))
}
