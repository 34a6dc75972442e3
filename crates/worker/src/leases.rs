//! Which shards this worker consumes: leases in PostgreSQL, rebalanced on
//! every tick (docs/protocol.md §6, "adding or removing a worker rebalances shards, and a
//! dead worker's shards move to the others").
//!
//! Every `renew_every` the worker heartbeats, renews its leases and computes
//! its fair share, `ceil(shards / live workers)`:
//! - a shard whose renewal failed (the lease expired: the worker was cut off
//!   for longer than `lease_ttl`), or that came back under another epoch, is
//!   lost and its task stops at once;
//! - a worker that cannot renew at all (PostgreSQL unreachable) does not wait
//!   for a renewal to tell it so: from its last successful renewal it counts
//!   down the lease, and stops every shard (closing their channels, which
//!   frees the single-active-consumer slot) a quarter of `lease_ttl` before
//!   the leases can expire;
//! - a shard whose task has not been consuming for `lease_ttl` is no longer
//!   renewed: its task stops and its lease is released. If no shard of the
//!   worker consumes (the broker is out of its reach), the worker also
//!   leaves the sharing (deregisters, stops heartbeating) until a connection
//!   to the broker succeeds again, so the others' fair share grows to cover
//!   its shards;
//! - below the fair share it acquires free or expired leases;
//! - above it (a worker joined) it hands the extra shards back: their tasks
//!   drain first (settle what they received, return the rest to the queue by
//!   closing their channel) and only then is the lease released, so the next
//!   holder's consumer starts on a queue whose head is in order again.
//!
//! A task runs exactly for the shards held. The lease spreads the work and
//! fences the writes: every batch checks, inside its transaction, that the
//! worker still holds the shard under the epoch its task started with
//! (`store::check_lease`). The queue's single active consumer is the other
//! fence: a new holder's consumer stays idle until the old one's channel is
//! gone. A worker killed outright stops renewing; its leases
//! expire after `lease_ttl` and the others take them, while the broker has
//! already returned its unacked deliveries when its connection dropped.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;

use metrics::gauge;
use tokio::sync::watch;
use tokio::task::{Id, JoinSet};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, warn};

use domain::report::error_chain;

use crate::error::Result;
use crate::metrics::SHARDS_HELD;
use crate::service::Context;
use crate::shard::ShardTask;

/// Runs the lease loop until `shutdown`, then drains every shard, releases
/// all leases and deregisters the worker. `held` always shows the shards
/// consumed (held and not being handed back).
pub(crate) async fn run_leases(
    ctx: Arc<Context>,
    shutdown: CancellationToken,
    held: watch::Sender<Vec<u16>>,
) -> Result<()> {
    let mut leases = Leases::new(ctx.clone(), held);
    let mut tick = tokio::time::interval(ctx.config.renew_every);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        let deadline = leases.stop_deadline();
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            Some(done) = leases.releasing.join_next_with_id() => leases.released(done),
            Some(_) = leases.stopping.join_next() => {}
            () = sleep_until(deadline), if deadline.is_some() => leases.expiring(),
            _ = tick.tick() => {
                // A round that hangs (a database that stopped answering) must
                // not keep the countdown above from firing.
                let budget = deadline.map_or(ctx.config.lease_ttl, |at| at.saturating_duration_since(Instant::now()));
                match tokio::time::timeout(budget, leases.tick()).await {
                    Ok(Ok(())) => {}
                    // The shards keep running until the countdown ends.
                    Ok(Err(error)) => {
                        warn!(error = %error_chain(&error), "lease round failed; retrying on the next tick")
                    }
                    Err(_elapsed) => warn!(?budget, "lease round did not finish; retrying on the next tick"),
                }
            }
        }
    }
    leases.shutdown().await;
    Ok(())
}

/// Sleeps until `at`, or forever if `None` (that select arm is then off).
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

struct Leases {
    ctx: Arc<Context>,
    /// When the last successful renewal was sent: every lease of this worker
    /// lasts at least `lease_ttl` from then.
    renewed_at: Option<Instant>,
    /// Since when each task has not been consuming.
    idle_since: HashMap<u16, Instant>,
    /// No acquiring before this (after giving up shards it could not consume).
    acquire_after: Option<Instant>,
    /// Out of the sharing (not live, holding nothing) until the broker answers.
    out: bool,
    /// One running task per held shard (not being handed back).
    tasks: BTreeMap<u16, ShardTask>,
    /// Hand-backs in progress: drain, then release the lease.
    releasing: JoinSet<u16>,
    releasing_ids: HashMap<Id, u16>,
    /// Tasks stopping at once after their lease was lost.
    stopping: JoinSet<()>,
    held: watch::Sender<Vec<u16>>,
}

impl Leases {
    fn new(ctx: Arc<Context>, held: watch::Sender<Vec<u16>>) -> Self {
        Self {
            ctx,
            renewed_at: None,
            idle_since: HashMap::new(),
            acquire_after: None,
            out: false,
            tasks: BTreeMap::new(),
            releasing: JoinSet::new(),
            releasing_ids: HashMap::new(),
            stopping: JoinSet::new(),
            held,
        }
    }

