//! Widget tokens (docs/protocol.md §3): a token opens exactly one conversation of one bot
//! until it expires.
//!
//! Format: `base64url(JSON claims) "." base64url(HMAC-SHA256(key, first part))`,
//! unpadded, with claims `{"bot","conv","exp"}` (`exp` in Unix seconds). The key
//! is `widget.token_secret`, the same on every ingress instance, so any instance
//! verifies any token. The signature is checked in constant time before the
//! claims are even decoded. No server state: a token cannot be revoked before it
//! expires except by rotating the key, which revokes them all.

use std::fmt;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use domain::{BotId, ConversationId};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Longest token we look at; anything longer is rejected unread.
const MAX_TOKEN_BYTES: usize = 2048;

/// What a token grants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WidgetClaims {
    /// The bot id.
    pub bot: String,
    /// The conversation id.
    pub conv: String,
    /// Expiry, Unix seconds; the token is invalid from that second on.
    pub exp: i64,
}

/// A freshly issued token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedToken {
    /// The token, for `Authorization: Bearer <token>`.
    pub token: String,
    /// When it stops working.
    pub expires_at: DateTime<Utc>,
}

/// Why a token was refused. All are answered with the same `401`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not two base64url parts, too long, or claims that are not the expected JSON.
    #[error("malformed widget token")]
    Malformed,
    /// The signature does not match (forged or signed with another key).
    #[error("bad widget token signature")]
    BadSignature,
    /// Past its `exp`.
    #[error("expired widget token")]
    Expired,
}

/// Issues and verifies widget tokens with one key.
#[derive(Clone)]
pub struct WidgetTokens {
    /// The keyed MAC, cloned per use so the key schedule is computed once.
    mac: HmacSha256,
    ttl: Duration,
}

impl fmt::Debug for WidgetTokens {
    // By hand: the MAC state is derived from the secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WidgetTokens").field("ttl", &self.ttl).finish_non_exhaustive()
    }
}

impl WidgetTokens {
    /// Tokens signed with `key`, valid for `ttl` after issue.
    pub fn new(key: &[u8], ttl: Duration) -> Self {
        // Start-up only, and HMAC accepts keys of any length: this cannot fail.
        let mac = HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length");
        Self { mac, ttl }
    }

    /// A token for `conversation` of `bot`, valid from `now` for the configured ttl.
    pub fn issue(&self, bot: &BotId, conversation: &ConversationId, now: DateTime<Utc>) -> IssuedToken {
        let expires_at = domain::time::after(now, self.ttl);
        let claims = WidgetClaims {
            bot: bot.to_string(),
            conv: conversation.to_string(),
            exp: expires_at.timestamp(),
        };
        // Serializing two strings and an integer cannot fail.
        let json = serde_json::to_vec(&claims).unwrap_or_default();
        let payload = URL_SAFE_NO_PAD.encode(json);
        let signature = URL_SAFE_NO_PAD.encode(self.sign(payload.as_bytes()));
        let expires_at = DateTime::from_timestamp(claims.exp, 0).unwrap_or(expires_at);
        IssuedToken { token: format!("{payload}.{signature}"), expires_at }
    }

    /// The claims of a genuine, unexpired token.
    pub fn verify(&self, token: &str, now: DateTime<Utc>) -> Result<WidgetClaims, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::Malformed);
        }
        let (payload, signature) = token.split_once('.').ok_or(TokenError::Malformed)?;
        let signature = URL_SAFE_NO_PAD.decode(signature).map_err(|_| TokenError::Malformed)?;
        let mut mac = self.mac.clone();
        mac.update(payload.as_bytes());
        // `verify_slice` compares in constant time.
        mac.verify_slice(&signature).map_err(|_| TokenError::BadSignature)?;
        let json = URL_SAFE_NO_PAD.decode(payload).map_err(|_| TokenError::Malformed)?;
        let claims: WidgetClaims = serde_json::from_slice(&json).map_err(|_| TokenError::Malformed)?;
        if now.timestamp() >= claims.exp {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }

    fn sign(&self, payload: &[u8]) -> Vec<u8> {
        let mut mac = self.mac.clone();
        mac.update(payload);
        mac.finalize().into_bytes().to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"a-test-key-of-at-least-32-bytes!!";

    fn ids(conv: &str) -> (BotId, ConversationId) {
        (BotId::parse("bot-1").expect("id"), ConversationId::parse(conv).expect("id"))
    }

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, 0).expect("time")
    }

    #[test]
    fn issued_tokens_verify_until_they_expire() {
        let tokens = WidgetTokens::new(KEY, Duration::from_secs(60));
        let (bot, conv) = ids("conv-1");
        let issued = tokens.issue(&bot, &conv, at(1_000));
        assert_eq!(issued.expires_at, at(1_060));
        let claims = tokens.verify(&issued.token, at(1_059)).expect("valid");
        assert_eq!(claims, WidgetClaims { bot: "bot-1".into(), conv: "conv-1".into(), exp: 1_060 });
        assert_eq!(tokens.verify(&issued.token, at(1_060)), Err(TokenError::Expired));
    }

    #[test]
    fn forged_tokens_are_refused() {
        let tokens = WidgetTokens::new(KEY, Duration::from_secs(60));
        let (bot, conv) = ids("conv-1");
        let issued = tokens.issue(&bot, &conv, at(1_000));
        let (_, signature) = issued.token.split_once('.').expect("two parts");

        // Claims rewritten to another conversation, signature kept.
        let forged_claims = WidgetClaims { bot: "bot-1".into(), conv: "conv-2".into(), exp: 1_060 };
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged_claims).expect("json"));
        assert_eq!(
            tokens.verify(&format!("{payload}.{signature}"), at(1_000)),
            Err(TokenError::BadSignature)
        );

        // Signed with another key.
        let other = WidgetTokens::new(b"another-key-of-at-least-32-bytes!", Duration::from_secs(60));
        let foreign = other.issue(&bot, &conv, at(1_000));
        assert_eq!(tokens.verify(&foreign.token, at(1_000)), Err(TokenError::BadSignature));

        // Garbage.
        for bad in ["", "abc", "a.b.c", "!!.!!", &format!("{payload}."), &"x".repeat(3000)] {
            assert!(tokens.verify(bad, at(1_000)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn expiry_is_checked_after_the_signature() {
        let tokens = WidgetTokens::new(KEY, Duration::from_secs(1));
        let (bot, conv) = ids("conv-1");
        let issued = tokens.issue(&bot, &conv, at(0));
        let mut tampered = issued.token.clone();
        tampered.push('A');
        // Expired too, but a tampered token never gets as far as saying so.
        assert!(matches!(
            tokens.verify(&tampered, at(5)),
            Err(TokenError::Malformed | TokenError::BadSignature)
        ));
        assert_eq!(tokens.verify(&issued.token, at(5)), Err(TokenError::Expired));
    }

    #[test]
    fn debug_does_not_show_the_key() {
        let tokens = WidgetTokens::new(KEY, Duration::from_secs(1));
        assert!(!format!("{tokens:?}").contains("test-key"));
    }
}
