//! The engine: owns the runtime, the listeners and the published table, and
//! offers the control-path calls (start, reload, stats, shutdown) that the
//! Python layer wraps. Every call here is off the request path.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::TcpSocket;
use tokio::runtime::Runtime;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::access_log::{AccessLog, AccessLogReport};
use crate::body::MirrorBudget;
use crate::error::EngineError;
use crate::pool::EndpointIds;
use crate::proxy::{Published, Shared};
use crate::server::{self, ServerSettings};
use crate::snapshot::Snapshot;
use crate::stats::{ListenerStats, StatsRegistry, StatsReport, BUCKET_BOUNDS_SECONDS};
use crate::table::RouteTable;
use crate::upstream::{ConnectionGauges, Upstreams};

/// Pending connections the kernel queues per listener.
const LISTEN_BACKLOG: u32 = 4096;

#[derive(Debug, Clone, Default)]
pub struct EngineOptions {
    /// Runtime worker threads; 0 means one per core.
    pub worker_threads: usize,
    pub server: ServerSettings,
    /// Where the access log goes (a path, or `-` for standard output); `None`: nowhere.
    pub access_log: Option<String>,
    /// Bytes queued for all mirror copies together; past it copies are cut.
    pub mirror_buffer_budget: u64,
}

/// 256 MiB: with the per-copy 4 MiB buffer, 64 slow large copies at once.
pub const DEFAULT_MIRROR_BUFFER_BUDGET: u64 = 256 * 1024 * 1024;

struct Running {
    runtime: Runtime,
    shutdown: watch::Sender<bool>,
    listeners: Vec<JoinHandle<()>>,
}

pub struct Engine {
    shared: Arc<Shared>,
    /// Counter sets by label; locked on compile and on stats reads only.
    registry: Mutex<StatsRegistry>,
    /// Endpoint ids, stable across reloads so pooled connections stay warm.
    endpoint_ids: EndpointIds,
    listener_specs: Vec<String>,
    addresses: Vec<SocketAddr>,
    running: Mutex<Option<Running>>,
}

impl Engine {
    /// Checks a snapshot the way `start` and `reload` would, binding nothing.
    pub fn validate(snapshot: &Snapshot) -> Result<(), EngineError> {
        RouteTable::compile(
            snapshot,
            &mut StatsRegistry::default(),
            &EndpointIds::default(),
        )
        .map(drop)
        .map_err(EngineError::Snapshot)
    }

    /// Compiles the snapshot, binds every listener and starts serving. Fails
    /// whole: if one listener cannot bind, none is left open.
    pub fn start(snapshot: &Snapshot, options: EngineOptions) -> Result<Self, EngineError> {
        let mut registry = StatsRegistry::default();
        let endpoint_ids = EndpointIds::default();
        let table = RouteTable::compile(snapshot, &mut registry, &endpoint_ids)
            .map_err(EngineError::Snapshot)?;
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.enable_all().thread_name("pymirror-worker");
        if options.worker_threads > 0 {
            builder.worker_threads(options.worker_threads);
        }
        let runtime = builder.build().map_err(EngineError::Runtime)?;

        let bound = {
            let _context = runtime.enter();
            snapshot
                .listeners
                .iter()
                .map(|l| bind(&l.address))
                .collect::<Result<Vec<_>, _>>()?
        };
        let addresses = bound
            .iter()
            .map(|l| l.local_addr().map_err(EngineError::Runtime))
            .collect::<Result<Vec<_>, _>>()?;
        let access_log = options
            .access_log
            .as_deref()
            .map(|target| {
                AccessLog::open(target)
                    .map(Arc::new)
                    .map_err(|source| EngineError::AccessLog {
                        target: target.to_owned(),
                        source,
                    })
            })
            .transpose()?;
        let connections = Arc::new(ConnectionGauges::default());
        let shared = Arc::new(Shared {
            published: ArcSwap::from_pointee(Published {
                table,
                upstreams: Upstreams::new(&snapshot.upstream, &connections),
                limits: snapshot.limits.clone(),
            }),
            listeners: bound.iter().map(|_| ListenerStats::default()).collect(),
            connections,
            access_log,
            mirror_budget: MirrorBudget::new(options.mirror_buffer_budget),
        });
        let (shutdown, signal) = watch::channel(false);
        let listeners = bound
            .into_iter()
            .enumerate()
            .map(|(i, listener)| {
                runtime.spawn(server::serve(
                    listener,
                    i,
                    shared.clone(),
                    options.server.clone(),
                    signal.clone(),
                ))
            })
            .collect();
        Ok(Self {
            shared,
            registry: Mutex::new(registry),
            endpoint_ids,
            listener_specs: snapshot
                .listeners
                .iter()
                .map(|l| l.address.clone())
                .collect(),
            addresses,
            running: Mutex::new(Some(Running {
                runtime,
                shutdown,
                listeners,
            })),
        })
    }

