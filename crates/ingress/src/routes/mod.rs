//! The handlers, one module per API.
//!
//! - [`agent`]: `POST /agent/converse/send-message-to-widget` (docs/protocol.md §2).
//! - [`query`]: `GET /agent/converse/conversations/{id}` and `/events/{eventId}` (docs/protocol.md §2).
//! - [`stream`]: `GET /widget/v1/conversations/{id}/events`, the SSE stream (docs/protocol.md §3).
//! - [`verdict`]: `Prefer: wait=N`, waiting for the worker's verdict (docs/protocol.md §2).
//! - [`widget`]: `POST /widget/v1/conversations/{id}/escalate|messages|end` (docs/protocol.md §3).
//! - [`health`]: `/healthz`, `/readyz`, `/metrics`, and the JSON 404 and 405.

pub mod agent;
pub mod health;
pub mod query;
pub mod stream;
pub mod verdict;
pub mod widget;

use domain::{EventId, FieldCode, FieldWarning, ValidationErrors};
use serde::Serialize;

/// AMQP carries the event id as `message_id`, a short string of at most 255
/// bytes; an id of 128 multi-byte characters can exceed that.
pub const MAX_EVENT_ID_BYTES: usize = 255;

/// `200 {"status":"accepted","eventId":"…"}`: the broker confirmed the event.
/// `warnings` lists the display-only fields dropped from it, when there are
/// any (docs/protocol.md §2).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"status": "accepted", "eventId": "0192f1c4-7b3a-7c2e-9a51-3f0d2b8c4e10"}))]
pub struct Accepted {
    /// Always `accepted`.
    #[schema(value_type = String)]
    pub status: &'static str,
    /// The event's id, given or generated.
    #[schema(value_type = String)]
    pub event_id: EventId,
    /// Fields dropped from the event; omitted when empty.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Option<Vec<crate::openapi::schemas::FieldProblem>>)]
    pub warnings: Vec<FieldWarning>,
}

impl Accepted {
    /// The body for `event_id`.
    pub fn new(event_id: EventId) -> Self {
        Self { status: "accepted", event_id, warnings: Vec::new() }
    }

    /// The body for `event_id`, with the fields dropped from it.
    pub fn with_warnings(event_id: EventId, warnings: Vec<FieldWarning>) -> Self {
        Self { status: "accepted", event_id, warnings }
    }
}

/// Reports an event id that cannot be an AMQP `message_id`, against `field`.
fn check_event_id_bytes(id: &EventId, field: &str, errors: &mut ValidationErrors) {
    if id.as_str().len() > MAX_EVENT_ID_BYTES {
        errors.push(
            field,
            FieldCode::TooLong,
            format!("{field} must be at most {MAX_EVENT_ID_BYTES} bytes in UTF-8"),
        );
    }
}
