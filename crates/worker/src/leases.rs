//! Which shards this worker consumes: leases in PostgreSQL, rebalanced on
//! every tick (docs/protocol.md §6, "adding or removing a worker rebalances shards, and a
//! dead worker's shards move to the others").
//!
//! Every `renew_every` the worker heartbeats, renews its leases and computes
//! its fair share, `ceil(shards / live workers)`:
//! - a shard whose renewal failed (the lease expired: the worker was cut off
//!   for longer than `lease_ttl`) is lost and its task stops at once;
//! - below the fair share it acquires free or expired leases;
//! - above it (a worker joined) it hands the extra shards back: their tasks
//!   drain first (settle what they received, return the rest to the queue by
//!   closing their channel) and only then is the lease released, so the next
//!   holder's consumer starts on a queue whose head is in order again.
//!
//! A task runs exactly for the shards held. The lease only spreads the work;
//! the fence against two workers interleaving one shard is the queue's single
//! active consumer: a new holder's consumer stays idle until the old one's
//! channel is gone. A worker killed outright stops renewing; its leases
//! expire after `lease_ttl` and the others take them, while the broker has
//! already returned its unacked deliveries when its connection dropped.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use metrics::gauge;
use tokio::sync::watch;
use tokio::task::{Id, JoinSet};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, warn};

use crate::error::{Result, chain};
use crate::metrics::SHARDS_HELD;
use crate::shard::ShardTask;
use crate::worker::Context;

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
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            Some(done) = leases.releasing.join_next_with_id() => leases.released(done),
            Some(_) = leases.stopping.join_next() => {}
            _ = tick.tick() => {
                if let Err(error) = leases.tick().await {
                    // The shards keep running; their leases last `lease_ttl`,
                    // and a renewal that keeps failing ends as "lease lost".
                    warn!(error = %chain(&error), "lease round failed; retrying on the next tick");
                }
            }
        }
    }
    leases.shutdown().await;
    Ok(())
}

struct Leases {
    ctx: Arc<Context>,
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

    async fn tick(&mut self) -> Result<()> {
        let (id, ttl, store) = (&self.ctx.config.worker_id, self.ctx.config.lease_ttl, &self.ctx.control);
        store.heartbeat(id, ttl).await?;
        let live = store.live_workers(ttl).await?.len().max(1);
        let fair = usize::from(self.ctx.topology.shards).div_ceil(live);
        let renewed: BTreeSet<u16> = store.renew_leases(id, ttl).await?.into_iter().collect();

        let lost: Vec<u16> = self.tasks.keys().filter(|shard| !renewed.contains(shard)).copied().collect();
        if !lost.is_empty() {
            warn!(shards = ?lost, "leases lost (expired, or taken by another worker); stopping those shards at once");
        }
        for shard in lost {
            if let Some(task) = self.tasks.remove(&shard) {
                self.stopping.spawn(
                    async move {
                        if let Err(error) = task.stop_now().await {
                            warn!(shard, error = %chain(&error), "shard stopped with an error");
                        }
                    }
                    .in_current_span(),
                );
            }
        }

        let releasing = self.releasing_shards();
        let mut held = renewed;
        let active: Vec<u16> = held.iter().filter(|shard| !releasing.contains(shard)).copied().collect();
        if active.len() < fair && releasing.is_empty() {
            let now_held: BTreeSet<u16> = store.acquire_leases(id, fair, ttl).await?.into_iter().collect();
            let acquired: Vec<u16> = now_held.difference(&held).copied().collect();
            if !acquired.is_empty() {
                info!(shards = ?acquired, fair_share = fair, live_workers = live, "leases acquired");
            }
            held = now_held;
        } else if active.len() > fair {
            // Hand back the highest-numbered ones; which ones does not matter.
            let extra: Vec<u16> = active.iter().rev().take(active.len() - fair).copied().collect();
            info!(shards = ?extra, fair_share = fair, live_workers = live, "over the fair share; handing shards back");
            for shard in extra {
                self.hand_back(shard);
            }
        }

        let releasing = self.releasing_shards();
        for &shard in held.iter().filter(|shard| !releasing.contains(shard)) {
            match self.tasks.remove(&shard) {
                Some(task) if !task.is_finished() => {
                    self.tasks.insert(shard, task);
                }
                Some(task) => {
                    if let Err(error) = task.outcome().await {
                        warn!(shard, error = %chain(&error), "restarting a shard that stopped on an error");
                    }
                    self.tasks.insert(shard, ShardTask::spawn(self.ctx.clone(), shard));
                }
                None => {
                    self.tasks.insert(shard, ShardTask::spawn(self.ctx.clone(), shard));
                }
            }
        }
        self.publish();
        Ok(())
    }

    /// Drains `shard`'s task, then releases its lease, in the background: the
    /// lease loop keeps renewing meanwhile, so the lease cannot expire under
    /// a long drain and be taken while this worker still consumes.
    fn hand_back(&mut self, shard: u16) {
        let task = self.tasks.remove(&shard);
        let ctx = self.ctx.clone();
        let handle = self.releasing.spawn(
            async move {
                if let Some(task) = task
                    && let Err(error) = task.stop_draining(ctx.config.drain_deadline).await
                {
                    warn!(shard, error = %chain(&error), "shard stopped with an error");
                }
                match ctx.control.release_lease(&ctx.config.worker_id, shard).await {
                    Ok(true) => info!(shard, "lease released"),
                    Ok(false) => info!(shard, "lease was already gone"),
                    Err(error) => {
                        warn!(shard, error = %chain(&error), "releasing the lease failed; it expires")
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
                    warn!(shard, error = %chain(&error), "shard stopped with an error");
                }
            }
        });
        futures::future::join_all(stops).await;
        while self.releasing.join_next().await.is_some() {}
        while self.stopping.join_next().await.is_some() {}
        let (id, store) = (&self.ctx.config.worker_id, &self.ctx.control);
        match store.release_all(id).await {
            Ok(shards) => info!(shards = ?shards, "leases released on shutdown"),
            Err(error) => warn!(error = %chain(&error), "releasing leases failed; they expire"),
        }
        if let Err(error) = store.deregister_worker(id).await {
            warn!(error = %chain(&error), "deregistering failed; the heartbeat goes stale");
        }
    }
}
