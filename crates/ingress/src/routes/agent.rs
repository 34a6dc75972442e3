//! `POST /agent/converse/send-message-to-widget` (docs/protocol.md §2): the contact centre's
//! events, wire-compatible with the original API.
//!
//! Checks, in order, each answered before anything is published: API key and
//! `botid` (`401`), rate limit (`429`), media type (`415`), size (`413`), JSON
//! syntax and schema plus the `Idempotency-Key` header, all problems at once
//! (`400`). Then publish, and `200` only after the broker's confirm (`503` if
//! none). With `Prefer: wait=N` the answer is the worker's verdict (see
//! [`super::verdict`]). Either answer lists the display-only fields dropped
//! from the event as `warnings` (an `agentAvatar` that is not an https URL).

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use chrono::Utc;
use domain::{
    AgentEvent, Command, Envelope, EventId, FieldCode, IdSpace, Input, ValidationErrors, parse_agent_event,
};
use serde_json::Value;
use tracing::Span;

use super::{Accepted, check_event_id_bytes, verdict};
use crate::app::{AppState, new_event_id};
use crate::auth::{authenticate_bot, bot_id_of};
use crate::body::{Empty, read_json};
use crate::error::ApiError;
use crate::openapi::responses::{BotKeyRefused, JsonBodyRefused};
use crate::openapi::schemas::{AgentEventRequest, ErrorBody, RefusedBody, VerdictBody};
use crate::rate_limit::Scope;

/// The header that may carry the event's idempotency key.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// Accepts one agent event.
#[utoipa::path(post, path = "/agent/converse/send-message-to-widget", tag = "agent",
    operation_id = "sendMessageToWidget",
    summary = "Post an agent event for a conversation",
    description = "Accepted (200) only once RabbitMQ confirmed it. With `Prefer: wait=N` the answer is \
                   the worker's verdict: 200 applied/duplicate/ignored, 409 refused, or 202 if not \
                   decided within N seconds.",
    request_body(content = AgentEventRequest, content_type = "application/json"),
    params(
        ("botid" = Option<String>, Header, description = "The bot; when given it must be the key's bot."),
        ("Idempotency-Key" = Option<String>, Header, description = "The event's id, if the body has no `eventId`."),
        ("Prefer" = Option<String>, Header, description = "`wait=N`: wait up to N seconds for the verdict.", example = "wait=2"),
    ),
    responses(
        (status = 200, description = "Accepted (or, with `Prefer: wait`, the verdict).", body = VerdictBody,
            example = json!({"status": "accepted", "eventId": "0192f1c4-7b3a-7c2e-9a51-3f0d2b8c4e10"})),
        (status = 202, description = "`Prefer: wait`: accepted, verdict not known yet.", body = Accepted),
        (status = 409, description = "`Prefer: wait`: refused by the conversation's state.", body = RefusedBody),
        (status = 400, description = "The body or the `Idempotency-Key` header is invalid; `details` lists every problem.", body = ErrorBody),
        BotKeyRefused,
        JsonBodyRefused,
        (status = 429, description = "Over a rate limit; see `Retry-After`.", body = ErrorBody),
        (status = 503, description = "RabbitMQ did not confirm the event: retry with the same id.", body = ErrorBody),
    ),
    security(("botApiKey" = [])))]
#[tracing::instrument(skip_all, fields(bot_id, conversation_id, event_id))]
pub async fn send_message_to_widget(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let span = Span::current();
    let bot = authenticate_bot(app.settings(), &headers)?;
    span.record("bot_id", bot.id.as_str());
    app.check_rate(&bot.id, Scope::Agent)?;

    let value = read_json(&headers, body, app.settings().http.body_limit_bytes, Empty::Invalid).await?;
    let (event, event_id) = validate(&value, &headers)?;
    span.record("conversation_id", event.platform_conversation_id.as_str());
    span.record("event_id", event_id.as_str());

    let bot_id = bot_id_of(bot)?;
    let warnings = event.warnings;
    let envelope = Envelope {
        bot_id,
        conversation_id: event.platform_conversation_id,
        received_at: Utc::now(),
        command: Command {
            event_id: event_id.clone(),
            input: Input::Agent {
                escalation_id: event.escalation_id,
                action: event.action,
                warnings: warnings.clone(),
            },
        },
    };
    let wait = verdict::requested_wait(&headers, app.settings().http.verdict_wait_max_secs);
    let outcome = verdict::publish_and_wait(&app, &envelope, IdSpace::Agent, wait).await?;
    Ok(verdict::respond(&event_id, outcome, warnings))
}

