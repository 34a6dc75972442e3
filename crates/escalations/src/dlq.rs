//! `escalations dlq`: webhook dead letters (docs/protocol.md §8). The queries live in the
//! store (`store::dead_letters`); this module parses the filters, renders
//! tables and JSON, and guards the bulk and destructive actions (dry run by
//! default, `--yes` to act).

use std::collections::BTreeMap;
use std::io::Write;

use anyhow::{Context, bail};
use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use domain::webhook::{WebhookEnvelope, WebhookPayload};
use serde_json::{Value, json};
use store::{AttemptRecord, DeadLetterChange, DeadLetterFilter, DeadReason, DeliveryRecord, Store};

use crate::cli::{DlqAction, DlqFilterArgs};

/// Bulk actions look at this many dead letters at most per run.
const BULK_LIMIT: i64 = 100_000;
/// Characters of `last_error` shown in the table.
const ERROR_WIDTH: usize = 48;

/// Runs one `dlq` action, writing its report to `out`.
pub async fn run(store: &Store, action: DlqAction, out: &mut dyn Write) -> anyhow::Result<()> {
    let now = Utc::now();
    match action {
        DlqAction::List { filter, limit, json } => {
            let filter = parse_filter(&filter, now)?;
            let letters = store.list_dead_letters(&filter, limit).await.context("listing dead letters")?;
            if json {
                let all: Vec<Value> = letters.iter().map(record_json).collect();
                writeln!(out, "{}", serde_json::to_string_pretty(&all)?)?;
            } else {
                write!(out, "{}", render_table(&letters))?;
            }
        }
        DlqAction::Show { id, json } => {
            let record = store.delivery(id).await.context("reading the delivery")?;
            let Some(record) = record else { bail!("dead letter {id} not found") };
            let attempts = store.delivery_attempts(id).await.context("reading its attempts")?;
            if json {
                let mut value = record_json(&record);
                value["payload"] = posted_body(&record);
                value["attempts"] = attempts.iter().map(attempt_json).collect();
                writeln!(out, "{}", serde_json::to_string_pretty(&value)?)?;
            } else {
                write!(out, "{}", render_show(&record, &attempts))?;
            }
        }
        DlqAction::Replay { id: Some(id), filter, yes: _ } => {
            if parse_filter(&filter, now)? != DeadLetterFilter::default() {
                bail!("give either a dead letter id or filters, not both");
            }
            let change = store.replay_dead_letter(id, now).await.context("replaying")?;
            check_change(id, change)?;
            writeln!(out, "replayed dead letter {id}: pending again, same webhook-id")?;
        }
        DlqAction::Replay { id: None, filter, yes } => replay_bulk(store, &filter, yes, now, out).await?,
        DlqAction::Skip { id } => {
            check_change(id, store.skip_dead_letter(id).await.context("skipping")?)?;
            writeln!(out, "skipped dead letter {id}: it will not be sent")?;
        }
        DlqAction::Purge { filter, yes } => {
            let filter = parse_filter(&filter, now)?;
            if !yes {
                let listed = store.list_dead_letters(&filter, BULK_LIMIT).await.context("counting")?;
                let count = listed.iter().filter(|letter| letter.status == "dead").count();
                bail!("refusing to delete {count} dead letter(s) without --yes (this cannot be undone)");
            }
            let deleted = store.purge_dead_letters(&filter).await.context("purging dead letters")?;
            writeln!(out, "deleted {deleted} dead letter(s) and their attempts")?;
        }
    }
    Ok(())
}

