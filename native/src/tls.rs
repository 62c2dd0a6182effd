//! TLS termination on a listener: the rustls configuration a listener's
//! certificate and key make, and the handshake each accepted connection goes
//! through, in its own task (a slow or hostile client holds only itself),
//! within a deadline. ALPN offers `h2` and `http/1.1`; what the client picks
//! chooses the connection builder.

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

use crate::snapshot::{Listener, ListenerTls, TlsVersion};
use crate::transport::Stream;

/// The protocol a TLS client chose by ALPN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Negotiated {
    Http2,
    /// `http/1.1`, or no ALPN at all (an HTTP/1.1 client of old).
    Http1,
}

/// What completes TLS handshakes for one listener.
#[derive(Clone)]
pub struct Terminator(TlsAcceptor);

impl std::fmt::Debug for Terminator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Terminator")
    }
}

/// Every listener's terminator, by listener index (`None`: plaintext).
pub fn terminators(listeners: &[Listener]) -> Result<Vec<Option<Terminator>>, String> {
    listeners
        .iter()
        .enumerate()
        .map(|(i, listener)| {
            listener
                .tls
                .as_ref()
                .map(|tls| {
                    server_config(tls)
                        .map(|config| Terminator(TlsAcceptor::from(config)))
                        .map_err(|e| format!("listener {i} ({}): {e}", listener.address))
                })
                .transpose()
        })
        .collect()
}

/// The rustls configuration of one listener: its certificate chain and key,
/// TLS 1.2 and 1.3 (or 1.3 only), ALPN `h2` then `http/1.1`.
pub fn server_config(tls: &ListenerTls) -> Result<Arc<ServerConfig>, String> {
    let chain = CertificateDer::pem_slice_iter(tls.certificate_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("certificate {}: {e}", tls.certificate_file))?;
    if chain.is_empty() {
        return Err(format!(
            "certificate {}: no CERTIFICATE block",
            tls.certificate_file
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(tls.private_key_pem.as_bytes())
        .map_err(|e| format!("private key {}: {e}", tls.private_key_file))?;
    // ring, not aws-lc-rs (rustls's default, which builds with cmake): ring
    // builds with the C compiler alone. Its lack of the post-quantum key
    // exchange is why rustls marks it deprecated.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: &[&rustls::SupportedProtocolVersion] = match tls.min_protocol_version {
        TlsVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersion::Tls13 => &[&rustls::version::TLS13],
    };
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| {
            format!(
                "certificate {} and private key {}: {e}",
                tls.certificate_file, tls.private_key_file
            )
        })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Completes the handshake within `deadline`; `None` when it fails or takes
/// longer (the connection is dropped: nothing was said in HTTP yet).
pub async fn handshake(
    terminator: &Terminator,
    stream: Stream,
    deadline: Duration,
) -> Option<(Stream, Negotiated)> {
    let Stream::Tcp(tcp) = stream else {
        return None;
    };
    let tls = tokio::time::timeout(deadline, terminator.0.accept(tcp))
        .await
        .ok()?
        .ok()?;
    let negotiated = match tls.get_ref().1.alpn_protocol() {
        Some(b"h2") => Negotiated::Http2,
        _ => Negotiated::Http1,
    };
    Some((Stream::tls(tls), negotiated))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CERT: &str = include_str!("../tests/data/tls-cert.pem");
    const KEY: &str = include_str!("../tests/data/tls-key.pem");

    fn tls(cert: &str, key: &str) -> ListenerTls {
        ListenerTls {
            certificate_pem: cert.to_owned(),
            private_key_pem: key.to_owned(),
            certificate_file: "cert.pem".to_owned(),
            private_key_file: "key.pem".to_owned(),
            min_protocol_version: TlsVersion::Tls12,
        }
    }

    #[test]
    fn a_certificate_and_its_key_make_a_config_offering_h2_then_http1() {
        let config = server_config(&tls(CERT, KEY)).unwrap();
        assert_eq!(
            config.alpn_protocols,
            [b"h2".to_vec(), b"http/1.1".to_vec()]
        );
    }

    #[test]
    fn a_missing_or_garbled_pair_is_refused_naming_the_file() {
        let err = server_config(&tls("", KEY)).unwrap_err();
        assert!(
            err.contains("cert.pem") && err.contains("no CERTIFICATE"),
            "{err}"
        );
        let err = server_config(&tls(CERT, "not a key")).unwrap_err();
        assert!(err.contains("key.pem"), "{err}");
        // The key of another certificate: rustls checks the pair.
        let other = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgevZzL1gdAFr88hb2\nOF/2NxApJCzGCEDdfSp6VQO30hyhRANCAAQRWz+jn65BtOMvdyHKcvjBeBSDZH2r\n1RTwjmYSi9R/zpBnuQ4EiMnCqfMPWiZqB5QdbAd0E7oWVTWWq+KQrjLw\n-----END PRIVATE KEY-----\n";
        let err = server_config(&tls(CERT, other)).unwrap_err();
        assert!(err.contains("cert.pem and private key key.pem"), "{err}");
    }
}
