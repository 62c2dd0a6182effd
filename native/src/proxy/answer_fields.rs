//! Whether an answer's fields pass through the proxy untouched, so that the
//! upstream exchange may keep them as they came (`http::raw_fields`) rather
//! than put each into a map that only the client hop's writer reads.

use crate::proxy::fan_out::FannedOut;
use crate::proxy::session::SessionTo;
use crate::proxy::Connection;

/// The answer's fields pass through untouched, so they may be kept as they
/// came: the client hop writes them as they are (the own HTTP/1.1 session),
/// and nothing reads or edits them on the way (gRPC's terms and counts, the
/// access log, held or compared copies, the route's response rules).
pub(super) fn pass_through(
    conn: &Connection,
    to: &SessionTo<'_>,
    fanned: &FannedOut,
    grpc: bool,
    logged: bool,
) -> bool {
    conn.writes_raw_fields
        && !grpc
        && !logged
        && fanned.gates.is_empty()
        && fanned.compared.waiting.is_empty()
        && to.route.response_headers.is_empty()
        && to.destination.response_headers.is_empty()
}
