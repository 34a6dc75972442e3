//! The service-wide sections of [`Settings`](crate::Settings), each with its defaults.
//!
//! Every struct is `#[serde(default)]`: a key missing from the file and the environment
//! keeps the default written in its `Default` impl (and in its field's doc).
//! Unknown keys are errors, so a typo never silently leaves a default in place.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};

use serde::{Deserialize, Serialize};

use domain::url_list::{split_urls, starts_with_scheme};

use crate::secret::{Secret, redact_url, redact_urls};

/// The HTTP edge (`[http]`): where the ingress listens and how it treats requests.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Address the HTTP server listens on. Default `0.0.0.0:8080`.
    pub bind: SocketAddr,
    /// Largest accepted request body in bytes; a larger one gets `413` (docs/protocol.md §2).
    /// Default 65536 (64 KiB). At least 1.
    pub body_limit_bytes: usize,
    /// Seconds in-flight requests get to finish after SIGINT/SIGTERM. Default 10. May be 0.
    pub shutdown_grace_secs: u64,
    /// Upper bound in seconds of `Prefer: wait=N` (docs/protocol.md §2): a larger `N` is clamped to it.
    /// Default 10. 0 disables waiting for verdicts.
    pub verdict_wait_max_secs: u64,
    /// Seconds between heartbeat comments on widget streams (docs/protocol.md §3), so proxies keep idle
    /// streams open. Default 15. At least 1.
    pub sse_heartbeat_secs: u64,
    /// Milliseconds `escalate` waits for the worker's verdict, so that escalating while an
    /// escalation is live answers with the live escalation's id (docs/protocol.md §5). Default 2000.
    /// 0 answers at once with the proposed id, which is then wrong in that case.
    pub escalate_wait_ms: u64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 8080)),
            body_limit_bytes: 64 * 1024,
            shutdown_grace_secs: 10,
            verdict_wait_max_secs: 10,
            sse_heartbeat_secs: 15,
            escalate_wait_ms: 2000,
        }
    }
}

/// RabbitMQ (`[broker]`): connection, topology naming and flow control.
///
/// `Debug` shows `url` with its password replaced by `***`.
#[derive(Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerConfig {
    /// AMQP URL (`amqp://` or `amqps://`), including credentials and vhost; for a RabbitMQ
    /// cluster, the URLs of its nodes: a TOML array, or one string with the URLs separated
    /// by commas (as `ESCALATIONS__BROKER__URL` gives them). Every connection goes to any
    /// node that answers and moves to another when its node goes away. Held as one string,
    /// the URLs joined by commas; [`BrokerConfig::urls`] splits it.
    /// Default `amqp://guest:guest@127.0.0.1:5672/%2f`.
    #[serde(serialize_with = "crate::show::redacted_urls", deserialize_with = "one_or_many_urls")]
    pub url: String,
    /// Prefix of every exchange and queue name, so several deployments (or tests) can share
    /// a vhost. 1–64 characters of `[A-Za-z0-9._-]`, not starting with `amq.` (reserved by
    /// RabbitMQ). Default `escalations`.
    pub prefix: String,
    /// Number of shard queues conversations are spread over (docs/protocol.md §6). Fixed for the life
    /// of a deployment: changing it moves conversations between shards. 1–1024. Default 32.
    pub shards: u16,
    /// Ignored; accepted so that existing configuration files still load. At least 1.
    ///
    /// Earlier versions gave the shard queues this broker-side delivery limit, and every
    /// message a killed worker had prefetched counted a delivery, so valid events were
    /// dead-lettered after a few incidents. Poison is now decided by the worker (an event
    /// that fails alone, docs/protocol.md §6) and every queue is declared with a limit no
    /// incident reaches; `escalations topology migrate` recreates queues declared before.
    pub delivery_limit: u32,
    /// AMQP channels the publisher spreads confirmed publishes over. At least 1. Default 8.
    pub publish_channels: usize,
    /// Unacknowledged deliveries a consumer may hold (`basic.qos` prefetch count).
    /// At least 1 (0 would mean unlimited in AMQP). Default 256.
    pub prefetch: u16,
    /// Milliseconds to wait for a publisher confirm before the publish counts as failed
    /// (and the HTTP caller gets `503`). At least 1. Default 5000.
    pub confirm_timeout_ms: u64,
    /// Replicas of each quorum queue (`x-quorum-initial-group-size` of the shard and
    /// dead-letter queues). RabbitMQ places a queue on every node when the cluster has fewer,
    /// so 3 also suits a single node. The same on every process; changing it for existing
    /// queues needs `escalations topology migrate --yes`. 1–255. Default 3.
    pub quorum_size: u16,
}

