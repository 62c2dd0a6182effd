//! The labels a counter set is kept and reported under.

use serde::Serialize;

/// The labels of a counter set: virtual service, route, destination host, subset.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct StatsKey {
    pub virtual_service: String,
    pub route: String,
    pub host: String,
    pub subset: Option<String>,
}
