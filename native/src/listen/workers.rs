//! Worker threads, one single-threaded runtime each, in nginx's manner: every
//! worker accepts on its own `SO_REUSEPORT` socket and serves its connections
//! start to finish on its own thread. No task ever migrates, so there is no
//! work stealing, no cross-thread wake-up per request, and each thread's
//! upstream pool is reused by the same thread that filled it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::error::EngineError;

/// Pending connections the kernel queues per listening socket.
const LISTEN_BACKLOG: i32 = 4096;

/// What a worker is told: keep serving (`None`), or drain within a deadline.
pub type DrainSignal = watch::Receiver<Option<Duration>>;

/// Binds `count` sockets to `address` with `SO_REUSEPORT` (the kernel spreads
/// new connections across them). Port 0 is resolved by the first socket and
/// reused by the others, so every worker listens on the same port.
///
/// `SO_REUSEPORT` would let another process bind the same address too, and
/// the kernel would split the traffic between the two in silence. Unless
/// `share` says that is wanted (a start-new-then-stop-old upgrade), a socket
/// without it is bound first: it fails where anything listens already.
pub fn bind_shared(
    address: &str,
    count: usize,
    share: bool,
) -> Result<Vec<std::net::TcpListener>, EngineError> {
    let fail = |source| EngineError::Bind {
        address: address.to_owned(),
        source,
    };
    let mut addr: SocketAddr = address.parse().map_err(|_| {
        fail(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "expected ip:port",
        ))
    })?;
    if !share && addr.port() != 0 {
        claim(addr).map_err(fail)?;
    }
    let mut sockets = Vec::with_capacity(count);
    for _ in 0..count.max(1) {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
            .map_err(fail)?;
        socket.set_reuse_address(true).map_err(fail)?;
        socket.set_reuse_port(true).map_err(fail)?;
        socket.bind(&addr.into()).map_err(fail)?;
        socket.listen(LISTEN_BACKLOG).map_err(fail)?;
        let listener = std::net::TcpListener::from(socket);
        addr = listener.local_addr().map_err(fail)?;
        sockets.push(listener);
    }
    Ok(sockets)
}

/// Fails with "address in use" when something listens on `addr` already,
/// `SO_REUSEPORT` or not (`SO_REUSEADDR` lets connections in TIME_WAIT pass).
fn claim(addr: SocketAddr) -> std::io::Result<()> {
    let probe = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    probe.set_reuse_address(true)?;
    probe.bind(&addr.into()).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AddrInUse {
            std::io::Error::new(
                e.kind(),
                "already served by another process (SO_REUSEPORT would split the traffic \
                 with it in silence; pass --reuse-port to share it on purpose)",
            )
        } else {
            e
        }
    })
}

/// The running workers.
pub struct Workers {
    drain: watch::Sender<Option<Duration>>,
    /// Set while draining to end the drain at once (a second SIGTERM).
    cut: Arc<watch::Sender<bool>>,
    threads: Vec<JoinHandle<bool>>,
}

/// Ends a drain in progress at once, from any thread: every worker stops
/// waiting for its open connections, which are then closed.
#[derive(Clone)]
pub struct DrainCut(Arc<watch::Sender<bool>>);

impl DrainCut {
    pub fn cut(&self) {
        let _ = self.0.send(true);
    }
}

impl Workers {
    /// Starts one thread per element of `per_worker`; each builds its runtime
    /// and runs `serve(listeners, drain)` to completion. `serve` must return
    /// once the drain signal fires and its connections are done; the worker
    /// then gives it until the deadline, and reports whether it made it.
    pub fn start<F, Fut>(
        per_worker: Vec<Vec<std::net::TcpListener>>,
        serve: F,
    ) -> Result<Self, EngineError>
    where
        F: Fn(Vec<TcpListener>, DrainSignal) -> Fut + Send + Clone + 'static,
        Fut: std::future::Future<Output = ()> + 'static,
    {
        let (drain, signal) = watch::channel(None);
        let (cut, cut_signal) = watch::channel(false);
        let mut threads = Vec::with_capacity(per_worker.len());
        for (index, listeners) in per_worker.into_iter().enumerate() {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(EngineError::Runtime)?;
            let serve = serve.clone();
            let mut signal = signal.clone();
            let mut cut_signal = cut_signal.clone();
            let thread = std::thread::Builder::new()
                .name(format!("pymirror-worker-{index}"))
                .spawn(move || {
                    let drained = runtime.block_on(async move {
                        let listeners = listeners
                            .into_iter()
                            .map(|l| {
                                l.set_nonblocking(true)?;
                                TcpListener::from_std(l)
                            })
                            .collect::<std::io::Result<Vec<_>>>();
                        let Ok(listeners) = listeners else {
                            return false;
                        };
                        let serving = serve(listeners, signal.clone());
                        tokio::pin!(serving);
                        // Serve until told to drain, then until the deadline.
                        let deadline = tokio::select! {
                            () = &mut serving => return true,
                            changed = signal.wait_for(Option::is_some) => {
                                changed.map_or(Duration::ZERO, |d| d.unwrap_or_default())
                            }
                        };
                        tokio::select! {
                            done = tokio::time::timeout(deadline, serving) => done.is_ok(),
                            _ = cut_signal.wait_for(|cut| *cut) => false,
                        }
                    });
                    // Copies still in flight to mirrors are abandoned here.
                    runtime.shutdown_timeout(Duration::from_millis(250));
                    drained
                })
                .map_err(EngineError::Runtime)?;
            threads.push(thread);
        }
        Ok(Self {
            drain,
            cut: Arc::new(cut),
            threads,
        })
    }

