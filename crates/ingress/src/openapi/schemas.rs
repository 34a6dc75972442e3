//! The request and response bodies of the public API as OpenAPI schemas
//! (docs/protocol.md §2, §3). The handlers validate untrusted JSON by hand, to
//! report every problem at once, so these types describe the wire for the
//! document; the responses the handlers build from typed values
//! ([`crate::routes::Accepted`], [`crate::routes::widget::Escalated`]) carry
//! their own schemas.

#![allow(dead_code)] // read by the OpenAPI derive only

use serde::Serialize;
use serde_json::Value;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::{PartialSchema, ToSchema};

/// Every error status's body.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"error": "invalid_body", "message": "the request is invalid; see details",
    "details": [{"field": "text", "code": "required", "message": "text is required"}]}))]
pub struct ErrorBody {
    /// A stable code: `invalid_body`, `unauthorized`, `unsupported_media_type`,
    /// `payload_too_large`, `rate_limited`, `broker_unavailable`, `not_found`,
    /// `unknown_conversation`, `unknown_event`, `query_unavailable`,
    /// `method_not_allowed`, `internal_error`, `not_ready`.
    pub error: String,
    /// What to fix, for a person.
    pub message: String,
    /// A `400`'s problems, every one at once.
    pub details: Option<Vec<FieldProblem>>,
}

/// One problem of a request, or one display-only field dropped from an event.
#[derive(Debug, Serialize, ToSchema)]
pub struct FieldProblem {
    /// JSON path of the field (`text`, `queuePosition`), a header name, or `body`.
    pub field: String,
    /// `required`, `invalid_type`, `too_short`, `too_long`, `invalid_format`,
    /// `not_an_object`, `unknown_event_type`, `not_https`, `invalid_json`, `conflict`, …
    pub code: String,
    /// A sentence for a person.
    pub message: String,
}

/// A queue value shown to the visitor as given: a non-negative integer or a
/// non-empty string of at most 32 characters (`3`, `"5-10"`, `"3rd"`).
#[derive(Debug, Serialize)]
pub struct DisplayValue;

impl PartialSchema for DisplayValue {
    fn schema() -> RefOr<Schema> {
        let integer = ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(0));
        let text = ObjectBuilder::new().schema_type(Type::String).min_length(Some(1)).max_length(Some(32));
        OneOfBuilder::new()
            .item(integer)
            .item(text)
            .description(Some(
                "Shown to the visitor as given: a non-negative integer or a string of 1-32 characters.",
            ))
            .into()
    }
}

impl ToSchema for DisplayValue {}

/// The agent event types.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub enum AgentEventType {
    /// The visitor waits in a queue (`queuePosition`, `waitingTime`).
    EscalationQueueUpdate,
    /// An agent picked the conversation up (`agent`, `agentAvatar`).
    EscalationSuccess,
    /// A message to the visitor (`text`).
    Message,
    /// The escalation could not be completed.
    EscalationFailed,
    /// The agent left.
    AgentDisconnect,
}

/// An event from the contact centre, wire-compatible with the original API.
/// Fields that do not belong to the `eventType` are ignored, as are unknown fields.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"eventType": "escalationQueueUpdate",
    "platformConversationId": "c1", "queuePosition": 3, "waitingTime": "5-10"}))]
pub struct AgentEventRequest {
    /// What happened.
    pub event_type: AgentEventType,
    /// The conversation, as the bot's platform names it.
    #[schema(min_length = 1, max_length = 128)]
    pub platform_conversation_id: String,
    /// Idempotency key (also accepted as the `Idempotency-Key` header); a new UUID v7 if absent.
    #[schema(min_length = 1, max_length = 128)]
    pub event_id: Option<String>,
    /// The escalation the contact centre believes is current; an event for an older one is refused.
    #[schema(min_length = 1, max_length = 128)]
    pub escalation_id: Option<String>,
    /// `escalationQueueUpdate`: position in the queue.
    pub queue_position: Option<DisplayValue>,
    /// `escalationQueueUpdate`: estimated wait in minutes.
    pub waiting_time: Option<DisplayValue>,
    /// `escalationSuccess`: the agent's display name.
    #[schema(max_length = 128)]
    pub agent: Option<String>,
    /// `escalationSuccess`: an https URL of the agent's picture; anything else is dropped with a warning.
    pub agent_avatar: Option<String>,
    /// `message`: the text, 1–4096 characters (required for `message`).
    #[schema(min_length = 1, max_length = 4096)]
    pub text: Option<String>,
}

