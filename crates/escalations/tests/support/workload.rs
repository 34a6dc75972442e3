//! The chaos scenarios' users (`tests/chaos.rs`): conversations escalated by
//! the bot platform, connected by an agent, then alternating agent messages
//! (each a widget event, docs/protocol.md §3.3) and visitor messages (each a
//! `widgetMessage` webhook, §4), each sent until it gets a `200`, as the
//! protocol asks of a client (`503`: retry with the same event id, §2.1).
//! Every conversation's widget stream is followed live, reconnecting with
//! `Last-Event-ID` to the other ingress whenever it breaks.
//!
//! What a conversation got `200`s for, in order, is what must arrive: on its
//! stream and at the webhook sink, each once, in that order
//! ([`compare`]).

#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::deployment::{BOT, KEY};

/// What the clients saw, over every request of a scenario.
#[derive(Default)]
pub struct Tally {
    pub accepted: AtomicUsize,
    pub unavailable: AtomicUsize,
    pub connection_errors: AtomicUsize,
    pub rate_limited: AtomicUsize,
    /// Any other answer to a valid request: a defect.
    pub other: Mutex<Vec<String>>,
    /// When each `200` and `503` came back.
    pub answers: Mutex<Vec<(Instant, u16)>>,
}

impl Tally {
    pub fn other(&self) -> Vec<String> {
        self.other.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// `200`s and `503`s answered between `from` and `to`.
    pub fn answered_between(&self, from: Instant, to: Instant) -> (usize, usize) {
        let answers = self.answers.lock().unwrap_or_else(PoisonError::into_inner);
        let within = answers.iter().filter(|(at, _)| *at >= from && *at <= to);
        within.fold((0, 0), |(ok, unavailable), (_, status)| match status {
            200 => (ok + 1, unavailable),
            _ => (ok, unavailable + 1),
        })
    }
}

/// The clients' side of a scenario.
#[derive(Clone)]
pub struct Clients {
    pub http: reqwest::Client,
    pub ingress: Vec<String>,
    pub tally: Arc<Tally>,
    /// Post every event a second time (to the other ingress) after its `200`.
    pub twice: bool,
}

impl Clients {
    pub fn new(ingress: Vec<String>) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .connect_timeout(Duration::from_secs(2))
            .build()
            .expect("client");
        Clients { http, ingress, tally: Arc::default(), twice: false }
    }

