//! The engine: owns the runtime, the listeners and the published table, and
//! offers the control-path calls (start, reload, stats, shutdown) that the
//! Python layer wraps. Every call here is off the request path.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::body::MirrorBudget;
use crate::error::EngineError;
use crate::listen::ServerSettings;
use crate::mirror::compare::{CompareQueue, ComparedPair};
use crate::proxy::{Published, Shared};
use crate::snapshot::{Protocol, Snapshot};
use crate::telemetry::access_log::AccessLog;
use crate::telemetry::{ListenerStats, StatsRegistry};
use crate::tls;
use crate::upstream::pool::EndpointIds;

mod report;

pub use report::StatsReport;

use crate::listen::workers::{self, DrainCut, Workers};
use crate::route::RouteTable;
use crate::upstream::gauges::ConnectionGauges;
use crate::upstream::Upstreams;

#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Worker threads (each accepts and serves on its own); 0: one per core.
    pub worker_threads: usize,
    pub server: ServerSettings,
    /// Where the access log goes (a path, or `-` for standard output); `None`: nowhere.
    pub access_log: Option<String>,
    /// The fields each access-log line keeps; `None`: all.
    pub access_log_fields: Option<Vec<String>>,
    /// Bytes queued for all mirror copies together; past it copies are cut.
    pub mirror_buffer_budget: u64,
    /// Compared pairs waiting for the control plane; past it a pair is
    /// skipped and counted. 0: `compare::DEFAULT_QUEUE_CAPACITY`.
    pub compare_queue_capacity: usize,
    /// Bytes that captured pairs may hold together (see `compare::CompareBudget`).
    /// 0: `compare::DEFAULT_BUFFER_BUDGET`.
    pub compare_buffer_budget: u64,
    /// Bind listeners that another process serves too (`SO_REUSEPORT` across
    /// processes); else such an address is refused.
    pub reuse_port: bool,
}

/// 256 MiB: with the per-copy 4 MiB buffer, 64 slow large copies at once.
pub const DEFAULT_MIRROR_BUFFER_BUDGET: u64 = 256 * 1024 * 1024;

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            worker_threads: 0,
            server: ServerSettings::default(),
            access_log: None,
            access_log_fields: None,
            mirror_buffer_budget: DEFAULT_MIRROR_BUFFER_BUDGET,
            compare_queue_capacity: crate::mirror::compare::DEFAULT_QUEUE_CAPACITY,
            compare_buffer_budget: crate::body::capture::DEFAULT_BUFFER_BUDGET,
            reuse_port: false,
        }
    }
}

struct Running {
    workers: Workers,
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
    /// Outside `running`: `shutdown` holds the workers while it waits.
    drain_cut: DrainCut,
}

impl Engine {
    /// Checks a snapshot the way `start` and `reload` would, binding nothing.
    pub fn validate(snapshot: &Snapshot) -> Result<(), EngineError> {
        RouteTable::compile(
            snapshot,
            &mut StatsRegistry::default(),
            &EndpointIds::default(),
        )
        .map_err(EngineError::Snapshot)?;
        tls::terminators(&snapshot.listeners)
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
        let worker_count = workers::default_count(options.worker_threads);
        let (per_worker, addresses) = bind_all(snapshot, worker_count, options.reuse_port)?;
        let access_log = open_access_log(&options)?;
        let connections = Arc::new(ConnectionGauges::default());
        let shared = Arc::new(Shared {
            published: ArcSwap::from_pointee(Published {
                table,
                upstreams: Upstreams::new(&snapshot.upstream, &connections),
                limits: snapshot.limits.clone(),
                tls: tls::terminators(&snapshot.listeners).map_err(EngineError::Snapshot)?,
            }),
            listeners: addresses.iter().map(|_| ListenerStats::default()).collect(),
            connections,
            access_log,
            mirror_budget: MirrorBudget::new(options.mirror_buffer_budget),
            compare_queue: CompareQueue::new(
                match options.compare_queue_capacity {
                    0 => crate::mirror::compare::DEFAULT_QUEUE_CAPACITY,
                    n => n,
                },
                match options.compare_buffer_budget {
                    0 => crate::body::capture::DEFAULT_BUFFER_BUDGET,
                    n => n,
                },
            ),
        });
        let protocols: Vec<Protocol> = snapshot.listeners.iter().map(|l| l.protocol).collect();
        let serve = worker_main(shared.clone(), options.server.clone(), protocols);
        let workers = Workers::start(per_worker, serve)?;
        let drain_cut = workers.cut_handle();
        Ok(Self {
            shared,
            registry: Mutex::new(registry),
            endpoint_ids,
            listener_specs: listener_specs(snapshot),
            addresses,
            running: Mutex::new(Some(Running { workers })),
            drain_cut,
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
        let new_specs = listener_specs(snapshot);
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
        let terminators = tls::terminators(&snapshot.listeners).map_err(EngineError::Snapshot)?;
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
            tls: terminators,
        }));
        Ok(())
    }

    /// Takes up to `max` compared pairs off the queue, without waiting.
    pub fn drain_compared(&self, max: usize) -> Vec<ComparedPair> {
        self.shared.compare_queue.drain(max)
    }

    pub fn is_running(&self) -> bool {
        self.running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
    }

    /// Ends the drain in progress (or the next one) at once: `shutdown` stops
    /// waiting for open connections and closes them. From any thread.
    pub fn cut_drain(&self) {
        self.drain_cut.cut();
    }

    /// Has the access log writer reopen its file (logrotate moved it away).
    pub fn reopen_access_log(&self) {
        if let Some(log) = &self.shared.access_log {
            log.reopen();
        }
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
        let drained = running.workers.drain(drain);
        if let Some(log) = &self.shared.access_log {
            log.settle(Duration::from_secs(2));
        }
        drained
    }
}

