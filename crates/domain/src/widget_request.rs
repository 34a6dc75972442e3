//! Request bodies of the widget API (docs/protocol.md §3): what the bot platform posts to
//! `escalate` and what the visitor's widget posts to `messages`. Like
//! [`parse_agent_event`](crate::parse_agent_event), each parser reports every
//! problem of a body at once, with its field path and code.

use serde_json::{Map, Value};

use crate::agent_event::MAX_TEXT_CHARS;
use crate::ids::EventId;
use crate::validation::{FieldCode, ValidationErrors, check_storable_json, check_storable_text};

/// Longest `escalateTo` routing hint, in characters.
pub const MAX_ESCALATE_TO_CHARS: usize = 256;

/// Prefix of the event id of a visitor message that carries a `clientMessageId`:
/// a widget retrying the same message sends the same event id, which the worker
/// applies once (docs/protocol.md §5, duplicates).
pub const CLIENT_MESSAGE_EVENT_PREFIX: &str = "vm:";

/// Longest `clientMessageId`, in characters: the prefixed event id must still be
/// a valid [`EventId`].
pub const MAX_CLIENT_MESSAGE_ID_CHARS: usize = EventId::MAX_CHARS - CLIENT_MESSAGE_EVENT_PREFIX.len();

/// `POST /widget/v1/conversations/{id}/escalate`: `{escalateTo?, metadata?, transcript?}`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EscalateRequest {
    /// Routing hint for the contact centre (a team, a skill), opaque to us.
    pub escalate_to: Option<String>,
    /// Opaque metadata, forwarded on `widgetEscalate`. A JSON object.
    pub metadata: Option<Value>,
    /// The conversation so far, forwarded on `widgetEscalate`. A JSON array.
    pub transcript: Option<Value>,
}

/// `POST /widget/v1/conversations/{id}/messages`: `{text, clientMessageId?}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VisitorMessageRequest {
    /// The visitor's text, 1–4096 characters.
    pub text: String,
    /// The widget's own id for the message, 1–125 characters without control
    /// characters; a retry with the same id is a duplicate.
    pub client_message_id: Option<String>,
}

/// Validates an `escalate` body. `null` (an empty request body) means `{}`.
/// Unknown fields are ignored so newer clients keep working.
pub fn parse_escalate_request(body: &Value) -> Result<EscalateRequest, ValidationErrors> {
    let mut errors = ValidationErrors::default();
    let empty = Map::new();
    let obj = match body {
        Value::Null => &empty,
        Value::Object(obj) => obj,
        _ => {
            errors.push("body", FieldCode::NotAnObject, "the body must be a JSON object");
            return Err(errors);
        }
    };

    let escalate_to = match present(obj, "escalateTo") {
        None => None,
        Some(Value::String(s)) => check_text(s, "escalateTo", MAX_ESCALATE_TO_CHARS, &mut errors),
        Some(_) => {
            errors.push("escalateTo", FieldCode::InvalidType, "escalateTo must be a string");
            None
        }
    };
    let metadata = match present(obj, "metadata") {
        None => None,
        Some(v @ Value::Object(_)) => check_storable_json(v, "metadata", &mut errors).then(|| v.clone()),
        Some(_) => {
            errors.push("metadata", FieldCode::InvalidType, "metadata must be a JSON object");
            None
        }
    };
    let transcript = match present(obj, "transcript") {
        None => None,
        Some(v @ Value::Array(_)) => check_storable_json(v, "transcript", &mut errors).then(|| v.clone()),
        Some(_) => {
            errors.push("transcript", FieldCode::InvalidType, "transcript must be a JSON array");
            None
        }
    };

    if errors.is_empty() { Ok(EscalateRequest { escalate_to, metadata, transcript }) } else { Err(errors) }
}

