//! What the worker tests share. Every test runs against the real RabbitMQ and
//! PostgreSQL, on its own queue prefix (`t-{uuid}`) and schema
//! (`t_{uuid}`), publishes envelopes the way the ingress does (confirmed,
//! one conversation at a time in order), and deletes both at the end.

#![allow(dead_code)] // each test binary uses a different subset

pub mod proxy;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use broker::{OutboundMessage, Publisher, PublisherConfig, Topology};
use chrono::Utc;
use domain::{
    AgentAction, BotId, Command, ConversationId, Envelope, EscalationId, EventId, Input, MessageId,
};
use settings::Settings;
use store::{ConvKey, Store};
use worker::{Worker, WorkerConfig, WorkerHandle};

pub const TOKEN: &str = "test-token-secret-0123456789abcdef";
pub const BOT: &str = "acme";

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

pub fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

pub fn database_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// One test's world: settings naming its own prefix and schema, the
/// migrated store, and a connected publisher.
pub struct TestEnv {
    pub settings: Settings,
    pub topology: Topology,
    pub store: Store,
    pub publisher: Publisher,
}

/// `bots_toml` is appended to the settings file (e.g. `[[bots]]` entries).
pub async fn with_env<F, Fut>(shards: u16, bots_toml: &str, body: F)
where
    F: FnOnce(Arc<TestEnv>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    init_tracing();
    let id = uuid::Uuid::new_v4();
    let prefix = format!("t-{id}");
    let schema = format!("t_{}", id.simple());
    let toml = format!(
        r#"
[broker]
url = "{amqp}"
prefix = "{prefix}"
shards = {shards}
delivery_limit = 5
prefetch = 256

[database]
url = "{db}"
schema = "{schema}"
pool_size = 6

{bots_toml}
"#,
        amqp = amqp_url(),
        db = database_url(),
    );
    let env = [("ESCALATIONS__WIDGET__TOKEN_SECRET".to_owned(), TOKEN.to_owned())];
    let settings = Settings::from_sources(Some(&toml), env).expect("test settings are valid");
    let topology = Topology::new(prefix, shards, settings.broker.delivery_limit);
    let store = Store::connect(&database_url(), &schema, 4).expect("store");
    store.migrate().await.expect("PostgreSQL must run at DATABASE_URL; migrate");
    let publisher = Publisher::connect(PublisherConfig::new(amqp_url(), topology.clone()));
    assert!(publisher.wait_until_connected(Duration::from_secs(15)).await, "RabbitMQ must run at AMQP_URL");
    let env = Arc::new(TestEnv { settings, topology: topology.clone(), store: store.clone(), publisher });

    let outcome = tokio::spawn(body(env.clone())).await;

    env.publisher.shutdown().await;
    let connection = lapin::Connection::connect(&amqp_url(), lapin::ConnectionProperties::default())
        .await
        .expect("connect for clean-up");
    let channel = connection.create_channel().await.expect("channel");
    topology.delete(&channel).await.expect("delete topology");
    let _ = connection.close(200, "OK".into()).await;
    store.drop_schema().await.expect("drop schema");
    if let Err(error) = outcome {
        std::panic::resume_unwind(error.into_panic());
    }
}

impl TestEnv {
    /// Fast knobs, so rebalancing and expiry happen within seconds.
    pub fn worker_config(&self) -> WorkerConfig {
        WorkerConfig {
            lease_ttl: Duration::from_secs(3),
            renew_every: Duration::from_millis(300),
            timer_poll_every: Duration::from_millis(100),
            drain_deadline: Duration::from_secs(5),
            ..WorkerConfig::default()
        }
    }

    pub async fn start_worker(&self) -> WorkerHandle {
        Worker::start(&self.settings, self.worker_config(), None).await.expect("worker starts")
    }

    /// Publishes like the ingress: retried until the broker confirmed (a
    /// retry after an unknown outcome may duplicate; the worker dedupes).
    pub async fn publish(&self, envelope: &Envelope) {
        let message = OutboundMessage::of(envelope, self.topology.shards);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match self.publisher.publish(&message).await {
                Ok(()) => return,
                Err(error) if Instant::now() < deadline => {
                    tracing::warn!(%error, "publish failed; retrying");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(error) => panic!("publish {}: {error}", message.event_id),
            }
        }
    }

