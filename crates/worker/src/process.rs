//! One batch of a shard's deliveries: decode → apply and commit → announce → ack.
//!
//! Poison is decided here, never by the broker's count of deliveries
//! (docs/protocol.md §6): an event is dead-lettered only when it fails alone,
//! and the worker writes the dead letter itself (`broker::dead`: published,
//! confirmed, with the reason) before it acks the original.
//!
//! Every failure is classified once (STYLE, "Errors"):
//! - an undecodable body is poison: dead-lettered at once, and the rest of
//!   the batch goes on;
//! - a lost lease (the batch's fence, checked in its transaction) abandons
//!   the batch: nothing committed, nothing acked, and the shard stops;
//! - a transient store error (connection, pool, serialization, shutdown)
//!   retries the same batch with backoff, never acking and never dropping;
//! - any other store error is deterministic for some envelope of the batch,
//!   so the batch is applied again one envelope at a time and only the ones
//!   that fail alone are dead-lettered.
//!
//! Announcing is the stage after the commit and before the ack: it tells what
//! the commit made durable to those waiting for it (the deliveries claimed at
//! insert, handed to the webhook dispatcher of this process; its wake-up and
//! the outbox `NOTIFY` for new heads left to claim rounds; the `Prefer: wait`
//! replies; the live streams). It never fails the batch: a lost announcement is recovered by
//! the dispatcher's poll, the ingress's event-log lookup and the streams'
//! catch-up from the database.
//!
//! Acks come strictly after the commit they cover, so a crash anywhere
//! redelivers work whose effects may already be committed, and the batch's
//! dedupe on recorded event ids turns that replay into `duplicate`s.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use broker::{Delivery, ShardConsumer};
use chrono::{DateTime, Utc};
use domain::live::LiveUpdate;
use domain::{Envelope, Input, Verdict};
use metrics::{counter, histogram};
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

use crate::batch::{BatchOutcome, apply_handing};
use domain::report::error_chain;

use crate::error::Result;
use crate::metrics::{BATCH_SIZE, COMMIT_SECONDS, DEAD_LETTERED_TOTAL, EVENTS_TOTAL, STORE_RETRIES_TOTAL};
use crate::service::Context;
use store::LeaseFence;

/// How a batch ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Settled {
    /// Every delivery was committed and acked, or dead-lettered.
    Done,
    /// The shard was told to stop at once while retrying, or its lease is
    /// lost: nothing of the unsettled rest was acked; it goes back to the
    /// queue with the channel.
    Abandoned,
}

/// Decodes, applies and settles `deliveries` (in broker order) of `consumer`.
/// `abort` ends store retries early (the shard is being stopped at once).
///
/// # Errors
///
/// Only broker errors (an ack or reject that could not be sent): the channel
/// is gone and the unsettled deliveries will be redelivered.
#[tracing::instrument(level = "debug", skip_all, fields(deliveries = deliveries.len()))]
pub(crate) async fn settle_batch(
    ctx: &Context,
    consumer: &ShardConsumer,
    fence: &LeaseFence,
    deliveries: Vec<Delivery>,
    abort: &CancellationToken,
) -> Result<Settled> {
    let mut kept = Vec::with_capacity(deliveries.len());
    let mut envelopes = Vec::with_capacity(deliveries.len());
    for delivery in deliveries {
        match delivery.envelope() {
            Ok(envelope) => {
                envelopes.push(envelope);
                kept.push(delivery);
            }
            Err(problem) => {
                error!(
                    tag = delivery.tag,
                    message_id = delivery.message_id.as_deref().unwrap_or("-"),
                    reason = "undecodable",
                    error = %problem,
                    "poison message dead-lettered: its body is not an envelope"
                );
                dead_letter(ctx, consumer, &delivery, "undecodable", &problem.to_string()).await?;
            }
        }
    }
    let Some(last_tag) = kept.last().map(|delivery| delivery.tag) else { return Ok(Settled::Done) };
    let replies: Vec<Option<String>> = kept.iter().map(|delivery| delivery.reply_to.clone()).collect();

    match apply_with_retries(ctx, fence, &envelopes, abort).await {
        Applied::Committed(outcome) => {
            announce(ctx, &envelopes, &replies, outcome);
            consumer.ack_through(last_tag).await?;
            Ok(Settled::Done)
        }
        Applied::Aborted => Ok(Settled::Abandoned),
        Applied::Fenced(problem) => {
            warn!(error = %problem, "lease lost: batch not committed, not acked; stopping the shard");
            Ok(Settled::Abandoned)
        }
        Applied::Refused(problem) => {
            warn!(
                batch = envelopes.len(),
                error = %problem,
                "the store refused the batch with a permanent error; applying its events one by one"
            );
            apply_one_by_one(ctx, consumer, fence, &kept, &envelopes, &replies, abort).await
        }
    }
}

