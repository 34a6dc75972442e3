//! One task per held shard: consume → batch → (process) → ack, in broker order.
//!
//! The task waits for one delivery, then takes whatever else has already
//! arrived (up to `max_batch`) without waiting, and settles that batch
//! before reading on. So the conversations of a shard are processed together,
//! each in the order the broker holds its events, and a busy shard gets big
//! batches (one transaction each) while a quiet one gets small, fast ones.
//!
//! Two ways to stop (see [`ShardTask`]); both end by closing the channel,
//! never by a bare `basic.cancel` (see `broker::consumer` for why):
//! - draining (rebalancing, shutdown): finish the batch in flight, then settle
//!   what has already arrived, then close. Little goes back to the queue,
//!   which keeps the quorum queue's delivery counts (the poison limit) low.
//! - now (lease lost, drain deadline passed): finish the batch in flight (its
//!   apply, not its store retries), then close.
//!
//! Either way, whatever was delivered but not settled returns to the queue
//! ahead of the rest, and the next holder's consumer only becomes active
//! after that, so it sees the shard's messages in order. A task aborted
//! outright closes its channel too (the consumer's drop does).
//!
//! Every batch is fenced by the lease epoch the task was started with: a
//! batch whose transaction finds the lease gone commits nothing, acks
//! nothing, and the task stops (`process`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use broker::ShardConsumer;
use store::LeaseFence;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, error_span, info, warn};

use domain::report::error_chain;

use crate::error::{Error, Result};
use crate::process::{Settled, settle_batch};
use crate::service::Context;

/// A running shard task and the means to stop it.
#[derive(Debug)]
pub(crate) struct ShardTask {
    shard: u16,
    epoch: u64,
    /// Set while the task's consumer is registered with the broker.
    consuming: Arc<AtomicBool>,
    drain: CancellationToken,
    now: CancellationToken,
    handle: JoinHandle<Result<()>>,
}

impl ShardTask {
    /// Starts consuming `shard`, held under lease `epoch`.
    pub(crate) fn spawn(ctx: Arc<Context>, shard: u16, epoch: u64) -> Self {
        let drain = CancellationToken::new();
        let now = CancellationToken::new();
        let consuming = Arc::new(AtomicBool::new(false));
        let fence = LeaseFence { worker_id: ctx.config.worker_id.clone(), shard, epoch };
        // Error level: the span (its shard number) must reach the logs
        // whatever the filter, or a warning would not say which shard.
        let span = error_span!("shard", shard);
        let task = run(ctx, fence, consuming.clone(), drain.clone(), now.clone());
        let handle = tokio::spawn(task.instrument(span));
        Self { shard, epoch, consuming, drain, now, handle }
    }

    /// The shard.
    pub(crate) fn shard(&self) -> u16 {
        self.shard
    }

    /// The lease epoch the task consumes under.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Whether the task's consumer is registered with the broker right now.
    pub(crate) fn is_consuming(&self) -> bool {
        self.consuming.load(Ordering::Relaxed)
    }

    /// Whether the task ended by itself (an error, or the broker cancelled
    /// its consumer); the lease loop restarts it.
    pub(crate) fn is_finished(&self) -> bool {
        self.handle.is_finished()
    }

    /// Collects the outcome of a task that [`ShardTask::is_finished`].
    pub(crate) async fn outcome(self) -> Result<()> {
        self.handle.await?
    }

    /// Stops by draining (see the module docs) for at most `deadline`, then
    /// stops at once; waits for the task to end either way.
    pub(crate) async fn stop_draining(self, deadline: Duration) -> Result<()> {
        self.drain.cancel();
        let Self { shard, now, mut handle, .. } = self;
        match tokio::time::timeout(deadline, &mut handle).await {
            Ok(joined) => joined?,
            Err(_elapsed) => {
                warn!(shard, ?deadline, "shard did not drain in time; leaving the rest for redelivery");
                now.cancel();
                stop_within(shard, handle).await
            }
        }
    }

    /// Stops at once (see the module docs) and waits for the task to end.
    pub(crate) async fn stop_now(self) -> Result<()> {
        self.now.cancel();
        stop_within(self.shard, self.handle).await
    }
}

