//! The simulator's side of the agent API: `POST
//! /agent/converse/send-message-to-widget` (docs/protocol.md §2), each event
//! with an `Idempotency-Key` of its own, so a retry after a timeout or a `503`
//! is applied once.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

/// Attempts per event before it is given up (logged).
const ATTEMPTS: u32 = 6;

/// Counters an operator (or a load test) reads from the simulator's log.
#[derive(Debug, Default)]
pub struct Counters {
    /// `widgetEscalate` webhooks taken.
    pub escalations: AtomicU64,
    /// Webhooks refused (bad signature, stale, not JSON).
    pub refused: AtomicU64,
    /// Agent events accepted by the ingress.
    pub posted: AtomicU64,
    /// Agent events given up after every attempt, or refused with a 4xx.
    pub failed: AtomicU64,
}

/// Posts agent events for one bot.
#[derive(Debug, Clone)]
pub struct AgentApi {
    client: reqwest::Client,
    url: String,
    bot: String,
    key: String,
    /// Shared by every conversation.
    pub counters: Arc<Counters>,
}

impl AgentApi {
    /// A client of the ingress at `base` (e.g. `http://127.0.0.1:8080`) for `bot`.
    pub fn new(base: &str, bot: &str, key: &str) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
        Ok(Self {
            client,
            url: format!("{}/agent/converse/send-message-to-widget", base.trim_end_matches('/')),
            bot: bot.to_owned(),
            key: key.to_owned(),
            counters: Arc::default(),
        })
    }

    /// Posts one event of `conversation`'s escalation `escalation`: `fields`
    /// (an object) with the event type, conversation and escalation added.
    /// Retries transport errors, `429` and `5xx` with backoff, honouring
    /// `Retry-After`; returns whether the ingress accepted it.
    pub async fn post(
        &self,
        conversation: &str,
        escalation: Option<&str>,
        kind: &str,
        fields: Value,
    ) -> bool {
        let mut body = json!({"eventType": kind, "platformConversationId": conversation});
        if let (Some(object), Value::Object(extra)) = (body.as_object_mut(), fields) {
            object.extend(extra);
            if let Some(id) = escalation {
                object.insert("escalationId".into(), json!(id));
            }
        }
        let key = uuid::Uuid::now_v7().to_string();
        let mut backoff = Duration::from_millis(200);
        for attempt in 1..=ATTEMPTS {
            let sent = self
                .client
                .post(&self.url)
                .header("authorization", &self.key)
                .header("botid", &self.bot)
                .header("idempotency-key", &key)
                .json(&body)
                .send()
                .await;
            let wait = match sent {
                Ok(response) if response.status().is_success() => {
                    self.counters.posted.fetch_add(1, Ordering::Relaxed);
                    return true;
                }
                Ok(response) if response.status() == 429 || response.status().is_server_error() => {
                    retry_after(&response).unwrap_or(backoff)
                }
                Ok(response) => {
                    let status = response.status();
                    let text = response.text().await.unwrap_or_default();
                    tracing::warn!(conversation, kind, %status, body = %text, "agent event refused");
                    self.counters.failed.fetch_add(1, Ordering::Relaxed);
                    return false;
                }
                Err(error) => {
                    tracing::debug!(conversation, kind, attempt, error = %error.without_url(), "agent event not sent");
                    backoff
                }
            };
            tokio::time::sleep(wait).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
        tracing::warn!(conversation, kind, "agent event given up after {ATTEMPTS} attempts");
        self.counters.failed.fetch_add(1, Ordering::Relaxed);
        false
    }
}

fn retry_after(response: &reqwest::Response) -> Option<Duration> {
    let secs: u64 = response.headers().get("retry-after")?.to_str().ok()?.trim().parse().ok()?;
    Some(Duration::from_secs(secs.clamp(1, 30)))
}