impl BrokerConfig {
    /// The node URLs of `url`: split at each comma that starts a new `scheme://` URL (a comma
    /// anywhere else, e.g. in a password, stays), trimmed, empty entries dropped. The same
    /// rule as the broker client's (`domain::url_list`).
    #[must_use]
    pub fn urls(&self) -> Vec<String> {
        split_urls(&self.url)
    }
}

/// `broker.url` as one string or an array of strings; an array is joined with commas.
fn one_or_many_urls<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    match OneOrMany::deserialize(deserializer) {
        Ok(OneOrMany::One(url)) => Ok(url),
        Ok(OneOrMany::Many(urls)) => {
            // Joined, an entry that is not a URL would read as the end of the one before.
            if let Some((i, url)) = urls
                .iter()
                .enumerate()
                .find(|(_, url)| !starts_with_scheme(url) || split_urls(url).len() != 1)
            {
                return Err(serde::de::Error::custom(format!(
                    "entry [{i}] ({url:?}) is not one scheme://… URL"
                )));
            }
            Ok(urls.iter().map(|u| u.trim()).collect::<Vec<_>>().join(","))
        }
        Err(_) => Err(serde::de::Error::custom("expected a URL or a list of URLs")),
    }
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            url: "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned(),
            prefix: "escalations".to_owned(),
            shards: 32,
            delivery_limit: 5,
            publish_channels: 8,
            prefetch: 256,
            confirm_timeout_ms: 5000,
            quorum_size: 3,
        }
    }
}

impl fmt::Debug for BrokerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BrokerConfig")
            .field("url", &redact_urls(&self.url))
            .field("prefix", &self.prefix)
            .field("shards", &self.shards)
            .field("delivery_limit", &self.delivery_limit)
            .field("publish_channels", &self.publish_channels)
            .field("prefetch", &self.prefetch)
            .field("confirm_timeout_ms", &self.confirm_timeout_ms)
            .field("quorum_size", &self.quorum_size)
            .finish()
    }
}

/// PostgreSQL (`[database]`).
///
/// `Debug` shows `url` with its password replaced by `***`.
#[derive(Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// Connection URL (`postgres://` or `postgresql://`).
    /// Default `postgres://postgres@127.0.0.1:5432/postgres`.
    #[serde(serialize_with = "crate::show::redacted_url")]
    pub url: String,
    /// Schema holding every table, so tests (or deployments) can share a database.
    /// A plain lower-case SQL identifier: `[a-z_][a-z0-9_]*`, at most 63 characters,
    /// not starting with `pg_`. Default `escalations`.
    pub schema: String,
    /// Maximum connections in the pool. At least 1. Default 16.
    pub pool_size: usize,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: "postgres://postgres@127.0.0.1:5432/postgres".to_owned(),
            schema: "escalations".to_owned(),
            pool_size: 16,
        }
    }
}

impl fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("url", &redact_url(&self.url))
            .field("schema", &self.schema)
            .field("pool_size", &self.pool_size)
            .finish()
    }
}

