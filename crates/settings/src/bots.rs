//! Bots (`[[bots]]`): identity, credentials, webhook target, and per-bot policy
//! ([`BotDefaults`] for everyone, [`BotOverrides`] per bot, resolved by
//! [`BotConfig::effective`] into an [`EffectiveBot`]).

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use url::Url;

use crate::secret::{Secret, one_or_many};

/// Prefix of a Standard Webhooks secret; the rest is the base64 of the HMAC key.
pub const WEBHOOK_SECRET_PREFIX: &str = "whsec_";

/// Standard base64 alphabet, with or without `=` padding.
pub(crate) const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Per-bot policy for every bot (`[defaults]`): timers (docs/protocol.md §5), held messages, webhook
/// retry budgets (docs/protocol.md §4), rate limit and the `eventRejected` switch. Each bot may
/// override any of these in its `overrides` table. Every number must be at least 1.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct BotDefaults {
    /// Seconds without an answer to `widgetEscalate` before the escalation fails with
    /// `no_response_timeout`. Default 120.
    pub no_response_timeout_secs: u64,
    /// Seconds an escalation may stay `queued` before it fails with `queue_timeout`.
    /// Default 1800 (30 min).
    pub queue_timeout_secs: u64,
    /// Seconds a `connected` escalation may go without a message either way before it
    /// ends with `idle_timeout`. Default 1800 (30 min).
    pub idle_timeout_secs: u64,
    /// Seconds after which any escalation ends with `ttl_expired`. Default 86400 (24 h).
    pub ttl_secs: u64,
    /// Visitor messages held while `requested`/`queued`, sent after `escalationSuccess`.
    /// Default 20.
    pub max_held_messages: u32,
    /// Retry budget in seconds of a `widgetEscalate` delivery (a person is waiting); when
    /// spent the escalation fails with `delivery_failed`. Default 120.
    pub escalate_budget_secs: u64,
    /// Retry budget in seconds of every other webhook delivery, after which it is
    /// dead-lettered. Default 86400 (24 h).
    pub delivery_budget_secs: u64,
    /// Sustained agent-API requests per second accepted for the bot; more get `429`.
    /// Default 100.
    pub rate_limit_per_sec: u32,
    /// Requests the bot may send in a burst above the sustained rate (token bucket size).
    /// Default 200.
    pub rate_limit_burst: u32,
    /// Whether the bot's webhook receives `eventRejected` for agent events the state
    /// machine refused. Default `true` (docs/protocol.md §4: "on by default").
    pub event_rejected: bool,
}

impl Default for BotDefaults {
    fn default() -> Self {
        Self {
            no_response_timeout_secs: 120,
            queue_timeout_secs: 1800,
            idle_timeout_secs: 1800,
            ttl_secs: 86_400,
            max_held_messages: 20,
            escalate_budget_secs: 120,
            delivery_budget_secs: 86_400,
            rate_limit_per_sec: 100,
            rate_limit_burst: 200,
            event_rejected: true,
        }
    }
}

/// One bot's departures from [`BotDefaults`] (`overrides = { ... }` in its `[[bots]]`
/// entry). Each field means the same as the field of the same name there; unset fields
/// take the default.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct BotOverrides {
    /// Overrides [`BotDefaults::no_response_timeout_secs`].
    pub no_response_timeout_secs: Option<u64>,
    /// Overrides [`BotDefaults::queue_timeout_secs`].
    pub queue_timeout_secs: Option<u64>,
    /// Overrides [`BotDefaults::idle_timeout_secs`].
    pub idle_timeout_secs: Option<u64>,
    /// Overrides [`BotDefaults::ttl_secs`].
    pub ttl_secs: Option<u64>,
    /// Overrides [`BotDefaults::max_held_messages`].
    pub max_held_messages: Option<u32>,
    /// Overrides [`BotDefaults::escalate_budget_secs`].
    pub escalate_budget_secs: Option<u64>,
    /// Overrides [`BotDefaults::delivery_budget_secs`].
    pub delivery_budget_secs: Option<u64>,
    /// Overrides [`BotDefaults::rate_limit_per_sec`].
    pub rate_limit_per_sec: Option<u32>,
    /// Overrides [`BotDefaults::rate_limit_burst`].
    pub rate_limit_burst: Option<u32>,
    /// Overrides [`BotDefaults::event_rejected`].
    pub event_rejected: Option<bool>,
}

