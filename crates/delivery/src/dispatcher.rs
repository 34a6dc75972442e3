//! The dispatcher loop: it claims the due deliveries each endpoint has room
//! for and hands each to its own task ([`crate::attempt`]). Deliveries a
//! worker of this process claimed at insert skip the rounds: they are sent
//! as soon as they are handed over ([`crate::handoff`]). A round starts at
//! once when something may have become due: a worker of this process
//! committed deliveries, one in another process did (`LISTEN`), an attempt
//! finished (a slot is free) or a batch of settlements committed (heads moved
//! on); otherwise every poll interval, for retries that came due. Claims are
//! per endpoint, over all the bots posting there, bounded by its free
//! capacity (none while its circuit is open), so a slow or failing endpoint
//! only ever fills its own slots and never delays another's deliveries
//! (docs/protocol.md §4). Settlements are group-committed ([`crate::settler`]).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use broker::{Publisher, PublisherConfig, Topology};
use chrono::Utc;
use settings::Settings;
use store::{ClaimedDelivery, Store};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use domain::report::error_chain;

use crate::attempt;
use crate::client::WebhookClient;
use crate::error::Result;
use crate::handoff::Handoff;
use crate::settler::Settler;
use crate::ssrf::AddressPolicy;
use crate::targets::{ClaimGuard, Endpoint, RetryTuning, Target, build_targets};
use store::{ClaimGroup, Settle, SettleJob, UnsendableHead};

/// Deliveries of a bot without a webhook URL claimed per round (they are
/// dead-lettered at once).
const NO_ENDPOINT_BATCH: u32 = 32;
/// The shortest pause between two claim rounds.
const MIN_ROUND_GAP: Duration = Duration::from_millis(4);
/// The longest pause between rounds after database errors.
const MAX_ERROR_BACKOFF: Duration = Duration::from_secs(5);

/// How the dispatcher runs; [`DispatcherConfig::default`] is production's.
#[derive(Debug, Clone)]
pub struct DispatcherConfig {
    /// Pause between claim rounds when nothing wakes it. Default 100 ms.
    pub poll_interval: Duration,
    /// How long a claim holds; `None`: twice the HTTP timeout plus 30 s.
    pub lease: Option<Duration>,
    /// Overrides of every bot's backoff (tests).
    pub retry: RetryTuning,
    /// Host names answered without DNS, still subject to the address guard (tests).
    pub hosts: HashMap<String, Vec<IpAddr>>,
    /// How long in-flight attempts get to finish at shutdown. Default: the
    /// HTTP timeout plus 5 s.
    pub shutdown_grace: Option<Duration>,
    /// This dispatcher's name in `claimed_by`; `None`: generated.
    pub claimer: Option<String>,
    /// Shared with a worker of the same process: it wakes the dispatcher
    /// after committing deliveries and hands over those it claimed at
    /// insert ([`Handoff`]); `None`: a fresh one, see [`Dispatcher::waker`].
    pub handoff: Option<Handoff>,
    /// `LISTEN` for deliveries committed by other processes and claim at
    /// once. Default `true`; tests of the other wake-ups turn it off.
    pub listen: bool,
}

impl Default for DispatcherConfig {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_millis(100),
            lease: None,
            retry: RetryTuning::default(),
            hosts: HashMap::new(),
            shutdown_grace: None,
            claimer: None,
            handoff: None,
            listen: true,
        }
    }
}

/// What every delivery task shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) store: Store,
    pub(crate) client: WebhookClient,
    pub(crate) publisher: Option<Arc<Publisher>>,
    pub(crate) claimer: String,
    pub(crate) wake: Arc<Notify>,
    pub(crate) shutdown: CancellationToken,
    pub(crate) settler: Settler,
}

/// The bots sharing one endpoint (or all bots without one): claimed for
/// together.
#[derive(Debug)]
struct Group {
    endpoint: Option<Arc<Endpoint>>,
    bots: Vec<String>,
}

