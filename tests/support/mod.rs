//! A whole system for one test: an ingress on a real socket, a worker, both on
//! the real RabbitMQ and PostgreSQL under a queue prefix and a database schema
//! of their own, removed again by [`System::stop`]. [`System::start_ingress`]
//! adds more ingress instances on the same broker and database; [`sse`]
//! reads widget streams.

pub mod sse;

pub use sse::{SseEvent, SseStream};

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use broker::{Publisher, Topology};
use lapin::{Connection, ConnectionProperties};
use serde_json::{Value, json};
use settings::Settings;
use store::{ConvKey, Store};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use worker::{Worker, WorkerConfig, WorkerHandle};

/// The test bot and its API key.
pub const BOT: &str = "acme";
/// `BOT`'s key.
pub const KEY: &str = "acme-key-0123456789";
/// A second bot, to check that one bot never sees another's data.
pub const OTHER_BOT: &str = "globex";
/// `OTHER_BOT`'s key.
pub const OTHER_KEY: &str = "globex-key-0123456789";
const TOKEN_SECRET: &str = "e2e-widget-token-secret-of-32-bytes-or-more";

/// A widget token for `conversation` of `BOT`, issued at `issued_at` with a
/// 60 s lifetime (an `issued_at` over a minute ago gives an expired one).
pub fn widget_token(conversation: &str, issued_at: chrono::DateTime<chrono::Utc>) -> String {
    let tokens = ingress::WidgetTokens::new(TOKEN_SECRET.as_bytes(), Duration::from_secs(60));
    let bot = domain::BotId::parse(BOT).expect("id");
    let conversation = domain::ConversationId::parse(conversation).expect("id");
    tokens.issue(&bot, &conversation, issued_at).token
}

/// The settings of one test: fresh prefix and schema; `extra_bot` is TOML
/// appended to the bot (e.g. timer overrides).
pub fn settings(bot_overrides: &str) -> Settings {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let amqp = std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let pg = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let toml = format!(
        r#"
        [broker]
        url = "{amqp}"
        prefix = "e2e-{id}"
        shards = 4
        [database]
        url = "{pg}"
        schema = "e2e_{id}"
        pool_size = 8
        [widget]
        token_secret = "{TOKEN_SECRET}"
        # The benchmarks open 10,000 streams at once (the instance's reconnect-storm limit
        # is a production default, not what these measure).
        instance_stream_opens_per_sec = 1000000
        instance_stream_open_burst = 1000000
        [[bots]]
        id = "{BOT}"
        api_keys = ["{KEY}"]
        overrides = {{ rate_limit_per_sec = 1000000, rate_limit_burst = 1000000 {bot_overrides} }}
        [[bots]]
        id = "{OTHER_BOT}"
        api_keys = ["{OTHER_KEY}"]
        "#
    );
    Settings::from_sources(Some(&toml), Vec::<(String, String)>::new()).expect("valid test settings")
}

/// A running ingress + worker.
pub struct System {
    pub settings: Settings,
    pub store: Store,
    pub base: String,
    pub http: reqwest::Client,
    worker: Option<WorkerHandle>,
    ingress_stop: CancellationToken,
    ingress: Vec<tokio::task::JoinHandle<()>>,
    publisher: Arc<Publisher>,
    /// Set once the queues and schema are gone.
    removed: bool,
}

impl System {
    /// Starts everything with default bot rules.
    pub async fn start() -> Self {
        Self::start_with("").await
    }

    /// Starts everything; `bot_overrides` as in [`settings`].
    pub async fn start_with(bot_overrides: &str) -> Self {
        let settings = settings(bot_overrides);
        let db = &settings.database;
        let store = Store::connect(&db.url, &db.schema, db.pool_size).expect("store");
        store.migrate().await.expect("migrate");
        let config = WorkerConfig {
            lease_ttl: Duration::from_secs(3),
            renew_every: Duration::from_millis(500),
            timer_poll_every: Duration::from_millis(100),
            ..WorkerConfig::default()
        };
        let worker = Worker::start(&settings, config, None).await.expect("worker starts");

        let publisher = Arc::new(Publisher::connect(ingress::publisher_config(&settings)));
        assert!(publisher.wait_until_connected(Duration::from_secs(10)).await, "broker reachable");
        let ingress_stop = CancellationToken::new();
        let mut system = Self {
            settings,
            store,
            base: String::new(),
            http: reqwest::Client::new(),
            worker: Some(worker),
            ingress_stop,
            ingress: Vec::new(),
            publisher,
            removed: false,
        };
        system.base = system.start_ingress().await;
        system.wait_for_shards().await;
        system
    }

