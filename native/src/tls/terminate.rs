//! TLS termination on a listener: the rustls configuration a listener's
//! certificates make (the first the default, the others chosen by SNI), and
//! the handshake each accepted connection goes through, in its own task (a
//! slow or hostile client holds only itself), within a deadline. ALPN offers
//! `h2` and `http/1.1`; what the client picks chooses the connection builder.

use std::sync::Arc;
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

use crate::snapshot::{Listener, ListenerTls, TlsVersion};
use crate::transport::Stream;

use super::identity::{client_identity, ClientIdentity};
use super::{pem, provider};

/// The protocol a TLS client chose by ALPN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Negotiated {
    Http2,
    /// `http/1.1`, or no ALPN at all (an HTTP/1.1 client of old).
    Http1,
}

/// What completes TLS handshakes for one listener.
#[derive(Clone)]
pub struct Terminator {
    acceptor: TlsAcceptor,
    names: Arc<ServerNames>,
}

impl std::fmt::Debug for Terminator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Terminator")
            .field("names", &self.names)
            .finish_non_exhaustive()
    }
}

/// Which certificate entry serves which names: the first entry whose
/// patterns match, else the first entry (the default).
#[derive(Debug, Default)]
pub struct ServerNames(Vec<Vec<String>>);

impl ServerNames {
    /// The entry for `name` (an SNI or a Host without its port).
    pub fn entry_for(&self, name: Option<&str>) -> usize {
        name.and_then(|name| {
            self.0
                .iter()
                .position(|patterns| patterns.iter().any(|p| matches(p, name)))
        })
        .unwrap_or(0)
    }

    /// Whether the listener has more than one certificate (only then can a
    /// request name a host that another connection should carry).
    pub fn several(&self) -> bool {
        self.0.len() > 1
    }
}

/// `*.example.com` matches one or more labels before `.example.com`; other
/// patterns match exactly. Case-insensitive, as DNS names are.
fn matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_prefix('*') {
        Some(suffix) => {
            name.len() > suffix.len()
                && name
                    .get(name.len() - suffix.len()..)
                    .is_some_and(|end| end.eq_ignore_ascii_case(suffix))
        }
        None => pattern.eq_ignore_ascii_case(name),
    }
}

/// The certificate entry a connection was made with, and the listener's
/// names: a request whose Host belongs to another entry is misdirected
/// (RFC 9110 15.5.20), so MUTUAL on one host cannot be bypassed through
/// another's connection.
#[derive(Debug, Clone)]
pub struct Bound {
    entry: usize,
    names: Arc<ServerNames>,
    /// MUTUAL: the client's verified certificate, as it goes upstream.
    client: Option<Arc<ClientIdentity>>,
}

impl Bound {
    /// The client's verified certificate, on a MUTUAL listener.
    pub fn client(&self) -> Option<&ClientIdentity> {
        self.client.as_deref()
    }
}

impl Bound {
    /// Whether a request for `host` (`name[:port]`) may be served on this
    /// connection.
    pub fn allows(&self, host: &str) -> bool {
        if !self.names.several() {
            return true;
        }
        let name = match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => host,
        };
        self.names.entry_for(Some(name)) == self.entry
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
                    terminator(tls).map_err(|e| format!("listener {i} ({}): {e}", listener.address))
                })
                .transpose()
        })
        .collect()
}