/// Validates a visitor `messages` body. Unknown fields are ignored.
pub fn parse_visitor_message(body: &Value) -> Result<VisitorMessageRequest, ValidationErrors> {
    let mut errors = ValidationErrors::default();
    let Some(obj) = body.as_object() else {
        errors.push("body", FieldCode::NotAnObject, "the body must be a JSON object");
        return Err(errors);
    };

    let text = match present(obj, "text") {
        None => {
            errors.push("text", FieldCode::Required, "text is required");
            None
        }
        Some(Value::String(s)) if s.is_empty() => {
            errors.push("text", FieldCode::TooShort, "text must not be empty");
            None
        }
        Some(Value::String(s)) if s.chars().count() > MAX_TEXT_CHARS => {
            errors.push(
                "text",
                FieldCode::TooLong,
                format!("text must be at most {MAX_TEXT_CHARS} characters"),
            );
            None
        }
        Some(Value::String(s)) => check_storable_text(s, "text", &mut errors).then(|| s.clone()),
        Some(_) => {
            errors.push("text", FieldCode::InvalidType, "text must be a string");
            None
        }
    };
    let client_message_id = match present(obj, "clientMessageId") {
        None => None,
        Some(Value::String(s)) => check_text(s, "clientMessageId", MAX_CLIENT_MESSAGE_ID_CHARS, &mut errors),
        Some(_) => {
            errors.push("clientMessageId", FieldCode::InvalidType, "clientMessageId must be a string");
            None
        }
    };

    match (errors.is_empty(), text) {
        (true, Some(text)) => Ok(VisitorMessageRequest { text, client_message_id }),
        _ => Err(errors),
    }
}

/// A field that is present and not `null`.
fn present<'a>(obj: &'a Map<String, Value>, field: &str) -> Option<&'a Value> {
    obj.get(field).filter(|v| !v.is_null())
}

