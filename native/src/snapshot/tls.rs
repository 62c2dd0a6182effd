//! TLS settings: a listener's (termination) and a destination's
//! (DestinationRule `trafficPolicy.tls`, origination).

use serde::{Deserialize, Serialize};

/// A listener's certificates, the first the default, the others chosen by
/// the client's SNI.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerTls {
    pub certificates: Vec<TlsCertificate>,
    #[serde(default)]
    pub min_protocol_version: TlsVersion,
    /// MUTUAL: clients must present a certificate these CAs (PEM) signed.
    #[serde(default)]
    pub client_ca_pem: Option<String>,
    /// The CA file's name, for error messages.
    #[serde(default)]
    pub client_ca_file: Option<String>,
    /// TLS 1.2 suites offered, by IANA name, in order (empty: rustls's own);
    /// TLS 1.3's are always offered, as Envoy does.
    #[serde(default)]
    pub cipher_suites: Vec<String>,
}

/// One certificate chain and its private key, as PEM text read by the
/// control plane (the files' names are kept for error messages), and the
/// server names it is chosen for (`reviews.example.com`, `*.example.com`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsCertificate {
    pub certificate_pem: String,
    pub private_key_pem: String,
    pub certificate_file: String,
    pub private_key_file: String,
    #[serde(default)]
    pub sni_hosts: Vec<String>,
}

/// The oldest TLS version a listener accepts; rustls has nothing older than 1.2.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum TlsVersion {
    #[default]
    #[serde(rename = "1.2")]
    Tls12,
    #[serde(rename = "1.3")]
    Tls13,
}

/// How connections to a cluster's endpoints originate TLS. PEM files are
/// read by the control plane (their names kept for error messages).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTls {
    /// MUTUAL: the chain the proxy presents, and its key.
    #[serde(default)]
    pub client_certificate_pem: Option<String>,
    #[serde(default)]
    pub client_certificate_file: Option<String>,
    #[serde(default)]
    pub private_key_pem: Option<String>,
    #[serde(default)]
    pub private_key_file: Option<String>,
    /// The CAs the server's certificate must chain to; `None`: the system's.
    #[serde(default)]
    pub ca_pem: Option<String>,
    #[serde(default)]
    pub ca_file: Option<String>,
    /// Revoked certificates (X509 CRLs) the chain must not contain.
    #[serde(default)]
    pub crl_pem: Option<String>,
    #[serde(default)]
    pub crl_file: Option<String>,
    /// The SNI sent and the name verified; `None`: the request's Host for a
    /// primary, the destination host for a copy or a tcp route (auto SNI).
    #[serde(default)]
    pub sni: Option<String>,
    /// Names the server's certificate may carry instead of the SNI's.
    #[serde(default)]
    pub subject_alt_names: Vec<String>,
    /// The server's certificate is not verified at all (a test setup).
    #[serde(default)]
    pub insecure_skip_verify: bool,
}
