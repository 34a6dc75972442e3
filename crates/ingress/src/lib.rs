//! The HTTP edge of the widget-escalations relay (docs/protocol.md §2, §3).
//!
//! It authenticates, validates and rate-limits each request, publishes one
//! [`domain::Envelope`] to the conversation's shard queue and answers `200` only
//! once the broker confirmed it, so no accepted event can be lost (docs/protocol.md §6).
//! It never writes to the database: every rule that needs state runs in the
//! worker. It reads it for the query endpoints and widget streams, and on the
//! write path only where an answer needs the worker's decision (`escalate`
//! after a `duplicate`, a `Prefer: wait` verdict that did not arrive); those
//! answer without it when it is down. Bad input gets a typed JSON 4xx and
//! publishes nothing.
//!
//! - [`app`]: [`AppState`] (settings, publisher, limiter, token keys) and [`router`].
//! - [`routes`]: the handlers: agent API, widget API, health and metrics.
//! - [`live`]: [`LiveHub`], this instance's queue on the live exchange and the
//!   per-conversation subscriptions of streams.
//! - [`auth`]: bot API keys (`Authorization` + `botid`) and widget tokens on requests.
//! - [`token`]: [`WidgetTokens`], the signed, expiring token that opens one conversation.
//! - [`body`]: reading a JSON body: media type, size limit, syntax.
//! - [`keep_alive`]: `Connection: close` when a request body was left unread.
//! - [`rate_limit`]: [`RateLimiter`], a lock-free per-bot token bucket.
//! - [`error`]: [`ApiError`], the one error every handler answers with, and [`Error`].
//! - [`metrics`]: the Prometheus recorder and the HTTP request metrics.
//! - [`demo`]: the demo widget page at `/demo` (`[demo]`, off by default).
//! - [`openapi`]: the OpenAPI 3 document of the public API, served at `/openapi.json`.
//! - [`server`]: [`run`] (what the binary calls) and [`serve`] (graceful shutdown).

pub mod app;
pub mod auth;
pub mod body;
pub mod demo;
pub mod error;
pub mod keep_alive;
pub mod live;
pub mod metrics;
pub mod openapi;
pub mod rate_limit;
pub mod routes;
pub mod server;
pub mod token;

pub use app::{AppState, router};
pub use error::{ApiError, Error};
pub use live::{LiveHub, VerdictWaiter};
pub use rate_limit::{RateLimiter, Scope};
pub use server::{publisher_config, run, serve};
pub use token::{IssuedToken, WidgetClaims, WidgetTokens};
