//! Announcing committed batches (docs/protocol.md §3): on the live exchange, so open
//! widget streams hear of them at once, and straight to the queue named in a
//! command's `reply_to`, so a caller waiting for its verdict (`Prefer: wait`,
//! `escalate`) hears of it without any binding.
//!
//! Strictly after the commit and best effort: transient messages without
//! confirms, one per committed batch (a JSON array of its conversations'
//! updates, routed to each of them; see `broker::publish_live`) plus one per
//! reply queue. The batch path only hands them to a bounded queue
//! (`try_send`, never waiting); one task publishes them in order on a
//! connection of its own, reconnecting as needed. A full queue or a failed
//! publish is logged and counted, never fails or delays a batch: every stream
//! fills gaps from the database, the source of truth. Timing a publish out
//! would be worse than queueing it: a half-sent batch leaves streams waiting
//! for an event until the next one shows the gap.

use domain::live::LiveUpdate;
use lapin::Channel;
use metrics::counter;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;

use crate::connection::Amqp;
use crate::metrics::LIVE_MESSAGES_TOTAL;

/// Messages that may wait for the publishing task.
const QUEUE: usize = 4096;

/// What the publishing task sends, in the order queued.
#[derive(Debug)]
enum Outgoing {
    /// A committed batch's news, to the live exchange.
    Batch(Vec<LiveUpdate>),
    /// Verdicts for the callers waiting on one ingress instance (`reply_to`).
    Reply { queue: String, updates: Vec<LiveUpdate> },
}

/// The batch path's handle on the publishing task, which ends when this is dropped.
#[derive(Debug)]
pub(crate) struct LivePublisher {
    sender: mpsc::Sender<Outgoing>,
}

impl LivePublisher {
    /// Starts the publishing task on `amqp` (a connection of its own).
    pub(crate) fn start(amqp: Amqp, prefix: &str) -> Self {
        let (sender, receiver) = mpsc::channel(QUEUE);
        tokio::spawn(run(amqp, prefix.to_owned(), receiver));
        Self { sender }
    }

    /// Queues one committed batch's updates; never waits.
    pub(crate) fn publish(&self, updates: Vec<LiveUpdate>) {
        if !updates.is_empty() {
            let count = updates.len() as u64;
            self.queue(Outgoing::Batch(updates), count);
        }
    }

    /// Queues the updates answering the commands that named `queue` as their
    /// `reply_to`; never waits.
    pub(crate) fn reply(&self, queue: String, updates: Vec<LiveUpdate>) {
        if !updates.is_empty() {
            let count = updates.len() as u64;
            self.queue(Outgoing::Reply { queue, updates }, count);
        }
    }

    fn queue(&self, outgoing: Outgoing, count: u64) {
        match self.sender.try_send(outgoing) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                counter!(LIVE_MESSAGES_TOTAL, "outcome" => "dropped").increment(count);
                tracing::warn!(
                    updates = count,
                    "live queue full; streams and waiters catch up from the database"
                );
            }
            Err(TrySendError::Closed(_)) => {
                counter!(LIVE_MESSAGES_TOTAL, "outcome" => "dropped").increment(count);
            }
        }
    }
}

async fn run(amqp: Amqp, prefix: String, mut receiver: mpsc::Receiver<Outgoing>) {
    let mut channel: Option<Channel> = None;
    while let Some(outgoing) = receiver.recv().await {
        match outgoing {
            Outgoing::Batch(updates) => {
                // One message per committed batch (per chunk of a very large one).
                for chunk in updates.chunks(broker::LIVE_KEYS_PER_MESSAGE) {
                    let outcome = publish(&amqp, &prefix, &mut channel, Target::Exchange, chunk).await;
                    settle(outcome, chunk.len(), &mut channel);
                }
            }
            Outgoing::Reply { queue, updates } => {
                let outcome = publish(&amqp, &prefix, &mut channel, Target::Queue(&queue), &updates).await;
                settle(outcome, updates.len(), &mut channel);
            }
        }
    }
    amqp.close().await;
}

fn settle(outcome: anyhow::Result<()>, count: usize, channel: &mut Option<Channel>) {
    let label = if outcome.is_ok() { "published" } else { "failed" };
    counter!(LIVE_MESSAGES_TOTAL, "outcome" => label).increment(count as u64);
    if let Err(error) = outcome {
        tracing::warn!(error = format!("{error:#}"), "live publish failed");
        // Reopened for the next message.
        *channel = None;
    }
}

/// Where a live message goes.
enum Target<'a> {
    /// The live exchange, routed to each of the updates' conversations.
    Exchange,
    /// One ingress instance's queue, by name.
    Queue(&'a str),
}

async fn publish(
    amqp: &Amqp,
    prefix: &str,
    slot: &mut Option<Channel>,
    target: Target<'_>,
    updates: &[LiveUpdate],
) -> anyhow::Result<()> {
    let channel = match slot.as_ref().filter(|c| c.status().connected()) {
        Some(channel) => channel.clone(),
        None => {
            let connection = amqp.connection().await?;
            let channel = connection.create_channel().await?;
            broker::declare_live(&channel, prefix).await?;
            slot.insert(channel).clone()
        }
    };
    let body = serde_json::to_vec(updates)?;
    match target {
        Target::Exchange => {
            let keys = updates.iter().map(|u| (u.bot_id.as_str(), u.conversation_id.as_str()));
            broker::publish_live(&channel, prefix, keys, &body).await?;
        }
        Target::Queue(queue) => broker::publish_reply(&channel, queue, &body).await?,
    }
    Ok(())
}
