//! The ingress in-process (its router, or a server on a socket) against the
//! real RabbitMQ and PostgreSQL: the agent and widget APIs, bad input, rate
//! limits, keep-alive, shutdown, ordering, verdicts and the live hub's start.
//! One test binary, so the suite links once; the fuzz properties and the broker
//! outage (private RabbitMQ nodes) keep binaries of their own.

#[path = "../common/mod.rs"]
mod common;

mod agent_api;
mod bad_input;
mod demo_and_openapi;
mod keep_alive;
mod live_startup;
mod ordering;
mod rate_limits;
mod shutdown;
mod verdict_scope;
mod widget_api;
