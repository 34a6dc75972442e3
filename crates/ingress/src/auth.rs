//! Who is calling: a bot by API key (agent API and `escalate`), or a visitor's
//! widget by widget token (messages, end; the stream also takes it from the
//! query). Every failure is the same `401`.

use axum::http::{HeaderMap, HeaderValue, header};
use chrono::{DateTime, Utc};
use domain::{BotId, ConversationId};
use settings::{BotConfig, Settings};

use crate::error::ApiError;
use crate::token::WidgetTokens;

/// The optional header naming the bot (docs/protocol.md §2).
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
    let key = credential(single(headers, header::AUTHORIZATION.as_str())?).ok_or(ApiError::Unauthorized)?;
    let bot = settings.bot_for_key(key).ok_or(ApiError::Unauthorized)?;
    if let Some(named) = single(headers, BOT_ID_HEADER)?
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
    let token = credential(single(headers, header::AUTHORIZATION.as_str())?);
    verify_widget(settings, tokens, token, conversation, now)
}

/// Like [`authenticate_widget`], for the widget stream only: a browser's
/// `EventSource` cannot set headers, so without an `Authorization` header the
/// token may come as the `access_token` query parameter (RFC 6750 §2.3). With
/// the header, the query is ignored; either way every failure is the same `401`.
pub fn authenticate_widget_stream(
    settings: &Settings,
    tokens: &WidgetTokens,
    headers: &HeaderMap,
    query_token: Option<&str>,
    conversation: &str,
    now: DateTime<Utc>,
) -> Result<(BotId, ConversationId), ApiError> {
    let token = match single(headers, header::AUTHORIZATION.as_str())? {
        Some(value) => credential(Some(value)),
        None => query_token.map(str::trim).filter(|token| !token.is_empty()),
    };
    verify_widget(settings, tokens, token, conversation, now)
}

/// The checks of a widget token, wherever it came from.
fn verify_widget(
    settings: &Settings,
    tokens: &WidgetTokens,
    token: Option<&str>,
    conversation: &str,
    now: DateTime<Utc>,
) -> Result<(BotId, ConversationId), ApiError> {
    let token = token.ok_or(ApiError::Unauthorized)?;
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

/// The one value of a credential header. Given twice it is refused, whichever
/// copy is genuine: a proxy and we might each read another one.
fn single<'h>(headers: &'h HeaderMap, name: &str) -> Result<Option<&'h HeaderValue>, ApiError> {
    let mut values = headers.get_all(name).iter();
    let first = values.next();
    match values.next() {
        Some(_) => Err(ApiError::Unauthorized),
        None => Ok(first),
    }
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
    use std::time::Duration;

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

    #[test]
    fn the_stream_takes_a_query_token_only_without_the_header() {
        const TOML: &str = r#"
            [widget]
            token_secret = "unit-test-widget-token-secret-of-32-bytes"
            [[bots]]
            id = "acme"
            api_keys = ["acme-key-0123456789"]
        "#;
        let settings = Settings::from_sources(Some(TOML), Vec::<(String, String)>::new()).expect("settings");
        let tokens = WidgetTokens::new(b"unit-test-widget-token-secret-of-32-bytes", Duration::from_secs(60));
        let now = Utc::now();
        let bot = BotId::parse("acme").expect("id");
        let token = |conv: &str| tokens.issue(&bot, &ConversationId::parse(conv).expect("id"), now).token;
        let (good, foreign) = (token("c1"), token("c2"));
        let bearer = |token: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::AUTHORIZATION, format!("Bearer {token}").parse().expect("header"));
            headers
        };
        let none = HeaderMap::new();
        let stream = |headers: &HeaderMap, query: Option<&str>| {
            authenticate_widget_stream(&settings, &tokens, headers, query, "c1", now)
                .map(|(bot, conv)| (bot.as_str().to_owned(), conv.as_str().to_owned()))
        };
        let opened = Ok(("acme".to_owned(), "c1".to_owned()));
        assert_eq!(stream(&none, Some(&good)).map_err(|_| ()), opened);
        assert_eq!(stream(&bearer(&good), None).map_err(|_| ()), opened);
        // The header decides when present, even if the query would do.
        assert!(matches!(stream(&bearer("forged"), Some(&good)), Err(ApiError::Unauthorized)));
        for query in [None, Some(""), Some("forged.token"), Some(foreign.as_str())] {
            assert!(matches!(stream(&none, query), Err(ApiError::Unauthorized)), "{query:?}");
        }
    }
}
