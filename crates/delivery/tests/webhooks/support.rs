//! Shared by the delivery tests: a fresh schema per test, in-process webhook
//! receivers whose answers the test controls, settings built in code, and
//! outbox rows inserted the way the worker writes them.

#![allow(dead_code)]

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use delivery::{Dispatcher, DispatcherConfig, RetryTuning};
use domain::webhook::{WebhookEnvelope, WebhookEvent};
use domain::{BotId, ConversationId, EscalationId, MessageId};
use settings::{BotConfig, BotOverrides, Secret, Settings};
use store::{ConvKey, Store};
use tokio_util::sync::CancellationToken;

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

pub fn database_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

pub fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// Runs `test` with a migrated store in a fresh schema, then drops the schema,
/// also when `test` panics.
pub async fn with_store<F, Fut>(test: F)
where
    F: FnOnce(Store) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    init_tracing();
    let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
    let store = Store::connect(&database_url(), &schema, 8).expect("connect");
    store.migrate().await.expect("migrate");
    let outcome = tokio::spawn(test(store.clone())).await;
    store.drop_schema().await.expect("drop schema");
    if let Err(error) = outcome {
        if error.is_panic() {
            std::panic::resume_unwind(error.into_panic());
        }
        panic!("test task failed: {error}");
    }
}

/// A `whsec_` secret made of `byte` repeated.
pub fn secret(byte: u8) -> String {
    format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode([byte; 32]))
}

pub fn bot(id: &str, url: &str, secrets: &[String]) -> BotConfig {
    BotConfig {
        id: id.to_owned(),
        api_keys: vec![Secret::new(format!("{id}-api-key-0123456789"))],
        webhook_url: Some(url.parse().expect("url")),
        webhook_secrets: secrets.iter().map(|s| Secret::new(s.clone())).collect(),
        overrides: BotOverrides::default(),
    }
}

/// Settings for tests: loopback allowed (the receivers), a short timeout,
/// small budgets, a quick breaker.
pub fn settings(bots: Vec<BotConfig>) -> Settings {
    let mut settings = Settings::default();
    settings.webhooks.allow_loopback = true;
    settings.webhooks.timeout_secs = 2;
    settings.webhooks.breaker_failures = 1000;
    settings.webhooks.breaker_cooldown_secs = 1;
    settings.defaults.escalate_budget_secs = 2;
    settings.defaults.delivery_budget_secs = 30;
    settings.bots = bots;
    settings
}

/// Fast backoff without jitter.
pub fn fast_config() -> DispatcherConfig {
    DispatcherConfig {
        poll_interval: Duration::from_millis(50),
        retry: RetryTuning {
            initial_delay: Some(Duration::from_millis(100)),
            max_delay: Some(Duration::from_millis(400)),
            jitter: Some(0.0),
            retry_after_min: Some(Duration::from_millis(100)),
            retry_after_max: None,
        },
        ..DispatcherConfig::default()
    }
}

/// A running dispatcher; stopped (and awaited) by [`Running::stop`].
pub struct Running {
    token: CancellationToken,
    handle: tokio::task::JoinHandle<delivery::Result<()>>,
}

impl Running {
    pub async fn stop(self) {
        self.token.cancel();
        self.handle.await.expect("dispatcher task").expect("dispatcher");
    }
}

pub fn start(
    settings: &Settings,
    store: &Store,
    publisher: Option<Arc<broker::Publisher>>,
    config: DispatcherConfig,
) -> Running {
    let token = CancellationToken::new();
    let dispatcher = Dispatcher::new(settings, store.clone(), publisher, config).expect("dispatcher");
    Running { handle: dispatcher.spawn(token.clone()), token }
}

pub fn key(bot: &str, conversation: &str) -> ConvKey {
    ConvKey::new(BotId::parse(bot).expect("bot"), ConversationId::parse(conversation).expect("conversation"))
}

pub fn message(sequence: u64, text: &str) -> WebhookEnvelope {
    WebhookEnvelope {
        sequence,
        timestamp: Utc::now(),
        escalation_id: Some(EscalationId::parse("esc-1").expect("id")),
        event: WebhookEvent::WidgetMessage {
            text: text.to_owned(),
            message_id: MessageId::parse(format!("m-{sequence}")).expect("id"),
        },
    }
}

pub fn escalate(sequence: u64, escalation: &str) -> WebhookEnvelope {
    WebhookEnvelope {
        sequence,
        timestamp: Utc::now(),
        escalation_id: Some(EscalationId::parse(escalation).expect("id")),
        event: WebhookEvent::WidgetEscalate {
            escalate_to: Some("sales".into()),
            metadata: None,
            transcript: None,
        },
    }
}