impl BotOverrides {
    /// The numeric fields by name, for validation (all must be at least 1).
    pub(crate) fn numbers(&self) -> [(&'static str, Option<u64>); 9] {
        [
            ("no_response_timeout_secs", self.no_response_timeout_secs),
            ("queue_timeout_secs", self.queue_timeout_secs),
            ("idle_timeout_secs", self.idle_timeout_secs),
            ("ttl_secs", self.ttl_secs),
            ("max_held_messages", self.max_held_messages.map(u64::from)),
            ("escalate_budget_secs", self.escalate_budget_secs),
            ("delivery_budget_secs", self.delivery_budget_secs),
            ("rate_limit_per_sec", self.rate_limit_per_sec.map(u64::from)),
            ("rate_limit_burst", self.rate_limit_burst.map(u64::from)),
        ]
    }
}

impl From<&BotDefaults> for BotOverrides {
    /// Every field set: the defaults seen as overrides (used to validate them alike).
    fn from(d: &BotDefaults) -> Self {
        Self {
            no_response_timeout_secs: Some(d.no_response_timeout_secs),
            queue_timeout_secs: Some(d.queue_timeout_secs),
            idle_timeout_secs: Some(d.idle_timeout_secs),
            ttl_secs: Some(d.ttl_secs),
            max_held_messages: Some(d.max_held_messages),
            escalate_budget_secs: Some(d.escalate_budget_secs),
            delivery_budget_secs: Some(d.delivery_budget_secs),
            rate_limit_per_sec: Some(d.rate_limit_per_sec),
            rate_limit_burst: Some(d.rate_limit_burst),
            event_rejected: Some(d.event_rejected),
        }
    }
}

/// One bot (an entry of `[[bots]]`): who it is, how it authenticates, where its
/// webhooks go and how they are signed.
#[derive(Clone, Debug)]
pub struct BotConfig {
    /// The bot id (the `botid` header, the envelope's `botId`): 1–128 characters of
    /// `[A-Za-z0-9._-]`, unique among bots.
    pub id: String,
    /// API keys the bot and its contact centre authenticate with (`Authorization`).
    /// At least one; several allow rotation without downtime. Each is 16 or more
    /// printable ASCII characters without spaces, and belongs to this bot only.
    pub api_keys: Vec<Secret>,
    /// Where the bot's webhooks are delivered (`http` or `https`, no credentials in the
    /// URL). Loopback or private literal addresses need `webhooks.allow_loopback` /
    /// `webhooks.allow_private`. `None`: the bot gets no webhooks.
    pub webhook_url: Option<Url>,
    /// Standard Webhooks signing secrets, `whsec_<base64 key>` with a 24–64 byte key.
    /// Every active secret signs each delivery (rotation without downtime). At least one
    /// is required when `webhook_url` is set.
    pub webhook_secrets: Vec<Secret>,
    /// This bot's departures from `[defaults]`.
    pub overrides: BotOverrides,
}

impl BotConfig {
    /// The bot's policy: each override if set, else the default.
    pub fn effective(&self, defaults: &BotDefaults) -> EffectiveBot {
        let o = &self.overrides;
        EffectiveBot {
            no_response_timeout_secs: o.no_response_timeout_secs.unwrap_or(defaults.no_response_timeout_secs),
            queue_timeout_secs: o.queue_timeout_secs.unwrap_or(defaults.queue_timeout_secs),
            idle_timeout_secs: o.idle_timeout_secs.unwrap_or(defaults.idle_timeout_secs),
            ttl_secs: o.ttl_secs.unwrap_or(defaults.ttl_secs),
            max_held_messages: o.max_held_messages.unwrap_or(defaults.max_held_messages),
            escalate_budget_secs: o.escalate_budget_secs.unwrap_or(defaults.escalate_budget_secs),
            delivery_budget_secs: o.delivery_budget_secs.unwrap_or(defaults.delivery_budget_secs),
            rate_limit_per_sec: o.rate_limit_per_sec.unwrap_or(defaults.rate_limit_per_sec),
            rate_limit_burst: o.rate_limit_burst.unwrap_or(defaults.rate_limit_burst),
            event_rejected: o.event_rejected.unwrap_or(defaults.event_rejected),
        }
    }

