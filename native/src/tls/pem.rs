//! PEM text (as the control plane read it from the configured files) to
//! rustls's types, with errors that name the file.

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use rustls::RootCertStore;
use std::sync::Arc;

/// A certificate chain, leaf first.
pub fn chain(pem: &str, file: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let chain = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("certificate {file}: {e}"))?;
    if chain.is_empty() {
        return Err(format!("certificate {file}: no CERTIFICATE block"));
    }
    Ok(chain)
}

/// A private key (PKCS#8, PKCS#1 or SEC1).
pub fn private_key(pem: &str, file: &str) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| format!("private key {file}: {e}"))
}

/// The CA certificates of `caCertificates`.
pub fn roots(pem: &str, file: &str) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        let cert = cert.map_err(|e| format!("caCertificates {file}: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("caCertificates {file}: {e}"))?;
    }
    if roots.is_empty() {
        return Err(format!("caCertificates {file}: no CERTIFICATE block"));
    }
    Ok(roots)
}

/// The revocation lists of `caCrl`.
pub fn crls(pem: &str, file: &str) -> Result<Vec<CertificateRevocationListDer<'static>>, String> {
    let crls = CertificateRevocationListDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("caCrl {file}: {e}"))?;
    if crls.is_empty() {
        return Err(format!("caCrl {file}: no X509 CRL block"));
    }
    Ok(crls)
}

/// A chain and its key (`(pem, file)` each), checked to belong together.
pub fn certified_key(
    certificate: (&str, &str),
    key: (&str, &str),
    provider: &CryptoProvider,
) -> Result<Arc<CertifiedKey>, String> {
    let chain = chain(certificate.0, certificate.1)?;
    let der = private_key(key.0, key.1)?;
    let pair = || format!("certificate {} and private key {}", certificate.1, key.1);
    let signing = provider
        .key_provider
        .load_private_key(der)
        .map_err(|e| format!("{}: {e}", pair()))?;
    let certified = CertifiedKey::new(chain, signing);
    certified
        .keys_match()
        .map_err(|e| format!("{}: {e}", pair()))?;
    Ok(Arc::new(certified))
}
