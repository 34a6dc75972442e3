//! The webhook dispatcher against a real PostgreSQL (and RabbitMQ for the
//! undeliverable notice), posting to in-process receivers whose answers each
//! test controls. One test binary, so the suite links once.

mod budgets;
mod dead_letters;
mod isolation;
mod ordering;
mod signing;
mod ssrf;
mod statuses;
mod support;
mod undeliverable;
