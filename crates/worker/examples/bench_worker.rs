//! Throughput of the worker, from publish to committed state, next to what
//! the broker alone does on this machine.
//!
//! ```text
//! cargo run --release -p worker --example bench_worker
//! ```
//!
//! Needs RabbitMQ (`AMQP_URL`) and PostgreSQL (`DATABASE_URL`); works on its
//! own queue prefix and schema and deletes both. Size with
//! `BENCH_CONVERSATIONS` (default 5000) and `BENCH_EVENTS` (per
//! conversation, default 10).
//!
//! 1. raw lapin: publish every message with confirms (many in flight) and
//!    consume the shard queues with manual acks, no database.
//! 2. one worker, then two, "live": publish envelopes with `broker::Publisher`
//!    while the workers run (all conversations at once, each conversation's
//!    events in order, each awaiting its confirm, as the ingress does) and
//!    time from the first publish until every event is committed.
//! 3. one worker, then two, "backlog": publish everything first, then start
//!    the workers and time (start-up and rebalancing included) until every
//!    event is committed — the worker's own rate, without the publishing
//!    competing for the same two cores.

use std::sync::Arc;
use std::time::{Duration, Instant};

use broker::{OutboundMessage, Publisher, PublisherConfig, Topology};
use chrono::Utc;
use domain::{AgentAction, BotId, Command, ConversationId, Envelope, EscalationId, EventId, Input};
use futures::{FutureExt, StreamExt};
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use settings::Settings;
use store::Store;
use worker::{Worker, WorkerConfig};

const SHARDS: u16 = 16;
const PREFETCH: u16 = 256;

fn env_or(key: &str, default: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| default.to_owned())
}

