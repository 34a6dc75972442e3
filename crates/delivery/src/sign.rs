//! Standard Webhooks signing (docs/protocol.md §4): `webhook-id`, `webhook-timestamp`
//! and `webhook-signature` with one `v1,<base64 HMAC-SHA256>` per active
//! secret, so a receiver holding either the old or the new secret verifies
//! during a rotation.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// Header carrying the message id, the same on every attempt and replay.
pub const HEADER_ID: &str = "webhook-id";
/// Header carrying the attempt's unix time in seconds.
pub const HEADER_TIMESTAMP: &str = "webhook-timestamp";
/// Header carrying the space-separated signatures.
pub const HEADER_SIGNATURE: &str = "webhook-signature";

/// The `webhook-id` of a conversation's webhook number `sequence`:
/// `msg_` and 32 hex digits of SHA-256 over bot, conversation and sequence.
///
/// Derived, not stored: every attempt and every replay of the delivery sends
/// the same id, which is what receivers de-duplicate on, and no two webhooks
/// of a bot share one (a conversation's sequences never repeat).
pub fn webhook_id(bot_id: &str, conversation_id: &str, sequence: u64) -> String {
    let mut hasher = Sha256::new();
    // NUL cannot occur in validated ids, so the fields cannot run together.
    hasher.update(bot_id.as_bytes());
    hasher.update([0]);
    hasher.update(conversation_id.as_bytes());
    hasher.update([0]);
    hasher.update(sequence.to_be_bytes());
    let digest = hasher.finalize();
    let hex: String = digest[..16].iter().map(|byte| format!("{byte:02x}")).collect();
    format!("msg_{hex}")
}

/// The `webhook-signature` value: `v1,<sig>` for each key, space-separated,
/// each over `{id}.{timestamp}.{body}`.
pub fn signature_header(keys: &[Vec<u8>], id: &str, timestamp: i64, body: &[u8]) -> String {
    keys.iter().map(|key| format!("v1,{}", sign(key, id, timestamp, body))).collect::<Vec<_>>().join(" ")
}

/// base64 of HMAC-SHA256(`key`, `{id}.{timestamp}.{body}`).
fn sign(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    // HMAC accepts keys of any length; this cannot fail.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else { return String::new() };
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    STANDARD.encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_distinct() {
        let id = webhook_id("bot", "conv", 1);
        assert_eq!(id, webhook_id("bot", "conv", 1));
        assert!(id.starts_with("msg_") && id.len() == 4 + 32, "{id}");
        assert_ne!(id, webhook_id("bot", "conv", 2));
        assert_ne!(webhook_id("ab", "c", 1), webhook_id("a", "bc", 1));
        // The worked example of docs/protocol.md §4.2.
        assert_eq!(webhook_id("acme-support", "123456789", 2), "msg_8d199fa76d7510d2b04341b4e6dd3e85");
    }

    #[test]
    fn the_documented_example_signs_as_shown() {
        // docs/protocol.md §4.2: secret `whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw`.
        let key = STANDARD.decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("base64");
        let body = concat!(
            r#"{"botId":"acme-support","channel":"chat","data":{"platformConversationId":"123456789","#,
            r#""sequence":2,"timestamp":"2023-11-14T22:13:20Z","escalationId":"esc-1","eventType":"widgetMessage","#,
            r#""text":"Hello","messageId":"m-1"}}"#
        );
        let header =
            signature_header(&[key], "msg_8d199fa76d7510d2b04341b4e6dd3e85", 1_700_000_000, body.as_bytes());
        assert_eq!(header, "v1,PbnACy2CN4ZVSue5rHRdgOWASln3r3iod+3JBnqbYVA=");
        assert_eq!(signature_header(&[], "id", 1, b"{}"), "", "no key, no signature");
    }

    #[test]
    fn one_signature_per_key() {
        // Test vector of the Standard Webhooks specification.
        let key = STANDARD.decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("base64");
        let body = br#"{"test": 2432232314}"#;
        let header =
            signature_header(std::slice::from_ref(&key), "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body);
        assert_eq!(header, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        let two = signature_header(&[key.clone(), b"another key of 24 bytes!".to_vec()], "id", 1, b"{}");
        assert_eq!(two.split(' ').count(), 2);
        assert!(two.split(' ').all(|part| part.starts_with("v1,")));
        let first = signature_header(&[key], "id", 1, b"{}");
        assert_eq!(two.split(' ').next(), Some(first.as_str()), "one per key, in the keys' order");
    }
}
