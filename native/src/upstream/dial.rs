//! The one way the proxy opens a connection to an upstream: pooled HTTP,
//! upgrades, tunnels, tcp routes and mirror feeds all dial here, so a connect
//! behaves the same on every path (an IP address is connected to directly, a
//! name is resolved off the worker thread; one deadline for the connect and
//! the TLS handshake; Nagle off), and TLS is originated here for all of them.

use std::time::Duration;

use http::uri::Authority;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

use crate::tls::originate::{resumed, Alpn, Originator};
use crate::transport::Stream;
use crate::upstream::gauges::Gauge;

/// TLS to originate over a dialed connection.
#[derive(Debug)]
pub struct Originate<'a> {
    pub originator: &'a Originator,
    /// Sent as SNI and verified.
    pub name: ServerName<'static>,
    pub alpn: Alpn,
}

/// Why no connection was opened.
#[derive(Debug)]
pub enum DialError {
    /// Not connected within the connect timeout.
    TimedOut,
    /// Refused, unreachable, or the name did not resolve.
    Failed,
    /// Connected, but the TLS handshake failed: the certificate was not
    /// trusted or not for the name, or no protocol version or suite agreed.
    Tls,
}

/// Opens a connection to `authority` (`host:port`; port 80 when absent)
/// and, with `tls`, completes a TLS handshake over it, all within `timeout`.
/// `receive_buffer` caps the kernel's receive buffer for it (Linux doubles
/// the figure for its bookkeeping); `None` leaves the kernel's autotuning,
/// which grows a buffer up to `tcp_rmem`'s maximum (tens of MiB) for a peer
/// that sends fast. Handshakes (full, resumed, failed) count in `gauge`.
pub async fn dial(
    authority: &Authority,
    timeout: Duration,
    receive_buffer: Option<usize>,
    tls: Option<Originate<'_>>,
    gauge: &Gauge,
) -> Result<Stream, DialError> {
    let connecting = connect(authority, receive_buffer);
    let dialing = async {
        let tcp = connecting.await.map_err(|_| DialError::Failed)?;
        let Some(tls) = tls else {
            return Ok(Stream::tcp(tcp));
        };
        let _ = tcp.set_nodelay(true);
        match tls.originator.connect(tcp, tls.name, tls.alpn).await {
            Ok(stream) => {
                gauge.tls_handshake(resumed(&stream));
                Ok(stream)
            }
            Err(_) => {
                gauge.tls_failed();
                Err(DialError::Tls)
            }
        }
    };
    match tokio::time::timeout(timeout, dialing).await {
        Ok(result) => result,
        Err(_) => Err(DialError::TimedOut),
    }
}

async fn connect(
    authority: &Authority,
    receive_buffer: Option<usize>,
) -> std::io::Result<TcpStream> {
    let port = authority.port_u16().unwrap_or(80);
    let connecting = async {
        let host = authority.host();
        // A bracketed IPv6 literal is an address too.
        match host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
        {
            Ok(ip) => TcpStream::connect((ip, port)).await,
            // A name: resolved (off the worker threads) at connect time.
            Err(_) => TcpStream::connect((host, port)).await,
        }
    };
    let stream = connecting.await?;
    if let Some(bytes) = receive_buffer {
        // Best effort: a refusal leaves the kernel's default.
        let _ = socket2::SockRef::from(&stream).set_recv_buffer_size(bytes);
    }
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_receive_buffer_caps_the_kernel_buffer() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let authority: Authority = listener.local_addr().unwrap().to_string().parse().unwrap();
        let timeout = Duration::from_secs(5);
        let size = |stream: &Stream| {
            socket2::SockRef::from(stream.tcp_ref())
                .recv_buffer_size()
                .unwrap()
        };
        let gauge = Gauge::default();
        let capped = dial(&authority, timeout, Some(16 * 1024), None, &gauge)
            .await
            .unwrap();
        // Linux doubles what is asked for its bookkeeping; nothing grows it later.
        assert!(
            (16 * 1024..=2 * 16 * 1024).contains(&size(&capped)),
            "{}",
            size(&capped)
        );
        let autotuned = dial(&authority, timeout, None, None, &gauge).await.unwrap();
        assert!(size(&autotuned) > 2 * 16 * 1024, "{}", size(&autotuned));
    }
}
