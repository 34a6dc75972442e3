//! Wire strings: every name the API, the event log or the database carries is
//! pinned here by a table, and each documented one must appear in
//! docs/protocol.md. A rename is an incompatible change: this test makes it a
//! deliberate one.

use domain::machine::{EndReason, OutcomeKind};
use domain::webhook::WebhookEvent;
use domain::widget::WidgetEvent;
use domain::{
    AgentAction, EscalationId, EventId, FieldCode, IdSpace, Input, MessageId, Phase, RejectCode, TimerKind,
    Verdict, parse_agent_event,
};
use serde_json::json;

/// The protocol document, which the wire strings below must appear in.
const PROTOCOL: &str = include_str!("../../../../docs/protocol.md");

fn assert_documented(name: &str) {
    assert!(PROTOCOL.contains(&format!("`{name}`")), "`{name}` is not in docs/protocol.md");
}

#[test]
fn field_codes_are_the_documented_snake_case_names() {
    let table = [
        (FieldCode::NotAnObject, "not_an_object"),
        (FieldCode::Required, "required"),
        (FieldCode::InvalidType, "invalid_type"),
        (FieldCode::TooShort, "too_short"),
        (FieldCode::TooLong, "too_long"),
        (FieldCode::InvalidFormat, "invalid_format"),
        (FieldCode::NotANonNegativeInteger, "not_a_non_negative_integer"),
        (FieldCode::OutOfRange, "out_of_range"),
        (FieldCode::UnknownEventType, "unknown_event_type"),
        (FieldCode::InvalidUrl, "invalid_url"),
        (FieldCode::NotHttps, "not_https"),
        (FieldCode::InvalidJson, "invalid_json"),
        (FieldCode::Conflict, "conflict"),
    ];
    for (code, name) in table {
        assert_eq!(code.as_str(), name);
        assert_eq!(code.to_string(), name, "Display is the wire name");
        assert_eq!(serde_json::to_value(code).expect("serializes"), json!(name), "serde agrees");
        assert_eq!(serde_json::from_value::<FieldCode>(json!(name)).expect("parses"), code);
        assert_documented(name);
    }
}

#[test]
fn id_errors_have_their_codes_and_messages() {
    use domain::ids::IdError;
    let table = [
        (IdError::Empty, FieldCode::TooShort, "must not be empty"),
        (IdError::TooLong, FieldCode::TooLong, "is too long"),
        (IdError::ControlCharacter, FieldCode::InvalidFormat, "must not contain control characters"),
    ];
    for (error, code, message) in table {
        assert_eq!(error.code(), code, "{error:?}");
        assert_eq!(error.to_string(), message, "{error:?}");
    }
    // As a 400's detail: the field, then the problem and the rule.
    let errors =
        parse_agent_event(&json!({"eventType": "escalationFailed", "platformConversationId": "a\nb"}))
            .expect_err("invalid");
    assert_eq!(
        errors.details()[0].message,
        "platformConversationId must not contain control characters (1–128 characters)"
    );
}

#[test]
fn validation_errors_display_every_problem_on_one_line() {
    let body = json!({"eventType": "message", "platformConversationId": "", "eventId": 9});
    let errors = parse_agent_event(&body).expect_err("invalid");
    assert_eq!(
        errors.to_string(),
        "platformConversationId: platformConversationId must not be empty (1–128 characters) (too_short); \
         eventId: eventId must be a string (invalid_type); text: text is required for a message (required)"
    );
    let one = parse_agent_event(&json!([])).expect_err("invalid");
    assert_eq!(one.to_string(), "body: the body must be a JSON object (not_an_object)");
    assert_eq!(domain::ValidationErrors::default().to_string(), "");
}

#[test]
fn event_types_are_the_documented_names() {
    use domain::agent_event::EVENT_TYPES;
    let actions = [
        (queue_update(), "escalationQueueUpdate"),
        (AgentAction::Success { agent: None, agent_avatar: None }, "escalationSuccess"),
        (AgentAction::Message { text: "t".into() }, "message"),
        (AgentAction::Failed, "escalationFailed"),
        (AgentAction::Disconnect, "agentDisconnect"),
    ];
    for (action, name) in &actions {
        assert_eq!(action.event_type(), *name);
        assert_documented(name);
    }
    assert_eq!(EVENT_TYPES.to_vec(), actions.iter().map(|(_, name)| *name).collect::<Vec<_>>());
}

