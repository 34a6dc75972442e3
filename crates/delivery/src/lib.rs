//! Outbound webhooks (docs/protocol.md §4): the dispatcher that takes due deliveries from
//! the outbox the worker writes, signs and posts them, retries them with the
//! bot's policy, pauses failing endpoints, and dead-letters what cannot be
//! delivered, telling the state machine when a `widgetEscalate` is lost.
//!
//! Per conversation only the lowest pending sequence is ever sent (in order;
//! a dead letter does not block the next), each delivery in its own task, and
//! each endpoint with its own concurrency limit and circuit breaker, so one
//! endpoint or conversation never delays another.
//!
//! - [`dispatcher`]: [`Dispatcher`] (claim loop), [`DispatcherConfig`],
//!   [`run`] for the worker process.
//! - [`handoff`]: [`Handoff`], deliveries a worker of the same process
//!   claimed at insert, sent without a claim round.
//! - [`attempt`]: one delivery from breaker check to settled row.
//! - `settler`: group commit of settlements.
//! - [`client`]: the HTTP client and one signed attempt.
//! - [`sign`]: Standard Webhooks ids and signatures.
//! - [`ssrf`]: the address guard: resolver and IP-literal check.
//! - [`breaker`]: the per-endpoint circuit breaker.
//! - [`targets`]: each bot's URL, keys, policy and endpoint; [`RetryTuning`].
//! - [`notice`]: the `escalateUndeliverable` command for a dead `widgetEscalate`.
//! - [`metrics`]: metric names and [`describe_metrics`].
//! - [`error`]: [`Error`] and [`Result`].

pub mod attempt;
pub mod breaker;
pub mod client;
pub mod dispatcher;
pub mod error;
pub mod handoff;
pub mod metrics;
pub mod notice;
mod settler;
pub mod sign;
pub mod ssrf;
pub mod targets;

pub use dispatcher::{Dispatcher, DispatcherConfig, Waker, run, run_with_handoff};
pub use error::{Error, Result};
pub use handoff::{Handoff, Slot};
pub use metrics::describe_metrics;
pub use sign::{signature_header, webhook_id};
pub use ssrf::{AddressPolicy, AddressRefused, GuardedResolver};
pub use targets::RetryTuning;
