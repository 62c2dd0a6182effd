//! HTTP building blocks, each a pure function or a compiled rule of the
//! snapshot: header rules, what a request's fields say (read once), the proxy's own answers, framing inspection of the
//! client's byte stream, matchers, header operations, rewrites, faults, the
//! retry policy and upgrade detection. Nothing here holds a connection.

pub mod fault;
pub mod fields;
pub mod grpc;
pub mod header_ops;
pub mod headers;
pub mod inspect;
pub mod local_reply;
pub mod lowercase;
pub mod matcher;
pub mod names;
pub mod raw_fields;
pub mod request_head;
pub mod retry;
pub mod rewrite;
pub mod spans;
pub mod target;
#[cfg(test)]
mod test_support;
pub mod upgrade;
