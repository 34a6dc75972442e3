//! The delivery engine's metrics (STYLE: bounded labels, never a
//! conversation id).

use metrics::{Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};

use domain::AttemptResult;

use crate::breaker::State;

/// Attempts, by `event_type` and `outcome` (see [`outcome_label`]).
pub const ATTEMPTS_TOTAL: &str = "escalations_webhook_attempts_total";
/// Deliveries dead-lettered, by `reason`.
pub const DEAD_LETTERS_TOTAL: &str = "escalations_webhook_dead_letters_total";
/// Time from sending an attempt to its response or failure.
pub const LATENCY_SECONDS: &str = "escalations_webhook_latency_seconds";
/// Breaker state of each bot's endpoint, one series per `state` (`closed`,
/// `half_open`, `open`): 1 for the state it is in, 0 for the others.
pub const ENDPOINT_STATE: &str = "escalations_webhook_breaker_state";

/// Pending deliveries of a bot that is not configured here (never claimed).
pub const UNCONFIGURED_PENDING: &str = "escalations_webhook_unconfigured_pending";

/// Heads claimed for sending (or settling unsent).
pub const CLAIMED_TOTAL: &str = "escalations_webhook_claimed_total";
/// Webhook deliveries a worker of this process claimed at insert and handed over.
pub const HANDED_TOTAL: &str = "escalations_webhook_handed_total";
/// Settlements written per transaction (group commit).
pub const SETTLE_BATCH_SIZE: &str = "escalations_webhook_settle_batch_size";

/// Registers descriptions and units with the installed recorder.
pub fn describe_metrics() {
    describe_counter!(ATTEMPTS_TOTAL, "Webhook delivery attempts, by event type and outcome.");
    describe_counter!(DEAD_LETTERS_TOTAL, "Webhook deliveries dead-lettered, by reason.");
    describe_histogram!(LATENCY_SECONDS, Unit::Seconds, "Webhook attempt latency, to response or failure.");
    describe_gauge!(
        ENDPOINT_STATE,
        "Circuit breaker of a bot's endpoint: 1 for the state it is in, by state."
    );
    describe_counter!(CLAIMED_TOTAL, "Webhook deliveries claimed by this dispatcher.");
    describe_counter!(
        HANDED_TOTAL,
        "Webhook deliveries a worker of this process claimed at insert and handed to this dispatcher."
    );
    describe_histogram!(SETTLE_BATCH_SIZE, Unit::Count, "Webhook settlements committed per transaction.");
    describe_gauge!(UNCONFIGURED_PENDING, "Pending deliveries of a bot missing from the configuration.");
}

/// `delivered`, `http_4xx`, `http_5xx`, `http_other`, `timeout`,
/// `connect_error` or `refused`.
pub fn outcome_label(result: AttemptResult) -> &'static str {
    match result {
        AttemptResult::Status { code: 200..=299, .. } => "delivered",
        AttemptResult::Status { code: 400..=499, .. } => "http_4xx",
        AttemptResult::Status { code: 500..=599, .. } => "http_5xx",
        AttemptResult::Status { .. } => "http_other",
        AttemptResult::Timeout => "timeout",
        AttemptResult::ConnectError => "connect_error",
        AttemptResult::Refused => "refused",
    }
}

pub(crate) fn record_attempt(event_type: &str, result: AttemptResult, latency_secs: f64) {
    // The event type comes from our own enum's four names: bounded.
    counter!(ATTEMPTS_TOTAL, "event_type" => event_type.to_owned(), "outcome" => outcome_label(result))
        .increment(1);
    histogram!(LATENCY_SECONDS).record(latency_secs);
}

pub(crate) fn record_dead_letter(reason: &'static str) {
    counter!(DEAD_LETTERS_TOTAL, "reason" => reason).increment(1);
}

/// One series per state, so `sum by (state)` counts endpoints in each and an
/// alert on `state="open"` needs no magic numbers. Bot ids come from the
/// configuration: bounded.
pub(crate) fn set_endpoint_state(bot: &str, state: State) {
    for each in [State::Closed, State::HalfOpen, State::Open] {
        let value = if each == state { 1.0 } else { 0.0 };
        gauge!(ENDPOINT_STATE, "bot" => bot.to_owned(), "state" => each.label()).set(value);
    }
}
