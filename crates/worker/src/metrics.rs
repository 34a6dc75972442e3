//! The worker's Prometheus metrics: names, units and descriptions.
//!
//! Labels are bounded (verdicts, dead-letter reasons), never an id.

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};

/// Live announcements of committed batches, by `outcome`: `published`, `failed`, `dropped` (queue full).
pub const LIVE_MESSAGES_TOTAL: &str = "escalations_worker_live_messages_total";
/// Events decided, by `verdict`: `applied`, `duplicate`, `ignored`, `rejected`.
pub const EVENTS_TOTAL: &str = "escalations_worker_events_total";
/// Envelopes per applied batch.
pub const BATCH_SIZE: &str = "escalations_worker_batch_size";
/// Time to apply and commit one batch.
pub const COMMIT_SECONDS: &str = "escalations_worker_commit_seconds";
/// Messages sent to the dead-letter queue, by `reason`: `undecodable`,
/// `store_rejected`.
pub const DEAD_LETTERED_TOTAL: &str = "escalations_worker_dead_lettered_total";
/// Shards this worker holds a lease on and consumes.
pub const SHARDS_HELD: &str = "escalations_worker_shards_held";
/// Batch attempts the store refused with a transient error (each is retried).
pub const STORE_RETRIES_TOTAL: &str = "escalations_worker_store_retries_total";
/// Timers fired (published as `TimerFired` and deleted).
pub const TIMERS_FIRED_TOTAL: &str = "escalations_worker_timers_fired_total";

/// Registers descriptions and units with the installed recorder. Optional;
/// call once after installing the exporter.
pub fn describe_metrics() {
    describe_counter!(EVENTS_TOTAL, "Events the worker decided on, by verdict.");
    describe_histogram!(BATCH_SIZE, Unit::Count, "Envelopes applied per batch (one transaction).");
    describe_histogram!(COMMIT_SECONDS, Unit::Seconds, "Time to apply and commit one batch.");
    describe_counter!(DEAD_LETTERED_TOTAL, "Messages dead-lettered by the worker, by reason.");
    describe_gauge!(SHARDS_HELD, "Shards this worker holds and consumes.");
    describe_counter!(STORE_RETRIES_TOTAL, "Batches retried after a transient store error.");
    describe_counter!(TIMERS_FIRED_TOTAL, "Durable timers fired.");
    describe_counter!(LIVE_MESSAGES_TOTAL, "Live announcements of committed batches, by outcome.");
}
