//! Display values: `queuePosition` and `waitingTime` of
//! `escalationQueueUpdate` (docs/protocol.md §2). The contact centre sends them for the
//! widget to show; we check their shape, never their meaning, and pass them
//! on exactly as given: an integer stays an integer, a string stays a string.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::validation::FieldCode;

/// Longest display string, in characters.
pub const MAX_DISPLAY_CHARS: usize = 32;

/// A value shown to the visitor as given: a non-negative integer (`3`) or a
/// non-empty string of at most [`MAX_DISPLAY_CHARS`] characters (`"3"`,
/// `"5-10"`, `"12.5"`, `"3rd"`).
///
/// Serialized untagged, so the wire keeps the caller's JSON type.
/// Deserialization applies the same rules as [`DisplayValue::from_json`], so
/// a value read back from the broker or the database is as valid as one
/// taken from a request.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(untagged)]
pub enum DisplayValue {
    /// A JSON integer, zero or more.
    Integer(u64),
    /// A JSON string, 1–32 characters, shown verbatim.
    Text(String),
}

/// Why a JSON value is not a [`DisplayValue`]: the field code and a phrase
/// that completes "`field` …".
pub type DisplayError = (FieldCode, String);

impl DisplayValue {
    /// Checks one JSON value. `null` is not handled here: an absent field and
    /// a `null` one both mean "not given" to the callers.
    pub fn from_json(value: &Value) -> Result<Self, DisplayError> {
        const EXPECTED: &str = "must be a non-negative integer or a string of 1–32 characters";
        match value {
            Value::Number(n) => match n.as_u64() {
                Some(n) => Ok(DisplayValue::Integer(n)),
                // Beyond u64, serde_json reads an integer as a float.
                None if n.as_f64().is_some_and(|f| f >= u64::MAX as f64 && f.fract() == 0.0) => {
                    Err((FieldCode::OutOfRange, format!("must be at most {}", u64::MAX)))
                }
                None => Err((
                    FieldCode::NotANonNegativeInteger,
                    "must be a non-negative integer when it is a number (send other values as a string)"
                        .into(),
                )),
            },
            Value::String(s) if s.is_empty() => Err((FieldCode::TooShort, "must not be empty".into())),
            Value::String(s) if s.chars().count() > MAX_DISPLAY_CHARS => {
                Err((FieldCode::TooLong, format!("must be at most {MAX_DISPLAY_CHARS} characters")))
            }
            // PostgreSQL's jsonb cannot hold U+0000: accepted, it could not be stored.
            Value::String(s) if s.contains('\0') => {
                Err((FieldCode::InvalidFormat, "must not contain U+0000 (NUL)".into()))
            }
            Value::String(s) => Ok(DisplayValue::Text(s.clone())),
            _ => Err((FieldCode::InvalidType, EXPECTED.into())),
        }
    }
}

impl From<u64> for DisplayValue {
    fn from(n: u64) -> Self {
        DisplayValue::Integer(n)
    }
}

impl From<u32> for DisplayValue {
    fn from(n: u32) -> Self {
        DisplayValue::Integer(n.into())
    }
}

impl From<&str> for DisplayValue {
    /// Wraps `s` unchecked; for tests and constants. Untrusted input goes
    /// through [`DisplayValue::from_json`].
    fn from(s: &str) -> Self {
        DisplayValue::Text(s.to_owned())
    }
}

impl fmt::Display for DisplayValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DisplayValue::Integer(n) => write!(f, "{n}"),
            DisplayValue::Text(s) => f.write_str(s),
        }
    }
}

impl<'de> Deserialize<'de> for DisplayValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        DisplayValue::from_json(&value).map_err(|(_, message)| serde::de::Error::custom(message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_json_type_survives_a_round_trip() {
        for value in [json!(0), json!(3), json!("3"), json!("5-10"), json!("12.5"), json!("3rd")] {
            let display: DisplayValue = serde_json::from_value(value.clone()).expect("valid");
            assert_eq!(serde_json::to_value(&display).expect("serializes"), value);
        }
    }

    #[test]
    fn deserialization_applies_the_request_rules() {
        for value in [json!(""), json!(-1), json!(1.5), json!(true), json!([1]), json!("x".repeat(33))] {
            assert!(serde_json::from_value::<DisplayValue>(value.clone()).is_err(), "{value}");
        }
    }

    #[test]
    fn a_nul_is_refused_as_it_could_not_be_stored() {
        let refused = DisplayValue::from_json(&serde_json::json!("3\u{0}"));
        assert_eq!(refused.map_err(|(code, _)| code), Err(FieldCode::InvalidFormat));
    }

    #[test]
    fn shown_as_given() {
        assert_eq!(DisplayValue::Integer(12).to_string(), "12");
        assert_eq!(DisplayValue::Text("5-10".into()).to_string(), "5-10");
        assert_eq!(DisplayValue::from(7u64), DisplayValue::Integer(7));
        assert_eq!(DisplayValue::from(7u32), DisplayValue::Integer(7));
        assert_eq!(DisplayValue::from("3rd"), DisplayValue::Text("3rd".into()));
    }

    #[test]
    fn strings_are_1_to_32_characters() {
        let codes = |s: String| DisplayValue::from_json(&Value::String(s)).map_err(|(code, _)| code);
        assert_eq!(codes("é".repeat(32)), Ok(DisplayValue::Text("é".repeat(32))));
        assert_eq!(codes("é".repeat(33)), Err(FieldCode::TooLong));
        assert_eq!(codes("x".into()), Ok(DisplayValue::Text("x".into())));
        assert_eq!(codes(String::new()), Err(FieldCode::TooShort));
    }

    #[test]
    fn integers_beyond_u64_are_out_of_range() {
        let huge: Value = serde_json::from_str("100000000000000000000").expect("json");
        assert_eq!(DisplayValue::from_json(&huge).map_err(|e| e.0), Err(FieldCode::OutOfRange));
        assert_eq!(DisplayValue::from_json(&json!(u64::MAX)), Ok(DisplayValue::Integer(u64::MAX)));
        // 2^64 is the first integer past u64::MAX; a huge fraction or a negative one is not "out of range".
        let first_past: Value = serde_json::from_str("18446744073709551616").expect("json");
        assert_eq!(DisplayValue::from_json(&first_past).map_err(|e| e.0), Err(FieldCode::OutOfRange));
        let negative: Value = serde_json::from_str("-100000000000000000000").expect("json");
        assert_eq!(
            DisplayValue::from_json(&negative).map_err(|e| e.0),
            Err(FieldCode::NotANonNegativeInteger)
        );
        assert_eq!(
            DisplayValue::from_json(&json!(-1)).map_err(|e| e.0),
            Err(FieldCode::NotANonNegativeInteger)
        );
        assert_eq!(
            DisplayValue::from_json(&json!(2.5)).map_err(|e| e.0),
            Err(FieldCode::NotANonNegativeInteger)
        );
    }
}