/// Dead-letters `delivery` (see the module docs): a confirmed copy in the
/// dead-letter queue first, then the ack of the original.
async fn dead_letter(
    ctx: &Context,
    consumer: &ShardConsumer,
    delivery: &Delivery,
    reason: &'static str,
    problem: &str,
) -> Result<()> {
    let connection = ctx.amqp.connection().await?;
    broker::dead::publish_dead_letter(
        &connection,
        &ctx.topology,
        delivery,
        consumer.queue(),
        reason,
        problem,
    )
    .await?;
    consumer.ack(delivery.tag).await?;
    counter!(DEAD_LETTERED_TOTAL, "reason" => reason).increment(1);
    Ok(())
}

/// What became of one apply.
enum Applied {
    Committed(BatchOutcome),
    Aborted,
    /// The lease check failed: the worker no longer holds the shard.
    Fenced(String),
    /// A permanent error, rendered with its sources.
    Refused(String),
}

/// Applies `envelopes` in one transaction, retrying transient store errors
/// with backoff until it commits, fails permanently, or `abort` fires.
async fn apply_with_retries(
    ctx: &Context,
    fence: &LeaseFence,
    envelopes: &[Envelope],
    abort: &CancellationToken,
) -> Applied {
    let mut attempt: u32 = 0;
    loop {
        let started = Instant::now();
        let outcome = apply_handing(
            &ctx.store,
            &ctx.rules,
            envelopes,
            batch_now(envelopes),
            Some(fence),
            ctx.handoff.as_ref(),
        )
        .await;
        match outcome {
            Ok(outcome) => {
                histogram!(COMMIT_SECONDS).record(started.elapsed().as_secs_f64());
                record_verdicts(envelopes.len(), &outcome);
                return Applied::Committed(outcome);
            }
            Err(problem) if problem.is_transient() => {
                attempt = attempt.saturating_add(1);
                let delay = backoff(ctx, attempt);
                counter!(STORE_RETRIES_TOTAL).increment(1);
                warn!(
                    attempt,
                    batch = envelopes.len(),
                    retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                    error = %error_chain(&problem),
                    "store unavailable; retrying the batch (nothing acked)"
                );
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = abort.cancelled() => return Applied::Aborted,
                }
            }
            Err(problem @ store::Error::LeaseLost { .. }) => return Applied::Fenced(error_chain(&problem)),
            Err(problem) => return Applied::Refused(error_chain(&problem)),
        }
    }
}

/// The fallback after a permanent error: each envelope alone, in order. The
/// ones that still fail alone are dead-lettered; the others are acked.
async fn apply_one_by_one(
    ctx: &Context,
    consumer: &ShardConsumer,
    fence: &LeaseFence,
    deliveries: &[Delivery],
    envelopes: &[Envelope],
    replies: &[Option<String>],
    abort: &CancellationToken,
) -> Result<Settled> {
    let mut committed_through = None;
    for ((delivery, envelope), reply) in deliveries.iter().zip(envelopes).zip(replies) {
        let (one, reply) = (std::slice::from_ref(envelope), std::slice::from_ref(reply));
        match apply_with_retries(ctx, fence, one, abort).await {
            Applied::Committed(outcome) => {
                announce(ctx, one, reply, outcome);
                committed_through = Some(delivery.tag);
            }
            outcome @ (Applied::Aborted | Applied::Fenced(_)) => {
                if let Applied::Fenced(problem) = outcome {
                    warn!(error = %problem, "lease lost: the rest is not committed, not acked; stopping the shard");
                }
                // Ack what was committed so it is not redelivered needlessly.
                if let Some(tag) = committed_through {
                    consumer.ack_through(tag).await?;
                }
                return Ok(Settled::Abandoned);
            }
            Applied::Refused(problem) => {
                error!(
                    tag = delivery.tag,
                    event_id = envelope.command.event_id.as_str(),
                    event_type = envelope.event_type(),
                    bot_id = envelope.bot_id.as_str(),
                    conversation_id = envelope.conversation_id.as_str(),
                    reason = "store_rejected",
                    error = %problem,
                    "event dead-lettered: the store refuses to record it"
                );
                dead_letter(ctx, consumer, delivery, "store_rejected", &problem).await?;
            }
        }
    }
    // Dead-lettered tags are acked already, so acking through the last
    // committed one settles exactly the committed ones.
    if let Some(tag) = committed_through {
        consumer.ack_through(tag).await?;
    }
    Ok(Settled::Done)
}

