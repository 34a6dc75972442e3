//! Who is calling: a bot by API key (agent API and `escalate`), or a visitor's
//! widget by widget token (messages, end). Every failure is the same `401`.

use axum::http::{HeaderMap, HeaderValue, header};
use chrono::{DateTime, Utc};
use domain::{BotId, ConversationId};
use settings::{BotConfig, Settings};

use crate::error::ApiError;
use crate::token::WidgetTokens;

/// The optional header naming the bot (SPEC §2).
pub const BOT_ID_HEADER: &str = "botid";

/// The typed id of a configured bot. Settings validation already checked it,
/// so a failure is a bug (500), never the caller's fault.
pub fn bot_id_of(bot: &BotConfig) -> Result<BotId, ApiError> {
    BotId::parse(bot.id.clone()).map_err(|e| ApiError::internal(format!("configured bot id: {e}")))
}

/// The bot owning the API key in `Authorization` (raw, as in the original API,
/// or `Bearer <key>`). A `botid` header, when present, must name that same bot;
/// clients of the original API sometimes omit it.
pub fn authenticate_bot<'s>(settings: &'s Settings, headers: &HeaderMap) -> Result<&'s BotConfig, ApiError> {
    let key = credential(headers.get(header::AUTHORIZATION)).ok_or(ApiError::Unauthorized)?;
    let bot = settings.bot_for_key(key).ok_or(ApiError::Unauthorized)?;
    if let Some(named) = headers.get(BOT_ID_HEADER)
        && named.to_str().ok().map(str::trim) != Some(bot.id.as_str())
    {
        return Err(ApiError::Unauthorized);
    }
    Ok(bot)
}

/// The bot whose widget token in `Authorization: Bearer <token>` opens
/// `conversation`. A token for another conversation gets the same answer as a
/// forged one, so nobody learns whether that conversation exists. The bot must
/// still be configured.
pub fn authenticate_widget(
    settings: &Settings,
    tokens: &WidgetTokens,
    headers: &HeaderMap,
    conversation: &str,
    now: DateTime<Utc>,
) -> Result<(BotId, ConversationId), ApiError> {
    let token = credential(headers.get(header::AUTHORIZATION)).ok_or(ApiError::Unauthorized)?;
    let claims = tokens.verify(token, now).map_err(|error| {
        tracing::debug!(%error, "widget token refused");
        ApiError::Unauthorized
    })?;
    if claims.conv != conversation || settings.bot(&claims.bot).is_none() {
        return Err(ApiError::Unauthorized);
    }
    let bot = BotId::parse(claims.bot).map_err(|_| ApiError::Unauthorized)?;
    let conversation = ConversationId::parse(claims.conv).map_err(|_| ApiError::Unauthorized)?;
    Ok((bot, conversation))
}

/// The credential of an `Authorization` value: after `Bearer ` (any case), or
/// the whole value.
fn credential(value: Option<&HeaderValue>) -> Option<&str> {
    let value = value?.to_str().ok()?.trim();
    let credential = match value.split_once(' ') {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
        _ if value.eq_ignore_ascii_case("bearer") => "",
        _ => value,
    };
    (!credential.is_empty()).then_some(credential)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_forms() {
        let v = |s: &'static str| HeaderValue::from_static(s);
        assert_eq!(credential(Some(&v("key-0123456789abcdef"))), Some("key-0123456789abcdef"));
        assert_eq!(credential(Some(&v("Bearer key-0123456789abcdef"))), Some("key-0123456789abcdef"));
        assert_eq!(credential(Some(&v("bearer  key "))), Some("key"));
        assert_eq!(credential(Some(&v("Bearer "))), None);
        assert_eq!(credential(Some(&v(""))), None);
        assert_eq!(credential(None), None);
    }
}
