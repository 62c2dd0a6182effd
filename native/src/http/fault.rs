//! Fault injection (Istio's HTTPFaultInjection): delay and abort a sampled share.

use std::time::Duration;

use http::StatusCode;

use crate::sampling::Sampler;
use crate::snapshot;

#[derive(Debug, Clone)]
pub struct Fault {
    delay: Option<(Duration, Sampler)>,
    abort: Option<(Abort, Sampler)>,
}

/// What an aborted request is answered with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Abort {
    Http(StatusCode),
    /// A gRPC answer: HTTP 200, this `grpc-status`.
    Grpc(u32),
}

impl Fault {
    pub fn compile(spec: &snapshot::Fault) -> Result<Self, String> {
        let abort = spec
            .abort
            .as_ref()
            .map(|a| {
                let abort = match a.grpc_status {
                    Some(code) if code <= 16 => Abort::Grpc(code),
                    Some(code) => {
                        return Err(format!("fault abort grpc status {code} is not 0-16"))
                    }
                    None => Abort::Http(StatusCode::from_u16(a.status).map_err(|_| {
                        format!("fault abort status {} is not an HTTP status", a.status)
                    })?),
                };
                Ok::<_, String>((abort, Sampler::new(a.per_million)))
            })
            .transpose()?;
        Ok(Self {
            delay: spec.delay.as_ref().map(|d| {
                (
                    Duration::from_millis(d.fixed_delay_ms),
                    Sampler::new(d.per_million),
                )
            }),
            abort,
        })
    }

    /// How long this request is held back, if it is sampled for a delay.
    #[inline]
    pub fn delay(&self) -> Option<Duration> {
        self.delay.filter(|(_, s)| s.sample()).map(|(d, _)| d)
    }

    /// What this request is answered with instead, if it is sampled for an abort.
    #[inline]
    pub fn abort(&self) -> Option<Abort> {
        self.abort
            .filter(|(_, s)| s.sample())
            .map(|(status, _)| status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_and_zero_shares_are_exact() {
        let f = Fault::compile(&snapshot::Fault {
            delay: Some(snapshot::FaultDelay {
                fixed_delay_ms: 7,
                per_million: 1_000_000,
            }),
            abort: Some(snapshot::FaultAbort {
                status: 418,
                per_million: 0,
                grpc_status: None,
            }),
        })
        .unwrap();
        assert_eq!(f.delay(), Some(Duration::from_millis(7)));
        assert_eq!(f.abort(), None);
        let bad = snapshot::Fault {
            delay: None,
            abort: Some(snapshot::FaultAbort {
                status: 1000,
                per_million: 1,
                grpc_status: None,
            }),
        };
        assert!(Fault::compile(&bad).is_err());
    }

    #[test]
    fn a_grpc_abort_answers_its_status_and_refuses_unknown_codes() {
        let abort = |grpc_status| snapshot::Fault {
            delay: None,
            abort: Some(snapshot::FaultAbort {
                status: 200,
                per_million: 1_000_000,
                grpc_status,
            }),
        };
        let f = Fault::compile(&abort(Some(14))).unwrap();
        assert_eq!(f.abort(), Some(Abort::Grpc(14)));
        assert!(Fault::compile(&abort(Some(17))).is_err());
    }
}