/// One group per endpoint, and one for every bot without a webhook URL.
fn build_groups(targets: &HashMap<String, Arc<Target>>) -> Vec<Group> {
    let mut groups: Vec<Group> = Vec::new();
    let mut unreachable = Vec::new();
    let mut bots: Vec<&Arc<Target>> = targets.values().collect();
    bots.sort_by(|a, b| a.bot_id.cmp(&b.bot_id));
    for target in bots {
        match &target.endpoint {
            None => unreachable.push(target.bot_id.clone()),
            Some((_, endpoint)) => {
                match groups
                    .iter_mut()
                    .find(|g| g.endpoint.as_ref().is_some_and(|e| Arc::ptr_eq(e, endpoint)))
                {
                    Some(group) => group.bots.push(target.bot_id.clone()),
                    None => groups
                        .push(Group { endpoint: Some(endpoint.clone()), bots: vec![target.bot_id.clone()] }),
                }
            }
        }
    }
    if !unreachable.is_empty() {
        groups.push(Group { endpoint: None, bots: unreachable });
    }
    groups
}

/// Wakes the dispatcher for an immediate claim round (e.g. right after new
/// deliveries were committed in the same process).
#[derive(Debug, Clone)]
pub struct Waker(Arc<Notify>);

impl Waker {
    /// Starts a claim round now instead of at the next poll.
    pub fn wake(&self) {
        self.0.notify_one();
    }
}

/// The webhook dispatcher of one process. Several may run against one
/// schema; claims keep them from sending a delivery twice.
#[derive(Debug)]
pub struct Dispatcher {
    shared: Arc<Shared>,
    targets: HashMap<String, Arc<Target>>,
    groups: Vec<Group>,
    handoff: Handoff,
    settler: tokio::task::JoinHandle<()>,
    poll_interval: Duration,
    lease: Duration,
    grace: Duration,
    listen: bool,
}

impl Dispatcher {
    /// A dispatcher for `settings.bots`, working on `store`, publishing
    /// `escalateUndeliverable` through `publisher` (without one, a dead
    /// `widgetEscalate` waits, retrying, until there is one).
    pub fn new(
        settings: &Settings,
        store: Store,
        publisher: Option<Arc<Publisher>>,
        config: DispatcherConfig,
    ) -> Result<Self> {
        let webhooks = &settings.webhooks;
        let timeout = Duration::from_secs(webhooks.timeout_secs.max(1));
        let policy =
            AddressPolicy { allow_loopback: webhooks.allow_loopback, allow_private: webhooks.allow_private };
        let client = WebhookClient::new(timeout, policy, config.hosts.clone())?;
        let claimer = config
            .claimer
            .clone()
            .unwrap_or_else(|| format!("dispatcher-{}-{:08x}", std::process::id(), rand::random::<u32>()));
        let handoff = config.handoff.clone().unwrap_or_default();
        let wake = handoff.wakes();
        let (settler, settler_task) = Settler::spawn(store.clone(), claimer.clone(), wake.clone());
        let shared = Arc::new(Shared {
            store,
            client,
            publisher,
            claimer,
            wake,
            shutdown: CancellationToken::new(),
            settler,
        });
        let targets = build_targets(settings, &config.retry);
        let lease = config.lease.unwrap_or(timeout * 2 + Duration::from_secs(30));
        if !handoff.attach(&shared.claimer, lease, &targets, &shared.store) {
            warn!("this hand-off is served by another dispatcher already; this one only claims");
        }
        Ok(Self {
            shared,
            groups: build_groups(&targets),
            targets,
            handoff,
            settler: settler_task,
            poll_interval: config.poll_interval,
            lease,
            grace: config.shutdown_grace.unwrap_or(timeout + Duration::from_secs(5)),
            listen: config.listen,
        })
    }

    /// A handle that starts a claim round at once.
    pub fn waker(&self) -> Waker {
        Waker(self.shared.wake.clone())
    }