/// Replays every match, each conversation's dead letters together (so they
/// go out in sequence order), reporting progress; a dry run without `yes`.
async fn replay_bulk(
    store: &Store,
    filter: &DlqFilterArgs,
    yes: bool,
    now: DateTime<Utc>,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let filter = parse_filter(filter, now)?;
    let mut letters = store.list_dead_letters(&filter, BULK_LIMIT).await.context("listing dead letters")?;
    // Skipped deliveries (their escalation ended) are listed, never replayed.
    letters.retain(|letter| letter.status == "dead");
    let mut by_conversation: BTreeMap<(String, String), Vec<&DeliveryRecord>> = BTreeMap::new();
    for letter in &letters {
        let key = (letter.key.bot_id.to_string(), letter.key.conversation_id.to_string());
        by_conversation.entry(key).or_default().push(letter);
    }
    let total = letters.len();
    if !yes {
        writeln!(
            out,
            "dry run: {total} dead letter(s) in {} conversation(s) would be replayed:",
            by_conversation.len()
        )?;
        for ((bot, conversation), letters) in &by_conversation {
            let sequences: Vec<String> =
                sorted(letters).iter().map(|l| format!("#{} (id {})", l.sequence, l.id)).collect();
            writeln!(out, "  {bot}/{conversation}: {}", sequences.join(", "))?;
        }
        writeln!(out, "pass --yes to replay them")?;
        return Ok(());
    }
    let mut done = 0;
    for ((bot, conversation), letters) in &by_conversation {
        let ids: Vec<i64> = sorted(letters).iter().map(|l| l.id).collect();
        let replayed = store
            .replay_dead_letters(&ids, now)
            .await
            .with_context(|| format!("replaying {bot}/{conversation}"))?;
        done += usize::try_from(replayed).unwrap_or(0);
        writeln!(out, "replayed {done}/{total} ({bot}/{conversation}: {replayed})")?;
    }
    writeln!(out, "replayed {done} dead letter(s)")?;
    Ok(())
}

fn sorted<'a>(letters: &[&'a DeliveryRecord]) -> Vec<&'a DeliveryRecord> {
    let mut letters = letters.to_vec();
    letters.sort_by_key(|l| l.sequence);
    letters
}

fn check_change(id: i64, change: DeadLetterChange) -> anyhow::Result<()> {
    match change {
        DeadLetterChange::Changed => Ok(()),
        DeadLetterChange::NotFound => bail!("dead letter {id} not found"),
        DeadLetterChange::NotDead(status) => bail!("delivery {id} is {status}, not a dead letter"),
    }
}

/// The store filter from the command-line flags; errors name the flag.
pub fn parse_filter(args: &DlqFilterArgs, now: DateTime<Utc>) -> anyhow::Result<DeadLetterFilter> {
    let reason = match &args.reason {
        None => None,
        Some(raw) => Some(DeadReason::parse(raw).with_context(|| {
            let known: Vec<&str> = DeadReason::ALL.iter().map(|r| r.as_str()).collect();
            format!("invalid --reason {raw:?}: expected one of {}", known.join(", "))
        })?),
    };
    let since = args.since.as_deref().map(|v| parse_time("--since", v, now)).transpose()?;
    let until = args.until.as_deref().map(|v| parse_time("--until", v, now)).transpose()?;
    if let (Some(since), Some(until)) = (since, until)
        && since >= until
    {
        bail!("--since ({}) must be before --until ({})", format_time(since), format_time(until));
    }
    Ok(DeadLetterFilter {
        bot_id: args.bot.clone(),
        conversation_id: args.conversation.clone(),
        reason,
        since,
        until,
    })
}

/// An RFC 3339 time, or a duration before `now` (`90s`, `30m`, `2h`, `7d`, `1w`, `1h30m`).
pub fn parse_time(flag: &str, value: &str, now: DateTime<Utc>) -> anyhow::Result<DateTime<Utc>> {
    if let Ok(at) = DateTime::parse_from_rfc3339(value.trim()) {
        return Ok(at.with_timezone(&Utc));
    }
    parse_duration(value.trim()).and_then(|ago| now.checked_sub_signed(ago)).with_context(|| {
        format!(
            "invalid {flag} {value:?}: expected an RFC 3339 time (2025-01-02T03:04:05Z) \
             or a duration ago (30m, 2h, 7d, 1h30m)"
        )
    })
}

