//! The widget API's writes (docs/protocol.md §3): the bot platform's `escalate` (bot API
//! key) and the visitor's `messages` and `end` (widget token). Each publishes
//! one command and answers once the broker confirmed it.

use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use chrono::{DateTime, SecondsFormat, Utc};
use domain::widget_request::CLIENT_MESSAGE_EVENT_PREFIX;
use domain::{
    BotId, Command, ConversationId, Envelope, EscalationId, EventId, FieldCode, IdSpace, Input, MessageId,
    ValidationErrors, Verdict, parse_escalate_request, parse_visitor_message,
};
use serde::Serialize;
use store::ConvKey;
use tracing::Span;

use super::verdict::{self, Outcome};
use super::{Accepted, check_event_id_bytes};
use crate::app::{AppState, new_event_id};
use crate::auth::{authenticate_bot, authenticate_widget, bot_id_of};
use crate::body::{Empty, read_json};
use crate::error::ApiError;
use crate::openapi::responses::{BotKeyRefused, JsonBodyRefused, VisitorRefused};
use crate::openapi::schemas::{ErrorBody, EscalateRequest, VisitorMessageRequest};
use crate::rate_limit::Scope;

/// `200` of `escalate`: the new escalation's id and the token the visitor's
/// widget uses for this conversation.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"escalationId": "0192f1c4-7b3a-7c2e-9a51-3f0d2b8c4e10", "widgetToken": "eyJib3QiOi…", "expiresAt": "2025-01-02T03:04:05Z"}))]
pub struct Escalated {
    /// The id of the escalation requested.
    #[schema(value_type = String)]
    pub escalation_id: EscalationId,
    /// `Authorization: Bearer <widgetToken>` for the widget routes of this conversation.
    pub widget_token: String,
    /// When the token stops working (RFC 3339).
    pub expires_at: String,
}

/// The id of the conversation's stored escalation (the live one, after a
/// `duplicate` escalate); `None` if it cannot be read.
async fn live_escalation_id(
    app: &AppState,
    bot: &BotId,
    conversation: &ConversationId,
) -> Option<EscalationId> {
    let store = app.store().ok()?;
    let key = ConvKey::new(bot.clone(), conversation.clone());
    match store.conversation(&key).await {
        Ok(stored) => Some(stored?.state.escalation?.id),
        Err(error) => {
            tracing::warn!(%error, "reading the live escalation failed; answering the proposed id");
            None
        }
    }
}

/// `POST /widget/v1/conversations/{id}/escalate`: the bot hands the conversation
/// to a human. Body `{escalateTo?, metadata?, transcript?}`, or empty.
///
/// If an escalation is already live, the worker treats this as idempotent
/// (docs/protocol.md §5) and keeps the live one, so the answer must name that one, not
/// the id proposed here. The ingress therefore waits (at most
/// `http.escalate_wait_ms`) for the worker's verdict, which the worker sends
/// straight to this instance's live queue (the command's `reply_to`; no
/// binding needed): `duplicate` means "already live", and the conversation's
/// stored escalation id is answered. Without a verdict in time (or without a
/// live hub), the proposed id is answered, as it is the one the worker
/// applies unless an escalation was live.
#[utoipa::path(post, path = "/widget/v1/conversations/{id}/escalate", tag = "widget", operation_id = "escalate",
    summary = "Hand the conversation to a human (bot API key)",
    description = "Publishes the escalation and answers with the widget token the visitor's widget uses. \
                   Escalating while an escalation is live keeps the live one and answers its id.",
    request_body(content = Option<EscalateRequest>, content_type = "application/json"),
    params(("id" = String, Path, description = "The conversation (platformConversationId), 1–128 characters."),
        ("botid" = Option<String>, Header, description = "The bot; when given it must be the key's bot.")),
    responses(
        (status = 200, description = "Escalation requested.", body = Escalated),
        (status = 400, description = "The body or the path is invalid; `details` lists every problem.", body = ErrorBody),
        BotKeyRefused,
        JsonBodyRefused,
        (status = 429, description = "Over the bot's escalate rate limit; see `Retry-After`.", body = ErrorBody),
        (status = 503, description = "RabbitMQ did not confirm: retry.", body = ErrorBody),
    ),
    security(("botApiKey" = [])))]