    /// Runs until `shutdown`: then stops claiming, hands back claims not yet
    /// sent, and gives in-flight attempts the grace period to finish (their
    /// leases expire otherwise, and they are sent again: at-least-once).
    pub async fn run(self, shutdown: CancellationToken) -> Result<()> {
        let tasks = TaskTracker::new();
        let mut backoff = self.poll_interval;
        let mut unconfigured = Unconfigured::default();
        let listener = self.listen.then(|| tokio::spawn(listen(self.shared.clone(), shutdown.clone())));
        let vacuum = tokio::spawn(vacuum_heads(self.shared.store.clone(), shutdown.clone()));
        let handed = tokio::spawn(serve_handoff(
            self.shared.clone(),
            self.handoff.clone(),
            self.targets.clone(),
            tasks.clone(),
            shutdown.clone(),
        ));
        info!(claimer = %self.shared.claimer, bots = self.targets.len(), "webhook dispatcher started");
        loop {
            match self.claim_round(&tasks).await {
                Ok(_) => backoff = self.poll_interval,
                Err(error) => {
                    warn!(error = %error_chain(&error), "claiming webhook deliveries failed");
                    backoff = (backoff * 2).min(MAX_ERROR_BACKOFF);
                }
            }
            unconfigured.report_if_due(&self.shared.store, &self.targets).await;
            self.refresh_gauges();
            // Whatever freed a slot or made a head due notifies; a round
            // that filled every slot waits for that too.
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = self.shared.wake.notified() => {}
                () = tokio::time::sleep(backoff) => {}
            }
            // Wake-ups come by the hundred a second under load (every commit
            // of every worker, every finished request); rounds at most every
            // few milliseconds each claim more and cost the database far less.
            tokio::time::sleep(MIN_ROUND_GAP).await;
        }
        info!("webhook dispatcher stopping");
        // Nothing more is handed over; what was and is not sent goes back.
        self.handoff.close();
        let _ = handed.await;
        self.shared.shutdown.cancel();
        tasks.close();
        if tokio::time::timeout(self.grace, tasks.wait()).await.is_err() {
            warn!(
                in_flight = tasks.len(),
                "webhook attempts still running at shutdown; their leases will expire"
            );
        }
        if let Some(listener) = listener {
            listener.abort();
        }
        vacuum.abort();
        // The settler ends once the last handle (in `shared`) is gone and
        // what was queued is written.
        let Dispatcher { shared, settler, .. } = self;
        drop(shared);
        if tokio::time::timeout(Duration::from_secs(10), settler).await.is_err() {
            warn!("settling the last webhook deliveries took too long; their leases will expire");
        }
        Ok(())
    }

    /// Runs in a task of its own; stop it by cancelling `shutdown`.
    pub fn spawn(self, shutdown: CancellationToken) -> tokio::task::JoinHandle<Result<()>> {
        tokio::spawn(self.run(shutdown))
    }

    /// One claim round; returns how many deliveries were claimed.
    async fn claim_round(&self, tasks: &TaskTracker) -> Result<usize> {
        let now = Utc::now();
        let bots: Vec<Vec<&str>> =
            self.groups.iter().map(|group| group.bots.iter().map(String::as_str).collect()).collect();
        let groups: Vec<ClaimGroup<'_>> = self
            .groups
            .iter()
            .zip(&bots)
            .map(|(group, bots)| {
                let cap = match &group.endpoint {
                    Some(endpoint) => endpoint.claimable(now),
                    None => NO_ENDPOINT_BATCH,
                };
                ClaimGroup { bots, cap }
            })
            .collect();
        if groups.iter().all(|group| group.cap == 0) {
            return Ok(0);
        }
        let started = std::time::Instant::now();
        let claimed = self.shared.store.claim_deliveries(&self.shared.claimer, &groups, self.lease).await?;
        let count = claimed.len();
        tracing::debug!(count, ms = started.elapsed().as_secs_f64() * 1e3, "claim round");
        for delivery in claimed.deliveries {
            spawn_attempt(&self.shared, &self.targets, tasks, delivery, None);
        }
        for head in claimed.unsendable {
            tasks.spawn(settle_unsendable(self.shared.clone(), head));
        }
        metrics::counter!(crate::metrics::CLAIMED_TOTAL).increment(count as u64);
        Ok(count)
    }

    /// Half-open comes with time, not with an event: keep the gauge current.
    fn refresh_gauges(&self) {
        let now = Utc::now();
        for target in self.targets.values() {
            if let Some((_, endpoint)) = &target.endpoint {
                endpoint.publish_state(endpoint.state(now));
            }
        }
    }
}

