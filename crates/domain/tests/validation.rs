//! Every validation error case of SPEC §2, each asserting its field path and
//! code, plus the seed document's examples, which must stay accepted.

use domain::agent_event::AgentAction;
use domain::{FieldCode, parse_agent_event};
use serde_json::{Value, json};

/// The single problem of `body`, as (field, code).
fn only_error(body: Value) -> (String, FieldCode) {
    let errors = parse_agent_event(&body).expect_err("must be invalid");
    assert_eq!(errors.details().len(), 1, "exactly one problem in {body}: {errors}");
    let e = &errors.details()[0];
    assert!(!e.message.is_empty());
    (e.field.clone(), e.code)
}

macro_rules! invalid {
    ($($name:ident: $body:expr => $field:literal, $code:ident;)*) => {$(
        #[test]
        fn $name() {
            assert_eq!(only_error($body), ($field.to_owned(), FieldCode::$code));
        }
    )*};
}

fn qu(field: &str, value: Value) -> Value {
    let mut body = json!({"eventType": "escalationQueueUpdate", "platformConversationId": "c1"});
    body[field] = value;
    body
}

fn with(event_type: &str, field: &str, value: Value) -> Value {
    let mut body = json!({"eventType": event_type, "platformConversationId": "c1", "text": "t"});
    body[field] = value;
    body
}

invalid! {
    body_array_is_not_an_object: json!([1, 2]) => "body", NotAnObject;
    body_string_is_not_an_object: json!("message") => "body", NotAnObject;
    event_type_missing_is_required: json!({"platformConversationId": "c1"}) => "eventType", Required;
    event_type_null_is_required: json!({"eventType": null, "platformConversationId": "c1"}) => "eventType", Required;
    event_type_number_is_invalid_type: json!({"eventType": 3, "platformConversationId": "c1"}) => "eventType", InvalidType;
    event_type_unknown_is_unknown_event_type: json!({"eventType": "agentTyping", "platformConversationId": "c1"}) => "eventType", UnknownEventType;
    event_type_wrong_case_is_unknown_event_type: json!({"eventType": "Message", "platformConversationId": "c1", "text": "x"}) => "eventType", UnknownEventType;
    conversation_missing_is_required: json!({"eventType": "escalationFailed"}) => "platformConversationId", Required;
    conversation_empty_is_too_short: json!({"eventType": "escalationFailed", "platformConversationId": ""}) => "platformConversationId", TooShort;
    conversation_129_chars_is_too_long: json!({"eventType": "escalationFailed", "platformConversationId": "c".repeat(129)}) => "platformConversationId", TooLong;
    conversation_number_is_invalid_type: json!({"eventType": "escalationFailed", "platformConversationId": 123456789}) => "platformConversationId", InvalidType;
    conversation_control_char_is_invalid_format: json!({"eventType": "escalationFailed", "platformConversationId": "a\u{0}b"}) => "platformConversationId", InvalidFormat;
    queue_position_letters_is_invalid_format: qu("queuePosition", json!("three")) => "queuePosition", InvalidFormat;
    queue_position_empty_string_is_invalid_format: qu("queuePosition", json!("")) => "queuePosition", InvalidFormat;
    queue_position_negative_string_is_invalid_format: qu("queuePosition", json!("-1")) => "queuePosition", InvalidFormat;
    queue_position_negative_is_not_a_non_negative_integer: qu("queuePosition", json!(-1)) => "queuePosition", NotANonNegativeInteger;
    queue_position_fraction_is_not_a_non_negative_integer: qu("queuePosition", json!(1.5)) => "queuePosition", NotANonNegativeInteger;
    queue_position_bool_is_invalid_type: qu("queuePosition", json!(true)) => "queuePosition", InvalidType;
    queue_position_object_is_invalid_type: qu("queuePosition", json!({"n": 1})) => "queuePosition", InvalidType;
    queue_position_huge_is_out_of_range: qu("queuePosition", json!(2_000_000)) => "queuePosition", OutOfRange;
    waiting_time_letters_is_invalid_format: qu("waitingTime", json!("12 min")) => "waitingTime", InvalidFormat;
    waiting_time_negative_is_not_a_non_negative_integer: qu("waitingTime", json!(-5)) => "waitingTime", NotANonNegativeInteger;
    waiting_time_array_is_invalid_type: qu("waitingTime", json!([12])) => "waitingTime", InvalidType;
    waiting_time_huge_string_is_out_of_range: qu("waitingTime", json!("99999999999999999999999")) => "waitingTime", OutOfRange;
    agent_129_chars_is_too_long: with("escalationSuccess", "agent", json!("a".repeat(129))) => "agent", TooLong;
    agent_number_is_invalid_type: with("escalationSuccess", "agent", json!(7)) => "agent", InvalidType;
    agent_avatar_http_is_not_https: with("escalationSuccess", "agentAvatar", json!("http://cdn.example/a.png")) => "agentAvatar", NotHttps;
    agent_avatar_garbage_is_invalid_url: with("escalationSuccess", "agentAvatar", json!("not a url")) => "agentAvatar", InvalidUrl;
    agent_avatar_number_is_invalid_type: with("escalationSuccess", "agentAvatar", json!(1)) => "agentAvatar", InvalidType;
    text_missing_is_required: json!({"eventType": "message", "platformConversationId": "c1"}) => "text", Required;
    text_null_is_required: with("message", "text", Value::Null) => "text", Required;
    text_empty_is_too_short: with("message", "text", json!("")) => "text", TooShort;
    text_4097_chars_is_too_long: with("message", "text", json!("x".repeat(4097))) => "text", TooLong;
    text_number_is_invalid_type: with("message", "text", json!(42)) => "text", InvalidType;
    event_id_empty_is_too_short: with("message", "eventId", json!("")) => "eventId", TooShort;
    event_id_129_chars_is_too_long: with("message", "eventId", json!("e".repeat(129))) => "eventId", TooLong;
    event_id_number_is_invalid_type: with("message", "eventId", json!(5)) => "eventId", InvalidType;
    escalation_id_empty_is_too_short: with("message", "escalationId", json!("")) => "escalationId", TooShort;
    escalation_id_bool_is_invalid_type: with("message", "escalationId", json!(false)) => "escalationId", InvalidType;
}

