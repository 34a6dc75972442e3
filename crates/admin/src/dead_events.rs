//! The events in `{prefix}.dead` — bodies that are not envelopes and events
//! the store refuses alone, both dead-lettered by the worker with the reason
//! in their headers (and, from queues declared by earlier versions, events
//! RabbitMQ dead-lettered after too many deliveries) — listed, replayed to
//! their shard queue, or purged. Behind `escalations dead-events` and the
//! admin API's `/v1/dead-events`.
//!
//! Listing takes the messages without acking and then hands them back, which
//! puts every one of them back at the head of the queue, in order. Each
//! listing counts as a delivery of every message it showed; the queue's limit
//! (`broker::BROKER_DELIVERY_LIMIT`) is one no number of listings reaches, so
//! listing never drops or dead-letters anything. Replaying republishes each decodable
//! one to its conversation's shard (confirmed) and only then acks it, one at
//! a time in queue order; a crash in between replays it twice, which the
//! worker's dedupe on event ids makes harmless. A replayed event joins the
//! tail of its shard queue, after whatever its conversation received since.

use std::time::Duration;

use broker::{Publisher, Topology};
use domain::Envelope;
use lapin::message::BasicGetMessage;
use lapin::options::{BasicAckOptions, BasicGetOptions, BasicNackOptions, QueuePurgeOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection, ConnectionProperties};
use serde::{Deserialize, Serialize};
use settings::Settings;
use utoipa::ToSchema;

use crate::error::{OpsError, OpsResult};

/// How long connecting to one broker node may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// One dead-lettered message: its ids from the headers (the body may not
/// decode), and why and when RabbitMQ dead-lettered it (`x-death`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeadEvent {
    /// The bot (`bot-id` header).
    pub bot_id: Option<String>,
    /// The conversation (`conversation-id` header).
    pub conversation_id: Option<String>,
    /// The event type (`event-type` header).
    pub event_type: Option<String>,
    /// The event id (message id).
    pub event_id: Option<String>,
    /// Why: the worker's `undecodable` or `store_rejected`, or, for what a
    /// queue of an earlier version dead-lettered, RabbitMQ's `rejected`,
    /// `delivery_limit`, ...
    pub reason: Option<String>,
    /// The worker's error text, when the worker dead-lettered it.
    pub error: Option<String>,
    /// The shard queue it came from.
    pub from_queue: Option<String>,
    /// When it was dead-lettered (RFC 3339).
    pub dead_lettered_at: Option<String>,
    /// Whether its body is an event (only those are replayed).
    pub replayable: bool,
}

/// What a replay did, or would do (`dryRun`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeadEventsReplay {
    /// Nothing was changed: `confirm` (`--yes`) was not given.
    pub dry_run: bool,
    /// In a dry run, what is in the queue; empty otherwise.
    pub events: Vec<DeadEvent>,
    /// Events republished to their shard queues.
    pub replayed: u64,
    /// Messages left in the queue because their body is not an event.
    pub kept: u64,
}

/// What a purge deleted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DeadEventsPurge {
    /// The queue purged.
    pub queue: String,
    /// Messages deleted.
    pub purged: u64,
}

/// The dead-letter queue's name and an open connection to the broker.
async fn open(settings: &Settings) -> OpsResult<(String, Connection, Channel)> {
    let b = &settings.broker;
    let topology = Topology::new(b.prefix.clone(), b.shards, b.delivery_limit);
    let queue = topology.dead_letter_queue();
    let doing = format!("connecting to RabbitMQ at {}", settings::redact_urls(&b.url));
    let (connection, _node) = broker::Nodes::new(&b.url)
        .connect(ConnectionProperties::default(), CONNECT_TIMEOUT)
        .await
        .map_err(|error| OpsError::unavailable(&doing, error))?;
    let channel = connection
        .create_channel()
        .await
        .map_err(|error| OpsError::unavailable("opening a channel", error))?;
    Ok((queue, connection, channel))
}

/// Closing the connection returns whatever was taken and not acked.
async fn close(connection: Connection) {
    let _ = connection.close(200, "bye".into()).await;
}

/// Up to `limit` dead-lettered events, oldest first, without consuming them.
pub async fn list(settings: &Settings, limit: usize) -> OpsResult<Vec<DeadEvent>> {
    let (queue, connection, channel) = open(settings).await?;
    let listed = peek(&channel, &queue, limit).await;
    close(connection).await;
    listed
}

/// Takes up to `limit` messages, then hands them all back (`basic.nack`,
/// requeued, in one frame) before the connection closes, so they are in the
/// queue again, in their order, when the caller returns.
async fn peek(channel: &Channel, queue: &str, limit: usize) -> OpsResult<Vec<DeadEvent>> {
    let mut events = Vec::new();
    let mut last = None;
    while events.len() < limit {
        let Some(message) = take(channel, queue).await? else { break };
        last = Some(message.delivery.delivery_tag);
        events.push(describe(&message));
    }
    if let Some(tag) = last {
        channel
            .basic_nack(tag, BasicNackOptions { multiple: true, requeue: true })
            .await
            .map_err(|error| OpsError::unavailable("handing the listed messages back", error))?;
    }
    Ok(events)
}

