//! The live fan-out (SPEC §3): after a commit, workers publish each changed
//! conversation's new widget events to the topic exchange `{prefix}.live`;
//! every ingress instance binds its own exclusive queue to the conversations
//! it has open streams (or waiters) for.
//!
//! Best effort by design: messages are transient and unconfirmed, because the
//! database's widget stream is the source of truth and a stream fills any gap
//! from it. Losing a live message costs latency, never an event.

use lapin::options::{BasicPublishOptions, ExchangeDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, ExchangeKind};
use xxhash_rust::xxh3::Xxh3Default;

use crate::error::{Error, Result};
use crate::topology::name;

/// The live topic exchange of `prefix`.
pub fn live_exchange(prefix: &str) -> String {
    format!("{prefix}.live")
}

/// The routing key of a conversation: a 128-bit hash of (bot, conversation),
/// so any ids fit AMQP's 255-byte limit and need no escaping of `.`, `*`, `#`.
/// Subscribers still check the ids in the body: a hash is not an identity.
pub fn live_routing_key(bot_id: &str, conversation_id: &str) -> String {
    let mut hasher = Xxh3Default::new();
    hasher.update(bot_id.as_bytes());
    hasher.update(&[0x00]);
    hasher.update(conversation_id.as_bytes());
    format!("c.{:032x}", hasher.digest128())
}

/// Declares the live exchange (idempotent). Not durable: it carries only
/// transient notifications, and both sides declare it on connect.
///
/// # Errors
///
/// [`Error::InvalidName`] or [`Error::Amqp`] if RabbitMQ refuses.
pub async fn declare_live(channel: &Channel, prefix: &str) -> Result<()> {
    let exchange = name(live_exchange(prefix))?;
    channel
        .exchange_declare(
            exchange.clone(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(Error::amqp(format!("declare exchange {exchange}")))
}

/// Publishes `body` to the live exchange of `prefix` for one conversation,
/// transient and without waiting for a confirm.
///
/// # Errors
///
/// [`Error::Amqp`] if the channel is closed.
pub async fn publish_live(
    channel: &Channel,
    prefix: &str,
    bot_id: &str,
    conversation_id: &str,
    body: &[u8],
) -> Result<()> {
    let exchange = name(live_exchange(prefix))?;
    let key = name(live_routing_key(bot_id, conversation_id))?;
    // Delivery mode 1 (transient): never written to disk.
    let properties = BasicProperties::default().with_delivery_mode(1);
    channel
        .basic_publish(exchange, key, BasicPublishOptions::default(), body, properties)
        .await
        .map_err(Error::amqp("publish live"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_keys_are_short_and_distinct() {
        let a = live_routing_key("bot", &"x".repeat(128));
        assert!(a.len() < 255);
        assert_ne!(live_routing_key("a", "b.c"), live_routing_key("a.b", "c"));
        assert_eq!(live_routing_key("a", "b"), live_routing_key("a", "b"));
    }
}