    fn releasing_shards(&self) -> BTreeSet<u16> {
        self.releasing_ids.values().copied().collect()
    }

    /// When the shards must stop if no renewal succeeds before: a quarter of
    /// the TTL before the earliest possible expiry. `None` without shards.
    fn stop_deadline(&self) -> Option<Instant> {
        let ttl = self.ctx.config.lease_ttl;
        let renewed_at = self.renewed_at?;
        (!self.tasks.is_empty()).then(|| renewed_at + ttl - ttl / 4)
    }

    /// The countdown ended without a renewal: stop every shard now, before
    /// the leases expire and another worker's consumer may become active.
    fn expiring(&mut self) {
        let since = self.renewed_at.map(|at| at.elapsed());
        let shards: Vec<u16> = self.tasks.keys().copied().collect();
        warn!(?shards, ?since, "leases not renewed; stopping every shard before they can expire");
        for (shard, task) in std::mem::take(&mut self.tasks) {
            self.stop_now(shard, task);
        }
        self.idle_since.clear();
        self.publish();
    }

    fn stop_now(&mut self, shard: u16, task: ShardTask) {
        self.stopping.spawn(
            async move {
                if let Err(error) = task.stop_now().await {
                    warn!(shard, error = %error_chain(&error), "shard stopped with an error");
                }
            }
            .in_current_span(),
        );
    }

    async fn tick(&mut self) -> Result<()> {
        let (id, ttl) = (self.ctx.config.worker_id.clone(), self.ctx.config.lease_ttl);
        let store = self.ctx.control.clone();
        let started = Instant::now();
        if self.out {
            let probe = tokio::time::timeout(ttl / 2, self.ctx.amqp.connection()).await;
            if !matches!(probe, Ok(Ok(_))) {
                return Ok(());
            }
            info!("the broker answers again; taking part in the shard sharing");
            self.out = false;
        }
        store.heartbeat(&id, ttl).await?;
        let live = store.live_workers(ttl).await?.len().max(1);
        let fair = usize::from(self.ctx.topology.shards).div_ceil(live);

        // Tasks that could not consume for a whole TTL (the broker is out of
        // this worker's reach) are given up rather than renewed.
        for (&shard, task) in &self.tasks {
            if task.is_consuming() {
                self.idle_since.remove(&shard);
            } else {
                self.idle_since.entry(shard).or_insert(started);
            }
        }
        let tasks = &self.tasks;
        self.idle_since.retain(|shard, _| tasks.contains_key(shard));
        let stuck: BTreeSet<u16> = self
            .idle_since
            .iter()
            .filter(|(_, since)| started.duration_since(**since) >= ttl)
            .map(|(&shard, _)| shard)
            .collect();
        let releasing = self.releasing_shards();
        let renew: Vec<u16> =
            self.tasks.keys().filter(|shard| !stuck.contains(shard)).chain(&releasing).copied().collect();
        let renewed: BTreeMap<u16, u64> = store.renew_shards(&id, ttl, &renew).await?.into_iter().collect();
        self.renewed_at = Some(started);

        if !stuck.is_empty() {
            warn!(shards = ?stuck, "shards not consumed for a whole lease; giving them up");
            self.acquire_after = Some(Instant::now() + 2 * self.ctx.config.renew_every);
            for &shard in &stuck {
                self.idle_since.remove(&shard);
                self.hand_back(shard, false);
            }
            if self.tasks.values().all(|task| !task.is_consuming()) {
                warn!("no shard consumes (is the broker reachable?); leaving the sharing until it answers");
                for (shard, task) in std::mem::take(&mut self.tasks) {
                    self.hand_back_task(shard, task);
                }
                self.idle_since.clear();
                self.out = true;
                store.deregister_worker(&id).await?;
                self.publish();
                return Ok(());
            }
        }
        let lost: Vec<u16> = self
            .tasks
            .iter()
            .filter(|(shard, task)| renewed.get(shard) != Some(&task.epoch()))
            .map(|(&shard, _)| shard)
            .collect();
        if !lost.is_empty() {
            warn!(shards = ?lost, "leases lost (expired, or taken by another worker); stopping those shards at once");
        }
        for shard in lost {
            if let Some(task) = self.tasks.remove(&shard) {
                self.stop_now(shard, task);
            }
        }

        let releasing = self.releasing_shards();
        let mut held = renewed;
        let active = held.keys().filter(|shard| !releasing.contains(shard)).count();
        let paused = self.acquire_after.is_some_and(|after| Instant::now() < after);
        if active < fair && releasing.is_empty() && !paused {
            let now_held: BTreeMap<u16, u64> =
                store.acquire_leases_with_epochs(&id, fair, ttl).await?.into_iter().collect();
            let acquired: Vec<u16> =
                now_held.keys().filter(|shard| !held.contains_key(shard)).copied().collect();
            if !acquired.is_empty() {
                info!(shards = ?acquired, fair_share = fair, live_workers = live, "leases acquired");
            }
            held = now_held;
        } else if active > fair {
            // Hand back the highest-numbered ones; which ones does not matter.
            let extra: Vec<u16> = held
                .keys()
                .filter(|shard| !releasing.contains(shard))
                .rev()
                .take(active - fair)
                .copied()
                .collect();
            info!(shards = ?extra, fair_share = fair, live_workers = live, "over the fair share; handing shards back");
            for shard in extra {
                self.hand_back(shard, true);
            }
        }

        let releasing = self.releasing_shards();
        for (&shard, &epoch) in held.iter().filter(|(shard, _)| !releasing.contains(shard)) {
            match self.tasks.remove(&shard) {
                Some(task) if !task.is_finished() && task.epoch() == epoch => {
                    self.tasks.insert(shard, task);
                }
                Some(task) if !task.is_finished() => {
                    self.stop_now(shard, task);
                    self.tasks.insert(shard, ShardTask::spawn(self.ctx.clone(), shard, epoch));
                }
                Some(task) => {
                    if let Err(error) = task.outcome().await {
                        warn!(shard, error = %error_chain(&error), "restarting a shard that stopped on an error");
                    }
                    self.tasks.insert(shard, ShardTask::spawn(self.ctx.clone(), shard, epoch));
                }
                None => {
                    self.tasks.insert(shard, ShardTask::spawn(self.ctx.clone(), shard, epoch));
                }
            }
        }
        self.publish();
        Ok(())
    }

