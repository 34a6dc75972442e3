//! The broker crate against a real RabbitMQ (`AMQP_URL`): topology, the
//! confirming publisher, shard consumers and the live fan-out. One test
//! binary, so the suite links once.

mod common;
mod consumer;
mod live;
mod publisher;
mod topology;