#[tracing::instrument(skip_all, fields(bot_id, conversation_id, event_id))]
pub async fn escalate(
    State(app): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Escalated>, ApiError> {
    let span = Span::current();
    let bot = authenticate_bot(app.settings(), &headers)?;
    span.record("bot_id", bot.id.as_str());
    // The bot platform's own budget: visitors cannot spend it (docs/protocol.md §3).
    app.check_rate(&bot.id, Scope::Escalate)?;

    let mut errors = ValidationErrors::default();
    let conversation = conversation_from_path(path, &mut errors);
    let value = read_json(&headers, body, app.settings().http.body_limit_bytes, Empty::AsNull).await?;
    let request = parse_escalate_request(&value).map_err(|e| errors.0.extend(e.0)).ok();
    let (Some(conversation), Some(request)) = (conversation, request) else {
        return Err(ApiError::InvalidBody(errors));
    };
    span.record("conversation_id", conversation.as_str());

    let event_id = new_event_id()?;
    span.record("event_id", event_id.as_str());
    let proposed = EscalationId::parse(uuid::Uuid::now_v7().to_string())
        .map_err(|e| ApiError::internal(format!("generated escalation id: {e}")))?;
    let escalation_id = proposed.clone();
    let bot_id = bot_id_of(bot)?;
    let now = Utc::now();
    let envelope = Envelope {
        bot_id: bot_id.clone(),
        conversation_id: conversation.clone(),
        received_at: now,
        command: Command {
            event_id: event_id.clone(),
            input: Input::Escalate {
                escalation_id: escalation_id.clone(),
                escalate_to: request.escalate_to,
                metadata: request.metadata,
                transcript: request.transcript,
            },
        },
    };
    let wait = Some(Duration::from_millis(app.settings().http.escalate_wait_ms));
    let outcome = verdict::publish_and_wait(&app, &envelope, IdSpace::System, wait).await?;
    let escalation_id = match outcome {
        Outcome::Decided(Verdict::Duplicate, _) => live_escalation_id(&app, &bot_id, &conversation).await,
        _ => None,
    }
    .unwrap_or(proposed);

    let issued = app.tokens().issue(&bot_id, &conversation, now);
    Ok(Json(Escalated { escalation_id, widget_token: issued.token, expires_at: rfc3339(issued.expires_at) }))
}

/// `POST /widget/v1/conversations/{id}/messages` (widget token): `{text, clientMessageId?}`.
///
/// With a `clientMessageId` the event id is `vm:<clientMessageId>`, so a
/// widget retrying a message it got no answer for sends a duplicate the worker
/// applies once; the message id is the `clientMessageId`. Without one, both are
/// a new UUID v7.
#[utoipa::path(post, path = "/widget/v1/conversations/{id}/messages", tag = "widget", operation_id = "postVisitorMessage",
    summary = "Send a visitor message to the agent (widget token)",
    request_body(content = VisitorMessageRequest, content_type = "application/json"),
    params(("id" = String, Path, description = "The conversation (platformConversationId), 1–128 characters.")),
    responses(
        (status = 200, description = "Accepted.", body = Accepted),
        (status = 400, description = "The body is invalid; `details` lists every problem.", body = ErrorBody),
        VisitorRefused,
        JsonBodyRefused,
        (status = 503, description = "RabbitMQ did not confirm: retry (with the same `clientMessageId`).", body = ErrorBody),
    ),
    security(("widgetToken" = [])))]