/// The `200` of an agent event: `accepted` (the broker confirmed it), or with
/// `Prefer: wait=N` the verdict: `applied`, `duplicate` or `ignored`, with the state after it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"status": "applied", "eventId": "e-1", "currentState": "queued"}))]
pub struct VerdictBody {
    /// `accepted`, or with `Prefer: wait` `applied`, `duplicate` or `ignored`.
    pub status: String,
    /// The event's id.
    pub event_id: String,
    /// With `Prefer: wait`: the conversation's state after the event.
    pub current_state: Option<String>,
    /// Display-only fields dropped from the event.
    pub warnings: Option<Vec<FieldProblem>>,
}

/// `409` with `Prefer: wait=N`: the conversation's state refused the event.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"error": "not_connected",
    "message": "the event was refused by the conversation's state", "currentState": "queued", "eventId": "e-1"}))]
pub struct RefusedBody {
    /// Why: `no_active_escalation`, `not_connected`, `already_connected`, `stale_escalation`, …
    pub error: String,
    /// For a person.
    pub message: String,
    /// The conversation's state.
    pub current_state: String,
    /// The event's id.
    pub event_id: String,
    /// Display-only fields dropped from the event.
    pub warnings: Option<Vec<FieldProblem>>,
}

/// The body of `escalate`; it may also be empty.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"escalateTo": "billing",
    "metadata": {"plan": "pro"}, "transcript": [{"from": "bot", "text": "Let me get you a human."}]}))]
pub struct EscalateRequest {
    /// Where to route it (queue, skill), passed to the contact centre as is.
    #[schema(max_length = 256)]
    pub escalate_to: Option<String>,
    /// Opaque metadata, passed on.
    pub metadata: Option<Value>,
    /// The bot conversation so far, passed on.
    pub transcript: Option<Vec<Value>>,
}

/// A visitor's message.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"text": "Hello?", "clientMessageId": "m-42"}))]
pub struct VisitorMessageRequest {
    /// The text, 1–4096 characters.
    #[schema(min_length = 1, max_length = 4096)]
    pub text: String,
    /// The widget's id for the message: a retry with the same id is applied once.
    #[schema(min_length = 1, max_length = 125)]
    pub client_message_id: Option<String>,
}

/// One recorded event and its verdict.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventView {
    /// The event's id.
    pub event_id: String,
    /// Its conversation.
    pub platform_conversation_id: String,
    /// Its type.
    pub event_type: String,
    /// The state before it.
    pub phase_before: String,
    /// The state after it.
    pub phase_after: String,
    /// When the ingress accepted it.
    pub received_at: String,
    /// When the worker applied it.
    pub applied_at: String,
    /// `applied`, `duplicate`, `ignored` or `rejected`.
    pub status: String,
    /// A rejection's code.
    pub code: Option<String>,
    /// Display-only fields dropped from it.
    pub warnings: Option<Vec<FieldProblem>>,
}

/// A conversation's state and its latest events.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConversationView {
    /// The conversation.
    pub platform_conversation_id: String,
    /// `idle`, `requested`, `queued` or `connected`.
    pub phase: String,
    /// The current (or last) escalation.
    pub escalation_id: Option<String>,
    /// How the last escalation ended, if it did.
    pub outcome: Option<Value>,
    /// The connected agent.
    pub agent: Option<Value>,
    /// The last queue update.
    pub queue: Option<Value>,
    /// Visitor messages held until an agent connects.
    pub held_messages: u64,
    /// The last widget event's sequence.
    pub last_widget_sequence: u64,
    /// The last webhook's sequence.
    pub last_webhook_sequence: u64,
    /// When the state last changed.
    pub updated_at: String,
    /// The latest events, newest first.
    pub events: Vec<EventView>,
}

/// `/healthz` and `/readyz` when all is well.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"status": "ok"}))]
pub struct StatusBody {
    /// `ok` or `ready`.
    pub status: String,
}
