//! [`ApiError`], the single error type of the HTTP edge, and [`Error`], what
//! starting or running the server can fail with.
//!
//! Every error status has a JSON body `{"error": code, "message": ...}` (a 400
//! also has `details`, docs/protocol.md §2). 4xx bodies say exactly what to fix; 5xx bodies
//! are opaque. The cause of a 5xx is logged once, where the error is built
//! ([`ApiError::broker`], [`ApiError::internal`]), which is inside the handler's
//! span, so the log line carries the bot, conversation and event ids.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use domain::{FieldCode, ValidationErrors};
use serde_json::json;

/// Why a request was not accepted; renders as the docs/protocol.md §2 status and body.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Missing or invalid API key or widget token, unknown bot, `botid` not the
    /// key's bot, or a token for another conversation. One answer for all, so
    /// a caller learns nothing about what exists.
    #[error("missing or invalid credentials")]
    Unauthorized,
    /// The body (or a header standing for a body field) broke the schema.
    #[error("invalid request: {0}")]
    InvalidBody(ValidationErrors),
    /// `Content-Type` is not JSON.
    #[error("unsupported media type")]
    UnsupportedMediaType,
    /// The body is larger than `http.body_limit_bytes`.
    #[error("request body larger than {limit} bytes")]
    PayloadTooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// Over a rate limit: the bot's, a visitor's or the instance's stream opens.
    #[error("rate limited; retry after {retry_after_secs} s")]
    RateLimited {
        /// Seconds until a request would be accepted (`Retry-After`).
        retry_after_secs: u64,
    },
    /// The broker did not confirm the publish; the event may or may not be
    /// stored, so the caller must retry (with the same event id).
    #[error("broker unavailable: {0}")]
    BrokerUnavailable(#[source] broker::Error),
    /// No such route.
    #[error("not found")]
    NotFound,
    /// The calling bot has no conversation with this id. Another bot's
    /// conversation gets the same answer, so a caller learns nothing of it.
    #[error("unknown conversation")]
    UnknownConversation,
    /// No recorded event of the calling bot has this id: either it never
    /// existed, or it was accepted and is not applied yet; the store cannot
    /// tell the two apart (the ingress keeps no record of what it accepted).
    #[error("unknown event")]
    UnknownEvent,
    /// The query endpoints cannot answer: no store configured, or the
    /// database is unreachable. The cause, if any, was logged.
    #[error("queries unavailable")]
    QueryUnavailable,
    /// The route exists, not with this method.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// A bug on our side; the cause was logged.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// A 400 with one problem.
    pub fn invalid(field: &str, code: FieldCode, message: impl Into<String>) -> Self {
        let mut errors = ValidationErrors::default();
        errors.push(field, code, message);
        ApiError::InvalidBody(errors)
    }

    /// A failed publish, logged here with its reason. Caller bugs (a message
    /// the publisher refuses as such) are 500s; everything else means "not
    /// known to be stored" and is a 503 the caller retries.
    pub fn broker(error: broker::Error) -> Self {
        match error {
            broker::Error::InvalidMessage(_) | broker::Error::InvalidName(_) => {
                ApiError::internal(format!("publisher refused the message: {error}"))
            }
            error => {
                tracing::warn!(reason = error.reason(), %error, "publish not confirmed; answering 503");
                ApiError::BrokerUnavailable(error)
            }
        }
    }

    /// A failed read of the query endpoints, logged here: `503` when retrying
    /// may help (database down, pool exhausted), else `500`.
    pub fn store(error: store::Error) -> Self {
        if error.is_transient() {
            tracing::warn!(%error, "store unavailable; answering 503");
            ApiError::QueryUnavailable
        } else {
            ApiError::internal(format!("store query: {error}"))
        }
    }

    /// A 500, its cause logged here.
    pub fn internal(cause: impl Into<String>) -> Self {
        let cause = cause.into();
        tracing::error!(%cause, "internal error; answering 500");
        ApiError::Internal(cause)
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::InvalidBody(_) => StatusCode::BAD_REQUEST,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::BrokerUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::NotFound | ApiError::UnknownConversation | ApiError::UnknownEvent => {
                StatusCode::NOT_FOUND
            }
            ApiError::QueryUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The `error` code of the body.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthorized => "unauthorized",
            ApiError::InvalidBody(_) => "invalid_body",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::BrokerUnavailable(_) => "broker_unavailable",
            ApiError::NotFound => "not_found",
            ApiError::UnknownConversation => "unknown_conversation",
            ApiError::UnknownEvent => "unknown_event",
            ApiError::QueryUnavailable => "query_unavailable",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::Internal(_) => "internal_error",
        }
    }

    /// The human-readable `message` of the body; never a cause of a 5xx.
    fn message(&self) -> String {
        match self {
            ApiError::Unauthorized => "missing or invalid credentials".to_owned(),
            ApiError::InvalidBody(_) => "the request is invalid; see details".to_owned(),
            ApiError::UnsupportedMediaType => {
                "the body must be JSON (Content-Type: application/json)".to_owned()
            }
            ApiError::PayloadTooLarge { limit } => format!("the body must be at most {limit} bytes"),
            ApiError::RateLimited { retry_after_secs } => {
                format!("too many requests; retry after {retry_after_secs} s")
            }
            ApiError::BrokerUnavailable(_) => "the event was not accepted; retry later".to_owned(),
            ApiError::NotFound => "no such endpoint".to_owned(),
            ApiError::UnknownConversation => "no conversation with this id for this bot".to_owned(),
            ApiError::UnknownEvent => {
                "no applied event with this id for this bot (it may not be applied yet)".to_owned()
            }
            ApiError::QueryUnavailable => "queries are unavailable; retry later".to_owned(),
            ApiError::MethodNotAllowed => "method not allowed on this endpoint".to_owned(),
            ApiError::Internal(_) => "internal error".to_owned(),
        }
    }
}

