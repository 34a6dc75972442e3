//! Names and declaration of the RabbitMQ objects the relay uses.
//!
//! ```text
//! {prefix}.events (direct) --shard.000--> {prefix}.shard.000 (quorum)
//!                          --shard.001--> {prefix}.shard.001 (quorum)
//!                          ...
//! worker: an event that fails alone --------------> {prefix}.dead (quorum)
//! {prefix}.dlx (fanout) --------------------------> {prefix}.dead
//! ```
//!
//! Poison is decided by the worker, never by the broker (docs/protocol.md
//! §6): the worker publishes an event that fails alone to `{prefix}.dead`
//! itself, then acks it. The broker's own delivery limit would count every
//! delivery a killed worker left unsettled (each prefetched message, on
//! every kill), so queues are declared with [`BROKER_DELIVERY_LIMIT`], a
//! limit no incident reaches, and the dead-letter exchange only remains as a
//! backstop behind it. See [`crate::migrate`] for queues declared before.
//!
//! Declaration is idempotent: both the publisher (on every connect) and the
//! workers may declare it, as long as they use the same [`Topology`] values.
//! If an existing queue has different arguments, RabbitMQ refuses the declare
//! (`PRECONDITION_FAILED`) rather than silently keeping the old ones.

use crate::error::{Error, Result};
use lapin::{
    Channel, ExchangeKind,
    options::{
        ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
        QueueDeleteOptions,
    },
    types::{AMQPValue, FieldTable, LongString, ShortString},
};

/// The shape of the relay's RabbitMQ topology.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    /// Prefix of every exchange and queue name, e.g. `escalations`.
    pub prefix: String,
    /// Number of shard queues. Changing it re-maps conversations to shards, so
    /// it must not change while messages are in flight.
    pub shards: u16,
    /// Ignored: poison is counted by the worker, and every queue is declared
    /// with [`BROKER_DELIVERY_LIMIT`]. Kept so that the `broker.delivery_limit`
    /// setting of existing configurations still has a place to go.
    pub delivery_limit: u32,
    /// Replicas of each quorum queue (`x-quorum-initial-group-size`): the
    /// shard queues and the dead-letter queue. Default
    /// [`DEFAULT_QUORUM_SIZE`].
    ///
    /// Sent as configured, never lowered to the nodes there are: RabbitMQ
    /// places a new queue on all the cluster's nodes when it has fewer
    /// than this, and an argument that depended on how many nodes were up
    /// would make a later declare inequivalent (refused).
    pub quorum_size: u16,
}

/// The default replica count of each quorum queue: three nodes survive the
/// loss of one. On a single node the queue simply has one member.
pub const DEFAULT_QUORUM_SIZE: u16 = 3;

/// The `x-delivery-limit` of every queue: not a poison limit but a value no
/// number of worker kills, restarts or outages reaches, so that the broker
/// never dead-letters (or, on RabbitMQ 4.x, drops) an event by itself.
///
/// Explicit rather than absent: RabbitMQ 4.x applies a default limit of 20
/// to a quorum queue declared without one. Positive rather than `-1`
/// ("unlimited" on 4.x): 3.10 accepts only non-negative limits, and 4.x
/// returns a requeued message to the back of a queue that has no limit.
pub const BROKER_DELIVERY_LIMIT: i64 = 1_000_000_000;

impl Topology {
    /// A topology with the given prefix and shard count (`delivery_limit` is
    /// ignored, see [`Topology::delivery_limit`]) and
    /// [`DEFAULT_QUORUM_SIZE`] replicas per queue.
    #[must_use]
    pub fn new(prefix: impl Into<String>, shards: u16, delivery_limit: u32) -> Self {
        Self { prefix: prefix.into(), shards, delivery_limit, quorum_size: DEFAULT_QUORUM_SIZE }
    }

    /// The same topology with `quorum_size` replicas per queue (at least 1).
    /// Every process of a deployment must use the same value: RabbitMQ
    /// refuses a declare whose arguments differ from the queue's.
    #[must_use]
    pub fn with_quorum_size(mut self, quorum_size: u16) -> Self {
        self.quorum_size = quorum_size.max(1);
        self
    }

    /// The direct exchange events are published to: `{prefix}.events`.
    #[must_use]
    pub fn exchange(&self) -> String {
        format!("{}.events", self.prefix)
    }

    /// The queue of shard `shard`: `{prefix}.shard.{shard:03}`.
    #[must_use]
    pub fn shard_queue(&self, shard: u16) -> String {
        format!("{}.shard.{shard:03}", self.prefix)
    }

    /// The routing (and binding) key of shard `shard`: `shard.{shard:03}`.
    #[must_use]
    pub fn routing_key(&self, shard: u16) -> String {
        format!("shard.{shard:03}")
    }