#[tracing::instrument(skip_all, fields(bot_id, conversation_id, event_id))]
pub async fn post_message(
    State(app): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Accepted>, ApiError> {
    let (bot_id, conversation) = authenticate_visitor(&app, path, &headers)?;
    let value = read_json(&headers, body, app.settings().http.body_limit_bytes, Empty::Invalid).await?;
    let request = parse_visitor_message(&value)?;

    let (event_id, message_id) = match request.client_message_id {
        Some(client_id) => {
            let event_id = EventId::parse(format!("{CLIENT_MESSAGE_EVENT_PREFIX}{client_id}"));
            let message_id = MessageId::parse(client_id);
            match (event_id, message_id) {
                (Ok(event_id), Ok(message_id)) => (event_id, message_id),
                // parse_visitor_message already bounds clientMessageId for both.
                _ => {
                    return Err(ApiError::invalid(
                        "clientMessageId",
                        FieldCode::InvalidFormat,
                        "invalid clientMessageId",
                    ));
                }
            }
        }
        None => {
            let event_id = new_event_id()?;
            (event_id.clone(), MessageId::from(event_id))
        }
    };
    let mut errors = ValidationErrors::default();
    check_event_id_bytes(&event_id, "clientMessageId", &mut errors);
    if !errors.is_empty() {
        return Err(ApiError::InvalidBody(errors));
    }
    let input = Input::VisitorMessage { message_id, text: request.text };
    publish_visitor(&app, bot_id, conversation, event_id, input).await
}

/// `POST /widget/v1/conversations/{id}/end` (widget token): the visitor ends the
/// session. No body is needed; any body is ignored.
#[utoipa::path(post, path = "/widget/v1/conversations/{id}/end", tag = "widget", operation_id = "endSession",
    summary = "The visitor ends the session (widget token); any body is ignored",
    params(("id" = String, Path, description = "The conversation (platformConversationId), 1–128 characters.")),
    responses(
        (status = 200, description = "Accepted.", body = Accepted),
        VisitorRefused,
        (status = 503, description = "RabbitMQ did not confirm: retry.", body = ErrorBody),
    ),
    security(("widgetToken" = [])))]
#[tracing::instrument(skip_all, fields(bot_id, conversation_id, event_id))]
pub async fn end(
    State(app): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Accepted>, ApiError> {
    let (bot_id, conversation) = authenticate_visitor(&app, path, &headers)?;
    // Read (up to the limit) and ignored, so the connection stays reusable
    // (see `keep_alive`); a larger one only costs the connection.
    let _ = axum::body::to_bytes(body, app.settings().http.body_limit_bytes).await;
    let event_id = new_event_id()?;
    publish_visitor(&app, bot_id, conversation, event_id, Input::VisitorEnd).await
}

/// Widget token for the path's conversation, then that conversation's visitor
/// rate limit (never the bot's budget, docs/protocol.md §3).
/// An undecodable path cannot match any token, so it is a `401` too.
fn authenticate_visitor(
    app: &AppState,
    path: Result<Path<String>, PathRejection>,
    headers: &HeaderMap,
) -> Result<(BotId, ConversationId), ApiError> {
    let Ok(Path(raw)) = path else { return Err(ApiError::Unauthorized) };
    let (bot_id, conversation) =
        authenticate_widget(app.settings(), app.tokens(), headers, &raw, Utc::now())?;
    let span = Span::current();
    span.record("bot_id", bot_id.as_str());
    span.record("conversation_id", conversation.as_str());
    app.check_visitor_rate(bot_id.as_str(), conversation.as_str())?;
    Ok((bot_id, conversation))
}

async fn publish_visitor(
    app: &AppState,
    bot_id: BotId,
    conversation_id: ConversationId,
    event_id: EventId,
    input: Input,
) -> Result<Json<Accepted>, ApiError> {
    Span::current().record("event_id", event_id.as_str());
    let envelope = Envelope {
        bot_id,
        conversation_id,
        received_at: Utc::now(),
        command: Command { event_id: event_id.clone(), input },
    };
    app.publish(&envelope).await?;
    Ok(Json(Accepted::new(event_id)))
}

/// The `{id}` of the path as a conversation id; problems go to `errors`
/// under `conversationId`.
fn conversation_from_path(
    path: Result<Path<String>, PathRejection>,
    errors: &mut ValidationErrors,
) -> Option<ConversationId> {
    const FIELD: &str = "conversationId";
    match path {
        Ok(Path(raw)) => match ConversationId::parse(raw) {
            Ok(id) => Some(id),
            Err(e) => {
                errors.push(
                    FIELD,
                    e.code(),
                    format!("the conversation id in the path {e} (1–128 characters)"),
                );
                None
            }
        },
        Err(rejection) => {
            errors.push(
                FIELD,
                FieldCode::InvalidFormat,
                format!("the conversation id in the path: {rejection}"),
            );
            None
        }
    }
}

fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}
