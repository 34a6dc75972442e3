//! One conversation's timeline (docs/protocol.md §8): the events the worker
//! decided on (verdicts, rejection codes, transitions), the widget stream, and
//! the webhook deliveries with every attempt, merged in time order. Behind
//! `escalations conversations show` and the admin API's
//! `/v1/conversations/{bot}/{conversation}`.

use chrono::{DateTime, Utc};
use domain::widget::WidgetEvent;
use domain::{BotId, ConversationId, Verdict};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use store::{ConvKey, Store};
use utoipa::ToSchema;

use crate::dead_letters::{self, describe_attempt};
use crate::error::{OpsError, OpsResult};
use crate::filter::format_time_ms;

/// A conversation's state and timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Timeline {
    /// The bot.
    pub bot_id: String,
    /// The conversation.
    pub conversation_id: String,
    /// Its phase (`idle`, `requested`, `connected`, ...), if any state is stored.
    pub phase: Option<String>,
    /// The live or last escalation.
    pub escalation_id: Option<String>,
    /// When its state last changed (RFC 3339, ms).
    pub updated_at: Option<String>,
    /// Every entry in time order: `at`, `kind` (`event`, `widget`, `webhook`,
    /// `attempt`), `text` (one line) and the details of its kind.
    pub timeline: Vec<Value>,
}

/// One line of the timeline.
#[derive(Debug, Clone, PartialEq)]
struct Entry {
    at: DateTime<Utc>,
    kind: &'static str,
    text: String,
    detail: Value,
}

fn store_error(doing: &str) -> impl FnOnce(store::Error) -> OpsError + '_ {
    move |error| OpsError::unavailable(doing, error)
}

/// The timeline of `bot`/`conversation`.
pub async fn show(store: &Store, bot: &str, conversation: &str) -> OpsResult<Timeline> {
    let bot_id = BotId::parse(bot).map_err(|e| OpsError::invalid(format!("invalid bot id {bot:?}: {e}")))?;
    let conversation_id = ConversationId::parse(conversation)
        .map_err(|e| OpsError::invalid(format!("invalid conversation id {conversation:?}: {e}")))?;
    let key = ConvKey::new(bot_id, conversation_id);
    let state = store.conversation(&key).await.map_err(store_error("reading the conversation"))?;
    let entries = entries(store, &key).await?;
    if state.is_none() && entries.is_empty() {
        return Err(OpsError::not_found(format!("conversation {bot}/{conversation} not found")));
    }
    Ok(Timeline {
        bot_id: bot.to_owned(),
        conversation_id: conversation.to_owned(),
        phase: state.as_ref().map(|s| s.phase.as_str().to_owned()),
        escalation_id: state.as_ref().and_then(|s| s.state.escalation.as_ref().map(|e| e.id.to_string())),
        updated_at: state.as_ref().map(|s| format_time_ms(s.updated_at)),
        timeline: entries
            .into_iter()
            .map(|e| {
                let mut detail = e.detail;
                detail["at"] = json!(format_time_ms(e.at));
                detail["kind"] = json!(e.kind);
                detail["text"] = json!(e.text);
                detail
            })
            .collect(),
    })
}

/// Everything recorded about the conversation, in time order (ties keep the
/// order events, widget, webhooks).
async fn entries(store: &Store, key: &ConvKey) -> OpsResult<Vec<Entry>> {
    let mut entries = Vec::new();
    for event in store.events_of(key).await.map_err(store_error("reading events"))? {
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
    for widget in store.widget_events(key, 0).await.map_err(store_error("reading widget events"))? {
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
    for (delivery, attempts) in
        store.deliveries_with_attempts(key).await.map_err(store_error("reading deliveries"))?
    {
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
                text: format!(
                    "{head} attempt {}: {}",
                    attempt.attempt,
                    describe_attempt(&dead_letters::attempt(attempt))
                ),
                detail: {
                    let mut detail = serde_json::to_value(dead_letters::attempt(attempt)).unwrap_or_default();
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
