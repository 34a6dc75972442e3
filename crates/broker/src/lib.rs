//! RabbitMQ side of the widget-escalations relay: where events go and how
//! they get there with a broker confirm.
//!
//! - [`shard`]: [`shard_for`] maps a (bot, conversation) to one of N shards
//!   with a pinned xxh3 hash, so a conversation always lands on one queue.
//! - [`topology`]: [`Topology`] names and declares the direct exchange, the N
//!   quorum shard queues (single active consumer, no broker-side poison
//!   limit) and the dead-letter exchange and queue.
//! - [`migrate`]: recreates queues an earlier version declared with other
//!   arguments, keeping their messages in order.
//! - [`nodes`]: [`Nodes`], the node URLs of one broker or a cluster
//!   (`broker.url` may list several), and connecting to any one that
//!   answers; jittered reconnect delays.
//! - [`publisher`]: [`Publisher`] keeps a connection with confirm-mode
//!   channels alive in the background and publishes [`OutboundMessage`]s
//!   (an envelope's is [`OutboundMessage::of`], or
//!   [`Publisher::publish_envelope`]), answering only once the broker
//!   confirmed, or failing fast when it can't.
//! - [`consumer`]: [`ShardConsumer`] reads one shard queue on its own channel
//!   (prefetch, manual acks) and yields typed [`Delivery`]s (whose
//!   [`Delivery::envelope`] decodes the body, or names the poison), with
//!   ack-through-tag and a stop that always closes the channel.
//! - [`dead`]: the worker's dead letters, published (confirmed) with the
//!   reason in their headers.
//! - [`live`]: the live topic exchange (transient, unconfirmed fan-out of
//!   committed widget events), its routing keys and publishing, and an
//!   ingress instance's end of it ([`LiveSession`]: its queue, binds one at a
//!   time, and a [`LiveInbox`] of decoded [`LiveMessage`]s).
//! - [`error`]: the crate's single [`Error`] type.
//!
//! Tests in `tests/` run against a real RabbitMQ (`AMQP_URL`, default
//! `amqp://guest:guest@127.0.0.1:5672/%2f`).

pub mod consumer;
pub mod dead;
pub mod error;
pub mod live;
pub mod migrate;
pub mod nodes;
pub mod publisher;
pub mod shard;
pub mod topology;

pub use consumer::{Delivery, ShardConsumer};
pub use error::{Error, Result};
pub use live::{
    Inbound, LIVE_KEYS_PER_MESSAGE, LiveInbox, LiveMessage, LiveSession, VERDICTS_TYPE, declare_live,
    live_exchange, live_routing_key, publish_live, publish_reply,
};
pub use nodes::Nodes;
pub use publisher::{OutboundMessage, Publisher, PublisherConfig, describe_metrics};
pub use shard::shard_for;
pub use topology::{BROKER_DELIVERY_LIMIT, DEFAULT_QUORUM_SIZE, Topology};