    /// The dead-letter exchange: `{prefix}.dlx` (fanout).
    #[must_use]
    pub fn dead_letter_exchange(&self) -> String {
        format!("{}.dlx", self.prefix)
    }

    /// The queue collecting dead-lettered events: `{prefix}.dead`.
    #[must_use]
    pub fn dead_letter_queue(&self) -> String {
        format!("{}.dead", self.prefix)
    }

    /// The exact arguments of every shard queue. Public so that consumers can
    /// declare the queues identically (a differing declare is refused).
    #[must_use]
    pub fn shard_queue_arguments(&self) -> FieldTable {
        let mut args = FieldTable::default();
        // Quorum queues are replicated and fsync'd: a confirm means the message
        // survives the loss of a minority of nodes.
        args.insert("x-queue-type".into(), long_string("quorum"));
        args.insert("x-quorum-initial-group-size".into(), AMQPValue::LongInt(self.quorum_size.into()));
        // One active consumer per shard is what turns "one conversation, one
        // shard" into "one conversation, processed in order".
        args.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
        // Poison is the worker's call; see BROKER_DELIVERY_LIMIT.
        args.insert("x-delivery-limit".into(), AMQPValue::LongLongInt(BROKER_DELIVERY_LIMIT));
        // Only a backstop now: reached only past BROKER_DELIVERY_LIMIT.
        args.insert("x-dead-letter-exchange".into(), long_string(&self.dead_letter_exchange()));
        // The default (at-most-once) would drop a message if the dead-letter
        // queue is unavailable at that moment; at-least-once keeps it until
        // the dead-letter queue confirmed it.
        args.insert("x-dead-letter-strategy".into(), long_string("at-least-once"));
        // RabbitMQ only honours at-least-once dead-lettering together with
        // reject-publish overflow (it falls back to at-most-once otherwise).
        args.insert("x-overflow".into(), long_string("reject-publish"));
        args
    }

    /// The exact arguments of the dead-letter queue: a quorum queue whose
    /// messages no number of `dead-events list` runs can drop (on RabbitMQ
    /// 4.x a quorum queue declared without a limit drops a message after 20
    /// returns, and every listing returns each message it showed).
    #[must_use]
    pub fn dead_letter_queue_arguments(&self) -> FieldTable {
        let mut args = FieldTable::default();
        args.insert("x-queue-type".into(), long_string("quorum"));
        args.insert("x-quorum-initial-group-size".into(), AMQPValue::LongInt(self.quorum_size.into()));
        args.insert("x-delivery-limit".into(), AMQPValue::LongLongInt(BROKER_DELIVERY_LIMIT));
        args
    }

