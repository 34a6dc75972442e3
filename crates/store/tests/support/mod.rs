//! Shared by the integration tests: a store in a fresh schema, dropped at the
//! end even when the test fails, and realistic rows made by the state machine.

#![allow(dead_code)]

use std::future::Future;

use chrono::{DateTime, TimeDelta, Utc};
use domain::webhook::WebhookEnvelope;
use domain::widget::WidgetEnvelope;
use domain::{
    BotId, Command, Context, Conversation, ConversationId, Effect, EscalationId, EventId, Input, Rules,
    TimerKind, Transition,
};
use store::{ConvKey, Store};

/// `DATABASE_URL`, or the local test database.
pub fn database_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A store in a schema of its own (`t_<uuid>`), not migrated yet.
pub fn fresh_store() -> Store {
    let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
    Store::connect(&database_url(), &schema, 8).expect("connect")
}

/// Runs `test` with a migrated store in a fresh schema, then drops the schema,
/// also when `test` panics (the panic is then re-raised).
pub async fn with_store<F, Fut>(test: F)
where
    F: FnOnce(Store) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let store = fresh_store();
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

pub fn key(bot: &str, conversation: &str) -> ConvKey {
    ConvKey::new(
        BotId::parse(bot).expect("bot id"),
        ConversationId::parse(conversation).expect("conversation id"),
    )
}

pub fn event_id(id: &str) -> EventId {
    EventId::parse(id).expect("event id")
}

pub fn escalation_id(id: &str) -> EscalationId {
    EscalationId::parse(id).expect("escalation id")
}

/// A fixed instant, microsecond-aligned like PostgreSQL's timestamps.
pub fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000, 123_456_000).expect("time")
}

pub fn at(seconds: i64) -> DateTime<Utc> {
    t0() + TimeDelta::seconds(seconds)
}

pub fn escalate(event: &str, escalation: &str) -> Command {
    Command {
        event_id: event_id(event),
        input: Input::Escalate {
            escalation_id: escalation_id(escalation),
            escalate_to: Some("sales".to_owned()),
            metadata: None,
            transcript: None,
        },
    }
}

/// Runs the state machine with the default rules.
pub fn step(state: &Conversation, command: &Command, now: DateTime<Utc>) -> Transition {
    domain::step(state, command, &Context { now, rules: &Rules::default() })
}

/// The effects of a transition, split by destination.
#[derive(Debug, Default)]
pub struct Effects {
    pub widget: Vec<WidgetEnvelope>,
    pub webhooks: Vec<WebhookEnvelope>,
    pub set_timers: Vec<(EscalationId, TimerKind, DateTime<Utc>)>,
    pub cancel_timers: Vec<TimerKind>,
}

pub fn split(effects: &[Effect]) -> Effects {
    let mut out = Effects::default();
    for effect in effects {
        match effect {
            Effect::Widget(envelope) => out.widget.push(envelope.clone()),
            Effect::Webhook(envelope) => out.webhooks.push(envelope.clone()),
            Effect::SetTimer { escalation_id, kind, at } => {
                out.set_timers.push((escalation_id.clone(), *kind, *at))
            }
            Effect::CancelTimer { kind, .. } => out.cancel_timers.push(*kind),
        }
    }
    out
}