/// The event and its id, or every problem of the body and the
/// `Idempotency-Key` header at once.
///
/// The id is the body's `eventId`, else the header, else a new UUID v7; when
/// both are given they must be equal (`eventId`, `conflict`).
pub fn validate(value: &Value, headers: &HeaderMap) -> Result<(AgentEvent, EventId), ApiError> {
    let mut errors = ValidationErrors::default();
    let event = parse_agent_event(value).map_err(|e| errors.0.extend(e.0)).ok();
    let header_id = idempotency_key(headers, &mut errors);
    // Read from the JSON itself so a conflict is reported along with any
    // other problem of the body (parse_agent_event reports a bad eventId).
    let body_id = value.get("eventId").and_then(Value::as_str).and_then(|s| EventId::parse(s).ok());
    if let Some(id) = &body_id {
        check_event_id_bytes(id, "eventId", &mut errors);
    }
    if let (Some(body_id), Some(header_id)) = (&body_id, &header_id)
        && body_id != header_id
    {
        errors.push("eventId", FieldCode::Conflict, "eventId and the Idempotency-Key header differ");
    }
    let Some(event) = event.filter(|_| errors.is_empty()) else {
        return Err(ApiError::InvalidBody(errors));
    };
    let event_id = match body_id.or(header_id) {
        Some(id) => id,
        None => new_event_id()?,
    };
    Ok((event, event_id))
}

/// The `Idempotency-Key` header as an event id, if present; problems go to `errors`.
fn idempotency_key(headers: &HeaderMap, errors: &mut ValidationErrors) -> Option<EventId> {
    const FIELD: &str = "Idempotency-Key";
    let raw = headers.get(IDEMPOTENCY_KEY)?;
    let Ok(text) = raw.to_str() else {
        errors.push(FIELD, FieldCode::InvalidFormat, "Idempotency-Key must be visible ASCII");
        return None;
    };
    match EventId::parse(text.trim()) {
        Ok(id) => {
            check_event_id_bytes(&id, FIELD, errors);
            Some(id)
        }
        Err(e) => {
            errors.push(FIELD, e.code(), format!("Idempotency-Key {e} (1–128 characters)"));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use serde_json::json;

    fn fields(result: Result<(AgentEvent, EventId), ApiError>) -> Vec<(String, FieldCode)> {
        match result {
            Err(ApiError::InvalidBody(e)) => e.details().iter().map(|d| (d.field.clone(), d.code)).collect(),
            other => panic!("expected a 400, got {other:?}"),
        }
    }

    fn with_key(key: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(IDEMPOTENCY_KEY, HeaderValue::from_static(key));
        h
    }

    #[test]
    fn event_id_comes_from_body_header_or_uuid() {
        let body = json!({"eventType": "escalationFailed", "platformConversationId": "c"});
        let (_, id) = validate(&body, &HeaderMap::new()).expect("valid");
        assert_eq!(uuid::Uuid::parse_str(id.as_str()).expect("uuid").get_version_num(), 7);
        let (_, id) = validate(&body, &with_key("k-1")).expect("valid");
        assert_eq!(id.as_str(), "k-1");
        let mut with_id = body.clone();
        with_id["eventId"] = json!("k-1");
        let (_, id) = validate(&with_id, &with_key("k-1")).expect("same id twice is fine");
        assert_eq!(id.as_str(), "k-1");
    }

    #[test]
    fn problems_of_body_and_header_come_together() {
        let body = json!({"eventType": "message", "platformConversationId": "c", "eventId": "a"});
        assert_eq!(
            fields(validate(&body, &with_key("b"))),
            [("text".to_owned(), FieldCode::Required), ("eventId".to_owned(), FieldCode::Conflict)]
        );
        let body = json!({"eventType": "escalationFailed", "platformConversationId": "c"});
        let long = Box::leak("k".repeat(129).into_boxed_str());
        assert_eq!(
            fields(validate(&body, &with_key(long))),
            [("Idempotency-Key".to_owned(), FieldCode::TooLong)]
        );
        let body = json!({"eventType": "escalationFailed", "platformConversationId": "c", "eventId": "é".repeat(128)});
        assert_eq!(fields(validate(&body, &HeaderMap::new())), [("eventId".to_owned(), FieldCode::TooLong)]);
    }
}