fn queue_update() -> AgentAction {
    AgentAction::QueueUpdate { queue_position: None, waiting_time: None }
}

/// `value`'s serde name (the form stored and sent), as a string.
fn serde_name<T: serde::Serialize>(value: T) -> String {
    match serde_json::to_value(value).expect("serializes") {
        serde_json::Value::String(name) => name,
        other => panic!("not a plain name: {other}"),
    }
}

#[test]
fn phases_are_the_documented_names() {
    // `currentState`, `phase` (docs/protocol.md §2, §5).
    let table = [
        (Phase::Idle, "idle"),
        (Phase::Requested, "requested"),
        (Phase::Queued, "queued"),
        (Phase::Connected, "connected"),
    ];
    for (phase, name) in table {
        assert_eq!(phase.as_str(), name);
        assert_eq!(serde_name(phase), name, "the store reads back the serde name");
        assert_documented(name);
    }
}

#[test]
fn reject_codes_are_the_documented_names() {
    // The `409` error, `eventRejected.code`, `visitorRejected.code` (docs/protocol.md §5).
    let table = [
        (RejectCode::NoActiveEscalation, "no_active_escalation"),
        (RejectCode::NotConnected, "not_connected"),
        (RejectCode::AlreadyConnected, "already_connected"),
        (RejectCode::StaleEscalation, "stale_escalation"),
        (RejectCode::HeldMessagesFull, "held_messages_full"),
    ];
    for (code, name) in table {
        assert_eq!(code.as_str(), name);
        assert_eq!(serde_name(code), name);
        assert_documented(name);
    }
}

#[test]
fn timer_kinds_are_the_documented_names() {
    // Timer rows and fired timers' event ids (docs/protocol.md §5, timers).
    let table = [
        (TimerKind::NoResponse, "no_response"),
        (TimerKind::Queue, "queue"),
        (TimerKind::Idle, "idle"),
        (TimerKind::Ttl, "ttl"),
    ];
    for (kind, name) in table {
        assert_eq!(kind.as_str(), name);
        assert_eq!(serde_name(kind), name, "the store reads back the serde name");
        assert_documented(name);
    }
}

#[test]
fn outcomes_and_end_reasons_are_the_documented_names() {
    for (kind, name) in [
        (OutcomeKind::Failed, "failed"),
        (OutcomeKind::Cancelled, "cancelled"),
        (OutcomeKind::Ended, "ended"),
    ] {
        assert_eq!(serde_name(kind), name);
        assert_documented(name);
    }
    let reasons = [
        (EndReason::EscalationFailed, "escalation_failed"),
        (EndReason::DisconnectedBeforeConnect, "disconnected_before_connect"),
        (EndReason::FailedAfterConnect, "failed_after_connect"),
        (EndReason::AgentDisconnect, "agent_disconnect"),
        (EndReason::VisitorEnded, "visitor_ended"),
        (EndReason::NoResponseTimeout, "no_response_timeout"),
        (EndReason::QueueTimeout, "queue_timeout"),
        (EndReason::IdleTimeout, "idle_timeout"),
        (EndReason::TtlExpired, "ttl_expired"),
        (EndReason::DeliveryFailed, "delivery_failed"),
    ];
    for (reason, name) in reasons {
        assert_eq!(serde_name(reason), name);
        assert_documented(name);
    }
}