fn parse_duration(value: &str) -> Option<TimeDelta> {
    if value.is_empty() {
        return None;
    }
    let mut total = TimeDelta::zero();
    let mut digits = String::new();
    for c in value.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let n: i64 = digits.parse().ok()?;
        digits.clear();
        let unit = match c {
            's' => TimeDelta::try_seconds(n)?,
            'm' => TimeDelta::try_minutes(n)?,
            'h' => TimeDelta::try_hours(n)?,
            'd' => TimeDelta::try_days(n)?,
            'w' => TimeDelta::try_weeks(n)?,
            _ => return None,
        };
        total = total.checked_add(&unit)?;
    }
    // A trailing number without a unit is ambiguous.
    digits.is_empty().then_some(total)
}

pub fn format_time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn reason_str(record: &DeliveryRecord) -> String {
    let reason = record.reason.map_or("-", DeadReason::as_str);
    if record.status == "dead" { reason.to_owned() } else { format!("{reason} ({})", record.status) }
}

fn webhook_id(record: &DeliveryRecord) -> String {
    delivery::webhook_id(record.key.bot_id.as_str(), record.key.conversation_id.as_str(), record.sequence)
}

fn truncate(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        text.to_owned()
    } else {
        format!("{}…", text.chars().take(width - 1).collect::<String>())
    }
}

/// The `dlq list` table.
pub fn render_table(letters: &[DeliveryRecord]) -> String {
    if letters.is_empty() {
        return "no dead letters match\n".to_owned();
    }
    let mut rows = vec![[
        "ID".to_owned(),
        "BOT".to_owned(),
        "CONVERSATION".to_owned(),
        "SEQ".to_owned(),
        "EVENT".to_owned(),
        "REASON".to_owned(),
        "ATTEMPTS".to_owned(),
        "DEAD AT".to_owned(),
        "LAST ERROR".to_owned(),
    ]];
    for l in letters {
        rows.push([
            l.id.to_string(),
            l.key.bot_id.to_string(),
            truncate(l.key.conversation_id.as_str(), 36),
            l.sequence.to_string(),
            l.event_type.clone(),
            reason_str(l),
            l.attempts.to_string(),
            l.dead_at.map_or("-".to_owned(), format_time),
            truncate(l.last_error.as_deref().unwrap_or("-"), ERROR_WIDTH),
        ]);
    }
    let mut widths = [0usize; 9];
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    for row in &rows {
        let cells: Vec<String> =
            row.iter().zip(widths).map(|(cell, width)| format!("{cell:<width$}")).collect();
        text.push_str(cells.join("  ").trim_end());
        text.push('\n');
    }
    text.push_str(&format!("{} dead letter(s)\n", letters.len()));
    text
}

/// The body that is (re)posted: the stored envelope in the wire wrapper.
fn posted_body(record: &DeliveryRecord) -> Value {
    match serde_json::from_value::<WebhookEnvelope>(record.payload.clone()) {
        Ok(envelope) => {
            let payload =
                WebhookPayload::new(record.key.bot_id.clone(), record.key.conversation_id.clone(), envelope);
            serde_json::to_value(payload).unwrap_or(Value::Null)
        }
        Err(_) => record.payload.clone(),
    }
}

