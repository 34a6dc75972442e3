//! Outbound webhooks to the contact centre (docs/protocol.md §4), in the original envelope
//! `{"botId","channel":"chat","data":{"eventType","platformConversationId",…}}`
//! extended with `escalationId`, `sequence`, `timestamp` and per-type fields.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ids::{BotId, ConversationId, EscalationId, EventId, MessageId};
use crate::machine::{EndReason, Phase, RejectCode};

/// The webhook event types.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "eventType", rename_all = "camelCase", rename_all_fields = "camelCase")]
pub enum WebhookEvent {
    /// A conversation needs a human (sent on `escalate`).
    WidgetEscalate {
        /// Where the bot wants it routed (queue, skill…), opaque to us.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        escalate_to: Option<String>,
        /// Opaque metadata from the bot.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        metadata: Option<Value>,
        /// The bot conversation so far, opaque to us.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        transcript: Option<Value>,
    },
    /// A message from the visitor.
    WidgetMessage {
        /// The text.
        text: String,
        /// Stable id (the widget's `clientMessageId` or one we made).
        message_id: MessageId,
    },
    /// The visitor's session ended (visitor left, or a timer fired).
    WidgetEndSession {
        /// Why.
        reason: EndReason,
    },
    /// An agent event was refused by the state machine.
    EventRejected {
        /// The refused event.
        event_id: EventId,
        /// Why.
        code: RejectCode,
        /// The conversation's state when it was refused.
        current_state: Phase,
    },
}

impl WebhookEvent {
    /// The wire name of the event type (also the metrics label).
    pub fn event_type(&self) -> &'static str {
        match self {
            WebhookEvent::WidgetEscalate { .. } => "widgetEscalate",
            WebhookEvent::WidgetMessage { .. } => "widgetMessage",
            WebhookEvent::WidgetEndSession { .. } => "widgetEndSession",
            WebhookEvent::EventRejected { .. } => "eventRejected",
        }
    }
}

/// A webhook event with its place in the conversation's webhook sequence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookEnvelope {
    /// Per conversation, strictly increasing over webhooks, starting at 1; a gap
    /// tells the receiver a delivery is missing (dead-lettered).
    pub sequence: u64,
    /// When the event was produced.
    pub timestamp: DateTime<Utc>,
    /// The escalation it belongs to, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalation_id: Option<EscalationId>,
    /// The event.
    #[serde(flatten)]
    pub event: WebhookEvent,
}

/// The body posted to the bot's webhook URL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookPayload {
    /// The bot the conversation belongs to.
    pub bot_id: BotId,
    /// Always `chat`, as in the original.
    pub channel: String,
    /// The event.
    pub data: WebhookData,
}

/// `data` of [`WebhookPayload`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookData {
    /// The conversation.
    pub platform_conversation_id: ConversationId,
    /// Sequence, timestamp, escalation and the event itself.
    #[serde(flatten)]
    pub envelope: WebhookEnvelope,
}

impl WebhookPayload {
    /// Wraps one envelope for one bot and conversation.
    pub fn new(bot_id: BotId, conversation: ConversationId, envelope: WebhookEnvelope) -> Self {
        Self {
            bot_id,
            channel: "chat".to_owned(),
            data: WebhookData { platform_conversation_id: conversation, envelope },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn payload_keeps_the_original_envelope() {
        let payload = WebhookPayload::new(
            BotId::parse("bot").expect("id"),
            ConversationId::parse("123456789").expect("id"),
            WebhookEnvelope {
                sequence: 3,
                timestamp: DateTime::from_timestamp(1_700_000_000, 0).expect("time"),
                escalation_id: Some(EscalationId::parse("e1").expect("id")),
                event: WebhookEvent::WidgetMessage {
                    text: "hi".into(),
                    message_id: MessageId::parse("m1").expect("id"),
                },
            },
        );
        let value = serde_json::to_value(&payload).expect("serializes");
        assert_eq!(
            value,
            json!({
                "botId": "bot",
                "channel": "chat",
                "data": {
                    "eventType": "widgetMessage",
                    "platformConversationId": "123456789",
                    "escalationId": "e1",
                    "sequence": 3,
                    "timestamp": "2023-11-14T22:13:20Z",
                    "text": "hi",
                    "messageId": "m1"
                }
            })
        );
        let back: WebhookPayload = serde_json::from_value(value).expect("round trip");
        assert_eq!(back, payload);
    }
}
