//! Test support: an ingress wired to the real RabbitMQ (`AMQP_URL`, default
//! `amqp://guest:guest@127.0.0.1:5672/%2f`) under a queue prefix of its own,
//! `t-{uuid}`, whose topology is deleted when the [`TestApp`] is dropped, even
//! if the test panicked. A test that stops its broker runs on a private node
//! instead (`TestApp::start_with(test_settings_on(url))`, see
//! `tests/broker_outage.rs`).

#![allow(dead_code)] // each test binary uses its own part of this module

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use broker::{Publisher, Topology, shard_for};
use futures::StreamExt;
use http::{HeaderMap, Request, StatusCode};
use ingress::{AppState, publisher_config, router};
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use serde_json::Value;
use settings::Settings;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// The main test bot, effectively unlimited.
pub const BOT: &str = "acme";
pub const KEY: &str = "acme-key-0123456789";
/// A second bot, to check one bot's key never works for another.
pub const OTHER_BOT: &str = "other";
pub const OTHER_KEY: &str = "other-key-0123456789";
/// A bot with a tiny rate limit: 1/s, burst 2.
pub const SLOW_BOT: &str = "slow";
pub const SLOW_KEY: &str = "slow-key-0123456789";
pub const TOKEN_SECRET: &str = "test-widget-token-secret-of-32-bytes-or-more";
pub const BODY_LIMIT: usize = 2048;
pub const SHARDS: u16 = 4;

pub fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

/// Validated settings with a fresh prefix, on the machine's broker.
pub fn test_settings() -> Settings {
    test_settings_on(&amqp_url())
}

/// Validated settings with a fresh prefix, on the broker at `url` (a
/// private node's, for a test that stops it).
pub fn test_settings_on(url: &str) -> Settings {
    let prefix = format!("t-{}", uuid::Uuid::new_v4().simple());
    let toml = format!(
        r#"
        [http]
        body_limit_bytes = {BODY_LIMIT}
        shutdown_grace_secs = 2

        [broker]
        url = "{url}"
        prefix = "{prefix}"
        shards = {SHARDS}
        publish_channels = 2
        confirm_timeout_ms = 5000

        [widget]
        token_secret = "{TOKEN_SECRET}"
        token_ttl_secs = 3600

        [[bots]]
        id = "{BOT}"
        api_keys = ["{KEY}"]
        overrides = {{ rate_limit_per_sec = 1000000, rate_limit_burst = 1000000 }}

        [[bots]]
        id = "{OTHER_BOT}"
        api_keys = ["{OTHER_KEY}"]

        [[bots]]
        id = "{SLOW_BOT}"
        api_keys = ["{SLOW_KEY}"]
        overrides = {{ rate_limit_per_sec = 1, rate_limit_burst = 2 }}
        "#,
    );
    Settings::from_sources(Some(&toml), Vec::new()).expect("test settings are valid")
}

/// One ingress (router in-process), its publisher, and a lapin channel to
/// inspect its queues.
pub struct TestApp {
    pub settings: Settings,
    pub topology: Topology,
    pub publisher: Arc<Publisher>,
    pub router: Router,
    pub connection: Connection,
    pub channel: lapin::Channel,
    consumers: tokio::sync::Mutex<HashMap<u16, (lapin::Channel, lapin::Consumer)>>,
    _cleanup: TopologyCleanup,
}

impl TestApp {
    pub async fn start() -> Self {
        Self::start_with(test_settings()).await
    }

    pub async fn start_with(settings: Settings) -> Self {
        let config = publisher_config(&settings);
        let topology = config.topology.clone();
        let publisher = Arc::new(Publisher::connect(config));
        assert!(publisher.wait_until_connected(Duration::from_secs(30)).await, "publisher connects");
        let router = router(AppState::new(settings.clone(), publisher.clone()));
        let connection = Connection::connect(&settings.broker.url, ConnectionProperties::default())
            .await
            .expect("test connection");
        let channel = connection.create_channel().await.expect("test channel");
        let _cleanup = TopologyCleanup { url: settings.broker.url.clone(), topology: topology.clone() };
        Self {
            settings,
            topology,
            publisher,
            router,
            connection,
            channel,
            consumers: Default::default(),
            _cleanup,
        }
    }

    /// Replaces the inspection connection and channel (after a broker restart
    /// killed them). Consumers opened by [`take`](Self::take) are forgotten.
    pub async fn reconnect_inspector(&mut self) {
        self.connection = Connection::connect(&self.settings.broker.url, ConnectionProperties::default())
            .await
            .expect("test connection");
        self.channel = self.connection.create_channel().await.expect("test channel");
        self.consumers.get_mut().clear();
    }

    /// Sends `request` through the router in-process.
    pub async fn send(&self, request: Request<Body>) -> Reply {
        let response = self.router.clone().oneshot(request).await.expect("router is infallible");
        Reply::read(response).await
    }

    /// Ready messages of every shard queue, in shard order.
    pub async fn depths(&self) -> Vec<u32> {
        let mut depths = Vec::new();
        for shard in 0..self.topology.shards {
            let options = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
            let queue = self
                .channel
                .queue_declare(self.topology.shard_queue(shard).into(), options, FieldTable::default())
                .await
                .expect("shard queue exists");
            depths.push(queue.message_count());
        }
        depths
    }

    /// Asserts that no shard queue holds a message (docs/protocol.md §6: bad input
    /// publishes nothing).
    pub async fn assert_nothing_published(&self, context: &str) {
        assert_eq!(self.depths().await, vec![0; usize::from(self.topology.shards)], "{context}");
    }