/// Republishes every decodable dead-lettered event to its shard queue, acking
/// each only after the broker confirmed its copy; a dry run unless `confirm`.
pub async fn replay(settings: &Settings, confirm: bool) -> OpsResult<DeadEventsReplay> {
    let (queue, connection, channel) = open(settings).await?;
    let outcome = if confirm {
        republish(settings, &channel, &queue).await
    } else {
        peek(&channel, &queue, usize::MAX).await.map(|events| DeadEventsReplay {
            dry_run: true,
            events,
            replayed: 0,
            kept: 0,
        })
    };
    close(connection).await;
    outcome
}

async fn republish(settings: &Settings, channel: &Channel, queue: &str) -> OpsResult<DeadEventsReplay> {
    let publisher = Publisher::connect(ingress::publisher_config(settings));
    if !publisher.wait_until_connected(Duration::from_secs(10)).await {
        publisher.shutdown().await;
        return Err(OpsError::unavailable("publishing", "RabbitMQ did not accept the publisher within 10 s"));
    }
    let (mut replayed, mut kept) = (0, 0);
    let result = async {
        while let Some(message) = take(channel, queue).await? {
            match Envelope::from_bytes(&message.delivery.data) {
                Ok(envelope) => {
                    let outbound = broker::OutboundMessage::of(&envelope, settings.broker.shards);
                    publisher.publish(&outbound).await.map_err(|error| {
                        let doing = format!("republishing event {}", envelope.command.event_id.as_str());
                        OpsError::unavailable(&doing, error)
                    })?;
                    channel
                        .basic_ack(message.delivery.delivery_tag, BasicAckOptions::default())
                        .await
                        .map_err(|error| OpsError::unavailable("acking the dead-lettered copy", error))?;
                    replayed += 1;
                }
                // Left unacked: it goes back to the queue when the channel closes.
                Err(_) => kept += 1,
            }
        }
        Ok(())
    }
    .await;
    publisher.shutdown().await;
    result.map(|()| DeadEventsReplay { dry_run: false, events: Vec::new(), replayed, kept })
}

/// Deletes every message of the dead-letter queue; refused unless `confirm`.
pub async fn purge(settings: &Settings, confirm: bool) -> OpsResult<DeadEventsPurge> {
    if !confirm {
        let queue =
            Topology::new(settings.broker.prefix.clone(), settings.broker.shards, 1).dead_letter_queue();
        return Err(OpsError::refused(format!(
            "this deletes every message of {queue}; pass --yes (confirm=true over HTTP)"
        )));
    }
    let (queue, connection, channel) = open(settings).await?;
    let purged = channel
        .queue_purge(queue.as_str().into(), QueuePurgeOptions::default())
        .await
        .map_err(|error| OpsError::unavailable("purging", error));
    close(connection).await;
    Ok(DeadEventsPurge { queue, purged: u64::from(purged?) })
}

async fn take(channel: &Channel, queue: &str) -> OpsResult<Option<BasicGetMessage>> {
    channel
        .basic_get(queue.into(), BasicGetOptions { no_ack: false })
        .await
        .map_err(|error| OpsError::unavailable(&format!("reading {queue}"), error))
}

fn describe(message: &BasicGetMessage) -> DeadEvent {
    use broker::dead::{DEAD_AT_HEADER, ERROR_HEADER, QUEUE_HEADER, REASON_HEADER, text_header};
    let headers = message.delivery.properties.headers().clone().unwrap_or_default();
    let text = |table: &FieldTable, name: &str| text_header(table, name);
    let death = match headers.inner().get("x-death") {
        Some(AMQPValue::FieldArray(deaths)) => deaths.as_slice().first().and_then(|first| match first {
            AMQPValue::FieldTable(table) => Some(table.clone()),
            _ => None,
        }),
        _ => None,
    };
    let at = death.as_ref().and_then(|d| match d.inner().get("time") {
        Some(AMQPValue::Timestamp(seconds)) => {
            chrono::DateTime::from_timestamp(i64::try_from(*seconds).ok()?, 0)
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        }
        _ => None,
    });
    DeadEvent {
        bot_id: text(&headers, "bot-id"),
        conversation_id: text(&headers, "conversation-id"),
        event_type: text(&headers, "event-type"),
        event_id: message.delivery.properties.message_id().as_ref().map(|id| id.as_str().to_owned()),
        reason: text(&headers, REASON_HEADER).or_else(|| death.as_ref().and_then(|d| text(d, "reason"))),
        error: text(&headers, ERROR_HEADER),
        from_queue: text(&headers, QUEUE_HEADER).or_else(|| death.as_ref().and_then(|d| text(d, "queue"))),
        dead_lettered_at: text(&headers, DEAD_AT_HEADER).or(at),
        replayable: Envelope::from_bytes(&message.delivery.data).is_ok(),
    }
}