    /// Posts `body` to `path` (with `auth` as the `Authorization` header)
    /// until it is accepted, starting at ingress `first` and moving to the
    /// next one after a failure. Returns the `200`'s body.
    pub async fn post_until_accepted(&self, first: usize, path: &str, auth: &str, body: &Value) -> Value {
        let deadline = Instant::now() + Duration::from_secs(120);
        for attempt in first.. {
            assert!(Instant::now() < deadline, "{path} not accepted within 120 s");
            let base = &self.ingress[attempt % self.ingress.len()];
            let sent = self
                .http
                .post(format!("{base}{path}"))
                .header("authorization", auth)
                .header("botid", BOT)
                .json(body)
                .send()
                .await;
            let response = match sent {
                Ok(response) => response,
                Err(_) => {
                    self.tally.connection_errors.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            let status = response.status().as_u16();
            if matches!(status, 200 | 503) {
                self.tally
                    .answers
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push((Instant::now(), status));
            }
            match status {
                200 => {
                    self.tally.accepted.fetch_add(1, Ordering::Relaxed);
                    return response.json().await.unwrap_or_default();
                }
                503 => {
                    self.tally.unavailable.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                429 => {
                    self.tally.rate_limited.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                _ => {
                    let text = response.text().await.unwrap_or_default();
                    self.tally
                        .other
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(format!("{path}: {status} {text}"));
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        unreachable!("the loop above only returns")
    }

    /// [`post_until_accepted`](Self::post_until_accepted), and again to the
    /// next ingress when `twice`.
    async fn send(&self, first: usize, path: &str, auth: &str, body: &Value) -> Value {
        let answer = self.post_until_accepted(first, path, auth, body).await;
        if self.twice {
            self.post_until_accepted(first + 1, path, auth, body).await;
        }
        answer
    }
}

/// One conversation of the workload and what it got `200`s for.
#[derive(Debug, Clone, Default)]
pub struct Conversation {
    pub id: String,
    pub token: String,
    /// Widget events due, in order: `escalationRequested`,
    /// `escalationSuccess`, then `message:<text>` per agent message.
    pub widget: Vec<String>,
    /// Webhooks due, in order: `widgetEscalate`, then `widgetMessage:<text>`
    /// per visitor message.
    pub webhooks: Vec<String>,
}

/// Escalates and connects conversation `id`.
pub async fn open(clients: &Clients, index: usize, id: String) -> Conversation {
    let escalated = clients
        .send(index, &format!("/widget/v1/conversations/{id}/escalate"), KEY, &json!({"escalateTo": "sales"}))
        .await;
    let token = escalated["widgetToken"].as_str().expect("a widget token").to_owned();
    let connect = json!({"eventType": "escalationSuccess", "platformConversationId": id,
        "eventId": format!("{id}-connect"), "agent": "Ann"});
    clients.send(index, "/agent/converse/send-message-to-widget", KEY, &connect).await;
    Conversation {
        id,
        token,
        widget: vec!["escalationRequested".into(), "escalationSuccess".into()],
        webhooks: vec!["widgetEscalate".into()],
    }
}

fn agent_message(id: &str, k: usize) -> Value {
    json!({"eventType": "message", "platformConversationId": id, "eventId": format!("{id}-a{k}"), "text": format!("a{k}")})
}

fn visitor_message(id: &str, k: usize) -> Value {
    json!({"text": format!("v{k}"), "clientMessageId": format!("{id}-v{k}")})
}

/// Step `k` of a conversation: an agent message, then a visitor message.
pub async fn step(clients: &Clients, index: usize, conversation: &mut Conversation, k: usize) {
    let id = conversation.id.clone();
    let agent_path = "/agent/converse/send-message-to-widget";
    clients.send(index + k, agent_path, KEY, &agent_message(&id, k)).await;
    conversation.widget.push(format!("message:a{k}"));
    let bearer = format!("Bearer {}", conversation.token);
    let visitor_path = format!("/widget/v1/conversations/{id}/messages");
    clients.send(index + k + 1, &visitor_path, &bearer, &visitor_message(&id, k)).await;
    conversation.webhooks.push(format!("widgetMessage:v{k}"));
}

/// Sends every event of `conversation` once more (escalate, connect and
/// each step's two messages), long after they were applied: each must be
/// answered `200` and change nothing (docs/protocol.md §5: a duplicate).
pub async fn replay(clients: &Clients, index: usize, conversation: &Conversation) {
    let id = &conversation.id;
    let escalate = format!("/widget/v1/conversations/{id}/escalate");
    clients.post_until_accepted(index, &escalate, KEY, &json!({"escalateTo": "sales"})).await;
    let agent_path = "/agent/converse/send-message-to-widget";
    let connect = json!({"eventType": "escalationSuccess", "platformConversationId": id,
        "eventId": format!("{id}-connect"), "agent": "Ann"});
    clients.post_until_accepted(index, agent_path, KEY, &connect).await;
    let bearer = format!("Bearer {}", conversation.token);
    let visitor_path = format!("/widget/v1/conversations/{id}/messages");
    for k in 0..conversation.webhooks.len() - 1 {
        clients.post_until_accepted(index + k, agent_path, KEY, &agent_message(id, k)).await;
        clients.post_until_accepted(index + k, &visitor_path, &bearer, &visitor_message(id, k)).await;
    }
}

/// Runs conversation `index` (`{prefix}-{index}`): opens it, starts
/// following its stream, then steps every `pace` until `stop` or
/// `max_steps`.
pub async fn run_conversation(
    clients: Clients,
    prefix: String,
    index: usize,
    pace: Duration,
    max_steps: usize,
    stop: CancellationToken,
    opened: Arc<AtomicUsize>,
) -> (Conversation, Follower) {
    let mut conversation = open(&clients, index, format!("{prefix}-{index}")).await;
    let follower =
        Follower::start(clients.ingress.clone(), conversation.id.clone(), conversation.token.clone());
    opened.fetch_add(1, Ordering::SeqCst);
    for k in 0..max_steps {
        if stop.is_cancelled() {
            break;
        }
        step(&clients, index, &mut conversation, k).await;
        tokio::time::sleep(pace).await;
    }
    (conversation, follower)
}

/// One widget event as a stream carried it.
#[derive(Debug, Clone)]
pub struct WidgetEvent {
    pub sequence: u64,
    /// `event`, or `message:<text>` for a message.
    pub label: String,
    /// The ingress (its index) whose stream carried it.
    pub source: usize,
}

/// A conversation's widget stream, followed until stopped: it reconnects
/// (alternating ingress) with `Last-Event-ID` whenever the stream breaks.
pub struct Follower {
    pub events: Arc<Mutex<Vec<WidgetEvent>>>,
    pub reconnects: Arc<AtomicUsize>,
    stop: CancellationToken,
    done: Arc<AtomicBool>,
}

impl Follower {
    pub fn start(ingress: Vec<String>, conversation: String, token: String) -> Follower {
        let follower = Follower {
            events: Arc::default(),
            reconnects: Arc::default(),
            stop: CancellationToken::new(),
            done: Arc::default(),
        };
        let (events, reconnects, stop, done) = (
            follower.events.clone(),
            follower.reconnects.clone(),
            follower.stop.clone(),
            follower.done.clone(),
        );
        tokio::spawn(async move {
            tokio::select! {
                () = follow(ingress, conversation, token, events, reconnects) => {}
                () = stop.cancelled() => {}
            }
            done.store(true, Ordering::SeqCst);
        });
        follower
    }

    pub fn len(&self) -> usize {
        self.events.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    pub fn stop(&self) -> Vec<WidgetEvent> {
        self.stop.cancel();
        self.events.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

async fn follow(
    ingress: Vec<String>,
    conversation: String,
    token: String,
    events: Arc<Mutex<Vec<WidgetEvent>>>,
    reconnects: Arc<AtomicUsize>,
) {
    let http = reqwest::Client::builder().connect_timeout(Duration::from_secs(2)).build().expect("client");
    for attempt in 0.. {
        if attempt > 0 {
            reconnects.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let last = events.lock().unwrap_or_else(PoisonError::into_inner).last().map_or(0, |e| e.sequence);
        let source = attempt % ingress.len();
        let base = &ingress[source];
        let request = http
            .get(format!("{base}/widget/v1/conversations/{conversation}/events"))
            .bearer_auth(&token)
            .header("last-event-id", last.to_string());
        let Ok(mut response) = request.send().await else { continue };
        if response.status() != 200 {
            continue;
        }
        let mut buffer = String::new();
        let mut fields: (Option<u64>, Option<String>, Option<Value>) = (None, None, None);
        while let Ok(Some(chunk)) = response.chunk().await {
            buffer.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buffer.find('\n') {
                let line: String = buffer.drain(..=end).collect();
                let line = line.trim_end_matches(['\n', '\r']);
                if let Some(id) = line.strip_prefix("id:") {
                    fields.0 = id.trim().parse().ok();
                } else if let Some(event) = line.strip_prefix("event:") {
                    fields.1 = Some(event.trim().to_owned());
                } else if let Some(data) = line.strip_prefix("data:") {
                    fields.2 = serde_json::from_str(data.trim()).ok();
                } else if line.is_empty() {
                    if let (Some(sequence), Some(event)) = (fields.0, fields.1.take()) {
                        let text = fields.2.as_ref().and_then(|d| d["text"].as_str()).unwrap_or_default();
                        let label = if event == "message" { format!("message:{text}") } else { event };
                        events.lock().unwrap_or_else(PoisonError::into_inner).push(WidgetEvent {
                            sequence,
                            label,
                            source,
                        });
                    }
                    fields = (None, None, None);
                }
            }
        }
    }
}

/// How what arrived differs from what was due.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Diff {
    /// Due, never arrived.
    pub lost: usize,
    /// Arrived more than once (beyond the first).
    pub duplicated: usize,
    /// Arrived after something due later (adjacent inversions).
    pub reordered: usize,
    /// Arrived, never due (a rejection notice, a stray event).
    pub unexpected: usize,
}

impl std::ops::AddAssign for Diff {
    fn add_assign(&mut self, other: Diff) {
        self.lost += other.lost;
        self.duplicated += other.duplicated;
        self.reordered += other.reordered;
        self.unexpected += other.unexpected;
    }
}

/// Compares the labels that arrived with those due, in order.
pub fn compare(due: &[String], arrived: &[String]) -> Diff {
    let position = |label: &String| due.iter().position(|d| d == label);
    let mut diff = Diff::default();
    let mut seen = std::collections::HashSet::new();
    let mut previous: Option<usize> = None;
    for label in arrived {
        let Some(at) = position(label) else {
            diff.unexpected += 1;
            continue;
        };
        if !seen.insert(at) {
            diff.duplicated += 1;
            continue;
        }
        if previous.is_some_and(|p| at < p) {
            diff.reordered += 1;
        }
        previous = Some(at);
    }
    diff.lost = due.len() - seen.len();
    diff
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn every_kind_of_difference_is_counted() {
        let due = labels(&["a", "b", "c", "d"]);
        assert_eq!(compare(&due, &due), Diff::default());
        let diff = compare(&due, &labels(&["a", "c", "b", "b", "x"]));
        assert_eq!(diff, Diff { lost: 1, duplicated: 1, reordered: 1, unexpected: 1 });
    }
}
