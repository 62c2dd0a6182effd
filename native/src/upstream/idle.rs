//! One worker thread's idle HTTP/1.1 upstream connections, by endpoint:
//! taking and returning one touches no lock and hashes nothing (endpoints
//! carry small integer ids). Kept per request body type, so that primaries'
//! and mirrors' connections stay apart.

use std::cell::RefCell;
use std::marker::PhantomData;
use std::thread::LocalKey;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;

use crate::upstream::http1::session::Connection;
use crate::upstream::multiplex::Multiplexed;

struct IdleConn {
    conn: Connection,
    /// The name its TLS session was made for (`None`: plaintext).
    name: Option<ServerName<'static>>,
    /// Requests it has carried.
    sent: u64,
    /// When the pool's idle timeout closes it, checked out or not.
    expires: Instant,
}

/// One thread's idle connections, by endpoint id.
/// Typed by the request body of the role that uses them, so that the
/// primaries' and the mirrors' connections stay apart.
pub struct IdleLists<B> {
    by_endpoint: Vec<Vec<IdleConn>>,
    role: PhantomData<fn() -> B>,
}

impl<B> Default for IdleLists<B> {
    fn default() -> Self {
        Self {
            by_endpoint: Vec::new(),
            role: PhantomData,
        }
    }
}

/// A request body type with its own per-thread pool.
pub trait PooledBody: Multiplexed {
    fn idle() -> &'static LocalKey<RefCell<IdleLists<Self>>>;
}

/// How often each worker closes its idle connections past their timeout.
pub const IDLE_SWEEP_PERIOD: Duration = Duration::from_secs(1);

/// Closes this thread's idle connections of one body type whose idle timeout
/// has passed and those their peer has closed.
pub fn sweep<B: PooledBody>() {
    let now = Instant::now();
    B::idle().with(|idle| {
        for list in &mut idle.borrow_mut().by_endpoint {
            // Dropping a connection closes its socket.
            list.retain_mut(|idle| idle.expires > now && idle.conn.is_usable());
        }
    });
}

/// Where an HTTP/1.1 connection on loan to one exchange goes back to.
pub struct Kept<B: PooledBody> {
    pub(crate) name: Option<ServerName<'static>>,
    pub(crate) endpoint: u32,
    pub(crate) sent: u64,
    pub(crate) max_requests: Option<u64>,
    pub(crate) max_idle: usize,
    pub(crate) idle_timeout: Duration,
    pub(crate) role: PhantomData<fn() -> B>,
}

impl<B: PooledBody> Kept<B> {
    /// Back to the pool of the thread that finished reading the answer.
    pub(crate) fn give_back(self, conn: Connection) {
        if self.max_requests.is_some_and(|max| self.sent >= max) {
            // Retired after its lifetime's requests.
            return;
        }
        B::idle().with(|idle| {
            let mut idle = idle.borrow_mut();
            let index = self.endpoint as usize;
            if idle.by_endpoint.len() <= index {
                idle.by_endpoint.resize_with(index + 1, Vec::new);
            }
            let list = &mut idle.by_endpoint[index];
            if list.len() < self.max_idle {
                list.push(IdleConn {
                    conn,
                    name: self.name,
                    sent: self.sent,
                    expires: Instant::now() + self.idle_timeout,
                });
            }
        });
    }
}

/// The warmest usable connection to `endpoint` made for `name`, and the
/// requests it has carried.
pub fn take<B: PooledBody>(
    endpoint: u32,
    name: Option<&ServerName<'static>>,
    at: Option<Instant>,
) -> Option<(Connection, u64)> {
    let now = at.unwrap_or_else(Instant::now);
    B::idle().with(|idle| {
        let mut idle = idle.borrow_mut();
        let list = idle.by_endpoint.get_mut(endpoint as usize)?;
        // Most recently used first: the warmest connection, and the
        // stale ones age out at the bottom.
        let mut found = None;
        let mut other = Vec::new();
        while let Some(mut idle) = list.pop() {
            if idle.expires <= now {
                list.clear();
                break;
            }
            if idle.name.as_ref() != name {
                // Made for another name (auto SNI from another Host).
                other.push(idle);
                continue;
            }
            if idle.conn.is_usable() {
                found = Some((idle.conn, idle.sent));
                break;
            }
        }
        list.extend(other.into_iter().rev());
        found
    })
}
