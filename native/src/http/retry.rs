//! Retry policy (Istio's HTTPRetry, Envoy's retry_on conditions).

use std::time::Duration;

use crate::snapshot;

/// How one try ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TryOutcome {
    Status(u16),
    ConnectFailure,
    /// The upstream closed or reset the connection before a response.
    Reset,
    /// The per-try timeout passed.
    Timeout,
}

#[derive(Debug, Clone, Default)]
struct Conditions {
    any_5xx: bool,
    gateway_error: bool,
    reset: bool,
    connect_failure: bool,
    retriable_4xx: bool,
    status_codes: Vec<u16>,
    /// gRPC statuses retried (`cancelled`, `deadline-exceeded`, `internal`,
    /// `resource-exhausted`, `unavailable`).
    grpc: Vec<u32>,
}

#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub per_try_timeout: Option<Duration>,
    on: Conditions,
}

/// First back-off, doubled per retry and capped (Envoy's defaults: 25 ms, 10x).
const BASE_BACKOFF: Duration = Duration::from_millis(25);
const MAX_BACKOFF: Duration = Duration::from_millis(250);

impl RetryPolicy {
    pub fn compile(spec: &snapshot::RetryPolicy) -> Result<Self, String> {
        let mut on = Conditions::default();
        for condition in &spec.retry_on {
            match condition.trim() {
                "5xx" => on.any_5xx = true,
                "gateway-error" => on.gateway_error = true,
                "reset" => on.reset = true,
                "connect-failure" => on.connect_failure = true,
                "retriable-4xx" => on.retriable_4xx = true,
                "cancelled" => on.grpc.push(1),
                "deadline-exceeded" => on.grpc.push(4),
                "resource-exhausted" => on.grpc.push(8),
                "internal" => on.grpc.push(13),
                "unavailable" => on.grpc.push(14),
                // A refused stream never reached the upstream's application:
                // hyper reports it as a reset, which `reset` retries.
                // retriable-status-codes only adds the numeric codes listed beside it.
                "refused-stream" | "retriable-status-codes" => {}
                code => match code.parse::<u16>() {
                    Ok(code) if (100..600).contains(&code) => on.status_codes.push(code),
                    _ => return Err(format!("unknown retry condition {code:?}")),
                },
            }
        }
        Ok(Self {
            attempts: spec.attempts,
            per_try_timeout: spec.per_try_timeout_ms.map(Duration::from_millis),
            on,
        })
    }

    /// Whether a gRPC answer with this `grpc-status` is tried again.
    pub fn should_retry_grpc(&self, status: u32) -> bool {
        self.on.grpc.contains(&status)
    }

    pub fn should_retry(&self, outcome: TryOutcome) -> bool {
        let on = &self.on;
        match outcome {
            TryOutcome::Status(code) => {
                (on.any_5xx && code >= 500)
                    || (on.gateway_error && matches!(code, 502..=504))
                    || (on.retriable_4xx && code == 409)
                    || on.status_codes.contains(&code)
            }
            TryOutcome::ConnectFailure => on.connect_failure || on.any_5xx || on.gateway_error,
            TryOutcome::Reset => on.reset || on.any_5xx,
            TryOutcome::Timeout => on.any_5xx || on.gateway_error,
        }
    }

    /// Jittered exponential back-off before retry number `n` (1-based).
    pub fn backoff(n: u32) -> Duration {
        let ceiling = BASE_BACKOFF
            .saturating_mul(1 << n.saturating_sub(1).min(4))
            .min(MAX_BACKOFF);
        ceiling.mul_f64(0.5 + fastrand::f64() / 2.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(on: &[&str]) -> RetryPolicy {
        RetryPolicy::compile(&snapshot::RetryPolicy {
            attempts: 2,
            per_try_timeout_ms: Some(100),
            retry_on: on.iter().map(|s| s.to_string()).collect(),
        })
        .unwrap()
    }

    #[test]
    fn conditions_follow_envoy() {
        let p = policy(&["gateway-error"]);
        assert!(p.should_retry(TryOutcome::Status(503)));
        assert!(!p.should_retry(TryOutcome::Status(500)));
        assert!(p.should_retry(TryOutcome::ConnectFailure));
        let p = policy(&["5xx"]);
        assert!(p.should_retry(TryOutcome::Status(500)));
        assert!(p.should_retry(TryOutcome::Reset));
        assert!(p.should_retry(TryOutcome::Timeout));
        assert!(!p.should_retry(TryOutcome::Status(404)));
        let p = policy(&["connect-failure", "retriable-status-codes", "418"]);
        assert!(p.should_retry(TryOutcome::ConnectFailure));
        assert!(p.should_retry(TryOutcome::Status(418)));
        assert!(!p.should_retry(TryOutcome::Status(503)));
        assert!(!p.should_retry(TryOutcome::Reset));
    }

    #[test]
    fn unknown_conditions_are_refused_and_backoff_is_bounded() {
        assert!(RetryPolicy::compile(&snapshot::RetryPolicy {
            attempts: 1,
            per_try_timeout_ms: None,
            retry_on: vec!["sometimes".into()],
        })
        .is_err());
        for n in 1..10 {
            let b = RetryPolicy::backoff(n);
            assert!(b <= MAX_BACKOFF && b >= BASE_BACKOFF / 2, "{b:?}");
        }
    }
}
