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

/// The crypto both sides use: aws-lc-rs, rustls's default (its post-quantum
/// hybrid key exchange offered first). Measured against ring on full
/// handshakes (a new connection per request): 180 against 210 us of CPU each.
///
/// AES-128-GCM first, on both sides (a listener prefers it over the client's
/// order): its suites hash with SHA-256, which runs on the CPU's SHA
/// extensions, where AES-256-GCM's SHA-384 runs in software. Measured (ring):
/// the SHA-384 key schedule was a tenth of a full handshake's CPU.
fn provider() -> rustls::crypto::CryptoProvider {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider.cipher_suites = preferred(&provider.cipher_suites);
    provider
}

/// `suites` in pymirror's order: TLS 1.3's before TLS 1.2's, and within each
/// AES-128-GCM, then AES-256-GCM, then ChaCha20-Poly1305 (keeping the rest).
fn preferred(suites: &[rustls::SupportedCipherSuite]) -> Vec<rustls::SupportedCipherSuite> {
    let rank = |s: &rustls::SupportedCipherSuite| {
        let name = format!("{:?}", s.suite());
        let version = usize::from(s.version() != &rustls::version::TLS13);
        let cipher = ["AES_128_GCM", "AES_256_GCM", "CHACHA20"]
            .iter()
            .position(|c| name.contains(c))
            .unwrap_or(3);
        (version, cipher)
    };
    let mut ordered = suites.to_vec();
    ordered.sort_by_key(rank);
    ordered
}