/// Queues deliveries as the worker does, due now. A `widgetEscalate` comes
/// with its escalation live, as the worker leaves it (the dispatcher skips
/// one whose escalation has ended).
pub async fn insert(store: &Store, rows: &[(ConvKey, WebhookEnvelope)]) {
    let mut client = store.client().await.expect("client");
    let tx = client.transaction().await.expect("begin");
    for (key, envelope) in rows {
        if let (WebhookEvent::WidgetEscalate { .. }, Some(escalation)) =
            (&envelope.event, &envelope.escalation_id)
        {
            tx.execute(
                "INSERT INTO conversations (bot_id, conversation_id, state, phase, escalation_id, updated_at)
                 VALUES ($1, $2, '{}', 'requested', $3, now())
                 ON CONFLICT (bot_id, conversation_id) DO UPDATE SET phase = 'requested', escalation_id = $3",
                &[&key.bot_id.as_str(), &key.conversation_id.as_str(), &escalation.as_str()],
            )
            .await
            .expect("live escalation");
        }
    }
    store::insert_webhook_deliveries(&tx, rows, Utc::now()).await.expect("insert");
    tx.commit().await.expect("commit");
}

/// Ends the conversation's escalation, as the state machine does.
pub async fn end_escalation(store: &Store, key: &ConvKey) {
    let client = store.client().await.expect("client");
    client
        .execute(
            "UPDATE conversations SET phase = 'idle' WHERE bot_id = $1 AND conversation_id = $2",
            &[&key.bot_id.as_str(), &key.conversation_id.as_str()],
        )
        .await
        .expect("end escalation");
}

/// Polls `check` every 50 ms until it holds or `within` passes.
pub async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if check().await {
            return;
        }
        assert!(Instant::now() < deadline, "timed out after {within:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Statuses of a conversation's deliveries, in sequence order.
pub async fn statuses(store: &Store, key: &ConvKey) -> Vec<String> {
    store.webhook_deliveries_of(key).await.expect("deliveries").into_iter().map(|d| d.status).collect()
}

/// One request a receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub at: Instant,
    pub wall: DateTime<Utc>,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The status it was answered with.
    pub status: u16,
}

impl Received {
    pub fn id(&self) -> String {
        self.header("webhook-id")
    }

    pub fn header(&self, name: &str) -> String {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("json body")
    }

    pub fn conversation(&self) -> String {
        self.json()["data"]["platformConversationId"].as_str().unwrap_or_default().to_owned()
    }

    pub fn sequence(&self) -> u64 {
        self.json()["data"]["sequence"].as_u64().unwrap_or_default()
    }
}

/// How a receiver answers.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub retry_after: Option<String>,
    pub delay: Duration,
}

impl Reply {
    pub fn status(status: u16) -> Self {
        Self { status, retry_after: None, delay: Duration::ZERO }
    }
}

type Responder = Box<dyn FnMut(usize, &HeaderMap, &[u8]) -> Reply + Send>;

struct ReceiverState {
    received: Mutex<Vec<Received>>,
    responder: Mutex<Responder>,
    count: AtomicUsize,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

/// An in-process webhook endpoint on 127.0.0.1.
#[derive(Clone)]
pub struct Receiver {
    pub addr: SocketAddr,
    state: Arc<ReceiverState>,
}

impl Receiver {
    /// Answers 200 until told otherwise.
    pub async fn start() -> Receiver {
        let state = Arc::new(ReceiverState {
            received: Mutex::new(Vec::new()),
            responder: Mutex::new(Box::new(|_, _, _| Reply::status(200))),
            count: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
        });
        let app = axum::Router::new().fallback(handle).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver { addr, state }
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// `responder(n, headers, body)` answers request number `n` (0-based).
    pub fn respond(&self, responder: impl FnMut(usize, &HeaderMap, &[u8]) -> Reply + Send + 'static) {
        *self.state.responder.lock().expect("lock") = Box::new(responder);
    }

    pub fn always(&self, status: u16) {
        self.respond(move |_, _, _| Reply::status(status));
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().expect("lock").clone()
    }

    pub fn count(&self) -> usize {
        self.state.count.load(Ordering::SeqCst)
    }

    pub fn max_in_flight(&self) -> usize {
        self.state.max_in_flight.load(Ordering::SeqCst)
    }

    /// Acknowledged (2xx) requests.
    pub fn acked(&self) -> Vec<Received> {
        self.received().into_iter().filter(|r| (200..300).contains(&r.status)).collect()
    }
}

async fn handle(
    State(state): State<Arc<ReceiverState>>,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    let at = Instant::now();
    let wall = Utc::now();
    let n = state.count.fetch_add(1, Ordering::SeqCst);
    let now_in_flight = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    state.max_in_flight.fetch_max(now_in_flight, Ordering::SeqCst);
    let reply = (state.responder.lock().expect("lock"))(n, &headers, &body);
    state.received.lock().expect("lock").push(Received { at, wall, headers, body, status: reply.status });
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    state.in_flight.fetch_sub(1, Ordering::SeqCst);
    let mut response_headers = HeaderMap::new();
    if let Some(value) = &reply.retry_after {
        response_headers.insert("retry-after", HeaderValue::from_str(value).expect("header"));
    }
    (StatusCode::from_u16(reply.status).expect("status"), response_headers, "")
}

/// Maps test host names to addresses for the dispatcher's resolver.
pub fn hosts(entries: &[(&str, &str)]) -> HashMap<String, Vec<IpAddr>> {
    entries.iter().map(|(name, ip)| ((*name).to_owned(), vec![ip.parse().expect("ip")])).collect()
}
