//! pymirror's data plane: listeners, routing, forwarding and mirroring, in plain Rust.
//!
//! The Python control plane hands over a [`Snapshot`]; [`Engine`] compiles it into a
//! route table and serves it. The modules follow a request's way, each depending
//! only on those above it in this list (a test, `tests/layering.rs`, keeps it so):
//! the leaves (`snapshot`, `sampling`, `transport`, `error`), `telemetry`, `http`,
//! `upstream`, `body`, `splice`, `mirror`, `route`, `proxy`, `listen`, `engine`,
//! and `bindings` (feature `python`), the only module that knows about Python.
#![forbid(unsafe_code)]

mod error;
mod sampling;
mod snapshot;
mod tls;
mod transport;

mod telemetry;

mod http;

mod upstream;

mod body;

mod splice;

mod mirror;

mod route;

mod proxy;

mod listen;

mod engine;

#[cfg(feature = "python")]
mod bindings;

pub use body::capture::Captured;
pub use engine::{Engine, EngineOptions, StatsReport};
pub use error::EngineError;
pub use listen::ServerSettings;
pub use mirror::compare::ComparedPair;
pub use snapshot::Snapshot;

/// What the examples measure of the internals (feature `internals`; not an API).
#[cfg(feature = "internals")]
pub mod internals {
    pub use crate::splice::relay::splice;
    pub use crate::telemetry::TcpStats;
    pub use crate::transport::Stream;
}

#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: pymirror_allocator::Allocator = pymirror_allocator::Allocator;
