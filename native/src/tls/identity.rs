//! Who a verified client certificate names, in the terms Envoy's
//! `x-forwarded-client-cert` uses: what a MUTUAL listener sends upstream.

/// A verified client certificate, in the terms Envoy's
/// `x-forwarded-client-cert` uses.
#[derive(Debug)]
pub struct ClientIdentity {
    /// `Hash=<sha256 hex>;Subject="<subject>";URI=<uri>;DNS=<name>...`
    pub forwarded: http::HeaderValue,
    /// The subject (RFC 4514), for the access log.
    pub subject: String,
}

/// Envoy's `x-forwarded-client-cert` element for a client certificate
/// (`Hash`, `Subject`, `URI`, `DNS`); `None` if its DER does not parse
/// (rustls verified it, so that would be a parser's limit).
pub fn client_identity(der: &[u8]) -> Option<ClientIdentity> {
    use std::fmt::Write as _;
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject().to_string();
    let hash = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der);
    let mut value = String::from("Hash=");
    for byte in hash.as_ref() {
        let _ = write!(value, "{byte:02x}");
    }
    // Quoted, with `"` and `\` escaped, as Envoy writes it.
    let quoted = subject.replace('\\', "\\\\").replace('"', "\\\"");
    let _ = write!(value, ";Subject=\"{quoted}\"");
    if let Ok(Some(sans)) = cert.subject_alternative_name() {
        for name in &sans.value.general_names {
            match name {
                GeneralName::URI(uri) => {
                    let _ = write!(value, ";URI={uri}");
                }
                GeneralName::DNSName(dns) => {
                    let _ = write!(value, ";DNS={dns}");
                }
                _ => {}
            }
        }
    }
    let forwarded = http::HeaderValue::from_str(&value).ok()?;
    Some(ClientIdentity { forwarded, subject })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;

    const CERT: &str = include_str!("../../tests/data/tls-cert.pem");

    #[test]
    fn a_client_certificate_becomes_envoys_forwarded_element() {
        let der = CertificateDer::from_pem_slice(CERT.as_bytes()).unwrap();
        let id = client_identity(&der).unwrap();
        let value = id.forwarded.to_str().unwrap();
        let hash = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &der);
        let hex: String = hash.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            value,
            format!("Hash={hex};Subject=\"CN=reviews\";DNS=reviews;DNS=localhost")
        );
        assert_eq!(id.subject, "CN=reviews");
    }
}
