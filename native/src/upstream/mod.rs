//! Upstreams: the one dialer, the connection pools (one set for primaries and a
//! separate one for mirrors, so a mirror can never take a primary's
//! connections), clusters with their endpoints and outlier detection, and the
//! open-connection gauges.

pub mod cluster;
pub mod dial;
pub mod either;
pub mod gauges;
pub mod http1;
pub mod idle;
pub mod multiplex;
pub mod outlier;
pub mod pool;
pub mod protocol;
pub mod response;

use std::sync::Arc;
use std::time::Duration;

use crate::snapshot::UpstreamSettings;
use gauges::{ConnectionGauges, Role};
use multiplex::Http2Settings;
use pool::{Pool, PoolSettings};

/// Bytes a mirror's answer head may take, as a request head may by default
/// (`limits.maxHeaderBytes`): past it the copy fails (`protocol`) instead of
/// the worker reading endless headers for a response nobody waits for.
pub const MIRROR_MAX_HEAD_BYTES: usize = 64 * 1024;

/// The kernel receive buffer of a connection to a mirror. A mirror's answer
/// is read only to a bound and then dropped; left to autotuning, a mirror
/// that sends fast would have the kernel on the proxy's host take up to
/// `tcp_rmem`'s maximum per connection on its behalf (copied on the host's
/// CPU) before the proxy stops reading and closes.
pub const MIRROR_RECEIVE_BUFFER: usize = 64 * 1024;

/// The two pool sets, shared across snapshots while their settings hold.
#[derive(Debug, Clone)]
pub struct Upstreams {
    pub primary: Pool,
    pub mirror: Pool,
    pub settings: UpstreamSettings,
}

impl Upstreams {
    pub fn new(settings: &UpstreamSettings, gauges: &Arc<ConnectionGauges>) -> Self {
        let pool = |role| Pool {
            role,
            settings: PoolSettings {
                connect_timeout: Duration::from_millis(settings.connect_timeout_ms),
                idle_timeout: Duration::from_millis(settings.pool_idle_timeout_ms),
                max_idle_per_endpoint: settings.pool_max_idle_per_endpoint as usize,
                max_head_bytes: (role == Role::Mirror).then_some(MIRROR_MAX_HEAD_BYTES),
                receive_buffer: (role == Role::Mirror).then_some(MIRROR_RECEIVE_BUFFER),
                http2: match role {
                    Role::Primary => Http2Settings::default(),
                    // A mirror's answers are read only to a bound: small
                    // windows keep what it can push unread small too.
                    Role::Mirror => Http2Settings {
                        stream_window: 64 * 1024,
                        connection_window: 1024 * 1024,
                        max_header_list: MIRROR_MAX_HEAD_BYTES as u32,
                    },
                },
            },
            gauges: gauges.clone(),
        };
        Self {
            primary: pool(Role::Primary),
            mirror: pool(Role::Mirror),
            settings: settings.clone(),
        }
    }
}