#[test]
fn widget_events_are_the_documented_names() {
    let reason = EndReason::VisitorEnded;
    let message_id = MessageId::parse("m").expect("id");
    let table = [
        (WidgetEvent::EscalationRequested, "escalationRequested"),
        (
            WidgetEvent::EscalationQueueUpdate { queue_position: None, waiting_time: None },
            "escalationQueueUpdate",
        ),
        (WidgetEvent::EscalationSuccess { agent: None, agent_avatar: None }, "escalationSuccess"),
        (WidgetEvent::AgentChanged { agent: None, agent_avatar: None }, "agentChanged"),
        (WidgetEvent::Message { text: "t".into(), message_id }, "message"),
        (WidgetEvent::EscalationFailed { reason }, "escalationFailed"),
        (WidgetEvent::AgentDisconnect { reason }, "agentDisconnect"),
        (WidgetEvent::SessionEnded { reason }, "sessionEnded"),
        (
            WidgetEvent::VisitorRejected { code: RejectCode::HeldMessagesFull, message_id: None },
            "visitorRejected",
        ),
    ];
    for (event, name) in table {
        assert_eq!(event.name(), name);
        assert_eq!(serde_json::to_value(&event).expect("serializes")["type"], name, "the SSE data's type");
        assert_documented(name);
        let terminal = matches!(name, "escalationFailed" | "agentDisconnect" | "sessionEnded");
        assert_eq!(event.is_terminal(), terminal, "{name}");
    }
}

#[test]
fn webhook_event_types_are_the_documented_names() {
    let table = [
        (
            WebhookEvent::WidgetEscalate { escalate_to: None, metadata: None, transcript: None },
            "widgetEscalate",
        ),
        (
            WebhookEvent::WidgetMessage { text: "t".into(), message_id: MessageId::parse("m").expect("id") },
            "widgetMessage",
        ),
        (WebhookEvent::WidgetEndSession { reason: EndReason::IdleTimeout }, "widgetEndSession"),
        (
            WebhookEvent::EventRejected {
                event_id: EventId::parse("e").expect("id"),
                code: RejectCode::NotConnected,
                current_state: Phase::Queued,
            },
            "eventRejected",
        ),
    ];
    for (event, name) in table {
        assert_eq!(event.event_type(), name);
        assert_eq!(serde_json::to_value(&event).expect("serializes")["eventType"], name);
        assert_documented(name);
    }
}

#[test]
fn inputs_are_named_by_their_event_type() {
    let escalation = EscalationId::parse("esc").expect("id");
    let warning = domain::FieldWarning::new("agentAvatar", FieldCode::NotHttps, "dropped");
    let agent =
        Input::Agent { escalation_id: None, action: AgentAction::Failed, warnings: vec![warning.clone()] };
    assert_eq!(agent.name(), "escalationFailed");
    assert_eq!(agent.warnings(), [warning]);
    let table = [
        (
            Input::Escalate {
                escalation_id: escalation.clone(),
                escalate_to: None,
                metadata: None,
                transcript: None,
            },
            "escalate",
        ),
        (
            Input::VisitorMessage { message_id: MessageId::parse("m").expect("id"), text: "t".into() },
            "visitorMessage",
        ),
        (Input::VisitorEnd, "visitorEnd"),
        (Input::TimerFired { escalation_id: escalation.clone(), kind: TimerKind::Idle }, "timerFired"),
        (Input::EscalateUndeliverable { escalation_id: escalation }, "escalateUndeliverable"),
    ];
    for (input, name) in table {
        assert_eq!(input.name(), name);
        assert!(input.warnings().is_empty(), "{name}");
        assert_documented(name);
    }
}

#[test]
fn id_spaces_are_named_and_parsed() {
    let table = [(IdSpace::Agent, "agent"), (IdSpace::Visitor, "visitor"), (IdSpace::System, "system")];
    for (space, name) in table {
        assert_eq!(space.as_str(), name);
        assert_eq!(serde_name(space), name);
        assert_eq!(IdSpace::parse(name), Some(space));
    }
    assert_eq!(IdSpace::parse("Agent"), None);
    assert_eq!(IdSpace::parse(""), None);
}

#[test]
fn verdicts_are_the_documented_names() {
    for (verdict, name) in
        [(Verdict::Applied, "applied"), (Verdict::Duplicate, "duplicate"), (Verdict::Ignored, "ignored")]
    {
        assert_eq!(serde_json::to_value(verdict).expect("serializes"), json!({"status": name}));
        assert_documented(name);
    }
    let rejected = serde_json::to_value(Verdict::Rejected(RejectCode::StaleEscalation)).expect("serializes");
    assert_eq!(rejected, json!({"status": "rejected", "code": "stale_escalation"}));
}
