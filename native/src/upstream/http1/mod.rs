//! HTTP/1.1 to upstreams, the project's own: a request head written from the
//! `http` types (`encode`), the answer's head parsed with httparse (`parse`),
//! its body decoded (`decode`), all on the request's own task (`session`).
//! hyper's client ran each connection as a task of its own, fed through
//! channels: five task polls and two channel hand-offs per request, which a
//! proxy that already holds the request's task does not need. The wire rules
//! are hyper's, and `differential` (a test) feeds both the same bytes.

pub mod decode;
#[cfg(test)]
mod differential;
pub mod encode;
pub mod parse;
pub mod session;

/// Header fields a response head may carry (hyper's default).
pub const MAX_HEADERS: usize = 100;

/// Bytes a primary's answer head may take: hyper's default read buffer
/// bound, which was the limit before.
pub const MAX_HEAD_BYTES: usize = 8192 + 4096 * 100;

/// Why an exchange or an answer's body failed.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("malformed response head: {0}")]
    Head(httparse::Error),
    #[error("invalid response status")]
    Status,
    #[error("invalid header name in response")]
    HeaderName,
    #[error("invalid header value in response")]
    HeaderValue,
    #[error("response framing: {0}")]
    Framing(&'static str),
    #[error("response head too large")]
    HeadTooLarge,
    #[error("chunked body: {0}")]
    Chunk(&'static str),
    #[error("connection closed before the body's end")]
    BodyCut,
    #[error("connection closed before an answer")]
    Closed,
    #[error("connection error: {0}")]
    Io(std::io::Error),
    #[error("request body failed: {0}")]
    RequestBody(Box<dyn std::error::Error + Send + Sync>),
    #[error("request body longer or shorter than its Content-Length")]
    RequestFraming,
}

impl WireError {
    /// The upstream's answer was not HTTP as it must be (502 `UPE` / protocol),
    /// rather than a connection that broke.
    pub fn is_protocol(&self) -> bool {
        matches!(
            self,
            Self::Head(_)
                | Self::Status
                | Self::HeaderName
                | Self::HeaderValue
                | Self::Framing(_)
                | Self::HeadTooLarge
        )
    }
}
