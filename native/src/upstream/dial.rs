//! The one way the proxy opens a connection to an upstream: pooled HTTP,
//! upgrades, tunnels, tcp routes and mirror feeds all dial here, so a connect
//! behaves the same on every path (an IP address is connected to directly, a
//! name is resolved off the worker thread; one deadline; Nagle off), and TLS
//! origination has one place to stand.

use std::time::Duration;

use http::uri::Authority;
use tokio::net::TcpStream;

use crate::transport::Stream;

/// Why no connection was opened.
#[derive(Debug)]
pub enum DialError {
    /// Not connected within the connect timeout.
    TimedOut,
    /// Refused, unreachable, or the name did not resolve.
    Failed,
}

/// Opens a connection to `authority` (`host:port`; port 80 when absent)
/// within `timeout`. `receive_buffer` caps the kernel's receive buffer for
/// it (Linux doubles the figure for its bookkeeping); `None` leaves the
/// kernel's autotuning, which grows a buffer up to `tcp_rmem`'s maximum
/// (tens of MiB) for a peer that sends fast.
pub async fn dial(
    authority: &Authority,
    timeout: Duration,
    receive_buffer: Option<usize>,
) -> Result<Stream, DialError> {
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
    match tokio::time::timeout(timeout, connecting).await {
        Ok(Ok(stream)) => {
            if let Some(bytes) = receive_buffer {
                // Best effort: a refusal leaves the kernel's default.
                let _ = socket2::SockRef::from(&stream).set_recv_buffer_size(bytes);
            }
            Ok(Stream::tcp(stream))
        }
        Ok(Err(_)) => Err(DialError::Failed),
        Err(_) => Err(DialError::TimedOut),
    }
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
        let capped = dial(&authority, timeout, Some(16 * 1024)).await.unwrap();
        // Linux doubles what is asked for its bookkeeping; nothing grows it later.
        assert!(
            (16 * 1024..=2 * 16 * 1024).contains(&size(&capped)),
            "{}",
            size(&capped)
        );
        let autotuned = dial(&authority, timeout, None).await.unwrap();
        assert!(size(&autotuned) > 2 * 16 * 1024, "{}", size(&autotuned));
    }
}