/// A short identifier-like string: 1–`max` characters, no control characters.
fn check_text(s: &str, field: &str, max: usize, errors: &mut ValidationErrors) -> Option<String> {
    if s.is_empty() {
        errors.push(field, FieldCode::TooShort, format!("{field} must not be empty"));
    } else if s.chars().count() > max {
        errors.push(field, FieldCode::TooLong, format!("{field} must be at most {max} characters"));
    } else if s.chars().any(char::is_control) {
        errors.push(field, FieldCode::InvalidFormat, format!("{field} must not contain control characters"));
    } else {
        return Some(s.to_owned());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn codes(errors: &ValidationErrors) -> Vec<(&str, FieldCode)> {
        errors.details().iter().map(|e| (e.field.as_str(), e.code)).collect()
    }

    #[test]
    fn escalate_accepts_empty_and_full_bodies() {
        assert_eq!(parse_escalate_request(&Value::Null), Ok(EscalateRequest::default()));
        assert_eq!(parse_escalate_request(&json!({})), Ok(EscalateRequest::default()));
        let full =
            json!({"escalateTo": "billing", "metadata": {"k": 1}, "transcript": [{"from": "bot"}], "x": 1});
        let parsed = parse_escalate_request(&full).expect("valid");
        assert_eq!(parsed.escalate_to.as_deref(), Some("billing"));
        assert_eq!(parsed.metadata, Some(json!({"k": 1})));
        assert_eq!(parsed.transcript, Some(json!([{"from": "bot"}])));
    }

    #[test]
    fn escalate_to_is_1_to_256_characters() {
        // docs/protocol.md §3.1: `escalateTo` 1–256 characters.
        assert_eq!(MAX_ESCALATE_TO_CHARS, 256);
        for kept in ["x".to_owned(), "é".repeat(256)] {
            let parsed = parse_escalate_request(&json!({"escalateTo": kept})).expect("valid");
            assert_eq!(parsed.escalate_to, Some(kept));
        }
        let errors = parse_escalate_request(&json!({"escalateTo": "é".repeat(257)})).expect_err("invalid");
        assert_eq!(codes(&errors), [("escalateTo", FieldCode::TooLong)]);
    }

    #[test]
    fn escalate_reports_every_problem() {
        let errors = parse_escalate_request(&json!({"escalateTo": 3, "metadata": [], "transcript": "hi"}))
            .expect_err("invalid");
        assert_eq!(
            codes(&errors),
            [
                ("escalateTo", FieldCode::InvalidType),
                ("metadata", FieldCode::InvalidType),
                ("transcript", FieldCode::InvalidType)
            ]
        );
        let errors =
            parse_escalate_request(&json!({"metadata": {"a": ["\u{0}"]}, "transcript": [{"\u{0}": 1}]}))
                .expect_err("NUL cannot be stored");
        assert_eq!(
            codes(&errors),
            [("metadata.a[0]", FieldCode::InvalidFormat), ("transcript[0]", FieldCode::InvalidFormat)]
        );
        let errors = parse_escalate_request(&json!([])).expect_err("invalid");
        assert_eq!(codes(&errors), [("body", FieldCode::NotAnObject)]);
        let errors = parse_escalate_request(&json!({"escalateTo": "x".repeat(257)})).expect_err("invalid");
        assert_eq!(codes(&errors), [("escalateTo", FieldCode::TooLong)]);
        let errors = parse_escalate_request(&json!({"escalateTo": ""})).expect_err("invalid");
        assert_eq!(codes(&errors), [("escalateTo", FieldCode::TooShort)]);
        let errors = parse_escalate_request(&json!({"escalateTo": "a\tb"})).expect_err("invalid");
        assert_eq!(codes(&errors), [("escalateTo", FieldCode::InvalidFormat)]);
    }

    #[test]
    fn visitor_message_accepts_text_and_client_id() {
        let parsed = parse_visitor_message(&json!({"text": "hi", "clientMessageId": "m-1"})).expect("valid");
        assert_eq!(
            parsed,
            VisitorMessageRequest { text: "hi".into(), client_message_id: Some("m-1".into()) }
        );
        let parsed = parse_visitor_message(&json!({"text": "é".repeat(4096)})).expect("valid");
        assert_eq!(parsed.client_message_id, None);
        // docs/protocol.md §3.4: `clientMessageId` 1–125 characters, so that `vm:` + it is an event id.
        assert_eq!(MAX_CLIENT_MESSAGE_ID_CHARS, 125);
        let longest = "c".repeat(MAX_CLIENT_MESSAGE_ID_CHARS);
        let id = parse_visitor_message(&json!({"text": "t", "clientMessageId": longest}))
            .expect("valid")
            .client_message_id
            .expect("id");
        assert!(EventId::parse(format!("{CLIENT_MESSAGE_EVENT_PREFIX}{id}")).is_ok());
    }

    #[test]
    fn visitor_message_reports_every_problem() {
        let cases = [
            (json!({}), vec![("text", FieldCode::Required)]),
            (json!({"text": ""}), vec![("text", FieldCode::TooShort)]),
            (json!({"text": "é".repeat(4097)}), vec![("text", FieldCode::TooLong)]),
            (json!({"text": 1}), vec![("text", FieldCode::InvalidType)]),
            (json!({"text": "a\u{0}"}), vec![("text", FieldCode::InvalidFormat)]),
            (json!("hi"), vec![("body", FieldCode::NotAnObject)]),
            (
                json!({"clientMessageId": ""}),
                vec![("text", FieldCode::Required), ("clientMessageId", FieldCode::TooShort)],
            ),
            (
                json!({"text": "t", "clientMessageId": "c".repeat(MAX_CLIENT_MESSAGE_ID_CHARS + 1)}),
                vec![("clientMessageId", FieldCode::TooLong)],
            ),
            (
                json!({"text": "t", "clientMessageId": "a\nb"}),
                vec![("clientMessageId", FieldCode::InvalidFormat)],
            ),
            (json!({"text": "t", "clientMessageId": 7}), vec![("clientMessageId", FieldCode::InvalidType)]),
        ];
        for (body, expected) in cases {
            let errors = parse_visitor_message(&body).expect_err("invalid");
            assert_eq!(codes(&errors), expected, "{body}");
        }
    }
}