    /// Starts one more ingress instance (its own socket and live queue) on
    /// the same broker and database; returns its base URL.
    pub async fn start_ingress(&mut self) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let b = &self.settings.broker;
        let hub = ingress::LiveHub::connect(&b.url, &b.prefix).await.expect("live hub");
        let state = ingress::AppState::with_live(
            self.settings.clone(),
            self.publisher.clone(),
            self.store.clone(),
            hub,
        );
        let app = ingress::router(state);
        let stop = self.ingress_stop.clone();
        self.ingress.push(tokio::spawn(async move {
            ingress::serve(listener, app, Duration::from_secs(2), stop).await.expect("serve");
        }));
        base
    }

    /// Opens the widget stream of `conversation` on the ingress at `base`,
    /// resuming after `last_event_id`; the status if it is not a 200.
    pub async fn stream(
        &self,
        base: &str,
        conversation: &str,
        token: &str,
        last_event_id: Option<u64>,
    ) -> Result<SseStream, u16> {
        let mut request =
            self.http.get(format!("{base}/widget/v1/conversations/{conversation}/events")).bearer_auth(token);
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id.to_string());
        }
        let response = request.send().await.expect("request");
        match response.status().as_u16() {
            200 => Ok(SseStream::new(response)),
            status => Err(status),
        }
    }

    /// Opens the widget stream the way a browser's `EventSource` must: the
    /// token as `?access_token=` (RFC 6750 §2.3), no `Authorization` header.
    /// The status if it is not a 200.
    pub async fn stream_with_query_token(
        &self,
        base: &str,
        conversation: &str,
        token: &str,
    ) -> Result<SseStream, u16> {
        let response = self
            .http
            .get(format!("{base}/widget/v1/conversations/{conversation}/events"))
            .query(&[("access_token", token)])
            .send()
            .await
            .expect("request");
        match response.status().as_u16() {
            200 => Ok(SseStream::new(response)),
            status => Err(status),
        }
    }

    /// Makes RabbitMQ close the live-hub connections of this test's ingress
    /// instances (connection name `{prefix}-live`), as a broker restart or a
    /// network failure would; returns how many it closed. Needs `rabbitmqctl`
    /// on the broker's host, i.e. a broker on this machine.
    pub async fn close_live_connections(&self) -> usize {
        let name = format!("{}-live", self.settings.broker.prefix);
        let pids = tokio::task::spawn_blocking(move || {
            // One connection a line: `<pid>\t[{"connection_name",longstr,<<"…">>}, …]`.
            // (The JSON formatter prints pids in a form close_connection refuses.)
            let listed = std::process::Command::new("rabbitmqctl")
                .args(["--silent", "list_connections", "pid", "client_properties"])
                .output()
                .expect("rabbitmqctl runs");
            assert!(listed.status.success(), "rabbitmqctl: {}", String::from_utf8_lossy(&listed.stderr));
            let quoted = format!("\"{name}\"");
            let pids: Vec<String> = String::from_utf8_lossy(&listed.stdout)
                .lines()
                .filter(|line| line.contains(&quoted))
                .filter_map(|line| line.split('\t').next().map(str::to_owned))
                .collect();
            for pid in &pids {
                let closed = std::process::Command::new("rabbitmqctl")
                    .args(["-q", "close_connection", pid, "e2e: live connection dropped on purpose"])
                    .output()
                    .expect("rabbitmqctl runs");
                assert!(closed.status.success(), "rabbitmqctl: {}", String::from_utf8_lossy(&closed.stderr));
            }
            pids
        })
        .await
        .expect("rabbitmqctl task");
        pids.len()
    }

    /// The value of the counter `name` (no labels) in the process's metrics
    /// (what an admin listener's `/metrics` shows); `0` if it was never incremented.
    pub async fn counter(&self, name: &str) -> u64 {
        let text = ingress::metrics::install().render();
        text.lines()
            .filter_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .find_map(|value| value.trim().parse::<f64>().ok())
            .map_or(0, |value| value as u64)
    }

    async fn wait_for_shards(&self) {
        let worker = self.worker.as_ref().expect("running");
        eventually("the worker holds every shard", Duration::from_secs(20), || async {
            (worker.shards().len() == usize::from(self.settings.broker.shards)).then_some(())
        })
        .await;
    }

    /// The key of one of the test bot's conversations.
    pub fn key(&self, conversation: &str) -> ConvKey {
        ConvKey::new(
            domain::BotId::parse(BOT).expect("id"),
            domain::ConversationId::parse(conversation).expect("id"),
        )
    }

    /// POSTs an agent event; returns (status, body).
    pub async fn agent(&self, body: Value) -> (u16, Value) {
        self.agent_with_key(body, None).await
    }

    /// POSTs an agent event with an `Idempotency-Key`.
    pub async fn agent_with_key(&self, body: Value, idempotency_key: Option<&str>) -> (u16, Value) {
        let mut request = self
            .http
            .post(format!("{}/agent/converse/send-message-to-widget", self.base))
            .header("Authorization", KEY)
            .header("botid", BOT)
            .json(&body);
        if let Some(key) = idempotency_key {
            request = request.header("Idempotency-Key", key);
        }
        read(request.send().await.expect("request")).await
    }

    /// POSTs an agent event with `Prefer: wait=<secs>`; returns (status, body).
    pub async fn agent_waiting(&self, body: Value, secs: u64) -> (u16, Value) {
        let request = self
            .http
            .post(format!("{}/agent/converse/send-message-to-widget", self.base))
            .header("Authorization", KEY)
            .header("Prefer", format!("wait={secs}"))
            .json(&body);
        read(request.send().await.expect("request")).await
    }

    /// Escalates a conversation; returns (escalationId, widgetToken).
    pub async fn escalate(&self, conversation: &str) -> (String, String) {
        let response = self
            .http
            .post(format!("{}/widget/v1/conversations/{conversation}/escalate", self.base))
            .header("Authorization", format!("Bearer {KEY}"))
            .header("botid", BOT)
            .json(&json!({"escalateTo": "billing"}))
            .send()
            .await
            .expect("request");
        let (status, body) = read(response).await;
        assert_eq!(status, 200, "escalate: {body}");
        (
            body["escalationId"].as_str().expect("id").to_owned(),
            body["widgetToken"].as_str().expect("token").to_owned(),
        )
    }

    /// The visitor writes; returns the status.
    pub async fn visitor(&self, conversation: &str, token: &str, text: &str) -> u16 {
        let response = self
            .http
            .post(format!("{}/widget/v1/conversations/{conversation}/messages", self.base))
            .bearer_auth(token)
            .json(&json!({ "text": text }))
            .send()
            .await
            .expect("request");
        read(response).await.0
    }

    /// The visitor ends the session; returns the status.
    pub async fn visitor_end(&self, conversation: &str, token: &str) -> u16 {
        let response = self
            .http
            .post(format!("{}/widget/v1/conversations/{conversation}/end", self.base))
            .bearer_auth(token)
            .send()
            .await
            .expect("request");
        read(response).await.0
    }

    /// Waits until `count` events of the conversation are recorded.
    pub async fn wait_events(&self, conversation: &str, count: usize) -> Vec<store::EventRecord> {
        let key = self.key(conversation);
        eventually(
            &format!("{count} events recorded for {conversation}"),
            Duration::from_secs(20),
            || async {
                let events = self.store.events_of(&key).await.expect("events");
                (events.len() >= count).then_some(events)
            },
        )
        .await
    }

    /// GETs `path` (from the root) with the API key `key`; returns (status, body).
    pub async fn get(&self, path: &str, key: &str) -> (u16, Value) {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .header("Authorization", key)
            .send()
            .await
            .expect("request");
        read(response).await
    }

    /// Stops everything and removes the test's queues and schema.
    pub async fn stop(mut self) {
        if let Some(worker) = self.worker.take() {
            worker.stop().await.expect("worker stops cleanly");
        }
        self.ingress_stop.cancel();
        for ingress in self.ingress.drain(..) {
            let _ = ingress.await;
        }
        self.publisher.shutdown().await;
        remove_resources(&self.settings).await;
        self.removed = true;
    }
}

