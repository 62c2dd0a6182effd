//! pymirror's data plane: listeners, routing, forwarding and mirroring, in plain Rust.
//!
//! The Python control plane hands over a [`snapshot::Snapshot`]; [`engine::Engine`]
//! compiles it into a [`table::RouteTable`] and serves it. `bindings` (feature
//! `python`) is the only module that knows about Python.
#![forbid(unsafe_code)]

pub mod access_log;
pub mod body;
pub mod cluster;
pub mod compare;
pub mod engine;
pub mod error;
pub mod fault;
pub mod forward;
pub mod header_ops;
pub mod headers;
pub mod inspect;
pub mod matcher;
pub mod mirror;
pub mod outlier;
pub mod pool;
pub mod proxy;
pub mod retry;
pub mod rewrite;
pub mod sampling;
pub mod server;
pub mod session;
pub mod snapshot;
pub mod splice;
pub mod stats;
pub mod table;
pub mod tunnel;
pub mod upgrade;
pub mod upstream;
pub mod workers;

#[cfg(feature = "python")]
mod bindings;

#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
