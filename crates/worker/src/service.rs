//! Starting and stopping a worker: [`Worker::start`] → [`WorkerHandle`], and
//! [`run`] for the binary.
//!
//! A worker is three kinds of task over one [`Context`]: the lease loop
//! (which starts and stops one shard task per held shard) and the timer
//! poller. Stopping cancels one token; the lease loop then drains its shards
//! within the deadline, releases its leases and deregisters.

use std::sync::Arc;

use anyhow::Context as _;
use broker::{Publisher, PublisherConfig, Topology};
use delivery::Handoff;
use settings::Settings;
use store::Store;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, error_span, info, warn};

use crate::bots::BotRules;
use crate::config::WorkerConfig;
use crate::connection::Amqp;
use crate::error::Result;
use crate::leases::run_leases;
use crate::live::LivePublisher;
use crate::timers::run_timers;

/// What every task of one worker shares.
#[derive(Debug)]
pub(crate) struct Context {
    pub(crate) config: WorkerConfig,
    /// For the shard tasks' batches.
    pub(crate) store: Store,
    /// For the lease loop and the timer poller: a pool of their own, so busy
    /// shards can never delay a lease renewal past its expiry.
    pub(crate) control: Store,
    pub(crate) rules: BotRules,
    pub(crate) topology: Topology,
    pub(crate) prefetch: u16,
    pub(crate) amqp: Amqp,
    /// Announces committed batches to live subscribers.
    pub(crate) live: LivePublisher,
    /// Shared with the webhook dispatcher of this process: deliveries
    /// claimed at insert are handed to it, and it is woken for new heads
    /// left to its claim rounds instead of at its next poll.
    pub(crate) handoff: Option<Handoff>,
    /// Notified after a batch queued new heads left to claim rounds, so that
    /// dispatchers in other processes hear of them (`NOTIFY`, sent by
    /// [`announce_outbox`]).
    pub(crate) announce: Arc<Notify>,
}

/// Starts workers; see [`Worker::start`].
#[derive(Debug)]
pub struct Worker;

impl Worker {
    /// Starts a worker with `settings` (broker, database, bots) and `config`
    /// (its own knobs), in the background, and returns its handle. `handoff`
    /// is shared with the webhook dispatcher of the same process: the worker
    /// claims at insert the deliveries it has room for and hands them over
    /// after the commit, and wakes it for the new heads it left to claim
    /// rounds (so they start at once instead of at its next poll).
    ///
    /// The database must be migrated. Neither the database nor the broker
    /// needs to be up: the worker waits for PostgreSQL (logging each failed
    /// attempt) before it takes any shard, and shards connect, and reconnect,
    /// to the broker on their own.
    ///
    /// # Errors
    ///
    /// [`crate::Error::Config`] for invalid knobs, [`crate::Error::Store`] if
    /// the database URL is invalid. A database that answers but is not
    /// migrated ends the worker (see [`WorkerHandle::wait`]).
    pub async fn start(
        settings: &Settings,
        config: WorkerConfig,
        handoff: Option<Handoff>,
    ) -> Result<WorkerHandle> {
        config.validate()?;
        let broker = &settings.broker;
        let database = &settings.database;
        let store = Store::connect_for_batches(&database.url, &database.schema, database.pool_size)?;
        let control = Store::connect(&database.url, &database.schema, 2)?;
        let topology = Topology::new(broker.prefix.clone(), broker.shards, broker.delivery_limit)
            .with_quorum_size(broker.quorum_size);
        let amqp = Amqp::new(&broker.url, topology.clone(), &config.worker_id);
        // A connection of its own, so announcing never contends with consuming.
        let live_amqp = Amqp::new(&broker.url, topology.clone(), &format!("{}-live", config.worker_id));
        let ctx = Arc::new(Context {
            rules: BotRules::from_settings(settings),
            prefetch: broker.prefetch,
            config,
            store,
            control,
            topology: topology.clone(),
            amqp,
            live: LivePublisher::start(live_amqp, &broker.prefix),
            handoff,
            announce: Arc::new(Notify::new()),
        });
        let mut publisher_config = PublisherConfig::new(broker.url.clone(), topology);
        // Timers are few and need no wide fan-out of confirm channels.
        publisher_config.channels = broker.publish_channels.clamp(1, 2);
        publisher_config.confirm_timeout = std::time::Duration::from_millis(broker.confirm_timeout_ms);
        let publisher = Arc::new(Publisher::connect(publisher_config));

        let shutdown = CancellationToken::new();
        let (held_tx, held) = watch::channel(Vec::new());
        let id = ctx.config.worker_id.clone();
        // Error level, so every line of this worker names it under any filter.
        let span = error_span!("worker", worker_id = %id);
        info!(parent: &span, shards = ctx.topology.shards, "worker starting");
        let task = tokio::spawn(supervise(ctx, publisher, shutdown.clone(), held_tx).instrument(span));
        Ok(WorkerHandle { id, shutdown, held, task: Some(task) })
    }
}