    /// The bound addresses, in the snapshot's listener order (port 0 resolved).
    pub fn addresses(&self) -> &[SocketAddr] {
        &self.addresses
    }

    /// Swaps in a new snapshot atomically. In-flight requests finish on the
    /// table they started with. A snapshot that does not compile changes nothing.
    pub fn reload(&self, snapshot: &Snapshot) -> Result<(), EngineError> {
        if self
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_none()
        {
            return Err(EngineError::Closed);
        }
        let new_specs: Vec<String> = snapshot
            .listeners
            .iter()
            .map(|l| l.address.clone())
            .collect();
        if new_specs != self.listener_specs {
            return Err(EngineError::ListenersChanged {
                running: self.listener_specs.clone(),
                new: new_specs,
            });
        }
        let table = {
            let mut registry = self.registry.lock().unwrap_or_else(PoisonError::into_inner);
            RouteTable::compile(snapshot, &mut registry, &self.endpoint_ids)
                .map_err(EngineError::Snapshot)?
        };
        let current = self.shared.published.load();
        // Keep warm connection pools unless their settings changed.
        let upstreams = if current.upstreams.settings == snapshot.upstream {
            current.upstreams.clone()
        } else {
            Upstreams::new(&snapshot.upstream, &self.shared.connections)
        };
        self.shared.published.store(Arc::new(Published {
            table,
            upstreams,
            limits: snapshot.limits.clone(),
        }));
        Ok(())
    }

    /// One bulk read of every counter.
    pub fn stats(&self) -> StatsReport {
        let (destinations, mirrors) = self
            .registry
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .report();
        StatsReport {
            version: self.shared.published.load().table.version.clone(),
            bucket_bounds_seconds: &BUCKET_BOUNDS_SECONDS,
            listeners: self
                .shared
                .listeners
                .iter()
                .zip(&self.addresses)
                .map(|(s, a)| s.report(a.to_string()))
                .collect(),
            destinations,
            mirrors,
            upstream_connections: self.shared.connections.report(),
            access_log: self.shared.access_log.as_ref().map_or(
                AccessLogReport {
                    written: 0,
                    dropped: 0,
                },
                |log| log.report(),
            ),
            mirror_buffer_queued_bytes: self.shared.mirror_budget.queued(),
        }
    }

    pub fn is_running(&self) -> bool {
        self.running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
    }

    /// Stops accepting, lets in-flight requests finish for up to `drain`, then
    /// stops everything (mirror copies still in flight are abandoned).
    /// Returns whether every connection finished within the deadline.
    /// Blocks the calling thread; calling it again is a no-op returning true.
    pub fn shutdown(&self, drain: Duration) -> bool {
        let Some(running) = self
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        else {
            return true;
        };
        let _ = running.shutdown.send(true);
        let drained = running.runtime.block_on(async {
            tokio::time::timeout(drain, async {
                for listener in running.listeners {
                    let _ = listener.await;
                }
            })
            .await
            .is_ok()
        });
        running.runtime.shutdown_timeout(Duration::from_millis(250));
        if let Some(log) = &self.shared.access_log {
            log.settle(Duration::from_secs(2));
        }
        drained
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.shutdown(Duration::ZERO);
    }
}

fn bind(address: &str) -> Result<tokio::net::TcpListener, EngineError> {
    let fail = |source| EngineError::Bind {
        address: address.to_owned(),
        source,
    };
    let addr: SocketAddr = address.parse().map_err(|_| {
        fail(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "expected ip:port",
        ))
    })?;
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(fail)?;
    socket.set_reuseaddr(true).map_err(fail)?;
    socket.bind(addr).map_err(fail)?;
    socket.listen(LISTEN_BACKLOG).map_err(fail)
}
