//! TLS on both hops, with rustls: termination on a listener (`terminate`:
//! certificates by SNI, MUTUAL, ALPN choosing the connection builder) and
//! origination to an upstream (`originate`: a destination's DestinationRule
//! `tls`, with its SNI, verification and session resumption), and the SNI of
//! a ClientHello read without terminating (`sni`, for passthrough). The PEM
//! files both sides read become rustls's types in one place (`pem`).

mod identity;
pub mod originate;
mod pem;
pub mod sni;
mod terminate;

pub use identity::ClientIdentity;
pub use originate::{Alpn, Originator};
pub use terminate::{handshake, terminators, Bound, Negotiated, Terminator};

/// The crypto both sides use: ring, not aws-lc-rs (rustls's default, which
/// builds with cmake): ring builds with the C compiler alone. Its lack of the
/// post-quantum key exchange is why rustls marks it deprecated.
#[allow(deprecated)]
fn provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}