/// `dlq show` as text.
pub fn render_show(record: &DeliveryRecord, attempts: &[AttemptRecord]) -> String {
    let time = |at: Option<DateTime<Utc>>| at.map_or("-".to_owned(), format_time);
    let mut text = format!(
        "delivery {id} ({status})\n\
         bot:          {bot}\n\
         conversation: {conversation}\n\
         sequence:     {sequence}\n\
         event type:   {event_type}\n\
         escalation:   {escalation}\n\
         webhook-id:   {webhook_id}\n\
         reason:       {reason}\n\
         created at:   {created}\n\
         dead at:      {dead}\n\
         replays:      {replays}\n\
         last error:   {error}\n\npayload:\n{payload}\n\nattempts ({count}):\n",
        id = record.id,
        status = record.status,
        bot = record.key.bot_id,
        conversation = record.key.conversation_id,
        sequence = record.sequence,
        event_type = record.event_type,
        escalation = record.escalation_id.as_deref().unwrap_or("-"),
        webhook_id = webhook_id(record),
        reason = reason_str(record),
        created = format_time(record.created_at),
        dead = time(record.dead_at),
        replays = record.replays,
        error = record.last_error.as_deref().unwrap_or("-"),
        payload = serde_json::to_string_pretty(&posted_body(record)).unwrap_or_default(),
        count = attempts.len(),
    );
    for a in attempts {
        text.push_str(&format!("  {:>3}  {}  {}\n", a.attempt, format_time_ms(a.at), describe_attempt(a)));
    }
    text
}

