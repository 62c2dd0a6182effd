//! PyO3 bindings: `pymirror._native`. A thin shell: parse arguments, release
//! the GIL around blocking calls, turn `EngineError` into Python exceptions.

use std::time::Duration;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};

use crate::body::capture::Captured;

use crate::engine::{Engine, EngineOptions};
use crate::error::EngineError;
use crate::listen::ServerSettings;
use crate::snapshot::{Snapshot, SCHEMA};

/// Raises the matching class of `pymirror.errors` (one `PymirrorError` tree,
/// defined in Python so that pure-Python code can raise and catch it too).
fn to_py(py: Python<'_>, err: EngineError) -> PyErr {
    let class = match &err {
        EngineError::Snapshot(_) => "SnapshotError",
        EngineError::Bind { .. } => "ListenError",
        EngineError::ListenersChanged { .. } => "ReloadError",
        EngineError::AccessLog { .. } | EngineError::Runtime(_) | EngineError::Closed => {
            "EngineError"
        }
    };
    match py.import("pymirror.errors").and_then(|m| m.getattr(class)) {
        Ok(cls) => PyErr::from_type(
            cls.cast_into().expect("an exception class"),
            err.to_string(),
        ),
        Err(import_error) => import_error,
    }
}

fn parse(py: Python<'_>, snapshot_json: &str) -> PyResult<Snapshot> {
    Snapshot::from_json(snapshot_json).map_err(|e| to_py(py, EngineError::Snapshot(e.to_string())))
}

/// A running data plane. See `pymirror/_native.pyi`.
#[pyclass(frozen, name = "Engine", module = "pymirror._native")]
struct PyEngine {
    inner: Engine,
}

#[pymethods]
impl PyEngine {
    #[new]
    #[pyo3(signature = (snapshot_json, *, worker_threads = 0, header_read_timeout = 30.0, max_header_bytes = 65536, access_log = None, access_log_fields = None, mirror_buffer_budget = crate::engine::DEFAULT_MIRROR_BUFFER_BUDGET, compare_queue_capacity = crate::mirror::compare::DEFAULT_QUEUE_CAPACITY, compare_buffer_budget = crate::body::capture::DEFAULT_BUFFER_BUDGET, reuse_port = false))]
    // Python's keyword arguments, one per option: a struct would only move the list.
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        snapshot_json: &str,
        worker_threads: usize,
        header_read_timeout: f64,
        max_header_bytes: usize,
        access_log: Option<String>,
        access_log_fields: Option<Vec<String>>,
        mirror_buffer_budget: u64,
        compare_queue_capacity: usize,
        compare_buffer_budget: u64,
        reuse_port: bool,
    ) -> PyResult<Self> {
        let snapshot = parse(py, snapshot_json)?;
        let timeout = Duration::try_from_secs_f64(header_read_timeout)
            .map_err(|_| PyValueError::new_err("header_read_timeout must be a positive number"))?;
        let options = EngineOptions {
            worker_threads,
            server: ServerSettings {
                header_read_timeout: timeout,
                max_header_bytes,
            },
            access_log,
            access_log_fields,
            mirror_buffer_budget,
            compare_queue_capacity,
            compare_buffer_budget,
            reuse_port,
        };
        py.detach(|| Engine::start(&snapshot, options))
            .map(|inner| Self { inner })
            .map_err(|e| to_py(py, e))
    }

    #[getter]
    fn addresses(&self) -> Vec<String> {
        self.inner
            .addresses()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[getter]
    fn running(&self) -> bool {
        self.inner.is_running()
    }

    fn reload(&self, py: Python<'_>, snapshot_json: &str) -> PyResult<()> {
        let snapshot = parse(py, snapshot_json)?;
        py.detach(|| self.inner.reload(&snapshot))
            .map_err(|e| to_py(py, e))
    }

    fn stats_json(&self, py: Python<'_>) -> PyResult<String> {
        let report = py.detach(|| serde_json::to_string(&self.inner.stats()));
        report.map_err(|e| PyValueError::new_err(e.to_string()))
    }

    /// Up to `max` compared pairs, oldest first, as dicts (see `_native.pyi`).
    /// Bodies are joined into `bytes` here, on the caller's thread.
    #[pyo3(signature = (max = 1024))]
    fn drain_compared<'py>(&self, py: Python<'py>, max: usize) -> PyResult<Bound<'py, PyList>> {
        let pairs = py.detach(|| self.inner.drain_compared(max));
        let items = pairs
            .iter()
            .map(|p| {
                let d = PyDict::new(py);
                d.set_item("virtual_service", &p.key.virtual_service)?;
                d.set_item("route", &p.key.route)?;
                d.set_item("mirror", p.key.mirror)?;
                d.set_item("method", p.method.as_str())?;
                d.set_item("path", &p.path)?;
                d.set_item("primary", side(py, &p.primary)?)?;
                d.set_item("mirror_response", side(py, &p.mirror)?)?;
                Ok(d)
            })
            .collect::<PyResult<Vec<_>>>()?;
        PyList::new(py, items)
    }

    fn shutdown(&self, py: Python<'_>, drain_seconds: f64) -> PyResult<bool> {
        let drain = Duration::try_from_secs_f64(drain_seconds)
            .map_err(|_| PyValueError::new_err("drain_seconds must be a non-negative number"))?;
        Ok(py.detach(|| self.inner.shutdown(drain)))
    }

    fn cut_drain(&self) {
        self.inner.cut_drain();
    }

    fn reopen_access_log(&self) {
        self.inner.reopen_access_log();
    }
}

fn side<'py>(py: Python<'py>, c: &Captured) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("status", c.status)?;
    d.set_item("headers", c.header_pairs())?;
    d.set_item("trailers", c.trailer_pairs())?;
    d.set_item("body", PyBytes::new(py, c.body_bytes()))?;
    d.set_item("body_len", c.body_len)?;
    d.set_item("body_hash", c.body_hash)?;
    d.set_item("truncated", c.truncated)?;
    d.set_item("cut", c.cut)?;
    d.set_item("latency", c.latency.as_secs_f64())?;
    Ok(d)
}

/// Checks a snapshot as the engine would, binding nothing.
#[pyfunction]
fn validate(py: Python<'_>, snapshot_json: &str) -> PyResult<()> {
    let snapshot = parse(py, snapshot_json)?;
    Engine::validate(&snapshot).map_err(|e| to_py(py, e))
}

/// Why the core's regex engine refuses `pattern`; `None`: it compiles.
#[pyfunction]
fn regex_problem(pattern: &str) -> Option<String> {
    crate::http::matcher::regex_problem(pattern)
}

#[pymodule(name = "_native", gil_used = false)]
fn native_module(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyEngine>()?;
    m.add_function(wrap_pyfunction!(validate, m)?)?;
    m.add_function(wrap_pyfunction!(regex_problem, m)?)?;
    m.add("SNAPSHOT_SCHEMA", SCHEMA)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
