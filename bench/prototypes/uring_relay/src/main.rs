//! `uring-relay epoll|uring|ring LISTEN UPSTREAM`: one thread relays HTTP/1.1
//! keep-alive GETs (no request bodies, answers framed by Content-Length), one
//! upstream connection per client connection. The relay does no more than a
//! proxy must on the wire (read a head, write it on, read the answer to its
//! length, write it back), so that the two runtimes differ only in how they
//! reach the kernel: readiness and one syscall per read or write (epoll), or
//! submissions batched into one `io_uring_enter` per loop turn (io_uring:
//! tokio-uring's, one submission per read, or `ring`'s, one multishot receive
//! per socket from provided buffers, `DEFER_TASKRUN`).

mod ring;

use std::net::SocketAddr;

const BUFFER: usize = 64 * 1024;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: uring-relay epoll|uring|ring LISTEN UPSTREAM";
    let (mode, listen, upstream) = match &args[..] {
        [_, mode, listen, upstream] => (mode.as_str(), listen, upstream),
        _ => panic!("{usage}"),
    };
    let listen: SocketAddr = listen.parse().expect("LISTEN: ip:port");
    let upstream: SocketAddr = upstream.parse().expect("UPSTREAM: ip:port");
    match mode {
        "epoll" => epoll::run(listen, upstream),
        "uring" => uring::run(listen, upstream),
        "ring" => ring::run(listen, upstream),
        _ => panic!("{usage}"),
    }
}

/// Where a message's head ends, and the whole message's length by its
/// Content-Length (0 without one: a head-only request).
fn framed(buf: &[u8]) -> Option<usize> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = &buf[..end];
    let length = head
        .split(|&b| b == b'\n')
        .find_map(|line| {
            let (name, value) = line.split_at(line.iter().position(|&b| b == b':')?);
            name.eq_ignore_ascii_case(b"content-length")
                .then(|| std::str::from_utf8(&value[1..]).ok()?.trim().parse().ok())
                .flatten()
        })
        .unwrap_or(0);
    Some(end + length)
}

mod epoll {
    use super::{framed, BUFFER};
    use std::net::SocketAddr;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    pub fn run(listen: SocketAddr, upstream: SocketAddr) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let listener = TcpListener::bind(listen).await.unwrap();
            let local = tokio::task::LocalSet::new();
            local
                .run_until(async move {
                    loop {
                        let (client, _) = listener.accept().await.unwrap();
                        tokio::task::spawn_local(async move {
                            let _ = relay(client, upstream).await;
                        });
                    }
                })
                .await;
        });
    }

    async fn relay(mut client: TcpStream, upstream: SocketAddr) -> std::io::Result<()> {
        client.set_nodelay(true)?;
        let mut up = TcpStream::connect(upstream).await?;
        up.set_nodelay(true)?;
        let mut request = vec![0u8; BUFFER];
        let mut answer = vec![0u8; BUFFER];
        loop {
            let Some(n) = read_message(&mut client, &mut request).await? else {
                return Ok(());
            };
            up.write_all(&request[..n]).await?;
            let Some(m) = read_message(&mut up, &mut answer).await? else {
                return Ok(());
            };
            client.write_all(&answer[..m]).await?;
        }
    }

    /// Reads one whole message into `buf`; `None`: closed first.
    async fn read_message(
        stream: &mut TcpStream,
        buf: &mut [u8],
    ) -> std::io::Result<Option<usize>> {
        let mut n = 0;
        loop {
            let read = stream.read(&mut buf[n..]).await?;
            if read == 0 {
                return Ok(None);
            }
            n += read;
            if framed(&buf[..n]).is_some_and(|whole| n >= whole) {
                return Ok(Some(n));
            }
        }
    }
}

mod uring {
    use super::{framed, BUFFER};
    use std::net::SocketAddr;
    use tokio_uring::buf::BoundedBuf;
    use tokio_uring::net::{TcpListener, TcpStream};

    pub fn run(listen: SocketAddr, upstream: SocketAddr) {
        tokio_uring::builder().entries(1024).start(async move {
            let listener = TcpListener::bind(listen).unwrap();
            loop {
                let (client, _) = listener.accept().await.unwrap();
                tokio_uring::spawn(async move {
                    let _ = relay(client, upstream).await;
                });
            }
        });
    }

    async fn relay(client: TcpStream, upstream: SocketAddr) -> std::io::Result<()> {
        client.set_nodelay(true)?;
        let up = TcpStream::connect(upstream).await?;
        up.set_nodelay(true)?;
        let mut request = Vec::with_capacity(BUFFER);
        let mut answer = Vec::with_capacity(BUFFER);
        loop {
            let Some(filled) = read_message(&client, request).await? else {
                return Ok(());
            };
            let (written, buf) = up.write_all(filled).await;
            written?;
            request = buf;
            let Some(filled) = read_message(&up, answer).await? else {
                return Ok(());
            };
            let (written, buf) = client.write_all(filled).await;
            written?;
            answer = buf;
        }
    }

    /// Reads one whole message into `buf` (emptied first); `None`: closed first.
    async fn read_message(
        stream: &TcpStream,
        mut buf: Vec<u8>,
    ) -> std::io::Result<Option<Vec<u8>>> {
        buf.clear();
        loop {
            let start = buf.len();
            let (read, slice) = stream.read(buf.slice(start..)).await;
            buf = slice.into_inner();
            if read? == 0 {
                return Ok(None);
            }
            if framed(&buf).is_some_and(|whole| buf.len() >= whole) {
                return Ok(Some(buf));
            }
        }
    }
}
