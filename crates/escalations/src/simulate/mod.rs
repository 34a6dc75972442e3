//! `escalations simulate`: a contact centre in a box, the demo's counterpart
//! and a load generator's (docs/protocol.md §4 and §2 from the other side).
//!
//! It receives the bot's webhooks, verifies each Standard Webhooks signature
//! (a bad one gets `401`), and for each `widgetEscalate` plays a [`Script`]:
//! queue updates, `escalationSuccess` with an agent name, a greeting, an echo
//! of every `widgetMessage`, and `agentDisconnect` when the visitor says "bye"
//! or the session time is up. `widgetEndSession` stops the conversation's
//! script. A redelivered webhook (same `webhook-id`) is answered `200` and
//! not played twice.
//!
//! - [`verify`]: the signature and timestamp checks.
//! - [`agent`]: [`AgentApi`], posting agent events with retries.
//! - [`script`]: [`Script`] and the per-conversation player.

pub mod agent;
pub mod script;
pub mod verify;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use domain::webhook::{WebhookEvent, WebhookPayload};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use agent::AgentApi;
pub use script::Script;

/// `webhook-id`s remembered for de-duplication before the set is cleared.
const SEEN_IDS: usize = 200_000;

/// Everything the simulator runs with.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where it listens for webhooks (any path).
    pub bind: SocketAddr,
    /// The HMAC keys of the bot's webhook secrets.
    pub keys: Vec<Vec<u8>>,
    /// The agent API it posts to.
    pub api: AgentApi,
    /// What the agent does.
    pub script: Script,
}

struct Conversation {
    inbox: mpsc::Sender<script::VisitorMessage>,
    cancel: CancellationToken,
}

struct Simulator {
    options: Options,
    shutdown: CancellationToken,
    conversations: Mutex<HashMap<String, Conversation>>,
    seen: Mutex<HashSet<String>>,
}

/// Binds `options.bind` and serves until `shutdown`.
pub async fn run(options: Options, shutdown: CancellationToken) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(options.bind)
        .await
        .with_context(|| format!("simulator: cannot listen on {}", options.bind))?;
    serve(listener, options, shutdown).await
}

/// Serves webhooks on `listener` until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    options: Options,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    tracing::info!(addr = %listener.local_addr()?, "contact-centre simulator listening for webhooks");
    let counters = options.api.counters.clone();
    let simulator = Arc::new(Simulator {
        options,
        shutdown: shutdown.clone(),
        conversations: Mutex::default(),
        seen: Mutex::default(),
    });
    let app = Router::new().fallback(webhook).with_state(simulator);
    let report = tokio::spawn(report(counters, shutdown.clone()));
    let stop = shutdown.clone();
    let served =
        axum::serve(listener, app).with_graceful_shutdown(async move { stop.cancelled().await }).await;
    report.abort();
    served.context("simulator: HTTP server failed")
}

/// Logs the counters every 10 s while they change (for load runs).
async fn report(counters: Arc<agent::Counters>, shutdown: CancellationToken) {
    let mut last = (0, 0, 0, 0);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(10)) => {}
        }
        let now = (
            counters.escalations.load(Ordering::Relaxed),
            counters.posted.load(Ordering::Relaxed),
            counters.failed.load(Ordering::Relaxed),
            counters.refused.load(Ordering::Relaxed),
        );
        if now != last {
            let (escalations, posted, failed, refused) = now;
            tracing::info!(escalations, posted, failed, refused, "simulator totals");
            last = now;
        }
    }
}

/// Any POST: one webhook.
async fn webhook(State(sim): State<Arc<Simulator>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let now = chrono::Utc::now().timestamp();
    let counters = &sim.options.api.counters;
    let id = match verify::verify(&sim.options.keys, &headers, &body, now) {
        Ok(id) => id,
        Err(refused) => {
            tracing::warn!(%refused, "webhook refused");
            counters.refused.fetch_add(1, Ordering::Relaxed);
            return StatusCode::UNAUTHORIZED;
        }
    };
    let payload: WebhookPayload = match serde_json::from_slice(&body) {
        Ok(payload) => payload,
        Err(error) => {
            tracing::warn!(%error, "webhook body is not a webhook payload");
            counters.refused.fetch_add(1, Ordering::Relaxed);
            return StatusCode::BAD_REQUEST;
        }
    };
    {
        let mut seen = sim.seen.lock().unwrap_or_else(PoisonError::into_inner);
        if seen.len() >= SEEN_IDS {
            seen.clear();
        }
        if !seen.insert(id) {
            return StatusCode::OK; // a redelivery: already played
        }
    }
    let conversation = payload.data.platform_conversation_id.as_str().to_owned();
    let escalation = payload.data.envelope.escalation_id.as_ref().map(|e| e.as_str().to_owned());
    match payload.data.envelope.event {
        WebhookEvent::WidgetEscalate { .. } => {
            counters.escalations.fetch_add(1, Ordering::Relaxed);
            sim.start(conversation, escalation);
        }
        WebhookEvent::WidgetMessage { text, .. } => sim.visitor_says(&conversation, text),
        WebhookEvent::WidgetEndSession { reason } => {
            tracing::debug!(conversation, ?reason, "session ended by the service");
            sim.stop(&conversation);
        }
        WebhookEvent::EventRejected { event_id, code, .. } => {
            tracing::info!(conversation, event_id = event_id.as_str(), ?code, "an agent event was rejected");
        }
    }
    StatusCode::OK
}

impl Simulator {
    /// Starts the conversation's script (replacing one still running).
    fn start(self: &Arc<Self>, conversation: String, escalation: Option<String>) {
        let (inbox, receiver) = mpsc::channel(64);
        let cancel = self.shutdown.child_token();
        let previous = self
            .conversations
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(conversation.clone(), Conversation { inbox, cancel: cancel.clone() });
        if let Some(previous) = previous {
            previous.cancel.cancel();
        }
        tracing::info!(conversation, "escalation received; playing the script");
        let (sim, api, script) = (self.clone(), self.options.api.clone(), self.options.script.clone());
        tokio::spawn(async move {
            script::play(api, script, conversation.clone(), escalation, receiver, cancel.clone()).await;
            let mut conversations = sim.conversations.lock().unwrap_or_else(PoisonError::into_inner);
            // Only if it is still this run's entry (not a newer escalation's).
            if conversations
                .get(&conversation)
                .is_some_and(|c| c.cancel.is_cancelled() || c.inbox.is_closed())
            {
                conversations.remove(&conversation);
            }
        });
    }

    fn visitor_says(&self, conversation: &str, text: String) {
        let conversations = self.conversations.lock().unwrap_or_else(PoisonError::into_inner);
        match conversations.get(conversation) {
            Some(c) => {
                if c.inbox.try_send(script::VisitorMessage { text }).is_err() {
                    tracing::warn!(conversation, "visitor message dropped: the agent is too far behind");
                }
            }
            None => tracing::debug!(conversation, "visitor message for no running script"),
        }
    }

    fn stop(&self, conversation: &str) {
        if let Some(c) =
            self.conversations.lock().unwrap_or_else(PoisonError::into_inner).remove(conversation)
        {
            c.cancel.cancel();
        }
    }
}
