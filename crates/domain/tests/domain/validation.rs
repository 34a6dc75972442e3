//! Every validation error case of docs/protocol.md §2, each asserting its field path and
//! code, the lenient display fields at their boundaries, plus the seed
//! document's examples, which must stay accepted.

use domain::agent_event::AgentAction;
use domain::{DisplayValue, FieldCode, FieldWarning, parse_agent_event};
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
    queue_position_empty_string_is_too_short: qu("queuePosition", json!("")) => "queuePosition", TooShort;
    queue_position_33_chars_is_too_long: qu("queuePosition", json!("9".repeat(33))) => "queuePosition", TooLong;
    queue_position_negative_is_not_a_non_negative_integer: qu("queuePosition", json!(-1)) => "queuePosition", NotANonNegativeInteger;
    queue_position_fraction_is_not_a_non_negative_integer: qu("queuePosition", json!(1.5)) => "queuePosition", NotANonNegativeInteger;
    queue_position_float_is_not_a_non_negative_integer: qu("queuePosition", json!(3.0)) => "queuePosition", NotANonNegativeInteger;
    queue_position_bool_is_invalid_type: qu("queuePosition", json!(true)) => "queuePosition", InvalidType;
    queue_position_object_is_invalid_type: qu("queuePosition", json!({"n": 1})) => "queuePosition", InvalidType;
    queue_position_array_is_invalid_type: qu("queuePosition", json!([3])) => "queuePosition", InvalidType;
    queue_position_beyond_u64_is_out_of_range: qu("queuePosition", serde_json::from_str::<Value>("18446744073709551616").expect("json")) => "queuePosition", OutOfRange;
    waiting_time_empty_string_is_too_short: qu("waitingTime", json!("")) => "waitingTime", TooShort;
    waiting_time_33_multibyte_chars_is_too_long: qu("waitingTime", json!("é".repeat(33))) => "waitingTime", TooLong;
    waiting_time_negative_is_not_a_non_negative_integer: qu("waitingTime", json!(-5)) => "waitingTime", NotANonNegativeInteger;
    waiting_time_float_is_not_a_non_negative_integer: qu("waitingTime", json!(12.5)) => "waitingTime", NotANonNegativeInteger;
    waiting_time_bool_is_invalid_type: qu("waitingTime", json!(false)) => "waitingTime", InvalidType;
    waiting_time_array_is_invalid_type: qu("waitingTime", json!([12])) => "waitingTime", InvalidType;
    agent_129_chars_is_too_long: with("escalationSuccess", "agent", json!("a".repeat(129))) => "agent", TooLong;
    agent_number_is_invalid_type: with("escalationSuccess", "agent", json!(7)) => "agent", InvalidType;
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

/// The queue update's (queuePosition, waitingTime) as parsed from `field: value`.
fn display_of(field: &str, value: Value) -> Option<DisplayValue> {
    let event =
        parse_agent_event(&qu(field, value.clone())).unwrap_or_else(|e| panic!("{value} rejected: {e}"));
    assert!(event.warnings.is_empty());
    match event.action {
        AgentAction::QueueUpdate { queue_position, waiting_time } => {
            if field == "queuePosition" {
                queue_position
            } else {
                waiting_time
            }
        }
        other => panic!("not a queue update: {other:?}"),
    }
}

#[test]
fn display_values_are_kept_as_given() {
    for field in ["queuePosition", "waitingTime"] {
        assert_eq!(display_of(field, json!(3)), Some(DisplayValue::Integer(3)));
        assert_eq!(display_of(field, json!(0)), Some(DisplayValue::Integer(0)));
        assert_eq!(display_of(field, json!(2_000_000)), Some(DisplayValue::Integer(2_000_000)));
        assert_eq!(display_of(field, json!(u64::MAX)), Some(DisplayValue::Integer(u64::MAX)));
        for text in ["3", "5-10", "12.5", "3rd", "-1", " ", "12 min", &"9".repeat(32), &"é".repeat(32)] {
            assert_eq!(display_of(field, json!(text)), Some(DisplayValue::Text(text.to_owned())), "{text:?}");
        }
        assert_eq!(display_of(field, Value::Null), None, "null means not given");
    }
    // A string stays a string: "3" is not turned into 3.
    let as_string = parse_agent_event(&qu("queuePosition", json!("3"))).expect("valid");
    let as_number = parse_agent_event(&qu("queuePosition", json!(3))).expect("valid");
    assert_ne!(as_string, as_number);
}

