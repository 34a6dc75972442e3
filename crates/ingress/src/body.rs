//! Reading a JSON request body: media type (`415`), size (`413`), syntax
//! (`400 invalid_json`), each with the JSON error body of docs/protocol.md §2. Handlers
//! read the body themselves, after authentication and rate limiting, so an
//! unauthenticated caller never gets to make us buffer anything.

use axum::body::Body;
use axum::http::{HeaderMap, header};
use domain::FieldCode;
use serde_json::Value;

use crate::error::ApiError;

/// What an empty body means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Empty {
    /// Allowed, read as JSON `null`; `Content-Type` may then be absent
    /// (`escalate` with no options).
    AsNull,
    /// Not valid JSON, like any other syntax error.
    Invalid,
}

/// The body as a JSON value, at most `limit` bytes.
pub async fn read_json(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    empty: Empty,
) -> Result<Value, ApiError> {
    let media_type = headers.get(header::CONTENT_TYPE);
    if media_type.is_some_and(|v| !is_json(v.to_str().unwrap_or(""))) {
        return Err(ApiError::UnsupportedMediaType);
    }
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|error| {
        if is_length_limit(&error) {
            ApiError::PayloadTooLarge { limit }
        } else {
            // The client went away or sent a broken chunked body.
            ApiError::invalid("body", FieldCode::InvalidJson, format!("the body could not be read: {error}"))
        }
    })?;
    if bytes.is_empty() && empty == Empty::AsNull {
        return Ok(Value::Null);
    }
    if media_type.is_none() {
        return Err(ApiError::UnsupportedMediaType);
    }
    serde_json::from_slice(&bytes).map_err(|error| {
        ApiError::invalid("body", FieldCode::InvalidJson, format!("the body is not valid JSON: {error}"))
    })
}

/// `application/json` or `application/<anything>+json`, any parameters,
/// any case.
pub fn is_json(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    essence == "application/json"
        || essence.strip_prefix("application/").is_some_and(|sub| sub.ends_with("+json") && sub.len() > 5)
}

fn is_length_limit(error: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if e.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn json_media_types() {
        for ok in [
            "application/json",
            "application/json; charset=utf-8",
            "Application/JSON",
            "application/vnd.x+json",
        ] {
            assert!(is_json(ok), "{ok}");
        }
        for bad in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "application/+json",
            "json",
            "",
            "application/jsonx",
        ] {
            assert!(!is_json(bad), "{bad}");
        }
    }

    fn headers(content_type: Option<&'static str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(ct) = content_type {
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
        }
        h
    }

    #[tokio::test]
    async fn limits_media_type_and_syntax() {
        let json = headers(Some("application/json"));
        let v = read_json(&json, Body::from(r#"{"a":1}"#), 16, Empty::Invalid).await.expect("ok");
        assert_eq!(v["a"], 1);
        let e = read_json(&json, Body::from("x".repeat(17)), 16, Empty::Invalid).await.expect_err("too big");
        assert!(matches!(e, ApiError::PayloadTooLarge { limit: 16 }));
        let e = read_json(&json, Body::from("{"), 16, Empty::Invalid).await.expect_err("bad json");
        assert!(matches!(e, ApiError::InvalidBody(_)));
        let e = read_json(&json, Body::empty(), 16, Empty::Invalid).await.expect_err("empty");
        assert!(matches!(e, ApiError::InvalidBody(_)));
        let e = read_json(&headers(Some("text/plain")), Body::from("{}"), 16, Empty::Invalid)
            .await
            .expect_err("415");
        assert!(matches!(e, ApiError::UnsupportedMediaType));
        let e = read_json(&headers(None), Body::from("{}"), 16, Empty::AsNull).await.expect_err("415");
        assert!(matches!(e, ApiError::UnsupportedMediaType));
        let v = read_json(&headers(None), Body::empty(), 16, Empty::AsNull).await.expect("empty is null");
        assert_eq!(v, Value::Null);
    }
}