    /// The handle that ends a drain early; usable while `drain` blocks.
    pub fn cut_handle(&self) -> DrainCut {
        DrainCut(self.cut.clone())
    }

    /// Tells every worker to drain within `deadline`, waits for them, and
    /// returns whether all of them finished their connections in time.
    pub fn drain(self, deadline: Duration) -> bool {
        let _ = self.drain.send(Some(deadline));
        // Join every thread, even after one reports a miss.
        let finished: Vec<bool> = self
            .threads
            .into_iter()
            .map(|t| t.join().unwrap_or(false))
            .collect();
        finished.into_iter().all(|ok| ok)
    }
}

/// Worker threads when the caller asked for "one per core" (0).
pub fn default_count(requested: usize) -> usize {
    if requested > 0 {
        requested
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_another_listener_serves_is_refused_unless_shared() {
        let first = bind_shared("127.0.0.1:0", 2, false).unwrap();
        let address = first[0].local_addr().unwrap().to_string();
        let refused = bind_shared(&address, 2, false).unwrap_err().to_string();
        assert!(refused.contains("--reuse-port"), "{refused}");
        assert!(refused.contains(&address), "{refused}");
        // On purpose: both listen, the kernel spreads connections across them.
        assert_eq!(bind_shared(&address, 1, true).unwrap().len(), 1);
        drop(first);
        // Gone: the address is free again.
        assert_eq!(bind_shared(&address, 1, false).unwrap().len(), 1);
    }

    #[test]
    fn every_worker_socket_shares_one_resolved_port() {
        let sockets = bind_shared("127.0.0.1:0", 3, false).unwrap();
        let ports: Vec<u16> = sockets
            .iter()
            .map(|s| s.local_addr().unwrap().port())
            .collect();
        assert_eq!(ports.len(), 3);
        assert_ne!(ports[0], 0);
        assert!(ports.iter().all(|p| *p == ports[0]));
    }

    #[test]
    fn a_bad_address_is_a_bind_error() {
        assert!(matches!(
            bind_shared("not-an-address", 2, false),
            Err(EngineError::Bind { .. })
        ));
    }

    #[test]
    fn workers_serve_until_drained_and_report_it() {
        let sockets = bind_shared("127.0.0.1:0", 2, false).unwrap();
        let per_worker = sockets.into_iter().map(|s| vec![s]).collect();
        let workers = Workers::start(per_worker, |listeners, mut drain: DrainSignal| async move {
            assert_eq!(listeners.len(), 1);
            let _ = drain.wait_for(Option::is_some).await;
        })
        .unwrap();
        assert!(workers.drain(Duration::from_secs(1)));
    }

    #[test]
    fn a_cut_ends_the_drain_before_its_deadline() {
        let sockets = bind_shared("127.0.0.1:0", 1, false).unwrap();
        let per_worker = sockets.into_iter().map(|s| vec![s]).collect();
        // A worker whose connections never finish.
        let workers = Workers::start(per_worker, |_listeners, _drain| async move {
            std::future::pending::<()>().await;
        })
        .unwrap();
        let cut = workers.cut_handle();
        let started = std::time::Instant::now();
        let draining = std::thread::spawn(move || workers.drain(Duration::from_secs(60)));
        cut.cut();
        // Joins long before the deadline, and reports the connections it cut.
        assert!(!draining.join().unwrap());
        assert!(started.elapsed() < Duration::from_secs(30));
    }

    #[test]
    fn a_worker_past_its_deadline_reports_it() {
        let sockets = bind_shared("127.0.0.1:0", 1, false).unwrap();
        let workers = Workers::start(vec![sockets], |_, _| async {
            std::future::pending::<()>().await;
        })
        .unwrap();
        assert!(!workers.drain(Duration::from_millis(20)));
    }
}
