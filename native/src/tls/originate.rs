//! TLS origination to a destination's endpoints, as its DestinationRule's
//! `tls` says: SIMPLE or MUTUAL, against `caCertificates` or the system's
//! roots, the server's certificate checked against `subjectAltNames` or the
//! name sent as SNI (unless `insecureSkipVerify`). One `Originator` per
//! cluster; its sessions are cached and resumed across its connections.

use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ClientSessionMemoryCache, Resumption, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::snapshot::UpstreamTls;
use crate::transport::Stream;

use super::{pem, provider};

/// Sessions remembered per destination for resumption. rustls keys them by the
/// name sent (one for most destinations; one per Host with auto SNI) and keeps
/// up to 8 TLS 1.3 tickets per name, so 32 entries are 4 names' worth. Bound in
/// bytes too: a ticket and the server chain stored with it each come from one
/// handshake message (at most 64 KiB in rustls), so a destination's upstream,
/// however hostile, makes the cache hold at most 32 x 128 KiB = 4 MiB.
const SESSION_CACHE_ENTRIES: usize = 32;

/// What a connection asks for by ALPN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alpn {
    Http1,
    Http2,
    /// Spliced bytes (tcp routes, tunnels): no application protocol named.
    None,
}

/// The client side of TLS to one destination.
#[derive(Clone)]
pub struct Originator {
    /// By [`Alpn`], in its order; one session cache behind the three.
    configs: [TlsConnector; 3],
    /// `sni` as given: sent and verified instead of the auto name.
    sni: Option<ServerName<'static>>,
}

impl std::fmt::Debug for Originator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Originator")
            .field("sni", &self.sni)
            .finish_non_exhaustive()
    }
}

impl Originator {
    pub fn new(tls: &UpstreamTls) -> Result<Self, String> {
        let provider = Arc::new(provider());
        let verifier = verifier(tls, &provider)?;
        let client_key = match (&tls.client_certificate_pem, &tls.private_key_pem) {
            (Some(cert), Some(key)) => {
                let cert_file = tls
                    .client_certificate_file
                    .as_deref()
                    .unwrap_or("clientCertificate");
                let key_file = tls.private_key_file.as_deref().unwrap_or("privateKey");
                // Checked here for a message that names the files.
                pem::certified_key((cert, cert_file), (key, key_file), &provider)?;
                Some((
                    pem::chain(cert, cert_file)?,
                    pem::private_key(key, key_file)?,
                ))
            }
            (None, None) => None,
            _ => return Err("clientCertificate and privateKey go together".to_owned()),
        };
        let sessions = Arc::new(ClientSessionMemoryCache::new(SESSION_CACHE_ENTRIES));
        let config = |alpn: Alpn| -> Result<TlsConnector, String> {
            let builder = ClientConfig::builder_with_provider(provider.clone())
                .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
                .map_err(|e| e.to_string())?
                .dangerous()
                .with_custom_certificate_verifier(verifier.clone());
            let mut config = match &client_key {
                Some((chain, key)) => builder
                    .with_client_auth_cert(chain.clone(), key.clone_key())
                    .map_err(|e| format!("clientCertificate: {e}"))?,
                None => builder.with_no_client_auth(),
            };
            config.alpn_protocols = match alpn {
                Alpn::Http1 => vec![b"http/1.1".to_vec()],
                Alpn::Http2 => vec![b"h2".to_vec()],
                Alpn::None => Vec::new(),
            };
            config.resumption = Resumption::store(sessions.clone());
            Ok(TlsConnector::from(Arc::new(config)))
        };
        let sni = tls
            .sni
            .as_deref()
            .map(|name| server_name(name).ok_or_else(|| format!("sni {name:?} is not a host name")))
            .transpose()?;
        Ok(Self {
            configs: [
                config(Alpn::Http1)?,
                config(Alpn::Http2)?,
                config(Alpn::None)?,
            ],
            sni,
        })
    }

    /// The name to send and verify: `sni` when configured, else `auto` (a
    /// Host without its port, or the destination host). `None`: `auto` is
    /// not a name a certificate could carry.
    pub fn name(&self, auto: &str) -> Option<ServerName<'static>> {
        match &self.sni {
            Some(name) => Some(name.clone()),
            None => server_name(strip_port(auto)),
        }
    }

    /// The TLS handshake over a connected `tcp`, as `name`.
    pub async fn connect(
        &self,
        tcp: TcpStream,
        name: ServerName<'static>,
        alpn: Alpn,
    ) -> std::io::Result<Stream> {
        let connector = &self.configs[alpn as usize];
        let tls = connector.connect(name, tcp).await?;
        Ok(Stream::tls(tls))
    }
}

