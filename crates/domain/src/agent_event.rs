//! Agent events: what the contact centre posts to
//! `POST /agent/converse/send-message-to-widget` (docs/protocol.md §2, seed document).
//!
//! Two ways in: [`parse_agent_event`] validates an untrusted request body and
//! reports every problem at once; the serde impls read and write the canonical
//! form the ingress publishes to the broker. Display fields are lenient, as in
//! the original: `queuePosition` and `waitingTime` are [`DisplayValue`]s, and
//! an `agentAvatar` that is not an https URL is dropped with a
//! [`FieldWarning`] instead of failing the event.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::display::DisplayValue;
use crate::ids::{ConversationId, EscalationId, EventId, IdError};
use crate::validation::{FieldCode, FieldWarning, ValidationErrors, check_storable_text};

/// Longest `message` text, in characters.
pub const MAX_TEXT_CHARS: usize = 4096;
/// Longest agent name, in characters.
pub const MAX_AGENT_CHARS: usize = 128;
/// Longest `agentAvatar` URL kept, in characters.
pub const MAX_AVATAR_CHARS: usize = 2048;

/// One event from the contact centre about one conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentEvent {
    /// The conversation the event is about.
    pub platform_conversation_id: ConversationId,
    /// Idempotency key given by the caller, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<EventId>,
    /// The escalation the caller believes is current, if it says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalation_id: Option<EscalationId>,
    /// What happened.
    #[serde(flatten)]
    pub action: AgentAction,
    /// Display-only fields dropped from the event (not part of the request:
    /// [`parse_agent_event`] fills it in).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<FieldWarning>,
}

/// The five agent event types of the seed document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "eventType")]
pub enum AgentAction {
    /// The visitor waits in a queue.
    #[serde(rename = "escalationQueueUpdate", rename_all = "camelCase")]
    QueueUpdate {
        /// Position in the queue, shown as given.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        queue_position: Option<DisplayValue>,
        /// Estimated wait, in minutes, shown as given.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        waiting_time: Option<DisplayValue>,
    },
    /// An agent picked the conversation up.
    #[serde(rename = "escalationSuccess", rename_all = "camelCase")]
    Success {
        /// The agent's display name.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        agent: Option<String>,
        /// An https URL of the agent's avatar; anything else is dropped.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        agent_avatar: Option<String>,
    },
    /// A message from the agent to the visitor.
    #[serde(rename = "message")]
    Message {
        /// The text, 1–4096 characters.
        text: String,
    },
    /// The escalation could not be completed.
    #[serde(rename = "escalationFailed")]
    Failed,
    /// The agent left the conversation.
    #[serde(rename = "agentDisconnect")]
    Disconnect,
}

impl AgentAction {
    /// The wire name of the event type.
    pub fn event_type(&self) -> &'static str {
        match self {
            AgentAction::QueueUpdate { .. } => "escalationQueueUpdate",
            AgentAction::Success { .. } => "escalationSuccess",
            AgentAction::Message { .. } => "message",
            AgentAction::Failed => "escalationFailed",
            AgentAction::Disconnect => "agentDisconnect",
        }
    }
}

/// The event types `eventType` may name.
pub const EVENT_TYPES: [&str; 5] =
    ["escalationQueueUpdate", "escalationSuccess", "message", "escalationFailed", "agentDisconnect"];

/// Validates an untrusted request body and returns the typed event or every
/// problem found, each with its field path and code (docs/protocol.md §2). Unknown fields
/// are ignored so newer clients keep working. A dropped display field is not a
/// problem: it is listed in the event's `warnings`.
pub fn parse_agent_event(body: &Value) -> Result<AgentEvent, ValidationErrors> {
    let mut errors = ValidationErrors::default();
    let mut warnings = Vec::new();
    let Some(obj) = body.as_object() else {
        errors.push("body", FieldCode::NotAnObject, "the body must be a JSON object");
        return Err(errors);
    };

    let event_type = match present(obj, "eventType") {
        None => {
            errors.push("eventType", FieldCode::Required, "eventType is required");
            None
        }
        Some(Value::String(s)) if EVENT_TYPES.contains(&s.as_str()) => Some(s.as_str()),
        Some(Value::String(s)) => {
            errors.push(
                "eventType",
                FieldCode::UnknownEventType,
                format!("unknown event type {s:?}; expected one of {}", EVENT_TYPES.join(", ")),
            );
            None
        }
        Some(_) => {
            errors.push("eventType", FieldCode::InvalidType, "eventType must be a string");
            None
        }
    };

    let conversation = required_id(obj, "platformConversationId", ConversationId::parse, &mut errors);
    let event_id = optional_id(obj, "eventId", EventId::parse, &mut errors);
    let escalation_id = optional_id(obj, "escalationId", EscalationId::parse, &mut errors);

    let action = event_type.and_then(|t| parse_action(t, obj, &mut errors, &mut warnings));

    match (errors.is_empty(), conversation, action) {
        (true, Some(platform_conversation_id), Some(action)) => {
            Ok(AgentEvent { platform_conversation_id, event_id, escalation_id, action, warnings })
        }
        _ => Err(errors),
    }
}

