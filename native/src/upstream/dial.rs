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
/// within `timeout`.
pub async fn dial(authority: &Authority, timeout: Duration) -> Result<Stream, DialError> {
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
        Ok(Ok(stream)) => Ok(Stream::tcp(stream)),
        Ok(Err(_)) => Err(DialError::Failed),
        Err(_) => Err(DialError::TimedOut),
    }
}
