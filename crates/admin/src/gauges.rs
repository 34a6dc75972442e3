//! Gauges read from PostgreSQL and RabbitMQ when `/metrics` is scraped (at
//! most once per `admin.gauges_refresh_secs`), on workers and `all`: what is
//! stuck and where (docs/operations.md).
//!
//! Every worker reports the same deployment-wide values: take `max` over
//! instances, never `sum`. Labels are bounded: bot ids come from the
//! configuration, reasons and states are ours, shards are `0..broker.shards`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use broker::Topology;
use chrono::Utc;
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use metrics::{Unit, describe_gauge, gauge};
use settings::Settings;
use store::{DeadReason, Store};
use tokio::sync::Mutex;

use crate::probes::Probes;

/// Pending webhook deliveries per `bot` (counted up to [`CAP`]).
pub const OUTBOX_PENDING: &str = "escalations_outbox_pending";
/// Conversations with pending webhook deliveries per `bot` (up to [`CAP`]).
pub const OUTBOX_CONVERSATIONS: &str = "escalations_outbox_conversations";
/// Age of the oldest pending webhook delivery per `bot`; 0 when none is pending.
pub const OUTBOX_OLDEST_AGE: &str = "escalations_outbox_oldest_pending_age_seconds";
/// Dead letters stored, per `reason` (among the newest [`CAP`]).
pub const DEAD_LETTERS: &str = "escalations_dead_letters";
/// Messages ready in each `shard` queue: the backlog no worker has taken yet.
pub const SHARD_QUEUE_READY: &str = "escalations_shard_queue_ready_messages";
/// Messages in the dead-event queue (`{prefix}.dead`).
pub const DEAD_EVENTS: &str = "escalations_dead_events";
/// Shard leases per `state`: `held`, `expired`, `free`.
pub const SHARD_LEASES: &str = "escalations_shard_leases";
/// Workers whose heartbeat is younger than the lease TTL.
pub const LIVE_WORKERS: &str = "escalations_live_workers";
/// 1 if the last read of the gauges above succeeded, per `source`
/// (`postgres`, `rabbitmq`); 0 if they are stale.
pub const GAUGES_UP: &str = "escalations_gauges_up";

/// How far a count walks before it saturates.
pub const CAP: i64 = 10_000;

/// Registers the descriptions.
pub fn describe() {
    describe_gauge!(OUTBOX_PENDING, Unit::Count, "Pending webhook deliveries per bot (saturates at 10000).");
    describe_gauge!(
        OUTBOX_CONVERSATIONS,
        Unit::Count,
        "Conversations with pending webhook deliveries per bot."
    );
    describe_gauge!(OUTBOX_OLDEST_AGE, Unit::Seconds, "Age of the oldest pending webhook delivery per bot.");
    describe_gauge!(DEAD_LETTERS, Unit::Count, "Webhook dead letters stored, per reason.");
    describe_gauge!(SHARD_QUEUE_READY, Unit::Count, "Messages ready in each shard queue.");
    describe_gauge!(DEAD_EVENTS, Unit::Count, "Messages in the dead-event queue.");
    describe_gauge!(SHARD_LEASES, Unit::Count, "Shard leases per state: held, expired, free.");
    describe_gauge!(LIVE_WORKERS, Unit::Count, "Workers with a recent heartbeat.");
    describe_gauge!(GAUGES_UP, "1 if the last read of the database or broker gauges succeeded, per source.");
}

/// Reads the gauges when they are older than the refresh interval.
#[derive(Debug, Clone)]
pub struct Gauges {
    settings: Arc<Settings>,
    store: Store,
    probes: Probes,
    refresh: Duration,
    last: Arc<Mutex<Option<Instant>>>,
}

impl Gauges {
    /// Gauges of the deployment `settings` describes.
    pub fn new(settings: Arc<Settings>, store: Store, probes: Probes) -> Self {
        let refresh = Duration::from_secs(settings.admin.gauges_refresh_secs);
        Self { settings, store, probes, refresh, last: Arc::new(Mutex::new(None)) }
    }

