//! `escalations conversations show BOT CONVERSATION` (docs/protocol.md §8): one
//! conversation's timeline — the events the worker decided on (verdicts,
//! rejection codes, transitions), the widget stream, and the webhook
//! deliveries with every attempt — merged in time order.

use std::io::Write;

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use domain::widget::WidgetEvent;
use domain::{BotId, ConversationId, Verdict};
use serde_json::{Value, json};
use store::{ConvKey, Store};

use crate::dlq::{attempt_json, describe_attempt, format_time_ms};

/// One line of the timeline.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// When it happened.
    pub at: DateTime<Utc>,
    /// `event`, `widget`, `webhook` or `attempt`.
    pub kind: &'static str,
    /// What happened, one line.
    pub text: String,
    /// The same as JSON.
    pub detail: Value,
}

/// Prints the timeline of `bot`/`conversation`.
pub async fn show(
    store: &Store,
    bot: &str,
    conversation: &str,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let bot_id = BotId::parse(bot).map_err(|e| anyhow::anyhow!("invalid bot id {bot:?}: {e}"))?;
    let conversation_id = ConversationId::parse(conversation)
        .map_err(|e| anyhow::anyhow!("invalid conversation id {conversation:?}: {e}"))?;
    let key = ConvKey::new(bot_id, conversation_id);
    let state = store.conversation(&key).await.context("reading the conversation")?;
    let entries = timeline(store, &key).await?;
    if state.is_none() && entries.is_empty() {
        bail!("conversation {bot}/{conversation} not found");
    }
    if json {
        let value = json!({
            "botId": bot,
            "conversationId": conversation,
            "phase": state.as_ref().map(|s| s.phase.as_str()),
            "escalationId": state.as_ref().and_then(|s| s.state.escalation.as_ref().map(|e| e.id.to_string())),
            "updatedAt": state.as_ref().map(|s| format_time_ms(s.updated_at)),
            "timeline": entries.iter().map(|e| {
                let mut detail = e.detail.clone();
                detail["at"] = json!(format_time_ms(e.at));
                detail["kind"] = json!(e.kind);
                detail
            }).collect::<Vec<_>>(),
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&value)?)?;
        return Ok(());
    }
    match &state {
        Some(s) => writeln!(
            out,
            "conversation {bot}/{conversation}: {} (escalation {}), updated {}",
            s.phase.as_str(),
            s.state.escalation.as_ref().map_or("-".to_owned(), |e| e.id.to_string()),
            format_time_ms(s.updated_at)
        )?,
        None => writeln!(out, "conversation {bot}/{conversation}: no state stored")?,
    }
    write!(out, "{}", render(&entries))?;
    Ok(())
}

/// The aligned text of `entries`.
pub fn render(entries: &[Entry]) -> String {
    let mut text = String::new();
    for entry in entries {
        text.push_str(&format!("{}  {:<7}  {}\n", format_time_ms(entry.at), entry.kind, entry.text));
    }
    text
}

/// Everything recorded about the conversation, in time order (ties keep the
/// order events, widget, webhooks).
pub async fn timeline(store: &Store, key: &ConvKey) -> anyhow::Result<Vec<Entry>> {
    let mut entries = Vec::new();
    for event in store.events_of(key).await.context("reading events")? {
        let verdict = match event.verdict {
            Verdict::Applied => "applied".to_owned(),
            Verdict::Duplicate => "duplicate".to_owned(),
            Verdict::Ignored => "ignored".to_owned(),
            Verdict::Rejected(code) => format!("rejected {}", code.as_str()),
        };
        let transition = if event.phase_before == event.phase_after {
            String::new()
        } else {
            format!("  {} → {}", event.phase_before.as_str(), event.phase_after.as_str())
        };
        // Fields the ingress dropped from the event (docs/protocol.md §2), one note each.
        let warnings: String =
            event.warnings.iter().map(|w| format!("  warning: {} {} (dropped)", w.field, w.code)).collect();
        let mut detail = json!({
            "eventId": event.event_id.as_str(),
            "eventType": event.event_type,
            "verdict": verdict,
            "phaseBefore": event.phase_before.as_str(),
            "phaseAfter": event.phase_after.as_str(),
            "receivedAt": format_time_ms(event.received_at),
        });
        if !event.warnings.is_empty() {
            detail["warnings"] = json!(event.warnings);
        }
        entries.push(Entry {
            at: event.applied_at,
            kind: "event",
            text: format!("{} {} {verdict}{transition}{warnings}", event.event_type, event.event_id),
            detail,
        });
    }
    for widget in store.widget_events(key, 0).await.context("reading widget events")? {
        let mut detail = json!({ "sequence": widget.sequence, "type": widget.event.name(), "escalationId": widget.escalation_id.as_str() });
        let mut text = format!("#{} {}", widget.sequence, widget.event.name());
        // A refused visitor message or end says why (docs/protocol.md §5).
        if let WidgetEvent::VisitorRejected { code, message_id } = &widget.event {
            text.push_str(&format!(" {}", code.as_str()));
            detail["code"] = json!(code.as_str());
            if let Some(id) = message_id {
                text.push_str(&format!(" (message {id})"));
                detail["messageId"] = json!(id.as_str());
            }
        }
        entries.push(Entry { at: widget.timestamp, kind: "widget", text, detail });
    }
    for (delivery, attempts) in store.deliveries_with_attempts(key).await.context("reading deliveries")? {
        let head = format!("#{} {}", delivery.sequence, delivery.event_type);
        entries.push(Entry {
            at: delivery.created_at,
            kind: "webhook",
            text: format!("{head} queued (id {})", delivery.id),
            detail: json!({ "id": delivery.id, "sequence": delivery.sequence, "eventType": delivery.event_type, "status": "queued" }),
        });
        for attempt in &attempts {
            entries.push(Entry {
                at: attempt.at,
                kind: "attempt",
                text: format!("{head} attempt {}: {}", attempt.attempt, describe_attempt(attempt)),
                detail: {
                    let mut detail = attempt_json(attempt);
                    detail["sequence"] = json!(delivery.sequence);
                    detail
                },
            });
        }
        let end = match (delivery.status.as_str(), delivery.delivered_at, delivery.dead_at) {
            ("delivered", Some(at), _) => Some((at, "delivered".to_owned())),
            ("dead", _, Some(at)) => {
                Some((at, format!("dead ({})", delivery.reason.map_or("-", |r| r.as_str()))))
            }
            _ => None,
        };
        match end {
            Some((at, status)) => entries.push(Entry {
                at,
                kind: "webhook",
                text: format!("{head} {status}"),
                detail: json!({ "id": delivery.id, "sequence": delivery.sequence, "status": status }),
            }),
            None if delivery.status != "delivered" && delivery.status != "dead" => entries.push(Entry {
                at: delivery.next_attempt_at,
                kind: "webhook",
                text: match delivery.status.as_str() {
                    "pending" => format!("{head} pending (next attempt)"),
                    status => format!("{head} {status}"),
                },
                detail: json!({ "id": delivery.id, "sequence": delivery.sequence, "status": delivery.status }),
            }),
            None => {}
        }
    }
    // Stable: entries at the same instant keep the order above.
    entries.sort_by_key(|entry| entry.at);
    Ok(entries)
}
