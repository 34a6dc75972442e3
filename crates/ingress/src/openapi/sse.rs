//! The events of the widget stream in the document (docs/protocol.md §3.3).
//!
//! Before OpenAPI 3.2 the schema of a `text/event-stream` response describes
//! one event: its `id`, `event` and `data` fields, with `data` a JSON text
//! (`contentMediaType`, `contentSchema`). utoipa has no words for those two
//! keywords, so they are written into the generated JSON here.

use serde_json::{Value, json};

/// The SSE `event:` names: `domain::widget::WidgetEvent::name` of each variant.
const EVENTS: [&str; 9] = [
    "escalationRequested",
    "escalationQueueUpdate",
    "escalationSuccess",
    "agentChanged",
    "message",
    "escalationFailed",
    "agentDisconnect",
    "sessionEnded",
    "visitorRejected",
];

/// Adds `WidgetEvent` to the schemas and makes the stream's `200` describe one event.
pub(super) fn describe_events(doc: &mut Value) {
    let display = json!({"$ref": "#/components/schemas/DisplayValue"});
    let text = json!({"type": "string"});
    let envelope = json!({
        "type": "object",
        "description": "The `data:` of one stream event: its place in the conversation's stream, \\
                        its type and the type's fields.",
        "required": ["sequence", "timestamp", "escalationId", "type"],
        "properties": {
            "sequence": {"type": "integer", "minimum": 1, "description": "The SSE `id:`; strictly increasing from 1."},
            "timestamp": {"type": "string", "description": "When the event was produced (RFC 3339)."},
            "escalationId": text,
            "type": {"type": "string", "enum": EVENTS},
            "queuePosition": display,
            "waitingTime": display,
            "agent": text,
            "agentAvatar": text,
            "text": text,
            "messageId": text,
            "reason": {"type": "string", "description": "Why the escalation ended (`agent_disconnect`, `visitor_ended`, timers…)."},
            "code": {"type": "string", "description": "`visitorRejected`: why (`held_messages_full`, `no_active_escalation`)."},
        },
        "example": {"sequence": 2, "timestamp": "2025-01-02T03:04:05Z", "escalationId": "0192f1c4-7b3a-7c2e-9a51-3f0d2b8c4e10",
                    "type": "escalationQueueUpdate", "queuePosition": 3, "waitingTime": "5-10"},
    });
    let event = json!({
        "type": "object",
        "description": "One server-sent event.",
        "required": ["id", "event", "data"],
        "properties": {
            "id": {"type": "string", "pattern": "^[0-9]+$", "description": "The widget sequence: resume with `Last-Event-ID`."},
            "event": {"type": "string", "enum": EVENTS},
            "data": {"type": "string", "contentMediaType": "application/json",
                     "contentSchema": {"$ref": "#/components/schemas/WidgetEvent"}},
        },
    });
    if let Some(schemas) = doc.pointer_mut("/components/schemas").and_then(Value::as_object_mut) {
        schemas.insert("WidgetEvent".to_owned(), envelope);
    }
    let path =
        "/paths/~1widget~1v1~1conversations~1{id}~1events/get/responses/200/content/text~1event-stream";
    if let Some(media) = doc.pointer_mut(path).and_then(Value::as_object_mut) {
        media.insert("schema".to_owned(), event);
    }
}

/// Every [`WidgetEvent`] has its name in [`EVENTS`].
#[cfg(test)]
mod tests {
    use super::*;
    use domain::EndReason;
    use domain::widget::WidgetEvent;

    #[test]
    fn the_names_are_those_the_stream_sends() {
        let samples = [
            WidgetEvent::EscalationRequested,
            WidgetEvent::EscalationQueueUpdate { queue_position: None, waiting_time: None },
            WidgetEvent::EscalationSuccess { agent: None, agent_avatar: None },
            WidgetEvent::AgentChanged { agent: None, agent_avatar: None },
            WidgetEvent::AgentDisconnect { reason: EndReason::AgentDisconnect },
            WidgetEvent::SessionEnded { reason: EndReason::VisitorEnded },
            WidgetEvent::EscalationFailed { reason: EndReason::EscalationFailed },
        ];
        for event in samples {
            assert!(EVENTS.contains(&event.name()), "{}", event.name());
        }
        assert_eq!(EVENTS.len(), 9);
    }
}
