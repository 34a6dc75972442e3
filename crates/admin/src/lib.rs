//! What operators use, one implementation for the CLI and the admin API.
//!
//! Every role (`ingress`, `worker`, `all`) serves an admin listener of its own
//! (`[admin]`, docs/operations.md): health, readiness, Prometheus metrics, the
//! OpenAPI document, and the operations API behind a bearer token. The
//! `escalations` CLI calls the same operations and only renders their results.
//!
//! The operations, each returning typed results or an [`OpsError`]:
//! - [`dead_letters`]: webhook dead letters: list, show, replay (one, or in
//!   bulk with a dry run), skip, purge (refused unless confirmed).
//! - [`dead_events`]: events RabbitMQ dead-lettered: list, replay, purge.
//! - [`timeline`]: one conversation's timeline.
//! - [`shards`]: shard ownership and live workers.
//! - [`filter`]: [`FilterArgs`], the dead-letter filters both callers parse.
//! - [`error`]: [`OpsError`], mapped to exit codes ([`error::exit`]) and HTTP statuses.
//!
//! The listener:
//! - [`server`]: [`bind`] and [`run`].
//! - [`http`]: the routes, the token check, health and readiness.
//! - [`probes`]: [`Probes`], what `/readyz` reports.
//! - [`gauges`]: outbox depth, dead letters, shard lag and leases, read on scrape.
//! - [`metrics`]: the recorder with every description.
//! - [`openapi`]: the OpenAPI document of `/v1`.

pub mod dead_events;
pub mod dead_letters;
pub mod error;
pub mod filter;
pub mod gauges;
pub mod http;
pub mod metrics;
pub mod openapi;
pub mod probes;
pub mod server;
pub mod shards;
pub mod timeline;

pub use error::{Kind, OpsError, OpsResult};
pub use filter::FilterArgs;
pub use probes::Probes;
pub use server::{Error, bind, run};