/// Widget tokens (`[widget]`): the signed, expiring tokens that open one conversation
/// of one bot to a visitor's widget (docs/protocol.md §3).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct WidgetConfig {
    /// Key that signs widget tokens. Required, at least 32 bytes, the same on every
    /// ingress instance. There is no default, not even for development: an unset key is
    /// a start-up error naming `widget.token_secret` (set it in the file or as
    /// `ESCALATIONS__WIDGET__TOKEN_SECRET`). Rotating it invalidates every open token.
    pub token_secret: Secret,
    /// Lifetime of a widget token in seconds. At least 1. Default 86400 (24 h, the
    /// escalation TTL).
    pub token_ttl_secs: u64,
    /// Visitor `messages` and `end` per second of one conversation (one widget token's),
    /// sustained (docs/protocol.md §3: visitors never spend the bot's budget or each other's).
    /// At least 1. Default 5.
    pub visitor_rate_per_sec: u32,
    /// Visitor `messages` and `end` one conversation may send at once. At least 1. Default 20.
    pub visitor_rate_burst: u32,
    /// Stream opens per second of one conversation, sustained (a reconnecting widget).
    /// At least 1. Default 1.
    pub stream_opens_per_sec: u32,
    /// Stream opens one conversation may make at once. At least 1. Default 10.
    pub stream_open_burst: u32,
    /// Stream opens per second of this ingress instance, all conversations together,
    /// sustained (a reconnect storm after a restart). At least 1. Default 500.
    pub instance_stream_opens_per_sec: u32,
    /// Stream opens this ingress instance accepts at once. At least 1. Default 2000.
    pub instance_stream_open_burst: u32,
}

impl Default for WidgetConfig {
    fn default() -> Self {
        Self {
            token_secret: Secret::default(),
            token_ttl_secs: 86_400,
            visitor_rate_per_sec: 5,
            visitor_rate_burst: 20,
            stream_opens_per_sec: 1,
            stream_open_burst: 10,
            instance_stream_opens_per_sec: 500,
            instance_stream_open_burst: 2000,
        }
    }
}

/// Outbound webhooks (`[webhooks]`): transport, address policy and the circuit breaker
/// (docs/protocol.md §4). Retry budgets are per bot, see [`BotDefaults`](crate::BotDefaults).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookConfig {
    /// Timeout of one delivery attempt in seconds (connect to end of response).
    /// At least 1. Default 10.
    pub timeout_secs: u64,
    /// Allow webhook URLs that are or resolve to loopback addresses (`127.0.0.0/8`, `::1`,
    /// `localhost`). For tests and local development only. Default `false`.
    pub allow_loopback: bool,
    /// Allow webhook URLs that are or resolve to private, link-local or shared addresses
    /// (`10/8`, `172.16/12`, `192.168/16`, `169.254/16`, `100.64/10`, `fc00::/7`,
    /// `fe80::/10`). Default `false`.
    pub allow_private: bool,
    /// Concurrent requests to one endpoint (scheme, host, port) at most, over every bot
    /// posting there. At least 1. Default 64: an endpoint's throughput is at most this
    /// many divided by its latency (64 at 20 ms is 3,200/s).
    pub max_concurrency_per_endpoint: usize,
    /// Consecutive failed attempts that open an endpoint's circuit breaker. At least 1.
    /// Default 5.
    pub breaker_failures: u32,
    /// The longest an open breaker waits before letting one probe through, in seconds.
    /// The first wait is 1 s (or this, if smaller); after ten failed probes it grows by a
    /// quarter per failed probe, up to this; once a probe succeeds the backlog moves at once. At least 1.
    /// Default 30.
    pub breaker_cooldown_secs: u64,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            timeout_secs: 10,
            allow_loopback: false,
            allow_private: false,
            max_concurrency_per_endpoint: 64,
            breaker_failures: 5,
            breaker_cooldown_secs: 30,
        }
    }
}

/// Logging (`[log]`).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// Output format: `json` in production, `pretty` for people. Default `pretty`.
    pub format: LogFormat,
    /// `tracing` filter directives (`RUST_LOG` syntax), e.g. `info,lapin=warn`.
    /// Must not be empty. Default `info`.
    pub filter: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { format: LogFormat::Pretty, filter: "info".to_owned() }
    }
}

/// How log lines are written; see [`LogConfig::format`].
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line, for log shippers.
    Json,
    /// Human-readable, coloured lines.
    #[default]
    Pretty,
}
