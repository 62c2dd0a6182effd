//! `EngineError`: a failure of a control-path call, recorded where it came from;
//! `BodyError`: what a body stream fails with on the data path.

/// A body's failure, whichever HTTP implementation read it.
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// A failure of a control-path call (start, reload, shutdown). Turned into a
/// Python exception only at the binding boundary.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("invalid snapshot: {0}")]
    Snapshot(String),
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open the access log {target}: {source}")]
    AccessLog {
        target: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("listeners cannot change on reload (running {running:?}, new {new:?}); restart to change them")]
    ListenersChanged {
        running: Vec<String>,
        new: Vec<String>,
    },
    #[error("the engine is shut down")]
    Closed,
}
