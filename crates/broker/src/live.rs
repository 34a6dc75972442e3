//! The live fan-out (docs/protocol.md §3): after a commit, workers publish each changed
//! conversation's new widget events to the topic exchange `{prefix}.live`;
//! every ingress instance binds its own exclusive queue to the conversations
//! it has open streams (or waiters) for.
//!
//! Best effort by design: messages are transient and unconfirmed, because the
//! database's widget stream is the source of truth and a stream fills any gap
//! from it. Losing a live message costs latency, never an event.

use domain::live::LiveUpdate;
mod session;

pub use session::{Inbound, LiveInbox, LiveSession};

use lapin::options::{BasicPublishOptions, ExchangeDeclareOptions};
use lapin::types::{AMQPValue, FieldArray, FieldTable, LongString, ShortString};
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

/// Conversations one live message may name: their routing keys travel in a
/// header, which must fit in one AMQP frame (128 KiB by default).
pub const LIVE_KEYS_PER_MESSAGE: usize = 256;

/// Publishes `body` to the live exchange of `prefix` for the conversations
/// `keys` (bot, conversation), transient and without waiting for a confirm.
///
/// One message for all of them (RabbitMQ's sender-selected distribution): the
/// first key is the routing key and the others go in the `BCC` header, so
/// every queue bound to any of them gets exactly one copy, and the broker
/// strips the header before delivery. A committed batch is one message, not
/// one per conversation; subscribers pick their conversations from the body.
///
/// # Errors
///
/// [`Error::InvalidName`] for no keys or more than [`LIVE_KEYS_PER_MESSAGE`];
/// [`Error::Amqp`] if the channel is closed.
pub async fn publish_live<'a>(
    channel: &Channel,
    prefix: &str,
    keys: impl IntoIterator<Item = (&'a str, &'a str)>,
    body: &[u8],
) -> Result<()> {
    let exchange = name(live_exchange(prefix))?;
    let mut routing: Vec<String> = keys.into_iter().map(|(bot, conv)| live_routing_key(bot, conv)).collect();
    routing.sort_unstable();
    routing.dedup();
    if routing.is_empty() || routing.len() > LIVE_KEYS_PER_MESSAGE {
        return Err(Error::InvalidName(format!(
            "a live message names 1 to {LIVE_KEYS_PER_MESSAGE} conversations, not {}",
            routing.len()
        )));
    }
    let first = name(routing.remove(0))?;
    // Delivery mode 1 (transient): never written to disk.
    let mut properties = BasicProperties::default().with_delivery_mode(1);
    if !routing.is_empty() {
        let bcc: Vec<AMQPValue> =
            routing.into_iter().map(|key| AMQPValue::LongString(LongString::from(key))).collect();
        let mut headers = FieldTable::default();
        headers.insert(ShortString::from("BCC"), AMQPValue::FieldArray(FieldArray::from(bcc)));
        properties = properties.with_headers(headers);
    }
    channel
        .basic_publish(exchange, first, BasicPublishOptions::default(), body, properties)
        .await
        .map_err(Error::amqp("publish live"))?;
    Ok(())
}

/// The AMQP `type` of a message that answers a `reply_to`: verdicts for the
/// callers waiting on that ingress instance, not news for its streams.
pub const VERDICTS_TYPE: &str = "verdicts";

/// Sends `body` (the updates carrying the verdicts) straight to `queue`, an
/// ingress instance's live queue named in a command's `reply_to`, through
/// the default exchange: no binding needed. Transient, unconfirmed, and
/// silently dropped if the queue is gone (its instance reconnected or
/// stopped; its waiters then read the database).
///
/// # Errors
///
/// [`Error::InvalidName`] for a name AMQP cannot carry; [`Error::Amqp`] if
/// the channel is closed.
pub async fn publish_reply(channel: &Channel, queue: &str, body: &[u8]) -> Result<()> {
    let queue = name(queue.to_owned())?;
    let properties = BasicProperties::default().with_delivery_mode(1).with_type(VERDICTS_TYPE.into());
    channel
        .basic_publish("".into(), queue, BasicPublishOptions::default(), body, properties)
        .await
        .map_err(Error::amqp("publish reply"))?;
    Ok(())
}

/// What arrives on an ingress instance's live queue, told apart by the AMQP
/// `type` the sender set: the one decoder for both kinds, so each goes its
/// own typed way from here (news to the conversations' streams, verdicts to
/// the requests waiting for them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LiveMessage {
    /// A committed batch's news for the conversations bound here ([`publish_live`]).
    News(Vec<LiveUpdate>),
    /// The updates carrying the verdicts that commands published with this
    /// queue as `reply_to` wait for ([`publish_reply`], type [`VERDICTS_TYPE`]).
    Verdicts(Vec<LiveUpdate>),
}

impl LiveMessage {
    /// Decodes a message of AMQP type `kind` with `body`: a JSON array of
    /// updates, or one update as an object (as workers before batched live
    /// messages sent).
    ///
    /// # Errors
    ///
    /// The body is neither.
    pub fn decode(kind: Option<&str>, body: &[u8]) -> std::result::Result<Self, serde_json::Error> {
        let array = body.iter().find(|byte| !byte.is_ascii_whitespace()) == Some(&b'[');
        let updates = if array {
            serde_json::from_slice::<Vec<LiveUpdate>>(body)?
        } else {
            vec![serde_json::from_slice::<LiveUpdate>(body)?]
        };
        Ok(if kind == Some(VERDICTS_TYPE) {
            LiveMessage::Verdicts(updates)
        } else {
            LiveMessage::News(updates)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(conversation: &str) -> LiveUpdate {
        LiveUpdate {
            bot_id: domain::BotId::parse("bot").expect("id"),
            conversation_id: domain::ConversationId::parse(conversation).expect("id"),
            phase: domain::Phase::Idle,
            events: Vec::new(),
            verdicts: Vec::new(),
        }
    }

    #[test]
    fn live_messages_decode_by_their_type_as_arrays_or_one_update() {
        let batch = serde_json::to_vec(&[update("a"), update("b")]).expect("json");
        assert_eq!(
            LiveMessage::decode(None, &batch).expect("news"),
            LiveMessage::News(vec![update("a"), update("b")])
        );
        assert_eq!(
            LiveMessage::decode(Some(VERDICTS_TYPE), &batch).expect("verdicts"),
            LiveMessage::Verdicts(vec![update("a"), update("b")])
        );
        let one = serde_json::to_vec(&update("c")).expect("json");
        let padded = [b" \n".as_slice(), &batch].concat();
        assert_eq!(
            LiveMessage::decode(Some("other"), &one).expect("one"),
            LiveMessage::News(vec![update("c")])
        );
        assert_eq!(
            LiveMessage::decode(None, &padded).expect("padded"),
            LiveMessage::News(vec![update("a"), update("b")])
        );
        assert!(LiveMessage::decode(None, b"[1]").is_err());
        assert!(LiveMessage::decode(Some(VERDICTS_TYPE), b"{}").is_err());
        assert!(LiveMessage::decode(None, b"").is_err());
    }

    #[test]
    fn routing_keys_are_short_and_distinct() {
        let a = live_routing_key("bot", &"x".repeat(128));
        assert!(a.len() < 255);
        assert_ne!(live_routing_key("a", "b.c"), live_routing_key("a.b", "c"));
        assert_eq!(live_routing_key("a", "b"), live_routing_key("a", "b"));
    }
}