/// What a listener is, for the reload check: its address, and `tcp:` before
/// it when it splices (a listener cannot change protocol on reload either).
fn listener_specs(snapshot: &Snapshot) -> Vec<String> {
    snapshot
        .listeners
        .iter()
        .map(|l| match l.protocol {
            Protocol::Http => l.address.clone(),
            Protocol::Tcp => format!("tcp:{}", l.address),
            Protocol::Tls => format!("tls:{}", l.address),
        })
        .collect()
}

/// Every listener binds one socket per worker; worker w takes socket w of
/// each listener. All are bound before any serves: start fails whole.
#[allow(clippy::type_complexity)]
fn bind_all(
    snapshot: &Snapshot,
    worker_count: usize,
    share: bool,
) -> Result<(Vec<Vec<std::net::TcpListener>>, Vec<SocketAddr>), EngineError> {
    let mut per_worker: Vec<Vec<std::net::TcpListener>> =
        (0..worker_count).map(|_| Vec::new()).collect();
    let mut addresses = Vec::with_capacity(snapshot.listeners.len());
    for listener in &snapshot.listeners {
        let sockets = workers::bind_shared(&listener.address, worker_count, share)?;
        addresses.push(sockets[0].local_addr().map_err(EngineError::Runtime)?);
        for (w, socket) in sockets.into_iter().enumerate() {
            per_worker[w].push(socket);
        }
    }
    Ok((per_worker, addresses))
}

fn open_access_log(options: &EngineOptions) -> Result<Option<Arc<AccessLog>>, EngineError> {
    options
        .access_log
        .as_deref()
        .map(|target| {
            AccessLog::open(target, options.access_log_fields.as_deref())
                .map(Arc::new)
                .map_err(|source| EngineError::AccessLog {
                    target: target.to_owned(),
                    source,
                })
        })
        .transpose()
}

/// What each worker runs: its listeners' accept loops, and the idle-pool sweep.
fn worker_main(
    shared: Arc<Shared>,
    settings: ServerSettings,
    protocols: Vec<Protocol>,
) -> impl Fn(
    Vec<tokio::net::TcpListener>,
    workers::DrainSignal,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>
       + Send
       + Clone
       + 'static {
    move |listeners: Vec<tokio::net::TcpListener>, drain: workers::DrainSignal| {
        // Not awaited: it ends with the worker's runtime.
        tokio::spawn(crate::body::sweep_idle_forever());
        let serving: Vec<_> = listeners
            .into_iter()
            .enumerate()
            .map(|(index, listener)| {
                tokio::spawn(crate::listen::serve(
                    listener,
                    index,
                    protocols[index],
                    shared.clone(),
                    settings.clone(),
                    drain.clone(),
                ))
            })
            .collect();
        Box::pin(async move {
            for listener in serving {
                let _ = listener.await;
            }
        })
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.shutdown(Duration::ZERO);
    }
}