/// Tells what a commit of `envelopes` made durable (see the module docs):
/// wakes the webhook dispatcher and queues the outbox `NOTIFY` if deliveries
/// were queued, answers each `reply_to` with its conversations' updates, and
/// publishes the updates to live streams. `replies` holds each envelope's
/// `reply_to`.
fn announce(ctx: &Context, envelopes: &[Envelope], replies: &[Option<String>], outcome: BatchOutcome) {
    if let Some(handoff) = &ctx.handoff {
        for (delivery, slot) in outcome.handed {
            handoff.hand(delivery, slot);
        }
    }
    // Deliveries queued behind a pending head wait for its settlement (its
    // dispatcher moves on by itself); only new unclaimed heads need a round.
    if outcome.unclaimed_heads > 0 {
        if let Some(handoff) = &ctx.handoff {
            handoff.wake();
        }
        ctx.announce.notify_one();
    }
    for (queue, updates) in answers(envelopes, replies, &outcome.live) {
        ctx.live.reply(queue, updates);
    }
    ctx.live.publish(outcome.live);
}

/// For each queue named in a `reply_to`, the batch's updates of the
/// conversations whose commands named it (which carry those commands' verdicts).
fn answers(
    envelopes: &[Envelope],
    replies: &[Option<String>],
    live: &[LiveUpdate],
) -> BTreeMap<String, Vec<LiveUpdate>> {
    let mut answers: BTreeMap<String, Vec<LiveUpdate>> = BTreeMap::new();
    for (envelope, reply) in envelopes.iter().zip(replies) {
        let Some(queue) = reply else { continue };
        let Some(update) = live
            .iter()
            .find(|u| u.bot_id == envelope.bot_id && u.conversation_id == envelope.conversation_id)
        else {
            continue;
        };
        let updates = answers.entry(queue.clone()).or_default();
        if !updates.iter().any(|u| u.bot_id == update.bot_id && u.conversation_id == update.conversation_id) {
            updates.push(update.clone());
        }
    }
    answers
}

/// The time the state machine sees for a batch: the clock, but never before
/// the moment a fired timer in the batch was claimed (its `received_at`).
/// Otherwise a worker whose clock lags the poller's would judge the timer
/// not yet due and ignore it, and it would never fire (the poller already
/// deleted it).
fn batch_now(envelopes: &[Envelope]) -> DateTime<Utc> {
    envelopes
        .iter()
        .filter(|envelope| matches!(envelope.command.input, Input::TimerFired { .. }))
        .map(|envelope| envelope.received_at)
        .fold(Utc::now(), DateTime::max)
}

fn backoff(ctx: &Context, attempt: u32) -> Duration {
    let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(16));
    ctx.config.retry_delay_min.saturating_mul(factor).min(ctx.config.retry_delay_max)
}

fn record_verdicts(size: usize, outcome: &BatchOutcome) {
    histogram!(BATCH_SIZE).record(f64::from(u32::try_from(size).unwrap_or(u32::MAX)));
    for verdict in &outcome.verdicts {
        let label = match verdict {
            Verdict::Applied => "applied",
            Verdict::Duplicate => "duplicate",
            Verdict::Ignored => "ignored",
            Verdict::Rejected(_) => "rejected",
        };
        counter!(EVENTS_TOTAL, "verdict" => label).increment(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::{BotId, Command, ConversationId, EscalationId, EventId, TimerKind};

    fn envelope(input: Input, received_at: DateTime<Utc>) -> Envelope {
        Envelope {
            bot_id: BotId::parse("bot").expect("id"),
            conversation_id: ConversationId::parse("c").expect("id"),
            received_at,
            command: Command { event_id: EventId::parse("e").expect("id"), input },
        }
    }

    #[test]
    fn batch_now_never_precedes_a_fired_timer() {
        let ahead = Utc::now() + chrono::TimeDelta::seconds(60);
        let timer = Input::TimerFired {
            escalation_id: EscalationId::parse("x").expect("id"),
            kind: TimerKind::NoResponse,
        };
        assert_eq!(batch_now(&[envelope(Input::VisitorEnd, Utc::now()), envelope(timer, ahead)]), ahead);
        // Other inputs' stamps come from the ingress and do not move the clock.
        assert!(batch_now(&[envelope(Input::VisitorEnd, ahead)]) < ahead);
    }
}
