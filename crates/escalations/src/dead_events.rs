//! `escalations dead-events`: renders `admin::dead_events` (list, replay,
//! purge of what RabbitMQ dead-lettered), the same operations the admin API runs.

use std::io::Write;

use admin::dead_events::{self, DeadEvent};
use settings::Settings;

use crate::cli::DeadEventsAction;

/// Runs one `dead-events` action, writing its report to `out`.
pub async fn run(settings: &Settings, action: DeadEventsAction, out: &mut impl Write) -> anyhow::Result<()> {
    let queue =
        broker::Topology::new(settings.broker.prefix.clone(), settings.broker.shards, 1).dead_letter_queue();
    match action {
        DeadEventsAction::List { limit, json } => {
            let events = dead_events::list(settings, limit).await?;
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&events)?)?;
            } else if events.is_empty() {
                writeln!(out, "no dead-lettered events in {queue}")?;
            } else {
                write!(out, "{}", render(&events))?;
            }
        }
        DeadEventsAction::Replay { yes } => {
            let report = dead_events::replay(settings, yes).await?;
            if report.dry_run {
                if !report.events.is_empty() {
                    write!(out, "{}", render(&report.events))?;
                }
                writeln!(
                    out,
                    "dry run: {} dead-lettered event(s) in {queue}; pass --yes to replay them",
                    report.events.len()
                )?;
            } else {
                writeln!(out, "replayed {} event(s) to their shard queues", report.replayed)?;
                if report.kept > 0 {
                    writeln!(
                        out,
                        "kept {} message(s) whose body is not an event; `dead-events purge --yes` drops them",
                        report.kept
                    )?;
                }
            }
        }
        DeadEventsAction::Purge { yes } => {
            let purged = dead_events::purge(settings, yes).await?;
            writeln!(out, "purged {} message(s) from {}", purged.purged, purged.queue)?;
        }
    }
    Ok(())
}

/// The table: fixed-width columns, the last one as is.
fn render(events: &[DeadEvent]) -> String {
    let header =
        ["bot", "conversation", "event type", "event id", "reason", "replayable", "dead-lettered at"]
            .map(str::to_owned);
    let mut text = columns(&header);
    for e in events {
        let cell = |value: &Option<String>| value.clone().unwrap_or_else(|| "-".to_owned());
        let cells = [
            cell(&e.bot_id),
            cell(&e.conversation_id),
            cell(&e.event_type),
            cell(&e.event_id),
            cell(&e.reason),
            if e.replayable { "yes" } else { "no" }.to_owned(),
            cell(&e.dead_lettered_at),
        ];
        text.push_str(&columns(&cells));
    }
    text
}

fn columns(cells: &[String; 7]) -> String {
    let widths = [12, 24, 16, 22, 15, 10];
    let mut line = String::new();
    for (cell, width) in cells.iter().zip(widths) {
        line.push_str(&format!("{cell:<width$} "));
    }
    line.push_str(&cells[6]);
    line.push('\n');
    line
}
