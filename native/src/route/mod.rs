//! The compiled route tables: a Snapshot turned into what the hot path reads,
//! one compiler for http routes (`http`) and one for tcp routes (`tcp`). Built
//! once per snapshot, immutable afterwards, and published whole; a request
//! loads it once and keeps it for its lifetime.

pub mod http;
pub mod tcp;

#[cfg(test)]
mod properties;

pub use http::{Action, Destination, Route, RouteTable};