#[test]
fn both_display_fields_are_reported_at_once() {
    let mut body = qu("queuePosition", json!(""));
    body["waitingTime"] = json!(true);
    let errors = parse_agent_event(&body).expect_err("invalid");
    let got: Vec<(&str, FieldCode)> = errors.details().iter().map(|e| (e.field.as_str(), e.code)).collect();
    assert_eq!(got, [("queuePosition", FieldCode::TooShort), ("waitingTime", FieldCode::InvalidType)]);
    assert!(errors.details()[0].message.starts_with("queuePosition "), "the message names the field");
}

/// The avatar kept and the warnings of an `escalationSuccess` with `agentAvatar: value`.
fn avatar_of(value: Value) -> (Option<String>, Vec<FieldWarning>) {
    let event = parse_agent_event(&with("escalationSuccess", "agentAvatar", value.clone()))
        .unwrap_or_else(|e| panic!("{value} must not fail the event: {e}"));
    match event.action {
        AgentAction::Success { agent_avatar, .. } => (agent_avatar, event.warnings),
        other => panic!("not a success: {other:?}"),
    }
}

#[test]
fn an_https_avatar_is_kept_without_warning() {
    let url = "https://cdn.example/ann.png";
    assert_eq!(avatar_of(json!(url)), (Some(url.to_owned()), Vec::new()));
}

#[test]
fn an_avatar_that_is_not_https_is_dropped_with_a_warning() {
    let cases = [
        (json!("http://cdn.example/a.png"), FieldCode::NotHttps),
        (json!("data:image/png;base64,AAAA"), FieldCode::NotHttps),
        (json!("https://"), FieldCode::InvalidUrl),
        (json!("/avatars/a.png"), FieldCode::InvalidUrl),
        (json!("not a url"), FieldCode::InvalidUrl),
        (json!(""), FieldCode::InvalidUrl),
        (json!(1), FieldCode::InvalidType),
        (json!({"url": "https://cdn.example/a.png"}), FieldCode::InvalidType),
        (json!(format!("https://cdn.example/{}", "a".repeat(2048))), FieldCode::TooLong),
    ];
    for (value, code) in cases {
        let (kept, warnings) = avatar_of(value.clone());
        assert_eq!(kept, None, "{value}");
        assert_eq!(warnings.len(), 1, "{value}");
        assert_eq!((warnings[0].field.as_str(), warnings[0].code), ("agentAvatar", code), "{value}");
        assert!(warnings[0].message.contains("dropped"), "{}", warnings[0].message);
    }
    // The rest of the event is untouched, and a bad agent name still fails it.
    let body = json!({"eventType": "escalationSuccess", "platformConversationId": "c1",
                      "agent": "Ann", "agentAvatar": "http://x.example/a.png"});
    let event = parse_agent_event(&body).expect("applied without the avatar");
    assert_eq!(event.action, AgentAction::Success { agent: Some("Ann".into()), agent_avatar: None });
    let mut body = body;
    body["agent"] = json!(7);
    assert_eq!(only_error(body), ("agent".to_owned(), FieldCode::InvalidType));
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
        "eventType": "escalationQueueUpdate", "platformConversationId": "c1", "queuePosition": "4",
        "waitingTime": 12, "eventId": "e"
    }))
    .expect("valid");
    let wire = serde_json::to_value(&event).expect("serializes");
    assert_eq!(
        wire,
        json!({"eventType": "escalationQueueUpdate", "platformConversationId": "c1", "queuePosition": "4",
               "waitingTime": 12, "eventId": "e"})
    );
    let back: domain::AgentEvent = serde_json::from_value(wire).expect("deserializes");
    assert_eq!(back, event);
    // Integer counts written before display values existed still read back.
    let old: domain::AgentEvent = serde_json::from_value(json!({
        "eventType": "escalationQueueUpdate", "platformConversationId": "c1", "waitingTime": 12
    }))
    .expect("integer counts accepted");
    assert_eq!(
        old.action,
        AgentAction::QueueUpdate { queue_position: None, waiting_time: Some(12u32.into()) }
    );
    // The serde path holds display values to the request rules.
    let bad = serde_json::from_value::<domain::AgentEvent>(json!({
        "eventType": "escalationQueueUpdate", "platformConversationId": "c1", "waitingTime": ""
    }));
    assert!(bad.is_err());
}

#[test]
fn warnings_travel_with_the_canonical_form() {
    let event = parse_agent_event(&with("escalationSuccess", "agentAvatar", json!("http://x.example/a.png")))
        .expect("valid");
    let wire = serde_json::to_value(&event).expect("serializes");
    assert_eq!(wire["warnings"][0]["field"], "agentAvatar");
    assert_eq!(wire["warnings"][0]["code"], "not_https");
    let back: domain::AgentEvent = serde_json::from_value(wire).expect("deserializes");
    assert_eq!(back, event);
}

