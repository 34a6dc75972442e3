//! Validated identifiers. Each newtype can only be built through `parse`, so a
//! value of the type is known to be well-formed everywhere else.

use serde::{Deserialize, Deserializer, Serialize};
use std::fmt;

use crate::validation::FieldCode;

/// Why a string is not a valid identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdError {
    /// Empty string.
    Empty,
    /// Longer than the identifier's maximum, in characters.
    TooLong,
    /// Contains control characters.
    ControlCharacter,
}

impl IdError {
    /// The field-error code this problem is reported with (docs/protocol.md §2).
    pub fn code(self) -> FieldCode {
        match self {
            IdError::Empty => FieldCode::TooShort,
            IdError::TooLong => FieldCode::TooLong,
            IdError::ControlCharacter => FieldCode::InvalidFormat,
        }
    }
}

impl fmt::Display for IdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IdError::Empty => "must not be empty",
            IdError::TooLong => "is too long",
            IdError::ControlCharacter => "must not contain control characters",
        })
    }
}

impl std::error::Error for IdError {}

fn check(value: &str, max_chars: usize) -> Result<(), IdError> {
    if value.is_empty() {
        return Err(IdError::Empty);
    }
    if value.chars().count() > max_chars {
        return Err(IdError::TooLong);
    }
    if value.chars().any(char::is_control) {
        return Err(IdError::ControlCharacter);
    }
    Ok(())
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident, $max:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Maximum length in characters.
            pub const MAX_CHARS: usize = $max;

            /// Validates and wraps `value`.
            pub fn parse(value: impl Into<String>) -> Result<Self, IdError> {
                let value = value.into();
                check(&value, Self::MAX_CHARS)?;
                Ok(Self(value))
            }

            /// The identifier as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        // Deserialization goes through `parse`, so a message read back from the
        // broker or the database is held to the same rules as a request body.
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let raw = String::deserialize(deserializer)?;
                Self::parse(raw).map_err(serde::de::Error::custom)
            }
        }
    };
}

string_id!(
    /// A bot (one contact-centre app per bot), as configured.
    BotId, 128
);
string_id!(
    /// `platformConversationId`: 1–128 characters (docs/protocol.md §2).
    ConversationId, 128
);
string_id!(
    /// The idempotency key of one event: body `eventId`, the `Idempotency-Key`
    /// header, or one the ingress generated.
    EventId, 128
);
string_id!(
    /// One escalation of a conversation; a conversation has a series of them.
    EscalationId, 128
);
string_id!(
    /// A message (agent or visitor), carried as `messageId` on webhooks.
    MessageId, 128
);

/// An agent message's stable id is the id of the event that carried it; both
/// identifiers follow the same rules, so the conversion is lossless.
impl From<EventId> for MessageId {
    fn from(id: EventId) -> Self {
        MessageId(id.0)
    }
}

/// Whose namespace an event id lives in (docs/protocol.md §2: "client event ids live in
/// their own namespace: they can never collide with ids the service makes for
/// timers or notices"). The space follows from the kind of input, which no
/// caller can choose, so an agent `eventId` of `timer:…`, `undeliverable:…`
/// or `vm:…` is an ordinary agent id and never a duplicate of ours.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdSpace {
    /// The contact centre's events: `eventId`, `Idempotency-Key`, or a UUID.
    #[default]
    Agent,
    /// The visitor's messages (`vm:<clientMessageId>` or a UUID) and ends.
    Visitor,
    /// Ids the service makes: escalations, fired timers, delivery notices.
    System,
}

impl IdSpace {
    /// The name stored with each recorded event.
    pub fn as_str(self) -> &'static str {
        match self {
            IdSpace::Agent => "agent",
            IdSpace::Visitor => "visitor",
            IdSpace::System => "system",
        }
    }

    /// The space named `name`, if it is one.
    pub fn parse(name: &str) -> Option<Self> {
        [IdSpace::Agent, IdSpace::Visitor, IdSpace::System].into_iter().find(|s| s.as_str() == name)
    }
}

/// An event id with its namespace: what deduplication compares. Serialized
/// as `[space, id]`; a bare id (state written before namespaces) reads as an
/// agent id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(from = "ScopedWire")]
pub struct ScopedEventId(pub IdSpace, pub EventId);

#[derive(Deserialize)]
#[serde(untagged)]
enum ScopedWire {
    Scoped(IdSpace, EventId),
    Bare(EventId),
}

impl From<ScopedWire> for ScopedEventId {
    fn from(wire: ScopedWire) -> Self {
        match wire {
            ScopedWire::Scoped(space, id) => ScopedEventId(space, id),
            ScopedWire::Bare(id) => ScopedEventId(IdSpace::Agent, id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scoped_ids_round_trip_and_bare_ids_are_agent_ids() {
        let id = ScopedEventId(IdSpace::System, EventId::parse("timer:x").expect("id"));
        let json = serde_json::to_string(&id).expect("json");
        assert_eq!(json, r#"["system","timer:x"]"#);
        assert_eq!(serde_json::from_str::<ScopedEventId>(&json).expect("back"), id);
        let bare: ScopedEventId = serde_json::from_str(r#""timer:x""#).expect("bare");
        assert_eq!(bare, ScopedEventId(IdSpace::Agent, EventId::parse("timer:x").expect("id")));
        assert_ne!(bare, id);
    }

    #[test]
    fn ids_reject_empty_long_and_control_characters() {
        assert_eq!(ConversationId::parse(""), Err(IdError::Empty));
        assert_eq!(ConversationId::parse("x".repeat(129)), Err(IdError::TooLong));
        assert!(ConversationId::parse("é".repeat(128)).is_ok(), "limit is in characters");
        assert_eq!(EventId::parse("a\nb"), Err(IdError::ControlCharacter));
    }

    #[test]
    fn every_id_type_takes_1_to_128_characters() {
        fn limits<T: std::fmt::Debug + AsRef<str> + fmt::Display>(parse: fn(String) -> Result<T, IdError>) {
            for kept in ["x".to_owned(), "é".repeat(128)] {
                let id = parse(kept.clone()).expect("valid");
                assert_eq!(id.as_ref(), kept);
                assert_eq!(id.to_string(), kept);
            }
            assert_eq!(parse("é".repeat(129)).err(), Some(IdError::TooLong));
            assert_eq!(parse(String::new()).err(), Some(IdError::Empty));
            assert_eq!(parse("a\u{7f}".to_owned()).err(), Some(IdError::ControlCharacter));
        }
        limits(BotId::parse);
        limits(ConversationId::parse);
        limits(EventId::parse);
        limits(EscalationId::parse);
        limits(MessageId::parse);
        assert_eq!(EventId::MAX_CHARS, 128);
    }

    #[test]
    fn an_agent_message_is_identified_by_its_event_id() {
        let event = EventId::parse("ev-7").expect("id");
        assert_eq!(MessageId::from(event).as_str(), "ev-7");
    }

    #[test]
    fn deserialization_validates() {
        assert!(serde_json::from_str::<BotId>("\"\"").is_err());
        let id: BotId = serde_json::from_str("\"bot-1\"").expect("valid id");
        assert_eq!(id.as_str(), "bot-1");
    }
}