    /// Takes (and acks) the next message of `shard`, waiting up to 10 s.
    ///
    /// Shard queues have a single active consumer, which rules out
    /// `basic.get`; one consumer per shard is kept for the whole test so
    /// messages come out in queue order. Delivered messages no longer count
    /// as ready, so check [`depths`](Self::depths) before taking.
    pub async fn take(&self, shard: u16) -> Delivery {
        let mut consumers = self.consumers.lock().await;
        if let Entry::Vacant(slot) = consumers.entry(shard) {
            let channel = self.connection.create_channel().await.expect("consumer channel");
            channel.basic_qos(500, BasicQosOptions::default()).await.expect("qos");
            let consumer = channel
                .basic_consume(
                    self.topology.shard_queue(shard).into(),
                    format!("test-{shard}").into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await
                .expect("consume");
            slot.insert((channel, consumer));
        }
        let (_, consumer) = consumers.get_mut(&shard).expect("inserted above");
        let next = tokio::time::timeout(Duration::from_secs(10), consumer.next()).await;
        let delivery = next
            .unwrap_or_else(|_| panic!("no message in shard {shard} within 10 s"))
            .expect("consumer open")
            .expect("delivery");
        delivery.acker.ack(BasicAckOptions::default()).await.expect("ack");
        delivery
    }

    /// The next `count` messages of `shard`, in queue order.
    pub async fn take_many(&self, shard: u16, count: usize) -> Vec<Delivery> {
        let mut out = Vec::with_capacity(count);
        for _ in 0..count {
            out.push(self.take(shard).await);
        }
        out
    }

    /// The shard of `conversation` of `bot`.
    pub fn shard(&self, bot: &str, conversation: &str) -> u16 {
        shard_for(bot, conversation, self.topology.shards)
    }

    /// Serves the router on a real socket at 127.0.0.1; cancelled on drop of
    /// the returned guard.
    pub async fn serve(&self) -> (SocketAddr, ServerGuard) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let token = CancellationToken::new();
        let server = ingress::serve(listener, self.router.clone(), Duration::from_secs(2), token.clone());
        tokio::spawn(server);
        (addr, ServerGuard(token))
    }
}

/// Deletes a topology (queues, messages, exchanges) of the machine's broker
/// when dropped, even while a failed test unwinds.
pub struct TopologyGuard(pub Topology);

impl Drop for TopologyGuard {
    fn drop(&mut self) {
        delete_on_drop(amqp_url(), self.0.clone());
    }
}

/// [`TopologyGuard`] on the broker at `url` (a [`TestApp`]'s, which may be
/// a private node).
struct TopologyCleanup {
    url: String,
    topology: Topology,
}

impl Drop for TopologyCleanup {
    fn drop(&mut self) {
        delete_on_drop(self.url.clone(), self.topology.clone());
    }
}

/// Deleting needs async I/O, and Drop may run while the test's runtime is
/// unwinding, so it runs on a runtime of its own.
fn delete_on_drop(url: String, topology: Topology) {
    let cleanup = std::thread::spawn(move || delete_topology(&url, topology));
    let _ = cleanup.join();
}

fn delete_topology(url: &str, topology: Topology) {
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
    runtime.block_on(async {
        let Ok(connection) = Connection::connect(url, ConnectionProperties::default()).await else {
            eprintln!("cleanup: cannot connect to delete {}", topology.prefix);
            return;
        };
        if let Ok(channel) = connection.create_channel().await
            && let Err(error) = topology.delete(&channel).await
        {
            eprintln!("cleanup: deleting {}: {error}", topology.prefix);
        }
        let _ = connection.close(200, "OK".into()).await;
    });
}

/// Stops a server started by [`TestApp::serve`] when dropped.
pub struct ServerGuard(pub CancellationToken);

impl Drop for ServerGuard {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub json: Value,
}

impl Reply {
    async fn read(response: http::Response<Body>) -> Self {
        let (parts, body) = response.into_parts();
        let bytes = axum::body::to_bytes(body, usize::MAX).await.expect("body");
        let json = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        Self { status: parts.status, headers: parts.headers, json }
    }

    /// Asserts the status and the `error` code of a JSON error body.
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status.as_u16(), status, "{self:?}");
        assert_eq!(self.json["error"], code, "{self:?}");
        assert!(self.json["message"].is_string(), "error bodies have a message: {self:?}");
    }

    /// `(field, code)` of each detail of a 400.
    pub fn details(&self) -> Vec<(String, String)> {
        self.json["details"]
            .as_array()
            .unwrap_or_else(|| panic!("no details in {self:?}"))
            .iter()
            .map(|d| {
                (d["field"].as_str().expect("field").to_owned(), d["code"].as_str().expect("code").to_owned())
            })
            .collect()
    }
}

/// A POST with a JSON body and the given extra headers.
pub fn post_json(uri: &str, headers: &[(&str, &str)], body: &Value) -> Request<Body> {
    post_raw(uri, &[&[("content-type", "application/json")], headers].concat(), body.to_string())
}

/// A POST with exactly these headers and body.
pub fn post_raw(uri: &str, headers: &[(&str, &str)], body: impl Into<Body>) -> Request<Body> {
    let mut request = Request::post(uri);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.body(body.into()).expect("request")
}

/// A string header of a delivery.
pub fn header(properties: &BasicProperties, name: &str) -> String {
    let headers = properties.headers().as_ref().expect("headers");
    match headers.inner().get(name) {
        Some(AMQPValue::LongString(s)) => String::from_utf8(s.as_bytes().to_vec()).expect("utf-8"),
        other => panic!("header {name}: {other:?}"),
    }
}

pub const SEND: &str = "/agent/converse/send-message-to-widget";

pub fn widget_uri(conversation: &str, action: &str) -> String {
    format!("/widget/v1/conversations/{conversation}/{action}")
}