    /// Whether `key` is one of this bot's API keys, compared in constant time against
    /// every key (no early exit).
    pub fn has_api_key(&self, key: &str) -> bool {
        self.api_keys.iter().fold(false, |found, k| k.ct_eq(key) | found)
    }

    /// The HMAC keys of [`webhook_secrets`](Self::webhook_secrets): the base64 after
    /// `whsec_`, decoded, in order. Validated at load, so nothing is dropped for a loaded
    /// bot; an invalid secret in a hand-built `BotConfig` is skipped. Never log these.
    pub fn webhook_keys(&self) -> Vec<Vec<u8>> {
        self.webhook_secrets.iter().filter_map(|s| decode_webhook_secret(s.expose()).ok()).collect()
    }
}

/// Why a webhook secret is not a Standard Webhooks secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WebhookSecretProblem {
    /// Does not start with `whsec_`.
    Prefix,
    /// The rest is not base64.
    Base64,
    /// The decoded key is not 24–64 bytes long (the length found).
    Length(usize),
}

/// Decodes `whsec_<base64>` into its key bytes, checking the 24–64 byte length the
/// Standard Webhooks specification asks for.
pub(crate) fn decode_webhook_secret(raw: &str) -> Result<Vec<u8>, WebhookSecretProblem> {
    let b64 = raw.strip_prefix(WEBHOOK_SECRET_PREFIX).ok_or(WebhookSecretProblem::Prefix)?;
    let key = BASE64.decode(b64).map_err(|_| WebhookSecretProblem::Base64)?;
    if (24..=64).contains(&key.len()) { Ok(key) } else { Err(WebhookSecretProblem::Length(key.len())) }
}

/// A bot's policy with overrides resolved: what the rest of the system acts on.
/// The same shape as [`BotDefaults`], whose fields document each value.
pub type EffectiveBot = BotDefaults;

/// A `[[bots]]` entry as written, before validation turns it into a [`BotConfig`].
/// Missing fields become empty so validation can name them all.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBot {
    #[serde(default)]
    pub(crate) id: String,
    #[serde(default, deserialize_with = "one_or_many")]
    pub(crate) api_keys: Vec<Secret>,
    #[serde(default)]
    pub(crate) webhook_url: Option<String>,
    #[serde(default, deserialize_with = "one_or_many")]
    pub(crate) webhook_secrets: Vec<Secret>,
    #[serde(default)]
    pub(crate) overrides: BotOverrides,
}

impl EffectiveBot {
    /// The state machine's rules for this bot (docs/protocol.md §5 timers and limits).
    pub fn rules(&self) -> domain::Rules {
        domain::Rules {
            no_response_timeout: Duration::from_secs(self.no_response_timeout_secs),
            queue_timeout: Duration::from_secs(self.queue_timeout_secs),
            idle_timeout: Duration::from_secs(self.idle_timeout_secs),
            ttl: Duration::from_secs(self.ttl_secs),
            max_held_messages: self.max_held_messages as usize,
            report_rejections: self.event_rejected,
        }
    }

    /// The webhook retry policy for this bot: the domain's backoff with this
    /// bot's budgets (docs/protocol.md §4).
    pub fn retry_policy(&self) -> domain::RetryPolicy {
        domain::RetryPolicy {
            escalate_budget: Duration::from_secs(self.escalate_budget_secs),
            default_budget: Duration::from_secs(self.delivery_budget_secs),
            ..domain::RetryPolicy::default()
        }
    }
}

#[cfg(test)]
mod conversion_tests {
    use super::*;

    #[test]
    fn defaults_convert_to_the_domain_defaults() {
        let bot = BotConfig {
            id: "b".into(),
            api_keys: Vec::new(),
            webhook_url: None,
            webhook_secrets: Vec::new(),
            overrides: BotOverrides::default(),
        };
        let effective = bot.effective(&BotDefaults::default());
        assert_eq!(effective.rules(), domain::Rules::default());
        assert_eq!(effective.retry_policy(), domain::RetryPolicy::default());
    }