/// The terminator of one listener: its certificates, TLS 1.2 and 1.3 (or
/// 1.3 only), ALPN `h2` then `http/1.1`.
pub fn terminator(tls: &ListenerTls) -> Result<Terminator, String> {
    let mut provider = provider();
    if !tls.cipher_suites.is_empty() {
        provider.cipher_suites = suites(&tls.cipher_suites, &provider.cipher_suites)?;
    }
    let provider = Arc::new(provider);
    if tls.certificates.is_empty() {
        return Err("no certificate".to_owned());
    }
    let keys = tls
        .certificates
        .iter()
        .map(|entry| {
            pem::certified_key(
                (&entry.certificate_pem, &entry.certificate_file),
                (&entry.private_key_pem, &entry.private_key_file),
                &provider,
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    let names = Arc::new(ServerNames(
        tls.certificates
            .iter()
            .map(|c| c.sni_hosts.clone())
            .collect(),
    ));
    let versions: &[&rustls::SupportedProtocolVersion] = match tls.min_protocol_version {
        TlsVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersion::Tls13 => &[&rustls::version::TLS13],
    };
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| e.to_string())?;
    let builder = match &tls.client_ca_pem {
        Some(pem) => {
            let file = tls.client_ca_file.as_deref().unwrap_or("caCertificates");
            builder.with_client_cert_verifier(client_verifier(pem, file, provider)?)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(Arc::new(BySni {
        keys,
        names: names.clone(),
    }));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    // The suite is the server's choice, in `provider`'s order (see there).
    config.ignore_client_order = true;
    Ok(Terminator {
        acceptor: TlsAcceptor::from(Arc::new(config)),
        names,
    })
}

/// TLS 1.3's suites (in `all`'s order), then the TLS 1.2 suites `names` (IANA
/// names) in their order: what `cipherSuites` restricts is TLS 1.2, as in Envoy.
fn suites(
    names: &[String],
    all: &[rustls::SupportedCipherSuite],
) -> Result<Vec<rustls::SupportedCipherSuite>, String> {
    use rustls::crypto::aws_lc_rs::cipher_suite as aws;
    let mut out: Vec<_> = all
        .iter()
        .filter(|s| s.version() == &rustls::version::TLS13)
        .copied()
        .collect();
    for name in names {
        let suite = match name.as_str() {
            "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256" => {
                aws::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
            }
            "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384" => {
                aws::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
            }
            "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256" => {
                aws::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
            }
            "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256" => aws::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
            "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384" => aws::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
            "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256" => {
                aws::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256
            }
            other => return Err(format!("cipher suite {other}: not implemented by rustls")),
        };
        out.push(suite);
    }
    Ok(out)
}

/// MUTUAL: a client must present a certificate that chains to one of `pem`'s
/// CAs (and is valid now, for client authentication), or the handshake fails.
fn client_verifier(
    ca_pem: &str,
    file: &str,
    provider: Arc<CryptoProvider>,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, String> {
    let roots = pem::roots(ca_pem, file)?;
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| format!("caCertificates {file}: {e}"))
}

/// Chooses the certificate by the ClientHello's server name.
#[derive(Debug)]
struct BySni {
    keys: Vec<Arc<CertifiedKey>>,
    names: Arc<ServerNames>,
}

impl ResolvesServerCert for BySni {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let entry = self.names.entry_for(hello.server_name());
        self.keys.get(entry).cloned()
    }
}

/// Completes the handshake within `deadline`; `None` when it fails or takes
/// longer (the connection is dropped: nothing was said in HTTP yet).
pub async fn handshake(
    terminator: &Terminator,
    stream: Stream,
    deadline: Duration,
) -> Option<(Stream, Negotiated, Bound)> {
    let Stream::Tcp(tcp) = stream else {
        return None;
    };
    let tls = tokio::time::timeout(deadline, terminator.acceptor.accept(tcp))
        .await
        .ok()?
        .ok()?;
    let session = tls.get_ref().1;
    let negotiated = match session.alpn_protocol() {
        Some(b"h2") => Negotiated::Http2,
        _ => Negotiated::Http1,
    };
    let client = session
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|leaf| client_identity(leaf))
        .map(Arc::new);
    let bound = Bound {
        entry: terminator.names.entry_for(session.server_name()),
        names: terminator.names.clone(),
        client,
    };
    Some((Stream::tls(tls), negotiated, bound))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::tls::TlsCertificate;

    const CERT: &str = include_str!("../../tests/data/tls-cert.pem");
    const KEY: &str = include_str!("../../tests/data/tls-key.pem");

    fn entry(cert: &str, key: &str, sni: &[&str]) -> TlsCertificate {
        TlsCertificate {
            certificate_pem: cert.to_owned(),
            private_key_pem: key.to_owned(),
            certificate_file: "cert.pem".to_owned(),
            private_key_file: "key.pem".to_owned(),
            sni_hosts: sni.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    fn tls(entries: Vec<TlsCertificate>) -> ListenerTls {
        ListenerTls {
            certificates: entries,
            min_protocol_version: TlsVersion::Tls12,
            client_ca_pem: None,
            client_ca_file: None,
            cipher_suites: Vec::new(),
        }
    }

    #[test]
    fn cipher_suites_restrict_tls12_and_keep_tls13() {
        let names = ["TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384".to_owned()];
        let all = provider().cipher_suites;
        let chosen = suites(&names, &all).unwrap();
        assert_eq!(chosen.len(), 4);
        assert_eq!(
            chosen[0].suite(),
            rustls::CipherSuite::TLS13_AES_128_GCM_SHA256
        );
        assert_eq!(
            chosen[3].suite(),
            rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
        );
        let err = suites(&["TLS_RSA_WITH_AES_128_CBC_SHA".to_owned()], &all).unwrap_err();
        assert!(err.contains("TLS_RSA_WITH_AES_128_CBC_SHA"), "{err}");
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused() {
        let mut t = tls(vec![entry(CERT, KEY, &[])]);
        t.client_ca_pem = Some("nothing".into());
        t.client_ca_file = Some("ca.pem".into());
        let err = terminator(&t).unwrap_err();
        assert!(
            err.contains("ca.pem") && err.contains("no CERTIFICATE"),
            "{err}"
        );
        t.client_ca_pem = Some(CERT.into());
        assert!(terminator(&t).is_ok());
    }

    #[test]
    fn a_certificate_and_its_key_make_a_terminator() {
        let t = terminator(&tls(vec![entry(CERT, KEY, &[])])).unwrap();
        assert!(!t.names.several());
    }

    #[test]
    fn a_missing_or_garbled_pair_is_refused_naming_the_file() {
        let err = terminator(&tls(vec![entry("", KEY, &[])])).unwrap_err();
        assert!(
            err.contains("cert.pem") && err.contains("no CERTIFICATE"),
            "{err}"
        );
        let err = terminator(&tls(vec![entry(CERT, "not a key", &[])])).unwrap_err();
        assert!(err.contains("key.pem"), "{err}");
        // The key of another certificate: the pair is checked.
        let other = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgevZzL1gdAFr88hb2\nOF/2NxApJCzGCEDdfSp6VQO30hyhRANCAAQRWz+jn65BtOMvdyHKcvjBeBSDZH2r\n1RTwjmYSi9R/zpBnuQ4EiMnCqfMPWiZqB5QdbAd0E7oWVTWWq+KQrjLw\n-----END PRIVATE KEY-----\n";
        let err = terminator(&tls(vec![entry(CERT, other, &[])])).unwrap_err();
        assert!(err.contains("cert.pem and private key key.pem"), "{err}");
        assert!(terminator(&tls(vec![])).is_err());
    }

    #[test]
    fn names_choose_the_first_matching_entry_else_the_default() {
        let names = ServerNames(vec![
            vec![],
            vec!["api.example.com".into()],
            vec!["*.example.com".into()],
        ]);
        assert_eq!(names.entry_for(None), 0);
        assert_eq!(names.entry_for(Some("reviews")), 0);
        assert_eq!(names.entry_for(Some("API.example.com")), 1);
        assert_eq!(names.entry_for(Some("shop.example.com")), 2);
        assert_eq!(names.entry_for(Some("a.b.example.com")), 2);
        // The wildcard needs a label before its suffix.
        assert_eq!(names.entry_for(Some(".example.com")), 0);
        assert_eq!(names.entry_for(Some("example.com")), 0);
    }

    #[test]
    fn a_request_for_another_entrys_host_is_not_allowed() {
        let names = Arc::new(ServerNames(vec![vec![], vec!["api.example.com".into()]]));
        let default = Bound {
            entry: 0,
            names: names.clone(),
            client: None,
        };
        let api = Bound {
            entry: 1,
            names,
            client: None,
        };
        assert!(api.allows("api.example.com:8443") && api.allows("API.example.com"));
        assert!(!api.allows("reviews"));
        assert!(default.allows("reviews:443") && !default.allows("api.example.com"));
        // One certificate: any host, as before SNI mattered.
        let single = Bound {
            entry: 0,
            names: Arc::new(ServerNames(vec![vec!["a".into()]])),
            client: None,
        };
        assert!(single.allows("b"));
    }
}
