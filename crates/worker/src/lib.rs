//! The worker of the widget-escalations relay: it consumes the shard queues,
//! applies the state machine (docs/protocol.md §5) to each conversation's events in the
//! order the broker accepted them, and commits the effects — conversation
//! state, event log, widget stream, webhook outbox, timers — to PostgreSQL
//! before acking (docs/protocol.md §6). Shards are spread over workers with leases; due
//! timers are fired back through the broker.
//!
//! The stages, one module each:
//! - `shard`: one task per held shard: consume, build batches from what has
//!   arrived, stop by draining or at once.
//! - `process`: one batch: decode (poison → dead letter), apply with retries
//!   or one by one, then ack.
//! - [`batch`]: [`apply_batch`], one transaction per batch, and its dedupe.
//! - `leases`: heartbeats, fair share, acquiring, handing back, losing.
//! - [`timers`]: the poller firing due timers as `TimerFired` events.
//! - [`service`]: [`Worker::start`] / [`WorkerHandle`], and [`run`].
//!
//! Support: [`config`] ([`WorkerConfig`]), [`bots`] ([`BotRules`]),
//! `connection` (the shared AMQP connection), `live` (announcing commits),, [`metrics`], [`error`].
//!
//! Tests in `tests/` run against a real RabbitMQ (`AMQP_URL`) and PostgreSQL
//! (`DATABASE_URL`); `examples/bench_worker.rs` measures throughput.

pub mod batch;
pub mod bots;
pub mod config;
mod connection;
pub mod error;
mod leases;
mod live;
pub mod metrics;
mod process;
pub mod service;
mod shard;
pub mod timers;

pub use batch::{BatchOutcome, apply_batch, apply_fenced, apply_handing};
pub use bots::BotRules;
pub use config::WorkerConfig;
pub use error::{Error, Result};
pub use metrics::describe_metrics;
pub use service::{Worker, WorkerHandle, run};