async fn supervise(
    ctx: Arc<Context>,
    publisher: Arc<Publisher>,
    shutdown: CancellationToken,
    held: watch::Sender<Vec<u16>>,
) -> Result<()> {
    if !wait_for_database(&ctx, &shutdown).await? {
        publisher.shutdown().await;
        ctx.amqp.close().await;
        info!("worker stopped before the database answered");
        return Ok(());
    }
    let timers_stop = shutdown.child_token();
    let timers =
        tokio::spawn(run_timers(ctx.clone(), publisher.clone(), timers_stop.clone()).in_current_span());
    let announcer = tokio::spawn(announce_outbox(ctx.clone(), shutdown.clone()).in_current_span());
    let leases = run_leases(ctx.clone(), shutdown.clone(), held).await;
    timers_stop.cancel();
    let timers = timers.await;
    announcer.abort();
    publisher.shutdown().await;
    ctx.amqp.close().await;
    info!("worker stopped");
    timers?;
    leases
}

/// Creates the shard lease rows, waiting for PostgreSQL as long as it is
/// unreachable (retrying with backoff, up to 5 s apart, and saying so in the
/// logs). Returns `false` if `shutdown` came first.
///
/// # Errors
///
/// A database that answers but refuses (e.g. not migrated).
async fn wait_for_database(ctx: &Context, shutdown: &CancellationToken) -> Result<bool> {
    let mut delay = std::time::Duration::from_millis(200);
    let mut attempt: u32 = 0;
    loop {
        match ctx.control.ensure_shards(ctx.topology.shards).await {
            Ok(()) => {
                if attempt > 0 {
                    info!(attempts = attempt + 1, "PostgreSQL answers; starting");
                }
                return Ok(true);
            }
            Err(error) if error.is_transient() => {
                attempt += 1;
                warn!(
                    attempt,
                    retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                    error = %domain::report::error_chain(&error),
                    "PostgreSQL is unreachable; waiting for it before taking any shard"
                );
            }
            Err(error) => return Err(error.into()),
        }
        tokio::select! {
            () = shutdown.cancelled() => return Ok(false),
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(std::time::Duration::from_secs(5));
    }
}

/// A running worker. Dropping it does not stop the worker; call
/// [`WorkerHandle::stop`].
#[derive(Debug)]
pub struct WorkerHandle {
    id: String,
    shutdown: CancellationToken,
    held: watch::Receiver<Vec<u16>>,
    task: Option<JoinHandle<Result<()>>>,
}

impl WorkerHandle {
    /// The worker's id (as in the `workers` and `shard_leases` tables).
    #[must_use]
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The shards the worker consumes right now (held, not being handed
    /// back), sorted.
    #[must_use]
    pub fn shards(&self) -> Vec<u16> {
        self.held.borrow().clone()
    }

    /// A receiver that sees every change of [`WorkerHandle::shards`].
    #[must_use]
    pub fn watch_shards(&self) -> watch::Receiver<Vec<u16>> {
        self.held.clone()
    }

    /// Graceful stop: stop consuming, finish in-flight work within the drain
    /// deadline (the rest stays unacked and is redelivered), release the
    /// leases, deregister. Returns once everything is closed.
    ///
    /// # Errors
    ///
    /// The error a worker task ended with, if any.
    pub async fn stop(mut self) -> Result<()> {
        self.shutdown.cancel();
        self.wait().await
    }

    /// Waits until the worker ends (after [`WorkerHandle::stop`], or on its
    /// own on a fatal error). Cancel-safe; returns at once if already awaited.
    ///
    /// # Errors
    ///
    /// The error a worker task ended with, if any.
    pub async fn wait(&mut self) -> Result<()> {
        match self.task.as_mut() {
            Some(task) => {
                let outcome = task.await;
                self.task = None;
                outcome?
            }
            None => Ok(()),
        }
    }
}

/// Runs a worker until `shutdown` is cancelled, with `settings` and the
/// worker knobs of its `[worker]` section ([`WorkerConfig::from_settings`]),
/// sharing `handoff` as [`Worker::start`] does.
///
/// # Errors
///
/// Invalid knobs, a database that cannot be reached at start-up, or a worker
/// task that failed.
pub async fn run(
    settings: Settings,
    shutdown: CancellationToken,
    handoff: Option<Handoff>,
) -> anyhow::Result<()> {
    let config = WorkerConfig::from_settings(&settings.worker);
    let handle = Worker::start(&settings, config, handoff).await.context("starting the worker")?;
    until_shutdown(handle, shutdown).await
}

async fn until_shutdown(mut handle: WorkerHandle, shutdown: CancellationToken) -> anyhow::Result<()> {
    tokio::select! {
        () = shutdown.cancelled() => {
            info!("shutdown requested; draining shards");
            handle.stop().await.context("stopping the worker")
        }
        ended = handle.wait() => ended.context("the worker stopped on its own"),
    }
}

/// Sends the outbox's `NOTIFY` whenever batches queued deliveries: one at a
/// time, so a burst of batches costs one notice per round trip, not one each.
async fn announce_outbox(ctx: Arc<Context>, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = ctx.announce.notified() => {}
        }
        if let Err(error) = ctx.store.announce_outbox().await {
            tracing::warn!(error = %error, "announcing queued webhook deliveries (dispatchers will poll)");
        }
    }
}
