//! Field errors: every problem of a request, each with a field path and a code,
//! collected at once and rendered as the 400 body of docs/protocol.md §2:
//! `{"error":"invalid_body","details":[{"field":"text","code":"required",...}]}`.

use serde::{Deserialize, Serialize};
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
