//! `escalations dead-events`: the events in `{prefix}.dead` — bodies that
//! are not envelopes and events the store refuses alone, both dead-lettered
//! by the worker with the reason in their headers (and, from queues declared
//! by earlier versions, events RabbitMQ dead-lettered after too many
//! deliveries) — listed, replayed to their shard queue, or purged.
//!
//! Listing takes the messages without acking and then closes the channel,
//! which puts every one of them back at the head of the queue, in order.
//! Each listing counts as a delivery of every message it showed; the queue's
//! limit (`broker::BROKER_DELIVERY_LIMIT`) is one no number of listings
//! reaches, so listing never drops or dead-letters anything. Replaying republishes each decodable
//! one to its conversation's shard (confirmed) and only then acks it, one at
//! a time in queue order; a crash in between replays it twice, which the
//! worker's dedupe on event ids makes harmless. A replayed event joins the
//! tail of its shard queue, after whatever its conversation received since.

use std::time::Duration;

use anyhow::{Context, bail};
use broker::{Publisher, Topology};
use domain::Envelope;
use lapin::message::BasicGetMessage;
use lapin::options::{BasicAckOptions, BasicGetOptions, QueuePurgeOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection, ConnectionProperties};
use serde_json::{Value, json};
use settings::Settings;

use crate::cli::DeadEventsAction;

/// Runs one `dead-events` action, writing its report to `out`.
pub async fn run(
    settings: &Settings,
    action: DeadEventsAction,
    out: &mut impl std::io::Write,
) -> anyhow::Result<()> {
    let b = &settings.broker;
    let topology = Topology::new(b.prefix.clone(), b.shards, b.delivery_limit);
    let queue = topology.dead_letter_queue();
    let connection = Connection::connect(&b.url, ConnectionProperties::default())
        .await
        .with_context(|| format!("connecting to RabbitMQ at {}", settings::redact_url(&b.url)))?;
    let channel = connection.create_channel().await.context("opening a channel")?;
    let outcome = match action {
        DeadEventsAction::List { limit, json } => list(&channel, &queue, limit, json, out).await,
        DeadEventsAction::Replay { yes } => {
            if yes {
                replay(settings, &channel, &queue, out).await
            } else {
                let count = list(&channel, &queue, usize::MAX, false, out).await?;
                writeln!(
                    out,
                    "dry run: {count} dead-lettered event(s) in {queue}; pass --yes to replay them"
                )?;
                Ok(count)
            }
        }
        DeadEventsAction::Purge { yes } => {
            if !yes {
                bail!("this deletes every message of {queue}; pass --yes");
            }
            let purged = channel
                .queue_purge(queue.as_str().into(), QueuePurgeOptions::default())
                .await
                .context("purging")?;
            writeln!(out, "purged {purged} message(s) from {queue}")?;
            Ok(purged as usize)
        }
    };
    // Closing the channel returns whatever was taken and not acked.
    let _ = connection.close(200, "bye".into()).await;
    outcome.map(|_| ())
}

/// Prints up to `limit` dead-lettered events without consuming them; returns
/// how many were seen.
async fn list(
    channel: &Channel,
    queue: &str,
    limit: usize,
    as_json: bool,
    out: &mut impl std::io::Write,
) -> anyhow::Result<usize> {
    let mut rows = Vec::new();
    while rows.len() < limit {
        let Some(message) = take(channel, queue).await? else { break };
        rows.push(describe(&message));
    }
    if as_json {
        writeln!(out, "{}", serde_json::to_string_pretty(&rows)?)?;
    } else if rows.is_empty() {
        writeln!(out, "no dead-lettered events in {queue}")?;
    } else {
        let header =
            ["bot", "conversation", "event type", "event id", "reason", "replayable", "dead-lettered at"];
        writeln!(out, "{}", columns(&header.map(str::to_owned)))?;
        for row in &rows {
            let field = |name: &str| row[name].as_str().unwrap_or("-").to_owned();
            let replayable = if row["replayable"] == json!(true) { "yes" } else { "no" };
            let cells = [
                field("botId"),
                field("conversationId"),
                field("eventType"),
                field("eventId"),
                field("reason"),
                replayable.to_owned(),
                field("deadLetteredAt"),
            ];
            writeln!(out, "{}", columns(&cells))?;
        }
    }
    Ok(rows.len())
}