/// Whether a finished handshake resumed a session (`Stream` being TLS).
pub fn resumed(stream: &Stream) -> bool {
    match stream {
        Stream::Tls(tls) => matches!(
            tls.get_ref().1.handshake_kind(),
            Some(rustls::HandshakeKind::Resumed)
        ),
        Stream::Tcp(_) => false,
    }
}

/// `host` without a `:port`; an IPv6 literal without its brackets.
fn strip_port(host: &str) -> &str {
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !name.ends_with(':') => {
            name
        }
        _ => host,
    };
    name.trim_start_matches('[').trim_end_matches(']')
}

fn server_name(name: &str) -> Option<ServerName<'static>> {
    ServerName::try_from(name.to_owned()).ok()
}

/// The system's CA certificates, read once (a reload does not read them
/// again: the process's environment is its start's).
fn system_roots() -> Result<Arc<RootCertStore>, String> {
    static ROOTS: OnceLock<Result<Arc<RootCertStore>, String>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            let mut roots = RootCertStore::empty();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(
                    "no system CA certificates found (install ca-certificates, set \
                     SSL_CERT_FILE, or give caCertificates)"
                        .to_owned(),
                );
            }
            Ok(Arc::new(roots))
        })
        .clone()
}

fn verifier(
    tls: &UpstreamTls,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn ServerCertVerifier>, String> {
    if tls.insecure_skip_verify {
        return Ok(Arc::new(Unverified(provider.clone())));
    }
    let roots = match &tls.ca_pem {
        Some(text) => Arc::new(pem::roots(
            text,
            tls.ca_file.as_deref().unwrap_or("caCertificates"),
        )?),
        None => system_roots()?,
    };
    let mut builder = WebPkiServerVerifier::builder_with_provider(roots, provider.clone());
    if let Some(text) = &tls.crl_pem {
        builder = builder.with_crls(pem::crls(text, tls.crl_file.as_deref().unwrap_or("caCrl"))?);
    }
    let webpki = builder.build().map_err(|e| e.to_string())?;
    if tls.subject_alt_names.is_empty() {
        return Ok(webpki);
    }
    let names = tls
        .subject_alt_names
        .iter()
        .map(|n| server_name(n).ok_or_else(|| format!("subjectAltNames: {n:?} is not a name")))
        .collect::<Result<_, _>>()?;
    Ok(Arc::new(AnyOfNames { webpki, names }))
}

/// Verifies the chain as webpki does, and the leaf against any one of
/// `subjectAltNames` instead of the name sent as SNI (Istio's rule).
#[derive(Debug)]
struct AnyOfNames {
    webpki: Arc<WebPkiServerVerifier>,
    names: Vec<ServerName<'static>>,
}

impl ServerCertVerifier for AnyOfNames {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _sent: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let mut last = rustls::Error::General("no subjectAltNames".into());
        for name in &self.names {
            match self
                .webpki
                .verify_server_cert(end_entity, intermediates, name, ocsp, now)
            {
                Ok(verified) => return Ok(verified),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// `insecureSkipVerify`: any certificate is taken. The handshake's
/// signatures are still checked, so the session is at least with the holder
/// of the key that certificate names.
#[derive(Debug)]
struct Unverified(Arc<CryptoProvider>);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _sent: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_auto_name_is_the_host_without_its_port() {
        assert_eq!(strip_port("reviews:9080"), "reviews");
        assert_eq!(strip_port("reviews"), "reviews");
        assert_eq!(strip_port("[::1]:443"), "::1");
        assert_eq!(strip_port("10.0.0.1:443"), "10.0.0.1");
        let o = Originator::new(&UpstreamTls {
            insecure_skip_verify: true,
            ..UpstreamTls::default()
        })
        .unwrap();
        assert_eq!(
            o.name("reviews.prod:443"),
            Some(ServerName::try_from("reviews.prod").unwrap())
        );
        assert_eq!(o.name("bad name:1"), None);
    }

    #[test]
    fn configured_sni_wins_and_bad_settings_name_the_field() {
        let o = Originator::new(&UpstreamTls {
            sni: Some("api.internal".into()),
            insecure_skip_verify: true,
            ..UpstreamTls::default()
        })
        .unwrap();
        assert_eq!(
            o.name("reviews"),
            Some(ServerName::try_from("api.internal").unwrap())
        );
        let err = Originator::new(&UpstreamTls {
            ca_pem: Some("nothing".into()),
            ca_file: Some("ca.pem".into()),
            ..UpstreamTls::default()
        })
        .unwrap_err();
        assert!(err.contains("ca.pem"), "{err}");
        let err = Originator::new(&UpstreamTls {
            client_certificate_pem: Some(include_str!("../../tests/data/tls-cert.pem").into()),
            insecure_skip_verify: true,
            ..UpstreamTls::default()
        })
        .unwrap_err();
        assert!(err.contains("together"), "{err}");
    }
}
