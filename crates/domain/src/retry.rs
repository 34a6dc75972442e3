//! Webhook retry policy (docs/protocol.md §4): which outcomes are final and which are
//! retried, exponential backoff with jitter, `Retry-After` honoured within a
//! clamp, and a time budget per event type after which a delivery is
//! dead-lettered. Pure: the caller passes the time and the random sample.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The outcome of one delivery attempt, as the HTTP client saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptResult {
    /// The endpoint answered with a status.
    Status {
        /// HTTP status code.
        code: u16,
        /// Parsed `Retry-After`, if the response had one.
        retry_after: Option<Duration>,
    },
    /// No response within the timeout.
    Timeout,
    /// Could not connect (DNS, refused, TLS, reset).
    ConnectError,
    /// Refused before sending (for example the SSRF guard): retrying cannot help.
    Refused,
}

/// What an outcome means for the delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// 2xx: done.
    Delivered,
    /// Will never succeed by retrying (400, 401, 403, 404, 410, 413, 422, …).
    Final,
    /// Worth trying again, possibly after the delay the endpoint asked for.
    Retryable {
        /// The endpoint's `Retry-After`, unclamped.
        retry_after: Option<Duration>,
    },
}

/// Classifies one attempt (docs/protocol.md §4): 2xx success; 408, 425, 429, 5xx,
/// timeouts and connection errors retryable; everything else final (redirects
/// are not followed, so a 3xx is a misconfigured endpoint).
pub fn classify(result: AttemptResult) -> Class {
    match result {
        AttemptResult::Status { code, .. } if (200..300).contains(&code) => Class::Delivered,
        AttemptResult::Status { code: 408 | 425 | 429 | 500..=599, retry_after } => {
            Class::Retryable { retry_after }
        }
        AttemptResult::Status { .. } | AttemptResult::Refused => Class::Final,
        AttemptResult::Timeout | AttemptResult::ConnectError => Class::Retryable { retry_after: None },
    }
}

/// Why a delivery stopped being retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GiveUp {
    /// A final status.
    Final,
    /// An attempt at or after the end of the event type's budget failed.
    OutOfBudget,
}

/// What to do after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Delivered; nothing more to do.
    Delivered,
    /// Try again at this time.
    RetryAt(DateTime<Utc>),
    /// Stop and dead-letter it.
    DeadLetter(GiveUp),
}

/// Backoff and budgets. Defaults follow docs/protocol.md §4.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Delay before the second attempt.
    pub initial_delay: Duration,
    /// Largest delay between two attempts.
    pub max_delay: Duration,
    /// Fraction of the nominal delay removed at random (0 = none, 1 = full
    /// jitter): the delay lies in `[nominal × (1 − jitter), nominal]`.
    pub jitter: f64,
    /// Smallest delay a `Retry-After` can ask for.
    pub retry_after_min: Duration,
    /// Largest delay a `Retry-After` can ask for.
    pub retry_after_max: Duration,
    /// Budget of `widgetEscalate`: a person is waiting.
    pub escalate_budget: Duration,
    /// Budget of every other event type.
    pub default_budget: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            initial_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(15 * 60),
            jitter: 0.25,
            retry_after_min: Duration::from_secs(1),
            retry_after_max: Duration::from_secs(10 * 60),
            escalate_budget: Duration::from_secs(120),
            default_budget: Duration::from_secs(24 * 3600),
        }
    }
}

impl RetryPolicy {
    /// The budget of one event type (its wire name, e.g. `widgetEscalate`).
    pub fn budget_for(&self, event_type: &str) -> Duration {
        match event_type {
            "widgetEscalate" => self.escalate_budget,
            _ => self.default_budget,
        }
    }

    /// The delay before the next attempt, before jitter: `initial × 2^(failures−1)`
    /// capped at `max_delay`.
    pub fn nominal_delay(&self, failures: u32) -> Duration {
        let exp = failures.saturating_sub(1).min(63);
        let factor = 1u64 << exp;
        let nanos = (self.initial_delay.as_nanos()).saturating_mul(u128::from(factor));
        let capped = nanos.min(self.max_delay.as_nanos());
        Duration::from_nanos(u64::try_from(capped).unwrap_or(u64::MAX))
    }

    /// The delay after `failures` failed attempts (≥ 1), with jitter drawn from
    /// `sample` in `[0, 1)`.
    pub fn backoff(&self, failures: u32, sample: f64) -> Duration {
        let nominal = self.nominal_delay(failures);
        let cut = self.jitter.clamp(0.0, 1.0) * sample.clamp(0.0, 1.0);
        nominal.mul_f64(1.0 - cut)
    }

    /// Clamps an endpoint's `Retry-After` into `[retry_after_min, retry_after_max]`.
    pub fn clamp_retry_after(&self, asked: Duration) -> Duration {
        asked.clamp(self.retry_after_min, self.retry_after_max)
    }

    /// Decides what follows attempt number `attempts` (1 for the first) of a
    /// delivery first tried at `first_attempt_at`.
    pub fn decide(
        &self,
        event_type: &str,
        first_attempt_at: DateTime<Utc>,
        now: DateTime<Utc>,
        attempts: u32,
        result: AttemptResult,
        sample: f64,
    ) -> Decision {
        match classify(result) {
            Class::Delivered => Decision::Delivered,
            Class::Final => Decision::DeadLetter(GiveUp::Final),
            Class::Retryable { retry_after } => {
                let delay = match retry_after {
                    Some(asked) => self.clamp_retry_after(asked),
                    None => self.backoff(attempts, sample),
                };
                let next = crate::time::after(now, delay);
                let deadline = crate::time::after(first_attempt_at, self.budget_for(event_type));
                // A final attempt is made at the deadline: a retry (or a
                // `Retry-After`) that would fall past it is moved to it, and
                // only an attempt at or after the deadline that fails gives up.
                if now >= deadline {
                    Decision::DeadLetter(GiveUp::OutOfBudget)
                } else {
                    Decision::RetryAt(next.min(deadline))
                }
            }
        }
    }
}

/// Parses a `Retry-After` value: delay-seconds or an HTTP date (RFC 9110 §10.2.3).
/// A date in the past means "now".
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at: DateTime<Utc> = httpdate::parse_http_date(value).ok()?.into();
    Some((at - now).to_std().unwrap_or(Duration::ZERO))
}