pub fn format_time_ms(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// `HTTP 503 (12 ms)`, `timed out (10000 ms)`, `refused: …`.
pub fn describe_attempt(a: &AttemptRecord) -> String {
    let outcome = match (&a.status_code, &a.error) {
        (Some(_), Some(error)) if error.starts_with("HTTP ") => error.clone(),
        (Some(code), _) => format!("HTTP {code}"),
        (None, Some(error)) => error.clone(),
        (None, None) => "no response".to_owned(),
    };
    match a.latency_ms {
        Some(ms) => format!("{outcome} ({ms} ms)"),
        None => outcome,
    }
}

fn record_json(r: &DeliveryRecord) -> Value {
    json!({
        "id": r.id,
        "botId": r.key.bot_id.as_str(),
        "conversationId": r.key.conversation_id.as_str(),
        "sequence": r.sequence,
        "eventType": r.event_type,
        "escalationId": r.escalation_id,
        "webhookId": webhook_id(r),
        "status": r.status,
        "reason": r.reason.map(DeadReason::as_str),
        "attempts": r.attempts,
        "replays": r.replays,
        "createdAt": format_time_ms(r.created_at),
        "deadAt": r.dead_at.map(format_time_ms),
        "deliveredAt": r.delivered_at.map(format_time_ms),
        "lastError": r.last_error,
    })
}

pub fn attempt_json(a: &AttemptRecord) -> Value {
    json!({
        "attempt": a.attempt,
        "at": format_time_ms(a.at),
        "statusCode": a.status_code,
        "error": a.error,
        "latencyMs": a.latency_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::{BotId, ConversationId};
    use store::ConvKey;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2025-06-01T12:00:00Z").expect("time").with_timezone(&Utc)
    }

    #[test]
    fn times_are_rfc3339_or_durations_ago() {
        assert_eq!(format_time(parse_time("--since", "1h", now()).expect("1h")), "2025-06-01T11:00:00Z");
        assert_eq!(
            format_time(parse_time("--since", "1h30m", now()).expect("1h30m")),
            "2025-06-01T10:30:00Z"
        );
        assert_eq!(format_time(parse_time("--since", "7d", now()).expect("7d")), "2025-05-25T12:00:00Z");
        assert_eq!(format_time(parse_time("--since", "90s", now()).expect("90s")), "2025-06-01T11:58:30Z");
        assert_eq!(
            format_time(parse_time("--until", "2025-01-02T03:04:05+01:00", now()).expect("rfc3339")),
            "2025-01-02T02:04:05Z"
        );
        for bad in ["", "yesterday", "5", "5x", "h", "-1h", "2025-01-02"] {
            let error = parse_time("--since", bad, now()).expect_err(bad).to_string();
            assert!(
                error.starts_with(&format!("invalid --since {bad:?}: expected an RFC 3339 time")),
                "{error}"
            );
        }
    }

    #[test]
    fn filters_are_validated() {
        let args = DlqFilterArgs { reason: Some("nope".into()), ..DlqFilterArgs::default() };
        let error = parse_filter(&args, now()).expect_err("bad reason").to_string();
        assert_eq!(
            error,
            "invalid --reason \"nope\": expected one of final_status, out_of_budget, no_endpoint, escalation_ended, undecodable"
        );
        let args =
            DlqFilterArgs { since: Some("1h".into()), until: Some("2h".into()), ..DlqFilterArgs::default() };
        assert!(parse_filter(&args, now()).is_err(), "since after until");
        let args = DlqFilterArgs {
            bot: Some("acme".into()),
            reason: Some("out_of_budget".into()),
            since: Some("2h".into()),
            ..DlqFilterArgs::default()
        };
        let filter = parse_filter(&args, now()).expect("valid");
        assert_eq!(filter.bot_id.as_deref(), Some("acme"));
        assert_eq!(filter.reason, Some(DeadReason::OutOfBudget));
        assert_eq!(filter.since.map(format_time).as_deref(), Some("2025-06-01T10:00:00Z"));
    }

    fn record(id: i64, error: &str) -> DeliveryRecord {
        DeliveryRecord {
            id,
            key: ConvKey::new(
                BotId::parse("acme").expect("id"),
                ConversationId::parse("conv-1").expect("id"),
            ),
            sequence: 3,
            event_type: "widgetMessage".into(),
            escalation_id: Some("esc-1".into()),
            status: "dead".into(),
            reason: Some(DeadReason::OutOfBudget),
            attempts: 4,
            replays: 0,
            created_at: now(),
            next_attempt_at: now(),
            delivered_at: None,
            dead_at: Some(now()),
            last_error: Some(error.into()),
            payload: json!({"sequence": 3, "timestamp": "2025-06-01T12:00:00Z", "eventType": "widgetMessage",
                            "text": "hi", "messageId": "m-3", "escalationId": "esc-1"}),
        }
    }

    #[test]
    fn table_aligns_columns_and_truncates_errors() {
        let long = "HTTP 500 Internal Server Error: ".to_owned() + &"x".repeat(100);
        let table = render_table(&[record(7, "timed out"), record(12, &long)]);
        let expected_header = "ID  BOT   CONVERSATION  SEQ  EVENT          REASON         ATTEMPTS  DEAD AT               LAST ERROR";
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines[0], expected_header);
        assert_eq!(
            lines[1],
            "7   acme  conv-1        3    widgetMessage  out_of_budget  4         2025-06-01T12:00:00Z  timed out"
        );
        assert!(lines[2].ends_with('…') && lines[2].chars().count() < 150, "{}", lines[2]);
        assert_eq!(lines[3], "2 dead letter(s)");
        assert_eq!(render_table(&[]), "no dead letters match\n");
    }

    #[test]
    fn show_has_the_posted_body_and_each_attempt() {
        let attempts = vec![
            AttemptRecord {
                attempt: 1,
                at: now(),
                status_code: Some(503),
                error: Some("HTTP 503 Service Unavailable".into()),
                latency_ms: Some(15),
            },
            AttemptRecord {
                attempt: 2,
                at: now(),
                status_code: None,
                error: Some("timed out".into()),
                latency_ms: Some(10_000),
            },
        ];
        let text = render_show(&record(7, "timed out"), &attempts);
        assert!(text.starts_with("delivery 7 (dead)\nbot:          acme\n"), "{text}");
        assert!(text.contains(&format!("webhook-id:   {}", delivery::webhook_id("acme", "conv-1", 3))));
        assert!(text.contains("\"botId\": \"acme\"") && text.contains("\"channel\": \"chat\""));
        assert!(text.contains(
            "attempts (2):\n    1  2025-06-01T12:00:00.000Z  HTTP 503 Service Unavailable (15 ms)\n"
        ));
        assert!(text.contains("    2  2025-06-01T12:00:00.000Z  timed out (10000 ms)\n"));
        let bare =
            AttemptRecord { attempt: 1, at: now(), status_code: Some(500), error: None, latency_ms: None };
        assert_eq!(describe_attempt(&bare), "HTTP 500");
    }
}