    /// Drains `shard`'s task (or stops it at once, if `drain` is false), then
    /// releases its lease, in the background: the lease loop keeps renewing
    /// meanwhile, so the lease cannot expire under a long drain and be taken
    /// while this worker still consumes.
    fn hand_back(&mut self, shard: u16, drain: bool) {
        let task = self.tasks.remove(&shard);
        self.release_after(shard, task, drain);
    }

    /// [`Leases::hand_back`] of a task already taken out of `tasks`, at once.
    fn hand_back_task(&mut self, shard: u16, task: ShardTask) {
        self.release_after(shard, Some(task), false);
    }

    fn release_after(&mut self, shard: u16, task: Option<ShardTask>, drain: bool) {
        let ctx = self.ctx.clone();
        let handle = self.releasing.spawn(
            async move {
                let stopped = match task {
                    Some(task) if drain => task.stop_draining(ctx.config.drain_deadline).await,
                    Some(task) => task.stop_now().await,
                    None => Ok(()),
                };
                if let Err(error) = stopped {
                    warn!(shard, error = %error_chain(&error), "shard stopped with an error");
                }
                match ctx.control.release_lease(&ctx.config.worker_id, shard).await {
                    Ok(true) => info!(shard, "lease released"),
                    Ok(false) => info!(shard, "lease was already gone"),
                    Err(error) => {
                        warn!(shard, error = %error_chain(&error), "releasing the lease failed; it expires")
                    }
                }
                shard
            }
            .in_current_span(),
        );
        self.releasing_ids.insert(handle.id(), shard);
    }

    fn released(&mut self, done: Result<(Id, u16), tokio::task::JoinError>) {
        let id = match &done {
            Ok((id, _)) => *id,
            Err(error) => error.id(),
        };
        self.releasing_ids.remove(&id);
        if let Err(error) = done {
            warn!(error = %error, "handing a shard back failed; its lease expires");
        }
        self.publish();
    }

    fn publish(&self) {
        let shards: Vec<u16> = self.tasks.keys().copied().collect();
        gauge!(SHARDS_HELD).set(f64::from(u32::try_from(shards.len()).unwrap_or(u32::MAX)));
        self.held.send_if_modified(|current| {
            let changed = *current != shards;
            if changed {
                current.clone_from(&shards);
            }
            changed
        });
    }

    /// Graceful end: drain every shard within the deadline (the rest stays
    /// unacked for redelivery), then release all leases and deregister, so
    /// the others rebalance at once instead of waiting for expiry.
    async fn shutdown(mut self) {
        let deadline = self.ctx.config.drain_deadline;
        let tasks = std::mem::take(&mut self.tasks);
        self.publish();
        let stops = tasks.into_values().map(|task| {
            let shard = task.shard();
            async move {
                if let Err(error) = task.stop_draining(deadline).await {
                    warn!(shard, error = %error_chain(&error), "shard stopped with an error");
                }
            }
        });
        futures::future::join_all(stops).await;
        while self.releasing.join_next().await.is_some() {}
        while self.stopping.join_next().await.is_some() {}
        let (id, store) = (&self.ctx.config.worker_id, &self.ctx.control);
        match store.release_all(id).await {
            Ok(shards) => info!(shards = ?shards, "leases released on shutdown"),
            Err(error) => warn!(error = %error_chain(&error), "releasing leases failed; they expire"),
        }
        if let Err(error) = store.deregister_worker(id).await {
            warn!(error = %error_chain(&error), "deregistering failed; the heartbeat goes stale");
        }
    }
}