    /// Declare exchanges, queues and bindings (idempotent).
    ///
    /// The dead-letter side is declared first so that no shard queue ever
    /// points at a dead-letter exchange that does not exist yet.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`] if the prefix makes a name longer than 255 bytes;
    /// [`Error::Amqp`] if RabbitMQ refuses a step (e.g. an existing queue has
    /// different arguments). A refused step closes `channel`.
    pub async fn declare(&self, channel: &Channel) -> Result<()> {
        let durable = ExchangeDeclareOptions { durable: true, ..ExchangeDeclareOptions::default() };

        let dlx = name(self.dead_letter_exchange())?;
        let dead = name(self.dead_letter_queue())?;
        channel
            .exchange_declare(dlx.clone(), ExchangeKind::Fanout, durable, FieldTable::default())
            .await
            .map_err(Error::amqp(format!("declare exchange {dlx}")))?;
        channel
            .queue_declare(dead.clone(), QueueDeclareOptions::durable(), self.dead_letter_queue_arguments())
            .await
            .map_err(Error::amqp(format!(
                "declare queue {dead} (an inequivalent argument means it was declared by an earlier \
                 version: stop every process and run `escalations topology migrate --yes`)"
            )))?;
        // Fanout ignores the key; dead-lettered messages keep their shard key.
        channel
            .queue_bind(
                dead.clone(),
                dlx.clone(),
                "".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(Error::amqp(format!("bind queue {dead} to {dlx}")))?;

        let exchange = name(self.exchange())?;
        channel
            .exchange_declare(exchange.clone(), ExchangeKind::Direct, durable, FieldTable::default())
            .await
            .map_err(Error::amqp(format!("declare exchange {exchange}")))?;

        let args = self.shard_queue_arguments();
        for shard in 0..self.shards {
            let queue = name(self.shard_queue(shard))?;
            channel
                .queue_declare(queue.clone(), QueueDeclareOptions::durable(), args.clone())
                .await
                .map_err(Error::amqp(format!(
                    "declare queue {queue} (an inequivalent argument means it was declared by an \
                     earlier version, e.g. with a delivery limit that dead-letters valid events, or \
                     with another broker.quorum_size: stop every process and run `escalations \
                     topology migrate --yes`)"
                )))?;
            channel
                .queue_bind(
                    queue.clone(),
                    exchange.clone(),
                    self.routing_key(shard).into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(Error::amqp(format!("bind queue {queue} to {exchange}")))?;
        }
        Ok(())
    }

    /// Delete every exchange and queue of this topology, messages included.
    ///
    /// Meant for tests and tear-down tooling. Deleting something that does not
    /// exist is not an error for RabbitMQ, so this is safe to call twice.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`] or [`Error::Amqp`] as for [`Topology::declare`].
    pub async fn delete(&self, channel: &Channel) -> Result<()> {
        for shard in 0..self.shards {
            let queue = name(self.shard_queue(shard))?;
            channel
                .queue_delete(queue.clone(), QueueDeleteOptions::default())
                .await
                .map_err(Error::amqp(format!("delete queue {queue}")))?;
        }
        let dead = name(self.dead_letter_queue())?;
        channel
            .queue_delete(dead.clone(), QueueDeleteOptions::default())
            .await
            .map_err(Error::amqp(format!("delete queue {dead}")))?;
        for exchange in [self.exchange(), self.dead_letter_exchange()] {
            let exchange = name(exchange)?;
            channel
                .exchange_delete(exchange.clone(), ExchangeDeleteOptions::default())
                .await
                .map_err(Error::amqp(format!("delete exchange {exchange}")))?;
        }
        Ok(())
    }
}

/// AMQP names are short strings (≤ 255 bytes); lapin's `From<String>`
/// panics beyond that, so names built from configuration go through here.
pub(crate) fn name(value: String) -> Result<ShortString> {
    ShortString::try_new(value.clone()).map_err(|_| Error::InvalidName(value))
}

fn long_string(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_documented_scheme() {
        let t = Topology::new("esc", 16, 5);
        assert_eq!(t.exchange(), "esc.events");
        assert_eq!(t.shard_queue(0), "esc.shard.000");
        assert_eq!(t.shard_queue(7), "esc.shard.007");
        assert_eq!(t.shard_queue(123), "esc.shard.123");
        assert_eq!(t.shard_queue(1000), "esc.shard.1000");
        assert_eq!(t.routing_key(7), "shard.007");
        assert_eq!(t.dead_letter_exchange(), "esc.dlx");
        assert_eq!(t.dead_letter_queue(), "esc.dead");
    }

    #[test]
    fn shard_queue_arguments_are_complete() {
        let args = Topology::new("esc", 4, 7).shard_queue_arguments();
        let get = |k: &str| args.inner().get(k).cloned();
        assert_eq!(get("x-queue-type"), Some(long_string("quorum")));
        assert_eq!(get("x-quorum-initial-group-size"), Some(AMQPValue::LongInt(3)));
        assert_eq!(get("x-single-active-consumer"), Some(AMQPValue::Boolean(true)));
        // Not the configured 7: the broker never decides what is poison.
        assert_eq!(get("x-delivery-limit"), Some(AMQPValue::LongLongInt(BROKER_DELIVERY_LIMIT)));
        assert_eq!(get("x-dead-letter-exchange"), Some(long_string("esc.dlx")));
        assert_eq!(get("x-dead-letter-strategy"), Some(long_string("at-least-once")));
        assert_eq!(get("x-overflow"), Some(long_string("reject-publish")));
    }

    #[test]
    fn the_dead_letter_queue_has_a_limit_no_listing_reaches() {
        let args = Topology::new("esc", 4, 7).with_quorum_size(5).dead_letter_queue_arguments();
        let get = |k: &str| args.inner().get(k).cloned();
        assert_eq!(get("x-queue-type"), Some(long_string("quorum")));
        assert_eq!(get("x-quorum-initial-group-size"), Some(AMQPValue::LongInt(5)));
        assert_eq!(get("x-delivery-limit"), Some(AMQPValue::LongLongInt(BROKER_DELIVERY_LIMIT)));
        assert_eq!(get("x-dead-letter-exchange"), None, "a dead letter goes nowhere else");
    }

    #[test]
    fn the_quorum_size_is_at_least_one() {
        let args = Topology::new("esc", 1, 1).with_quorum_size(0).shard_queue_arguments();
        assert_eq!(args.inner().get("x-quorum-initial-group-size"), Some(&AMQPValue::LongInt(1)));
    }

    #[test]
    fn overlong_names_are_an_error_not_a_panic() {
        let long = "x".repeat(300);
        assert!(matches!(name(long), Err(Error::InvalidName(_))));
    }
}
