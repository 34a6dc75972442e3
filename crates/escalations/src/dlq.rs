//! `escalations dlq`: webhook dead letters (docs/protocol.md §8). The
//! operations are `admin::dead_letters`, shared with the admin API; this
//! module maps the flags onto them and renders their results as tables, text
//! or JSON.

use std::io::Write;

use admin::dead_letters::{self, DeadLetter, DeadLetterDetail, describe_attempt};
use admin::filter::format_time;
use admin::{FilterArgs, OpsError};
use serde::Serialize;
use store::Store;

use crate::cli::{DlqAction, DlqFilterArgs};

/// Characters of `last_error` shown in the table.
const ERROR_WIDTH: usize = 48;

impl From<&DlqFilterArgs> for FilterArgs {
    fn from(args: &DlqFilterArgs) -> Self {
        FilterArgs {
            bot: args.bot.clone(),
            conversation: args.conversation.clone(),
            reason: args.reason.clone(),
            since: args.since.clone(),
            until: args.until.clone(),
        }
    }
}

fn print_json(out: &mut dyn Write, value: &impl Serialize) -> anyhow::Result<()> {
    writeln!(out, "{}", serde_json::to_string_pretty(value)?)?;
    Ok(())
}

/// Runs one `dlq` action, writing its report to `out`.
pub async fn run(store: &Store, action: DlqAction, out: &mut dyn Write) -> anyhow::Result<()> {
    match action {
        DlqAction::List { filter, limit, json } => {
            let letters = dead_letters::list(store, &FilterArgs::from(&filter), limit).await?;
            if json {
                print_json(out, &letters)?;
            } else {
                write!(out, "{}", render_table(&letters))?;
            }
        }
        DlqAction::Show { id, json } => {
            let detail = dead_letters::show(store, id).await?;
            if json {
                print_json(out, &detail)?;
            } else {
                write!(out, "{}", render_show(&detail))?;
            }
        }
        DlqAction::Replay { id: Some(id), filter, yes: _, json } => {
            if FilterArgs::from(&filter) != FilterArgs::default() {
                return Err(OpsError::invalid("give either a dead letter id or filters, not both").into());
            }
            let changed = dead_letters::replay_one(store, id).await?;
            if json {
                print_json(out, &changed)?;
            } else {
                writeln!(out, "replayed dead letter {id}: pending again, same webhook-id")?;
            }
        }
        DlqAction::Replay { id: None, filter, yes, json } => {
            let filter = FilterArgs::from(&filter);
            let report = dead_letters::replay_reporting(store, &filter, yes, |c, done, total| {
                if !json {
                    let _ = writeln!(
                        out,
                        "replayed {done}/{total} ({}/{}: {})",
                        c.bot_id, c.conversation_id, c.replayed
                    );
                }
            })
            .await?;
            if json {
                print_json(out, &report)?;
            } else if report.dry_run {
                writeln!(
                    out,
                    "dry run: {} dead letter(s) in {} conversation(s) would be replayed:",
                    report.matched,
                    report.conversations.len()
                )?;
                for c in &report.conversations {
                    let sequences: Vec<String> =
                        c.deliveries.iter().map(|d| format!("#{} (id {})", d.sequence, d.id)).collect();
                    writeln!(out, "  {}/{}: {}", c.bot_id, c.conversation_id, sequences.join(", "))?;
                }
                writeln!(out, "pass --yes to replay them")?;
            } else {
                writeln!(out, "replayed {} dead letter(s)", report.replayed)?;
            }
        }
        DlqAction::Skip { id } => {
            dead_letters::skip(store, id).await?;
            writeln!(out, "skipped dead letter {id}: it will not be sent")?;
        }
        DlqAction::Purge { filter, yes } => {
            let report = dead_letters::purge(store, &FilterArgs::from(&filter), yes).await?;
            writeln!(out, "deleted {} dead letter(s) and their attempts", report.deleted)?;
        }
    }
    Ok(())
}

fn reason_str(fields: &dead_letters::DeliveryFields) -> String {
    let reason = fields.reason.as_deref().unwrap_or("-");
    if fields.status == "dead" { reason.to_owned() } else { format!("{reason} ({})", fields.status) }
}

fn truncate(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        text.to_owned()
    } else {
        format!("{}…", text.chars().take(width - 1).collect::<String>())
    }
}

/// Seconds precision for the table (the JSON keeps milliseconds).
fn short_time(at: Option<&str>) -> String {
    at.and_then(dead_letters::parse_printed).map_or("-".to_owned(), format_time)
}

/// The `dlq list` table.
pub fn render_table(letters: &[DeadLetter]) -> String {
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
        let f = &l.fields;
        rows.push([
            f.id.to_string(),
            f.bot_id.clone(),
            truncate(&f.conversation_id, 36),
            f.sequence.to_string(),
            f.event_type.clone(),
            reason_str(f),
            l.attempts.to_string(),
            short_time(f.dead_at.as_deref()),
            truncate(f.last_error.as_deref().unwrap_or("-"), ERROR_WIDTH),
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

/// `dlq show` as text.
pub fn render_show(detail: &DeadLetterDetail) -> String {
    let f = &detail.fields;
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
        id = f.id,
        status = f.status,
        bot = f.bot_id,
        conversation = f.conversation_id,
        sequence = f.sequence,
        event_type = f.event_type,
        escalation = f.escalation_id.as_deref().unwrap_or("-"),
        webhook_id = f.webhook_id,
        reason = reason_str(f),
        created = short_time(Some(&f.created_at)),
        dead = short_time(f.dead_at.as_deref()),
        replays = f.replays,
        error = f.last_error.as_deref().unwrap_or("-"),
        payload = serde_json::to_string_pretty(&detail.payload).unwrap_or_default(),
        count = detail.attempts.len(),
    );
    for a in &detail.attempts {
        text.push_str(&format!("  {:>3}  {}  {}\n", a.attempt, a.at, describe_attempt(a)));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, Utc};
    use domain::{BotId, ConversationId};
    use serde_json::json;
    use store::{AttemptRecord, ConvKey, DeadReason, DeliveryRecord};

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2025-06-01T12:00:00Z").expect("time").with_timezone(&Utc)
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
        let letters = [record(7, "timed out"), record(12, &long)].map(|r| dead_letters::dead_letter(&r));
        let table = render_table(&letters);
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
        let attempts = [
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
        let record = record(7, "timed out");
        let detail = DeadLetterDetail {
            fields: dead_letters::fields(&record),
            payload: dead_letters::posted_body(&record),
            attempts: attempts.iter().map(dead_letters::attempt).collect(),
        };
        let text = render_show(&detail);
        assert!(text.starts_with("delivery 7 (dead)\nbot:          acme\n"), "{text}");
        assert!(text.contains(&format!("webhook-id:   {}", delivery::webhook_id("acme", "conv-1", 3))));
        assert!(text.contains("\"botId\": \"acme\"") && text.contains("\"channel\": \"chat\""));
        assert!(text.contains(
            "attempts (2):\n    1  2025-06-01T12:00:00.000Z  HTTP 503 Service Unavailable (15 ms)\n"
        ));
        assert!(text.contains("    2  2025-06-01T12:00:00.000Z  timed out (10000 ms)\n"));
        let bare =
            AttemptRecord { attempt: 1, at: now(), status_code: Some(500), error: None, latency_ms: None };
        assert_eq!(describe_attempt(&dead_letters::attempt(&bare)), "HTTP 500");
    }
}