    /// Refreshes the gauges if due; one scrape refreshes while concurrent ones wait.
    pub async fn refresh_if_due(&self) {
        let mut last = self.last.lock().await;
        if last.is_some_and(|at| at.elapsed() < self.refresh) {
            return;
        }
        let postgres = tokio::time::timeout(Duration::from_secs(5), self.read_postgres()).await;
        let postgres_ok = matches!(postgres, Ok(Ok(())));
        if let Ok(Err(error)) = &postgres {
            tracing::debug!(%error, "reading the database gauges");
        }
        gauge!(GAUGES_UP, "source" => "postgres").set(if postgres_ok { 1.0 } else { 0.0 });
        let rabbitmq = tokio::time::timeout(Duration::from_secs(5), self.read_rabbitmq()).await;
        let rabbitmq_ok = matches!(rabbitmq, Ok(Ok(())));
        gauge!(GAUGES_UP, "source" => "rabbitmq").set(if rabbitmq_ok { 1.0 } else { 0.0 });
        *last = Some(Instant::now());
    }

    async fn read_postgres(&self) -> store::Result<()> {
        let bots: Vec<String> = self.settings.bots.iter().map(|b| b.id.clone()).collect();
        let now = Utc::now();
        for outbox in self.store.outbox_gauges(&bots, CAP).await? {
            let bot = outbox.bot_id;
            gauge!(OUTBOX_PENDING, "bot" => bot.clone()).set(outbox.pending as f64);
            gauge!(OUTBOX_CONVERSATIONS, "bot" => bot.clone()).set(outbox.conversations as f64);
            let age =
                outbox.oldest_pending_at.map_or(0.0, |at| (now - at).num_milliseconds().max(0) as f64 / 1e3);
            gauge!(OUTBOX_OLDEST_AGE, "bot" => bot).set(age);
        }
        let counts = self.store.dead_letter_counts(CAP).await?;
        for reason in DeadReason::ALL {
            let count = counts.iter().find(|(r, _)| r == reason.as_str()).map_or(0, |(_, n)| *n);
            gauge!(DEAD_LETTERS, "reason" => reason.as_str()).set(count as f64);
        }
        let leases = self.store.list_leases().await?;
        let (mut held, mut expired, mut free) = (0u32, 0u32, 0u32);
        for lease in &leases {
            match (&lease.holder, lease.expires_at) {
                (Some(_), Some(at)) if at > now => held += 1,
                (Some(_), Some(_)) => expired += 1,
                _ => free += 1,
            }
        }
        gauge!(SHARD_LEASES, "state" => "held").set(f64::from(held));
        gauge!(SHARD_LEASES, "state" => "expired").set(f64::from(expired));
        gauge!(SHARD_LEASES, "state" => "free").set(f64::from(free));
        let ttl = Duration::from_millis(self.settings.worker.lease_ttl_ms);
        gauge!(LIVE_WORKERS).set(self.store.live_workers(ttl).await?.len() as f64);
        Ok(())
    }

    /// A passive declare per queue gives its ready count without touching it.
    async fn read_rabbitmq(&self) -> Result<(), String> {
        let connection = self.probes.amqp().ok_or("no broker connection")?;
        let b = &self.settings.broker;
        let topology = Topology::new(b.prefix.clone(), b.shards, b.delivery_limit);
        let mut channel = connection.create_channel().await.map_err(|e| e.to_string())?;
        let passive = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
        let mut queues: Vec<(Option<u16>, String)> =
            (0..b.shards).map(|shard| (Some(shard), topology.shard_queue(shard))).collect();
        queues.push((None, topology.dead_letter_queue()));
        for (shard, queue) in queues {
            match channel.queue_declare(queue.as_str().into(), passive, FieldTable::default()).await {
                Ok(declared) => {
                    let ready = f64::from(declared.message_count());
                    match shard {
                        Some(shard) => gauge!(SHARD_QUEUE_READY, "shard" => shard.to_string()).set(ready),
                        None => gauge!(DEAD_EVENTS).set(ready),
                    }
                }
                // A missing queue (not declared yet) closes the channel: open another.
                Err(_) => channel = connection.create_channel().await.map_err(|e| e.to_string())?,
            }
        }
        let _ = channel.close(200, "bye".into()).await;
        Ok(())
    }
}
