//! The server name a TLS client asks for, read from its ClientHello without
//! terminating: what a passthrough listener routes by. rustls's `Acceptor`
//! parses the hello; the bytes read are kept, to be sent on as they came.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncReadExt;

use crate::transport::Stream;

/// The most a ClientHello may take (records and all) before the client is
/// refused: a hello with every extension is a few KiB.
pub const MAX_CLIENT_HELLO: usize = 32 * 1024;

/// What was read of a connection's first flight.
#[derive(Debug)]
pub struct Hello {
    /// The SNI; `None`: the client sent none (or an IP address).
    pub server_name: Option<String>,
    /// Every byte read, the whole ClientHello among them.
    pub read: Bytes,
}

/// Why no server name could be read.
#[derive(Debug, PartialEq, Eq)]
pub enum NotRead {
    /// Not a TLS ClientHello, or larger than [`MAX_CLIENT_HELLO`].
    NotTls,
    /// Closed, or not complete within the deadline.
    Closed,
}

/// Reads until the ClientHello is complete, within `deadline`.
pub async fn read_hello(stream: &mut Stream, deadline: Duration) -> Result<Hello, NotRead> {
    let reading = async {
        let mut acceptor = rustls::server::Acceptor::default();
        let mut read = BytesMut::with_capacity(4096);
        loop {
            let before = read.len();
            if before >= MAX_CLIENT_HELLO {
                return Err(NotRead::NotTls);
            }
            read.reserve(4096);
            let n = stream
                .read_buf(&mut read)
                .await
                .map_err(|_| NotRead::Closed)?;
            if n == 0 {
                return Err(NotRead::Closed);
            }
            let mut fresh = &read[before..];
            while !fresh.is_empty() {
                acceptor.read_tls(&mut fresh).map_err(|_| NotRead::NotTls)?;
            }
            match acceptor.accept() {
                Ok(Some(accepted)) => {
                    let server_name = accepted.client_hello().server_name().map(str::to_owned);
                    return Ok(Hello {
                        server_name,
                        read: read.freeze(),
                    });
                }
                Ok(None) => {}
                Err(_) => return Err(NotRead::NotTls),
            }
        }
    };
    tokio::time::timeout(deadline, reading)
        .await
        .unwrap_or(Err(NotRead::Closed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use tokio::io::AsyncWriteExt;
    use tokio::net::{TcpListener, TcpStream};

    /// A real ClientHello for `name`, as rustls's client writes it.
    fn client_hello(name: &str) -> Vec<u8> {
        let roots = rustls::RootCertStore::empty();
        let config =
            rustls::ClientConfig::builder_with_provider(Arc::new(super::super::provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from(name.to_owned()).unwrap();
        let mut conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
        let mut out = Vec::new();
        conn.write_tls(&mut out).unwrap();
        out
    }

    async fn serve(bytes: Vec<u8>, split: usize) -> Result<Hello, NotRead> {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let client = tokio::spawn(async move {
            let mut c = TcpStream::connect(address).await.unwrap();
            let (a, b) = bytes.split_at(split.min(bytes.len()));
            c.write_all(a).await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
            c.write_all(b).await.unwrap();
        });
        let (accepted, _) = listener.accept().await.unwrap();
        let mut stream = Stream::tcp(accepted);
        let found = read_hello(&mut stream, Duration::from_secs(5)).await;
        client.await.unwrap();
        found
    }

    #[tokio::test]
    async fn the_sni_is_read_and_every_byte_kept_even_split_in_two() {
        let hello = client_hello("api.example.com");
        for split in [hello.len(), 3, hello.len() / 2] {
            let found = serve(hello.clone(), split).await.unwrap();
            assert_eq!(found.server_name.as_deref(), Some("api.example.com"));
            assert_eq!(&found.read[..], &hello[..]);
        }
    }

    #[tokio::test]
    async fn garbage_and_truncated_hellos_are_refused() {
        let refused = serve(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), usize::MAX).await;
        assert_eq!(refused.unwrap_err(), NotRead::NotTls);
        let hello = client_hello("api.example.com");
        let cut = serve(hello[..hello.len() - 10].to_vec(), usize::MAX).await;
        assert_eq!(cut.unwrap_err(), NotRead::Closed);
    }
}