fn env_number(key: &str, default: usize) -> usize {
    std::env::var(key).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

struct Bench {
    amqp: String,
    database: String,
    conversations: usize,
    per: usize,
}

impl Bench {
    fn total(&self) -> usize {
        self.conversations * self.per
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .init();
    let bench = Bench {
        amqp: env_or("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f"),
        database: env_or("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres"),
        conversations: env_number("BENCH_CONVERSATIONS", 5000),
        per: env_number("BENCH_EVENTS", 10).max(3),
    };
    println!(
        "bench_worker: {} conversations x {} events = {} events; {SHARDS} shards, prefetch {PREFETCH}, \
         max batch {}",
        bench.conversations,
        bench.per,
        bench.total(),
        WorkerConfig::default().max_batch
    );
    raw_lapin(&bench).await?;
    for backlog in [false, true] {
        for workers in [1, 2] {
            with_workers(&bench, workers, backlog).await?;
        }
    }
    Ok(())
}

/// The broker alone: confirmed publishes of the same bodies to the same
/// shard queues, consumed with acks (multiple, per drained batch).
async fn raw_lapin(bench: &Bench) -> anyhow::Result<()> {
    let topology = Topology::new(format!("bench-raw-{}", uuid::Uuid::new_v4()), SHARDS, 5);
    let connection = Connection::connect(&bench.amqp, ConnectionProperties::default()).await?;
    let setup = connection.create_channel().await?;
    topology.declare(&setup).await?;

    let messages: Vec<_> = (0..bench.conversations)
        .flat_map(|c| script(c, bench.per))
        .map(|envelope| OutboundMessage::of(&envelope, SHARDS))
        .collect();
    let consumed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut consumers = Vec::new();
    let mut channels = Vec::new();
    for shard in 0..SHARDS {
        let channel = connection.create_channel().await?;
        channels.push(channel.clone());
        channel.basic_qos(PREFETCH, BasicQosOptions::default()).await?;
        let mut consumer = channel
            .basic_consume(
                topology.shard_queue(shard).into(),
                format!("raw-{shard}").into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let consumed = consumed.clone();
        consumers.push(tokio::spawn(async move {
            while let Some(Ok(delivery)) = consumer.next().await {
                let mut last = delivery.delivery_tag;
                let mut n = 1;
                while let Some(Some(Ok(more))) = consumer.next().now_or_never() {
                    last = more.delivery_tag;
                    n += 1;
                }
                let _ = channel.basic_ack(last, BasicAckOptions { multiple: true }).await;
                consumed.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
            }
        }));
    }

    let started = Instant::now();
    let publish_channel = connection.create_channel().await?;
    publish_channel.confirm_select(ConfirmSelectOptions::default()).await?;
    let exchange = topology.exchange();
    futures::stream::iter(&messages)
        .map(|message| {
            let channel = publish_channel.clone();
            let exchange = exchange.clone();
            let routing_key = topology.routing_key(message.shard);
            async move {
                let confirm = channel
                    .basic_publish(
                        exchange.into(),
                        routing_key.into(),
                        BasicPublishOptions::default(),
                        &message.body,
                        BasicProperties::default().with_delivery_mode(2),
                    )
                    .await?;
                confirm.await
            }
        })
        .buffer_unordered(2000)
        .for_each(|confirmed| async move {
            if let Err(error) = confirmed {
                eprintln!("raw publish failed: {error}");
            }
        })
        .await;
    let published = started.elapsed();
    while consumed.load(std::sync::atomic::Ordering::Relaxed) < messages.len() {
        anyhow::ensure!(started.elapsed() < Duration::from_secs(300), "raw consume did not finish");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = started.elapsed();
    println!(
        "raw lapin, publish with confirms + consume with ack, no database: {} messages, published in {:.2} s, \
         consumed in {:.2} s = {:.0} msg/s",
        messages.len(),
        published.as_secs_f64(),
        elapsed.as_secs_f64(),
        rate(messages.len(), elapsed)
    );
    for channel in channels {
        let _ = channel.close(200, "OK".into()).await;
    }
    for consumer in consumers {
        consumer.abort();
    }
    topology.delete(&setup).await?;
    let _ = connection.close(200, "OK".into()).await;
    Ok(())
}

/// `workers` in-process workers: publish everything while they run (or,
/// with `backlog`, before they start), time until all is committed.
async fn with_workers(bench: &Bench, workers: usize, backlog: bool) -> anyhow::Result<()> {
    let id = uuid::Uuid::new_v4();
    let prefix = format!("bench-{id}");
    let schema = format!("bench_{}", id.simple());
    let toml = format!(
        "[broker]\nurl = \"{}\"\nprefix = \"{prefix}\"\nshards = {SHARDS}\nprefetch = {PREFETCH}\n\
         [database]\nurl = \"{}\"\nschema = \"{schema}\"\npool_size = 16\n",
        bench.amqp, bench.database
    );
    let env =
        [("ESCALATIONS__WIDGET__TOKEN_SECRET".to_owned(), "bench-token-secret-0123456789abcdef".to_owned())];
    let settings = Settings::from_sources(Some(&toml), env)?;
    let store = Store::connect(&bench.database, &schema, 2)?;
    store.migrate().await?;
    let topology = Topology::new(prefix, SHARDS, settings.broker.delivery_limit);
    let publisher = Arc::new(Publisher::connect(PublisherConfig::new(bench.amqp.clone(), topology.clone())));
    anyhow::ensure!(publisher.wait_until_connected(Duration::from_secs(15)).await, "broker unreachable");

    let (handles, started, published) = if backlog {
        let published = publish_all(&publisher, bench).await;
        // From before the start: the first worker consumes while the others
        // are still joining, and that belongs to the measurement.
        let started = Instant::now();
        (start_workers(&settings, workers).await?, started, published)
    } else {
        let handles = start_workers(&settings, workers).await?;
        let started = Instant::now();
        (handles, started, publish_all(&publisher, bench).await)
    };
    let total = u64::try_from(bench.total())?;
    while store.count_events().await? < total {
        anyhow::ensure!(started.elapsed() < Duration::from_secs(600), "worker run did not finish");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed();
    let applied: i64 = store
        .client()
        .await?
        .query_one("SELECT count(*) FROM events WHERE verdict = 'applied'", &[])
        .await?
        .get(0);
    let batches: f64 = store
        .client()
        .await?
        .query_one("SELECT count(DISTINCT applied_at)::float8 FROM events", &[])
        .await?
        .get(0);
    let what = if backlog {
        format!("backlog published first in {:.2} s, then drained in", published.as_secs_f64())
    } else {
        format!("published while running in {:.2} s, all committed in", published.as_secs_f64())
    };
    println!(
        "worker x{workers}, {}: {} events, {what} {:.2} s = {:.0} events/s ({applied} applied, ~{:.0} events per batch)",
        if backlog { "backlog" } else { "live" },
        bench.total(),
        elapsed.as_secs_f64(),
        rate(bench.total(), elapsed),
        f64::from(u32::try_from(bench.total()).unwrap_or(u32::MAX)) / batches.max(1.0),
    );
    for handle in handles {
        handle.stop().await?;
    }
    publisher.shutdown().await;
    let connection = Connection::connect(&bench.amqp, ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    topology.delete(&channel).await?;
    let _ = connection.close(200, "OK".into()).await;
    store.drop_schema().await?;
    Ok(())
}

async fn start_workers(settings: &Settings, workers: usize) -> anyhow::Result<Vec<worker::WorkerHandle>> {
    let mut handles = Vec::new();
    for _ in 0..workers {
        handles.push(Worker::start(settings, WorkerConfig::default(), None).await?);
    }
    // Measure the steady state, not the first rebalancing.
    let deadline = Instant::now() + Duration::from_secs(60);
    while handles.iter().map(|h| h.shards().len()).sum::<usize>() != usize::from(SHARDS)
        || handles.iter().any(|h| h.shards().is_empty())
    {
        anyhow::ensure!(Instant::now() < deadline, "workers did not split the shards");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(handles)
}

/// Every conversation at once; within one, each event after the previous
/// one's confirm, as the ingress does. Returns how long it took.
async fn publish_all(publisher: &Publisher, bench: &Bench) -> Duration {
    let started = Instant::now();
    futures::stream::iter(0..bench.conversations)
        .for_each_concurrent(bench.conversations, |c| async move {
            for envelope in script(c, bench.per) {
                let message = OutboundMessage::of(&envelope, SHARDS);
                while let Err(error) = publisher.publish(&message).await {
                    eprintln!("publish failed, retrying: {error}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        })
        .await;
    started.elapsed()
}

fn rate(count: usize, elapsed: Duration) -> f64 {
    f64::from(u32::try_from(count).unwrap_or(u32::MAX)) / elapsed.as_secs_f64()
}

/// One conversation: escalate, connect, then agent and visitor messages.
fn script(c: usize, per: usize) -> Vec<Envelope> {
    let conversation = format!("bench-{c:06}");
    let make = |i: usize, input: Input| Envelope {
        bot_id: BotId::parse("bench").expect("valid id"),
        conversation_id: ConversationId::parse(conversation.clone()).expect("valid id"),
        received_at: Utc::now(),
        command: Command {
            event_id: EventId::parse(format!("{conversation}-{i}")).expect("valid id"),
            input,
        },
    };
    let mut events = vec![
        make(
            1,
            Input::Escalate {
                escalation_id: EscalationId::parse(format!("esc-{conversation}")).expect("valid id"),
                escalate_to: None,
                metadata: None,
                transcript: None,
            },
        ),
        make(
            2,
            Input::Agent {
                escalation_id: None,
                action: AgentAction::Success { agent: Some("Ann".to_owned()), agent_avatar: None },
                warnings: Vec::new(),
            },
        ),
    ];
    for i in 3..=per {
        let input = if i % 2 == 1 {
            Input::Agent {
                escalation_id: None,
                action: AgentAction::Message { text: format!("agent {i}") },
                warnings: Vec::new(),
            }
        } else {
            Input::VisitorMessage {
                message_id: domain::MessageId::parse(format!("{conversation}-v{i}")).expect("valid id"),
                text: format!("visitor {i}"),
            }
        };
        events.push(make(i, input));
    }
    events
}