/// One table line: fixed-width columns, the last one as is.
fn columns(cells: &[String; 7]) -> String {
    let widths = [12, 24, 16, 22, 15, 10];
    let mut line = String::new();
    for (cell, width) in cells.iter().zip(widths) {
        line.push_str(&format!("{cell:<width$} "));
    }
    line.push_str(&cells[6]);
    line
}

/// Republishes every decodable dead-lettered event to its shard queue, acking
/// each only after the broker confirmed its copy; returns how many.
async fn replay(
    settings: &Settings,
    channel: &Channel,
    queue: &str,
    out: &mut impl std::io::Write,
) -> anyhow::Result<usize> {
    let publisher = Publisher::connect(ingress::publisher_config(settings));
    if !publisher.wait_until_connected(Duration::from_secs(10)).await {
        publisher.shutdown().await;
        bail!("RabbitMQ did not accept the publisher within 10 s");
    }
    let (mut replayed, mut kept) = (0, 0);
    let result = async {
        while let Some(message) = take(channel, queue).await? {
            match Envelope::from_bytes(&message.delivery.data) {
                Ok(envelope) => {
                    let outbound = worker::outbound_message(&envelope, settings.broker.shards);
                    publisher.publish(&outbound).await.with_context(|| {
                        format!("republishing event {}", envelope.command.event_id.as_str())
                    })?;
                    channel
                        .basic_ack(message.delivery.delivery_tag, BasicAckOptions::default())
                        .await
                        .context("acking the dead-lettered copy")?;
                    replayed += 1;
                }
                // Left unacked: it goes back to the queue when the channel closes.
                Err(_) => kept += 1,
            }
        }
        anyhow::Ok(())
    }
    .await;
    publisher.shutdown().await;
    result?;
    writeln!(out, "replayed {replayed} event(s) to their shard queues")?;
    if kept > 0 {
        writeln!(
            out,
            "kept {kept} message(s) whose body is not an event; `dead-events purge --yes` drops them"
        )?;
    }
    Ok(replayed)
}

async fn take(channel: &Channel, queue: &str) -> anyhow::Result<Option<BasicGetMessage>> {
    channel
        .basic_get(queue.into(), BasicGetOptions { no_ack: false })
        .await
        .with_context(|| format!("reading {queue}"))
}

/// One dead-lettered message as JSON: its ids from the headers (the body may
/// not decode), and why and when it was dead-lettered: the worker's
/// `x-escalations-*` headers, or RabbitMQ's `x-death` for what a queue of an
/// earlier version dead-lettered.
fn describe(message: &BasicGetMessage) -> Value {
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
    let decodes = Envelope::from_bytes(&message.delivery.data).is_ok();
    json!({
        "botId": text(&headers, "bot-id"),
        "conversationId": text(&headers, "conversation-id"),
        "eventType": text(&headers, "event-type"),
        "eventId": message.delivery.properties.message_id().as_ref().map(|id| id.as_str().to_owned()),
        "reason": text(&headers, REASON_HEADER).or_else(|| death.as_ref().and_then(|d| text(d, "reason"))),
        "error": text(&headers, ERROR_HEADER),
        "fromQueue": text(&headers, QUEUE_HEADER).or_else(|| death.as_ref().and_then(|d| text(d, "queue"))),
        "deadLetteredAt": text(&headers, DEAD_AT_HEADER).or(at),
        "replayable": decodes,
    })
}