/// Pending deliveries of an unconfigured bot are counted up to this many.
const UNCONFIGURED_COUNT_CAP: i64 = 100_000;

/// How often pending deliveries of bots missing from the configuration are
/// counted and reported.
const UNCONFIGURED_REPORT_EVERY: Duration = Duration::from_secs(60);

/// The report of pending deliveries no dispatcher here will claim: their bot
/// was removed from the configuration (or is configured only elsewhere, as
/// during a rolling change). They stay pending, in order, until the bot is
/// configured again; a warning and a gauge per bot make them visible.
#[derive(Default)]
struct Unconfigured {
    last: Option<std::time::Instant>,
    /// Bots reported last time, so a gauge drops to 0 when they are gone.
    reported: Vec<String>,
}

impl Unconfigured {
    async fn report_if_due(&mut self, store: &Store, targets: &HashMap<String, Arc<Target>>) {
        if self.last.is_some_and(|last| last.elapsed() < UNCONFIGURED_REPORT_EVERY) {
            return;
        }
        self.last = Some(std::time::Instant::now());
        let configured: Vec<&str> = targets.keys().map(String::as_str).collect();
        let pending = match store.pending_of_other_bots(&configured, UNCONFIGURED_COUNT_CAP).await {
            Ok(pending) => pending,
            Err(error) => {
                warn!(error = %error_chain(&error), "counting deliveries of unconfigured bots failed");
                return;
            }
        };
        for bot in self.reported.drain(..) {
            if !pending.iter().any(|(b, _)| *b == bot) {
                metrics::gauge!(crate::metrics::UNCONFIGURED_PENDING, "bot" => bot).set(0.0);
            }
        }
        for (bot, count) in pending {
            warn!(
                bot_id = %bot,
                pending = count,
                "webhook deliveries of a bot missing from the configuration wait until it is configured again"
            );
            metrics::gauge!(crate::metrics::UNCONFIGURED_PENDING, "bot" => bot.clone()).set(count as f64);
            self.reported.push(bot);
        }
    }
}

/// A head that cannot be sent: an undecodable row is dead-lettered alone (the
/// conversation's later deliveries go on), a stale head moves on.
async fn settle_unsendable(shared: Arc<Shared>, head: UnsendableHead) {
    let (settle, what) = if head.stale {
        (Settle::Heal, "a webhook head pointed at no pending delivery; moved on")
    } else {
        (
            Settle::Dead(store::DeadReason::Undecodable, Utc::now()),
            "webhook delivery does not decode; dead-lettered",
        )
    };
    warn!(delivery_id = head.id, error = %head.error, "{what}");
    let job = SettleJob { id: head.id, attempt: None, settle, note: Some(head.error), run_started_at: None };
    if shared.settler.settle(job).await && !head.stale {
        crate::metrics::record_dead_letter(store::DeadReason::Undecodable.as_str());
    }
    shared.wake.notify_one();
}

/// Sends what a worker of this process handed over (claimed at insert) at
/// once, each delivery in its own task as if a claim round had taken it.
async fn serve_handoff(
    shared: Arc<Shared>,
    handoff: Handoff,
    targets: HashMap<String, Arc<Target>>,
    tasks: TaskTracker,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = handoff.handed() => {}
        }
        let handed = handoff.take();
        metrics::counter!(crate::metrics::HANDED_TOTAL).increment(handed.len() as u64);
        for (delivery, slot) in handed {
            spawn_attempt(&shared, &targets, &tasks, delivery, Some(slot));
        }
    }
}

