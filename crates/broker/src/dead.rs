//! Dead letters written by the worker (docs/protocol.md §6).
//!
//! An event is poison when it fails alone, in the worker: its body does not
//! decode, or the store refuses it applied on its own. Never because the
//! broker delivered it many times: that count also grows with every worker
//! kill and outage. So the worker, not the queue, dead-letters: it publishes
//! a copy to `{prefix}.dead` (default exchange, mandatory, confirmed) with
//! headers saying why, and only then acks the original. A crash in between
//! leaves both; the original is isolated again on redelivery, and
//! `dead-events list` shows the copy twice at worst.

use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use lapin::{
    Confirmation, Connection,
    options::{BasicPublishOptions, ConfirmSelectOptions},
    types::{AMQPValue, FieldTable, LongString},
};

use crate::consumer::Delivery;
use crate::error::{Error, Result};
use crate::topology::{Topology, name};

/// Header naming why the worker dead-lettered an event: `undecodable` or
/// `store_rejected`.
pub const REASON_HEADER: &str = "x-escalations-reason";
/// Header with the error that made the event poison (at most 1,000 bytes).
pub const ERROR_HEADER: &str = "x-escalations-error";
/// Header naming the shard queue the event came from.
pub const QUEUE_HEADER: &str = "x-escalations-queue";
/// Header with the time the worker dead-lettered the event (RFC 3339).
pub const DEAD_AT_HEADER: &str = "x-escalations-dead-lettered-at";

/// A publish to the dead-letter queue that is not confirmed within this
/// fails; the original stays unacked and is redelivered.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);

/// Publishes a copy of `delivery` (taken from `queue`) to the topology's
/// dead-letter queue with `reason` and `error` in its headers, and returns
/// once the broker confirmed it. The caller acks the original afterwards.
///
/// # Errors
///
/// [`Error::Amqp`] if the channel cannot be opened or the publish fails,
/// [`Error::Returned`] if the dead-letter queue does not exist,
/// [`Error::Nacked`] or [`Error::Timeout`] if the broker did not take it.
pub async fn publish_dead_letter(
    connection: &Connection,
    topology: &Topology,
    delivery: &Delivery,
    queue: &str,
    reason: &str,
    error: &str,
) -> Result<()> {
    let dead = topology.dead_letter_queue();
    let routing_key = name(dead.clone())?;
    let mut headers = delivery.properties.headers().clone().unwrap_or_default();
    for (key, value) in [
        (REASON_HEADER, reason.to_owned()),
        (ERROR_HEADER, truncate(error, 1000).to_owned()),
        (QUEUE_HEADER, queue.to_owned()),
        (DEAD_AT_HEADER, Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)),
    ] {
        headers.insert(key.into(), AMQPValue::LongString(LongString::from(value)));
    }
    // 2 = persistent, whatever the original said.
    let properties = delivery.properties.clone().with_headers(headers).with_delivery_mode(2);
    let channel = connection
        .create_channel()
        .await
        .map_err(Error::amqp(format!("open channel to publish to {dead}")))?;
    let outcome = tokio::time::timeout(CONFIRM_TIMEOUT, async {
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(Error::amqp(format!("confirm.select for {dead}")))?;
        channel
            .basic_publish(
                "".into(),
                routing_key,
                BasicPublishOptions { mandatory: true, ..BasicPublishOptions::default() },
                &delivery.body,
                properties,
            )
            .await
            .map_err(Error::amqp(format!("publish to {dead}")))?
            .await
            .map_err(Error::amqp(format!("confirm of {dead}")))
    })
    .await;
    let _ = channel.close(200, "OK".into()).await;
    match outcome {
        Err(_elapsed) => Err(Error::Timeout),
        Ok(Err(error)) => Err(error),
        Ok(Ok(Confirmation::Ack(None))) => Ok(()),
        Ok(Ok(Confirmation::Ack(Some(returned)) | Confirmation::Nack(Some(returned)))) => {
            Err(Error::Returned {
                reply_code: returned.reply_code,
                reply_text: returned.reply_text.to_string(),
            })
        }
        Ok(Ok(_)) => Err(Error::Nacked),
    }
}

/// The longest prefix of `text` of at most `max` bytes that ends on a char
/// boundary.
fn truncate(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Reads one of this module's text headers (or any long/short string header)
/// of a dead-lettered message.
#[must_use]
pub fn text_header(headers: &FieldTable, key: &str) -> Option<String> {
    match headers.inner().get(key) {
        Some(AMQPValue::LongString(value)) => Some(String::from_utf8_lossy(value.as_bytes()).into_owned()),
        Some(AMQPValue::ShortString(value)) => Some(value.as_str().to_owned()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_keeps_whole_characters() {
        assert_eq!(truncate("abc", 10), "abc");
        assert_eq!(truncate("abcdef", 3), "abc");
        // "é" is two bytes: cutting inside it backs off to before it.
        assert_eq!(truncate("aé", 2), "a");
    }
}
