//! [`Secret`]: a string that never shows itself in logs, and the comparisons it needs.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, SeqAccess, Unexpected, Visitor};

/// A secret string: an API key, a webhook signing secret, the widget token key.
///
/// `Debug` and `Display` print `***`, so a secret can sit in any struct that is logged
/// with `{:?}`. The value is read with [`Secret::expose`], only where it is used.
/// There is deliberately no `PartialEq`: compare with [`Secret::ct_eq`], which takes the
/// same time wherever the first difference is.
#[derive(Clone, Default)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value as a secret.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret value itself. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the secret is empty (not configured).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Length of the secret in bytes (safe to log).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Compares with `candidate` in constant time (for a given length of the longer input).
    pub fn ct_eq(&self, candidate: &str) -> bool {
        constant_time_eq(self.0.as_bytes(), candidate.as_bytes())
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self(value.to_owned())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Serializes as `***` (or `""` when not set): settings are shown, secrets never.
impl serde::Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(if self.0.is_empty() { "" } else { "***" })
    }
}

/// Accepts a string (or an integer, taken as its digits). Error messages never echo the
/// value, unlike serde's default ones.
impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(SecretVisitor)
    }
}

struct SecretVisitor;

impl Visitor<'_> for SecretVisitor {
    type Value = Secret;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a secret string")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Secret, E> {
        Ok(Secret::from(v))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Secret, E> {
        Ok(Secret(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Secret, E> {
        Ok(Secret(v.to_string()))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Secret, E> {
        Ok(Secret(v.to_string()))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Secret, E> {
        Err(E::invalid_type(Unexpected::Other("a number"), &self))
    }
}

/// `deserialize_with` for `Vec<Secret>`: a list of secrets, or one secret alone
/// (`api_keys = "k"` then means `["k"]` instead of an error that would quote the key).
pub(crate) fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Secret>, D::Error> {
    struct ManyVisitor;

    impl<'de> Visitor<'de> for ManyVisitor {
        type Value = Vec<Secret>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a list of secret strings")
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(vec![Secret::from(v)])
        }

        fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
            Ok(vec![Secret(v)])
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Ok(vec![Secret(v.to_string())])
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Ok(vec![Secret(v.to_string())])
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0));
            while let Some(secret) = seq.next_element::<Secret>()? {
                out.push(secret);
            }
            Ok(out)
        }
    }

    d.deserialize_any(ManyVisitor)
}

/// Byte-wise equality whose running time depends only on the longer input's length,
/// not on where the inputs differ (API keys are compared with this, see `bot_for_key`).
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= std::hint::black_box(x ^ y);
    }
    diff == 0
}

/// `raw` with any password replaced by `***`, for logging broker and database URLs.
/// A value that does not parse as a URL is not echoed at all.
///
/// A PostgreSQL URL naming several hosts (`postgres://u:pw@h1:5432,h2:5432/db`) keeps its
/// host list.
pub fn redact_url(raw: &str) -> String {
    if let Some(hosts) = MultiHost::parse(raw) {
        let shown = redact_url(&hosts.with_first_host());
        // `shown` names only the first host; put the whole list back.
        return shown.replacen(hosts.first(), hosts.list, 1);
    }
    match url::Url::parse(raw) {
        Ok(mut url) => {
            if url.password().is_some() {
                // Only fails for URLs that cannot have credentials, which `password()` excludes.
                let _ = url.set_password(Some("***"));
            }
            url.to_string()
        }
        Err(_) => "<not a valid URL>".to_owned(),
    }
}

/// A URL whose authority lists several `host[:port]`s separated by commas, as libpq and
/// tokio-postgres accept (`postgres://user@h1:5432,h2:5433/db?target_session_attrs=read-write`).
pub(crate) struct MultiHost<'a> {
    raw: &'a str,
    /// The comma-separated host list, as written.
    pub(crate) list: &'a str,
}