/// A task told to stop at once ends after its in-flight apply; if even that
/// hangs (a database that stopped answering), it is aborted, which closes
/// its channel (see `broker::ShardConsumer`'s drop) and so returns its
/// deliveries to the queue, ahead of the rest.
async fn stop_within(shard: u16, mut handle: JoinHandle<Result<()>>) -> Result<()> {
    const GRACE: Duration = Duration::from_secs(15);
    match tokio::time::timeout(GRACE, &mut handle).await {
        Ok(joined) => joined?,
        Err(_elapsed) => {
            warn!(shard, "shard task did not stop; aborting it");
            handle.abort();
            match handle.await {
                Err(error) if error.is_cancelled() => Ok(()),
                other => other?,
            }
        }
    }
}

async fn run(
    ctx: Arc<Context>,
    fence: LeaseFence,
    consuming: Arc<AtomicBool>,
    drain: CancellationToken,
    now: CancellationToken,
) -> Result<()> {
    let shard = fence.shard;
    let connection = ctx.amqp.connection().await?;
    let tag = format!("{}.shard.{shard:03}", ctx.config.worker_id);
    let mut consumer = ShardConsumer::start(&connection, &ctx.topology, shard, ctx.prefetch, &tag).await?;
    consuming.store(true, Ordering::Relaxed);
    info!(queue = consumer.queue(), epoch = fence.epoch, "shard started");
    let outcome = consume(&ctx, &mut consumer, &fence, &drain, &now).await;
    consuming.store(false, Ordering::Relaxed);
    if let Err(error) = consumer.close().await {
        // The broker returns unacked deliveries when the channel goes away,
        // however it goes.
        warn!(error = %error_chain(&error), "closing the shard's channel failed");
    }
    match &outcome {
        Ok(()) => info!("shard stopped"),
        Err(error) => {
            warn!(error = %error_chain(error), "shard stopped on an error; it restarts on the next lease tick")
        }
    }
    outcome
}

async fn consume(
    ctx: &Context,
    consumer: &mut ShardConsumer,
    fence: &LeaseFence,
    drain: &CancellationToken,
    now: &CancellationToken,
) -> Result<()> {
    let shard = consumer.shard();
    loop {
        let first = tokio::select! {
            biased;
            () = now.cancelled() => return Ok(()),
            () = drain.cancelled() => return settle_buffered(ctx, consumer, fence, now).await,
            next = consumer.next() => next,
        };
        let Some(first) = first else { return Err(Error::ConsumerEnded(shard)) };
        let mut deliveries = vec![first?];
        let mut broken = None;
        while deliveries.len() < ctx.config.max_batch {
            match consumer.try_next() {
                Some(Ok(delivery)) => deliveries.push(delivery),
                Some(Err(error)) => {
                    broken = Some(error);
                    break;
                }
                None => break,
            }
        }
        let settled = settle_batch(ctx, consumer, fence, deliveries, now).await?;
        if let Some(error) = broken {
            return Err(error.into());
        }
        if settled == Settled::Abandoned {
            return Ok(());
        }
    }
}

/// The last step of a drain: settle what has already arrived. This consumer
/// is still the active one, so doing so keeps the shard's order; what arrives
/// after this pass goes back to the queue with the channel.
async fn settle_buffered(
    ctx: &Context,
    consumer: &mut ShardConsumer,
    fence: &LeaseFence,
    now: &CancellationToken,
) -> Result<()> {
    let mut buffered = Vec::new();
    while let Some(delivery) = consumer.try_next() {
        match delivery {
            Ok(delivery) => buffered.push(delivery),
            // The channel broke: nothing more can be acked anyway.
            Err(_) => break,
        }
    }
    let count = buffered.len();
    while !buffered.is_empty() {
        let rest = buffered.split_off(buffered.len().min(ctx.config.max_batch));
        if settle_batch(ctx, consumer, fence, buffered, now).await? == Settled::Abandoned {
            break;
        }
        buffered = rest;
    }
    info!(settled = count, "shard drained");
    Ok(())
}
