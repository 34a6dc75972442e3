//! The agent API's read side (docs/protocol.md §2): `GET /agent/converse/conversations/{id}`
//! and `GET /agent/converse/events/{eventId}`.
//!
//! Both are scoped to the bot of the API key: every query is keyed by that bot,
//! so another bot's conversation or event is simply not found (`404`), the
//! same answer as one that does not exist. They read PostgreSQL through the
//! optional store of [`AppState`]; the write path never does.
//!
//! An event id the store has no row for is `404 unknown_event`: the ingress
//! keeps no record of what it accepted, so "accepted, not applied yet" and
//! "never sent" look the same here. A caller that needs the verdict of its own
//! request uses `Prefer: wait=N` on the POST instead.

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use domain::{BotId, ConversationId, EventId, Verdict};
use serde_json::{Value, json};
use store::{ConvKey, EventRecord};
use tracing::Span;

use crate::app::AppState;
use crate::auth::{authenticate_bot, bot_id_of};
use crate::error::ApiError;
use crate::openapi::responses::BotKeyRefused;
use crate::openapi::schemas::{ConversationView, ErrorBody, EventView};
use crate::rate_limit::Scope;

/// How many of the latest events the conversation view lists.
pub const RECENT_EVENTS: u32 = 20;

/// The calling bot's id, checked like the agent route (`401`, `429`).
fn caller(app: &AppState, headers: &HeaderMap) -> Result<BotId, ApiError> {
    let bot = authenticate_bot(app.settings(), headers)?;
    Span::current().record("bot_id", bot.id.as_str());
    app.check_rate(&bot.id, Scope::Agent)?;
    bot_id_of(bot)
}

/// The state of one of the caller's conversations and its recent events.
#[utoipa::path(get, path = "/agent/converse/conversations/{id}", tag = "agent", operation_id = "getConversation",
    summary = "A conversation's state and latest events (bot API key)",
    params(("id" = String, Path, description = "The conversation (platformConversationId), 1–128 characters.")),
    responses(
        (status = 200, description = "The conversation.", body = ConversationView),
        (status = 404, description = "The bot has no conversation with this id.", body = ErrorBody),
        BotKeyRefused,
        (status = 429, description = "Over the bot's rate limit; see `Retry-After`.", body = ErrorBody),
        (status = 503, description = "The database is unreachable: retry.", body = ErrorBody),
    ),
    security(("botApiKey" = [])))]
#[tracing::instrument(skip_all, fields(bot_id))]
pub async fn conversation(
    State(app): State<AppState>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let bot = caller(&app, &headers)?;
    // An id that could never be stored (or not even decoded) cannot name a conversation.
    let Ok(Path(id)) = path else { return Err(ApiError::UnknownConversation) };
    let conversation = ConversationId::parse(id).map_err(|_| ApiError::UnknownConversation)?;
    let store = app.store()?;
    let key = ConvKey::new(bot, conversation);
    let stored =
        store.conversation(&key).await.map_err(ApiError::store)?.ok_or(ApiError::UnknownConversation)?;
    let events = store.recent_events(&key, RECENT_EVENTS).await.map_err(ApiError::store)?;

    let state = &stored.state;
    let escalation = state.escalation.as_ref();
    let agent =
        escalation.and_then(|e| e.agent.as_ref()).map(|a| json!({"name": a.name, "avatar": a.avatar}));
    let queue = escalation
        .and_then(|e| e.queue.as_ref())
        .map(|q| json!({"position": q.position, "waitingTime": q.waiting_time}));
    Ok(Json(json!({
        "platformConversationId": key.conversation_id.as_str(),
        "phase": stored.phase.as_str(),
        "escalationId": escalation.map(|e| e.id.as_str()),
        "outcome": escalation.and_then(|e| e.outcome.as_ref()),
        "agent": agent,
        "queue": queue,
        "heldMessages": escalation.map_or(0, |e| e.held.len()),
        "lastWidgetSequence": state.widget_sequence,
        "lastWebhookSequence": state.webhook_sequence,
        "updatedAt": stored.updated_at,
        "events": events.iter().map(event_json).collect::<Vec<_>>(),
    })))
}

/// The verdict on one of the caller's events.
#[utoipa::path(get, path = "/agent/converse/events/{id}", tag = "agent", operation_id = "getEvent",
    summary = "The verdict on one of the bot's events (bot API key)",
    params(("id" = String, Path, description = "The event id.")),
    responses(
        (status = 200, description = "The event and its verdict.", body = EventView),
        (status = 404, description = "No applied event with this id (it may not be applied yet).", body = ErrorBody),
        BotKeyRefused,
        (status = 429, description = "Over the bot's rate limit; see `Retry-After`.", body = ErrorBody),
        (status = 503, description = "The database is unreachable: retry.", body = ErrorBody),
    ),
    security(("botApiKey" = [])))]
#[tracing::instrument(skip_all, fields(bot_id))]
pub async fn event(
    State(app): State<AppState>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let bot = caller(&app, &headers)?;
    let Ok(Path(id)) = path else { return Err(ApiError::UnknownEvent) };
    let event_id = EventId::parse(id).map_err(|_| ApiError::UnknownEvent)?;
    let store = app.store()?;
    let record =
        store.event(&bot, &event_id).await.map_err(ApiError::store)?.ok_or(ApiError::UnknownEvent)?;
    Ok(Json(event_json(&record)))
}

/// One recorded event as the query endpoints show it.
fn event_json(record: &EventRecord) -> Value {
    let mut value = json!({
        "eventId": record.event_id.as_str(),
        "platformConversationId": record.key.conversation_id.as_str(),
        "eventType": record.event_type,
        "phaseBefore": record.phase_before.as_str(),
        "phaseAfter": record.phase_after.as_str(),
        "receivedAt": record.received_at,
        "appliedAt": record.applied_at,
    });
    let (status, code) = verdict_parts(record.verdict);
    value["status"] = json!(status);
    if let Some(code) = code {
        value["code"] = json!(code);
    }
    if !record.warnings.is_empty() {
        value["warnings"] = json!(record.warnings);
    }
    value
}

/// The wire `status` of a verdict and, for a rejection, its code.
pub fn verdict_parts(verdict: Verdict) -> (&'static str, Option<&'static str>) {
    match verdict {
        Verdict::Applied => ("applied", None),
        Verdict::Duplicate => ("duplicate", None),
        Verdict::Ignored => ("ignored", None),
        Verdict::Rejected(code) => ("rejected", Some(code.as_str())),
    }
}