/// A test that panicked never reaches [`System::stop`]: remove its queues and
/// schema anyway, so failures leave nothing behind on the shared services. The
/// test's runtime may be unwinding, so this runs on a thread and runtime of its own.
impl Drop for System {
    fn drop(&mut self) {
        if self.removed {
            return;
        }
        let settings = self.settings.clone();
        let cleanup = std::thread::spawn(move || {
            if let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
                runtime.block_on(remove_resources(&settings));
            }
        });
        let _ = cleanup.join();
    }
}

/// Deletes the test's topology and live exchange and drops its schema.
async fn remove_resources(settings: &Settings) {
    let b = &settings.broker;
    let connection = Connection::connect(&b.url, ConnectionProperties::default()).await.expect("amqp");
    let channel = connection.create_channel().await.expect("channel");
    Topology::new(b.prefix.clone(), b.shards, b.delivery_limit)
        .delete(&channel)
        .await
        .expect("delete topology");
    let live = broker::live_exchange(&b.prefix);
    let _ =
        channel.exchange_delete(live.as_str().into(), lapin::options::ExchangeDeleteOptions::default()).await;
    let _ = connection.close(200, "bye".into()).await;
    let db = &settings.database;
    let store = Store::connect(&db.url, &db.schema, 1).expect("store");
    store.drop_schema().await.expect("drop schema");
}

impl std::fmt::Debug for System {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("System").field("base", &self.base).field("schema", &self.store.schema()).finish()
    }
}

async fn read(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// Polls `probe` until it yields a value, or panics naming `what` at the deadline.
pub async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(start.elapsed() < deadline, "timed out after {deadline:?} waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