    #[test]
    fn every_value_reaches_the_rules_and_the_retry_policy() {
        let bot = BotDefaults {
            no_response_timeout_secs: 1,
            queue_timeout_secs: 2,
            idle_timeout_secs: 3,
            ttl_secs: 4,
            max_held_messages: 5,
            escalate_budget_secs: 6,
            delivery_budget_secs: 7,
            rate_limit_per_sec: 8,
            rate_limit_burst: 9,
            event_rejected: false,
        };
        assert_eq!(
            bot.rules(),
            domain::Rules {
                no_response_timeout: Duration::from_secs(1),
                queue_timeout: Duration::from_secs(2),
                idle_timeout: Duration::from_secs(3),
                ttl: Duration::from_secs(4),
                max_held_messages: 5,
                report_rejections: false,
            }
        );
        let policy = bot.retry_policy();
        assert_eq!(policy.escalate_budget, Duration::from_secs(6));
        assert_eq!(policy.default_budget, Duration::from_secs(7));
        assert_eq!(policy.initial_delay, domain::RetryPolicy::default().initial_delay, "backoff kept");
    }

    fn bot_with_keys(id: &str, keys: &[&str]) -> BotConfig {
        BotConfig {
            id: id.into(),
            api_keys: keys.iter().map(|k| Secret::from(*k)).collect(),
            webhook_url: None,
            webhook_secrets: vec![Secret::from("not-a-secret"), Secret::from("whsec_dGVzdA==")],
            overrides: BotOverrides::default(),
        }
    }

    #[test]
    fn every_key_is_compared_and_any_match_counts() {
        // Built in code, so nothing checked that the keys differ.
        let bot = bot_with_keys("b", &["key-one-0123456789", "key-one-0123456789", "key-two-0123456789"]);
        assert!(bot.has_api_key("key-one-0123456789"));
        assert!(bot.has_api_key("key-two-0123456789"));
        assert!(!bot.has_api_key("key-three-01234567"));
        assert!(!bot_with_keys("none", &[]).has_api_key(""));
        // Invalid secrets in a hand-built bot are skipped, not turned into keys.
        assert!(bot.webhook_keys().is_empty());
    }

    #[test]
    fn the_first_bot_holding_a_key_owns_it() {
        let settings = crate::Settings {
            bots: vec![
                bot_with_keys("first", &["shared-key-0123456789"]),
                bot_with_keys("second", &["shared-key-0123456789", "own-key-0123456789"]),
            ],
            ..crate::Settings::default()
        };
        let owner = |key: &str| settings.bot_for_key(key).map(|b| b.id.as_str());
        assert_eq!(owner("shared-key-0123456789"), Some("first"));
        assert_eq!(owner("own-key-0123456789"), Some("second"));
        assert_eq!(owner("nobody-0123456789"), None);
    }

    #[test]
    fn webhook_secrets_decode_to_24_to_64_bytes() {
        // `whsec_` and the base64 of `n` bytes.
        let secret = |n: usize| format!("{WEBHOOK_SECRET_PREFIX}{}", BASE64.encode(vec![7u8; n]));
        assert_eq!(decode_webhook_secret(&secret(24)), Ok(vec![7u8; 24]));
        assert_eq!(decode_webhook_secret(&secret(64)), Ok(vec![7u8; 64]));
        assert_eq!(decode_webhook_secret(&secret(23)), Err(WebhookSecretProblem::Length(23)));
        assert_eq!(decode_webhook_secret(&secret(65)), Err(WebhookSecretProblem::Length(65)));
        assert_eq!(decode_webhook_secret("whsec_!!"), Err(WebhookSecretProblem::Base64));
        assert_eq!(decode_webhook_secret(&secret(32)[1..]), Err(WebhookSecretProblem::Prefix));
        // Padding is optional.
        let unpadded = secret(32).trim_end_matches('=').to_owned();
        assert_eq!(decode_webhook_secret(&unpadded), Ok(vec![7u8; 32]));
    }
}
