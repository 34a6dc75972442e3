//! Durable timers (docs/protocol.md §5, "timers survive worker restarts") fired through
//! the broker, so they take the same ordered path as every other event.
//!
//! Every worker polls: in one transaction it claims due timers (`FOR UPDATE
//! SKIP LOCKED`, so pollers never claim the same row at once), publishes a
//! `TimerFired` envelope for each to its conversation's shard and waits for
//! the broker's confirm, deletes the fired rows and commits. A crash between
//! the confirm and the commit fires the timer again on a later poll with the
//! same event id — `timer:{escalation}:{kind}:{due_at µs}` — so the worker
//! records it as a duplicate; and the state machine ignores a timer whose
//! deadline moved or whose escalation is over. So each timer fires once.

use std::sync::Arc;

use broker::{OutboundMessage, Publisher};
use chrono::{DateTime, Utc};
use domain::{Command, Envelope, EventId, Input};
use metrics::counter;
use store::{DueTimer, claim_due_timers, delete_fired_timer};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use domain::report::error_chain;

use crate::error::Result;
use crate::metrics::TIMERS_FIRED_TOTAL;
use crate::service::Context;

/// Polls for due timers every `timer_poll_every` until `shutdown`.
pub(crate) async fn run_timers(ctx: Arc<Context>, publisher: Arc<Publisher>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(ctx.config.timer_poll_every);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        // Publishing needs the broker; claiming rows first would only hold
        // locks while every publish fails.
        if !publisher.is_connected() {
            continue;
        }
        loop {
            match fire_due(&ctx, &publisher).await {
                Ok(fired) => {
                    if failing {
                        info!("timer polling recovered");
                        failing = false;
                    }
                    // A full poll means more may be due right now.
                    if fired < ctx.config.timer_batch || shutdown.is_cancelled() {
                        break;
                    }
                }
                Err(error) => {
                    // One line per outage, not one per poll.
                    if !failing {
                        warn!(error = %error_chain(&error), "firing timers failed; retrying every poll");
                        failing = true;
                    }
                    break;
                }
            }
        }
    }
}

/// One poll: claim, publish, delete, commit. Returns how many were claimed.
async fn fire_due(ctx: &Context, publisher: &Publisher) -> Result<usize> {
    let mut client = ctx.control.client().await?;
    let tx = client.transaction().await.map_err(store::Error::Db)?;
    let now = Utc::now();
    let due = claim_due_timers(&tx, now, ctx.config.timer_batch).await?;
    if due.is_empty() {
        return Ok(0);
    }
    let shards = ctx.topology.shards;
    let messages: Vec<Option<OutboundMessage>> =
        due.iter().map(|timer| fired_envelope(timer, now).map(|e| OutboundMessage::of(&e, shards))).collect();
    let published = futures::future::join_all(messages.iter().map(|message| async move {
        match message {
            Some(message) => publisher.publish(message).await.map_err(|error| error_chain(&error)),
            None => Err("its event id would be invalid".to_owned()),
        }
    }))
    .await;
    let mut fired = 0u64;
    for (timer, outcome) in due.iter().zip(published) {
        match outcome {
            Ok(()) => {
                // Deleted only if not re-armed meanwhile; a re-armed timer
                // stays and its fired event is ignored as not yet due.
                let deleted = delete_fired_timer(&tx, timer).await?;
                fired += 1;
                debug!(
                    bot_id = timer.key.bot_id.as_str(),
                    conversation_id = timer.key.conversation_id.as_str(),
                    escalation_id = timer.escalation_id.as_str(),
                    kind = timer.kind.as_str(),
                    deleted,
                    "timer fired"
                );
            }
            // Left in place: the next poll publishes it again.
            Err(error) => warn!(
                escalation_id = timer.escalation_id.as_str(),
                kind = timer.kind.as_str(),
                %error,
                "publishing a due timer failed; it fires on a later poll"
            ),
        }
    }
    tx.commit().await.map_err(store::Error::Db)?;
    counter!(TIMERS_FIRED_TOTAL).increment(fired);
    Ok(due.len())
}

/// The `TimerFired` command for `timer`, stamped with the claim time (which
/// the shard task treats as "now" at least; see `process::batch_now`).
fn fired_envelope(timer: &DueTimer, now: DateTime<Utc>) -> Option<Envelope> {
    let event_id = EventId::parse(fired_event_id(timer)).ok()?;
    Some(Envelope {
        bot_id: timer.key.bot_id.clone(),
        conversation_id: timer.key.conversation_id.clone(),
        received_at: now,
        command: Command {
            event_id,
            input: Input::TimerFired { escalation_id: timer.escalation_id.clone(), kind: timer.kind },
        },
    })
}

/// Stable per armed deadline: a re-publish is a duplicate, a re-armed timer
/// (new deadline) is a new event. Event ids are unique per conversation, so
/// kind and deadline already tell its timers apart; the escalation id is
/// shortened if the whole would exceed an event id's 128 characters.
fn fired_event_id(timer: &DueTimer) -> String {
    const PREFIX: &str = "timer:";
    let suffix = format!(":{}:{}", timer.kind.as_str(), timer.due_at.timestamp_micros());
    let room = EventId::MAX_CHARS.saturating_sub(PREFIX.len() + suffix.len());
    let escalation: String = timer.escalation_id.as_str().chars().take(room).collect();
    format!("{PREFIX}{escalation}{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::{BotId, ConversationId, EscalationId, TimerKind};
    use store::ConvKey;

    fn timer(escalation: &str) -> DueTimer {
        DueTimer {
            key: ConvKey::new(BotId::parse("bot").expect("id"), ConversationId::parse("c").expect("id")),
            escalation_id: EscalationId::parse(escalation).expect("id"),
            kind: TimerKind::NoResponse,
            due_at: DateTime::from_timestamp(1_800_000_000, 123_456_000).expect("time"),
        }
    }

    #[test]
    fn fired_event_ids_are_stable_per_deadline() {
        assert_eq!(fired_event_id(&timer("esc-1")), "timer:esc-1:no_response:1800000000123456");
        let now = Utc::now();
        let envelope = fired_envelope(&timer("esc-1"), now).expect("valid");
        assert_eq!(envelope.received_at, now);
        assert_eq!(envelope.event_type(), "timerFired");
        let message = OutboundMessage::of(&envelope, 16);
        assert_eq!(message.event_id, "timer:esc-1:no_response:1800000000123456");
        assert_eq!(message.shard, broker::shard_for("bot", "c", 16));
        assert_eq!(Envelope::from_bytes(&message.body).expect("decodes"), envelope);
    }

    #[test]
    fn a_long_escalation_id_is_shortened_into_a_valid_event_id() {
        let id = fired_event_id(&timer(&"é".repeat(128)));
        assert_eq!(id.chars().count(), EventId::MAX_CHARS);
        assert!(id.ends_with(":no_response:1800000000123456"), "{id}");
        assert!(fired_envelope(&timer(&"é".repeat(128)), Utc::now()).is_some());
    }
}