    /// Rows of a query on the test's schema (its `search_path`).
    pub async fn rows(&self, sql: &str) -> Vec<tokio_postgres::Row> {
        let client = self.store.client().await.expect("client");
        client.query(sql, &[]).await.unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    pub async fn count(&self, sql: &str) -> i64 {
        self.rows(sql).await[0].get(0)
    }

    /// Waits until `count(sql)` reaches `expected`, or panics after `timeout`.
    pub async fn wait_for_count(&self, sql: &str, expected: i64, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let n = self.count(sql).await;
            if n == expected {
                return;
            }
            assert!(n <= expected, "{sql}: {n} is more than the {expected} expected");
            assert!(Instant::now() < deadline, "{sql}: still {n} of {expected} after {timeout:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Polls `condition` every 50 ms until true, or panics with `what` after `timeout`.
pub async fn eventually<F, Fut>(what: &str, timeout: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !condition().await {
        assert!(Instant::now() < deadline, "not within {timeout:?}: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Like [`eventually`] for a condition that needs no I/O.
pub async fn until(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(Instant::now() < deadline, "not within {timeout:?}: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn key(conversation: &str) -> ConvKey {
    ConvKey::new(BotId::parse(BOT).expect("id"), ConversationId::parse(conversation).expect("id"))
}

pub fn envelope(conversation: &str, event_id: &str, input: Input) -> Envelope {
    Envelope {
        bot_id: BotId::parse(BOT).expect("id"),
        conversation_id: ConversationId::parse(conversation).expect("id"),
        received_at: Utc::now(),
        command: Command { event_id: EventId::parse(event_id).expect("id"), input },
    }
}

pub fn escalate(escalation: &str) -> Input {
    Input::Escalate {
        escalation_id: EscalationId::parse(escalation).expect("id"),
        escalate_to: None,
        metadata: None,
        transcript: None,
    }
}

pub fn agent(action: AgentAction) -> Input {
    Input::Agent { escalation_id: None, action, warnings: Vec::new() }
}

pub fn success(name: &str) -> Input {
    agent(AgentAction::Success { agent: Some(name.to_owned()), agent_avatar: None })
}

pub fn agent_message(text: &str) -> Input {
    agent(AgentAction::Message { text: text.to_owned() })
}

pub fn visitor_message(id: &str, text: &str) -> Input {
    Input::VisitorMessage { message_id: MessageId::parse(id).expect("id"), text: text.to_owned() }
}

/// The standard load script of one conversation: escalate, connect, then
/// events 3..=n alternating agent (odd, to the widget) and visitor (even, to
/// the webhook) messages whose text is the event's number.
pub fn script(conversation: &str, n: usize) -> Vec<Envelope> {
    let mut events = vec![
        envelope(conversation, &format!("{conversation}-1"), escalate(&format!("esc-{conversation}"))),
        envelope(conversation, &format!("{conversation}-2"), success("Ann")),
    ];
    for i in 3..=n {
        let id = format!("{conversation}-{i}");
        let text = i.to_string();
        let input = if i % 2 == 1 { agent_message(&text) } else { visitor_message(&id, &text) };
        events.push(envelope(conversation, &id, input));
    }
    events
}

pub fn conversation_name(i: usize) -> String {
    format!("conv-{i:05}")
}

/// Publishes `script(conversation, per)` for `conversations` conversations,
/// many conversations at once, each one's events in order and each publish
/// awaiting its confirm. `after_each` sees the running total of confirmed
/// publishes (to trigger mid-run actions).
pub async fn publish_scripts(env: &TestEnv, conversations: usize, per: usize, concurrency: usize) {
    use futures::StreamExt;
    futures::stream::iter(0..conversations)
        .for_each_concurrent(concurrency, |i| async move {
            for envelope in script(&conversation_name(i), per) {
                env.publish(&envelope).await;
            }
        })
        .await;
}

/// Checks what `script` must have produced for every conversation: each
/// event recorded once and applied, the widget stream and the webhook outbox
/// gap-free from 1 with the message texts in publish order.
pub async fn verify_scripts(env: &TestEnv, conversations: usize, per: usize) {
    let expected_events = i64::try_from(conversations * per).expect("fits");
    assert_eq!(env.count("SELECT count(*) FROM events").await, expected_events, "events recorded once each");
    assert_eq!(
        env.count("SELECT count(*) FROM events WHERE verdict <> 'applied'").await,
        0,
        "every event applied (a reorder would show as a rejection)"
    );
    let agent_texts: Vec<String> = (3..=per).filter(|i| i % 2 == 1).map(|i| i.to_string()).collect();
    let visitor_texts: Vec<String> = (3..=per).filter(|i| i % 2 == 0).map(|i| i.to_string()).collect();

    let widget = env
        .rows(
            "SELECT conversation_id, array_agg(sequence ORDER BY sequence),
                    array_agg(coalesce(payload->>'text', '') ORDER BY sequence)
             FROM widget_events GROUP BY conversation_id ORDER BY conversation_id",
        )
        .await;
    assert_eq!(widget.len(), conversations, "every conversation has a widget stream");
    for row in &widget {
        let conversation: String = row.get(0);
        let sequences: Vec<i64> = row.get(1);
        let texts: Vec<String> = row.get(2);
        let expected_sequences: Vec<i64> =
            (1..=i64::try_from(2 + agent_texts.len()).expect("fits")).collect();
        assert_eq!(sequences, expected_sequences, "{conversation}: widget sequences");
        if texts[2..] != agent_texts[..] {
            dump_timeline(env, &conversation).await;
        }
        assert_eq!(texts[2..], agent_texts[..], "{conversation}: agent messages in order, once each");
    }

    let webhooks = env
        .rows(
            "SELECT conversation_id, array_agg(sequence ORDER BY sequence),
                    array_agg(coalesce(payload->>'text', '') ORDER BY sequence)
             FROM webhook_deliveries GROUP BY conversation_id ORDER BY conversation_id",
        )
        .await;
    assert_eq!(webhooks.len(), conversations, "every conversation has webhooks");
    for row in &webhooks {
        let conversation: String = row.get(0);
        let sequences: Vec<i64> = row.get(1);
        let texts: Vec<String> = row.get(2);
        let expected_sequences: Vec<i64> =
            (1..=i64::try_from(1 + visitor_texts.len()).expect("fits")).collect();
        assert_eq!(sequences, expected_sequences, "{conversation}: webhook sequences");
        if texts[1..] != visitor_texts[..] {
            dump_timeline(env, &conversation).await;
        }
        assert_eq!(texts[1..], visitor_texts[..], "{conversation}: visitor messages in order, once each");
    }
}

/// Prints a conversation's event log, to diagnose an ordering failure.
async fn dump_timeline(env: &TestEnv, conversation: &str) {
    let rows = env
        .rows(&format!(
            "SELECT id, event_id, verdict, received_at::text, applied_at::text FROM events
             WHERE conversation_id = '{conversation}' ORDER BY id"
        ))
        .await;
    for row in rows {
        let (id, event, verdict, received, applied): (i64, String, String, String, String) =
            (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
        eprintln!("{id:>8} {event:<16} {verdict:<9} received {received} applied {applied}");
    }
}
