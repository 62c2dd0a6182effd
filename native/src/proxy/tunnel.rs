//! CONNECT, served only to destinations the config names: a route whose match
//! says `method: {exact: CONNECT}` takes the tunnel to one endpoint of its
//! destination. The authority the client asked for only selects the virtual
//! service, as a Host does: the proxy never dials what a client names. After
//! the 200 the bytes are spliced both ways, as on a tcp route.

use std::sync::Arc;
use std::time::Duration;

use crate::http::local_reply::LocalReply;
use crate::http::retry::TryOutcome;
use crate::transport::Stream;
use crate::upstream::cluster::{Cluster, HeldLease};
use crate::upstream::dial::{dial, DialError};
use crate::upstream::gauges::{ConnectionGauges, GaugeHold, Role};

/// The proxy's end of a tunnel: its connection to the destination, counted
/// among the open upstream connections while it lasts.
#[derive(Debug)]
pub struct Opened {
    pub stream: Stream,
    _open: GaugeHold,
    /// The destination's connection limit counts the tunnel for its life.
    _lease: HeldLease,
}

/// Connects to one endpoint of `cluster` (its connection limit and outlier
/// detection apply as to any request); the error is the client's answer.
pub async fn open(
    cluster: &Arc<Cluster>,
    connect_timeout: Duration,
    gauges: &ConnectionGauges,
) -> Result<Opened, LocalReply> {
    let lease = cluster.acquire_held().map_err(LocalReply::from)?;
    let endpoint = lease.endpoint();
    let authority = endpoint.authority.as_str();
    let gauge = gauges.gauge(Role::Primary, authority);
    let tls = cluster.spliced_tls();
    let dialed = dial(&endpoint.authority, connect_timeout, None, tls, &gauge).await;
    match dialed {
        Ok(stream) => {
            // Connected: what outlier detection counts as an answer.
            cluster.record(endpoint, TryOutcome::Status(200));
            let open = GaugeHold::new(gauge);
            Ok(Opened {
                stream,
                _open: open,
                _lease: lease,
            })
        }
        Err(failed) => {
            cluster.record(endpoint, TryOutcome::ConnectFailure);
            Err(match failed {
                DialError::Tls => LocalReply::UpstreamTls,
                DialError::Failed | DialError::TimedOut => LocalReply::UpstreamConnect,
            })
        }
    }
}