// PostgreSQL cannot store U+0000 (issue 11): refused at the edge, not dead-lettered later.
invalid! {
    message_text_with_nul_is_invalid_format: with("message", "text", json!("a\u{0}b")) => "text", InvalidFormat;
    agent_with_nul_is_invalid_format: with("escalationSuccess", "agent", json!("Ann\u{0}")) => "agent", InvalidFormat;
}

// ---- limits: each one at the limit (kept) and one past it (refused) --------

/// The body of a `kind` event with `field` set to `value`, as parsed.
fn parsed(event_type: &str, field: &str, value: Value) -> Result<domain::AgentEvent, (String, FieldCode)> {
    let body = with(event_type, field, value);
    parse_agent_event(&body).map_err(|errors| {
        assert_eq!(errors.details().len(), 1, "{errors}");
        (errors.details()[0].field.clone(), errors.details()[0].code)
    })
}

/// The id `field` of `event`, as kept.
fn id_field(event: &domain::AgentEvent, field: &str) -> Option<String> {
    match field {
        "platformConversationId" => Some(event.platform_conversation_id.to_string()),
        "eventId" => event.event_id.as_ref().map(ToString::to_string),
        _ => event.escalation_id.as_ref().map(ToString::to_string),
    }
}

#[test]
fn ids_are_1_to_128_characters() {
    // docs/protocol.md §2: ids are 1–128 characters (counted as characters, not bytes).
    for field in ["platformConversationId", "eventId", "escalationId"] {
        for kept in ["x".to_owned(), "é".repeat(128)] {
            let event = parsed("message", field, json!(kept)).unwrap_or_else(|e| panic!("{field}: {e:?}"));
            assert_eq!(id_field(&event, field), Some(kept), "{field}");
        }
        let too_long = parsed("message", field, json!("é".repeat(129))).err();
        assert_eq!(too_long, Some((field.to_owned(), FieldCode::TooLong)));
        assert_eq!(parsed("message", field, json!("")).err(), Some((field.to_owned(), FieldCode::TooShort)));
    }
}

#[test]
fn text_is_1_to_4096_characters() {
    let at_limit = "é".repeat(4096);
    let event = parsed("message", "text", json!(at_limit)).expect("4096 characters are accepted");
    assert_eq!(event.action, AgentAction::Message { text: at_limit });
    assert_eq!(
        parsed("message", "text", json!("é".repeat(4097))).err(),
        Some(("text".to_owned(), FieldCode::TooLong))
    );
    let one = parsed("message", "text", json!("x")).expect("one character");
    assert_eq!(one.action, AgentAction::Message { text: "x".into() });
}

#[test]
fn agent_is_at_most_128_characters() {
    let at_limit = "é".repeat(128);
    let event = parsed("escalationSuccess", "agent", json!(at_limit)).expect("128 characters are accepted");
    assert_eq!(event.action, AgentAction::Success { agent: Some(at_limit), agent_avatar: None });
    assert_eq!(
        parsed("escalationSuccess", "agent", json!("é".repeat(129))).err(),
        Some(("agent".to_owned(), FieldCode::TooLong))
    );
}

#[test]
fn display_strings_are_1_to_32_characters() {
    for field in ["queuePosition", "waitingTime"] {
        let at_limit = "é".repeat(32);
        assert_eq!(display_of(field, json!(at_limit)), Some(DisplayValue::Text(at_limit.clone())));
        assert_eq!(display_of(field, json!("x")), Some(DisplayValue::Text("x".into())));
        assert_eq!(only_error(qu(field, json!("é".repeat(33)))), (field.to_owned(), FieldCode::TooLong));
    }
}

#[test]
fn an_avatar_of_2048_characters_is_kept_and_one_longer_is_dropped() {
    let prefix = "https://cdn.example/";
    let at_limit = format!("{prefix}{}", "a".repeat(2048 - prefix.len()));
    assert_eq!(at_limit.chars().count(), 2048);
    assert_eq!(avatar_of(json!(at_limit)), (Some(at_limit.clone()), Vec::new()));
    let (kept, warnings) = avatar_of(json!(format!("{at_limit}a")));
    assert_eq!(kept, None);
    assert_eq!(warnings.iter().map(|w| w.code).collect::<Vec<_>>(), [FieldCode::TooLong]);
    // With the name and the avatar both given, both are kept.
    let body = json!({"eventType": "escalationSuccess", "platformConversationId": "c1",
                      "agent": "Ann", "agentAvatar": "https://cdn.example/ann.png"});
    let event = parse_agent_event(&body).expect("valid");
    assert_eq!(
        event.action,
        AgentAction::Success {
            agent: Some("Ann".into()),
            agent_avatar: Some("https://cdn.example/ann.png".into())
        }
    );
    assert!(event.warnings.is_empty());
}