/// Sends one claimed `delivery` in a task of its own, holding its endpoint
/// slot until the attempt ends: `slot` when it came reserved (handed over),
/// else one taken now (a claim round sizes its claims to the free slots). A
/// delivery of a bot this process has no target for is left to its lease.
fn spawn_attempt(
    shared: &Arc<Shared>,
    targets: &HashMap<String, Arc<Target>>,
    tasks: &TaskTracker,
    delivery: ClaimedDelivery,
    slot: Option<ClaimGuard>,
) {
    let Some(target) = targets.get(delivery.key.bot_id.as_str()).cloned() else { return };
    let slot = slot.unwrap_or_else(|| match &target.endpoint {
        Some((_, endpoint)) => endpoint.start(),
        None => ClaimGuard::none(),
    });
    tasks.spawn(attempt::run(shared.clone(), target, delivery, slot));
}

/// How often the heads table is vacuumed (by one dispatcher at a time).
const VACUUM_HEADS_EVERY: Duration = Duration::from_secs(10);

/// Keeps the heads table compact: see `Store::vacuum_heads`.
async fn vacuum_heads(store: Store, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(VACUUM_HEADS_EVERY) => {}
        }
        if let Err(error) = store.vacuum_heads().await {
            warn!(error = %error_chain(&error), "vacuuming the webhook heads failed; will retry");
        }
    }
}

/// Wakes the dispatcher whenever a worker of any process commits deliveries
/// (`NOTIFY` on the schema's outbox channel); reconnects with backoff.
async fn listen(shared: Arc<Shared>, shutdown: CancellationToken) {
    let mut delay = Duration::from_millis(100);
    while !shutdown.is_cancelled() {
        match shared.store.listen_outbox().await {
            Ok(mut listener) => {
                delay = Duration::from_millis(100);
                // Anything committed while not listening is found by this round.
                shared.wake.notify_one();
                loop {
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        notified = listener.notified() => match notified {
                            Some(()) => shared.wake.notify_one(),
                            None => break,
                        },
                    }
                }
                warn!("outbox listener lost its connection; listening again");
            }
            Err(error) => {
                warn!(error = %error_chain(&error), "listening for new deliveries failed; retrying")
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(MAX_ERROR_BACKOFF);
    }
}

/// Runs the webhook dispatcher of a worker process until `shutdown`: the
/// configured database, a broker publisher for `escalateUndeliverable`.
pub async fn run(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<()> {
    run_with_handoff(settings, shutdown, None).await
}

/// [`run`], sharing `handoff` with the worker of the same process: it wakes
/// the dispatcher after committing deliveries and hands over those it
/// claimed at insert, so they go out at once rather than at the next poll.
pub async fn run_with_handoff(
    settings: Settings,
    shutdown: CancellationToken,
    handoff: Option<Handoff>,
) -> anyhow::Result<()> {
    let db = &settings.database;
    let store = Store::connect_for_batches(&db.url, &db.schema, db.pool_size)
        .with_context(|| format!("connecting to PostgreSQL at {}", settings::redact_url(&db.url)))?;
    let b = &settings.broker;
    let topology =
        Topology::new(b.prefix.clone(), b.shards, b.delivery_limit).with_quorum_size(b.quorum_size);
    let mut config = PublisherConfig::new(b.url.clone(), topology);
    config.channels = 1;
    config.confirm_timeout = Duration::from_millis(b.confirm_timeout_ms.max(1));
    let publisher = Arc::new(Publisher::connect(config));
    crate::metrics::describe_metrics();
    let config = DispatcherConfig { handoff, ..DispatcherConfig::default() };
    let dispatcher = Dispatcher::new(&settings, store, Some(publisher.clone()), config)
        .context("starting the webhook dispatcher")?;
    let result = dispatcher.run(shutdown).await;
    publisher.shutdown().await;
    result.context("webhook dispatcher")
}
