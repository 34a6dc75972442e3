//! Standard Webhooks verification (docs/protocol.md §4), as a contact centre
//! does it: the signature over `{webhook-id}.{webhook-timestamp}.{body}` with
//! any of the bot's secrets, and a timestamp close to now, so a captured
//! request cannot be replayed later.

use axum::http::HeaderMap;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// How far a `webhook-timestamp` may be from now, in seconds.
pub const TOLERANCE_SECS: i64 = 300;

/// Why a request was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// A `webhook-*` header is missing or not text.
    #[error("missing or unreadable header {0}")]
    Header(&'static str),
    /// `webhook-timestamp` is not a unix time in seconds.
    #[error("webhook-timestamp is not a unix time")]
    Timestamp,
    /// The timestamp is too far from now.
    #[error("webhook-timestamp is {0} s away from now")]
    Stale(i64),
    /// No `v1` signature matches any secret.
    #[error("no signature matches")]
    Signature,
}

/// The verified `webhook-id`, or why the request is refused.
pub fn verify(keys: &[Vec<u8>], headers: &HeaderMap, body: &[u8], now: i64) -> Result<String, Refused> {
    let header = |name: &'static str| {
        headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim).ok_or(Refused::Header(name))
    };
    let id = header("webhook-id")?;
    let timestamp = header("webhook-timestamp")?;
    let signatures = header("webhook-signature")?;
    let at: i64 = timestamp.parse().map_err(|_| Refused::Timestamp)?;
    if (now - at).abs() > TOLERANCE_SECS {
        return Err(Refused::Stale(now - at));
    }
    let given: Vec<Vec<u8>> = signatures
        .split_whitespace()
        .filter_map(|s| s.strip_prefix("v1,"))
        .filter_map(|s| STANDARD.decode(s).ok())
        .collect();
    for key in keys {
        for signature in &given {
            let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else { continue };
            mac.update(id.as_bytes());
            mac.update(b".");
            mac.update(timestamp.as_bytes());
            mac.update(b".");
            mac.update(body);
            // Constant-time comparison.
            if mac.verify_slice(signature).is_ok() {
                return Ok(id.to_owned());
            }
        }
    }
    Err(Refused::Signature)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(id: &str, at: i64, signature: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("webhook-id", HeaderValue::from_str(id).expect("id"));
        h.insert("webhook-timestamp", HeaderValue::from(at));
        h.insert("webhook-signature", HeaderValue::from_str(signature).expect("signature"));
        h
    }

    #[test]
    fn accepts_what_the_dispatcher_signs_with_any_current_key() {
        let (old, new) = (vec![1u8; 32], vec![2u8; 32]);
        let body = br#"{"botId":"b"}"#;
        let signature = delivery::signature_header(&[old.clone(), new.clone()], "msg_1", 1000, body);
        let h = headers("msg_1", 1000, &signature);
        assert_eq!(verify(std::slice::from_ref(&new), &h, body, 1010), Ok("msg_1".to_owned()));
        assert_eq!(verify(&[old], &h, body, 990), Ok("msg_1".to_owned()));
        assert_eq!(verify(&[vec![3u8; 32]], &h, body, 1000), Err(Refused::Signature));
        assert_eq!(verify(std::slice::from_ref(&new), &h, b"{}", 1000), Err(Refused::Signature));
        assert_eq!(verify(&[new], &h, body, 1000 + TOLERANCE_SECS + 1), Err(Refused::Stale(301)));
        assert_eq!(verify(&[], &HeaderMap::new(), body, 0), Err(Refused::Header("webhook-id")));
    }
}