#[test]
fn every_problem_is_reported_at_once_in_field_order() {
    let body = json!({
        "eventType": "message",
        "platformConversationId": "",
        "eventId": 9,
        "text": ""
    });
    let errors = parse_agent_event(&body).expect_err("invalid");
    let got: Vec<(&str, FieldCode)> = errors.details().iter().map(|e| (e.field.as_str(), e.code)).collect();
    assert_eq!(
        got,
        vec![
            ("platformConversationId", FieldCode::TooShort),
            ("eventId", FieldCode::InvalidType),
            ("text", FieldCode::TooShort)
        ]
    );
    assert_eq!(
        errors.to_body()["details"][0],
        json!({"field": "platformConversationId", "code": "too_short", "message": errors.details()[0].message})
    );
    assert_eq!(errors.to_body()["error"], "invalid_body");
}

#[test]
fn seed_document_examples_are_accepted() {
    let examples = [
        json!({"eventType": "escalationQueueUpdate", "platformConversationId": "123456789", "queuePosition": "3", "waitingTime": "12"}),
        json!({"eventType": "escalationSuccess", "platformConversationId": "123456789", "agent": "John Smith"}),
        json!({"eventType": "message", "platformConversationId": "123456789", "text": "Hello, I'm John, your agent, let me help you with your issue"}),
        json!({"eventType": "escalationFailed", "platformConversationId": "123456789"}),
        json!({"eventType": "agentDisconnect", "platformConversationId": "123456789"}),
    ];
    for body in examples {
        let event = parse_agent_event(&body).unwrap_or_else(|e| panic!("{body} rejected: {e}"));
        assert_eq!(event.platform_conversation_id.as_str(), "123456789");
        assert_eq!(event.action.event_type(), body["eventType"]);
    }
}

#[test]
fn counts_accept_strings_and_integers_alike() {
    let as_strings = parse_agent_event(&qu("queuePosition", json!("3"))).expect("valid");
    let as_number = parse_agent_event(&qu("queuePosition", json!(3))).expect("valid");
    assert_eq!(as_strings, as_number);
    assert_eq!(as_number.action, AgentAction::QueueUpdate { queue_position: Some(3), waiting_time: None });
}

#[test]
fn unknown_fields_and_optional_ids_are_kept_compatible() {
    let body = json!({
        "eventType": "message", "platformConversationId": "c1", "text": "hi",
        "eventId": "e-1", "escalationId": "x-1", "futureField": {"a": 1}
    });
    let event = parse_agent_event(&body).expect("valid");
    assert_eq!(event.event_id.map(|e| e.to_string()).as_deref(), Some("e-1"));
    assert_eq!(event.escalation_id.map(|e| e.to_string()).as_deref(), Some("x-1"));
}

#[test]
fn canonical_form_round_trips_through_serde() {
    let event = parse_agent_event(&json!({
        "eventType": "escalationQueueUpdate", "platformConversationId": "c1", "queuePosition": "4", "eventId": "e"
    }))
    .expect("valid");
    let wire = serde_json::to_value(&event).expect("serializes");
    assert_eq!(
        wire,
        json!({"eventType": "escalationQueueUpdate", "platformConversationId": "c1", "queuePosition": 4, "eventId": "e"})
    );
    let back: domain::AgentEvent = serde_json::from_value(wire).expect("deserializes");
    assert_eq!(back, event);
    // The serde path is lenient on counts too, like the original API.
    let lenient: domain::AgentEvent = serde_json::from_value(json!({
        "eventType": "escalationQueueUpdate", "platformConversationId": "c1", "waitingTime": "12"
    }))
    .expect("string counts accepted");
    assert_eq!(lenient.action, AgentAction::QueueUpdate { queue_position: None, waiting_time: Some(12) });
}

// PostgreSQL cannot store U+0000 (issue 11): refused at the edge, not dead-lettered later.
invalid! {
    message_text_with_nul_is_invalid_format: with("message", "text", json!("a\u{0}b")) => "text", InvalidFormat;
    agent_with_nul_is_invalid_format: with("escalationSuccess", "agent", json!("Ann\u{0}")) => "agent", InvalidFormat;
}
