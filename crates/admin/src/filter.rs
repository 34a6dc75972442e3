//! Which dead letters an operation applies to, as the CLI's flags and the
//! admin API's query parameters give it, parsed once for both.

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use serde::Deserialize;
use store::{DeadLetterFilter, DeadReason};

use crate::error::{OpsError, OpsResult};

/// Filters as given (text), combined with AND; all optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FilterArgs {
    /// Only this bot's.
    pub bot: Option<String>,
    /// Only this conversation's (`platformConversationId`).
    pub conversation: Option<String>,
    /// Only those given up for this reason: `final_status`, `out_of_budget`,
    /// `no_endpoint`, `escalation_ended`, `undecodable`.
    pub reason: Option<String>,
    /// Dead-lettered at or after this time: RFC 3339, or a duration ago (`30m`, `2h`, `7d`, `1h30m`).
    pub since: Option<String>,
    /// Dead-lettered before this time (same formats as `since`).
    pub until: Option<String>,
}

impl FilterArgs {
    /// The store's filter; errors name the field.
    pub fn parse(&self, now: DateTime<Utc>) -> OpsResult<DeadLetterFilter> {
        let reason = match &self.reason {
            None => None,
            Some(raw) => Some(DeadReason::parse(raw).ok_or_else(|| {
                let known: Vec<&str> = DeadReason::ALL.iter().map(|r| r.as_str()).collect();
                OpsError::invalid(format!("invalid reason {raw:?}: expected one of {}", known.join(", ")))
            })?),
        };
        let since = self.since.as_deref().map(|v| parse_time("since", v, now)).transpose()?;
        let until = self.until.as_deref().map(|v| parse_time("until", v, now)).transpose()?;
        if let (Some(since), Some(until)) = (since, until)
            && since >= until
        {
            return Err(OpsError::invalid(format!(
                "since ({}) must be before until ({})",
                format_time(since),
                format_time(until)
            )));
        }
        Ok(DeadLetterFilter {
            bot_id: self.bot.clone(),
            conversation_id: self.conversation.clone(),
            reason,
            since,
            until,
        })
    }
}

/// An RFC 3339 time, or a duration before `now` (`90s`, `30m`, `2h`, `7d`, `1w`, `1h30m`).
pub fn parse_time(field: &str, value: &str, now: DateTime<Utc>) -> OpsResult<DateTime<Utc>> {
    if let Ok(at) = DateTime::parse_from_rfc3339(value.trim()) {
        return Ok(at.with_timezone(&Utc));
    }
    parse_duration(value.trim()).and_then(|ago| now.checked_sub_signed(ago)).ok_or_else(|| {
        OpsError::invalid(format!(
            "invalid {field} {value:?}: expected an RFC 3339 time (2025-01-02T03:04:05Z) \
             or a duration ago (30m, 2h, 7d, 1h30m)"
        ))
    })
}

/// `90s`, `30m`, `2h`, `7d`, `1w`, `1h30m` (humantime's units; a number
/// without a unit is ambiguous and refused).
fn parse_duration(value: &str) -> Option<TimeDelta> {
    TimeDelta::from_std(humantime::parse_duration(value).ok()?).ok()
}

/// Seconds precision, `Z`.
pub fn format_time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Milliseconds precision, `Z`: every time in the API's and the CLI's JSON.
pub fn format_time_ms(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2025-06-01T12:00:00Z").expect("time").with_timezone(&Utc)
    }

    #[test]
    fn times_are_rfc3339_or_durations_ago() {
        assert_eq!(format_time(parse_time("since", "1h", now()).expect("1h")), "2025-06-01T11:00:00Z");
        assert_eq!(format_time(parse_time("since", "1h30m", now()).expect("1h30m")), "2025-06-01T10:30:00Z");
        assert_eq!(format_time(parse_time("since", "7d", now()).expect("7d")), "2025-05-25T12:00:00Z");
        assert_eq!(format_time(parse_time("since", "90s", now()).expect("90s")), "2025-06-01T11:58:30Z");
        assert_eq!(
            format_time(parse_time("until", "2025-01-02T03:04:05+01:00", now()).expect("rfc3339")),
            "2025-01-02T02:04:05Z"
        );
        for bad in ["", "yesterday", "5", "5x", "h", "-1h", "2025-01-02"] {
            let error = parse_time("since", bad, now()).expect_err(bad);
            assert_eq!(error.exit_code(), crate::error::exit::USAGE);
            assert!(error.message.starts_with(&format!("invalid since {bad:?}: expected an RFC 3339 time")));
        }
    }

    #[test]
    fn filters_are_validated() {
        let args = FilterArgs { reason: Some("nope".into()), ..FilterArgs::default() };
        let error = args.parse(now()).expect_err("bad reason");
        assert_eq!(
            error.message,
            "invalid reason \"nope\": expected one of final_status, out_of_budget, no_endpoint, escalation_ended, undecodable"
        );
        let args = FilterArgs { since: Some("1h".into()), until: Some("2h".into()), ..FilterArgs::default() };
        assert!(args.parse(now()).is_err(), "since after until");
        let args = FilterArgs {
            bot: Some("acme".into()),
            reason: Some("out_of_budget".into()),
            since: Some("2h".into()),
            ..FilterArgs::default()
        };
        let filter = args.parse(now()).expect("valid");
        assert_eq!(filter.bot_id.as_deref(), Some("acme"));
        assert_eq!(filter.reason, Some(DeadReason::OutOfBudget));
        assert_eq!(filter.since.map(format_time).as_deref(), Some("2025-06-01T10:00:00Z"));
    }
}
