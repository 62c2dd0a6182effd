//! The relay: copies a connection's bytes both ways until both sides have
//! ended (each end's FIN passed on as a shutdown of the other's write side),
//! either fails, or nothing moves for the idle timeout; every client chunk is
//! also offered to the connection's mirror feeds.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::splice::feed::Feed;
use crate::telemetry::TcpStats;
use crate::transport::Stream;

/// Bytes read from a socket at once, at first: small, so that the many quiet
/// connections a cache or database proxy holds cost little memory.
const MIN_CHUNK: usize = 16 * 1024;

/// What a read grows to while it keeps filling its buffer (a bulk transfer):
/// at 256 KiB the copy costs as little CPU per byte as splice(2) through a pipe
/// (examples/splice_vs_copy.rs), at 64 KiB about a third more.
const MAX_CHUNK: usize = 256 * 1024;

/// The next read size: doubled after a read that filled the last one.
fn grow(size: usize, read: usize) -> usize {
    if read >= size {
        (size * 2).min(MAX_CHUNK)
    } else {
        size
    }
}

/// When the last byte went either way, for the idle timeout.
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Relaxed);
    }

    /// Resolves once nothing has moved for `idle`.
    async fn expired(&self, idle: Duration) {
        loop {
            let deadline = self.start + Duration::from_millis(self.last_ms.load(Relaxed)) + idle;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline.into()).await;
        }
    }
}

/// Copies both ways until both sides have ended (each end's FIN passed on as
/// a shutdown of the other's write side), either fails, or the connection is
/// idle for `idle`. Returns whether the idle timeout ended it.
pub async fn splice(
    client: &mut Stream,
    upstream: &mut Stream,
    feeds: &mut [Feed],
    idle: Option<Duration>,
    stats: &TcpStats,
) -> bool {
    // Borrowed halves: no lock between the two directions of a plain socket.
    let (client_read, client_write) = client.split();
    let (upstream_read, upstream_write) = upstream.split();
    let ends = Ends {
        client_read,
        client_write,
        upstream_read,
        upstream_write,
    };
    splice_ends(ends, feeds, idle, stats).await
}

/// `splice` for any two byte streams (upgraded HTTP connections).
pub async fn splice_io<C, U>(
    client: C,
    upstream: U,
    feeds: &mut [Feed],
    idle: Option<Duration>,
    stats: &TcpStats,
) -> bool
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let (client_read, client_write) = tokio::io::split(client);
    let (upstream_read, upstream_write) = tokio::io::split(upstream);
    let ends = Ends {
        client_read,
        client_write,
        upstream_read,
        upstream_write,
    };
    splice_ends(ends, feeds, idle, stats).await
}

/// The four halves a splice copies between.
struct Ends<CR, CW, UR, UW> {
    client_read: CR,
    client_write: CW,
    upstream_read: UR,
    upstream_write: UW,
}

async fn splice_ends<CR, CW, UR, UW>(
    ends: Ends<CR, CW, UR, UW>,
    feeds: &mut [Feed],
    idle: Option<Duration>,
    stats: &TcpStats,
) -> bool
where
    CR: AsyncRead + Unpin,
    CW: AsyncWrite + Unpin,
    UR: AsyncRead + Unpin,
    UW: AsyncWrite + Unpin,
{
    let activity = Activity::new();
    let Ends {
        mut client_read,
        mut client_write,
        mut upstream_read,
        mut upstream_write,
    } = ends;
    let to_upstream = async {
        let mut size = MIN_CHUNK;
        let mut buf = BytesMut::with_capacity(size);
        loop {
            // Reuses the allocation once every earlier chunk has been written
            // (and the mirrors are done with it): no copy per chunk.
            buf.reserve(size);
            let n = client_read.read_buf(&mut buf).await?;
            size = grow(size, n);
            if n == 0 {
                upstream_write.shutdown().await?;
                for feed in feeds.iter_mut() {
                    feed.finish();
                }
                return Ok::<(), std::io::Error>(());
            }
            activity.touch();
            let chunk = buf.split().freeze();
            for feed in feeds.iter_mut() {
                feed.offer(&chunk);
            }
            upstream_write.write_all(&chunk).await?;
            stats.bytes_received.fetch_add(n as u64, Relaxed);
        }
    };
    let to_client = async {
        let mut buf = vec![0u8; MIN_CHUNK];
        loop {
            let n = upstream_read.read(&mut buf).await?;
            let size = grow(buf.len(), n);
            if size > buf.len() {
                buf.resize(size, 0);
            }
            if n == 0 {
                client_write.shutdown().await?;
                return Ok::<(), std::io::Error>(());
            }
            activity.touch();
            client_write.write_all(&buf[..n]).await?;
            stats.bytes_sent.fetch_add(n as u64, Relaxed);
        }
    };
    let both = async {
        // An error either way ends both: the sockets are dropped (closed) by the caller.
        let _ = tokio::try_join!(to_upstream, to_client);
    };
    match idle {
        None => {
            both.await;
            false
        }
        Some(idle) => {
            tokio::select! {
                () = both => false,
                () = activity.expired(idle) => true,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_grow_only_while_they_fill_the_buffer() {
        assert_eq!(grow(MIN_CHUNK, 10), MIN_CHUNK);
        assert_eq!(grow(MIN_CHUNK, MIN_CHUNK), 2 * MIN_CHUNK);
        assert_eq!(grow(MAX_CHUNK, MAX_CHUNK), MAX_CHUNK);
    }
}
