//! Column encodings shared by the query modules: sequences as `bigint`, the
//! domain's wire enums as `text`, validated ids parsed back on the way out.

use serde::de::DeserializeOwned;
use tokio_postgres::Row;

use domain::{BotId, ConversationId, RejectCode, Verdict};

use crate::error::{Error, Result};
use crate::key::ConvKey;

/// A `u64` (sequence, epoch) as a `bigint` column.
pub(crate) fn to_i64(value: u64, column: &'static str) -> Result<i64> {
    i64::try_from(value).map_err(|_| Error::OutOfRange(column))
}

/// A `bigint` column as a `u64`.
pub(crate) fn to_u64(value: i64, column: &'static str) -> Result<u64> {
    u64::try_from(value).map_err(|_| Error::Corrupt { column, value: value.to_string() })
}

/// A wire enum (`Phase`, `TimerKind`, `RejectCode`) from its `as_str` form,
/// through its serde representation, which is the same snake_case name.
pub(crate) fn parse_wire<T: DeserializeOwned>(value: &str, column: &'static str) -> Result<T> {
    serde_json::from_value(serde_json::Value::String(value.to_owned()))
        .map_err(|_| Error::Corrupt { column, value: value.to_owned() })
}

/// A validated id from a text column.
pub(crate) fn parse_id<T, E>(
    value: &str,
    column: &'static str,
    parse: impl FnOnce(String) -> Result<T, E>,
) -> Result<T> {
    parse(value.to_owned()).map_err(|_| Error::Corrupt { column, value: value.to_owned() })
}

/// The conversation key held in the columns `bot_id` and `conversation_id`.
pub(crate) fn key_from_row(row: &Row) -> Result<ConvKey> {
    let bot_id = parse_id(row.try_get("bot_id")?, "bot_id", BotId::parse)?;
    let conversation_id =
        parse_id(row.try_get("conversation_id")?, "conversation_id", ConversationId::parse)?;
    Ok(ConvKey { bot_id, conversation_id })
}

/// The `verdict` and `code` columns of a verdict.
pub(crate) fn verdict_columns(verdict: Verdict) -> (&'static str, Option<&'static str>) {
    match verdict {
        Verdict::Applied => ("applied", None),
        Verdict::Duplicate => ("duplicate", None),
        Verdict::Ignored => ("ignored", None),
        Verdict::Rejected(code) => ("rejected", Some(code.as_str())),
    }
}

/// A verdict from its `verdict` and `code` columns.
pub(crate) fn verdict_from_columns(verdict: &str, code: Option<&str>) -> Result<Verdict> {
    match (verdict, code) {
        ("applied", None) => Ok(Verdict::Applied),
        ("duplicate", None) => Ok(Verdict::Duplicate),
        ("ignored", None) => Ok(Verdict::Ignored),
        ("rejected", Some(code)) => Ok(Verdict::Rejected(parse_wire::<RejectCode>(code, "code")?)),
        _ => Err(Error::Corrupt { column: "verdict", value: format!("{verdict}/{code:?}") }),
    }
}

/// Two parallel `text[]` parameters: the bot and conversation ids of `keys`.
pub(crate) fn key_arrays<'a>(keys: impl Iterator<Item = &'a ConvKey>) -> (Vec<&'a str>, Vec<&'a str>) {
    keys.map(|key| (key.bot_id.as_str(), key.conversation_id.as_str())).unzip()
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::{Phase, TimerKind};

    #[test]
    fn wire_enums_round_trip_through_their_names() {
        for phase in [Phase::Idle, Phase::Requested, Phase::Queued, Phase::Connected] {
            assert_eq!(parse_wire::<Phase>(phase.as_str(), "phase").expect("parses"), phase);
        }
        for kind in [TimerKind::NoResponse, TimerKind::Queue, TimerKind::Idle, TimerKind::Ttl] {
            assert_eq!(parse_wire::<TimerKind>(kind.as_str(), "kind").expect("parses"), kind);
        }
        assert!(parse_wire::<Phase>("nope", "phase").is_err());
    }

    #[test]
    fn verdicts_round_trip_through_their_columns() {
        let all = [
            Verdict::Applied,
            Verdict::Duplicate,
            Verdict::Ignored,
            Verdict::Rejected(RejectCode::NotConnected),
            Verdict::Rejected(RejectCode::HeldMessagesFull),
        ];
        for verdict in all {
            let (name, code) = verdict_columns(verdict);
            assert_eq!(verdict_from_columns(name, code).expect("parses"), verdict);
        }
        assert!(verdict_from_columns("rejected", None).is_err());
    }

    #[test]
    fn sequences_beyond_bigint_are_refused() {
        assert!(to_i64(u64::MAX, "sequence").is_err());
        assert!(to_u64(-1, "sequence").is_err());
        assert_eq!(to_i64(7, "sequence").expect("fits"), 7);
        // The edges: bigint's largest value fits both ways, one more does not.
        let largest = i64::MAX as u64;
        assert_eq!(to_i64(largest, "sequence").expect("fits"), i64::MAX);
        assert!(matches!(to_i64(largest + 1, "sequence"), Err(Error::OutOfRange("sequence"))));
        assert_eq!(to_u64(i64::MAX, "sequence").expect("fits"), largest);
        assert_eq!(to_u64(0, "sequence").expect("fits"), 0);
        assert!(matches!(to_u64(-1, "epoch"), Err(Error::Corrupt { column: "epoch", .. })));
    }

    #[test]
    fn verdict_columns_are_the_wire_names() {
        assert_eq!(verdict_columns(Verdict::Applied), ("applied", None));
        assert_eq!(verdict_columns(Verdict::Duplicate), ("duplicate", None));
        assert_eq!(verdict_columns(Verdict::Ignored), ("ignored", None));
        assert_eq!(
            verdict_columns(Verdict::Rejected(RejectCode::StaleEscalation)),
            ("rejected", Some("stale_escalation"))
        );
        for (verdict, code) in
            [("applied", Some("not_connected")), ("rejected", Some("nope")), ("other", None)]
        {
            assert!(verdict_from_columns(verdict, code).is_err(), "{verdict}/{code:?}");
        }
    }

    #[test]
    fn ids_are_validated_on_the_way_out() {
        let id = parse_id("bot-1", "bot_id", BotId::parse).expect("valid");
        assert_eq!(id.as_str(), "bot-1");
        let corrupt = parse_id("", "bot_id", BotId::parse).expect_err("empty");
        assert!(matches!(corrupt, Error::Corrupt { column: "bot_id", ref value } if value.is_empty()));
    }

    #[test]
    fn keys_become_two_parallel_arrays() {
        let key = |bot: &str, conversation: &str| {
            ConvKey::new(BotId::parse(bot).expect("id"), ConversationId::parse(conversation).expect("id"))
        };
        let keys = [key("a", "1"), key("b", "2")];
        assert_eq!(key_arrays(keys.iter()), (vec!["a", "b"], vec!["1", "2"]));
        assert_eq!(key_arrays([].iter()), (Vec::new(), Vec::new()));
    }
}