impl<'a> MultiHost<'a> {
    /// `Some` only if the authority has a comma.
    pub(crate) fn parse(raw: &'a str) -> Option<Self> {
        let (_, rest) = raw.split_once("://")?;
        let authority = &rest[..rest.find(['/', '?']).unwrap_or(rest.len())];
        let list = authority.rsplit_once('@').map_or(authority, |(_, hosts)| hosts);
        list.contains(',').then_some(Self { raw, list })
    }

    /// The first `host[:port]` of the list.
    pub(crate) fn first(&self) -> &'a str {
        self.list.split(',').next().unwrap_or_default()
    }

    /// Every `host[:port]` of the list.
    pub(crate) fn hosts(&self) -> impl Iterator<Item = &'a str> {
        self.list.split(',')
    }

    /// The URL with only `host` in place of the list (to parse or redact it as one URL).
    pub(crate) fn with_host(&self, host: &str) -> String {
        self.raw.replacen(self.list, host, 1)
    }

    fn with_first_host(&self) -> String {
        self.with_host(self.first())
    }
}

/// [`redact_url`] of each URL of a comma-separated node list (`broker.url`), joined again.
pub fn redact_urls(list: &str) -> String {
    domain::url_list::split_urls(list).iter().map(|url| redact_url(url)).collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_list_is_read_from_the_authority() {
        let hosts = MultiHost::parse("postgres://u:p,w@h1:5432,h2:5433/db?x=a,b").expect("a list");
        assert_eq!(hosts.first(), "h1:5432");
        assert_eq!(hosts.hosts().collect::<Vec<_>>(), ["h1:5432", "h2:5433"]);
        assert_eq!(hosts.with_host("h9"), "postgres://u:p,w@h9/db?x=a,b");
        assert!(MultiHost::parse("postgres://u@h1:5432/db?x=a,b").is_none(), "one host");
    }

    #[test]
    fn debug_and_display_hide_the_value() {
        let s = Secret::new("hunter2-very-secret");
        assert_eq!(format!("{s:?}"), "***");
        assert_eq!(s.to_string(), "***");
        assert_eq!(format!("{:?}", vec![s.clone()]), "[***]");
        assert_eq!(s.expose(), "hunter2-very-secret");
    }

    #[test]
    fn length_and_comparison_without_showing_the_value() {
        let s = Secret::from("héllo".to_owned());
        assert_eq!((s.len(), s.is_empty()), (6, false), "bytes, not characters");
        assert!(s.ct_eq("héllo"));
        assert!(!s.ct_eq("hello"));
        assert!(!s.ct_eq(""));
        let empty = Secret::default();
        assert_eq!((empty.len(), empty.is_empty()), (0, true));
        assert!(empty.ct_eq(""));
    }

    #[test]
    fn constant_time_eq_matches_plain_eq() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"a"));
        assert!(constant_time_eq(b"", b""));
        // Inputs differing only in length, or only in one bit anywhere.
        assert!(!constant_time_eq(b"abc", b"abc\0"));
        assert!(!constant_time_eq(b"\0", b""));
        assert!(!constant_time_eq(b"\x01bc", b"\x00bc"));
        assert!(!constant_time_eq(b"ab\x80", b"ab\x00"));
    }

    #[test]
    fn redact_url_hides_passwords_only() {
        assert_eq!(
            redact_url("amqp://guest:guest@127.0.0.1:5672/%2f"),
            "amqp://guest:***@127.0.0.1:5672/%2f"
        );
        assert_eq!(redact_url("postgres://postgres@db:5432/x"), "postgres://postgres@db:5432/x");
        assert_eq!(redact_url("not a url secret"), "<not a valid URL>");
        assert_eq!(
            redact_url("postgres://u:pw@db1:5432,db2:5433/x?target_session_attrs=read-write"),
            "postgres://u:***@db1:5432,db2:5433/x?target_session_attrs=read-write"
        );
        assert_eq!(
            redact_urls("amqp://u:a@h1/%2f,amqp://u:b@h2/%2f"),
            "amqp://u:***@h1/%2f,amqp://u:***@h2/%2f"
        );
    }
}
