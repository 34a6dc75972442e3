//! Field errors: every problem of a request, each with a field path and a code,
//! collected at once and rendered as the 400 body of docs/protocol.md §2:
//! `{"error":"invalid_body","details":[{"field":"text","code":"required",...}]}`.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt;

/// The machine-readable reason a field is invalid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldCode {
    /// The body is not a JSON object.
    NotAnObject,
    /// A required field is missing (or `null`).
    Required,
    /// The field has the wrong JSON type.
    InvalidType,
    /// Empty where at least one character is required.
    TooShort,
    /// Longer than allowed.
    TooLong,
    /// The right type but a malformed value (control characters).
    InvalidFormat,
    /// A number where only non-negative integers are accepted: below zero or
    /// fractional.
    NotANonNegativeInteger,
    /// A number too large to be represented.
    OutOfRange,
    /// `eventType` is not one of the agent events.
    UnknownEventType,
    /// Not a URL.
    InvalidUrl,
    /// A URL whose scheme is not `https`.
    NotHttps,
    /// The body is not valid JSON.
    InvalidJson,
    /// Two values that must agree do not (for example `eventId` and the
    /// `Idempotency-Key` header).
    Conflict,
}

impl FieldCode {
    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            FieldCode::NotAnObject => "not_an_object",
            FieldCode::Required => "required",
            FieldCode::InvalidType => "invalid_type",
            FieldCode::TooShort => "too_short",
            FieldCode::TooLong => "too_long",
            FieldCode::InvalidFormat => "invalid_format",
            FieldCode::NotANonNegativeInteger => "not_a_non_negative_integer",
            FieldCode::OutOfRange => "out_of_range",
            FieldCode::UnknownEventType => "unknown_event_type",
            FieldCode::InvalidUrl => "invalid_url",
            FieldCode::NotHttps => "not_https",
            FieldCode::InvalidJson => "invalid_json",
            FieldCode::Conflict => "conflict",
        }
    }
}

impl fmt::Display for FieldCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One invalid field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// JSON path of the field, for example `text` or `queuePosition`; `body`
    /// for the document itself.
    pub field: String,
    /// What is wrong.
    pub code: FieldCode,
    /// A sentence for the human reading the response.
    pub message: String,
}

impl FieldError {
    /// A field error with its message.
    pub fn new(field: &str, code: FieldCode, message: impl Into<String>) -> Self {
        Self { field: field.to_owned(), code, message: message.into() }
    }
}

/// A display-only field that was dropped instead of failing its event
/// (docs/protocol.md §2: an `agentAvatar` that is not an https URL). The event is applied
/// without it, and its verdict and timeline carry this warning.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldWarning {
    /// JSON path of the dropped field, for example `agentAvatar`.
    pub field: String,
    /// Why it was dropped: the code it would have been refused with.
    pub code: FieldCode,
    /// A sentence for the human reading the verdict.
    pub message: String,
}

impl FieldWarning {
    /// A warning with its message.
    pub fn new(field: &str, code: FieldCode, message: impl Into<String>) -> Self {
        Self { field: field.to_owned(), code, message: message.into() }
    }
}

/// Every problem found in one request, in the order the fields were checked.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ValidationErrors(pub Vec<FieldError>);

impl ValidationErrors {
    /// Adds one problem.
    pub fn push(&mut self, field: &str, code: FieldCode, message: impl Into<String>) {
        self.0.push(FieldError::new(field, code, message));
    }

    /// True when nothing was found wrong.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The problems, in order.
    pub fn details(&self) -> &[FieldError] {
        &self.0
    }

    /// The `400` body of docs/protocol.md §2.
    pub fn to_body(&self) -> serde_json::Value {
        serde_json::json!({ "error": "invalid_body", "details": self.0 })
    }
}

/// PostgreSQL refuses U+0000 in `text` and in `jsonb` (as the JSON escape `\u0000`), and the
/// worker stores every accepted body in one or the other, so a NUL would turn
/// a `200` into a dead-lettered event (docs/protocol.md §6: "bad input gets a clear 4xx").
pub const NUL: char = '\u{0}';

/// Reports a string that the database could not store, against `field`.
/// Returns whether it is storable.
pub fn check_storable_text(s: &str, field: &str, errors: &mut ValidationErrors) -> bool {
    if s.contains(NUL) {
        errors.push(field, FieldCode::InvalidFormat, format!("{field} must not contain U+0000 (NUL)"));
        return false;
    }
    true
}

/// Reports the first string or object key anywhere inside `value` that the
/// database could not store, with its path below `field` (`metadata.a[2].b`).
/// Returns whether the whole value is storable.
pub fn check_storable_json(value: &Value, field: &str, errors: &mut ValidationErrors) -> bool {
    match first_unstorable(value, field.to_owned()) {
        None => true,
        Some((path, what)) => {
            errors.push(&path, FieldCode::InvalidFormat, format!("{what} must not contain U+0000 (NUL)"));
            false
        }
    }
}

/// The path of the first NUL in `value` and whether it is in a key or a value.
fn first_unstorable(value: &Value, path: String) -> Option<(String, &'static str)> {
    match value {
        Value::String(s) => s.contains(NUL).then_some((path, "a string")),
        Value::Array(items) => {
            items.iter().enumerate().find_map(|(i, item)| first_unstorable(item, format!("{path}[{i}]")))
        }
        Value::Object(map) => map.iter().find_map(|(key, item)| {
            // The key itself is not printed: it holds the very character.
            if key.contains(NUL) {
                Some((path.clone(), "an object key"))
            } else {
                first_unstorable(item, format!("{path}.{key}"))
            }
        }),
        Value::Null | Value::Bool(_) | Value::Number(_) => None,
    }
}

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{}: {} ({})", e.field, e.message, e.code)?;
        }
        Ok(())
    }
}

impl std::error::Error for ValidationErrors {}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nul_is_found_in_values_and_keys_with_its_path() {
        let mut errors = ValidationErrors::default();
        assert!(check_storable_json(&json!({"a": [1, {"b": "ok"}], "c": null}), "metadata", &mut errors));
        assert!(!check_storable_json(&json!({"a": [1, {"b": "x\u{0}"}]}), "metadata", &mut errors));
        assert!(!check_storable_json(&json!([{"k\u{0}": 1}]), "transcript", &mut errors));
        assert!(!check_storable_text("a\u{0}", "text", &mut errors));
        assert!(check_storable_text("a\nb\u{1}", "text", &mut errors), "only NUL is unstorable");
        let fields: Vec<&str> = errors.details().iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["metadata.a[1].b", "transcript[0]", "text"]);
        assert!(errors.details().iter().all(|e| e.code == FieldCode::InvalidFormat));
    }
}
