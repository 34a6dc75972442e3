//! Telling the state machine a `widgetEscalate` could not be delivered
//! (docs/protocol.md §4: "then the escalation fails with `delivery_failed` and the widget
//! is told"): an `escalateUndeliverable` command published, with a confirm,
//! to the conversation's shard queue, like any other command.

use broker::Publisher;
use chrono::{DateTime, Utc};
use domain::{Command, Envelope, EscalationId, EventId, Input};
use store::ClaimedDelivery;

use crate::error::{Error, Result};

/// Whether giving up `delivery` needs a notice first.
pub fn needs_notice(delivery: &ClaimedDelivery) -> bool {
    delivery.event_type == "widgetEscalate" && delivery.escalation_id.is_some()
}

/// The command for a dead `widgetEscalate`. Its event id is derived from the
/// delivery, so a notice published twice (a crash before the row was marked
/// dead) is applied once.
pub fn undeliverable_envelope(
    delivery: &ClaimedDelivery,
    escalation_id: EscalationId,
    now: DateTime<Utc>,
) -> Option<Envelope> {
    let event_id = EventId::parse(format!("undeliverable:{}", delivery.id)).ok()?;
    Some(Envelope {
        bot_id: delivery.key.bot_id.clone(),
        conversation_id: delivery.key.conversation_id.clone(),
        received_at: now,
        command: Command { event_id, input: Input::EscalateUndeliverable { escalation_id } },
    })
}

/// Publishes the notice and waits for the broker's confirm.
pub async fn publish_undeliverable(publisher: Option<&Publisher>, delivery: &ClaimedDelivery) -> Result<()> {
    let Some(publisher) = publisher else { return Err(Error::NoPublisher) };
    let Some(escalation_id) = delivery.escalation_id.clone() else { return Ok(()) };
    let Some(envelope) = undeliverable_envelope(delivery, escalation_id, Utc::now()) else { return Ok(()) };
    publisher.publish_envelope(&envelope, None).await?;
    Ok(())
}