impl From<ValidationErrors> for ApiError {
    fn from(errors: ValidationErrors) -> Self {
        ApiError::InvalidBody(errors)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = match &self {
            ApiError::InvalidBody(errors) => {
                json!({"error": self.code(), "message": self.message(), "details": errors.details()})
            }
            _ => json!({"error": self.code(), "message": self.message()}),
        };
        let mut response = (self.status(), Json(body)).into_response();
        let headers = response.headers_mut();
        match &self {
            ApiError::RateLimited { retry_after_secs } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            }
            // The publisher reconnects on its own within about a second.
            ApiError::BrokerUnavailable(_) | ApiError::QueryUnavailable => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            ApiError::Unauthorized => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            _ => {}
        }
        response
    }
}

/// Why the ingress could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The listener could not be bound (address in use, no permission).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The configured `http.bind`.
        addr: std::net::SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The HTTP server failed while running.
    #[error("HTTP server failed: {0}")]
    Serve(#[source] std::io::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_codes() {
        let cases = [
            (ApiError::Unauthorized, 401, "unauthorized"),
            (ApiError::UnsupportedMediaType, 415, "unsupported_media_type"),
            (ApiError::PayloadTooLarge { limit: 1 }, 413, "payload_too_large"),
            (ApiError::RateLimited { retry_after_secs: 2 }, 429, "rate_limited"),
            (ApiError::BrokerUnavailable(broker::Error::Unavailable), 503, "broker_unavailable"),
            (ApiError::NotFound, 404, "not_found"),
            (ApiError::UnknownConversation, 404, "unknown_conversation"),
            (ApiError::UnknownEvent, 404, "unknown_event"),
            (ApiError::QueryUnavailable, 503, "query_unavailable"),
            (ApiError::MethodNotAllowed, 405, "method_not_allowed"),
            (ApiError::Internal("x".into()), 500, "internal_error"),
        ];
        for (error, status, code) in cases {
            assert_eq!(error.status().as_u16(), status);
            assert_eq!(error.code(), code);
        }
    }

    #[test]
    fn headers_of_429_and_503() {
        let r = ApiError::RateLimited { retry_after_secs: 3 }.into_response();
        assert_eq!(r.headers()[header::RETRY_AFTER], "3");
        let r = ApiError::BrokerUnavailable(broker::Error::Timeout).into_response();
        assert_eq!(r.headers()[header::RETRY_AFTER], "1");
    }

    #[test]
    fn caller_bugs_are_500_not_503() {
        let e = ApiError::broker(broker::Error::InvalidMessage("x".into()));
        assert_eq!(e.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let e = ApiError::broker(broker::Error::Nacked);
        assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
}