fn parse_action(
    event_type: &str,
    obj: &Map<String, Value>,
    errors: &mut ValidationErrors,
    warnings: &mut Vec<FieldWarning>,
) -> Option<AgentAction> {
    let before = errors.0.len();
    let action = match event_type {
        "escalationQueueUpdate" => AgentAction::QueueUpdate {
            queue_position: optional_display(obj, "queuePosition", errors),
            waiting_time: optional_display(obj, "waitingTime", errors),
        },
        "escalationSuccess" => AgentAction::Success {
            agent: optional_text(obj, "agent", MAX_AGENT_CHARS, errors),
            agent_avatar: lenient_https_url(obj, "agentAvatar", warnings),
        },
        "message" => match present(obj, "text") {
            None => {
                errors.push("text", FieldCode::Required, "text is required for a message");
                return None;
            }
            Some(Value::String(s)) if s.is_empty() => {
                errors.push("text", FieldCode::TooShort, "text must not be empty");
                return None;
            }
            Some(Value::String(s)) if s.chars().count() > MAX_TEXT_CHARS => {
                errors.push(
                    "text",
                    FieldCode::TooLong,
                    format!("text must be at most {MAX_TEXT_CHARS} characters"),
                );
                return None;
            }
            Some(Value::String(s)) if !check_storable_text(s, "text", errors) => return None,
            Some(Value::String(s)) => AgentAction::Message { text: s.clone() },
            Some(_) => {
                errors.push("text", FieldCode::InvalidType, "text must be a string");
                return None;
            }
        },
        "escalationFailed" => AgentAction::Failed,
        _ => AgentAction::Disconnect,
    };
    (errors.0.len() == before).then_some(action)
}

/// A field that is present and not `null`.
fn present<'a>(obj: &'a Map<String, Value>, field: &str) -> Option<&'a Value> {
    obj.get(field).filter(|v| !v.is_null())
}

fn required_id<T>(
    obj: &Map<String, Value>,
    field: &str,
    parse: fn(String) -> Result<T, IdError>,
    errors: &mut ValidationErrors,
) -> Option<T> {
    if present(obj, field).is_none() {
        errors.push(field, FieldCode::Required, format!("{field} is required"));
        return None;
    }
    optional_id(obj, field, parse, errors)
}

fn optional_id<T>(
    obj: &Map<String, Value>,
    field: &str,
    parse: fn(String) -> Result<T, IdError>,
    errors: &mut ValidationErrors,
) -> Option<T> {
    match present(obj, field)? {
        Value::String(s) => match parse(s.clone()) {
            Ok(id) => Some(id),
            Err(e) => {
                errors.push(field, e.code(), format!("{field} {e} (1–128 characters)"));
                None
            }
        },
        _ => {
            errors.push(field, FieldCode::InvalidType, format!("{field} must be a string"));
            None
        }
    }
}

fn optional_display(
    obj: &Map<String, Value>,
    field: &str,
    errors: &mut ValidationErrors,
) -> Option<DisplayValue> {
    match DisplayValue::from_json(present(obj, field)?) {
        Ok(value) => Some(value),
        Err((code, message)) => {
            errors.push(field, code, format!("{field} {message}"));
            None
        }
    }
}

fn optional_text(
    obj: &Map<String, Value>,
    field: &str,
    max: usize,
    errors: &mut ValidationErrors,
) -> Option<String> {
    match present(obj, field)? {
        Value::String(s) if s.chars().count() > max => {
            errors.push(field, FieldCode::TooLong, format!("{field} must be at most {max} characters"));
            None
        }
        Value::String(s) if !check_storable_text(s, field, errors) => None,
        Value::String(s) => Some(s.clone()),
        _ => {
            errors.push(field, FieldCode::InvalidType, format!("{field} must be a string"));
            None
        }
    }
}

/// An https URL with a host, or `None` and a warning: a display-only field
/// never fails a state-changing event (docs/protocol.md §2).
fn lenient_https_url(
    obj: &Map<String, Value>,
    field: &str,
    warnings: &mut Vec<FieldWarning>,
) -> Option<String> {
    let problem = match present(obj, field)? {
        Value::String(s) if s.chars().count() > MAX_AVATAR_CHARS => {
            (FieldCode::TooLong, format!("is longer than {MAX_AVATAR_CHARS} characters"))
        }
        Value::String(s) => match url::Url::parse(s) {
            Ok(u) if u.scheme() == "https" && u.host().is_some() => return Some(s.clone()),
            Ok(_) => (FieldCode::NotHttps, "is not an https URL".to_owned()),
            Err(_) => (FieldCode::InvalidUrl, "is not a valid URL".to_owned()),
        },
        _ => (FieldCode::InvalidType, "is not a string".to_owned()),
    };
    let (code, why) = problem;
    warnings.push(FieldWarning::new(
        field,
        code,
        format!("{field} {why}; it was dropped and the event applied without it"),
    ));
    None
}
