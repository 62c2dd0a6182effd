//! Which HTTP a plaintext client speaks, told by its first bytes: HTTP/2 with
//! prior knowledge opens with a fixed preface (RFC 9113 3.4), which no
//! HTTP/1.1 request line can begin with past its first bytes (`PRI` is no
//! method anyone routes). Read with a peek, so the chosen connection reads the
//! bytes again from the start. With TLS, ALPN will decide instead.

use std::time::Duration;

use tokio::io::Interest;
use tokio::time::Instant;

use crate::transport::Stream;

/// The client connection preface of HTTP/2.
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Longest pause between peeks while a preface arrives in pieces.
const MAX_PAUSE: Duration = Duration::from_millis(50);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spoken {
    Http1,
    Http2,
    /// Closed (or failed) before saying anything.
    Nothing,
}

/// Peeks until the first bytes tell the protocol apart. Bytes that leave the
/// question open (a preface sent in pieces) are waited for until `patience`
/// has passed; then, or when nothing was said by then, HTTP/1.1 decides with
/// its own timeouts. A client that says nothing at all waits at most
/// `first_byte` (the idle timeout; `None`: as long as it likes).
pub async fn sniff(stream: &Stream, first_byte: Option<Duration>, patience: Duration) -> Spoken {
    let mut buf = [0u8; PREFACE.len()];
    let first = match first_byte {
        Some(limit) => match tokio::time::timeout(limit, stream.peek(&mut buf)).await {
            Ok(peeked) => peeked,
            // Idle past the limit before a first request: closed, as an
            // HTTP/1.1 keep-alive connection would be.
            Err(_) => return Spoken::Nothing,
        },
        None => stream.peek(&mut buf).await,
    };
    let mut seen = match first {
        Ok(0) | Err(_) => return Spoken::Nothing,
        Ok(n) => n,
    };
    let deadline = Instant::now() + patience;
    let mut pause = Duration::from_millis(1);
    loop {
        match decide(&buf[..seen]) {
            Some(spoken) => return spoken,
            // The client closed its side after the start of a preface: no
            // more will come, and HTTP/1.1 answers what did now, instead of
            // the connection being held for the whole patience.
            None if read_closed(stream).await => return Spoken::Http1,
            // A peek does not consume, so readiness stays set: pause between
            // peeks rather than spin, longer each time.
            None if Instant::now() + pause < deadline => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(MAX_PAUSE);
            }
            None => return Spoken::Http1,
        }
        seen = match stream.peek(&mut buf).await {
            Ok(0) | Err(_) => return Spoken::Nothing,
            Ok(n) => n,
        };
    }
}

/// Whether the client has closed its side (a FIN, seen by epoll). Asked only
/// after a peek found bytes, so the socket is readable and the answer is
/// immediate; the zero timeout only guards that.
async fn read_closed(stream: &Stream) -> bool {
    let ready = stream.tcp_ref().ready(Interest::READABLE);
    match tokio::time::timeout(Duration::ZERO, ready).await {
        Ok(Ok(ready)) => ready.is_read_closed(),
        Ok(Err(_)) => true,
        Err(_) => false,
    }
}

/// The protocol the bytes seen so far show, if they show one yet.
pub fn decide(seen: &[u8]) -> Option<Spoken> {
    if !PREFACE.starts_with(seen) {
        Some(Spoken::Http1)
    } else if seen.len() == PREFACE.len() {
        Some(Spoken::Http2)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::{TcpListener, TcpStream};

    #[test]
    fn the_first_bytes_decide() {
        assert_eq!(decide(b"GET / HTTP/1.1\r\n"), Some(Spoken::Http1));
        assert_eq!(decide(b"G"), Some(Spoken::Http1));
        assert_eq!(decide(PREFACE), Some(Spoken::Http2));
        assert_eq!(decide(b"PRI * HTTP/2"), None);
        // Same start, then not the preface: an HTTP/1.1 request line.
        assert_eq!(decide(b"PRI * HTTP/1.1\r\n"), Some(Spoken::Http1));
    }

    async fn pair() -> (TcpStream, Stream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (client, Stream::tcp(server))
    }

    #[tokio::test]
    async fn a_preface_in_pieces_is_waited_for() {
        let (mut client, server) = pair().await;
        client.write_all(&PREFACE[..5]).await.unwrap();
        let writer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            client.write_all(&PREFACE[5..]).await.unwrap();
            client
        });
        let spoken = sniff(&server, None, Duration::from_secs(5)).await;
        assert_eq!(spoken, Spoken::Http2);
        drop(writer.await.unwrap());
        // Nothing was consumed: the connection reads the preface again.
        let mut again = [0u8; 24];
        assert_eq!(server.peek(&mut again).await.unwrap(), 24);
        assert_eq!(&again, PREFACE);
    }

    #[tokio::test]
    async fn a_stalled_partial_preface_goes_to_http1_after_the_patience() {
        let (mut client, server) = pair().await;
        client.write_all(b"PRI *").await.unwrap();
        let started = Instant::now();
        let spoken = sniff(&server, None, Duration::from_millis(100)).await;
        assert_eq!(spoken, Spoken::Http1);
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn a_partial_preface_then_a_close_goes_to_http1_at_once() {
        // Found by the fuzz test (seed 13): `P`, then the client's FIN. The
        // peeked byte stays, so only the close tells that no more will come.
        let (mut client, server) = pair().await;
        client.write_all(b"P").await.unwrap();
        client.shutdown().await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let started = Instant::now();
        let spoken = sniff(&server, None, Duration::from_secs(30)).await;
        assert_eq!(spoken, Spoken::Http1);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn a_closed_connection_said_nothing() {
        let (client, server) = pair().await;
        drop(client);
        assert_eq!(
            sniff(&server, None, Duration::from_secs(1)).await,
            Spoken::Nothing
        );
    }
}
