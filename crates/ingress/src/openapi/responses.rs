//! Error answers several routes share, documented once (each a `utoipa::IntoResponses`
//! listed in a route's `responses(...)`).

use utoipa::IntoResponses;

use super::schemas::ErrorBody;

/// `413` and `415` of a route that reads a JSON body.
#[derive(Debug, IntoResponses)]
#[allow(dead_code)] // Documentation only: the answers are built by `ApiError`.
pub enum JsonBodyRefused {
    /// The body is too large.
    #[response(status = 413, description = "The body is larger than `http.body_limit_bytes`.")]
    TooLarge(ErrorBody),
    /// The body is not JSON.
    #[response(status = 415, description = "The body is not JSON.")]
    NotJson(ErrorBody),
}

/// `401` of a route that takes a bot API key.
#[derive(Debug, IntoResponses)]
#[allow(dead_code)] // Documentation only: the answers are built by `ApiError`.
pub enum BotKeyRefused {
    /// No key, a wrong one, or a `botid` that is not the key's bot.
    #[response(
        status = 401,
        description = "Missing or invalid API key, or a `botid` that is not the key's bot."
    )]
    Unauthorized(ErrorBody),
}

/// `401` and `429` of the visitor's writes (widget token).
#[derive(Debug, IntoResponses)]
#[allow(dead_code)] // Documentation only: the answers are built by `ApiError`.
pub enum VisitorRefused {
    /// No token, a wrong or expired one, or one for another conversation.
    #[response(
        status = 401,
        description = "Missing or invalid widget token, or one for another conversation."
    )]
    Unauthorized(ErrorBody),
    /// Over the conversation's visitor budget.
    #[response(status = 429, description = "Over the conversation's visitor rate limit; see `Retry-After`.")]
    RateLimited(ErrorBody),
}
